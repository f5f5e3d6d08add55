package nn

import (
	"github.com/explaind/explaind/gemm"
	"github.com/explaind/explaind/tensor"
)

// convolve computes, for the n images of x (each [C, H, W] as in g), the
// products wmat·cols with wmat a [rows, C·KH·KW] matrix, one chunk of
// images at a time, and hands emit each chunk's result: out is
// [rows, nb·H'·W'], column j·H'·W' + p for image b0+j at position p. emit
// may be called from several goroutines at once, for disjoint chunks.
func convolve[T tensor.Float](g convGeom, x []T, n int, wmat []T, rows int, emit func(b0, nb int, out []T, par bool)) {
	nb, workers := chunkPlan(n, (g.ck+rows)*g.pos)
	cols := make([][]T, workers)
	out := make([][]T, workers)
	for w := range cols {
		cols[w] = getScratch[T](g.ck * g.pos * nb)
		out[w] = getScratch[T](rows * g.pos * nb)
	}
	forChunks(n, nb, workers, func(w, b0, cnt int, par bool) {
		nc := cnt * g.pos
		im2col(par, g, x, b0, cnt, cols[w][:g.ck*nc])
		chunkGemm(par, false, false, rows, nc, g.ck, 1, wmat, g.ck, cols[w], nc, 0, out[w], nc)
		emit(b0, cnt, out[w][:rows*nc], par)
	})
	for w := range cols {
		putScratch(cols[w])
		putScratch(out[w])
	}
}

// weightGrad adds the weight gradient of the cotangents dy (k rows per
// sample) at inputs x to gw: summed, or one [O, C, KH, KW] block per row.
func weightGrad[T tensor.Float](g convGeom, x, dy []T, k int, summed bool, gw []T) {
	per := g.ck * g.pos // cols
	if summed {
		per += g.o * g.pos // Σ_k dY
	}
	nb, workers := chunkPlan(g.b, per)
	size := g.o * g.ck
	cols := make([][]T, workers)
	dysum := make([][]T, workers)
	acc := make([][]T, workers) // per-worker summed gradients; worker 0 adds into gw
	for w := range cols {
		cols[w] = getScratch[T](g.ck * g.pos * nb)
		if summed {
			dysum[w] = getScratch[T](g.o * g.pos * nb)
			acc[w] = gw
			if w > 0 {
				acc[w] = getScratch[T](size)
				clear(acc[w])
			}
		}
	}
	forChunks(g.b, nb, workers, func(w, b0, cnt int, par bool) {
		n := cnt * g.pos
		im2col(par, g, x, b0, cnt, cols[w][:g.ck*n])
		if summed {
			gatherPlanes(par, dy, b0*k, cnt, k, g.pos, g.o, dysum[w][:g.o*n])
			chunkGemm(par, false, true, g.o, g.ck, n, 1, dysum[w], n, cols[w], n, 1, acc[w], g.ck)
			return
		}
		// Rows b·K … b·K+K−1 of dy form a [K·O, H'·W'] matrix and the same
		// rows of gw a [K·O, C·KH·KW] one.
		for j := 0; j < cnt; j++ {
			r := (b0 + j) * k
			chunkGemm(par, false, true, k*g.o, g.ck, g.pos, 1, dy[r*g.o*g.pos:], g.pos, cols[w][j*g.pos:], n, 1, gw[r*size:], g.ck)
		}
	})
	for w := range cols {
		putScratch(cols[w])
		if summed {
			putScratch(dysum[w])
			if w > 0 {
				tensor.AddScaled(gw, 1, acc[w])
				putScratch(acc[w])
			}
		}
	}
}

// foldCotangents adds fold(Wᵀ dY_r) into dx for the n cotangent rows of dy:
// the general input cotangent, for strides other than 1. On a path (cp
// moves) W is W + t_b ΔW for the row's sample b = r/per; the product is
// then one GEMM over a doubled inner dimension,
// [W; ΔW]ᵀ · [dY; t_b dY] = Wᵀ dY + t_b ΔWᵀ dY.
func foldCotangents[T tensor.Float](g convGeom, dy []T, n int, w []T, cp convPath[T], per int, dx []T) {
	inner := g.o // rows of the stacked cotangents
	if cp.moves() {
		w, inner = cp.stack(w), 2*g.o
	}
	nb, workers := chunkPlan(n, g.pos*(g.ck+inner))
	dyall := make([][]T, workers)
	dcols := make([][]T, workers)
	for i := range dyall {
		dyall[i] = getScratch[T](inner * g.pos * nb)
		dcols[i] = getScratch[T](g.ck * g.pos * nb)
	}
	forChunks(n, nb, workers, func(wk, r0, cnt int, par bool) {
		nc := cnt * g.pos
		gatherPlanes(par, dy, r0, cnt, 1, g.pos, g.o, dyall[wk][:g.o*nc])
		if inner > g.o {
			scaledPlanes(dyall[wk][:g.o*nc], dyall[wk][g.o*nc:2*g.o*nc], cnt, g.pos, g.o, cp.t, r0, per)
		}
		chunkGemm(par, true, false, g.ck, nc, inner, 1, w, g.ck, dyall[wk], nc, 0, dcols[wk], nc)
		col2im(par, g, dcols[wk][:g.ck*nc], dx, r0, cnt)
	})
	for i := range dyall {
		putScratch(dyall[i])
		putScratch(dcols[i])
	}
}

// transposedBackward computes the input cotangent and the summed weight
// gradient of a stride-1 convolution with one cotangent per sample from a
// single unfolding of dy. With cols_dy the unfolding of dy for the
// transposed convolution (rows (o, i', j'), columns the input positions),
//
//	dx = flip(W)ᵀ · cols_dy   and   dW[o, c, i, j] = (x · cols_dyᵀ)[c, (o, KH−1−i, KW−1−j)],
//
// since both sum dy[o, p − (i, j) + pad]·x[c, p] over input positions p.
// This spares the unfolding of x when the input and output have about as
// many positions.
func transposedBackward[T tensor.Float](g, gt convGeom, x, dy, w, dx, gw []T) {
	wt := flipKernel(w, g)
	hw := g.h * g.w
	kk := g.kh * g.kw
	size := g.c * g.o * kk
	nb, workers := chunkPlan(g.b, hw*(gt.ck+2*g.c))
	cols := make([][]T, workers)
	out := make([][]T, workers)
	acc := make([][]T, workers)
	for i := range cols {
		cols[i] = getScratch[T](gt.ck * hw * nb)
		out[i] = getScratch[T](g.c * hw * nb)
		acc[i] = getScratch[T](size)
		clear(acc[i])
	}
	forChunks(g.b, nb, workers, func(wk, b0, cnt int, par bool) {
		n := cnt * hw
		im2col(par, gt, dy, b0, cnt, cols[wk][:gt.ck*n])
		chunkGemm(par, false, false, g.c, n, gt.ck, 1, wt, gt.ck, cols[wk], n, 0, out[wk], n)
		scatterPlanes(par, out[wk][:g.c*n], cnt, hw, g.c, dx, b0, 1, scatterCopy)
		gatherPlanes(par, x, b0, cnt, 1, hw, g.c, out[wk][:g.c*n])
		chunkGemm(par, false, true, g.c, gt.ck, n, 1, out[wk], n, cols[wk], n, 1, acc[wk], gt.ck)
	})
	for i := 1; i < workers; i++ {
		tensor.AddScaled(acc[0], 1, acc[i])
	}
	addFlipped(g, acc[0], gw)
	for i := range cols {
		putScratch(cols[i])
		putScratch(out[i])
		putScratch(acc[i])
	}
}

// addFlipped adds acc [C, O, KH, KW], a weight gradient of the transposed
// convolution (flipped taps), to gw [O, C, KH, KW]:
// gw[o, c, i, j] += acc[c, o, KH−1−i, KW−1−j].
func addFlipped[T tensor.Float](g convGeom, acc, gw []T) {
	kk := g.kh * g.kw
	// gw is written in order; acc is read in blocks of KH·KW.
	for o := 0; o < g.o; o++ {
		dst := gw[o*g.c*kk : (o+1)*g.c*kk]
		for c := 0; c < g.c; c++ {
			src := acc[(c*g.o+o)*kk : (c*g.o+o+1)*kk]
			d := dst[c*kk : (c+1)*kk]
			for q := range d {
				d[q] += src[kk-1-q]
			}
		}
	}
}

// flipKernel returns the weight of the transposed convolution:
// wt[c, (o·KH + i)·KW + j] = w[o, c, KH−1−i, KW−1−j].
func flipKernel[T tensor.Float](w []T, g convGeom) []T {
	kk := g.kh * g.kw
	wt := make([]T, len(w))
	for o := 0; o < g.o; o++ {
		for c := 0; c < g.c; c++ {
			src := w[(o*g.c+c)*kk : (o*g.c+c+1)*kk]
			dst := wt[(c*g.o+o)*kk : (c*g.o+o+1)*kk]
			for q, v := range src {
				dst[kk-1-q] = v
			}
		}
	}
	return wt
}

// scatterOp says how scatterPlanes writes.
type scatterOp int

const (
	scatterCopy scatterOp = iota // dst = src
	scatterAdd                   // dst += src
	scatterReLU                  // dst = max(src, 0)
)

// scatterPlanes moves a product out [O, nb·P] (column j·P + p for the j-th
// image of a chunk) into dst laid out [.., O, P]: image j goes to
// dst[(b0+j)·stride], copied, added or through a ReLU.
func scatterPlanes[T tensor.Float](par bool, out []T, nb, pos, o int, dst []T, b0, stride int, op scatterOp) {
	n := nb * pos
	maybeParallel(par, nb, o*pos, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			scatterImage(out, j, n, pos, o, dst[(b0+j)*stride*o*pos:], op)
		}
	})
}

// gatherPlanes is scatterPlanes' inverse for cotangents: for images
// j = 0 … cnt−1, the sum over kk < k of rows r0 + j·k + kk of src (each
// [O, P]) goes to columns j·P … of dst [O, cnt·P].
func gatherPlanes[T tensor.Float](par bool, src []T, r0, cnt, k, pos, o int, dst []T) {
	n := cnt * pos
	maybeParallel(par, cnt, k*o*pos, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			for kk := 0; kk < k; kk++ {
				base := (r0 + j*k + kk) * o * pos
				for oo := 0; oo < o; oo++ {
					s := src[base+oo*pos : base+(oo+1)*pos]
					d := dst[oo*n+j*pos : oo*n+(j+1)*pos]
					if kk == 0 {
						copy(d, s)
						continue
					}
					for i, v := range s {
						d[i] += v
					}
				}
			}
		}
	})
}

// chunkGemm is gemm.Gemm for a chunk body: when the chunks already run on
// every core (par false), the product must not split itself again.
func chunkGemm[T tensor.Float](par bool, transA, transB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	be := gemm.Default()
	if !par {
		be = gemm.Serial()
	}
	gemm.GemmOn(be, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// scatterImage moves column block j of out (O rows of n columns, P per
// image) into d laid out [O, P]: copied, added or through a ReLU. It is
// the body of scatterPlanes and scatterPlanesAt.
func scatterImage[T tensor.Float](out []T, j, n, pos, o int, d []T, op scatterOp) {
	for oo := 0; oo < o; oo++ {
		src := out[oo*n+j*pos : oo*n+(j+1)*pos]
		dd := d[oo*pos : (oo+1)*pos]
		switch op {
		case scatterAdd:
			for i, v := range src {
				dd[i] += v
			}
		case scatterReLU:
			relu(dd, src)
		default:
			copy(dd, src)
		}
	}
}
