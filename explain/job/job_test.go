package job_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/explaind/explaind/tensor"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/explain/job"
	"github.com/explaind/explaind/internal/testrun"
	"github.com/explaind/explaind/shard"
)

func TestMain(m *testing.M) { testrun.Main(m) }

// The tiny run of tinyRun: p = 7 (C = 9 classes), 8 validation samples,
// 6 full-batch steps.
const (
	tinyX = 8
	tinyC = 9
	tinyS = 6
)

// tinyRun returns the tiny modulo run the tests explain: testrun.Modulo
// with 6 AdamW steps at learning rate 0.01 (weight decay 4) and a
// checkpoint every 4, in float32, shared by the tests. It was trained with
// no software string, as the jobs run, so its stamp lets them skip the
// pre-flight replay and they leave it unchanged.
func tinyRun(t testing.TB) string {
	t.Helper()
	c := testrun.Modulo(tinyS, 4)
	c.Optimizer.LR = 0.01
	return testrun.Train[float32](t, c)
}

// TestOptionsErrors: every bad option is an error naming the problem,
// before the output directory is created.
func TestOptionsErrors(t *testing.T) {
	run := tinyRun(t)
	root := t.TempDir()
	out := filepath.Join(root, "out")
	cases := []struct {
		name string
		edit func(o *job.Options)
		want string
	}{
		{"no run", func(o *job.Options) { o.Run = "" }, "name the run (Run) and the output directory (Out)"},
		{"no output", func(o *job.Options) { o.Out = "" }, "name the run (Run) and the output directory (Out)"},
		{"missing run", func(o *job.Options) { o.Run = filepath.Join(root, "nothing") }, filepath.Join(root, "nothing")},
		{"precision", func(o *job.Options) { o.Precision = "float16" }, `invalid Precision "float16": want float32 or float64`},
		{"preset", func(o *job.Options) { o.Presets = []string{epkfile.Validation, "nope"} }, `unknown preset "nope" (want validation, grokking, components, history, pruning, kernel, reference)`},
		{"negative test size", func(o *job.Options) { o.TestSize = -1 }, "invalid TestSize -1: the val split has 8 samples"},
		{"test size", func(o *job.Options) { o.TestSize = tinyX + 1 }, "invalid TestSize 9: the val split has 8 samples"},
		{"test index", func(o *job.Options) { o.TestIndices = []int{0, tinyX} }, "test index 8 is out of range: the val split has 8 samples (0 … 7)"},
		{"negative test index", func(o *job.Options) { o.TestIndices = []int{-1} }, "test index -1 is out of range"},
		{"steps backwards", func(o *job.Options) { o.From, o.To = 5, 2 }, "invalid From:To 5:2: the run has 6 steps (want 0 ≤ FROM < TO ≤ 6)"},
		{"steps past the end", func(o *job.Options) { o.To = tinyS + 1 }, "invalid From:To 0:7"},
		{"steps from the end", func(o *job.Options) { o.From = tinyS }, "invalid From:To 6:6"},
		{"negative step", func(o *job.Options) { o.From = -1 }, "invalid From:To -1:6"},
		{"quadrature", func(o *job.Options) { o.Quadrature = "simpson" }, `invalid Quadrature "simpson"`},
		{"no points", func(o *job.Options) { o.Quadrature = "midpoint:0" }, "the number of points must be a positive integer"},
		{"adaptive points", func(o *job.Options) { o.Quadrature = "adaptive:3" }, "adaptive takes no point count"},
		{"too many points", func(o *job.Options) { o.Quadrature = "gauss:300" }, "300 quadrature points, want 1..256"},
		{"memory", func(o *job.Options) { o.MaxBytes = 1 << 10 }, "over the memory ceiling of"},
		{"history over the memory ceiling", func(o *job.Options) { o.Presets, o.MaxBytes = []string{epkfile.History}, 1<<10 },
			"over the memory ceiling of"},
		{"kernel from a later step", func(o *job.Options) { o.Presets, o.From = []string{epkfile.Kernel}, 2 }, "start at step 0"},
		{"shard index", func(o *job.Options) { o.Shard = shard.Shard{Index: 4, Count: 4} }, "invalid Shard: shard 4/4: the index must be 0 … 3 (shards count from 0)"},
		{"negative shard", func(o *job.Options) { o.Shard = shard.Shard{Index: -1, Count: 4} }, "invalid Shard: shard -1/4: the index must be 0 … 3"},
		{"shard count", func(o *job.Options) { o.Shard = shard.Shard{Index: 0, Count: -2} }, "invalid Shard: shard 0/-2: the count must be 1 … "},
		{"more shards than samples", func(o *job.Options) { o.Shard = shard.Shard{Index: 0, Count: tinyX + 1} },
			"invalid Shard 0/9: the job has 8 test samples: 9 shards of 8 items: each shard needs at least one; use at most 8 shards"},
		{"more shards than selected samples", func(o *job.Options) { o.Shard, o.TestSize = shard.Shard{Index: 2, Count: 3}, 2 },
			"invalid Shard 2/3: the job has 2 test samples"},
		{"snapshot interval", func(o *job.Options) { o.Presets, o.SnapshotEvery = []string{epkfile.History}, -1 }, "invalid SnapshotEvery -1"},
		{"history with kernel", func(o *job.Options) { o.Presets = []string{epkfile.History, epkfile.Kernel} }, "two jobs"},
		{"test split", func(o *job.Options) { o.TestSplit = "bogus" }, `invalid TestSplit "bogus": this run's splits are val and train`},
		{"train index", func(o *job.Options) { o.TestSplit, o.TestIndices = "train", []int{99999} }, "the train split has"},
		{"history in shards", func(o *job.Options) { o.Presets, o.Shard = []string{epkfile.History}, shard.Shard{Index: 0, Count: 2} },
			"the history preset's Gram matrices pair every two test samples, so it cannot be sharded"},
	}
	for _, c := range cases {
		o := job.Options{Run: run, Out: out}
		c.edit(&o)
		s, err := job.Run(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", c.name, err, c.want)
		}
		if s != nil {
			t.Errorf("%s: a summary %+v with the error", c.name, s)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: a refused job created its output directory", c.name)
			os.RemoveAll(out)
		}
	}
}

// TestOutputDirectory: a finished output is not overwritten, nor a
// directory that holds something else or an unreadable job state; each
// is left as it was.
func TestOutputDirectory(t *testing.T) {
	run := tinyRun(t)
	root := t.TempDir()
	finished := filepath.Join(root, "finished")
	first, err := job.Run(context.Background(), job.Options{Run: run, Out: finished, TestSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	stranger := filepath.Join(root, "stranger")
	broken := filepath.Join(root, "broken")
	for dir, file := range map[string]string{stranger: "notes.txt", broken: ".epk-state.gob"} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, file), []byte("mine"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := tree(t, root)
	// The same job again (a rerun after a kill that came once the output
	// was complete) finds its output and returns its summary.
	again, err := job.Run(context.Background(), job.Options{Run: run, Out: finished, TestSize: 2})
	if err != nil || !reflect.DeepEqual(again, first) {
		t.Errorf("rerun of a finished job: %+v, %v; want its summary %+v", again, err, first)
	}
	for _, c := range []struct {
		dir, want string
		size      int
	}{
		{finished, finished + " already holds a finished EPK output; choose another Out or remove it", 3},
		{stranger, stranger + " exists and is not an EPK output of this job; choose another Out", 2},
		{broken, filepath.Join(broken, ".epk-state.gob") + ": the saved job state is unreadable", 2},
	} {
		if _, err := job.Run(context.Background(), job.Options{Run: run, Out: c.dir, TestSize: c.size}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("--out %s: %v, want an error mentioning %q", c.dir, err, c.want)
		}
	}
	if after := tree(t, root); !reflect.DeepEqual(after, before) {
		t.Errorf("the refused jobs changed the directories: %d files before, %d after", len(before), len(after))
	}
}

// tree returns the contents of every file under dir by relative path.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		rel, _ := filepath.Rel(dir, path)
		files[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestSummary checks a small job's Summary: the settings as given or
// defaulted, and the statistics against the arrays of the output; and
// that summary.json holds the same.
func TestSummary(t *testing.T) {
	run := tinyRun(t)
	root := t.TempDir()
	cases := []struct {
		name string
		opt  job.Options
		want job.Summary // the settings
		idx  []int
	}{
		{"defaults, steps 2:5", job.Options{TestSize: 3, From: 2, To: 5, Software: "test 1.0"},
			job.Summary{Presets: []string{epkfile.Validation}, Steps: [2]int{2, 5}, TestSamples: 3, Classes: tinyC,
				Quadrature: "adaptive", Tol: 1e-6, Precision: "float64", Software: "test 1.0"},
			[]int{0, 1, 2}},
		{"kernel, float32, midpoint", job.Options{Presets: []string{epkfile.Kernel}, TestIndices: []int{5, 2}, Precision: "float32", Quadrature: "midpoint:4"},
			job.Summary{Presets: []string{epkfile.Validation, epkfile.Kernel}, Steps: [2]int{0, tinyS}, TestSamples: 2, Classes: tinyC,
				Quadrature: "midpoint:4", Precision: "float32"},
			[]int{5, 2}},
		{"float32, adaptive", job.Options{TestSize: 2, Precision: "float32"},
			job.Summary{Presets: []string{epkfile.Validation}, Steps: [2]int{0, tinyS}, TestSamples: 2, Classes: tinyC,
				Quadrature: "adaptive", Tol: 1e-4, Precision: "float32"},
			[]int{0, 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := c.opt
			o.Run, o.Out = run, filepath.Join(root, strings.ReplaceAll(c.name, " ", "_"))
			if o.Software != "" { // the job replays the run and stamps it as its own
				o.Run = testrun.Copy(t, run)
			}
			s, err := job.Run(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			got := job.Summary{Run: s.Run, Presets: s.Presets, Steps: s.Steps, TestSamples: s.TestSamples, Classes: s.Classes,
				Quadrature: s.Quadrature, Tol: s.Tol, Precision: s.Precision, Software: s.Software}
			want := c.want
			want.Run = o.Run
			if !reflect.DeepEqual(got, want) {
				t.Errorf("settings %+v,\nwant %+v", got, want)
			}

			var file job.Summary
			raw, err := os.ReadFile(filepath.Join(o.Out, "summary.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(raw, &file); err != nil || !reflect.DeepEqual(&file, s) {
				t.Errorf("summary.json %+v (%v),\nreturned %+v", file, err, *s)
			}

			// The statistics, from the arrays.
			out := testrun.OpenEPK(t, o.Out)
			if idx, err := out.Ints("test_indices"); err != nil || !slices.Equal(idx, c.idx) {
				t.Errorf("test_indices %v (%v), want %v", idx, err, c.idx)
			}
			labels, err := out.Ints("test_labels")
			if err != nil {
				t.Fatal(err)
			}
			model, pred := array(t, out, "model"), array(t, out, "epk")
			X, C := s.TestSamples, s.Classes
			var maxAbs, sum, sum2, mean float64
			agree, acc, macc := 0, 0, 0
			for x := range X {
				for c := range C {
					d := pred[x*C+c] - model[x*C+c]
					maxAbs = math.Max(maxAbs, math.Abs(d))
					sum += math.Abs(d)
					sum2 += d * d
					mean += d
				}
				am, ae := argmax(model[x*C:(x+1)*C]), argmax(pred[x*C:(x+1)*C])
				if am == ae {
					agree++
				}
				if ae == labels[x] {
					acc++
				}
				if am == labels[x] {
					macc++
				}
			}
			n := float64(X * C)
			mean /= n
			close := func(a, b float64) bool { return math.Abs(a-b) <= 1e-12*math.Max(1, math.Abs(b)) }
			if s.MaxAbsDelta != maxAbs || !close(s.MeanAbsDelta, sum/n) || !close(s.StdDelta, math.Sqrt(math.Max(0, sum2/n-mean*mean))) {
				t.Errorf("max, mean, std |Δ|: %g, %g, %g; from the arrays %g, %g, %g", s.MaxAbsDelta, s.MeanAbsDelta, s.StdDelta, maxAbs, sum/n, math.Sqrt(sum2/n-mean*mean))
			}
			if s.ArgmaxAgreement != float64(agree)/float64(X) || s.Accuracy != float64(acc)/float64(X) || s.ModelAccuracy != float64(macc)/float64(X) {
				t.Errorf("argmax agreement %v, accuracy %v, model accuracy %v; from the arrays %d, %d, %d of %d",
					s.ArgmaxAgreement, s.Accuracy, s.ModelAccuracy, agree, acc, macc, X)
			}
			if comp := array(t, out, "step_max_completeness"); s.MaxCompletenessResidual != slices.Max(comp) || len(comp) != s.Steps[1]-s.Steps[0] {
				t.Errorf("max completeness residual %g; the array %v", s.MaxCompletenessResidual, comp)
			}
			// The job itself: every sample of every step evaluated, the
			// identity f0 + parts = model up to the reported residuals.
			if s.KLDiv < 0 || s.IdentityResidual > 1e-4 || s.NodesPerSampleStep < 1 || s.WallSeconds <= 0 || s.PeakRSSBytes < 1<<20 {
				t.Errorf("KL %g, identity residual %g, %g nodes per sample and step, %g s, %d bytes peak",
					s.KLDiv, s.IdentityResidual, s.NodesPerSampleStep, s.WallSeconds, s.PeakRSSBytes)
			}
			t.Logf("max |Δ| %.3g, mean %.3g, std %.3g, agreement %v, accuracy %v (model %v), KL %.3g, max completeness residual %.3g, kernel residual %.3g",
				s.MaxAbsDelta, s.MeanAbsDelta, s.StdDelta, s.ArgmaxAgreement, s.Accuracy, s.ModelAccuracy, s.KLDiv, s.MaxCompletenessResidual, s.KernelResidual)
			if hasKernel := slices.Contains(s.Presets, epkfile.Kernel); hasKernel != (out.Manifest.Arrays["kernel"].File != "") || hasKernel && s.KernelResidual > 1e-3 {
				t.Errorf("presets %v, kernel array %q, kernel residual %g", s.Presets, out.Manifest.Arrays["kernel"].File, s.KernelResidual)
			}
		})
	}
}

func array(t *testing.T, o *epkfile.Output, name string) []float64 {
	t.Helper()
	a, err := o.Array(name)
	if err != nil {
		t.Fatal(err)
	}
	return a.Data
}

func argmax(v []float64) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// TestResume interrupts a job after two steps through Options.Progress,
// resumes it, and compares the result with an uninterrupted job: the
// forward pass (validation, grokking, components) and the reverse-time
// sweep (kernel).
func TestResume(t *testing.T) {
	root := t.TempDir()
	runDir := tinyRun(t)
	for _, presets := range [][]string{{"validation", "grokking", "components"}, {"kernel"}} {
		t.Run(strings.Join(presets, "+"), func(t *testing.T) {
			base := filepath.Join(root, strings.Join(presets, "+"))
			opts := func(out string) job.Options {
				return job.Options{Run: runDir, Out: out, Presets: presets, CheckpointEvery: time.Nanosecond}
			}
			whole := base + "-whole"
			if _, err := job.Run(context.Background(), opts(whole)); err != nil {
				t.Fatal(err)
			}
			out := base + "-resumed"
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			o := opts(out)
			var calls []int
			o.Progress = func(done, total int) {
				calls = append(calls, done)
				if total != tinyS {
					t.Errorf("progress total %d, want %d", total, tinyS)
				}
				if done == 2 {
					cancel()
				}
			}
			_, err := job.Run(ctx, o)
			if err == nil || !strings.Contains(err.Error(), "interrupted; the job's state is saved in "+out+": rerun the same command to resume") {
				t.Fatalf("interrupted job: %v, want an error saying how to resume", err)
			}
			if !slices.Equal(calls, []int{1, 2}) {
				t.Errorf("progress before the interruption %v, want [1 2]", calls)
			}
			if _, err := os.Stat(filepath.Join(out, ".epk-state.gob")); err != nil {
				t.Fatalf("no saved state: %v", err)
			}
			if _, err := epkfile.Open(out); err == nil || !errors.Is(err, epkfile.ErrIncomplete) && !strings.Contains(err.Error(), "not an EPK output") {
				t.Errorf("an interrupted output opens: %v", err)
			}
			// Other settings do not resume this job.
			other := opts(out)
			other.TestSize = 3
			if _, err := job.Run(context.Background(), other); err == nil || !strings.Contains(err.Error(), "unfinished EPK job with other settings") {
				t.Errorf("resuming with other settings: %v", err)
			}
			// The same job resumes after step 2.
			o = opts(out)
			var log bytes.Buffer
			o.Log = &log
			calls = nil
			o.Progress = func(done, _ int) { calls = append(calls, done) }
			if _, err := job.Run(context.Background(), o); err != nil {
				t.Fatalf("resume: %v", err)
			}
			if !strings.Contains(log.String(), fmt.Sprintf("resuming the job in %s after 2 of %d steps", out, tinyS)) {
				t.Errorf("resume log %q", log.String())
			}
			if !slices.Equal(calls, []int{3, 4, 5, 6}) {
				t.Errorf("progress of the resumed job %v, want [3 4 5 6]", calls)
			}
			a, b := testrun.OpenEPK(t, whole), testrun.OpenEPK(t, out)
			if len(a.Manifest.Arrays) != len(b.Manifest.Arrays) {
				t.Fatalf("resumed output has %d arrays, uninterrupted %d", len(b.Manifest.Arrays), len(a.Manifest.Arrays))
			}
			var worst float64
			for name, info := range a.Manifest.Arrays {
				if info.Dtype == "int64" {
					continue
				}
				x, err := a.Array(name)
				if err != nil {
					t.Fatal(err)
				}
				y, err := b.Array(name)
				if err != nil {
					t.Fatal(err)
				}
				d, n := tensor.MaxAbsDiff(y.Data, x.Data)
				worst = math.Max(worst, d)
				tol := 1e-12 * math.Max(1, n)
				if info.Dtype == "float32" {
					tol = 0x1p-23 * math.Max(1, n)
				}
				if !(d <= tol) {
					t.Errorf("%s: resumed differs from uninterrupted by %.3g (max |.| %.3g)", name, d, n)
				}
			}
			if presets[0] == "validation" {
				for _, name := range []string{"model", "epk"} {
					x, _ := a.Array(name)
					y, _ := b.Array(name)
					if d, _ := tensor.MaxAbsDiff(y.Data, x.Data); !(d <= 1e-12) {
						t.Errorf("%s: resumed differs from uninterrupted by %.3g", name, d)
					}
				}
			}
			sa, sb := testrun.EPKSummary(t, whole), testrun.EPKSummary(t, out)
			for _, k := range []string{"max_abs_delta", "max_completeness_residual", "argmax_agreement"} {
				if d := math.Abs(sa[k].(float64) - sb[k].(float64)); !(d <= 1e-12) {
					t.Errorf("summary %s: resumed %v, uninterrupted %v", k, sb[k], sa[k])
				}
			}
			t.Logf("%v: resumed after 2 of 6 steps; max difference from the uninterrupted job over all arrays %.3g", presets, worst)
		})
	}
}

// maxAbsDiff returns max |a − b| and max |b|.
func TestParseQuadrature(t *testing.T) {
	for _, c := range []struct {
		s        string
		switches bool
		want     epk.Quadrature
		err      string
	}{
		{"", true, epk.Quadrature{Rule: epk.Exact, Points: 2, Grid: 4, Tol: 1e-6}, ""},
		{"adaptive", true, epk.Quadrature{Rule: epk.Exact, Points: 2, Grid: 4, Tol: 1e-6}, ""},
		{"adaptive", false, epk.Quadrature{Rule: epk.Adaptive, Points: 3, Ends: true, Tol: 1e-6}, ""},
		{"exact:3", true, epk.Quadrature{Rule: epk.Exact, Points: 3, Tol: 1e-6}, ""},
		{"midpoint:10", false, epk.Quadrature{Rule: epk.Midpoint, Points: 10}, ""},
		{"gauss:8", true, epk.Quadrature{Rule: epk.GaussLegendre, Points: 8}, ""},
		{"exact:3", false, epk.Quadrature{}, "Quadrature exact needs a model that exposes its ReLU switches"},
		{"adaptive:3", true, epk.Quadrature{}, "adaptive takes no point count"},
		{"gauss:x", true, epk.Quadrature{}, "the number of points must be a positive integer"},
		{"midpoint:-2", true, epk.Quadrature{}, "the number of points must be a positive integer"},
		{"simpson:3", true, epk.Quadrature{}, `invalid Quadrature "simpson:3": want adaptive, exact:K, midpoint:K or gauss:K`},
	} {
		q, err := job.ParseQuadrature(c.s, 1e-6, c.switches)
		if c.err == "" && (err != nil || q != c.want) || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("ParseQuadrature(%q, switches %v) = %+v, %v; want %+v, %q", c.s, c.switches, q, err, c.want, c.err)
		}
	}
}

func TestParseBytes(t *testing.T) {
	for _, c := range []struct {
		s    string
		want int64
		ok   bool
	}{
		{"", 0, true}, {"0", 0, true}, {"1000000", 1000000, true}, {"512MiB", 512 << 20, true}, {"8GiB", 8 << 30, true},
		{"2GB", 2e9, true}, {" 1.5 KiB ", 1536, true}, {"3K", 3 << 10, true}, {"7B", 7, true}, {"1TB", 1e12, true},
		{"lots", 0, false}, {"-1MiB", 0, false}, {"MiB", 0, false}, {"InfGB", 0, false},
	} {
		got, err := job.ParseBytes(c.s)
		if got != c.want || (err == nil) != c.ok {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d (ok %v)", c.s, got, err, c.want, c.ok)
		}
	}
}

func TestParseSteps(t *testing.T) {
	for _, c := range []struct {
		s        string
		from, to int
		ok       bool
	}{
		{"", 0, 0, true}, {"0:20", 0, 20, true}, {"5:", 5, 0, true}, {":7", 0, 7, true}, {":", 0, 0, true},
		{"3", 0, 0, false}, {"a:2", 0, 0, false}, {"1:b", 0, 0, false},
	} {
		from, to, err := job.ParseSteps(c.s)
		if from != c.from || to != c.to || (err == nil) != c.ok {
			t.Errorf("ParseSteps(%q) = %d, %d, %v; want %d, %d (ok %v)", c.s, from, to, err, c.from, c.to, c.ok)
		}
	}
}
