package nn

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"sync"
	"unsafe"

	"github.com/explaind/explaind/gemm"
	"github.com/explaind/explaind/internal/parallel"
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
	x *tensor.Dense[T]
	y *tensor.Dense[T] // the output, kept for the fused ReLU's mask
	g convGeom
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

// Forward computes y[b] = W ⋆ x[b], as W·cols per chunk of samples.
func (l *Conv2d[T]) Forward(x *tensor.Dense[T]) (*tensor.Dense[T], State, error) {
	g, err := l.input(x)
	if err != nil {
		return nil, nil, err
	}
	y := tensor.New[T](g.b, g.o, g.ho, g.wo)
	op := l.outOp()
	convolve(g, x.Data, g.b, l.Weight.Value.Data, g.o, func(b0, nb int, out []T, par bool) {
		scatterPlanes(par, out, nb, g.pos, g.o, y.Data, b0, 1, op)
	})
	return y, &convState[T]{x: x, y: y, g: g}, nil
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
// gives dW (transposedBackward), so x is not unfolded again.
func (l *Conv2d[T]) Backward(st State, dy *tensor.Dense[T], gr *Grads[T], needDx bool) (*tensor.Dense[T], error) {
	s, ok := st.(*convState[T])
	if !ok {
		return nil, fmt.Errorf("nn.Conv2d(%s): Backward got a state from another layer", l.Weight.Name)
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
	gw, err := gr.checkBuf(l.Weight, g.b*k)
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
	gt, transposable := g.transposed()
	if needDx && gw != nil && gr.Mode == Summed && k == 1 && transposable && 4*g.h*g.w <= 5*g.pos {
		// One unfolding of dy serves both products (see transposedBackward).
		transposedBackward(g, gt, s.x.Data, dyData, l.Weight.Value.Data, dx.Data, gw.Data)
		return dx, nil
	}
	if needDx {
		if transposable {
			convolve(gt, dyData, g.b*k, flipKernel(l.Weight.Value.Data, g), g.c, func(r0, nr int, out []T, par bool) {
				scatterPlanes(par, out, nr, g.h*g.w, g.c, dx.Data, r0, 1, scatterCopy)
			})
		} else {
			foldCotangents(g, dyData, g.b*k, l.Weight.Value.Data, dx.Data)
		}
	}
	if gw != nil {
		weightGrad(g, s.x.Data, dyData, k, gr.Mode == Summed, gw.Data)
	}
	return dx, nil
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
	// acc is [C, O, KH, KW] with flipped taps: add it to gw [O, C, KH, KW].
	for c := 0; c < g.c; c++ {
		for o := 0; o < g.o; o++ {
			src := acc[0][(c*g.o+o)*kk : (c*g.o+o+1)*kk]
			dst := gw[(o*g.c+c)*kk : (o*g.c+c+1)*kk]
			for q, v := range src {
				dst[kk-1-q] += v
			}
		}
	}
	for i := range cols {
		putScratch(cols[i])
		putScratch(out[i])
		putScratch(acc[i])
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

// JVP: dy_m = W ⋆ dx_m + dW_m ⋆ x. The parameter part stacks [W; dW_1; …;
// dW_M] into one [(M+1)·O, C·KH·KW] matrix, so a single product with each
// chunk's cols gives y and all M tangents.
func (l *Conv2d[T]) JVP(x, dx *tensor.Dense[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
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
	if dW == nil {
		convolve(g, x.Data, g.b, w, g.o, func(b0, nb int, out []T, par bool) {
			scatterPlanes(par, out, nb, g.pos, g.o, y.Data, b0, 1, op)
		})
	} else {
		stack := make([]T, 0, (m+1)*len(w))
		stack = append(append(stack, w...), dW.Data...)
		convolve(g, x.Data, g.b, stack, (m+1)*g.o, func(b0, nb int, out []T, par bool) {
			n := nb * g.pos
			scatterPlanes(par, out[:g.o*n], nb, g.pos, g.o, y.Data, b0, 1, op)
			// Rows (mm+1)·O … of out hold tangent mm for every sample of the
			// chunk: sample b0+j, tangent mm goes to dy row (b0+j)·M + mm.
			for mm := 0; mm < m; mm++ {
				scatterPlanes(par, out[(mm+1)*g.o*n:(mm+2)*g.o*n], nb, g.pos, g.o, dy.Data[mm*g.o*g.pos:], b0, m, scatterAdd)
			}
		})
	}
	if dx != nil {
		// Row b·M + mm of dx is an image of its own; rows of a chunk are
		// disjoint from other chunks' rows, so the accumulation is safe.
		convolve(g, dx.Data, g.b*m, w, g.o, func(r0, nr int, out []T, par bool) {
			scatterPlanes(par, out, nr, g.pos, g.o, dy.Data, r0, 1, scatterAdd)
		})
	}
	if l.ReLU {
		maskRowsPositive(dy.Data, dy.Data, y.Data, g.o*g.pos, m)
	}
	return y, dy, nil
}

// scratchPools recycle the large scratch slices of convolutions, per
// element type and power-of-two capacity, sparing the allocator, the
// zeroing and the page faults of fresh memory. Their contents are always
// overwritten before use.
var scratchPools [2][64]sync.Pool

func scratchPool[T tensor.Float](class int) *sync.Pool {
	var z T
	if _, ok := any(z).(float32); ok {
		return &scratchPools[0][class]
	}
	return &scratchPools[1][class]
}

// getScratch returns a slice of n elements with arbitrary contents.
func getScratch[T tensor.Float](n int) []T {
	class := bits.Len(uint(max(n, 1) - 1))
	if p, ok := scratchPool[T](class).Get().(*[]T); ok {
		return (*p)[:n]
	}
	return make([]T, n, 1<<class)
}

// putScratch hands s, from getScratch, back for reuse.
func putScratch[T tensor.Float](s []T) {
	class := bits.Len(uint(cap(s) - 1))
	if cap(s) != 1<<class {
		return // not from getScratch
	}
	scratchPool[T](class).Put(&s)
}

// convChunkElems bounds the scratch (unfolded inputs and their products) of
// one chunk: 4M elements, 16 MB in float32. Such chunks keep the GEMMs large
// (thousands of columns) and the scratch small next to the activations.
const convChunkElems = 1 << 22

// chunkPlan splits n items of per scratch elements each into chunks of nb
// items for workers goroutines: as large as the scratch bound allows, and,
// when the work is worth spreading, as many per worker.
func chunkPlan(n, per int) (nb, workers int) {
	nb = max(1, min(n, convChunkElems/max(per, 1)))
	workers = min(runtime.GOMAXPROCS(0), n)
	if workers > 1 && n*per >= 8*parallel.MinWork {
		// A multiple of workers chunks of (about) equal size.
		chunks := (n + nb - 1) / nb
		chunks = (chunks + workers - 1) / workers * workers
		nb = (n + chunks - 1) / chunks
	}
	workers = max(1, min(workers, (n+nb-1)/max(nb, 1)))
	return nb, workers
}

// forChunks calls body(w, b0, cnt, par) for the chunks [b0, b0+cnt) of
// [0, n), nb items each, spread over workers goroutines: worker w takes
// chunks w, w+workers, … in order (w indexes per-worker scratch). The
// assignment is fixed, so per-worker sums are reproducible bit for bit.
// With a single worker, par is true: the body may spread its own loops over
// goroutines.
func forChunks(n, nb, workers int, body func(w, b0, cnt int, par bool)) {
	if workers <= 1 {
		for b0 := 0; b0 < n; b0 += nb {
			body(0, b0, min(nb, n-b0), true)
		}
		return
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for b0 := w * nb; b0 < n; b0 += workers * nb {
				body(w, b0, min(nb, n-b0), false)
			}
		}(w)
	}
	wg.Wait()
}

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
// the general input cotangent, for strides other than 1.
func foldCotangents[T tensor.Float](g convGeom, dy []T, n int, w []T, dx []T) {
	nb, workers := chunkPlan(n, g.pos*(g.ck+g.o))
	dyall := make([][]T, workers)
	dcols := make([][]T, workers)
	for i := range dyall {
		dyall[i] = getScratch[T](g.o * g.pos * nb)
		dcols[i] = getScratch[T](g.ck * g.pos * nb)
	}
	forChunks(n, nb, workers, func(wk, r0, cnt int, par bool) {
		nc := cnt * g.pos
		gatherPlanes(par, dy, r0, cnt, 1, g.pos, g.o, dyall[wk][:g.o*nc])
		chunkGemm(par, true, false, g.ck, nc, g.o, 1, w, g.ck, dyall[wk], nc, 0, dcols[wk], nc)
		col2im(par, g, dcols[wk][:g.ck*nc], dx, r0, cnt)
	})
	for i := range dyall {
		putScratch(dyall[i])
		putScratch(dcols[i])
	}
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
			base := (b0 + j) * stride * o * pos
			for oo := 0; oo < o; oo++ {
				src := out[oo*n+j*pos : oo*n+(j+1)*pos]
				d := dst[base+oo*pos : base+(oo+1)*pos]
				switch op {
				case scatterAdd:
					for i, v := range src {
						d[i] += v
					}
				case scatterReLU:
					relu(d, src)
				default:
					copy(d, src)
				}
			}
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

// phaseOf splits an input offset t = d·s + a with 0 ≤ a < s: input row
// oh·s + t is row oh + d of phase a.
func phaseOf(t, s int) (a, d int) {
	a = ((t % s) + s) % s
	return a, (t - a) / s
}

// tapPhases returns phaseOf(i − pad, s) for the taps i < k of a kernel.
func tapPhases(k, pad, s int) (phase, shift []int) {
	phase, shift = make([]int, k), make([]int, k)
	for i := range phase {
		phase[i], shift[i] = phaseOf(i-pad, s)
	}
	return phase, shift
}

// splitPhases deinterleaves an h×w plane into s·s phase planes of hs×ws
// (hs = ⌈h/s⌉, ws = ⌈w/s⌉): phase (a, b) holds src[r·s+a, q·s+b], zero
// beyond the image.
func splitPhases[T tensor.Float](src []T, h, w, s, hs, ws int, phases []T) {
	for a := 0; a < s; a++ {
		for b := 0; b < s; b++ {
			ph := phases[(a*s+b)*hs*ws : (a*s+b+1)*hs*ws]
			for r := 0; r < hs; r++ {
				d := ph[r*ws : (r+1)*ws]
				ih := r*s + a
				if ih >= h {
					clear(d)
					continue
				}
				row := src[ih*w : (ih+1)*w]
				q := 0
				for iw := b; iw < w; iw += s {
					d[q] = row[iw]
					q++
				}
				clear(d[q:])
			}
		}
	}
}

// mergePhases adds phase planes back onto an h×w plane (splitPhases'
// transpose), one output row at a time.
func mergePhases[T tensor.Float](phases []T, h, w, s, hs, ws int, dst []T) {
	for ih := 0; ih < h; ih++ {
		a, r := ih%s, ih/s
		row := dst[ih*w : (ih+1)*w]
		if s == 2 {
			p0 := phases[(2*a)*hs*ws+r*ws:][:ws]
			p1 := phases[(2*a+1)*hs*ws+r*ws:][:ws]
			for q := 0; q < w/2; q++ {
				row[2*q] += p0[q]
				row[2*q+1] += p1[q]
			}
			if w%2 == 1 {
				row[w-1] += p0[w/2]
			}
			continue
		}
		for b := 0; b < s; b++ {
			src := phases[(a*s+b)*hs*ws+r*ws:][:ws]
			q := 0
			for iw := b; iw < w; iw += s {
				row[iw] += src[q]
				q++
			}
		}
	}
}

// shiftRange returns the rows (or columns) [lo, hi) of an output of n whose
// source index o + d lies in [0, m).
func shiftRange(n, m, d int) (int, int) {
	lo, hi := max(0, -d), min(n, m-d)
	if hi < lo {
		hi = lo
	}
	return lo, hi
}

// shiftCopy sets dst[oh, ow] = src[oh+dh, ow+dw] for an ho×wo dst and an
// hs×ws src, zero where the source is outside. When the rows have the same
// length the valid part is one contiguous copy, and only the |dw| columns
// that wrapped around are cleared afterwards.
func shiftCopy[T tensor.Float](dst []T, ho, wo int, src []T, hs, ws, dh, dw int) {
	r0, r1 := shiftRange(ho, hs, dh)
	c0, c1 := shiftRange(wo, ws, dw)
	if r0 == r1 || c0 == c1 {
		clear(dst)
		return
	}
	clear(dst[:r0*wo])
	clear(dst[r1*wo:])
	if wo == ws {
		off := dh*ws + dw
		lo, hi := r0*wo+c0, (r1-1)*wo+c1
		copy(dst[lo:hi], src[lo+off:hi+off])
		clear(dst[r0*wo : lo])
		clear(dst[hi : r1*wo])
		if c0 > 0 || c1 < wo {
			for r := r0; r < r1-1; r++ {
				gap := dst[r*wo+c1 : (r+1)*wo+c0]
				for q := range gap {
					gap[q] = 0
				}
			}
		}
		return
	}
	for r := r0; r < r1; r++ {
		d := dst[r*wo : (r+1)*wo]
		s := src[(r+dh)*ws : (r+dh+1)*ws]
		for q := range d[:c0] {
			d[q] = 0
		}
		if c1-c0 < 16 { // short rows: a loop beats a call to memmove
			s = s[c0+dw : c1+dw]
			for q, v := range s {
				d[c0+q] = v
			}
		} else {
			copy(d[c0:c1], s[c0+dw:c1+dw])
		}
		for q := c1; q < wo; q++ {
			d[q] = 0
		}
	}
}

// shiftAdd is shiftCopy's transpose: dst[oh+dh, ow+dw] += src[oh, ow] for
// the sources inside the hs×ws dst.
func shiftAdd[T tensor.Float](dst []T, hs, ws int, src []T, ho, wo, dh, dw int) {
	r0, r1 := shiftRange(ho, hs, dh)
	c0, c1 := shiftRange(wo, ws, dw)
	if c0 == c1 {
		return
	}
	for r := r0; r < r1; r++ {
		s := src[r*wo+c0 : r*wo+c1]
		d := dst[(r+dh)*ws+c0+dw : (r+dh)*ws+c1+dw]
		for q, v := range s {
			d[q] += v
		}
	}
}

// im2col unfolds images b0 … b0+cnt−1 of x into cols [C·KH·KW, cnt·P]:
// cols[(c·KH + i)·KW + j, jb·P + oh·W' + ow] = x[b0+jb, c, oh·s−ph+i, ow·s−pw+j]
// (zero outside the image). With stride s > 1 each plane is first split
// into s·s phases, so that every row of cols is a shifted copy of one
// phase. With par, work is split over (image, channel) pairs.
func im2col[T tensor.Float](par bool, g convGeom, x []T, b0, cnt int, cols []T) {
	n := cnt * g.pos
	plane := g.h * g.w
	hs, ws := (g.h+g.s-1)/g.s, (g.w+g.s-1)/g.s
	rowPhase, rowShift := tapPhases(g.kh, g.ph, g.s)
	colPhase, colShift := tapPhases(g.kw, g.pw, g.s)
	maybeParallel(par, cnt*g.c, g.kh*g.kw*g.pos, func(lo, hi int) {
		var phases []T
		if g.s > 1 {
			phases = make([]T, g.s*g.s*hs*ws)
		}
		for u := lo; u < hi; u++ {
			jb, c := u/g.c, u%g.c
			src := x[((b0+jb)*g.c+c)*plane : ((b0+jb)*g.c+c+1)*plane]
			if g.s > 1 {
				splitPhases(src, g.h, g.w, g.s, hs, ws, phases)
			}
			for i := 0; i < g.kh; i++ {
				a, dh := rowPhase[i], rowShift[i]
				for j := 0; j < g.kw; j++ {
					b, dw := colPhase[j], colShift[j]
					row := (c*g.kh+i)*g.kw + j
					dst := cols[row*n+jb*g.pos : row*n+(jb+1)*g.pos]
					if g.s == 1 {
						shiftCopy(dst, g.ho, g.wo, src, g.h, g.w, dh, dw)
					} else {
						shiftCopy(dst, g.ho, g.wo, phases[(a*g.s+b)*hs*ws:(a*g.s+b+1)*hs*ws], hs, ws, dh, dw)
					}
				}
			}
		}
	})
}

// col2im folds dcols [C·KH·KW, cnt·P] back onto images r0 … r0+cnt−1 of dx
// (adding): the transpose of im2col. With par, each (image, channel) plane
// is written by one goroutine.
func col2im[T tensor.Float](par bool, g convGeom, dcols []T, dx []T, r0, cnt int) {
	n := cnt * g.pos
	plane := g.h * g.w
	hs, ws := (g.h+g.s-1)/g.s, (g.w+g.s-1)/g.s
	rowPhase, rowShift := tapPhases(g.kh, g.ph, g.s)
	colPhase, colShift := tapPhases(g.kw, g.pw, g.s)
	maybeParallel(par, cnt*g.c, g.kh*g.kw*g.pos, func(lo, hi int) {
		var phases []T
		if g.s > 1 {
			phases = make([]T, g.s*g.s*hs*ws)
		}
		for u := lo; u < hi; u++ {
			jb, c := u/g.c, u%g.c
			dst := dx[((r0+jb)*g.c+c)*plane : ((r0+jb)*g.c+c+1)*plane]
			if g.s > 1 {
				clear(phases)
			}
			for i := 0; i < g.kh; i++ {
				a, dh := rowPhase[i], rowShift[i]
				for j := 0; j < g.kw; j++ {
					b, dw := colPhase[j], colShift[j]
					row := (c*g.kh+i)*g.kw + j
					src := dcols[row*n+jb*g.pos : row*n+(jb+1)*g.pos]
					if g.s == 1 {
						shiftAdd(dst, g.h, g.w, src, g.ho, g.wo, dh, dw)
					} else {
						shiftAdd(phases[(a*g.s+b)*hs*ws:(a*g.s+b+1)*hs*ws], hs, ws, src, g.ho, g.wo, dh, dw)
					}
				}
			}
			if g.s > 1 {
				mergePhases(phases, g.h, g.w, g.s, hs, ws, dst)
			}
		}
	})
}

// relu sets dst = max(src, 0) without branches (their outcome is a coin
// flip after a convolution): negative numbers and −0 become +0.
func relu[T tensor.Float](dst, src []T) {
	switch d := any(dst).(type) {
	case []float32:
		di, si := bits32(d), bits32(any(src).([]float32))
		si = si[:len(di)]
		for i, v := range si {
			di[i] = v &^ (v >> 31)
		}
	case []float64:
		di, si := bits64(d), bits64(any(src).([]float64))
		si = si[:len(di)]
		for i, v := range si {
			di[i] = v &^ (v >> 63)
		}
	}
}

// maskPositive sets dst = src where y > 0 and 0 elsewhere, without
// branches; dst may be src.
func maskPositive[T tensor.Float](dst, src, y []T) {
	switch d := any(dst).(type) {
	case []float32:
		di, si, yi := bits32(d), bits32(any(src).([]float32)), bits32(any(y).([]float32))
		si, yi = si[:len(di)], yi[:len(di)]
		for i, v := range yi {
			// v > 0 as a float (not ±0, not negative) iff v−1 and v are
			// both non-negative as integers.
			di[i] = si[i] &^ (((v - 1) | v) >> 31)
		}
	case []float64:
		di, si, yi := bits64(d), bits64(any(src).([]float64)), bits64(any(y).([]float64))
		si, yi = si[:len(di)], yi[:len(di)]
		for i, v := range yi {
			di[i] = si[i] &^ (((v - 1) | v) >> 63)
		}
	}
}

// maskRowsPositive applies maskPositive to k rows of n values per sample
// of y, row r against sample r/k, over goroutines.
func maskRowsPositive[T tensor.Float](dst, src, y []T, n, k int) {
	parallel.ForCost(len(src)/n, n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			maskPositive(dst[r*n:(r+1)*n], src[r*n:(r+1)*n], y[(r/k)*n:(r/k+1)*n])
		}
	})
}

// bits32 and bits64 view float slices as signed integers of the same bits.
func bits32(v []float32) []int32 {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*int32)(unsafe.Pointer(&v[0])), len(v))
}

func bits64(v []float64) []int64 {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*int64)(unsafe.Pointer(&v[0])), len(v))
}

// maybeParallel is parallel.ForCost when par is set and a plain call
// otherwise (inside a chunk that already has a goroutine of its own).
func maybeParallel(par bool, n, per int, fn func(lo, hi int)) {
	if par {
		parallel.ForCost(n, per, fn)
		return
	}
	fn(0, n)
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
