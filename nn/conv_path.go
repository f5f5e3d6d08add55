package nn

import (
	"fmt"
	"runtime"
	"sync"

	"github.com/explaind/explaind/internal/parallel"
	"github.com/explaind/explaind/tensor"
)

// convPath is the path a convolution is evaluated on: the weight's
// direction ΔW (nil when it does not move) and the position t_b of every
// sample. Its zero value is θ for every sample, the plain rules'.
type convPath[T tensor.Float] struct {
	dw []T
	t  []float64
}

// moves reports whether the weight moves along the path.
func (cp convPath[T]) moves() bool { return cp.dw != nil }

// stack returns [W; ΔW], a [2·O, C·KH·KW] matrix.
func (cp convPath[T]) stack(w []T) []T {
	s := make([]T, 0, 2*len(w))
	return append(append(s, w...), cp.dw...)
}

// flipped returns the weight of the transposed convolution (flipKernel):
// [C, O·KH·KW], or on a path [flip(W); flip(ΔW)], [2·C, O·KH·KW].
func (cp convPath[T]) flipped(w []T, g convGeom) []T {
	wt := flipKernel(w, g)
	if !cp.moves() {
		return wt
	}
	return append(wt, flipKernel(cp.dw, g)...)
}

// pathOf checks the path p against a batch of b samples and returns the
// convolution's view of it.
func (l *Conv2d[T]) pathOf(p *Path[T], b int) (convPath[T], error) {
	if err := p.check("Conv2d", b); err != nil {
		return convPath[T]{}, err
	}
	dw, err := p.delta(l.Weight)
	if err != nil || dw == nil {
		return convPath[T]{}, err
	}
	return convPath[T]{dw: dw.Data, t: p.T}, nil
}

// PathForward computes y[b] = (W + t_b ΔW) ⋆ x[b] for every sample b, as
// W ⋆ x[b] + t_b·(ΔW ⋆ x[b]) from one GEMM of the stacked [W; ΔW] with each
// chunk's unfolded input, and applies the fused ReLU. Its state serves
// PathBackward and PathBackwardGrouped (and Backward, which is
// PathBackward for it). A nil path is Forward.
func (l *Conv2d[T]) PathForward(x *tensor.Dense[T], p *Path[T]) (*tensor.Dense[T], State, error) {
	if x == nil {
		return nil, nil, fmt.Errorf("nn.Conv2d(%s): nil input", l.Weight.Name)
	}
	cp, err := l.pathOf(p, x.Shape[0])
	if err != nil {
		return nil, nil, err
	}
	return l.forward(x, cp)
}

// PathBackward is Backward at each sample's path point: the weight
// gradients (dY_r cols_bᵀ, with dY_r masked by the fused ReLU at the path
// point) do not depend on the weight, and
// dx_r = fold((W + t_b ΔW)ᵀ dY_r) = fold(Wᵀ dY_r) + t_b fold(ΔWᵀ dY_r), for
// stride 1 one convolution of dY_r with [flip(W); flip(ΔW)], otherwise one
// GEMM of [W; ΔW]ᵀ with [dY_r; t_b dY_r].
func (l *Conv2d[T]) PathBackward(st State, dy *tensor.Dense[T], g *Grads[T], needDx bool) (*tensor.Dense[T], error) {
	return l.backward("PathBackward", st, dy, g, nil, needDx)
}

// PathBackwardGrouped is PathBackward with the weight gradients of the
// cotangent rows summed per group of samples: sample b belongs to group
// groups[b] (nondecreasing, in [0, nGroups)), and g, which must be PerRow,
// has a buffer [nGroups*K, O, C, KH, KW] for the weight (K cotangents per
// sample). The sums are formed straight in the group buffers: with a
// chunk's cotangents gathered as [K·O, n·H'·W'] (row (k, o), column
// (sample, position)) and its unfolded input as cols [C·KH·KW, n·H'·W'], a
// run of samples [lo, hi) of group gi is one GEMM,
//
//	gW[gi*K : (gi+1)*K] ([K·O × C·KH·KW]) += dY[lo:hi] · cols[lo:hi]ᵀ,
//
// over (hi−lo)·H'·W' columns. dx is PathBackward's.
func (l *Conv2d[T]) PathBackwardGrouped(st State, dy *tensor.Dense[T], g *Grads[T], groups []int, nGroups int, needDx bool) (*tensor.Dense[T], error) {
	return l.backward("PathBackwardGrouped", st, dy, g, &rowGroups{of: groups, n: nGroups}, needDx)
}

// PathJVP is JVP at each sample's path point:
// y = (W + t_b ΔW) ⋆ x and dy_m = (W + t_b ΔW) ⋆ dx_m + dW_m ⋆ x (then the
// fused ReLU's mask), from one GEMM of the stacked [W; ΔW; dW_1; …; dW_M]
// with each chunk's unfolded input and one of [W; ΔW] with the unfolded
// input tangents.
func (l *Conv2d[T]) PathJVP(x, dx *tensor.Dense[T], p *Path[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	if x == nil {
		return nil, nil, fmt.Errorf("nn.Conv2d(%s): nil input", l.Weight.Name)
	}
	cp, err := l.pathOf(p, x.Shape[0])
	if err != nil {
		return nil, nil, err
	}
	return l.jvp(x, dx, cp, t)
}

// scatterPathPlanes is scatterPlanes for a path product: out is
// [2·O, nb·P], rows 0 … O−1 the product with W and rows O … 2·O−1 the
// product with ΔW, and image j of the chunk, row b0+j of dst (laid out
// [.., O, P]), gets out_W + t·out_ΔW with t = t[(b0+j)/per] (per rows per
// sample), copied, added or through a ReLU.
func scatterPathPlanes[T tensor.Float](par bool, out []T, nb, pos, o int, dst []T, b0 int, t []float64, per int, op scatterOp) {
	n := nb * pos
	maybeParallel(par, nb, o*pos, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			tv := T(t[(b0+j)/per])
			base := (b0 + j) * o * pos
			for oo := 0; oo < o; oo++ {
				a := out[oo*n+j*pos : oo*n+(j+1)*pos]
				d := out[(o+oo)*n+j*pos : (o+oo)*n+(j+1)*pos]
				dd := dst[base+oo*pos : base+(oo+1)*pos]
				if op == scatterAdd {
					for i, v := range a {
						dd[i] += v + tv*d[i]
					}
					continue
				}
				for i, v := range a {
					dd[i] = v + tv*d[i]
				}
				if op == scatterReLU {
					relu(dd, dd)
				}
			}
		}
	})
}

// scaledPlanes sets dst = t_b·src for a chunk of cnt images gathered as
// [O, cnt·P] (gatherPlanes' layout): column block j belongs to row r0+j,
// of sample (r0+j)/per.
func scaledPlanes[T tensor.Float](src, dst []T, cnt, pos, o int, t []float64, r0, per int) {
	n := cnt * pos
	for oo := 0; oo < o; oo++ {
		for j := 0; j < cnt; j++ {
			tv := T(t[(r0+j)/per])
			s, d := src[oo*n+j*pos:oo*n+(j+1)*pos], dst[oo*n+j*pos:oo*n+(j+1)*pos]
			for i, v := range s {
				d[i] = tv * v
			}
		}
	}
}

// gatherRowsK lays the K cotangent rows of images b0 … b0+cnt−1 of dy
// (row b·K + k, each [O, P]) out as dst [K·O, cnt·P]: row k·O + o, column
// j·P + p.
func gatherRowsK[T tensor.Float](par bool, dy []T, b0, cnt, k, pos, o int, dst []T) {
	n := cnt * pos
	maybeParallel(par, cnt, k*o*pos, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			for kk := 0; kk < k; kk++ {
				base := ((b0+j)*k + kk) * o * pos
				for oo := 0; oo < o; oo++ {
					copy(dst[(kk*o+oo)*n+j*pos:(kk*o+oo)*n+(j+1)*pos], dy[base+oo*pos:base+(oo+1)*pos])
				}
			}
		}
	})
}

// weightGradGrouped adds to gw [nGroups·K, O, C·KH·KW] the weight gradients
// of the cotangents dy (k rows per sample) at inputs x summed per group of
// samples (see PathBackwardGrouped). The samples are split into one
// contiguous segment per worker, each worked through in chunks; a worker
// adds straight into the buffers of the groups that start in its segment,
// and into a private buffer for a group begun in an earlier segment, which
// is added after all workers finish, in worker order, so the sums do not
// depend on timing.
func weightGradGrouped[T tensor.Float](g convGeom, x, dy []T, k int, grp *rowGroups, gw []T) {
	block := k * g.o * g.ck // one group's K gradients
	per := g.pos * (g.ck + k*g.o)
	workers := max(1, min(runtime.GOMAXPROCS(0), g.b))
	if g.b*per < 8*parallel.MinWork {
		workers = 1 // too little work to spread
	}
	nb := max(1, min(g.b, convChunkElems/max(per, 1)))
	private := make([][]T, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		lo, hi := g.b*w/workers, g.b*(w+1)/workers
		if lo == hi {
			continue
		}
		first := grp.of[lo]
		if lo > 0 && grp.of[lo-1] == first {
			private[w] = make([]T, block)
		}
		wg.Add(1)
		go func(w, lo, hi int) {
			defer wg.Done()
			par := workers == 1
			cols := getScratch[T](g.ck * g.pos * min(nb, hi-lo))
			dyk := getScratch[T](k * g.o * g.pos * min(nb, hi-lo))
			defer putScratch(cols)
			defer putScratch(dyk)
			for b0 := lo; b0 < hi; b0 += nb {
				cnt := min(nb, hi-b0)
				n := cnt * g.pos
				im2col(par, g, x, b0, cnt, cols[:g.ck*n])
				gatherRowsK(par, dy, b0, cnt, k, g.pos, g.o, dyk[:k*g.o*n])
				for rlo := b0; rlo < b0+cnt; {
					gi, rhi := grp.of[rlo], rlo+1
					for rhi < b0+cnt && grp.of[rhi] == gi {
						rhi++
					}
					dst := gw[gi*block : (gi+1)*block]
					if private[w] != nil && gi == first {
						dst = private[w]
					}
					j := (rlo - b0) * g.pos
					chunkGemm(par, false, true, k*g.o, g.ck, (rhi-rlo)*g.pos, 1, dyk[j:], n, cols[j:], n, 1, dst, g.ck)
					rlo = rhi
				}
			}
		}(w, lo, hi)
	}
	wg.Wait()
	for w, buf := range private {
		if buf != nil {
			gi := grp.of[g.b*w/workers]
			tensor.AddScaled(gw[gi*block:(gi+1)*block], 1, buf)
		}
	}
}
