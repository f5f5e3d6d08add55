package explain_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/explain"
	"github.com/explaind/explaind/explain/job"
	"github.com/explaind/explaind/gemm"
)

// gramOf returns the Gram matrices [G, X, X] of the per-element scores of
// r (a query keeping Param and Test) restricted to each group, by plain
// dot products.
func gramOf(r *explain.Result, groups []explain.TensorGroup, X int) []float64 {
	out := make([]float64, len(groups)*X*X)
	for g, gr := range groups {
		for ti, name := range r.TensorNames {
			if !slices.Contains(gr.Tensors, name) {
				continue
			}
			d := r.Tensors[ti].Data
			size := len(d) / X
			for x := 0; x < X; x++ {
				for y := 0; y < X; y++ {
					var s float64
					for i := 0; i < size; i++ {
						s += d[x*size+i] * d[y*size+i]
					}
					out[(g*X+x)*X+y] += s
				}
			}
		}
	}
	return out
}

// TestGramSnapshots checks each Gram snapshot of a job over FROM:TO
// against the Gram matrices of the per-element scores of a job over the
// truncated range FROM:s_k: every entry within float32 rounding (2e-7
// relative, plus 1e-12 of the matrix's largest entry).
func TestGramSnapshots(t *testing.T) {
	dir := tinyRun(t, "adamw", 7)
	tr, err := job.OpenRun[float64, float64](dir)
	if err != nil {
		t.Fatal(err)
	}
	X := 6
	idx := []int{0, 1, 2, 3, 4, 5}
	sub, err := tr.Data.Val.Subset(idx)
	if err != nil {
		t.Fatal(err)
	}
	test := explain.TestSet[float64]{X: sub.Inputs, Labels: sub.Labels}
	var names []string
	for _, p := range tr.Model.Params() {
		names = append(names, p.Name)
	}
	groups := append(explain.DefaultGroups(names), explain.TensorGroup{Name: "all", Tensors: names})
	q := epk.Quadrature{Rule: epk.Exact, Points: 3, Tol: 1e-9}
	for _, c := range []struct {
		from, to, every int
		steps           []int
	}{
		{0, 7, 3, []int{3, 6, 7}},
		{2, 7, 2, []int{4, 6, 7}},
		{1, 6, 5, []int{5, 6}},
	} {
		spec := explain.Spec[float64]{Test: test, From: c.from, To: c.to, Quadrature: q, Groups: groups, Chunk: 4,
			Queries: []explain.Query{{Name: "gram", Keep: explain.Test | explain.Group, Gram: c.every}}}
		out, err := explain.Run(context.Background(), tr.Source, tr.Model, tr.Path, spec)
		if err != nil {
			t.Fatal(err)
		}
		r := out.Results[0]
		G := len(groups)
		// With the components' query first, the snapshots read its
		// scores instead of their own: the same bits.
		shared := spec
		shared.Queries = append([]explain.Query{{Name: "scores", Keep: explain.Param | explain.Test}}, spec.Queries...)
		o2, err := explain.Run(context.Background(), tr.Source, tr.Model, tr.Path, shared)
		if err != nil {
			t.Fatal(err)
		}
		if r2 := o2.Results[1]; !slices.Equal(r2.Data32, r.Data32) || !slices.Equal(r2.Steps, r.Steps) || r2.Query.Name != "gram" {
			t.Errorf("%d:%d every %d: the snapshots sharing the components' scores differ", c.from, c.to, c.every)
		}
		if !slices.Equal(r.Steps, c.steps) || !slices.Equal(r.Shape, []int{len(c.steps), G, X, X}) {
			t.Fatalf("%d:%d every %d: snapshots at %v, shape %v; want %v", c.from, c.to, c.every, r.Steps, r.Shape, c.steps)
		}
		if r.Labels[G-1] != "all" || r.Axes[1] != "group" {
			t.Errorf("axes %v labels %v", r.Axes, r.Labels)
		}
		for k, end := range c.steps {
			ref := spec
			ref.To, ref.Groups = end, nil
			ref.Queries = []explain.Query{{Name: "scores", Keep: explain.Param | explain.Test}}
			o2, err := explain.Run(context.Background(), tr.Source, tr.Model, tr.Path, ref)
			if err != nil {
				t.Fatal(err)
			}
			want := gramOf(o2.Results[0], groups, X)
			got := r.Data32[k*G*X*X : (k+1)*G*X*X]
			for g := range groups {
				w, gg := want[g*X*X:(g+1)*X*X], got[g*X*X:(g+1)*X*X]
				big := 0.0
				for _, v := range w {
					big = math.Max(big, math.Abs(v))
				}
				if groups[g].Name == "all" && !(big > 0) {
					t.Fatalf("snapshot %d: the whole model's Gram matrix is zero", end)
				}
				for i := range w {
					if d := math.Abs(float64(gg[i]) - w[i]); !(d <= 2e-7*math.Abs(w[i])+1e-12*big) {
						t.Fatalf("%d:%d snapshot at %d, group %s, entry %d: %g, want %g (from a job over %d:%d)",
							c.from, c.to, end, groups[g].Name, i, gg[i], w[i], c.from, end)
					}
				}
			}
		}
	}
}

// TestGramSnapshotsResume interrupts a snapshot job after the first
// snapshot and resumes it: the same snapshots as without interruption.
func TestGramSnapshotsResume(t *testing.T) {
	tr, test := openTiny(t, "adamw", 7)
	groups := []explain.TensorGroup{{Name: "dec", Tensors: []string{"decoder.weight"}}}
	for _, qs := range [][]explain.Query{
		{{Name: "gram", Keep: explain.Test | explain.Group, Gram: 2}},
		{{Name: "scores", Keep: explain.Param | explain.Test}, {Name: "gram", Keep: explain.Test | explain.Group, Gram: 2}},
	} {
		gramResume(t, tr, explain.Spec[float64]{Test: test, Quadrature: epk.Quadrature{Rule: epk.Exact, Points: 3}, Groups: groups, Queries: qs})
	}
}

// gramResume runs spec whole and interrupted after 3 steps then resumed:
// the same results.
func gramResume(t *testing.T, tr *job.TrainRun[float64, float64], spec explain.Spec[float64]) {
	t.Helper()
	full, err := explain.Run(context.Background(), tr.Source, tr.Model, tr.Path, spec)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var saved *explain.State
	s2 := spec
	s2.Progress = func(done, _ int) {
		if done == 3 {
			cancel()
		}
	}
	s2.Checkpoint = func(st *explain.State) error { saved = st; return nil }
	if _, err := explain.Run(ctx, tr.Source, tr.Model, tr.Path, s2); err != explain.ErrInterrupted {
		t.Fatalf("interrupted job returned %v", err)
	}
	s3 := spec
	s3.Resume = saved
	res, err := explain.Run(context.Background(), tr.Source, tr.Model, tr.Path, s3)
	if err != nil {
		t.Fatal(err)
	}
	last := len(spec.Queries) - 1
	a, b := res.Results[last], full.Results[last]
	if !slices.Equal(a.Steps, b.Steps) || !slices.Equal(a.Data32, b.Data32) || len(a.Data32) == 0 {
		t.Errorf("resumed snapshots at %v differ from %v (or are empty)", a.Steps, b.Steps)
	}
	if last > 0 && !slices.Equal(flatten(res.Results[0]), flatten(full.Results[0])) {
		t.Error("the resumed scores differ")
	}
}

func TestBadGramQueries(t *testing.T) {
	tr, test := openTiny(t, "adamw", 3)
	groups := []explain.TensorGroup{{Name: "dec", Tensors: []string{"decoder.weight"}}}
	for _, c := range []struct {
		qs   []explain.Query
		want string
	}{
		{[]explain.Query{{Name: "a", Keep: explain.Test | explain.Group, Gram: -1}}, "must be positive"},
		{[]explain.Query{{Name: "a", Keep: explain.Test | explain.Param, Gram: 2}}, "keeps test and group"},
		{[]explain.Query{{Name: "a", Keep: explain.Test | explain.Group, Gram: 2, Abs: true}}, "without an absolute value"},
		{[]explain.Query{{Name: "a", Keep: explain.Test | explain.Group, Gram: 2},
			{Name: "k", Keep: explain.Train, Part: explain.Data}}, "two jobs"},
	} {
		spec := explain.Spec[float64]{Queries: c.qs, Test: test, Groups: groups}
		_, err := explain.Run(context.Background(), tr.Source, tr.Model, tr.Path, spec)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want an error saying %q", err, c.want)
		}
	}
}

// TestGramUpper checks the blocked upper-triangle product against the
// whole product a aᵀ of one GEMM: within 1e-13 of the largest entry, and
// exactly symmetric.
func TestGramUpper(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct{ X, size, blocks int }{{1, 3, 1}, {5, 7, 1}, {5, 7, 2}, {9, 4, 4}, {3, 5, 8}, {37, 11, 5}, {64, 1, 7}} {
		a := make([]float64, c.X*c.size)
		for i := range a {
			a[i] = rng.NormFloat64()
		}
		want := make([]float64, c.X*c.X)
		gemm.Gemm(false, true, c.X, c.X, c.size, 1, a, c.size, a, c.size, 0, want, c.X)
		got := make([]float64, c.X*c.X)
		for i := range got {
			got[i] = math.NaN() // every entry must be written
		}
		explain.GramUpper(c.X, c.size, a, got, c.blocks) // sets the upper triangle
		big := 0.0
		for _, v := range want {
			big = math.Max(big, math.Abs(v))
		}
		for i := range c.X {
			for j := i; j < c.X; j++ {
				if d := math.Abs(got[i*c.X+j] - want[i*c.X+j]); !(d <= 1e-13*big) {
					t.Fatalf("X %d, size %d, %d blocks: entry (%d, %d) %g, want %g", c.X, c.size, c.blocks, i, j, got[i*c.X+j], want[i*c.X+j])
				}
			}
		}
	}
}

// memSink is a GramSink that keeps the snapshots it is handed; holds, if
// set, is the number of snapshots Holds reports.
type memSink struct {
	steps []int
	grams [][]float32
	calls int // Snapshot calls (one per group)
	holds int
}

func (m *memSink) Snapshot(q explain.Query, k, step, g int, gram []float64) error {
	m.calls++
	for len(m.grams) <= k {
		m.grams, m.steps = append(m.grams, nil), append(m.steps, 0)
	}
	for len(m.grams[k]) < (g+1)*len(gram) {
		m.grams[k] = append(m.grams[k], make([]float32, len(gram))...)
	}
	for i, v := range gram {
		m.grams[k][g*len(gram)+i] = float32(v)
	}
	m.steps[k] = step
	return nil
}

func (m *memSink) Holds(q explain.Query, k int) error {
	if m.holds < k {
		return fmt.Errorf("the sink holds %d of %d snapshots", m.holds, k)
	}
	return nil
}

func (m *memSink) flat() []float32 { return slices.Concat(m.grams...) }

// TestGramSink runs a snapshot job with a GramSink: the sink receives
// the snapshots the job without one keeps (the same bits), the Result
// and the saved states hold none; a job interrupted and resumed with a
// sink hands it the snapshots from the state's count on; a resume whose
// sink lacks the state's snapshots is refused, and so is one without a
// sink; a state saved without a sink hands its snapshots to the sink of
// the job that resumes it.
func TestGramSink(t *testing.T) {
	tr, test := openTiny(t, "adamw", 7)
	groups := []explain.TensorGroup{{Name: "dec", Tensors: []string{"decoder.weight"}}}
	spec := explain.Spec[float64]{Test: test, Quadrature: epk.Quadrature{Rule: epk.Exact, Points: 3}, Groups: groups,
		Queries: []explain.Query{{Name: "gram", Keep: explain.Test | explain.Group, Gram: 2}}}
	run := func(s explain.Spec[float64], ctx context.Context) (*explain.Output, error) {
		return explain.Run(ctx, tr.Source, tr.Model, tr.Path, s)
	}
	mem, err := run(spec, context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := mem.Results[0]
	if !slices.Equal(want.Steps, []int{2, 4, 6, 7}) || len(want.Data32) == 0 {
		t.Fatalf("snapshots at %v, %d values", want.Steps, len(want.Data32))
	}
	sink := &memSink{}
	s := spec
	s.Snapshots = sink
	out, err := run(s, context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r := out.Results[0]; r.Data32 != nil || !slices.Equal(r.Steps, want.Steps) || !slices.Equal(r.Shape, want.Shape) {
		t.Errorf("with a sink: result steps %v, shape %v, %d values; want %v, %v and none", r.Steps, r.Shape, len(r.Data32), want.Steps, want.Shape)
	}
	if !slices.Equal(sink.flat(), want.Data32) || !slices.Equal(sink.steps, want.Steps) || sink.calls != 4 {
		t.Errorf("the sink got %d snapshots at %v in %d calls, unlike the job without one", len(sink.grams), sink.steps, sink.calls)
	}

	// interrupt stops a job after 5 steps and returns its saved state.
	interrupt := func(s explain.Spec[float64]) *explain.State {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var saved *explain.State
		s.Progress = func(done, _ int) {
			if done == 5 {
				cancel()
			}
		}
		s.Checkpoint = func(st *explain.State) error { saved = st; return nil }
		if _, err := run(s, ctx); err != explain.ErrInterrupted || saved == nil {
			t.Fatalf("interrupted job returned %v", err)
		}
		return saved
	}
	sink = &memSink{}
	s.Snapshots = sink
	st := interrupt(s)
	if got := st.Acc[0]; !slices.Equal(got, []float64{2, 2, 4}) {
		t.Fatalf("the state saved with a sink holds %v, want [2 2 4] (2 snapshots, at steps 2 and 4)", got)
	}
	sink.holds = 2
	s.Resume = st
	if _, err := run(s, context.Background()); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sink.flat(), want.Data32) || sink.calls != 4 {
		t.Errorf("the resumed sink got %d calls and other snapshots", sink.calls)
	}
	sink.holds = 1
	if _, err := run(s, context.Background()); err == nil || !strings.Contains(err.Error(), "the sink holds 1 of 2 snapshots") {
		t.Errorf("resuming with a sink short of the state's snapshots: %v", err)
	}
	s.Snapshots = nil
	if _, err := run(s, context.Background()); err == nil || !strings.Contains(err.Error(), "counts 2 snapshots but holds none") {
		t.Errorf("resuming a sink's state without a sink: %v", err)
	}

	// A state saved without a sink, resumed with one.
	st = interrupt(spec)
	sink = &memSink{}
	s.Snapshots, s.Resume = sink, st
	if _, err := run(s, context.Background()); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sink.flat(), want.Data32) || sink.calls != 4 {
		t.Errorf("resuming a state without a sink: the sink got %d calls and other snapshots", sink.calls)
	}
}

// TestGramPlan checks the order of a snapshot's work on groups that
// partition the tensors plus "all", on overlapping groups, and with a
// tensor in no group: every group gets each of its tensors' products once,
// while its matrix is open, and is handed on once.
func TestGramPlan(t *testing.T) {
	for _, c := range []struct {
		name    string
		entries [][]int // per tensor, its groups
		groups  int
		most    int // matrices open at once
	}{
		{"partition and all", [][]int{{0, 3}, {0, 3}, {1, 3}, {2, 3}}, 4, 2},
		{"overlapping", [][]int{{0}, {0, 1}, {1, 2}, {2}}, 3, 3},
		{"tensor in none", [][]int{{1}, {}, {0, 1}}, 2, 2},
		{"held group first", [][]int{{1, 0}, {0}}, 2, 2},
	} {
		added, closed, most := explain.GramPlanCheck(c.entries, c.groups)
		for g := range c.groups {
			var want []int
			for tn, gs := range c.entries {
				if slices.Contains(gs, g) {
					want = append(want, tn)
				}
			}
			got := slices.Sorted(slices.Values(added[g]))
			if !slices.Equal(got, want) || closed[g] != 1 {
				t.Errorf("%s: group %d got tensors %v and was handed on %d times, want %v once", c.name, g, added[g], closed[g], want)
			}
		}
		if most != c.most {
			t.Errorf("%s: %d matrices open at once, want %d", c.name, most, c.most)
		}
		t.Logf("%s: %d matrices open at once", c.name, most)
	}
}
