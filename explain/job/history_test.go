package job_test

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/explain/job"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/testrun"
	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/tensor"
)

// TestHistoryPreset checks the history preset's snapshots against the
// components preset of jobs over the truncated ranges 0:s_k: each Gram
// entry within 1e-6 of the product of the two samples' norms (both outputs
// store float32, whose rounding is 6e-8 relative), and the manifest's
// description of the new arrays.
func TestHistoryPreset(t *testing.T) {
	run := tinyRun(t)
	root := t.TempDir()
	out := filepath.Join(root, "history")
	s, err := job.Run(context.Background(), job.Options{Run: run, Out: out, Presets: []string{epkfile.History},
		SnapshotEvery: 4, TestSize: 5})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Presets, []string{epkfile.Validation, epkfile.History}) {
		t.Errorf("presets %v", s.Presets)
	}
	o := testrun.OpenEPK(t, out)
	steps, err := o.Ints("history_steps")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(steps, []int{4, tinyS}) {
		t.Fatalf("snapshot steps %v, want [4 %d]", steps, tinyS)
	}
	info := o.Manifest.Arrays["history_gram"]
	groups := info.Labels["group"]
	if info.Preset != epkfile.History || info.Dtype != "float32" || len(groups) == 0 || groups[len(groups)-1] != job.HistoryAll ||
		!slices.Equal(info.Axes, []string{"snapshot", "group", "test", "test"}) {
		t.Fatalf("history_gram's manifest entry: %+v", info)
	}
	X, G := 5, len(groups)
	gram, err := o.Array("history_gram")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(gram.Shape, []int{len(steps), G, X, X}) {
		t.Fatalf("history_gram shape %v", gram.Shape)
	}
	for k, end := range steps {
		ref := filepath.Join(root, "components", "to"+string(rune('0'+end)))
		if _, err := job.Run(context.Background(), job.Options{Run: run, Out: ref, Presets: []string{epkfile.Components},
			TestSize: X, To: end}); err != nil {
			t.Fatal(err)
		}
		c := testrun.OpenEPK(t, ref)
		want := make([]float64, G*X*X)
		for _, name := range c.Manifest.Tensors {
			a, err := c.Array("scores/" + name)
			if err != nil {
				t.Fatal(err)
			}
			size := len(a.Data) / X
			for g, gname := range groups {
				if gname != job.HistoryAll && gname != models.GroupOf(name) {
					continue
				}
				for x := range X {
					for y := range X {
						var v float64
						for i := range size {
							v += a.Data[x*size+i] * a.Data[y*size+i]
						}
						want[(g*X+x)*X+y] += v
					}
				}
			}
		}
		got := gram.Data[k*G*X*X : (k+1)*G*X*X]
		for g := range G {
			for x := range X {
				for y := range X {
					i := (g*X+x)*X + y
					norms := math.Sqrt(want[(g*X+x)*X+x] * want[(g*X+y)*X+y])
					if d := math.Abs(got[i] - want[i]); !(d <= 1e-6*norms) {
						t.Errorf("snapshot at step %d, group %s, (%d, %d): %g, want %g from the components preset over 0:%d",
							end, groups[g], x, y, got[i], want[i], end)
					}
				}
			}
			if groups[g] == job.HistoryAll && !(want[(g*X)*X] > 0) {
				t.Errorf("snapshot at step %d: the whole model's first sample has norm %g", end, want[(g*X)*X])
			}
		}
	}
}

// TestTrainSplit explains training samples: the manifest and summary
// record the split, the test labels are the training labels, the model
// array is the final model's output on them, and the kernel machine
// reproduces it (argmax agreement 100 %, every step's completeness within
// 10 × the adaptive rule's tolerance 1e-6, the bound the end-to-end test
// of explaind epk uses: the rule's error estimate is not a strict bound).
func TestTrainSplit(t *testing.T) {
	run := tinyRun(t)
	out := filepath.Join(t.TempDir(), "train")
	idx := []int{0, 3, 5, 7}
	s, err := job.Run(context.Background(), job.Options{Run: run, Out: out, TestSplit: "train", TestIndices: idx})
	if err != nil {
		t.Fatal(err)
	}
	if s.TestSplit != "train" || s.ArgmaxAgreement != 1 || !(s.MaxCompletenessResidual <= 10*s.Tol) || s.Tol != 1e-6 {
		t.Errorf("summary: split %q, agreement %g, completeness %g (tol %g)", s.TestSplit, s.ArgmaxAgreement, s.MaxCompletenessResidual, s.Tol)
	}
	o := testrun.OpenEPK(t, out)
	if o.Manifest.Test.Split != "train" {
		t.Errorf("manifest split %q", o.Manifest.Test.Split)
	}
	tr, err := job.OpenRun[float32, float64](run)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := tr.Data.Train.Subset(idx)
	if err != nil {
		t.Fatal(err)
	}
	labels, err := o.Ints("test_labels")
	if err != nil || !slices.Equal(labels, sub.Labels) {
		t.Fatalf("test labels %v (%v), want the training labels %v", labels, err, sub.Labels)
	}
	// The final model on the training samples.
	err = tr.Source.Replay.Forward(tinyS-1, tinyS, func(v *history.StepView[float32]) error {
		for i, p := range tr.Model.Params() {
			for j, x := range v.After[i].Value.Data {
				p.Value.Data[j] = float64(x)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	y, _, err := tr.Model.Forward(sub.Inputs)
	if err != nil {
		t.Fatal(err)
	}
	model, err := o.Array("model")
	if err != nil {
		t.Fatal(err)
	}
	if e := tensor.RelErr(model.Data, y.Data); !(e <= 1e-12) {
		t.Errorf("the model array differs from the model's output on the training samples by %.3g", e)
	}
	// The same samples from the validation split are other samples.
	val := filepath.Join(t.TempDir(), "val")
	sv, err := job.Run(context.Background(), job.Options{Run: run, Out: val, TestIndices: idx})
	if err != nil {
		t.Fatal(err)
	}
	if sv.TestSplit != "val" {
		t.Errorf("default split %q, want val", sv.TestSplit)
	}
	mv, err := testrun.OpenEPK(t, val).Array("model")
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(mv.Data, model.Data) {
		t.Error("the validation samples' outputs equal the training samples'")
	}
}

// TestHistoryResume interrupts a history job and resumes it in the ways a
// kill can leave it, each giving the history_gram.npy of the
// uninterrupted job, byte for byte: resumed after an interruption (the
// partial file holds the snapshots the state counts); from an older state
// than the partial file's last snapshot (a SIGKILL after snapshots the
// state does not count yet); after the finished file was renamed but
// before the manifest was written; after a failed write of the manifest
// (the finished file goes back to its partial name). A partial file
// shorter than the state says is refused, naming the fix, and the job
// then starts afresh once the state is removed. A stale partial file
// without a state neither keeps a job out of its directory nor stays.
func TestHistoryResume(t *testing.T) {
	run := tinyRun(t)
	root := t.TempDir()
	opts := func(out string) job.Options {
		return job.Options{Run: run, Out: out, Presets: []string{epkfile.Components, epkfile.History}, SnapshotEvery: 2,
			TestSize: 5, CheckpointEvery: time.Nanosecond}
	}
	whole := filepath.Join(root, "whole")
	if _, err := job.Run(context.Background(), opts(whole)); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(whole, "history_gram.npy"))
	if err != nil {
		t.Fatal(err)
	}
	const partial = ".history_gram.npy.partial"
	// interrupt runs the job in out until step stop and returns the state
	// file's bytes after each step.
	interrupt := func(out string, stop int) [][]byte {
		var states [][]byte
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		o := opts(out)
		o.Progress = func(done, _ int) {
			if done == stop {
				cancel()
			}
			if b, err := os.ReadFile(filepath.Join(out, ".epk-state.gob")); err == nil {
				states = append(states, b)
			}
		}
		if _, err := job.Run(ctx, o); err == nil || !strings.Contains(err.Error(), "interrupted") {
			t.Fatalf("interrupted job: %v", err)
		}
		if _, err := os.Stat(filepath.Join(out, partial)); err != nil {
			t.Fatalf("the interrupted job left no partial history_gram.npy: %v", err)
		}
		if _, err := os.Stat(filepath.Join(out, "history_gram.npy")); err == nil {
			t.Fatal("the interrupted job left a history_gram.npy")
		}
		return states
	}
	// finish reruns the job in out: its history_gram.npy is the
	// uninterrupted job's, and no partial file is left.
	finish := func(name, out string) {
		t.Helper()
		if _, err := job.Run(context.Background(), opts(out)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := os.ReadFile(filepath.Join(out, "history_gram.npy"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: history_gram.npy differs from the uninterrupted job's", name)
		}
		if _, err := os.Stat(filepath.Join(out, partial)); err == nil {
			t.Errorf("%s: the finished job left its partial file", name)
		}
		sameOutputs(t, whole, out)
	}

	out := filepath.Join(root, "interrupted")
	interrupt(out, 3)
	finish("interrupted after step 3", out)

	out = filepath.Join(root, "killed")
	states := interrupt(out, 5) // after steps 1 … 4 (the 5th saves on the interruption)
	// The state after step 3 counts 1 snapshot, the partial file holds 2.
	if err := os.WriteFile(filepath.Join(out, ".epk-state.gob"), states[2], 0o644); err != nil {
		t.Fatal(err)
	}
	finish("resumed from an older state", out)

	out = filepath.Join(root, "renamed")
	interrupt(out, 5)
	if err := os.Rename(filepath.Join(out, partial), filepath.Join(out, "history_gram.npy")); err != nil {
		t.Fatal(err)
	}
	finish("killed before its manifest", out)

	out = filepath.Join(root, "manifest")
	restore := failNth(filepath.Join(out, "manifest.json"), 1)
	_, err = job.Run(context.Background(), opts(out))
	restore()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("failing manifest write: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, partial)); err != nil {
		t.Fatalf("after the failed manifest write the partial file is gone: %v", err)
	}
	finish("after a failed manifest write", out)

	out = filepath.Join(root, "truncated")
	interrupt(out, 5)
	path := filepath.Join(out, partial)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, st.Size()-1); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(out, ".epk-state.gob")
	_, err = job.Run(context.Background(), opts(out))
	if err == nil || !strings.Contains(err.Error(), path+" holds 1 of the 2 Gram snapshots the job's saved state "+state+" counts") ||
		!strings.Contains(err.Error(), "remove "+state+" to start the job afresh") {
		t.Fatalf("a partial file short of the state's snapshots: %v", err)
	}
	if err := os.Remove(state); err != nil {
		t.Fatal(err)
	}
	finish("started afresh", out)

	// The partial file a job killed before its first state left behind
	// does not keep another job out of the directory, nor stays there.
	out = filepath.Join(root, "stale")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, partial), []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := job.Run(context.Background(), job.Options{Run: run, Out: out, TestSize: 5}); err != nil {
		t.Fatalf("a job in a directory holding a stale partial file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, partial)); err == nil {
		t.Error("the stale partial file stayed in the finished output")
	}
}
