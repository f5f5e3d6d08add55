package explain

import (
	"math"

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

// perSample: a sweep's chunk values are added in chunk order (sweeps run
// with one worker; see useRunFeatures).
func (e *sweepEval[E]) perSample() bool { return false }

// add adds a chunk's forward data contributions to forwardData and its
// features A_s ⊙ φ_s to Q.
func (e *sweepEval[E]) add(c *chunk[E]) error {
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
				if c.features32 != nil {
					addProduct(dst, a.Data, featureRow(e.rows, c.features32, e.cot, t, size, b, k))
				} else {
					addProduct(dst, a.Data, featureRow(e.rows, c.features, e.cot, t, size, b, k))
				}
			}
		}
	}
	return nil
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

// addProduct adds a ⊙ f to dst, with f converted to E.
func addProduct[E, F tensor.Float](dst, a []E, f []F) {
	a = a[:len(f)]
	dst = dst[:len(f)]
	for i, v := range f {
		dst[i] += a[i] * E(v)
	}
}
