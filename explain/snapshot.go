package explain

import (
	"github.com/explaind/explaind/gemm"
	"github.com/explaind/explaind/tensor"
)

// gramEval evaluates a Snapshots query (Query.Gram): it accumulates each
// test sample's per-element scores e(x) = Σ_s Σ_c φ_s(x)[c, :] ⊙ (part of
// Δθ_s) over the steps as a Feature query keeping Param and Test does
// (X × P values, once), and after each snapshot step reduces them to one
// Gram matrix per group,
//
//	G_g[x, x'] = Σ_{t ∈ g} <e(x)|_t, e(x')|_t>,
//
// one GEMM E_t E_tᵀ per tensor t, added to every group holding t. The
// snapshots are kept in float32 ([snapshot, group, test, test]); never
// the per-element scores of a snapshot.
type gramEval[E tensor.Float] struct {
	// feature accumulates the scores; when shared, it is an earlier
	// query's (keeping Param and Test, of the same part and classes),
	// which adds each chunk before this one reads it, and this query
	// neither allocates, adds to, saves nor restores it.
	feature *featureEval[E]
	shared  bool
	// q is the snapshot query (feature.q is another's when shared) and
	// params its group axis.
	q      Query
	params paramAxis
	// from and to are the job's steps [From, To).
	from, to int
	// steps are the snapshot steps taken so far, grams their matrices
	// [len(steps), groups, X, X].
	steps []int
	grams []float32
}

func (e *gramEval[E]) query() Query { return e.q }

// snapshotSteps returns the snapshot steps of a query with interval every
// over the steps [from, to): the multiples of every in (from, to), and to.
func snapshotSteps(every, from, to int) []int {
	var s []int
	for k := (from/every + 1) * every; k < to; k += every {
		s = append(s, k)
	}
	return append(s, to)
}

func (e *gramEval[E]) bytes(p, elem int64) int64 {
	x := int64(e.feature.dims.samples)
	g := int64(e.params.size)
	k := int64(len(snapshotSteps(e.q.Gram, e.from, e.to)))
	var scores int64
	if !e.shared {
		scores = e.feature.bytes(p, elem)
	}
	// The running scores, one snapshot's float64 Grams and one tensor's
	// product while it is taken, and every snapshot in float32. (A
	// checkpoint of the job's state copies the snapshots once more, in
	// float64, while it is written.)
	return scores + (g+1)*x*x*8 + k*g*x*x*4
}

func (e *gramEval[E]) allocate() {
	if !e.shared {
		e.feature.allocate()
	}
}

func (e *gramEval[E]) add(c *chunk[E]) {
	if !e.shared {
		e.feature.add(c)
	}
	if c.hi < e.feature.dims.samples {
		return // the step's last chunk takes the snapshot
	}
	if end := e.from + c.step + 1; end%e.q.Gram == 0 || end == e.to {
		e.snapshot(end)
	}
}

// snapshot appends the Gram matrices of the scores accumulated so far,
// those of the steps [from, end).
func (e *gramEval[E]) snapshot(end int) {
	d, p := e.feature.dims, e.params
	X := d.samples
	g64 := make([]float64, p.size*X*X)
	prod := make([]float64, X*X)
	for t, size := range d.tensorSizes {
		if len(p.entries[t]) == 0 {
			continue
		}
		a := e.feature.acc[t]
		gemm.Gemm(false, true, X, X, size, 1, a, size, a, size, 0, prod, X)
		for _, g := range p.entries[t] {
			dst := g64[g*X*X : (g+1)*X*X]
			for i, v := range prod {
				dst[i] += v
			}
		}
	}
	for _, v := range g64 {
		e.grams = append(e.grams, float32(v))
	}
	e.steps = append(e.steps, end)
}

func (e *gramEval[E]) result() *Result {
	p, X := e.params, e.feature.dims.samples
	return &Result{Query: e.q, Axes: []string{"snapshot", p.name, "test", "test"},
		Shape: []int{len(e.steps), p.size, X, X}, Labels: p.labels, Steps: append([]int(nil), e.steps...),
		Data32: e.grams}
}

// save stores the running scores as a Feature query's accumulators and
// the snapshots as values: the number K of snapshots, their steps, then
// their Gram matrices.
func (e *gramEval[E]) save() queryState {
	var s queryState
	if !e.shared {
		s = e.feature.save()
	}
	s.values = make([]float64, 0, 1+len(e.steps)+len(e.grams))
	s.values = append(s.values, float64(len(e.steps)))
	for _, st := range e.steps {
		s.values = append(s.values, float64(st))
	}
	for _, v := range e.grams {
		s.values = append(s.values, float64(v))
	}
	return s
}

func (e *gramEval[E]) restore(s queryState) error {
	if e.shared && len(s.tensors) != 0 {
		return errStateMismatch(e.q)
	}
	if !e.shared {
		if err := e.feature.restore(queryState{tensors: s.tensors}); err != nil {
			return err
		}
	}
	X, G := e.feature.dims.samples, e.params.size
	if len(s.values) < 1 {
		return errStateMismatch(e.q)
	}
	k := int(s.values[0])
	if k < 0 || len(s.values) != 1+k+k*G*X*X {
		return errStateMismatch(e.q)
	}
	e.steps = e.steps[:0]
	for _, v := range s.values[1 : 1+k] {
		e.steps = append(e.steps, int(v))
	}
	e.grams = make([]float32, k*G*X*X)
	for i, v := range s.values[1+k:] {
		e.grams[i] = float32(v)
	}
	return nil
}
