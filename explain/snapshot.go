package explain

import (
	"fmt"
	"slices"

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
// one product E_t E_tᵀ per tensor t (its upper triangle, gramUpper),
// added to every group holding t. Each snapshot ([group, test, test], in
// float32) goes to the job's GramSink as it is taken, or, without one, is
// kept in memory with the others; never the per-element scores of a
// snapshot.
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
	// sink receives the snapshots (Spec.Snapshots); nil keeps them in
	// grams.
	sink GramSink
	// steps are the snapshot steps taken so far; grams, without a sink,
	// their matrices [len(steps), groups, X, X].
	steps []int
	grams []float32
	// plan orders the snapshots' work (made at the first snapshot).
	plan *gramPlan
}

func (e *gramEval[E]) query() Query { return e.q }

// SnapshotSteps returns the snapshot steps of a snapshot query whose
// interval is every (Query.Gram) over the steps [from, to): the multiples
// of every in (from, to), and to. Snapshot k of the query's Result is
// taken at step SnapshotSteps(…)[k].
func SnapshotSteps(every, from, to int) []int {
	var s []int
	for k := (from/every + 1) * every; k < to; k += every {
		s = append(s, k)
	}
	return append(s, to)
}

func (e *gramEval[E]) bytes(p, elem int64) int64 {
	x := int64(e.feature.dims.samples)
	g := int64(e.params.size)
	var scores int64
	if !e.shared {
		scores = e.feature.bytes(p, elem)
	}
	// The running scores, a snapshot's float64 matrices while it is
	// taken (one product, the open group's and the held groups'), and,
	// without a sink, the float32 snapshots (and a checkpoint of the
	// job's state copies those once more, in float64, while it is
	// written).
	held := int64(len(newGramPlan(e.params.entries, e.params.size).held))
	var kept int64
	if e.sink == nil {
		kept = int64(len(SnapshotSteps(e.q.Gram, e.from, e.to))) * g * x * x * 4
	}
	return scores + (2+held)*x*x*8 + kept
}

func (e *gramEval[E]) allocate() {
	if !e.shared {
		e.feature.allocate()
	}
}

// perSample: the step's last chunk takes the snapshot, after every chunk's
// scores are added.
func (e *gramEval[E]) perSample() bool { return false }

func (e *gramEval[E]) add(c *chunk[E]) error {
	if !e.shared {
		if err := e.feature.add(c); err != nil {
			return err
		}
	}
	if c.hi < e.feature.dims.samples {
		return nil // the step's last chunk takes the snapshot
	}
	if end := e.from + c.step + 1; end%e.q.Gram == 0 || end == e.to {
		return e.snapshot(end)
	}
	return nil
}

// gramBlockRows is the number of rows of the blocks gramUpper splits a
// tensor's scores into.
const gramBlockRows = 256

// snapshot takes the Gram matrices of the scores accumulated so far,
// those of the steps [from, end), and hands them to the sink or keeps
// them. It holds two or three X × X matrices in float64 at a time, not
// every group's: each tensor's product E_t E_tᵀ is computed once, the
// tensors visited group by group (gramPlan), and a group handed on as
// soon as its last tensor is added; a group that shares its tensors with
// earlier ones (the "all" group) is summed alongside them. Products and
// sums are taken on the upper triangle, mirrored once per group.
func (e *gramEval[E]) snapshot(end int) error {
	d, p := e.feature.dims, e.params
	X := d.samples
	if e.plan == nil {
		e.plan = newGramPlan(p.entries, p.size)
	}
	// Without a sink, the snapshot goes straight into e.grams.
	base := len(e.grams)
	if e.sink == nil {
		e.grams = append(e.grams, make([]float32, p.size*X*X)...)
	}
	emit := func(g int, m []float64) error {
		for i := range X {
			for j := range i {
				m[i*X+j] = m[j*X+i]
			}
		}
		if e.sink == nil {
			dst := e.grams[base+g*X*X : base+(g+1)*X*X]
			for i, v := range m {
				dst[i] = float32(v)
			}
			return nil
		}
		if err := e.sink.Snapshot(e.q, len(e.steps), end, g, m); err != nil {
			return fmt.Errorf("snapshot %d of query %q (step %d), group %s: %w", len(e.steps), e.q.Name, end, p.labels[g], err)
		}
		return nil
	}
	acc := make(map[int][]float64, 1+len(e.plan.held))
	for _, g := range e.plan.held {
		acc[g] = make([]float64, X*X)
	}
	prod := make([]float64, X*X)
	blocks := max(1, min(8, X/gramBlockRows))
	for _, st := range e.plan.order {
		if st.open >= 0 {
			acc[st.open] = make([]float64, X*X)
		}
		if st.tensor >= 0 {
			gramUpper(X, d.tensorSizes[st.tensor], e.feature.acc[st.tensor], prod, blocks)
			for _, g := range p.entries[st.tensor] {
				addUpper(X, acc[g], prod)
			}
		}
		for _, g := range st.close {
			if err := emit(g, acc[g]); err != nil {
				return err
			}
			delete(acc, g)
		}
	}
	e.steps = append(e.steps, end)
	return nil
}

// addUpper adds the upper triangle (diagonal included) of the X × X matrix
// src to dst's.
func addUpper(X int, dst, src []float64) {
	for i := range X {
		d, s := dst[i*X+i:(i+1)*X], src[i*X+i:(i+1)*X]
		for j, v := range s {
			d[j] += v
		}
	}
}

// gramPlan orders a snapshot's work so that few groups' matrices are held
// at once: the tensors of each group in turn, starting with the groups
// that are the first group of all their tensors ("own" groups, opened when
// their first tensor comes and handed on after their last); the groups
// that share a tensor with an earlier group are held from the start and
// handed on at the end.
type gramPlan struct {
	held  []int
	order []gramStep
}

// gramStep is one step of a gramPlan: open a group's matrix (open ≥ 0),
// add a tensor's product (tensor ≥ 0) to its groups, then hand on the
// groups in close.
type gramStep struct {
	open, tensor int
	close        []int
}

// newGramPlan plans the snapshots of groups groups, entries listing each
// tensor's groups.
func newGramPlan(entries [][]int, groups int) *gramPlan {
	first := make([]int, len(entries)) // a tensor's first group, −1: none
	own := make([]bool, groups)
	for g := range own {
		own[g] = true
	}
	for t, gs := range entries {
		first[t] = -1
		if len(gs) == 0 {
			continue
		}
		first[t] = slices.Min(gs)
		for _, g := range gs {
			if g != first[t] {
				own[g] = false
			}
		}
	}
	p := &gramPlan{}
	for g := range groups {
		if !own[g] {
			p.held = append(p.held, g)
		}
	}
	done := make([]bool, len(entries))
	for g := range groups {
		if !own[g] {
			continue
		}
		st := gramStep{open: g, tensor: -1}
		for t := range entries {
			if first[t] != g {
				continue
			}
			done[t] = true
			st.tensor = t
			p.order = append(p.order, st)
			st = gramStep{open: -1, tensor: -1}
		}
		st.close = []int{g}
		p.order = append(p.order, st)
	}
	// Tensors whose first group is not an own group belong to held groups
	// only.
	st := gramStep{open: -1, tensor: -1}
	for t := range entries {
		if !done[t] && first[t] >= 0 {
			st.tensor = t
			p.order = append(p.order, st)
		}
	}
	p.order = append(p.order, gramStep{open: -1, tensor: -1, close: p.held})
	return p
}

// gramUpper sets the upper triangle (i ≤ j) of prod (X × X) to that of
// a aᵀ, a being X rows of size values: the rows split into the given
// number of blocks, one product per pair of blocks i ≤ j (with 8 blocks,
// 36 products of the 64 of the whole matrix). Entries below the diagonal
// are left as they are or overwritten.
func gramUpper(X, size int, a, prod []float64, blocks int) {
	blocks = max(1, min(blocks, X))
	lo := func(b int) int { return b * X / blocks }
	for bi := range blocks {
		r0, r1 := lo(bi), lo(bi+1)
		for bj := bi; bj < blocks; bj++ {
			c0, c1 := lo(bj), lo(bj+1)
			gemm.Gemm(false, true, r1-r0, c1-c0, size, 1, a[r0*size:], size, a[c0*size:], size, 0, prod[r0*X+c0:], X)
		}
	}
}

func (e *gramEval[E]) result() *Result {
	p, X := e.params, e.feature.dims.samples
	return &Result{Query: e.q, Axes: []string{"snapshot", p.name, "test", "test"},
		Shape: []int{len(e.steps), p.size, X, X}, Labels: p.labels, Steps: append([]int(nil), e.steps...),
		Data32: e.grams}
}

// save stores the running scores as a Feature query's accumulators and
// the snapshots as values: the number K of snapshots and their steps,
// then, without a sink, their Gram matrices (a sink holds them).
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

// restore takes a state that save wrote with or without a sink. With a
// sink, the sink must hold the state's snapshots (GramSink.Holds), or be
// handed those the state holds; without one, the state must hold them.
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
	n := G * X * X
	counted := k >= 0 && len(s.values) == 1+k           // saved with a sink
	held := k >= 0 && len(s.values) == 1+k+k*n && n > 0 // saved without one
	if !counted && !held {
		return errStateMismatch(e.q)
	}
	if k > len(SnapshotSteps(e.q.Gram, e.from, e.to)) {
		return errStateMismatch(e.q)
	}
	e.steps = e.steps[:0]
	for _, v := range s.values[1 : 1+k] {
		e.steps = append(e.steps, int(v))
	}
	grams := s.values[1+k:]
	switch {
	case e.sink == nil && counted && k > 0:
		return fmt.Errorf("explain: the saved state of query %q counts %d snapshots but holds none (a GramSink took them): "+
			"resume it with that sink in Spec.Snapshots", e.q.Name, k)
	case e.sink == nil:
		e.grams = make([]float32, k*n)
		for i, v := range grams {
			e.grams[i] = float32(v)
		}
	case counted:
		return e.sink.Holds(e.q, k)
	default:
		// A state saved without a sink: its snapshots go to the sink.
		m := make([]float64, X*X)
		for i, st := range e.steps {
			for g := range G {
				for j, v := range grams[i*n+g*X*X : i*n+(g+1)*X*X] {
					m[j] = float64(float32(v))
				}
				if err := e.sink.Snapshot(e.q, i, st, g, m); err != nil {
					return fmt.Errorf("snapshot %d of query %q (step %d): %w", i, e.q.Name, st, err)
				}
			}
		}
	}
	return nil
}
