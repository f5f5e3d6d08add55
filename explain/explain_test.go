package explain_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/explain"
	"github.com/explaind/explaind/explain/job"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/testrun"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/optim"
	"github.com/explaind/explaind/tensor"
	"github.com/explaind/explaind/train"
)

func TestMain(m *testing.M) { testrun.Main(m) }

// tinyRun returns a tiny modulo transformer run (testrun.Modulo,
// checkpoints every 4 steps) trained in float64 with the named optimizer:
// AdamW (constant lr) or SGD with momentum, weight decay and the triangle
// schedule. The run is shared: the tests only read it.
func tinyRun(t testing.TB, opt string, steps int) string {
	t.Helper()
	c := testrun.Modulo(steps, 4)
	switch opt {
	case "adamw":
		c.Optimizer.LR = 1e-2
		c.Optimizer.WeightDecay = 1
	case "sgd":
		c.Optimizer = train.OptimizerConfig{Name: "sgd", LR: 0.05, Momentum: 0.9, WeightDecay: 5e-3}
		c.Schedule = "triangle"
		c.PeakEpoch = 2
		c.BatchSize = 8
		c.Epochs = (steps + 1) / 2
	}
	return testrun.Train[float64](t, c)
}

// openTiny opens a tinyRun of opt over steps and returns it with its
// validation split as the test set.
func openTiny(t testing.TB, opt string, steps int) (*job.TrainRun[float64, float64], explain.TestSet[float64]) {
	t.Helper()
	tr, err := job.OpenRun[float64, float64](tinyRun(t, opt, steps))
	if err != nil {
		t.Fatal(err)
	}
	return tr, explain.TestSet[float64]{X: tr.Data.Val.Inputs, Labels: tr.Data.Val.Labels}
}

// brute is the contribution tensor of a tiny run, fully materialized:
// data[x][c][k][s][j], reg and resid [x][c][s][j] (j over all parameter
// elements in model order).
type brute struct {
	X, C, N, S, P int
	data          []float64
	reg, resid    []float64
	sizes         []int
	labels        []int
}

func (b *brute) d(x, c, k, s, j int) float64 { return b.data[(((x*b.C+c)*b.N+k)*b.S+s)*b.P+j] }
func (b *brute) r(x, c, s, j int) float64    { return b.reg[((x*b.C+c)*b.S+s)*b.P+j] }
func (b *brute) e(x, c, s, j int) float64    { return b.resid[((x*b.C+c)*b.S+s)*b.P+j] }

// materialize replays the run, splits every step, evaluates the class
// features φ_s with the given quadrature (the engine's plan for the same
// options) and forms every entry of the contribution tensor.
func materialize(t *testing.T, dir string, q epk.Quadrature) *brute {
	t.Helper()
	tr, err := job.OpenRun[float64, float64](dir)
	if err != nil {
		t.Fatal(err)
	}
	val := tr.Data.Val
	model := tr.Model
	params := model.Params()
	ev, err := epk.NewEvaluator[float64](tr.Path, epk.Options{Quadrature: q})
	if err != nil {
		t.Fatal(err)
	}
	var split func(epk.StepInput[float64]) (*epk.Update[float64], error)
	switch o := tr.Source.Optimizer.(type) {
	case *optim.AdamW[float64]:
		sp, _ := epk.NewAdamWSplitter(o)
		split = sp.Split
	case *optim.SGD[float64]:
		sp, _ := epk.NewSGDSplitter(o)
		split = sp.Split
	}
	b := &brute{X: val.Len(), N: tr.Source.TrainSize, S: tr.Source.Replay.Steps(), labels: val.Labels}
	for _, p := range params {
		b.sizes = append(b.sizes, len(p.Value.Data))
		b.P += len(p.Value.Data)
	}
	var mk [][]float64 // per training sample: Σ_i β^{s−i} E_i/|B_i| ∇f_{y_k}(θ_i; x_k)
	gm := tr.Source.GradModel
	err = tr.Source.Replay.Forward(0, b.S, func(v *history.StepView[float64]) error {
		for i, p := range gm.Params() {
			copy(p.Value.Data, v.Before[i].Value.Data)
		}
		xb, yb, err := tr.Source.Batch(v.Record)
		if err != nil {
			return err
		}
		g, err := epk.MeanGradient(gm, xb, yb)
		if err != nil {
			return err
		}
		u, err := split(explain.StepInputOf(v, g))
		if err != nil {
			return err
		}
		res, err := ev.Contributions(u, val.Inputs, nil)
		if err != nil {
			return err
		}
		f, _, err := ev.Features(u, val.Inputs, res.Plan, nil)
		if err != nil {
			return err
		}
		if b.C == 0 {
			b.C = f.K
			b.data = make([]float64, b.X*b.C*b.N*b.S*b.P)
			b.reg = make([]float64, b.X*b.C*b.S*b.P)
			b.resid = make([]float64, b.X*b.C*b.S*b.P)
			mk = make([][]float64, b.N)
			for k := range mk {
				mk[k] = make([]float64, b.P)
			}
		}
		// Per-sample output gradients of the batch at θ_s.
		for i, p := range params {
			copy(p.Value.Data, v.Before[i].Value.Data)
		}
		y, st, err := model.Forward(xb)
		if err != nil {
			return err
		}
		dy := tensor.New[float64](y.Shape...)
		for i, l := range yb {
			dy.Data[i*b.C+l] = 1
		}
		gr := nn.NewGrads(nn.PerRow, params, len(yb))
		if _, err := model.Backward(st, dy, gr, false); err != nil {
			return err
		}
		idx := tr.Source.BatchIndices(v.Record)
		s := v.Step
		off := 0
		for ti, p := range params {
			size := b.sizes[ti]
			for k := range mk {
				for e := 0; e < size; e++ {
					mk[k][off+e] *= u.Kernel.Beta
				}
			}
			w := u.Kernel.E[ti] / float64(len(idx))
			for i, k := range idx {
				for e := 0; e < size; e++ {
					mk[k][off+e] += w * gr.Of[p].Data[i*size+e]
				}
			}
			for x := 0; x < b.X; x++ {
				for c := 0; c < b.C; c++ {
					phi := f.Phi[ti].Data[(x*b.C+c)*size : (x*b.C+c+1)*size]
					for e := 0; e < size; e++ {
						j := off + e
						b.reg[((x*b.C+c)*b.S+s)*b.P+j] = phi[e] * u.Reg[ti].Data[e]
						b.resid[((x*b.C+c)*b.S+s)*b.P+j] = phi[e] * u.Resid[ti].Data[e]
						if u.Kernel.A[ti] == nil {
							continue
						}
						for k := 0; k < b.N; k++ {
							b.data[(((x*b.C+c)*b.N+k)*b.S+s)*b.P+j] = phi[e] * u.Kernel.A[ti].Data[e] * mk[k][j]
						}
					}
				}
			}
			off += size
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// want computes a query's result from the materialized tensor.
func (b *brute) want(q explain.Query, groups []explain.TensorGroup, names []string) []float64 {
	tensorOf := make([]int, b.P)
	off := 0
	for ti, size := range b.sizes {
		for e := 0; e < size; e++ {
			tensorOf[off+e] = ti
		}
		off += size
	}
	nj := 1
	jEntries := func(j int) []int { return []int{0} }
	switch {
	case q.Keep&explain.Param != 0:
		nj = b.P
		jEntries = func(j int) []int { return []int{j} }
	case q.Keep&explain.Tensor != 0:
		nj = len(b.sizes)
		jEntries = func(j int) []int { return []int{tensorOf[j]} }
	case q.Keep&explain.Group != 0:
		nj = len(groups)
		jEntries = func(j int) []int {
			var out []int
			for g, gr := range groups {
				for _, n := range gr.Tensors {
					if n == names[tensorOf[j]] {
						out = append(out, g)
					}
				}
			}
			return out
		}
	}
	bucket := max(q.Bucket, 1)
	nb := 1
	if q.Keep&explain.Step != 0 {
		nb = (b.S + bucket - 1) / bucket
	}
	dims := func(x, c, k, s int) int {
		i := 0
		if q.Keep&explain.Step != 0 {
			i = s / bucket
		}
		if q.Keep&explain.Test != 0 {
			i = i*b.X + x
		}
		if q.Keep&explain.Class != 0 {
			i = i*b.C + c
		}
		return i
	}
	lead := nb
	if q.Keep&explain.Test != 0 {
		lead *= b.X
	}
	if q.Keep&explain.Class != 0 {
		lead *= b.C
	}
	keepK := q.Keep&explain.Train != 0
	N := 1
	if keepK {
		N = b.N
	}
	out := make([]float64, lead*nj*N)
	for x := 0; x < b.X; x++ {
		for c := 0; c < b.C; c++ {
			if q.Classes == explain.TrueClass && c != b.labels[x] {
				continue
			}
			for j := 0; j < b.P; j++ {
				// Per (x, c, j): sums over s (and k unless kept).
				inner := make([]float64, nb*N)
				for s := 0; s < b.S; s++ {
					sb := 0
					if q.Keep&explain.Step != 0 {
						sb = s / bucket
					}
					for k := 0; k < b.N; k++ {
						v := 0.0
						if q.Part == explain.Data || q.Part == explain.Update || q.Part == explain.Model {
							v = b.d(x, c, k, s, j)
						}
						kk := 0
						if keepK {
							kk = k
						}
						inner[sb*N+kk] += v
					}
					v := 0.0
					switch q.Part {
					case explain.Update:
						v = b.r(x, c, s, j) + b.e(x, c, s, j)
					case explain.Model, explain.Reg:
						v = b.r(x, c, s, j)
					case explain.Resid:
						v = b.e(x, c, s, j)
					}
					inner[sb*N] += v
				}
				for sb := 0; sb < nb; sb++ {
					for kk := 0; kk < N; kk++ {
						v := inner[sb*N+kk]
						if q.Abs {
							v = math.Abs(v)
						}
						li := dims(x, c, 0, sb*bucket)
						for _, e := range jEntries(j) {
							out[(li*nj+e)*N+kk] += v
						}
					}
				}
			}
		}
	}
	return out
}

func flatten(r *explain.Result) []float64 {
	if r.Tensors == nil {
		return r.Data
	}
	// [lead, tensor...] per tensor → [lead, P].
	lead := 1
	for _, d := range r.Shape {
		lead *= d
	}
	P := 0
	for _, t := range r.Tensors {
		P += len(t.Data) / lead
	}
	out := make([]float64, lead*P)
	off := 0
	for _, t := range r.Tensors {
		size := len(t.Data) / lead
		for l := 0; l < lead; l++ {
			copy(out[l*P+off:l*P+off+size], t.Data[l*size:(l+1)*size])
		}
		off += size
	}
	return out
}

var queries = []explain.Query{
	{Name: "prediction", Keep: explain.Test | explain.Class},
	{Name: "steps-true-class-data", Keep: explain.Step | explain.Test, Classes: explain.TrueClass, Part: explain.Data, Bucket: 2},
	{Name: "per-tensor", Keep: explain.Tensor, Part: explain.Model},
	{Name: "per-group-test", Keep: explain.Group | explain.Test, Part: explain.Model},
	{Name: "step-tensor-true", Keep: explain.Step | explain.Tensor | explain.Test, Classes: explain.TrueClass, Part: explain.Model},
	{Name: "tensor-class-tangents", Keep: explain.Tensor | explain.Class | explain.Test, Part: explain.Model},
	{Name: "resid-total", Keep: 0, Part: explain.Resid},
	{Name: "param-test", Keep: explain.Param | explain.Test},
	{Name: "param-class-reg", Keep: explain.Param | explain.Class, Part: explain.Reg},
	{Name: "prune", Keep: explain.Param, Abs: true, Part: explain.Data},
	{Name: "abs-tensor-true", Keep: explain.Tensor, Abs: true, Classes: explain.TrueClass, Part: explain.Reg},
	{Name: "kernel-class", Keep: explain.Train | explain.Class, Part: explain.Data},
	{Name: "kernel-full", Keep: explain.Train | explain.Test | explain.Class, Part: explain.Data},
	{Name: "kernel-tensor-true", Keep: explain.Train | explain.Test | explain.Tensor, Classes: explain.TrueClass, Part: explain.Data},
	{Name: "kernel-sum", Keep: explain.Train, Part: explain.Data},
}

// TestQueriesMatchBruteForce checks every query against the same sum of a
// fully materialized contribution tensor, for AdamW and for SGD with
// momentum, weight decay and a schedule.
func TestQueriesMatchBruteForce(t *testing.T) {
	for _, opt := range []string{"adamw", "sgd"} {
		t.Run(opt, func(t *testing.T) {
			dir := tinyRun(t, opt, 6)
			q := epk.Quadrature{Rule: epk.Exact, Points: 3}
			b := materialize(t, dir, q)
			tr, err := job.OpenRun[float64, float64](dir)
			if err != nil {
				t.Fatal(err)
			}
			groups := []explain.TensorGroup{{Name: "outer", Tensors: []string{"input_emb.weight", "decoder.weight"}}, {Name: "mlp", Tensors: []string{"linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"}}}
			spec := explain.Spec[float64]{Queries: queries, Test: explain.TestSet[float64]{X: tr.Data.Val.Inputs, Labels: tr.Data.Val.Labels},
				Quadrature: q, Groups: groups, Chunk: 3}
			out, err := explain.Run(context.Background(), tr.Source, tr.Model, tr.Path, spec)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range out.Results {
				want := b.want(queries[i], groups, out.TensorNames)
				got := flatten(r)
				if len(got) != len(want) {
					t.Errorf("%s: %d values (shape %v, axes %v), brute force %d", r.Query.Name, len(got), r.Shape, r.Axes, len(want))
					continue
				}
				e := tensor.RelErr(got, want)
				t.Logf("%-22s axes %-28v: relative error %.2g against brute force", r.Query.Name, r.Axes, e)
				if !(e <= 1e-9) {
					t.Errorf("%s: relative error %.3g against brute force, want ≤ 1e-9", r.Query.Name, e)
				}
			}
			t.Logf("kernel sums against the forward data contributions: %.2g (relative)", out.KernelResidual)
			if !(out.KernelResidual <= 1e-10) {
				t.Errorf("the sweep's kernel sums differ from the forward data contributions by %.3g (relative)", out.KernelResidual)
			}
			checkValidation(t, out, 1e-6)
		})
	}
}

// checkValidation checks Start + Data + Reg + Resid against the model's
// output, and that the parts and the quadrature residual add up.
func checkValidation(t *testing.T, out *explain.Output, tol float64) {
	t.Helper()
	v := out.Validation
	epkPred := make([]float64, len(v.Start))
	closed := make([]float64, len(v.Start))
	for i := range epkPred {
		epkPred[i] = v.Start[i] + v.Data[i] + v.Reg[i] + v.Resid[i]
		closed[i] = epkPred[i] - v.Quad[i]
	}
	e := tensor.RelErr(epkPred, v.Model)
	c := tensor.RelErr(closed, v.Model)
	t.Logf("EPK prediction against the model: relative error %.2g; with the quadrature residual removed %.2g; max step completeness %.2g; %.1f nodes per sample and step",
		e, c, maxOf(v.StepMaxCompleteness), v.Nodes)
	if !(e <= tol) {
		t.Errorf("EPK prediction differs from the model by %.3g relative, want ≤ %.0e", e, tol)
	}
	if !(c <= 1e-4*tol+1e-12) && !(c <= tol) {
		t.Errorf("start + parts − quadrature residual differs from the model by %.3g", c)
	}
}

func maxOf(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = math.Max(m, x)
	}
	return m
}

func TestFloat32Evaluation(t *testing.T) {
	dir := tinyRun(t, "adamw", 5)
	tr, err := job.OpenRun[float64, float32](dir)
	if err != nil {
		t.Fatal(err)
	}
	spec := explain.Spec[float32]{Queries: queries[:1], Test: explain.TestSet[float32]{X: tr.Data.Val.Inputs, Labels: tr.Data.Val.Labels},
		Quadrature: epk.Quadrature{Rule: epk.Exact, Points: 3}}
	out, err := explain.Run(context.Background(), tr.Source, tr.Model, tr.Path, spec)
	if err != nil {
		t.Fatal(err)
	}
	checkValidation(t, out, 1e-4)
}

func TestBadQueries(t *testing.T) {
	tr, test := openTiny(t, "adamw", 3)
	for _, c := range []struct {
		spec explain.Spec[float64]
		want string
	}{
		{explain.Spec[float64]{Queries: []explain.Query{{Name: "a", Keep: explain.Train}}, Test: test}, "only the data part"},
		{explain.Spec[float64]{Queries: []explain.Query{{Name: "a", Keep: explain.Param | explain.Step}}, Test: test}, "keeps steps"},
		{explain.Spec[float64]{Queries: []explain.Query{{Name: "a", Keep: explain.Group}}, Test: test, Groups: []explain.TensorGroup{{Name: "g", Tensors: []string{"nope.weight"}}}}, "unknown tensor \"nope.weight\""},
		{explain.Spec[float64]{Queries: []explain.Query{{Name: "a", Keep: explain.Test}}, Test: test, From: 2, To: 9}, "outside the run's 3 steps"},
		{explain.Spec[float64]{Queries: []explain.Query{{Name: "a", Keep: explain.Param | explain.Test | explain.Class}}, Test: test, MaxBytes: 1 << 10}, "memory ceiling"},
		{explain.Spec[float64]{Queries: []explain.Query{{Name: "a", Keep: explain.Train, Part: explain.Data}}, Test: test, From: 1}, "start at step 0"},
		{explain.Spec[float64]{Queries: []explain.Query{{Name: "a", Keep: explain.Test}}, Test: test, Workers: 2}, "need Spec.NewModel"},
		{explain.Spec[float64]{Queries: []explain.Query{{Name: "a", Keep: explain.Test}}, Test: test, Workers: -1}, "want at least 1"},
	} {
		_, err := explain.Run(context.Background(), tr.Source, tr.Model, tr.Path, c.spec)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want an error saying %q", err, c.want)
		}
	}
}

// TestWorkersMatchOneWorker evaluates every query with chunks spread over
// three workers and with one: the chunks are the same and are added in the
// same order, so every output must be the same to the bit.
func TestWorkersMatchOneWorker(t *testing.T) {
	for _, opt := range []string{"adamw", "sgd"} {
		t.Run(opt, func(t *testing.T) {
			dir := tinyRun(t, opt, 6)
			var outs [2]*explain.Output
			for i, w := range []int{1, 3} {
				tr, err := job.OpenRun[float64, float64](dir)
				if err != nil {
					t.Fatal(err)
				}
				spec := explain.Spec[float64]{Queries: queries, Test: explain.TestSet[float64]{X: tr.Data.Val.Inputs, Labels: tr.Data.Val.Labels},
					Quadrature: epk.Quadrature{Rule: epk.Adaptive, Tol: 1e-8}, Chunk: 2, Workers: w, NewModel: tr.NewModel,
					Groups: []explain.TensorGroup{{Name: "outer", Tensors: []string{"input_emb.weight", "decoder.weight"}}}}
				if outs[i], err = explain.Run(context.Background(), tr.Source, tr.Model, tr.Path, spec); err != nil {
					t.Fatal(err)
				}
			}
			one, three := outs[0], outs[1]
			same := func(name string, a, b []float64) {
				t.Helper()
				if len(a) != len(b) {
					t.Fatalf("%s: %d values with one worker, %d with three", name, len(a), len(b))
				}
				for i := range a {
					if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
						t.Fatalf("%s[%d]: %v with one worker, %v with three", name, i, a[i], b[i])
					}
				}
			}
			v1, v3 := one.Validation, three.Validation
			for _, a := range []struct {
				name string
				a, b []float64
			}{{"start", v1.Start, v3.Start}, {"model", v1.Model, v3.Model}, {"data", v1.Data, v3.Data}, {"reg", v1.Reg, v3.Reg},
				{"resid", v1.Resid, v3.Resid}, {"quad", v1.Quad, v3.Quad}, {"step max completeness", v1.StepMaxCompleteness, v3.StepMaxCompleteness}} {
				same(a.name, a.a, a.b)
			}
			for i, r := range one.Results {
				same(r.Query.Name, flatten(r), flatten(three.Results[i]))
			}
			t.Logf("%d results and the validation arrays equal to the bit (%.1f nodes per sample and step)", len(one.Results), v1.Nodes)
		})
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || len(s) >= len(sub) && (s[:len(sub)] == sub || contains(s[1:], sub))
}

// TestResume interrupts a job after some steps and resumes it from its
// saved state, which must give the uninterrupted job's results.
func TestResume(t *testing.T) {
	dir := tinyRun(t, "sgd", 8)
	for _, qs := range [][]explain.Query{queries[:9], queries[10:12]} {
		tr, err := job.OpenRun[float64, float64](dir)
		if err != nil {
			t.Fatal(err)
		}
		spec := explain.Spec[float64]{Queries: qs, Test: explain.TestSet[float64]{X: tr.Data.Val.Inputs, Labels: tr.Data.Val.Labels},
			Quadrature: epk.Quadrature{Rule: epk.Exact, Points: 3}, Groups: []explain.TensorGroup{{Name: "all", Tensors: []string{"decoder.weight"}}}}
		full, err := explain.Run(context.Background(), tr.Source, tr.Model, tr.Path, spec)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var saved *explain.State
		s2 := spec
		s2.Progress = func(done, total int) {
			if done == 3 {
				cancel()
			}
		}
		s2.Checkpoint = func(st *explain.State) error { saved = st; return nil }
		if _, err := explain.Run(ctx, tr.Source, tr.Model, tr.Path, s2); err != explain.ErrInterrupted {
			t.Fatalf("interrupted job returned %v", err)
		}
		if saved == nil || saved.Done != 3 {
			t.Fatalf("no state saved at step 3: %+v", saved)
		}
		s3 := spec
		s3.Resume = saved
		tr2, err := job.OpenRun[float64, float64](dir)
		if err != nil {
			t.Fatal(err)
		}
		res, err := explain.Run(context.Background(), tr2.Source, tr2.Model, tr2.Path, s3)
		if err != nil {
			t.Fatal(err)
		}
		for i := range full.Results {
			if e := tensor.RelErr(flatten(res.Results[i]), flatten(full.Results[i])); !(e <= 1e-12) {
				t.Errorf("%s: resumed result differs by %.3g", full.Results[i].Query.Name, e)
			}
		}
		if e := tensor.RelErr(res.Validation.Data, full.Validation.Data); !(e <= 1e-12) {
			t.Errorf("resumed validation differs by %.3g", e)
		}
	}
}

// TestReplayGradientIsTheRecomputedOne checks that the gradient the replay
// hands to the engine (history.StepView.Grad, taken from the training
// session's step) is bit for bit the mean loss gradient the engine would
// recompute at θ_s, with SGD mini-batches and with AdamW's full batch, and
// that Backward's views carry none.
func TestReplayGradientIsTheRecomputedOne(t *testing.T) {
	for _, opt := range []string{"sgd", "adamw"} {
		tr, err := job.OpenRun[float64, float64](tinyRun(t, opt, 6))
		if err != nil {
			t.Fatal(err)
		}
		src := tr.Source
		seen := 0
		err = src.Replay.Forward(0, src.Replay.Steps(), func(v *history.StepView[float64]) error {
			if v.Grad == nil {
				return fmt.Errorf("step %d: the view carries no gradient", v.Step)
			}
			for i, p := range src.GradModel.Params() {
				copy(p.Value.Data, v.Before[i].Value.Data)
			}
			x, y, err := src.Batch(v.Record)
			if err != nil {
				return err
			}
			want, err := epk.MeanGradient(src.GradModel, x, y)
			if err != nil {
				return err
			}
			if len(want) != len(v.Grad) {
				return fmt.Errorf("step %d: %d gradient tensors, want %d", v.Step, len(v.Grad), len(want))
			}
			for name, w := range want {
				g := v.Grad[name]
				if g == nil || !slices.Equal(g.Data, w.Data) {
					return fmt.Errorf("step %d: the replay's gradient of %s differs from the recomputed one", v.Step, name)
				}
			}
			seen++
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", opt, err)
		}
		err = src.Replay.Backward(0, src.Replay.Steps(), func(v *history.StepView[float64]) error {
			if v.Grad != nil {
				return fmt.Errorf("step %d: a Backward view carries a gradient", v.Step)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", opt, err)
		}
		t.Logf("%s: %d steps, replay gradients equal the recomputed ones", opt, seen)
	}
}

// TestDefaultGroups checks that the default groups are the model's layer
// groups (models.GroupOf) in model order.
func TestDefaultGroups(t *testing.T) {
	names := []string{"input_emb.weight", "head1_encoder.weight", "head2_encoder.weight", "head1_decoder.weight", "head2_decoder.weight",
		"linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias", "decoder.weight"}
	want := []explain.TensorGroup{{Name: "embedding", Tensors: names[:1]}, {Name: "attention_encoders", Tensors: names[1:3]},
		{Name: "attention_decoders", Tensors: names[3:5]}, {Name: "linear1", Tensors: names[5:7]}, {Name: "linear2", Tensors: names[7:9]},
		{Name: "decoder", Tensors: names[9:]}}
	got := explain.DefaultGroups(names)
	if !slices.EqualFunc(got, want, func(a, b explain.TensorGroup) bool { return a.Name == b.Name && slices.Equal(a.Tensors, b.Tensors) }) {
		t.Errorf("DefaultGroups = %v, want %v", got, want)
	}
	cnn := []string{"0.0.weight", "2.module.0.0.weight", "2.module.1.0.weight", "9.weight"}
	got = explain.DefaultGroups(cnn)
	if len(got) != 3 || got[0].Name != "layer 0" || got[1].Name != "layer 2" || !slices.Equal(got[1].Tensors, cnn[1:3]) || got[2].Name != "layer 9" {
		t.Errorf("DefaultGroups of ResNet-9 = %v", got)
	}
}

// TestSGDRegularizationPath checks that the weight-decay state explain
// carries into an SGD job that starts after step 0 (a warm-up over the
// earlier steps) and into a reverse sweep (the states before every step)
// is the one its splitter carries when it splits every step from step 0:
// each step's data and regularization contributions agree bit for bit.
func TestSGDRegularizationPath(t *testing.T) {
	dir := tinyRun(t, "sgd", 8)
	tr, err := job.OpenRun[float64, float64](dir)
	if err != nil {
		t.Fatal(err)
	}
	perStep := []explain.Query{
		{Name: "reg", Keep: explain.Step | explain.Test | explain.Class, Part: explain.Reg},
		{Name: "data", Keep: explain.Step | explain.Test | explain.Class, Part: explain.Data},
	}
	run := func(from int, qs ...explain.Query) *explain.Output {
		t.Helper()
		spec := explain.Spec[float64]{Queries: qs, Test: explain.TestSet[float64]{X: tr.Data.Val.Inputs, Labels: tr.Data.Val.Labels},
			From: from, Quadrature: epk.Quadrature{Rule: epk.GaussLegendre, Points: 2}}
		out, err := explain.Run(context.Background(), tr.Source, tr.Model, tr.Path, spec)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	all := run(0, perStep...)
	S := all.To
	outs := []*explain.Output{run(0, append(perStep, explain.Query{Name: "kernel", Keep: explain.Train, Part: explain.Data})...)}
	for _, from := range []int{3, S - 2} {
		outs = append(outs, run(from, perStep...))
	}
	for _, o := range outs {
		for q := range perStep {
			rows := len(all.Results[q].Data) / S
			if !slices.Equal(o.Results[q].Data, all.Results[q].Data[o.From*rows:]) {
				t.Errorf("%s of steps %d:%d (with the sweep: %v) differs from the job over every step", perStep[q].Name, o.From, o.To, o == outs[0])
			}
		}
	}
	if slices.Max(all.Results[0].Data) == 0 && slices.Min(all.Results[0].Data) == 0 {
		t.Error("the run has no regularization contributions")
	}
}

// TestCheckpointCost: with CheckpointEvery 1 ns a job saves its state
// after every step but the last; with a CheckpointCost c, a checkpoint
// that took d (here at least 20 ms) puts the next at least c·d later, so
// with c = 10⁶ (5.6 hours) the job saves once.
func TestCheckpointCost(t *testing.T) {
	tr, test := openTiny(t, "adamw", 6)
	for _, c := range []struct {
		cost float64
		want int
	}{{0, 5}, {1e6, 1}} {
		saves := 0
		s := explain.Spec[float64]{Test: test, Quadrature: epk.Quadrature{Rule: epk.Midpoint, Points: 2},
			CheckpointEvery: time.Nanosecond, CheckpointCost: c.cost,
			Checkpoint: func(*explain.State) error { saves++; time.Sleep(20 * time.Millisecond); return nil }}
		if _, err := explain.Run(context.Background(), tr.Source, tr.Model, tr.Path, s); err != nil {
			t.Fatal(err)
		}
		if saves != c.want {
			t.Errorf("CheckpointCost %g: %d checkpoints in 6 steps, want %d", c.cost, saves, c.want)
		}
	}
}
