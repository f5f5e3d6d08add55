package nn

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/explaind/explaind/gemm"
	"github.com/explaind/explaind/internal/parallel"
	"github.com/explaind/explaind/tensor"
)

// Linear is y = x Wᵀ + b over the last axis, like torch.nn.Linear. Inputs
// may have inner axes ([B, S..., in]); each sample's gradient then sums over
// its S positions. Weight has shape [out, in], Bias [out] (nil without bias).
type Linear[T tensor.Float] struct {
	In, Out int
	Weight  *Param[T]
	Bias    *Param[T]
}

// NewLinear returns a zero-initialized Linear whose parameters are named
// prefix+".weight" and prefix+".bias".
func NewLinear[T tensor.Float](prefix string, in, out int, bias bool) *Linear[T] {
	l := &Linear[T]{In: in, Out: out, Weight: &Param[T]{Name: prefix + ".weight", Value: tensor.New[T](out, in)}}
	if bias {
		l.Bias = &Param[T]{Name: prefix + ".bias", Value: tensor.New[T](out)}
	}
	return l
}

// InitUniform fills the parameters with PyTorch's default initialization:
// uniform in ±1/sqrt(in), for the weight and the bias alike.
func (l *Linear[T]) InitUniform(rng *rand.Rand) {
	bound := 1 / math.Sqrt(float64(l.In))
	FillUniform(l.Weight.Value.Data, bound, rng)
	if l.Bias != nil {
		FillUniform(l.Bias.Value.Data, bound, rng)
	}
}

// FillUniform fills data with independent draws from U(−bound, bound).
func FillUniform[T tensor.Float](data []T, bound float64, rng *rand.Rand) {
	for i := range data {
		data[i] = T((2*rng.Float64() - 1) * bound)
	}
}

// Params returns the weight and, if present, the bias.
func (l *Linear[T]) Params() []*Param[T] {
	if l.Bias != nil {
		return []*Param[T]{l.Weight, l.Bias}
	}
	return []*Param[T]{l.Weight}
}

// OutShape replaces the last axis (in) by out.
func (l *Linear[T]) OutShape(in []int) ([]int, error) {
	if len(in) < 2 || in[len(in)-1] != l.In {
		return nil, fmt.Errorf("nn.Linear(%s): input shape %v, want [B, ..., %d]", l.Weight.Name, in, l.In)
	}
	out := append([]int(nil), in...)
	out[len(out)-1] = l.Out
	return out, nil
}

type linearState[T tensor.Float] struct {
	x *tensor.Dense[T]
}

// Forward computes y = x Wᵀ + b.
func (l *Linear[T]) Forward(x *tensor.Dense[T]) (*tensor.Dense[T], State, error) {
	shape, err := checkInput[T](l, x)
	if err != nil {
		return nil, nil, err
	}
	y := tensor.New[T](shape...)
	l.affine(x.Data, y.Data, len(x.Data)/l.In)
	return y, &linearState[T]{x: x}, nil
}

// affine writes rows of x Wᵀ + b into y.
func (l *Linear[T]) affine(x, y []T, rows int) {
	gemm.Gemm(false, true, rows, l.Out, l.In, 1, x, l.In, l.Weight.Value.Data, l.In, 0, y, l.Out)
	if l.Bias != nil {
		b := l.Bias.Value.Data
		for r := 0; r < rows; r++ {
			row := y[r*l.Out : (r+1)*l.Out]
			for o := range row {
				row[o] += b[o]
			}
		}
	}
}

// Backward: dx = dy W; dW = Σ dyᵀ x; db = Σ dy (summed or per row).
func (l *Linear[T]) Backward(st State, dy *tensor.Dense[T], g *Grads[T], needDx bool) (*tensor.Dense[T], error) {
	s, ok := st.(*linearState[T])
	if !ok {
		return nil, fmt.Errorf("nn.Linear(%s): Backward got a state from another layer", l.Weight.Name)
	}
	x := s.x
	b := x.Shape[0]
	outShape, _ := l.OutShape(x.Shape)
	k, err := cotangentsPerSample("Linear", dy.Shape, b, outShape)
	if err != nil {
		return nil, err
	}
	pos := len(x.Data) / (b * l.In) // positions per sample
	rows := b * k
	var dx *tensor.Dense[T]
	if needDx {
		dx = tensor.New[T](append([]int{rows}, x.Shape[1:]...)...)
		gemm.Gemm(false, false, rows*pos, l.In, l.Out, 1, dy.Data, l.Out, l.Weight.Value.Data, l.In, 0, dx.Data, l.In)
	}
	var gw *tensor.Dense[T]
	if outer := g.OuterOf(l.Weight); outer != nil && pos == 1 {
		outer(dy.Data, x.Data, b, k)
	} else if gw, err = g.checkBuf(l.Weight, rows); err != nil {
		return nil, err
	}
	var gb *tensor.Dense[T]
	if l.Bias != nil {
		if gb, err = g.checkBuf(l.Bias, rows); err != nil {
			return nil, err
		}
	}
	if gw != nil {
		if g.Mode == Summed {
			l.weightGradSummed(dy.Data, x.Data, gw.Data, b, k, pos)
		} else {
			l.weightGradPerRow(dy.Data, x.Data, gw.Data, b, k, pos)
		}
	}
	if gb != nil {
		for r := 0; r < rows; r++ {
			dst := gb.Data
			if g.Mode == PerRow {
				dst = gb.Data[r*l.Out : (r+1)*l.Out]
			}
			for p := 0; p < pos; p++ {
				src := dy.Data[(r*pos+p)*l.Out : (r*pos+p+1)*l.Out]
				for o, v := range src {
					dst[o] += v
				}
			}
		}
	}
	return dx, nil
}

// weightGradSummed adds Σ_{b,k,s} dy[b,k,s]ᵀ x[b,s] to gw. The K
// cotangents of a sample share its input, so they are summed first:
// Σ_k dy[b,k]ᵀ x[b] = (Σ_k dy[b,k])ᵀ x[b], and one GEMM does the rest.
func (l *Linear[T]) weightGradSummed(dy, x, gw []T, b, k, pos int) {
	if k > 1 {
		n := pos * l.Out
		sum := make([]T, b*n)
		for bb := 0; bb < b; bb++ {
			dst := sum[bb*n : (bb+1)*n]
			for kk := 0; kk < k; kk++ {
				tensor.AddScaled(dst, 1, dy[(bb*k+kk)*n:(bb*k+kk+1)*n])
			}
		}
		dy = sum
	}
	gemm.Gemm(true, false, l.Out, l.In, b*pos, 1, dy, l.Out, x, l.In, 1, gw, l.In)
}

// weightGradPerRow adds dy[r]ᵀ x[b(r)] to row r of gw, for every row r,
// splitting the samples across the cores.
func (l *Linear[T]) weightGradPerRow(dy, x, gw []T, b, k, pos int) {
	size := l.Out * l.In
	parallel.ForCost(b, k*pos*size, func(lo, hi int) {
		for bb := lo; bb < hi; bb++ {
			xb := x[bb*pos*l.In : (bb+1)*pos*l.In]
			for kk := 0; kk < k; kk++ {
				r := bb*k + kk
				dst := gw[r*size : (r+1)*size]
				dyr := dy[r*pos*l.Out : (r+1)*pos*l.Out]
				if pos == 1 {
					for o, d := range dyr {
						if d != 0 {
							tensor.AddScaled(dst[o*l.In:(o+1)*l.In], d, xb)
						}
					}
					continue
				}
				for p := 0; p < pos; p++ {
					xp := xb[p*l.In : (p+1)*l.In]
					for o, d := range dyr[p*l.Out : (p+1)*l.Out] {
						if d != 0 {
							tensor.AddScaled(dst[o*l.In:(o+1)*l.In], d, xp)
						}
					}
				}
			}
		}
	})
}

// JVP: dy_m = dx_m Wᵀ + x dW_mᵀ + db_m.
func (l *Linear[T]) JVP(x, dx *tensor.Dense[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	shape, err := checkInput[T](l, x)
	if err != nil {
		return nil, nil, err
	}
	m := t.Count()
	if err := checkTangentInput("Linear", x, dx, m); err != nil {
		return nil, nil, err
	}
	b := x.Shape[0]
	pos := len(x.Data) / (b * l.In)
	y := tensor.New[T](shape...)
	l.affine(x.Data, y.Data, b*pos)
	dy := tensor.New[T](append([]int{b * m}, shape[1:]...)...)
	if dx != nil {
		gemm.Gemm(false, true, b*m*pos, l.Out, l.In, 1, dx.Data, l.In, l.Weight.Value.Data, l.In, 0, dy.Data, l.Out)
	}
	dW, err := t.dir(l.Weight)
	if err != nil {
		return nil, nil, err
	}
	var db *tensor.Dense[T]
	if l.Bias != nil {
		if db, err = t.dir(l.Bias); err != nil {
			return nil, nil, err
		}
	}
	size := l.Out * l.In
	for mm := 0; dW != nil && mm < m; mm++ {
		w := dW.Data[mm*size : (mm+1)*size]
		switch {
		case m == 1:
			gemm.Gemm(false, true, b*pos, l.Out, l.In, 1, x.Data, l.In, w, l.In, 1, dy.Data, l.Out)
		case pos == 1:
			gemm.Gemm(false, true, b, l.Out, l.In, 1, x.Data, l.In, w, l.In, 1, dy.Data[mm*l.Out:], m*l.Out)
		default:
			for bb := 0; bb < b; bb++ {
				r := bb*m + mm
				gemm.Gemm(false, true, pos, l.Out, l.In, 1, x.Data[bb*pos*l.In:], l.In, w, l.In, 1, dy.Data[r*pos*l.Out:], l.Out)
			}
		}
	}
	if db != nil {
		for r := 0; r < b*m; r++ {
			bias := db.Data[(r%m)*l.Out : (r%m+1)*l.Out]
			for p := 0; p < pos; p++ {
				row := dy.Data[(r*pos+p)*l.Out : (r*pos+p+1)*l.Out]
				for o := range row {
					row[o] += bias[o]
				}
			}
		}
	}
	return y, dy, nil
}
