package nn

import (
	"fmt"

	"github.com/explaind/explaind/internal/parallel"
	"github.com/explaind/explaind/tensor"
)

// MaxPool2d takes the maximum over Kernel×Kernel windows moved by Stride,
// without padding and rounding the output size down, like
// torch.nn.MaxPool2d(kernel, stride) (MaxPool2d(2) is Kernel = Stride = 2):
// input [B, C, H, W], output [B, C, ⌊(H−Kernel)/Stride⌋+1, ⌊(W−Kernel)/Stride⌋+1].
//
// Ties go to the first maximum in row-major order of the window, as in
// PyTorch's CPU kernels: after a ReLU a window of zeros sends its whole
// gradient to its top-left element. Derivatives are those of the selected
// element (the max is piecewise linear).
type MaxPool2d[T tensor.Float] struct {
	Kernel, Stride int
}

// NewMaxPool2d returns a MaxPool2d with the given kernel and stride.
func NewMaxPool2d[T tensor.Float](kernel, stride int) *MaxPool2d[T] {
	return &MaxPool2d[T]{Kernel: kernel, Stride: stride}
}

// Params returns nil: MaxPool2d has no parameters.
func (*MaxPool2d[T]) Params() []*Param[T] { return nil }

// poolGeom is the geometry of one pooling call: windows kh×kw moved by s.
type poolGeom struct {
	b, c, h, w int
	kh, kw, s  int
	ho, wo     int
}

func (g poolGeom) outShape() []int { return []int{g.b, g.c, g.ho, g.wo} }

func (p *MaxPool2d[T]) geom(in []int) (poolGeom, error) {
	if p.Kernel < 1 || p.Stride < 1 {
		return poolGeom{}, fmt.Errorf("nn.MaxPool2d: invalid kernel %d or stride %d", p.Kernel, p.Stride)
	}
	if len(in) != 4 || in[0] < 0 {
		return poolGeom{}, fmt.Errorf("nn.MaxPool2d: input shape %v, want [B, C, H, W]", in)
	}
	if in[2] < p.Kernel || in[3] < p.Kernel {
		return poolGeom{}, fmt.Errorf("nn.MaxPool2d: image %d×%d is smaller than the %d×%d window", in[2], in[3], p.Kernel, p.Kernel)
	}
	return poolGeom{b: in[0], c: in[1], h: in[2], w: in[3], kh: p.Kernel, kw: p.Kernel, s: p.Stride,
		ho: (in[2]-p.Kernel)/p.Stride + 1, wo: (in[3]-p.Kernel)/p.Stride + 1}, nil
}

// OutShape returns [B, C, H', W'].
func (p *MaxPool2d[T]) OutShape(in []int) ([]int, error) {
	g, err := p.geom(in)
	if err != nil {
		return nil, err
	}
	return g.outShape(), nil
}

// poolState keeps, for every output element, the index h·W + w of the
// winner within its input plane.
type poolState struct {
	g   poolGeom
	arg []int32
}

// Forward takes each window's first maximum.
func (p *MaxPool2d[T]) Forward(x *tensor.Dense[T]) (*tensor.Dense[T], State, error) {
	if x == nil {
		return nil, nil, fmt.Errorf("nn.MaxPool2d: nil input")
	}
	g, err := p.geom(x.Shape)
	if err != nil {
		return nil, nil, err
	}
	return maxPoolForward(g, x)
}

// Backward routes each cotangent to its window's winner.
func (p *MaxPool2d[T]) Backward(st State, dy *tensor.Dense[T], _ *Grads[T], needDx bool) (*tensor.Dense[T], error) {
	return maxPoolBackward("MaxPool2d", st, dy, needDx)
}

// JVP: dy is dx at each window's winner.
func (p *MaxPool2d[T]) JVP(x, dx *tensor.Dense[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	y, st, err := p.Forward(x)
	if err != nil {
		return nil, nil, err
	}
	return maxPoolJVP("MaxPool2d", x, y, st.(*poolState), dx, t.Count())
}

// AdaptiveMaxPool2d is torch.nn.AdaptiveMaxPool2d(1) (output size 1×1
// only): the maximum over each channel's whole H×W plane, input
// [B, C, H, W], output [B, C, 1, 1]. Ties go to the first maximum in
// row-major order, as in PyTorch's CPU kernel.
type AdaptiveMaxPool2d[T tensor.Float] struct{}

// Params returns nil: AdaptiveMaxPool2d has no parameters.
func (AdaptiveMaxPool2d[T]) Params() []*Param[T] { return nil }

func (AdaptiveMaxPool2d[T]) geom(in []int) (poolGeom, error) {
	if len(in) != 4 || in[0] < 0 || in[2] < 1 || in[3] < 1 {
		return poolGeom{}, fmt.Errorf("nn.AdaptiveMaxPool2d: input shape %v, want [B, C, H, W] with a non-empty image", in)
	}
	return poolGeom{b: in[0], c: in[1], h: in[2], w: in[3], kh: in[2], kw: in[3], s: 1, ho: 1, wo: 1}, nil
}

// OutShape returns [B, C, 1, 1].
func (a AdaptiveMaxPool2d[T]) OutShape(in []int) ([]int, error) {
	g, err := a.geom(in)
	if err != nil {
		return nil, err
	}
	return g.outShape(), nil
}

// Forward takes each plane's first maximum.
func (a AdaptiveMaxPool2d[T]) Forward(x *tensor.Dense[T]) (*tensor.Dense[T], State, error) {
	if x == nil {
		return nil, nil, fmt.Errorf("nn.AdaptiveMaxPool2d: nil input")
	}
	g, err := a.geom(x.Shape)
	if err != nil {
		return nil, nil, err
	}
	return maxPoolForward(g, x)
}

// Backward routes each cotangent to its plane's winner.
func (AdaptiveMaxPool2d[T]) Backward(st State, dy *tensor.Dense[T], _ *Grads[T], needDx bool) (*tensor.Dense[T], error) {
	return maxPoolBackward("AdaptiveMaxPool2d", st, dy, needDx)
}

// JVP: dy is dx at each plane's winner.
func (a AdaptiveMaxPool2d[T]) JVP(x, dx *tensor.Dense[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	y, st, err := a.Forward(x)
	if err != nil {
		return nil, nil, err
	}
	return maxPoolJVP("AdaptiveMaxPool2d", x, y, st.(*poolState), dx, t.Count())
}

// maxPoolForward computes the window maxima and their first arg-maxima,
// plane by plane over goroutines.
func maxPoolForward[T tensor.Float](g poolGeom, x *tensor.Dense[T]) (*tensor.Dense[T], State, error) {
	plane, opl := g.h*g.w, g.ho*g.wo
	if len(x.Data) != g.b*g.c*plane {
		return nil, nil, fmt.Errorf("nn: pooling input has %d values for shape %v", len(x.Data), x.Shape)
	}
	y := tensor.New[T](g.outShape()...)
	arg := make([]int32, len(y.Data))
	parallel.ForCost(g.b*g.c, plane, func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			src := x.Data[pl*plane : (pl+1)*plane]
			dst, idx := y.Data[pl*opl:(pl+1)*opl], arg[pl*opl:(pl+1)*opl]
			for oh := 0; oh < g.ho; oh++ {
				for ow := 0; ow < g.wo; ow++ {
					best := (oh*g.s)*g.w + ow*g.s
					mx := src[best]
					for i := 0; i < g.kh; i++ {
						row := (oh*g.s+i)*g.w + ow*g.s
						for j, v := range src[row : row+g.kw] {
							if v > mx { // strict: the first maximum wins
								mx, best = v, row+j
							}
						}
					}
					dst[oh*g.wo+ow], idx[oh*g.wo+ow] = mx, int32(best)
				}
			}
		}
	})
	return y, &poolState{g: g, arg: arg}, nil
}

// maxPoolBackward adds each of K cotangent rows per sample into the input
// element its output was taken from.
func maxPoolBackward[T tensor.Float](layer string, st State, dy *tensor.Dense[T], needDx bool) (*tensor.Dense[T], error) {
	s, ok := st.(*poolState)
	if !ok {
		return nil, fmt.Errorf("nn.%s: Backward got a state from another layer", layer)
	}
	g := s.g
	if dy == nil {
		return nil, fmt.Errorf("nn.%s: nil cotangent", layer)
	}
	k, err := cotangentsPerSample(layer, dy.Shape, g.b, g.outShape())
	if err != nil || !needDx {
		return nil, err
	}
	if len(dy.Data) != tensor.Numel(dy.Shape) {
		return nil, fmt.Errorf("nn.%s: cotangent has %d values for shape %v", layer, len(dy.Data), dy.Shape)
	}
	plane, opl := g.h*g.w, g.ho*g.wo
	dx := tensor.New[T](g.b*k, g.c, g.h, g.w)
	parallel.ForCost(g.b*k*g.c, opl, func(lo, hi int) {
		for rp := lo; rp < hi; rp++ { // rp = (r, c), r = b·K + kk
			r, c := rp/g.c, rp%g.c
			idx := s.arg[((r/k)*g.c+c)*opl : ((r/k)*g.c+c+1)*opl]
			src := dy.Data[rp*opl : (rp+1)*opl]
			dst := dx.Data[rp*plane : (rp+1)*plane]
			for o, v := range src {
				dst[idx[o]] += v
			}
		}
	})
	return dx, nil
}

// maxPoolJVP picks each of M input tangent rows per sample at the winners.
func maxPoolJVP[T tensor.Float](layer string, x, y *tensor.Dense[T], s *poolState, dx *tensor.Dense[T], m int) (*tensor.Dense[T], *tensor.Dense[T], error) {
	if err := checkTangentInput(layer, x, dx, m); err != nil {
		return nil, nil, err
	}
	g := s.g
	dy := tensor.New[T](append([]int{g.b * m}, y.Shape[1:]...)...)
	if dx == nil {
		return y, dy, nil
	}
	if len(dx.Data) != tensor.Numel(dx.Shape) {
		return nil, nil, fmt.Errorf("nn.%s: input tangent has %d values for shape %v", layer, len(dx.Data), dx.Shape)
	}
	plane, opl := g.h*g.w, g.ho*g.wo
	parallel.ForCost(g.b*m*g.c, opl, func(lo, hi int) {
		for rp := lo; rp < hi; rp++ { // rp = (r, c), r = b·M + mm
			r, c := rp/g.c, rp%g.c
			idx := s.arg[((r/m)*g.c+c)*opl : ((r/m)*g.c+c+1)*opl]
			src := dx.Data[rp*plane : (rp+1)*plane]
			dst := dy.Data[rp*opl : (rp+1)*opl]
			for o, i := range idx {
				dst[o] = src[i]
			}
		}
	})
	return y, dy, nil
}
