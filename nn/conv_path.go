package nn

import (
	"fmt"
	"runtime"
	"sort"
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

// PathForward computes y[b] = (W + t_b ΔW) ⋆ x[b] for every sample b, all
// samples in one pass: each chunk's unfolded input is multiplied, per run
// of samples at one position, by W + tΔW (or, where runs are short, by the
// stacked [W; ΔW], the halves combined with each t_b; see convolveAt), and
// the fused ReLU applied. Its state serves
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
// dx_r = fold((W + t_b ΔW)ᵀ dY_r), for stride 1 the convolution of dY_r with
// flip(W + t_b ΔW) (as in PathForward), otherwise
// fold(Wᵀ dY_r) + t_b fold(ΔWᵀ dY_r), one GEMM of [W; ΔW]ᵀ with
// [dY_r; t_b dY_r].
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
// fused ReLU's mask): each chunk's unfolded input is multiplied by
// W + t_b ΔW as in PathForward and by the stacked [dW_1; …; dW_M], its
// unfolded input tangents by W + t_b ΔW.
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

// pathRunCols is the fewest columns (images × output positions) per run
// of images at one position for which convolveAt multiplies the run by its
// own W + tΔW; shorter runs make GEMMs too small, and a chunk of them is
// multiplied by the stacked [W; ΔW] instead, at twice the operations.
const pathRunCols = 64

// pathChunkElems bounds the scratch of one of convolveAt's chunks (256K
// elements, 1 MB in float32), well below convolve's: on a path a chunk is
// several GEMMs, each reading the unfolded input again.
const pathChunkElems = 1 << 18

// convolveAt is convolve on a path: image i of the n images of x is
// convolved with W + t·ΔW, t = cp.t[i/per], and with the extra rows (a
// [E, C·KH·KW] matrix shared by all images, such as JVP's tangent
// directions). The images are taken in the order of their positions
// (stably), so that images at one position are neighbours; emit gets each
// chunk's products [O + E, nb·H'·W'], as from convolve, with idx[j] the
// image of column block j, and the chunk's unfolded input cols
// [C·KH·KW, nb·H'·W'] (valid during the call). Within a chunk, a run of images at one position
// whose columns fill a GEMM is multiplied by W + tΔW, formed as the generic
// path forms it (θ + tΔθ in T arithmetic), at the plain rule's cost;
// otherwise the chunk is multiplied by [W; ΔW] and the two halves combined
// with each image's t. The extra rows take one more product per chunk.
func convolveAt[T tensor.Float](g convGeom, x []T, n int, w []T, cp convPath[T], per int, extra []T, emit func(idx []int, out, cols []T, par bool)) {
	r0, re := len(w)/g.ck, len(extra)/g.ck
	rows := r0 + re
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	tOf := func(i int) float64 { return cp.t[i/per] }
	sort.SliceStable(order, func(a, b int) bool { return tOf(order[a]) < tOf(order[b]) })
	xs := x
	for i, o := range order {
		if o != i {
			// Gather the images in position order.
			img := len(x) / n
			xs = getScratch[T](len(x))
			defer putScratch(xs)
			parallel.ForCost(n, img, func(lo, hi int) {
				for j := lo; j < hi; j++ {
					copy(xs[j*img:(j+1)*img], x[order[j]*img:(order[j]+1)*img])
				}
			})
			break
		}
	}
	tAt := func(j int) float64 { return tOf(order[j]) }
	nb, workers := chunkPlan(n, (g.ck+rows)*g.pos)
	// Chunks whose unfolded input stays in cache while it is multiplied.
	nb = max(1, min(nb, pathChunkElems/((g.ck+rows)*g.pos)))
	stack := cp.stack(w)
	type scratch struct{ cols, out, tmp, wt []T }
	sc := make([]scratch, workers)
	for i := range sc {
		// tmp, for the stacked products, is taken when first needed.
		sc[i] = scratch{cols: getScratch[T](g.ck * g.pos * nb), out: getScratch[T](rows * g.pos * nb), wt: getScratch[T](len(w))}
	}
	forChunks(n, nb, workers, func(wk, b0, cnt int, par bool) {
		s := &sc[wk]
		nc := cnt * g.pos
		im2col(par, g, xs, b0, cnt, s.cols[:g.ck*nc])
		out := s.out[:rows*nc]
		runs := 1
		for j := 1; j < cnt; j++ {
			if tAt(b0+j) != tAt(b0+j-1) {
				runs++
			}
		}
		if nc >= pathRunCols*runs {
			for lo := 0; lo < cnt; {
				tv, hi := tAt(b0+lo), lo+1
				for hi < cnt && tAt(b0+hi) == tv {
					hi++
				}
				t := T(tv)
				for i, v := range w {
					s.wt[i] = v + t*cp.dw[i]
				}
				chunkGemm(par, false, false, r0, (hi-lo)*g.pos, g.ck, 1, s.wt, g.ck, s.cols[lo*g.pos:], nc, 0, out[lo*g.pos:], nc)
				lo = hi
			}
		} else {
			if s.tmp == nil {
				s.tmp = getScratch[T](2 * r0 * g.pos * nb)
			}
			tmp := s.tmp[:2*r0*nc]
			chunkGemm(par, false, false, 2*r0, nc, g.ck, 1, stack, g.ck, s.cols, nc, 0, tmp, nc)
			for j := 0; j < cnt; j++ {
				t := T(tAt(b0 + j))
				for o := 0; o < r0; o++ {
					a := tmp[o*nc+j*g.pos : o*nc+(j+1)*g.pos]
					d := tmp[(r0+o)*nc+j*g.pos : (r0+o)*nc+(j+1)*g.pos]
					dst := out[o*nc+j*g.pos : o*nc+(j+1)*g.pos]
					for i, v := range a {
						dst[i] = v + t*d[i]
					}
				}
			}
		}
		if re > 0 {
			chunkGemm(par, false, false, re, nc, g.ck, 1, extra, g.ck, s.cols, nc, 0, out[r0*nc:], nc)
		}
		emit(order[b0:b0+cnt], out, s.cols[:g.ck*nc], par)
	})
	for _, s := range sc {
		putScratch(s.cols)
		putScratch(s.out)
		if s.tmp != nil {
			putScratch(s.tmp)
		}
		putScratch(s.wt)
	}
}

// scatterPlanesAt is scatterPlanes for the images idx of a chunk: column
// block j of out goes to dst[idx[j]·stride].
func scatterPlanesAt[T tensor.Float](par bool, out []T, idx []int, pos, o int, dst []T, stride int, op scatterOp) {
	n := len(idx) * pos
	maybeParallel(par, len(idx), o*pos, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			scatterImage(out, j, n, pos, o, dst[idx[j]*stride*o*pos:], op)
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
	nb := max(1, min(g.b, pathChunkElems/max(per, 1)))
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

// rowWeightGrads adds to gw the weight gradients of a chunk of cotangent
// rows of a stride-1 convolution from the unfolding of their cotangents
// for the transposed convolution that gave their dx (convolveAt's cols,
// [O·KH·KW, cnt·H·W], column block j the row idx[j]): with x_b [C, H·W]
// the input of row r's sample b = r/k,
//
//	dW_r[o, c, i, j] = (x_b · cols_rᵀ)[c, (o, KH−1−i, KW−1−j)]
//
// (see transposedBackward), added to the [O, C, KH, KW] buffer
// gw[dest(r)]. x is not unfolded. Each row has its own buffer, so chunks
// on different workers never add to the same one.
func rowWeightGrads[T tensor.Float](par bool, g, gt convGeom, x []T, k int, idx []int, cols []T, dest func(int) int, gw []T) {
	hw := g.h * g.w
	n := len(idx) * hw
	size := g.o * g.ck
	xs := getScratch[T](g.c * n)
	defer putScratch(xs)
	for j, r := range idx {
		b := r / k
		for c := 0; c < g.c; c++ {
			copy(xs[c*n+j*hw:c*n+(j+1)*hw], x[(b*g.c+c)*hw:(b*g.c+c+1)*hw])
		}
	}
	maybeParallel(par, len(idx), size*hw, func(lo, hi int) {
		acc := getScratch[T](g.c * gt.ck)
		defer putScratch(acc)
		for j := lo; j < hi; j++ {
			chunkGemm(false, false, true, g.c, gt.ck, hw, 1, xs[j*hw:], n, cols[j*hw:], n, 0, acc, gt.ck)
			d := dest(idx[j])
			addFlipped(g, acc, gw[d*size:(d+1)*size])
		}
	})
}
