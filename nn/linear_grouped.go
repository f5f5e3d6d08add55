package nn

import (
	"fmt"

	"github.com/explaind/explaind/gemm"
	"github.com/explaind/explaind/tensor"
)

// PathBackwardGrouped is PathBackward with the parameter gradients of the
// cotangent rows summed per group of samples: sample b belongs to group
// groups[b] (nondecreasing, in [0, nGroups)), and g, which must be PerRow,
// has buffers [nGroups*K, shape...] (K cotangents per sample) for the
// weight and the bias wanted. The sums are formed straight in the group
// buffers: with dy reordered to [B, S, K, out] (S positions per sample), a
// run of samples [lo, hi) in group g is one GEMM for the weight,
//
//	gW[g*K : (g+1)*K] ([K*out × in]) += dy[lo:hi]ᵀ ([(n·S) × K*out]) · x[lo:hi] ([(n·S) × in]),
//
// and the bias adds each row's cotangents to its group's:
// gb[g*K+k] += Σ_s dy[b*K+k, s]. dx is PathBackward's.
func (l *Linear[T]) PathBackwardGrouped(st State, dy *tensor.Dense[T], g *Grads[T], groups []int, nGroups int, needDx bool) (*tensor.Dense[T], error) {
	s, ok := st.(*linearPathState[T])
	if !ok {
		return nil, fmt.Errorf("nn.Linear(%s): PathBackwardGrouped got a state from another layer or from Forward", l.Weight.Name)
	}
	b := s.x.Shape[0]
	grp := &rowGroups{of: groups, n: nGroups}
	if err := grp.check(b); err != nil {
		return nil, fmt.Errorf("nn.Linear(%s): PathBackwardGrouped: %w", l.Weight.Name, err)
	}
	if g != nil && g.Mode != PerRow {
		return nil, fmt.Errorf("nn.Linear(%s): PathBackwardGrouped needs PerRow gradient buffers", l.Weight.Name)
	}
	// PathBackward checks the cotangents and forms dx; the gradients are
	// left to the groups.
	dx, err := l.PathBackward(st, dy, nil, needDx)
	if err != nil {
		return nil, err
	}
	k := dy.Shape[0] / b
	gw, err := g.checkBuf(l.Weight, nGroups*k)
	if err != nil {
		return nil, err
	}
	var gb *tensor.Dense[T]
	if l.Bias != nil {
		if gb, err = g.checkBuf(l.Bias, nGroups*k); err != nil {
			return nil, err
		}
	}
	in, out := l.In, l.Out
	pos := len(s.x.Data) / (b * in)
	if gw != nil {
		dyp := swapK(dy.Data, b, k, pos, 1, out)
		grp.runs(func(lo, hi, gi int) {
			gemm.Gemm(true, false, k*out, in, (hi-lo)*pos, 1, dyp[lo*pos*k*out:hi*pos*k*out], k*out,
				s.x.Data[lo*pos*in:hi*pos*in], in, 1, gw.Data[gi*k*out*in:(gi+1)*k*out*in], in)
		})
	}
	if gb != nil {
		for bb, gi := range groups {
			for kk := 0; kk < k; kk++ {
				dst := gb.Data[(gi*k+kk)*out : (gi*k+kk+1)*out]
				r := bb*k + kk
				for p := 0; p < pos; p++ {
					for o, v := range dy.Data[(r*pos+p)*out : (r*pos+p+1)*out] {
						dst[o] += v
					}
				}
			}
		}
	}
	return dx, nil
}
