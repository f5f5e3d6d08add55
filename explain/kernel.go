package explain

import (
	"fmt"
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
// the number of factored products formed.
var (
	factorOuter      = true
	factoredProducts atomic.Int64
)

// addTraining adds E_s/|B_s| ⟨Q_s, ∇θ f_{y_k}(θ_s; x_k)⟩ to every training
// sample k of the step's batch, for every Sweep query. The training
// samples' gradients are recomputed in the run's own precision T with the
// gradient model, and the products with Q run in T too: for a float32 run
// evaluated in float64 the quadrature keeps float64 accuracy while the
// kernel's matrix products, the bulk of the work, run at float32 speed
// (the kernel's relative rounding is then about 1e-7, which
// Output.KernelResidual reports). See trainKernel for how the products are
// formed.
func (j *job[T, E]) addTraining(v *history.StepView[T], u *epk.Update[E]) error {
	xb, yb, err := j.src.Batch(v.Record)
	if err != nil {
		return err
	}
	idx := j.src.BatchIndices(v.Record)
	if len(idx) != len(yb) {
		return fmt.Errorf("the batch has %d samples and %d indices", len(yb), len(idx))
	}
	model := j.src.GradModel
	params := model.Params()
	for t, p := range params {
		copy(p.Value.Data, v.Before[t].Value.Data)
	}
	if j.trainSide == nil {
		j.trainSide = newTrainKernel[T](j.sweeps, params, j.tensorSizes)
	}
	k := j.trainSide
	k.startStep(u.Kernel.E, len(yb))
	for lo := 0; lo < len(yb); lo += kernelChunk {
		hi := min(lo+kernelChunk, len(yb))
		rows := make([]int, hi-lo)
		for i := range rows {
			rows[i] = lo + i
		}
		y, state, err := model.Forward(tensor.GatherRows(xb, rows, 1))
		if err != nil {
			return err
		}
		dy := tensor.New[T](y.Shape...)
		C := y.Shape[len(y.Shape)-1]
		for i := range rows {
			dy.Data[i*C+yb[lo+i]] = 1
		}
		if err := k.chunk(idx[lo:hi], func(g *nn.Grads[T]) error {
			_, err := model.Backward(state, dy, g, false)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
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
// the gradients. Which tensors come factored is learned on the first
// chunk: a weight whose buffer stayed zero while its factors arrived keeps
// only the factors, and from then on its buffer is an empty array, so
// that a layer that would still write it fails loudly instead of being
// dropped.
type trainKernel[T, E tensor.Float] struct {
	sweeps []*sweepEval[E]
	params []*nn.Param[T]
	sizes  []int
	// bufs[t] is tensor t's per-row gradient buffer [kernelChunk × size]
	// (nil once the tensor comes only factored).
	bufs [][]T
	// outer[t] reports that tensor t's gradients come (also) as factors;
	// probed that the first chunk has decided it.
	outer  []bool
	probed bool
	// The step: w[t] = E_t/n; q[s][t] is Q_t of sweep s in T and qp[s][t]
	// its permutation for the factored product, each made when first used
	// (qStep, qpStep: the step they hold).
	w             []float64
	step          int
	q, qp         [][][]T
	qStep, qpStep [][]int
	// The chunk: the training samples' indices, out[s] = [R × len(idx)]
	// per sweep, y the factored product's scratch and err the first error
	// of a factored product (reported after the backward pass).
	idx []int
	out [][]T
	y   []T
	err error
}

func newTrainKernel[T, E tensor.Float](sweeps []*sweepEval[E], params []*nn.Param[T], sizes []int) *trainKernel[T, E] {
	k := &trainKernel[T, E]{sweeps: sweeps, params: params, sizes: sizes, bufs: make([][]T, len(params)),
		outer: make([]bool, len(params)), q: make([][][]T, len(sweeps)), qp: make([][][]T, len(sweeps)),
		qStep: make([][]int, len(sweeps)), qpStep: make([][]int, len(sweeps)), out: make([][]T, len(sweeps))}
	for t, size := range sizes {
		k.bufs[t] = make([]T, kernelChunk*size)
	}
	for s, sw := range sweeps {
		k.q[s], k.qp[s] = make([][]T, len(params)), make([][]T, len(params))
		k.qStep[s], k.qpStep[s] = make([]int, len(params)), make([]int, len(params))
		k.out[s] = make([]T, sw.nrows*kernelChunk)
	}
	return k
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

// chunk forms the products of the training samples idx, whose gradients
// backward puts into the Grads it is given, and adds them to the sweeps'
// kernels.
func (k *trainKernel[T, E]) chunk(idx []int, backward func(*nn.Grads[T]) error) error {
	m := len(idx)
	k.idx, k.err = idx, nil
	g := &nn.Grads[T]{Mode: nn.PerRow, Of: make(map[*nn.Param[T]]*tensor.Dense[T], len(k.params))}
	for t, p := range k.params {
		if k.bufs[t] == nil {
			g.Of[p] = &tensor.Dense[T]{Shape: []int{0}}
			continue
		}
		buf := k.bufs[t][:m*k.sizes[t]]
		clear(buf)
		g.Of[p] = &tensor.Dense[T]{Shape: append([]int{m}, p.Value.Shape...), Data: buf}
	}
	if factorOuter {
		g.Outer = make(map[*nn.Param[T]]func(dy, x []T, b, kk int), len(k.params))
		for t, p := range k.params {
			if len(p.Value.Shape) == 2 && (!k.probed || k.outer[t]) {
				g.Outer[p] = func(dy, x []T, b, kk int) { k.factor(t, dy, x, b, kk) }
			}
		}
	}
	if err := backward(g); err != nil {
		return err
	}
	if k.err != nil {
		return k.err
	}
	if !k.probed {
		k.probed = true
		for t := range k.params {
			if k.outer[t] && allZero(k.bufs[t][:m*k.sizes[t]]) {
				k.bufs[t] = nil
			}
		}
	}
	for s, sw := range k.sweeps {
		out := k.out[s][:sw.nrows*m]
		for t, p := range k.params {
			if k.bufs[t] == nil || k.w[t] == 0 {
				continue
			}
			// out[R × m] += w · Q_t[R × size] · G_t[m × size]ᵀ; with the
			// parameter axis summed, every tensor adds into one out.
			size := k.sizes[t]
			gemm.Gemm(false, true, sw.nrows, m, size, T(k.w[t]), k.qOf(s, t), size, g.Of[p].Data, size, T(1), out, m)
			if sw.params.size > 1 {
				k.flush(s, t)
			}
		}
		if sw.params.size == 1 {
			k.flush(s, 0)
		}
	}
	return nil
}

// factor adds the factored product of weight t's per-row gradients
// dy[i]ᵀ x[i] (dy [b × O], x [b × I], one row per training sample) to
// every sweep's out; it is tensor t's nn.Grads.Outer receiver.
func (k *trainKernel[T, E]) factor(t int, dy, x []T, b, rowsPer int) {
	O, I := k.params[t].Value.Shape[0], k.params[t].Value.Shape[1]
	m := len(k.idx)
	if rowsPer != 1 || b != m || len(dy) != b*O || len(x) != b*I {
		if k.err == nil {
			k.err = fmt.Errorf("explain: the factored gradient of %s has %d×%d cotangent rows and %d values for %d training samples",
				k.params[t].Name, b, rowsPer, len(dy)+len(x), m)
		}
		return
	}
	k.outer[t] = true
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
		out := k.out[s][:R*m]
		// Blocks of rows r so that Y stays within about 1<<22 values.
		rb := max(1, min(R, (1<<22)/(m*L)))
		if len(k.y) < m*rb*L {
			k.y = make([]T, m*rb*L)
		}
		for r0 := 0; r0 < R; r0 += rb {
			r1 := min(r0+rb, R)
			n := (r1 - r0) * L
			y := k.y[:m*n]
			gemm.Gemm(false, false, m, n, K, T(k.w[t]), lhs, K, qp[r0*L:], R*L, 0, y, n)
			for i := 0; i < m; i++ {
				// out[r0:r1, i] += Y[i] ([r1−r0 × L]) · v[i].
				gemm.Gemm(false, false, r1-r0, 1, L, 1, y[i*n:], L, v[i*L:], 1, 1, out[r0*m+i:], m)
			}
		}
		if sw.params.size > 1 {
			k.flush(s, t)
		}
	}
}

// flush adds sweep s's out [R × m] to its kernel at the entries of tensor
// t (of every tensor when the parameter axis is summed) and clears it.
func (k *trainKernel[T, E]) flush(s, t int) {
	sw := k.sweeps[s]
	R, m, N := sw.nrows, len(k.idx), sw.dims.train
	out := k.out[s][:R*m]
	for r := 0; r < R; r++ {
		for i, ti := range k.idx {
			val := float64(out[r*m+i])
			for _, e := range sw.params.entries[t] {
				sw.kernel[(r*sw.params.size+e)*N+ti] += val
			}
		}
	}
	clear(out)
}

func allZero[T tensor.Float](v []T) bool {
	for _, x := range v {
		if x != 0 {
			return false
		}
	}
	return true
}
