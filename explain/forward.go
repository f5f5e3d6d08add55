package explain

import "github.com/explaind/explaind/tensor"

// forwardEval evaluates a Forward query (nothing per parameter element or
// training sample): it sums the forward-mode results of the steps, the
// contributions ⟨φ_s(x), part of Δθ_s⟩ of the query's part, into values.
//
// A query that keeps tensors or groups reads each tensor's contribution
// from the per-tensor tangents of the forward pass when it keeps the class
// axis. Otherwise it reads only the true class or the class sum, and
// (viaFeatures) takes them from the feature pass instead: the dot products
// ⟨φ_s(x), part of Δθ_t⟩ of its one cotangent row with each tensor t's
// update, at the forward pass's own nodes; one reverse pass instead of one
// tangent per tensor.
type forwardEval[E tensor.Float] struct {
	q    Query
	dims *dims
	// params sums the parameter axis; buckets is the number of entries of
	// the step axis (1 when the query does not keep it).
	params  paramAxis
	buckets int
	// values is the result, in the axis order step bucket, test, class,
	// tensor or group (see index).
	values []float64
	// viaFeatures marks a query whose per-tensor values come from the
	// feature pass: the block cot of rows.
	viaFeatures bool
	cot         cotKind
	rows        *featureRows
}

func (e *forwardEval[E]) query() Query { return e.q }

// size is the number of values of the result.
func (e *forwardEval[E]) size() int {
	n := e.buckets * e.params.size
	if e.q.Keep&Test != 0 {
		n *= e.dims.samples
	}
	if e.q.Keep&Class != 0 {
		n *= e.dims.classes
	}
	return n
}

func (e *forwardEval[E]) bytes(_, _ int64) int64 { return int64(e.size()) * 8 }

func (e *forwardEval[E]) allocate() { e.values = make([]float64, e.size()) }

// index is the position of (step bucket, test sample x, class c, entry k
// of the tensor or group axis) in values.
func (e *forwardEval[E]) index(bucket, x, c, k int) int {
	i := 0
	if e.q.Keep&Step != 0 {
		i = bucket
	}
	if e.q.Keep&Test != 0 {
		i = i*e.dims.samples + x
	}
	if e.q.Keep&Class != 0 {
		i = i*e.dims.classes + c
	}
	return i*e.params.size + k
}

// bucket is the step bucket of step index si.
func (e *forwardEval[E]) bucket(si int) int {
	if e.q.Keep&Step != 0 {
		return si / max(e.q.Bucket, 1)
	}
	return 0
}

// perSample: with Test kept, every value's index holds its test sample.
func (e *forwardEval[E]) perSample() bool { return e.q.Keep&Test != 0 }

func (e *forwardEval[E]) add(c *chunk[E]) error {
	if e.viaFeatures {
		e.addTensorDots(c)
		return nil
	}
	res, q, C := c.forward, e.q, e.dims.classes
	bucket := e.bucket(c.step)
	part := res.Data
	switch q.Part {
	case Reg:
		part = res.Reg
	case Resid:
		part = res.Resid
	}
	for b := 0; b < c.hi-c.lo; b++ {
		x := c.lo + b
		for cl := 0; cl < C; cl++ {
			if q.Classes == TrueClass && cl != e.dims.labels[x] {
				continue
			}
			if q.Keep&(Tensor|Group) != 0 {
				for t, tc := range res.Tensor {
					v := tc.Data[b*C+cl]
					for _, k := range e.params.entries[t] {
						e.values[e.index(bucket, x, cl, k)] += v
					}
				}
				continue
			}
			var v float64
			switch q.Part {
			case Update:
				v = res.Data.Data[b*C+cl] + res.Reg.Data[b*C+cl] + res.Resid.Data[b*C+cl]
			case Model:
				v = res.Data.Data[b*C+cl] + res.Reg.Data[b*C+cl]
			default:
				v = part.Data[b*C+cl]
			}
			e.values[e.index(bucket, x, cl, 0)] += v
		}
	}
	return nil
}

// addTensorDots adds ⟨φ_s(x), part of Δθ_t⟩ for every tensor t: the
// contribution of tensor t to the true class (or the class sum) at the
// nodes of the forward pass.
func (e *forwardEval[E]) addTensorDots(c *chunk[E]) {
	bucket := e.bucket(c.step)
	for t, size := range e.dims.tensorSizes {
		part := partOf(c.update, e.q.Part, t, make([]float64, size))
		for b := 0; b < c.hi-c.lo; b++ {
			x := c.lo + b
			var v float64
			for i, pv := range featureRow(e.rows, c.features, e.cot, t, size, b, 0) {
				v += float64(pv) * part[i]
			}
			cl := 0
			if e.cot == cotLabel {
				cl = e.dims.labels[x]
			}
			for _, k := range e.params.entries[t] {
				e.values[e.index(bucket, x, cl, k)] += v
			}
		}
	}
}

func (e *forwardEval[E]) result() *Result {
	r := newResult(e.q, e.buckets, e.dims)
	e.params.appendTo(r)
	r.Data = e.values
	return r
}

func (e *forwardEval[E]) save() queryState { return queryState{values: e.values} }

func (e *forwardEval[E]) restore(s queryState) error {
	if len(s.values) != len(e.values) || len(s.tensors) != 0 {
		return errStateMismatch(e.q)
	}
	e.values = s.values
	return nil
}
