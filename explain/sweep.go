package explain

import (
	"fmt"
	"math"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/gemm"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// sweepEval evaluates a Sweep query (per training sample) by the
// reverse-time sweep of docs/method.md §3: visiting the steps from the last to
// the first, it keeps for each of its rows (the kept test samples and
// classes) and each tensor
//
//	Q_s = A_s ⊙ φ_s + β Q_{s+1}
//
// and adds E_s/|B_s| ⟨Q_s, ∇θ f_{y_k}(θ_s; x_k)⟩ to every training sample k
// of step s's batch. Memory is rows × P, whatever the number of training
// samples.
type sweepEval[E tensor.Float] struct {
	q      Query
	dims   *dims
	params paramAxis
	// cot is the block of feature rows the query reads, of width rows (C
	// or 1).
	cot   cotKind
	width int
	rows  *featureRows
	// nrows is the number of rows R: the kept test samples (X or 1) times
	// the kept classes (width, or 1 for the true class or the class sum).
	nrows int
	// Q holds Q_s per tensor, [R × the tensor's size].
	Q [][]E
	// kernel is the result [R, entries of the tensor or group axis, N].
	kernel []float64
	// forwardData is, per row, the forward evaluation's data contributions
	// summed over the steps, which the kernel summed over training samples
	// must reproduce (Output.KernelResidual).
	forwardData []float64
}

func (e *sweepEval[E]) query() Query { return e.q }

func (e *sweepEval[E]) bytes(p, elem int64) int64 {
	return int64(e.nrows*e.params.size*e.dims.train)*8 + int64(e.nrows)*p*elem
}

func (e *sweepEval[E]) allocate() {
	e.kernel = make([]float64, e.nrows*e.params.size*e.dims.train)
	e.forwardData = make([]float64, e.nrows)
	e.Q = make([][]E, len(e.dims.tensorSizes))
	for t, size := range e.dims.tensorSizes {
		e.Q[t] = make([]E, e.nrows*size)
	}
}

// row is the row of test sample x and cotangent k.
func (e *sweepEval[E]) row(x, k int) int {
	r := 0
	if e.q.Keep&Test != 0 {
		r = x
	}
	if e.q.Keep&Class != 0 {
		r = r*e.width + k
	}
	return r
}

// decay multiplies Q by the step's β before the step's own term is added.
func (e *sweepEval[E]) decay(beta float64) {
	b := E(beta)
	for _, q := range e.Q {
		for i := range q {
			q[i] *= b
		}
	}
}

// add adds a chunk's forward data contributions to forwardData and its
// features A_s ⊙ φ_s to Q.
func (e *sweepEval[E]) add(c *chunk[E]) {
	C, data := e.dims.classes, c.forward.Data.Data
	for b := 0; b < c.hi-c.lo; b++ {
		x := c.lo + b
		for k := 0; k < e.width; k++ {
			var v float64
			if e.cot == cotLabel {
				v = data[b*C+e.dims.labels[x]]
			} else if e.q.Keep&Class != 0 {
				v = data[b*C+k]
			} else {
				for cl := 0; cl < C; cl++ {
					v += data[b*C+cl]
				}
			}
			e.forwardData[e.row(x, k)] += v
		}
	}
	for t, size := range e.dims.tensorSizes {
		a := c.update.Kernel.A[t]
		if a == nil {
			continue
		}
		q := e.Q[t]
		for b := 0; b < c.hi-c.lo; b++ {
			for k := 0; k < e.width; k++ {
				r := e.row(c.lo+b, k)
				dst := q[r*size : (r+1)*size]
				for i, pv := range featureRow(e.rows, c.features, e.cot, t, size, b, k) {
					dst[i] += a.Data[i] * pv
				}
			}
		}
	}
}

// residual is max over rows |Σ_k kernel − forwardData| relative to the
// largest |forwardData| (0 for a query keeping groups, whose tensors may
// count in several groups or none).
func (e *sweepEval[E]) residual() float64 {
	if e.q.Keep&Group != 0 {
		return 0
	}
	scale := 1e-300
	for _, v := range e.forwardData {
		scale = math.Max(scale, math.Abs(v))
	}
	var worst float64
	n := e.params.size * e.dims.train
	for row := 0; row < e.nrows; row++ {
		var s float64
		for k := 0; k < n; k++ {
			s += e.kernel[row*n+k]
		}
		worst = math.Max(worst, math.Abs(s-e.forwardData[row])/scale)
	}
	return worst
}

func (e *sweepEval[E]) result() *Result {
	r := newResult(e.q, 1, e.dims)
	e.params.appendTo(r)
	r.Axes, r.Shape = append(r.Axes, "train"), append(r.Shape, e.dims.train)
	r.Data = e.kernel
	return r
}

func (e *sweepEval[E]) save() queryState {
	s := queryState{values: e.kernel, forwardData: e.forwardData}
	for _, v := range e.Q {
		f := make([]float64, len(v))
		for i, x := range v {
			f[i] = float64(x)
		}
		s.sweep = append(s.sweep, f)
	}
	return s
}

func (e *sweepEval[E]) restore(s queryState) error {
	if len(s.values) != len(e.kernel) || len(s.tensors) != 0 || len(s.sweep) != len(e.Q) ||
		(s.forwardData != nil && len(s.forwardData) != len(e.forwardData)) {
		return errStateMismatch(e.q)
	}
	for t, v := range s.sweep {
		if len(v) != len(e.Q[t]) {
			return errStateMismatch(e.q)
		}
	}
	e.kernel = s.values
	for t, v := range s.sweep {
		for i, x := range v {
			e.Q[t][i] = E(x)
		}
	}
	if s.forwardData != nil {
		e.forwardData = s.forwardData
	}
	return nil
}

// addTraining adds E_s/|B_s| ⟨Q_s, ∇θ f_{y_k}(θ_s; x_k)⟩ to every training
// sample k of the step's batch, for every Sweep query. The training
// samples' gradients are recomputed in the run's own precision T with the
// gradient model, and the products with Q run in T too: for a float32 run
// evaluated in float64 the quadrature keeps float64 accuracy while the
// kernel's matrix products, the bulk of the work, run at float32 speed
// (the kernel's relative rounding is then about 1e-7, which
// Output.KernelResidual reports).
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
	qT := make([][][]T, len(j.sweeps))
	for i, s := range j.sweeps {
		qT[i] = inPrecision[T](s.Q)
	}
	n := len(yb)
	const chunk = 256
	var g *nn.Grads[T]
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
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
		if g == nil || len(g.Of[params[0]].Data) != (hi-lo)*j.tensorSizes[0] {
			g = nn.NewGrads(nn.PerRow, params, hi-lo)
		} else {
			for _, buf := range g.Of {
				clear(buf.Data)
			}
		}
		if _, err := model.Backward(state, dy, g, false); err != nil {
			return err
		}
		for i, s := range j.sweeps {
			addKernel(s, qT[i], params, g, u.Kernel.E, n, idx[lo:hi])
		}
	}
	return nil
}

// inPrecision returns Q in precision T (Q itself when E is T).
func inPrecision[T, E tensor.Float](q [][]E) [][]T {
	out := make([][]T, len(q))
	for t, v := range q {
		if same, ok := any(v).([]T); ok {
			out[t] = same
			continue
		}
		c := make([]T, len(v))
		for i, x := range v {
			c[i] = T(x)
		}
		out[t] = c
	}
	return out
}

// addKernel adds to s's kernel the products of its rows Q (in precision
// T) with the per-row gradients g of the training samples idx of a batch
// of n samples: kernel[r, entry, idx[i]] += E_t/n ⟨Q_t[r], g_t[i]⟩ for every
// tensor t, with the parameter axis summed into the entries.
func addKernel[T, E tensor.Float](s *sweepEval[E], q [][]T, params []*nn.Param[T], g *nn.Grads[T], weights []float64,
	n int, idx []int) {
	R, m, N := s.nrows, len(idx), s.dims.train
	out := make([]T, R*m)
	flush := func(t int) {
		for r := 0; r < R; r++ {
			for i := 0; i < m; i++ {
				val := float64(out[r*m+i])
				for _, k := range s.params.entries[t] {
					s.kernel[(r*s.params.size+k)*N+idx[i]] += val
				}
			}
		}
		clear(out)
	}
	for t, p := range params {
		w := weights[t] / float64(n)
		if w == 0 {
			continue
		}
		size := s.dims.tensorSizes[t]
		// out[R × m] += w · Q_t[R × size] · G_t[m × size]ᵀ; with the
		// parameter axis summed, every tensor adds into one out.
		gemm.Gemm(false, true, R, m, size, T(w), q[t], size, g.Of[p].Data, size, T(1), out, m)
		if s.params.size > 1 {
			flush(t)
		}
	}
	if s.params.size == 1 {
		flush(0)
	}
}
