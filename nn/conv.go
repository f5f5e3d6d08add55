package nn

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/explaind/explaind/tensor"
)

// Conv2d is a 2-D cross-correlation without bias, like torch.nn.Conv2d with
// bias=False: input [B, C, H, W], weight [O, C, KH, KW], output
// [B, O, H', W'] with H' = ⌊(H + 2·Padding − KH)/Stride⌋ + 1 (the same for
// W'). Padding is with zeros, the same on all four sides; Stride is the same
// along both axes.
//
// Every rule is an unfold (im2col) and a GEMM. The unfolded input of a chunk
// of samples is a matrix cols [C·KH·KW, chunk·H'·W'] (row (c, i, j), column
// (sample, output position)), so that the forward pass is one product
// W·cols per chunk and the weight gradient dY·colsᵀ. The input cotangent
// is, for stride 1, the convolution of dY with the flipped, transposed
// kernel (unfolded the same way), and otherwise the fold (col2im) of Wᵀ·dY.
// The unfolded input is recomputed in Backward rather than kept, so a state
// holds only the input; it is shared by a sample's K cotangents and M
// tangents. Chunks are processed by one goroutine per processor
// (runtime.GOMAXPROCS), each running its own GEMMs: with OpenBLAS, run with
// OPENBLAS_NUM_THREADS=1 so that OpenBLAS's threads do not compete with
// them.
//
// With ReLU set the layer is Conv2d followed by nn.ReLU, fused: the ReLU is
// applied while the output is written and its mask while the cotangents
// are read, sparing a pass over the activations and an array per layer. Its
// derivative at 0 is 0, as in nn.ReLU and PyTorch.
type Conv2d[T tensor.Float] struct {
	In, Out         int
	KH, KW          int
	Stride, Padding int
	// ReLU fuses a following ReLU into the layer.
	ReLU   bool
	Weight *Param[T]
}

// NewConv2d returns a zero-initialized square-kernel Conv2d whose weight
// [out, in, kernel, kernel] is named prefix+".weight".
func NewConv2d[T tensor.Float](prefix string, in, out, kernel, stride, padding int) *Conv2d[T] {
	return NewConv2dRect[T](prefix, in, out, kernel, kernel, stride, padding)
}

// NewConv2dRect is NewConv2d with a kernel of kh rows and kw columns.
// Invalid sizes (not positive) are reported by OutShape and Forward.
func NewConv2dRect[T tensor.Float](prefix string, in, out, kh, kw, stride, padding int) *Conv2d[T] {
	shape := []int{max(out, 0), max(in, 0), max(kh, 0), max(kw, 0)}
	return &Conv2d[T]{In: in, Out: out, KH: kh, KW: kw, Stride: stride, Padding: padding,
		Weight: &Param[T]{Name: prefix + ".weight", Value: tensor.New[T](shape...)}}
}

// InitUniform fills the weight with PyTorch's default initialization:
// uniform in ±1/sqrt(In·KH·KW).
func (l *Conv2d[T]) InitUniform(rng *rand.Rand) {
	FillUniform(l.Weight.Value.Data, 1/math.Sqrt(float64(l.In*l.KH*l.KW)), rng)
}

// Params returns the weight.
func (l *Conv2d[T]) Params() []*Param[T] { return []*Param[T]{l.Weight} }

// convGeom is the geometry of one convolution call.
type convGeom struct {
	b, c, h, w int // input
	o, ho, wo  int // output
	kh, kw, s  int
	ph, pw     int // zero padding of rows and columns
	ck         int // C·KH·KW: rows of cols
	pos        int // H'·W': columns of cols per sample
}

// newGeom completes a geometry from the input, kernel, stride and padding.
func newGeom(b, c, h, w, o, kh, kw, s, ph, pw int) convGeom {
	g := convGeom{b: b, c: c, h: h, w: w, o: o, kh: kh, kw: kw, s: s, ph: ph, pw: pw}
	g.ho = (h+2*ph-kh)/s + 1
	g.wo = (w+2*pw-kw)/s + 1
	g.ck = c * kh * kw
	g.pos = g.ho * g.wo
	return g
}

// geom validates the layer and an input shape.
func (l *Conv2d[T]) geom(in []int) (convGeom, error) {
	name := l.Weight.Name
	if l.In < 1 || l.Out < 1 || l.KH < 1 || l.KW < 1 || l.Stride < 1 || l.Padding < 0 {
		return convGeom{}, fmt.Errorf("nn.Conv2d(%s): invalid configuration in=%d out=%d kernel=%d×%d stride=%d padding=%d",
			name, l.In, l.Out, l.KH, l.KW, l.Stride, l.Padding)
	}
	if want := []int{l.Out, l.In, l.KH, l.KW}; !tensor.SameShape(l.Weight.Value.Shape, want) || len(l.Weight.Value.Data) != tensor.Numel(want) {
		return convGeom{}, fmt.Errorf("nn.Conv2d(%s): weight has shape %v, want %v", name, l.Weight.Value.Shape, want)
	}
	if len(in) != 4 || in[1] != l.In {
		return convGeom{}, fmt.Errorf("nn.Conv2d(%s): input shape %v, want [B, %d, H, W]", name, in, l.In)
	}
	if in[0] < 0 || in[2] < 1 || in[3] < 1 {
		return convGeom{}, fmt.Errorf("nn.Conv2d(%s): input shape %v has an empty image", name, in)
	}
	if in[2]+2*l.Padding < l.KH || in[3]+2*l.Padding < l.KW {
		return convGeom{}, fmt.Errorf("nn.Conv2d(%s): image %d×%d with padding %d is smaller than the %d×%d kernel",
			name, in[2], in[3], l.Padding, l.KH, l.KW)
	}
	return newGeom(in[0], in[1], in[2], in[3], l.Out, l.KH, l.KW, l.Stride, l.Padding, l.Padding), nil
}

// transposed returns the geometry of the input cotangent as a convolution
// of the output cotangent, and whether there is one: with stride 1 and
// padding below the kernel size, dx = dy ⋆ flip(W)ᵀ with padding KH−1−ph
// (KW−1−pw), a stride-1 convolution from O to C channels.
func (g convGeom) transposed() (convGeom, bool) {
	if g.s != 1 || g.ph > g.kh-1 || g.pw > g.kw-1 {
		return convGeom{}, false
	}
	t := newGeom(g.b, g.o, g.ho, g.wo, g.c, g.kh, g.kw, 1, g.kh-1-g.ph, g.kw-1-g.pw)
	return t, t.ho == g.h && t.wo == g.w
}

// OutShape returns [B, Out, H', W'].
func (l *Conv2d[T]) OutShape(in []int) ([]int, error) {
	g, err := l.geom(in)
	if err != nil {
		return nil, err
	}
	return []int{g.b, g.o, g.ho, g.wo}, nil
}

type convState[T tensor.Float] struct {
	x    *tensor.Dense[T]
	y    *tensor.Dense[T] // the output, kept for the fused ReLU's mask
	g    convGeom
	path convPath[T] // the path x was evaluated on (zero for Forward)
}

// outOp is how the forward product is written out: copied, or with the
// fused ReLU applied.
func (l *Conv2d[T]) outOp() scatterOp {
	if l.ReLU {
		return scatterReLU
	}
	return scatterCopy
}

// input validates x and returns its geometry.
func (l *Conv2d[T]) input(x *tensor.Dense[T]) (convGeom, error) {
	if x == nil {
		return convGeom{}, fmt.Errorf("nn.Conv2d(%s): nil input", l.Weight.Name)
	}
	g, err := l.geom(x.Shape)
	if err != nil {
		return g, err
	}
	if len(x.Data) != tensor.Numel(x.Shape) {
		return g, fmt.Errorf("nn.Conv2d(%s): input has %d values for shape %v", l.Weight.Name, len(x.Data), x.Shape)
	}
	return g, nil
}

// Forward computes y[b] = W ⋆ x[b], as W·cols per chunk of samples: the
// path rule (PathForward) at θ.
func (l *Conv2d[T]) Forward(x *tensor.Dense[T]) (*tensor.Dense[T], State, error) {
	return l.forward(x, convPath[T]{})
}

// forward is PathForward on the path cp (Forward for its zero value): with
// a direction ΔW, y[b] = (W + t_b ΔW) ⋆ x[b] (see convolveAt).
func (l *Conv2d[T]) forward(x *tensor.Dense[T], cp convPath[T]) (*tensor.Dense[T], State, error) {
	g, err := l.input(x)
	if err != nil {
		return nil, nil, err
	}
	y := tensor.New[T](g.b, g.o, g.ho, g.wo)
	op := l.outOp()
	w := l.Weight.Value.Data
	if !cp.moves() {
		convolve(g, x.Data, g.b, w, g.o, func(b0, nb int, out []T, par bool) {
			scatterPlanes(par, out, nb, g.pos, g.o, y.Data, b0, 1, op)
		})
	} else {
		convolveAt(g, x.Data, g.b, w, cp, 1, nil, func(idx []int, out, _ []T, par bool) {
			scatterPlanesAt(par, out, idx, g.pos, g.o, y.Data, 1, op)
		})
	}
	return y, &convState[T]{x: x, y: y, g: g, path: cp}, nil
}

// Backward: with dY_r [O, H'·W'] the r-th cotangent row (masked by the
// fused ReLU, if any) and cols_b the unfolded input of its sample b = r/K,
//
//	dx_r = fold(Wᵀ dY_r),   dW += Σ_r dY_r cols_bᵀ   (Summed),
//	dW_r += dY_r cols_bᵀ   (PerRow: the BackPACK/Opacus unfold trick).
//
// Summed mode first adds up a sample's K cotangents, since cols_b is shared.
// For stride 1, dx_r is computed as the convolution of dY_r with the
// flipped kernel, and with K = 1 that convolution's unfolding of dY also
// gives dW (transposedBackward), so x is not unfolded again. For a state
// from PathForward, Backward is PathBackward: W is W + t_b ΔW in dx_r.
func (l *Conv2d[T]) Backward(st State, dy *tensor.Dense[T], gr *Grads[T], needDx bool) (*tensor.Dense[T], error) {
	return l.backward("Backward", st, dy, gr, nil, needDx)
}

// backward is Backward, and PathBackwardGrouped for non-nil grp (gr then
// holds PerRow buffers over grp's groups).
func (l *Conv2d[T]) backward(method string, st State, dy *tensor.Dense[T], gr *Grads[T], grp *rowGroups, needDx bool) (*tensor.Dense[T], error) {
	s, ok := st.(*convState[T])
	if !ok {
		return nil, fmt.Errorf("nn.Conv2d(%s): %s got a state from another layer", l.Weight.Name, method)
	}
	g := s.g
	if dy == nil {
		return nil, fmt.Errorf("nn.Conv2d(%s): nil cotangent", l.Weight.Name)
	}
	k, err := cotangentsPerSample("Conv2d", dy.Shape, g.b, []int{g.b, g.o, g.ho, g.wo})
	if err != nil {
		return nil, err
	}
	if len(dy.Data) != tensor.Numel(dy.Shape) {
		return nil, fmt.Errorf("nn.Conv2d(%s): cotangent has %d values for shape %v", l.Weight.Name, len(dy.Data), dy.Shape)
	}
	rows := g.b * k
	if grp != nil {
		if err := grp.check(g.b); err != nil {
			return nil, fmt.Errorf("nn.Conv2d(%s): %s: %w", l.Weight.Name, method, err)
		}
		if gr != nil && gr.Mode != PerRow {
			return nil, fmt.Errorf("nn.Conv2d(%s): %s needs PerRow gradient buffers", l.Weight.Name, method)
		}
		rows = grp.n * k
	}
	gw, err := gr.checkBuf(l.Weight, rows)
	if err != nil {
		return nil, err
	}
	if gw == nil && !needDx {
		return nil, nil
	}
	dyData := dy.Data
	if l.ReLU {
		// The ReLU's VJP: keep the cotangents where the output is positive.
		dz := getScratch[T](len(dy.Data))
		defer putScratch(dz)
		maskRowsPositive(dz, dy.Data, s.y.Data, g.o*g.pos, k)
		dyData = dz
	}
	var dx *tensor.Dense[T]
	if needDx {
		dx = tensor.New[T](g.b*k, g.c, g.h, g.w)
	}
	w, cp := l.Weight.Value.Data, s.path
	gt, transposable := g.transposed()
	if needDx && gw != nil && grp == nil && gr.Mode == Summed && k == 1 && transposable && !cp.moves() && 4*g.h*g.w <= 5*g.pos {
		// One unfolding of dy serves both products (see transposedBackward).
		transposedBackward(g, gt, s.x.Data, dyData, w, dx.Data, gw.Data)
		return dx, nil
	}
	// shared: one unfolding of each row of dy serves dx and the row's own
	// weight gradient (see rowWeightGrads).
	shared := needDx && gw != nil && gr.Mode == PerRow && transposable && cp.moves() && 4*g.h*g.w <= 5*g.pos && grp.distinct()
	if needDx {
		if transposable {
			if cp.moves() {
				dest := func(r int) int { return r }
				if grp != nil {
					dest = func(r int) int { return grp.of[r/k]*k + r%k }
				}
				convolveAt(gt, dyData, g.b*k, flipKernel(w, g), convPath[T]{dw: flipKernel(cp.dw, g), t: cp.t}, k, nil, func(idx []int, out, cols []T, par bool) {
					scatterPlanesAt(par, out, idx, g.h*g.w, g.c, dx.Data, 1, scatterCopy)
					if shared {
						rowWeightGrads(par, g, gt, s.x.Data, k, idx, cols, dest, gw.Data)
					}
				})
			} else {
				convolve(gt, dyData, g.b*k, flipKernel(w, g), g.c, func(r0, nr int, out []T, par bool) {
					scatterPlanes(par, out, nr, g.h*g.w, g.c, dx.Data, r0, 1, scatterCopy)
				})
			}
		} else {
			foldCotangents(g, dyData, g.b*k, w, cp, k, dx.Data)
		}
	}
	switch {
	case gw == nil, shared:
	case grp != nil:
		weightGradGrouped(g, s.x.Data, dyData, k, grp, gw.Data)
	default:
		weightGrad(g, s.x.Data, dyData, k, gr.Mode == Summed, gw.Data)
	}
	return dx, nil
}

// JVP: dy_m = W ⋆ dx_m + dW_m ⋆ x. The parameter part stacks [W; dW_1; …;
// dW_M] into one [(M+1)·O, C·KH·KW] matrix, so a single product with each
// chunk's cols gives y and all M tangents. It is PathJVP at θ.
func (l *Conv2d[T]) JVP(x, dx *tensor.Dense[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	return l.jvp(x, dx, convPath[T]{}, t)
}

// jvp is PathJVP on the path cp (JVP for its zero value). With a direction
// ΔW, W + t_b ΔW takes W's place (see convolveAt), for the input and for
// the input tangents of sample b.
func (l *Conv2d[T]) jvp(x, dx *tensor.Dense[T], cp convPath[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	g, err := l.input(x)
	if err != nil {
		return nil, nil, err
	}
	m := t.Count()
	if err := checkTangentInput("Conv2d", x, dx, m); err != nil {
		return nil, nil, err
	}
	if dx != nil && len(dx.Data) != tensor.Numel(dx.Shape) {
		return nil, nil, fmt.Errorf("nn.Conv2d(%s): input tangent has %d values for shape %v", l.Weight.Name, len(dx.Data), dx.Shape)
	}
	dW, err := t.dir(l.Weight)
	if err != nil {
		return nil, nil, err
	}
	y := tensor.New[T](g.b, g.o, g.ho, g.wo)
	dy := tensor.New[T](g.b*m, g.o, g.ho, g.wo)
	w := l.Weight.Value.Data
	op := l.outOp()
	// emitAt writes a chunk's products for the images idx: the outputs, then
	// in rows (mm+1)·O … tangent mm of every image (image b, tangent mm goes
	// to dy row b·M + mm) when tangents is set.
	emitAt := func(tangents bool) func(idx []int, out, cols []T, par bool) {
		return func(idx []int, out, _ []T, par bool) {
			n := len(idx) * g.pos
			scatterPlanesAt(par, out[:g.o*n], idx, g.pos, g.o, y.Data, 1, op)
			for mm := 0; tangents && mm < m; mm++ {
				scatterPlanesAt(par, out[(mm+1)*g.o*n:(mm+2)*g.o*n], idx, g.pos, g.o, dy.Data[mm*g.o*g.pos:], m, scatterAdd)
			}
		}
	}
	// emit is emitAt for the consecutive images b0 … b0+nb−1 of convolve.
	emit := func(tangents bool) func(b0, nb int, out []T, par bool) {
		return func(b0, nb int, out []T, par bool) {
			n := nb * g.pos
			scatterPlanes(par, out[:g.o*n], nb, g.pos, g.o, y.Data, b0, 1, op)
			for mm := 0; tangents && mm < m; mm++ {
				scatterPlanes(par, out[(mm+1)*g.o*n:(mm+2)*g.o*n], nb, g.pos, g.o, dy.Data[mm*g.o*g.pos:], b0, m, scatterAdd)
			}
		}
	}
	switch {
	case cp.moves() && dW == nil:
		convolveAt(g, x.Data, g.b, w, cp, 1, nil, emitAt(false))
	case cp.moves():
		convolveAt(g, x.Data, g.b, w, cp, 1, dW.Data, emitAt(true))
	case dW == nil:
		convolve(g, x.Data, g.b, w, g.o, emit(false))
	default:
		stack := make([]T, 0, (m+1)*len(w))
		stack = append(append(stack, w...), dW.Data...)
		convolve(g, x.Data, g.b, stack, (m+1)*g.o, emit(true))
	}
	if dx != nil {
		// Row b·M + mm of dx is an image of its own; rows of a chunk are
		// disjoint from other chunks' rows, so the accumulation is safe.
		if cp.moves() {
			convolveAt(g, dx.Data, g.b*m, w, cp, m, nil, func(idx []int, out, _ []T, par bool) {
				scatterPlanesAt(par, out, idx, g.pos, g.o, dy.Data, 1, scatterAdd)
			})
		} else {
			convolve(g, dx.Data, g.b*m, w, g.o, func(r0, nr int, out []T, par bool) {
				scatterPlanes(par, out, nr, g.pos, g.o, dy.Data, r0, 1, scatterAdd)
			})
		}
	}
	if l.ReLU {
		maskRowsPositive(dy.Data, dy.Data, y.Data, g.o*g.pos, m)
	}
	return y, dy, nil
}
