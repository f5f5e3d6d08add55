package explain

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/gemm"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// kernelChunk is the number of training samples whose per-sample
// gradients are formed together (a variable for tests).
var kernelChunk = 256

// factorOuter lets the weights whose per-sample gradients are outer
// products (nn.Grads.Outer) be contracted in factored form; tests turn it
// off to compare with the per-row gradients, and read factoredProducts,
// the number of factored products formed, and helperChunks, the number of
// training chunks formed by training workers other than the first.
var (
	factorOuter      = true
	factoredProducts atomic.Int64
	helperChunks     atomic.Int64
)

// addTraining adds E_s/|B_s| ⟨Q_s, ∇θ f_{y_k}(θ_s; x_k)⟩ to every training
// sample k of the step's batch, for every Sweep query. The training
// samples' gradients are recomputed in the run's own precision T with the
// gradient model, and the products with Q run in T too: for a float32 run
// evaluated in float64 the quadrature keeps float64 accuracy while the
// kernel's matrix products, the bulk of the work, run at float32 speed
// (the kernel's relative rounding is then about 1e-7, which
// Output.KernelResidual reports). See trainKernel for how the products are
// formed. The batch's chunks of kernelChunk samples go to the training
// workers, chunk i to worker i mod W: each chunk adds to its own training
// samples' kernel entries only, so the workers need no ordering.
func (j *job[T, E]) addTraining(v *history.StepView[T], u *epk.Update[E]) error {
	xb, yb, err := j.src.Batch(v.Record)
	if err != nil {
		return err
	}
	idx := j.src.BatchIndices(v.Record)
	if len(idx) != len(yb) {
		return fmt.Errorf("the batch has %d samples and %d indices", len(yb), len(idx))
	}
	if j.trainSide == nil {
		j.trainSide = newTrainKernel[T](j.sweeps, j.src.GradModel.Params(), j.tensorSizes)
	}
	k := j.trainSide
	k.startStep(u.Kernel.E, len(yb))
	chunks := (len(yb) + kernelChunk - 1) / kernelChunk
	W := min(j.trainWorkers(), chunks)
	if W > 1 && repeats(idx, j.src.TrainSize) {
		W = 1 // chunks sharing a sample would add to its entries at once
	}
	for len(k.workers) < W {
		model := j.src.GradModel
		if len(k.workers) > 0 {
			if model, err = j.src.NewGradModel(); err != nil {
				return fmt.Errorf("explain: training worker %d's model: %w", len(k.workers), err)
			}
		}
		k.workers = append(k.workers, k.newWorker(model))
	}
	work := func(w *trainWorker[T, E], be gemm.Backend) error {
		w.be = be
		for t, p := range w.params {
			copy(p.Value.Data, v.Before[t].Value.Data)
		}
		for c := w.id; c < chunks; c += W {
			lo, hi := c*kernelChunk, min((c+1)*kernelChunk, len(yb))
			if err := w.chunk(xb, yb, idx, lo, hi); err != nil {
				return err
			}
			if w.id > 0 {
				helperChunks.Add(1)
			}
		}
		return nil
	}
	if W == 1 {
		return work(k.workers[0], gemm.Default())
	}
	// Each worker runs its products on one core.
	errs := make([]error, W)
	var wg sync.WaitGroup
	for w := range W {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[w] = work(k.workers[w], gemm.Serial())
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// trainWorkers is the number of workers that form the training side's
// chunks: Spec.Workers (0: one per processor) when the source can build
// more gradient models, else one.
func (j *job[T, E]) trainWorkers() int {
	if j.src.NewGradModel == nil {
		return 1
	}
	if j.spec.Workers > 0 {
		return j.spec.Workers
	}
	return runtime.GOMAXPROCS(0)
}

// trainKernel forms the training side of the sweeps' kernel, step after
// step, chunk by chunk of training samples i:
//
//	out[r, i] = Σ_t E_t/n ⟨Q_t[r], g_t(i)⟩,   g_t(i) = ∇_{θ_t} f_{y_i}(θ_s; x_i),
//
// for the rows r of every sweep, which it then adds to the sweeps' kernels.
// Most gradients come per row (nn.PerRow, into buffers reused from chunk
// to chunk) and the product is one GEMM per tensor, out += w·Q_t·Gᵀ. But
// a weight W [O, I] whose per-sample gradient is an outer product
// g(i) = d_iᵀ x_i (a linear layer, which hands d and x to nn.Grads.Outer)
// is contracted in factored form instead,
//
//	⟨Q[r], d_iᵀ x_i⟩ = d_i · (Q[r] x_i) = Σ_o d_i[o] Σ_j Q[r, o, j] x_i[j],
//
// with Q permuted once per step so that one GEMM over the chunk computes
// Y = D·Q' ([n × R·I], when I ≤ O) or Y = X·Q' ([n × R·O]) and a short
// product per sample with x_i or d_i ends it: the same multiply-adds as
// the per-row product, without writing and reading the n·O·I values of
// the gradients. Which tensors come factored is learned on a worker's
// first chunk: a weight whose buffer stayed zero while its factors
// arrived keeps only the factors, and from then on its buffer is an empty
// array, so that a layer that would still write it fails loudly instead
// of being dropped.
//
// The step's weights and Q (in T, and permuted) are shared by the
// workers, which make each Q when they first need it (under mu); the
// gradient buffers and products are each worker's own.
type trainKernel[T, E tensor.Float] struct {
	sweeps []*sweepEval[E]
	params []*nn.Param[T]
	sizes  []int
	// The step: w[t] = E_t/n; q[s][t] is Q_t of sweep s in T and qp[s][t]
	// its permutation for the factored product, each made when first used
	// (qStep, qpStep: the step they hold).
	w             []float64
	step          int
	mu            sync.Mutex
	q, qp         [][][]T
	qStep, qpStep [][]int
	workers       []*trainWorker[T, E]
}

// trainWorker forms the products of its chunks of training samples with
// its own gradient model.
type trainWorker[T, E tensor.Float] struct {
	k      *trainKernel[T, E]
	id     int
	model  nn.Layer[T]
	params []*nn.Param[T]
	// be runs the worker's products (the serial backend when workers run
	// side by side).
	be gemm.Backend
	// bufs[t] is tensor t's per-row gradient buffer [kernelChunk × size]
	// (nil once the tensor comes only factored).
	bufs [][]T
	// outer[t] reports that tensor t's gradients come (also) as factors;
	// probed that the first chunk has decided it.
	outer  []bool
	probed bool
	// The chunk: the training samples' indices, out[s] = [R × len(idx)]
	// per sweep, y the factored product's scratch and err the first error
	// of a factored product (reported after the backward pass).
	idx []int
	out [][]T
	y   []T
	err error
}

func newTrainKernel[T, E tensor.Float](sweeps []*sweepEval[E], params []*nn.Param[T], sizes []int) *trainKernel[T, E] {
	k := &trainKernel[T, E]{sweeps: sweeps, params: params, sizes: sizes,
		q: make([][][]T, len(sweeps)), qp: make([][][]T, len(sweeps)),
		qStep: make([][]int, len(sweeps)), qpStep: make([][]int, len(sweeps))}
	for s := range sweeps {
		k.q[s], k.qp[s] = make([][]T, len(params)), make([][]T, len(params))
		k.qStep[s], k.qpStep[s] = make([]int, len(params)), make([]int, len(params))
	}
	return k
}

// newWorker makes the next worker, with model's parameters in the order
// of the kernel's.
func (k *trainKernel[T, E]) newWorker(model nn.Layer[T]) *trainWorker[T, E] {
	w := &trainWorker[T, E]{k: k, id: len(k.workers), model: model, params: model.Params(),
		bufs: make([][]T, len(k.sizes)), outer: make([]bool, len(k.sizes)), out: make([][]T, len(k.sweeps))}
	for t, size := range k.sizes {
		w.bufs[t] = make([]T, kernelChunk*size)
	}
	for s, sw := range k.sweeps {
		w.out[s] = make([]T, sw.nrows*kernelChunk)
	}
	return w
}

// startStep sets the step's weights E_t/n for a batch of n samples.
func (k *trainKernel[T, E]) startStep(e []float64, n int) {
	k.step++
	k.w = make([]float64, len(e))
	for t, v := range e {
		k.w[t] = v / float64(n)
	}
}

// qOf returns Q_t of sweep s in precision T (Q_t itself when E is T).
func (k *trainKernel[T, E]) qOf(s, t int) []T {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.qStep[s][t] == k.step {
		return k.q[s][t]
	}
	src := k.sweeps[s].Q[t]
	if same, ok := any(src).([]T); ok {
		k.q[s][t] = same
	} else {
		if len(k.q[s][t]) != len(src) {
			k.q[s][t] = make([]T, len(src))
		}
		dst := k.q[s][t]
		for i, v := range src {
			dst[i] = T(v)
		}
	}
	k.qStep[s][t] = k.step
	return k.q[s][t]
}

// qpOf returns Q_t of sweep s permuted for the factored product of a
// weight [O, I]: [O × R·I] with Q'[o, r·I+j] = Q[r, o, j] when I ≤ O,
// else [I × R·O] with Q'[j, r·O+o] = Q[r, o, j]; in precision T.
func (k *trainKernel[T, E]) qpOf(s, t, O, I int) []T {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.qpStep[s][t] == k.step {
		return k.qp[s][t]
	}
	src := k.sweeps[s].Q[t]
	R := k.sweeps[s].nrows
	if len(k.qp[s][t]) != len(src) {
		k.qp[s][t] = make([]T, len(src))
	}
	dst := k.qp[s][t]
	for r := 0; r < R; r++ {
		for o := 0; o < O; o++ {
			row := src[(r*O+o)*I : (r*O+o+1)*I]
			if I <= O {
				d := dst[(o*R+r)*I : (o*R+r+1)*I]
				for j, v := range row {
					d[j] = T(v)
				}
				continue
			}
			for j, v := range row {
				dst[(j*R+r)*O+o] = T(v)
			}
		}
	}
	k.qpStep[s][t] = k.step
	return dst
}

// chunk forms the products of the batch's training samples [lo, hi)
// (inputs xb, labels yb, indices idx) and adds them to the sweeps'
// kernels.
func (w *trainWorker[T, E]) chunk(xb *tensor.Dense[T], yb, idx []int, lo, hi int) error {
	k := w.k
	rows := make([]int, hi-lo)
	for i := range rows {
		rows[i] = lo + i
	}
	y, state, err := w.model.Forward(tensor.GatherRows(xb, rows, 1))
	if err != nil {
		return err
	}
	dy := tensor.New[T](y.Shape...)
	C := y.Shape[len(y.Shape)-1]
	for i := range rows {
		dy.Data[i*C+yb[lo+i]] = 1
	}
	m := hi - lo
	w.idx, w.err = idx[lo:hi], nil
	g := &nn.Grads[T]{Mode: nn.PerRow, Of: make(map[*nn.Param[T]]*tensor.Dense[T], len(w.params))}
	for t, p := range w.params {
		if w.bufs[t] == nil {
			g.Of[p] = &tensor.Dense[T]{Shape: []int{0}}
			continue
		}
		buf := w.bufs[t][:m*k.sizes[t]]
		clear(buf)
		g.Of[p] = &tensor.Dense[T]{Shape: append([]int{m}, p.Value.Shape...), Data: buf}
	}
	if factorOuter {
		g.Outer = make(map[*nn.Param[T]]func(dy, x []T, b, kk int), len(w.params))
		for t, p := range w.params {
			if len(p.Value.Shape) == 2 && (!w.probed || w.outer[t]) {
				g.Outer[p] = func(dy, x []T, b, kk int) { w.factor(t, dy, x, b, kk) }
			}
		}
	}
	if _, err := w.model.Backward(state, dy, g, false); err != nil {
		return err
	}
	if w.err != nil {
		return w.err
	}
	if !w.probed {
		w.probed = true
		for t := range w.params {
			if w.outer[t] && allZero(w.bufs[t][:m*k.sizes[t]]) {
				w.bufs[t] = nil
			}
		}
	}
	for s, sw := range k.sweeps {
		out := w.out[s][:sw.nrows*m]
		for t, p := range w.params {
			if w.bufs[t] == nil || k.w[t] == 0 {
				continue
			}
			// out[R × m] += w · Q_t[R × size] · G_t[m × size]ᵀ; with the
			// parameter axis summed, every tensor adds into one out.
			size := k.sizes[t]
			gemm.GemmOn(w.be, false, true, sw.nrows, m, size, T(k.w[t]), k.qOf(s, t), size, g.Of[p].Data, size, T(1), out, m)
			if sw.params.size > 1 {
				w.flush(s, t)
			}
		}
		if sw.params.size == 1 {
			w.flush(s, 0)
		}
	}
	return nil
}

// factor adds the factored product of weight t's per-row gradients
// dy[i]ᵀ x[i] (dy [b × O], x [b × I], one row per training sample) to
// every sweep's out; it is tensor t's nn.Grads.Outer receiver.
func (w *trainWorker[T, E]) factor(t int, dy, x []T, b, rowsPer int) {
	k := w.k
	O, I := w.params[t].Value.Shape[0], w.params[t].Value.Shape[1]
	m := len(w.idx)
	if rowsPer != 1 || b != m || len(dy) != b*O || len(x) != b*I {
		if w.err == nil {
			w.err = fmt.Errorf("explain: the factored gradient of %s has %d×%d cotangent rows and %d values for %d training samples",
				w.params[t].Name, b, rowsPer, len(dy)+len(x), m)
		}
		return
	}
	w.outer[t] = true
	factoredProducts.Add(1)
	if k.w[t] == 0 {
		return
	}
	// Y = lhs · Q' over the inner axis K, then a product per sample with
	// v over the reduced axis L (the smaller of O and I).
	lhs, v, K, L := dy, x, O, I
	if I > O {
		lhs, v, K, L = x, dy, I, O
	}
	for s, sw := range k.sweeps {
		R := sw.nrows
		qp := k.qpOf(s, t, O, I)
		out := w.out[s][:R*m]
		// Blocks of rows r so that Y stays within about 1<<22 values.
		rb := max(1, min(R, (1<<22)/(m*L)))
		if len(w.y) < m*rb*L {
			w.y = make([]T, m*rb*L)
		}
		for r0 := 0; r0 < R; r0 += rb {
			r1 := min(r0+rb, R)
			n := (r1 - r0) * L
			y := w.y[:m*n]
			gemm.GemmOn(w.be, false, false, m, n, K, T(k.w[t]), lhs, K, qp[r0*L:], R*L, 0, y, n)
			for i := 0; i < m; i++ {
				// out[r0:r1, i] += Y[i] ([r1−r0 × L]) · v[i].
				gemm.GemmOn(w.be, false, false, r1-r0, 1, L, 1, y[i*n:], L, v[i*L:], 1, 1, out[r0*m+i:], m)
			}
		}
		if sw.params.size > 1 {
			w.flush(s, t)
		}
	}
}

// flush adds sweep s's out [R × m] to its kernel at the entries of tensor
// t (of every tensor when the parameter axis is summed) and clears it.
// The entries are the chunk's own training samples', which no other chunk
// of the step writes.
func (w *trainWorker[T, E]) flush(s, t int) {
	sw := w.k.sweeps[s]
	R, m, N := sw.nrows, len(w.idx), sw.dims.train
	out := w.out[s][:R*m]
	for r := 0; r < R; r++ {
		for i, ti := range w.idx {
			val := float64(out[r*m+i])
			for _, e := range sw.params.entries[t] {
				sw.kernel[(r*sw.params.size+e)*N+ti] += val
			}
		}
	}
	clear(out)
}

// repeats reports whether a sample index occurs twice in idx (indices
// below n; an index out of range counts as a repeat).
func repeats(idx []int, n int) bool {
	seen := make([]bool, n)
	for _, i := range idx {
		if i < 0 || i >= n || seen[i] {
			return true
		}
		seen[i] = true
	}
	return false
}

func allZero[T tensor.Float](v []T) bool {
	for _, x := range v {
		if x != 0 {
			return false
		}
	}
	return true
}
