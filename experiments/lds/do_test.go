package lds_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/experiments/expio/expiotest"
	"github.com/explaind/explaind/experiments/lds"
	"github.com/explaind/explaind/explain/job"
	"github.com/explaind/explaind/internal/testrun"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/shard"
	"github.com/explaind/explaind/tensor"
	"github.com/explaind/explaind/train"
)

// tinyRun is the shared tiny modulo run: 20 training and 8 validation
// samples, 60 full-batch steps, a checkpoint every 20 (TracIn-CP sums
// over steps 0, 20 and 40).
func tinyRun(t testing.TB) string { return expiotest.TinyModuloRun(t, 20, 60, 20) }

// tinyEPK returns an `explaind epk` output of the tiny run with the
// reference preset on its first 4 validation samples, computed once per
// test binary.
func tinyEPK(t testing.TB, run string) string {
	return testrun.Dir(t, "lds epk of "+run, func(dir string) error {
		_, err := job.Run(context.Background(), job.Options{Run: run, Out: dir, Presets: []string{"reference"}, TestSize: 4})
		return err
	})
}

func options(run, out string) lds.Options {
	return lds.Options{Run: run, Out: out, Subsets: 6, Fraction: 0.5, Seeds: 2, TestSize: 4, SubsetSeed: 1, Bootstrap: 200}
}

// TestRetrainReproducesTheRun: retraining on the whole training set with
// seed 0 is the run itself, bit for bit (its targets and accuracy are
// those of the run's final model); retraining is reproducible, and seed 1
// trains another model.
func TestRetrainReproducesTheRun(t *testing.T) {
	r, err := expio.OpenRun(lds.Command, tinyRun(t), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Replay.Seek(r.Steps()); err != nil {
		t.Fatal(err)
	}
	tests, err := lds.NewTests(r.Session.Model, r.Data.Val, []int{0, 1, 2, 3, 4})
	if err != nil {
		t.Fatal(err)
	}
	lp, mg, err := tests.Targets(r.Session.Model)
	if err != nil {
		t.Fatal(err)
	}
	_, acc, _ := train.Evaluate(r.Session.Model, r.Data.Train, 0)
	all := make([]int, r.Data.Train.Len())
	for i := range all {
		all[i] = i
	}
	j := lds.RetrainJob{Config: r.Config, Data: r.Data, Subset: all, Steps: r.Steps(), Tests: tests}
	o, err := lds.Retrain(context.Background(), j)
	if err != nil || o.Diverged {
		t.Fatalf("retraining on everything: %+v, %v", o, err)
	}
	if !slices.Equal(o.LogProb, lp) || !slices.Equal(o.Margin, mg) || o.TrainAcc != acc {
		t.Errorf("retraining on the whole set with seed 0: log p %v margin %v acc %v; the run's %v %v %v", o.LogProb, o.Margin, o.TrainAcc, lp, mg, acc)
	}
	for x := range mg {
		if mg[x] > 0 != (tests.Labels[x] == argmax(t, r.Session.Model, tests.X, x)) {
			t.Errorf("test sample %d: margin %v but the prediction is right: %v", x, mg[x], tests.Labels[x] == argmax(t, r.Session.Model, tests.X, x))
		}
	}
	j.Subset = all[:10]
	a, _ := lds.Retrain(context.Background(), j)
	b, _ := lds.Retrain(context.Background(), j)
	j.Seed = 1
	c, _ := lds.Retrain(context.Background(), j)
	if !slices.Equal(a.LogProb, b.LogProb) || slices.Equal(a.LogProb, c.LogProb) || slices.Equal(a.LogProb, lp) {
		t.Errorf("half the set, seed 0 twice then seed 1: %v, %v, %v (the run: %v)", a.LogProb, b.LogProb, c.LogProb, lp)
	}
}

func argmax(t *testing.T, m nn.Layer[float32], x *tensor.Dense[float32], row int) int {
	logp, _, err := m.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	C := logp.Shape[1]
	return slices.Index(logp.Data[row*C:(row+1)*C], slices.Max(logp.Data[row*C:(row+1)*C]))
}

// oneGrad returns the gradient of log p_pos(x) − log p_neg(x) (no neg
// term when neg < 0) at the run's current parameters, for x a batch of one
// sample, summed over the batch by the model's own Backward, and the
// model's log-probabilities of x.
func oneGrad(t *testing.T, r *expio.Run, x *tensor.Dense[float32], pos, neg int) ([]float64, []float32) {
	t.Helper()
	logp, st, err := r.Session.Model.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	dy := tensor.New[float32](logp.Shape...)
	dy.Data[pos] = 1
	if neg >= 0 {
		dy.Data[neg] = -1
	}
	g := nn.NewGrads(nn.Summed, r.Session.Params(), 0)
	if _, err := r.Session.Model.Backward(st, dy, g, false); err != nil {
		t.Fatal(err)
	}
	var out []float64
	for _, p := range r.Session.Params() {
		for _, v := range g.Of[p].Data {
			out = append(out, float64(v))
		}
	}
	return out, logp.Data
}

// TestGradientAttributions: grad_dot is the inner product of the two
// per-sample gradients computed one sample at a time (summed gradients of
// a batch of one), and grad_cos that divided by their norms; every
// attribution is finite.
func TestGradientAttributions(t *testing.T) {
	r, err := expio.OpenRun(lds.Command, tinyRun(t), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Replay.Seek(r.Steps()); err != nil {
		t.Fatal(err)
	}
	tests, err := lds.NewTests(r.Session.Model, r.Data.Val, []int{0, 3})
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := lds.GradientAttributions(context.Background(), r, tests, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(attrs) != 6 {
		t.Fatalf("%d attributions, want 3 methods × 2 targets", len(attrs))
	}
	if err := r.Replay.Seek(r.Steps()); err != nil {
		t.Fatal(err)
	}
	dot := func(a, b []float64) float64 {
		var s float64
		for i := range a {
			s += a[i] * b[i]
		}
		return s
	}
	for _, a := range attrs {
		for _, v := range a.A {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("%s %s: %v", a.Method, a.Target, v)
			}
		}
	}
	for x := range 2 {
		xs, _, _ := r.Data.Val.Batch([]int{[]int{0, 3}[x]})
		for _, i := range []int{0, 7, 19} {
			zi, yi, _ := r.Data.Train.Batch([]int{i})
			gi, _ := oneGrad(t, r, zi, yi[0], -1)
			for k, target := range lds.Targets() {
				neg := -1
				if target == lds.Margin {
					neg = tests.Rival[x]
				}
				gx, _ := oneGrad(t, r, xs, tests.Labels[x], neg)
				want := dot(gx, gi)
				cos := want / math.Sqrt(dot(gx, gx)*dot(gi, gi))
				gd, gc := attrs[3*k+1], attrs[3*k+2]
				if gd.Method != lds.GradDot || gc.Method != lds.GradCos || gd.Target != target {
					t.Fatalf("attribution order: %s %s", gd.Method, gd.Target)
				}
				if got := gd.At(x, i); math.Abs(got-want) > 1e-4*(1+math.Abs(want)) {
					t.Errorf("grad_dot %s [%d, %d] = %v, one sample at a time %v", target, x, i, got, want)
				}
				if got := gc.At(x, i); math.Abs(got-cos) > 1e-4 {
					t.Errorf("grad_cos %s [%d, %d] = %v, one sample at a time %v", target, x, i, got, cos)
				}
			}
		}
	}
}

// TestDo: the whole job on the tiny run with its EPK output writes every
// file its summary lists, scores every method for both targets with
// finite means inside their intervals, records every retraining, and run
// again reuses the result.
func TestDo(t *testing.T) {
	run := tinyRun(t)
	out := filepath.Join(t.TempDir(), "lds")
	opt := options(run, out)
	opt.EPK = tinyEPK(t, run)
	s, err := lds.Do(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	expiotest.CheckFiles(t, out, s.Files...)
	expiotest.CheckFigure(t, filepath.Join(out, lds.FigureBase))
	expiotest.CheckFigure(t, filepath.Join(out, lds.ScatterBase))
	var written lds.Summary
	expiotest.ReadJSON(t, filepath.Join(out, lds.SummaryFile), &written)
	if !written.Complete || written.Retrained.Count != 12 || !slices.Equal(written.TestIndices, []int{0, 1, 2, 3}) || written.Settings.SubsetSize != 10 ||
		!slices.Equal(written.Settings.TracInCheckpoints, []int{0, 20, 40}) || written.Noise == nil {
		t.Errorf("summary: %+v", written)
	}
	for _, m := range lds.Methods() {
		for _, target := range lds.Targets() {
			iv, ok := written.Methods[m][target]
			if !ok || iv.N == 0 || !(iv.Lo <= iv.Mean && iv.Mean <= iv.Hi) || iv.Mean < -1 || iv.Mean > 1 {
				t.Errorf("%s %s: %+v (present %v)", m, target, iv, ok)
			}
		}
	}
	for _, target := range lds.Targets() {
		n := written.Noise[target]
		if !(n.SeedSD > 0 && n.SubsetSD > 0 && n.SeedLDS >= -1 && n.SeedLDS <= 1 && n.Ceiling >= 0 && n.Ceiling <= 1) {
			t.Errorf("noise of %s: %+v; want positive spreads and a correlation", target, n)
		}
	}
	recs := expiotest.ReadCSV(t, filepath.Join(out, lds.CSVFile))
	if len(recs) != 1+6*2*4 {
		t.Errorf("lds.csv: %d lines, want a header and 6 methods × 2 targets × 4 test samples", len(recs))
	}
	again, err := lds.Do(context.Background(), opt)
	if err != nil || !again.Reused {
		t.Errorf("Do again: %+v, %v; want the result reused", again, err)
	}
	// A summary without a method this build scores (an older build's) is
	// scored again from the retrainings, which are not redone.
	var raw map[string]any
	expiotest.ReadJSON(t, filepath.Join(out, lds.SummaryFile), &raw)
	delete(raw["methods"].(map[string]any), lds.TRAK)
	b, _ := json.Marshal(raw)
	if err := os.WriteFile(filepath.Join(out, lds.SummaryFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	progress, _ := os.ReadFile(filepath.Join(out, lds.ProgressFile))
	rescored, err := lds.Do(context.Background(), opt)
	if err != nil || rescored.Reused || rescored.Methods[lds.TRAK] == nil {
		t.Errorf("Do on a summary without trak: %v, reused %v, trak %v; want it scored again", err, rescored != nil && rescored.Reused, rescored != nil && rescored.Methods[lds.TRAK] != nil)
	}
	if after, _ := os.ReadFile(filepath.Join(out, lds.ProgressFile)); !bytes.Equal(after, progress) {
		t.Errorf("rescoring rewrote the retrainings (progress.json)")
	}
}

// TestDoResumes: a job cancelled after 5 retrainings keeps them, and the
// resumed job's outputs (targets, attributions, scores) equal those of an
// uninterrupted one byte for byte.
func TestDoResumes(t *testing.T) {
	run := tinyRun(t)
	whole := filepath.Join(t.TempDir(), "whole")
	if _, err := lds.Do(context.Background(), options(run, whole)); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "resumed")
	ctx, cancel := context.WithCancel(context.Background())
	opt := options(run, out)
	opt.Progress = func(done, _ int) {
		if done == 5 {
			cancel()
		}
	}
	_, err := lds.Do(ctx, opt)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "interrupted after 5 of 12 retrainings") {
		t.Fatalf("cancelled Do: %v", err)
	}
	var p lds.Progress
	expiotest.ReadJSON(t, filepath.Join(out, lds.ProgressFile), &p)
	if len(p.Rows) != 5 {
		t.Fatalf("progress after the interruption: %d rows, want 5", len(p.Rows))
	}
	var resumed []int
	opt = options(run, out)
	opt.Progress = func(done, _ int) { resumed = append(resumed, done) }
	if _, err := lds.Do(context.Background(), opt); err != nil {
		t.Fatal(err)
	}
	if resumed[0] != 5 || len(resumed) != 8 {
		t.Errorf("the resumed job reported progress %v, want 5 then 6 … 12", resumed)
	}
	for _, name := range []string{lds.CSVFile, lds.SubsetsFile, lds.TargetsFile(lds.LogProb), lds.TargetsFile(lds.Margin),
		lds.AttributionFile(lds.TracIn, lds.Margin), lds.AttributionFile(lds.Random, lds.LogProb)} {
		a, _ := os.ReadFile(filepath.Join(whole, name))
		b, _ := os.ReadFile(filepath.Join(out, name))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("%s: the resumed job's differs from the uninterrupted one's (%d and %d bytes)", name, len(b), len(a))
		}
	}
}

// TestBadInput: each mistake is reported before any retraining, naming
// the setting, and leaves no output directory behind.
func TestBadInput(t *testing.T) {
	run := tinyRun(t)
	otherEPK := tinyEPK(t, expiotest.TinyModuloRun(t, 18, 60, 20))
	for _, c := range []struct {
		name string
		edit func(*lds.Options)
		want string
	}{
		{"fraction 0", func(o *lds.Options) { o.Fraction = 0 }, "invalid Fraction 0: want a fraction of the training set in (0, 1)"},
		{"fraction 1", func(o *lds.Options) { o.Fraction = 1 }, "invalid Fraction 1: want a fraction"},
		{"fraction NaN", func(o *lds.Options) { o.Fraction = math.NaN() }, "invalid Fraction NaN"},
		{"fraction too small", func(o *lds.Options) { o.Fraction = 0.01 }, "invalid Fraction 0.01: 0 of the 20 training samples"},
		{"too many subsets", func(o *lds.Options) { o.Fraction, o.Subsets = 0.05, 21 }, "invalid Subsets 21: only 20 distinct subsets of 1 of the 20 training samples exist"},
		{"test size", func(o *lds.Options) { o.TestSize = 9 }, "invalid TestSize 9: the run's validation split has 8 samples"},
		{"test size of the EPK", func(o *lds.Options) { o.EPK, o.TestSize = tinyEPK(t, run), 5 }, "invalid TestSize 5: the EPK output"},
		{"EPK of another run", func(o *lds.Options) { o.EPK = otherEPK }, "was computed for a different run"},
		{"one subset", func(o *lds.Options) { o.Subsets = 1 }, "invalid Subsets 1"},
		{"no seeds", func(o *lds.Options) { o.Seeds = 0 }, "invalid Seeds 0"},
		{"EPK twice", func(o *lds.Options) { o.EPK, o.ComputeEPK = tinyEPK(t, run), true }, "give an EPK output (EPK) or compute the kernel (ComputeEPK), not both"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "lds")
			opt := options(run, out)
			retrained := false
			opt.Progress = func(int, int) { retrained = true }
			c.edit(&opt)
			_, err := lds.Do(context.Background(), opt)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v; want %q", err, c.want)
			}
			if retrained {
				t.Error("retrained before reporting the error")
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("the output directory exists after the error: %v", err)
			}
		})
	}
}

// TestShardsMerge: the job done as 3 shards (given to Merge out of order)
// and merged writes what the whole job writes: the same retrainings,
// subsets, attributions and scores, byte for byte, and the same summary
// but for its wall times. Incomplete or mismatched shards are refused.
func TestShardsMerge(t *testing.T) {
	run := tinyRun(t)
	root := t.TempDir()
	whole := filepath.Join(root, "whole")
	if _, err := lds.Do(context.Background(), options(run, whole)); err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for i := range 3 {
		opt := options(run, filepath.Join(root, fmt.Sprintf("shard%d", i)))
		opt.Shard = shard.Shard{Index: i, Count: 3}
		s, err := lds.Do(context.Background(), opt)
		if err != nil {
			t.Fatal(err)
		}
		if s.Retrained.Count != 4 || s.Shard != fmt.Sprintf("%d/3", i) || s.Methods != nil {
			t.Errorf("shard %d: %+v", i, s)
		}
		dirs = append(dirs, opt.Out)
	}
	if _, err := lds.Merge(context.Background(), lds.Options{Out: filepath.Join(root, "partial")}, dirs[:2]); err == nil || !strings.Contains(err.Error(), "2 shards are given; give all 3") {
		t.Errorf("merging 2 of 3 shards: %v", err)
	}
	other := options(run, filepath.Join(root, "other"))
	other.Shard, other.SubsetSeed = shard.Shard{Index: 2, Count: 3}, 9
	if _, err := lds.Do(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	if _, err := lds.Merge(context.Background(), lds.Options{Out: filepath.Join(root, "mixed")}, []string{dirs[0], dirs[1], other.Out}); err == nil || !strings.Contains(err.Error(), "are of different jobs") {
		t.Errorf("merging shards of different jobs: %v", err)
	}
	// A shard whose scoring settings differ is of another job too: the
	// merge scores with the settings the shards record.
	scored := options(run, filepath.Join(root, "scored"))
	scored.Shard, scored.Bootstrap = shard.Shard{Index: 2, Count: 3}, 7
	if _, err := lds.Do(context.Background(), scored); err != nil {
		t.Fatal(err)
	}
	if _, err := lds.Merge(context.Background(), lds.Options{Out: filepath.Join(root, "mixed2")}, []string{dirs[0], dirs[1], scored.Out}); err == nil || !strings.Contains(err.Error(), "are of different jobs") {
		t.Errorf("merging shards of different scoring settings: %v", err)
	}
	merged := filepath.Join(root, "merged")
	s, err := lds.Merge(context.Background(), lds.Options{Out: merged, Bootstrap: 200}, []string{dirs[2], dirs[0], dirs[1]})
	if err != nil {
		t.Fatal(err)
	}
	expiotest.CheckFiles(t, merged, s.Files...)
	for _, name := range []string{lds.CSVFile, lds.SubsetsFile, lds.SubsetsCSV, lds.TargetsFile(lds.LogProb), lds.TargetsFile(lds.Margin),
		lds.AttributionFile(lds.TracIn, lds.LogProb), lds.AttributionFile(lds.GradDot, lds.Margin), lds.AttributionFile(lds.Random, lds.Margin)} {
		a, _ := os.ReadFile(filepath.Join(whole, name))
		b, _ := os.ReadFile(filepath.Join(merged, name))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("%s: the merged job's differs from the whole job's (%d and %d bytes)", name, len(b), len(a))
		}
	}
	var a, b lds.Summary
	expiotest.ReadJSON(t, filepath.Join(whole, lds.SummaryFile), &a)
	expiotest.ReadJSON(t, filepath.Join(merged, lds.SummaryFile), &b)
	a.WallSeconds, b.WallSeconds = b.WallSeconds, a.WallSeconds
	a.WallSeconds.Retraining, b.WallSeconds.Retraining = 0, 0
	a.WallSeconds.Scoring, b.WallSeconds.Scoring = 0, 0
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if !bytes.Equal(ja, jb) {
		t.Errorf("merged summary\n%s\nwhole job's\n%s", jb, ja)
	}
	var p lds.Progress
	expiotest.ReadJSON(t, filepath.Join(merged, lds.ProgressFile), &p)
	if len(p.Rows) != 12 || p.Shard != "" {
		t.Errorf("merged progress: %d rows, shard %q", len(p.Rows), p.Shard)
	}
}

// TestComputeEPK: the epk attributions computed in-process equal those
// read from the `explaind epk` output of the same run and test samples
// (the same query, quadrature and precision) but for the output's storage
// in float32: to 1e-6 of the largest value (float32 rounds each value to
// 6e-8 of itself).
func TestComputeEPK(t *testing.T) {
	run := tinyRun(t)
	r, err := expio.OpenRun(lds.Command, run, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Replay.Seek(r.Steps()); err != nil {
		t.Fatal(err)
	}
	idx := []int{0, 1, 2}
	tests, err := lds.NewTests(r.Session.Model, r.Data.Val, idx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := lds.ComputeEPKAttributions(context.Background(), run, idx, tests.Labels, tests.Rival, nil)
	if err != nil {
		t.Fatal(err)
	}
	o := testrun.OpenEPK(t, tinyEPK(t, run))
	want, err := lds.EPKAttributions(o, tests.Labels, tests.Rival, r.Data.Train.Len())
	if err != nil {
		t.Fatal(err)
	}
	for k := range want {
		var scale float64
		for _, v := range want[k].A {
			scale = max(scale, math.Abs(v))
		}
		if scale == 0 || len(got[k].A) != len(want[k].A) {
			t.Fatalf("%s %s: %d values, scale %v", want[k].Method, want[k].Target, len(got[k].A), scale)
		}
		for i := range want[k].A {
			if d := math.Abs(got[k].A[i] - want[k].A[i]); d > 1e-6*scale {
				t.Fatalf("%s [%d]: computed %v, the EPK output's %v", want[k].Target, i, got[k].A[i], want[k].A[i])
			}
		}
	}
}
