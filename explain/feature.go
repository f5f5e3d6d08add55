package explain

import (
	"math"

	"github.com/explaind/explaind/tensor"
)

// featureEval evaluates a Feature query (per parameter element, or with an
// absolute value): it accumulates, per parameter tensor, the elementwise
// products φ_s(x) ⊙ (part of Δθ_s) of the feature pass over the steps, at
// the resolution the absolute value needs, and reduces them to the kept
// axes at the end: R[kept] = Σ_{not kept} |Σ_s φ_s ⊙ part of Δθ_s|.
type featureEval[E tensor.Float] struct {
	q      Query
	dims   *dims
	params paramAxis
	// cot is the block of rows the query reads, of width rows (C or 1).
	cot   cotKind
	width int
	rows  *featureRows
	// sampleRows and cotRows are the accumulator's rows per tensor: the test
	// samples (X when kept or when the absolute value is taken per sample,
	// else 1, their sum) times the cotangents (width when kept or under
	// the absolute value, else 1).
	sampleRows, cotRows int
	// acc holds, per tensor, [sampleRows × cotRows × the tensor's size].
	acc [][]float64
}

func (e *featureEval[E]) query() Query { return e.q }

func (e *featureEval[E]) bytes(p, _ int64) int64 { return int64(e.sampleRows*e.cotRows) * p * 8 }

func (e *featureEval[E]) allocate() {
	e.acc = make([][]float64, len(e.dims.tensorSizes))
	for t, size := range e.dims.tensorSizes {
		e.acc[t] = make([]float64, e.sampleRows*e.cotRows*size)
	}
}

// perSample: with a row per test sample (Test kept, or the absolute value
// taken per sample), a chunk adds to its samples' rows only.
func (e *featureEval[E]) perSample() bool { return e.sampleRows > 1 }

func (e *featureEval[E]) add(c *chunk[E]) error {
	for t, size := range e.dims.tensorSizes {
		part := partOf(c.update, e.q.Part, t, make([]float64, size))
		acc := e.acc[t]
		for b := 0; b < c.hi-c.lo; b++ {
			xr := 0
			if e.sampleRows > 1 {
				xr = c.lo + b
			}
			for k := 0; k < e.width; k++ {
				kr := 0
				if e.cotRows > 1 {
					kr = k
				}
				row := (xr*e.cotRows + kr) * size
				dst := acc[row : row+size]
				for i, pv := range featureRow(e.rows, c.features, e.cot, t, size, b, k) {
					dst[i] += float64(pv) * part[i]
				}
			}
		}
	}
	return nil
}

// reduce returns tensor t's accumulator reduced to the kept test and class
// axes (lead rows of the tensor's size), the absolute value first when the
// query takes it.
func (e *featureEval[E]) reduce(t, lead int) []float64 {
	q, size := e.q, e.dims.tensorSizes[t]
	keepX, keepK := q.Keep&Test != 0, q.Keep&Class != 0
	if !q.Abs && (e.sampleRows == 1 || keepX) && (e.cotRows == 1 || keepK) {
		return e.acc[t] // already at the kept resolution
	}
	dst := make([]float64, lead*size)
	acc := e.acc[t]
	for xr := 0; xr < e.sampleRows; xr++ {
		for kr := 0; kr < e.cotRows; kr++ {
			li := 0
			if keepX {
				li = xr
			}
			if keepK {
				li = li*e.cotRows + kr
			}
			src := acc[(xr*e.cotRows+kr)*size : (xr*e.cotRows+kr+1)*size]
			d := dst[li*size : (li+1)*size]
			for i, v := range src {
				if q.Abs {
					v = math.Abs(v)
				}
				d[i] += v
			}
		}
	}
	return dst
}

func (e *featureEval[E]) result() *Result {
	r := newResult(e.q, 1, e.dims)
	lead := 1
	for _, d := range r.Shape {
		lead *= d
	}
	if e.q.Keep&Param != 0 {
		r.TensorNames = e.dims.tensorNames
		for t := range e.dims.tensorSizes {
			shape := append(append([]int(nil), r.Shape...), e.dims.tensorShapes[t]...)
			r.Tensors = append(r.Tensors, &tensor.Dense[float64]{Shape: shape, Data: e.reduce(t, lead)})
		}
		return r
	}
	e.params.appendTo(r)
	r.Data = make([]float64, lead*e.params.size)
	for t, size := range e.dims.tensorSizes {
		d := e.reduce(t, lead)
		for li := 0; li < lead; li++ {
			var s float64
			for _, v := range d[li*size : (li+1)*size] {
				s += v
			}
			for _, k := range e.params.entries[t] {
				r.Data[li*e.params.size+k] += s
			}
		}
	}
	return r
}

func (e *featureEval[E]) save() queryState { return queryState{tensors: e.acc} }

func (e *featureEval[E]) restore(s queryState) error {
	if len(s.values) != 0 || len(s.tensors) != len(e.acc) {
		return errStateMismatch(e.q)
	}
	for t := range e.acc {
		if len(s.tensors[t]) != len(e.acc[t]) {
			return errStateMismatch(e.q)
		}
	}
	e.acc = s.tensors
	return nil
}
