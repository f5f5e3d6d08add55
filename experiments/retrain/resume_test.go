package retrain_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/experiments/expio/expiotest"
	"github.com/explaind/explaind/experiments/retrain"
)

// resumeJob is a job of 3 checkpoints (100, 50, 0) × 2 parts × 2 seeds on
// the tiny run, its validation set replaced by the training set so that
// the rows reach the target after differing numbers of epochs.
func resumeJob(t testing.TB) (*expio.Run, retrain.Options) {
	r := tinyRun(t)
	r.Data = memorized(r)
	return r, retrain.Options{Parts: []string{retrain.Attention, retrain.Outer}, Stride: 50, MaxEpochs: 40, Seeds: 2}
}

// runUntil runs opt into dir, cancelling the context once stop
// retrainings are done in all (0: never); it returns the result, the
// numbers Progress was called with and Run's error.
func runUntil(t *testing.T, r *expio.Run, opt retrain.Options, dir string, stop int, log *bytes.Buffer) (*retrain.Result, []int, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls []int
	opt.Out = dir
	if log != nil {
		opt.Log = log
	}
	opt.Progress = func(done, total int) {
		calls = append(calls, done)
		if total != 12 {
			t.Errorf("Progress total %d, want 12", total)
		}
		if done == stop {
			cancel()
		}
	}
	res, err := retrain.Run(ctx, r, opt)
	return res, calls, err
}

func readProgress(t *testing.T, dir string) retrain.Progress {
	t.Helper()
	var p retrain.Progress
	expiotest.ReadJSON(t, filepath.Join(dir, retrain.ProgressFile), &p)
	return p
}

// TestResumeMatchesUninterrupted: a job interrupted after 5 retrainings
// (inside the second checkpoint) and again after 9 has its rows on disk
// at each stop, resumes each time after the last one done without redoing
// any, and ends with the rows and output files of an uninterrupted job,
// bit for bit; run once more it redoes nothing.
func TestResumeMatchesUninterrupted(t *testing.T) {
	r, opt := resumeJob(t)
	want, err := retrain.Run(context.Background(), r, opt)
	if err != nil || !want.Complete || len(want.Rows) != 12 {
		t.Fatalf("uninterrupted: %v, %+v", err, want)
	}
	epochs := map[int]bool{}
	for _, row := range want.Rows {
		epochs[row.Epochs] = true
	}
	if len(epochs) < 3 {
		t.Fatalf("the rows reach the target after %v epochs: too alike for the comparison to mean much", epochs)
	}
	t.Logf("uninterrupted: %d rows, epochs to the target (−1: not within 40) %v", len(want.Rows), epochs)

	dir := filepath.Join(t.TempDir(), "out") // Run creates it
	var log bytes.Buffer
	res, calls, err := runUntil(t, r, opt, dir, 5, &log)
	if !errors.Is(err, context.Canceled) || res == nil || res.Complete || res.Reused != 0 || !slices.Equal(res.Rows, want.Rows[:5]) {
		t.Fatalf("first leg: %v, %+v; want the first 5 rows and context.Canceled", err, res)
	}
	if !slices.Equal(calls, []int{1, 2, 3, 4, 5}) || log.Len() != 0 {
		t.Errorf("first leg: Progress calls %v, log %q", calls, log.String())
	}
	// As after a kill: nothing but what Run saved itself.
	if p := readProgress(t, dir); p.Complete || p.Total != 12 || !slices.Equal(p.Rows, want.Rows[:5]) || p.RunFingerprint != r.Fingerprint {
		t.Fatalf("progress after 5: complete %v, total %d, %d rows, fingerprint %s", p.Complete, p.Total, len(p.Rows), p.RunFingerprint)
	}

	res, calls, err = runUntil(t, r, opt, dir, 9, &log)
	if !errors.Is(err, context.Canceled) || res == nil || res.Reused != 5 || !slices.Equal(res.Rows, want.Rows[:9]) {
		t.Fatalf("second leg: %v, %+v; want rows 0..8 and context.Canceled", err, res)
	}
	if !slices.Equal(calls, []int{6, 7, 8, 9}) || !strings.Contains(log.String(), "resuming: 5 of 12 retrainings already done") {
		t.Errorf("second leg: Progress calls %v (want 6..9), log %q", calls, log.String())
	}

	log.Reset()
	opt.EvalChunk = 3 // not part of the job's key: results do not depend on it
	res, calls, err = runUntil(t, r, opt, dir, 0, &log)
	if err != nil || !res.Complete || res.Reused != 9 || !slices.Equal(calls, []int{10, 11, 12}) {
		t.Fatalf("third leg: %v, complete %v, reused %d, Progress calls %v", err, res.Complete, res.Reused, calls)
	}
	if !strings.Contains(log.String(), "resuming: 9 of 12 retrainings already done") {
		t.Errorf("third leg: log %q", log.String())
	}
	for i := range want.Rows {
		if res.Rows[i] != want.Rows[i] {
			t.Errorf("row %d: resumed %+v, uninterrupted %+v", i, res.Rows[i], want.Rows[i])
		}
	}
	if p := readProgress(t, dir); !p.Complete || !slices.Equal(p.Rows, want.Rows) {
		t.Errorf("final progress: complete %v, %d rows", p.Complete, len(p.Rows))
	}

	// The written outputs are those of the uninterrupted job.
	opt.EvalChunk = 0
	wantDir := t.TempDir()
	if err := retrain.Write(wantDir, r, opt, want, "test"); err != nil {
		t.Fatal(err)
	}
	if err := retrain.Write(dir, r, opt, res, "test"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{retrain.SummaryFile, retrain.CSVFile, retrain.ProgressFile} {
		a, _ := os.ReadFile(filepath.Join(wantDir, f))
		b, _ := os.ReadFile(filepath.Join(dir, f))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("%s: resumed (%d bytes) differs from uninterrupted (%d bytes)", f, len(b), len(a))
		}
	}

	// Complete: nothing is redone.
	res, calls, err = runUntil(t, r, opt, dir, 0, &log)
	if err != nil || !res.Complete || res.Reused != 12 || len(calls) != 0 || !slices.Equal(res.Rows, want.Rows) {
		t.Errorf("rerun of a complete job: %v, complete %v, reused %d, Progress calls %v", err, res.Complete, res.Reused, calls)
	}
}

// TestResumeRefusesAnotherJob: a directory holding a result of other
// settings or of another run is refused, naming the difference and the
// ways out, before anything is retrained or written; so is a progress
// file whose rows are not the job's.
func TestResumeRefusesAnotherJob(t *testing.T) {
	r, opt := resumeJob(t)
	dir := t.TempDir()
	if _, _, err := runUntil(t, r, opt, dir, 2, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("setting up: %v", err)
	}
	progress := filepath.Join(dir, retrain.ProgressFile)
	before, _ := os.ReadFile(progress)
	refused := func(what string, r *expio.Run, o retrain.Options, want ...string) {
		t.Helper()
		res, calls, err := runUntil(t, r, o, dir, 0, nil)
		for _, w := range append(want, "Out "+dir, "choose another Out", "delete "+dir) {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: got %v, want an error mentioning %q", what, err, w)
				break
			}
		}
		if res != nil || len(calls) != 0 {
			t.Errorf("%s: retrained %v", what, calls)
		}
		if after, _ := os.ReadFile(progress); !bytes.Equal(after, before) {
			t.Errorf("%s: the progress file changed", what)
		}
	}
	edit := func(f func(*retrain.Options)) retrain.Options {
		o := opt
		o.Parts = slices.Clone(opt.Parts)
		f(&o)
		return o
	}
	refused("seeds", r, edit(func(o *retrain.Options) { o.Seeds = 3 }), "other settings (Seeds 2 there, 3 here)")
	refused("target", r, edit(func(o *retrain.Options) { o.Target = 0.99 }), "Target 1 there, 0.99 here")
	refused("max-epochs and stride", r, edit(func(o *retrain.Options) { o.MaxEpochs, o.Stride = 41, 25 }),
		"Stride 50 there, 25 here; MaxEpochs 40 there, 41 here")
	refused("max-checkpoints", r, edit(func(o *retrain.Options) { o.MaxCheckpoints = 3 }), "MaxCheckpoints 0 there, 3 here")
	refused("parts order", r, edit(func(o *retrain.Options) { slices.Reverse(o.Parts) }), "Parts attention,outer there, outer,attention here")
	refused("all parts", r, edit(func(o *retrain.Options) { o.Parts = nil }), "Parts attention,outer there, outer,pipeline,attention here")

	other := expiotest.OpenTinyModuloRun(t, retrain.Command, 10, 50, 25)
	other.Data = memorized(other)
	refused("another run", other, opt, "result of another run ("+r.Dir, r.Fingerprint, other.Fingerprint)

	// A result without a progress file (an older explaind's) is checked
	// by its summary: another job's is refused, this job's started over.
	full, err := retrain.Run(context.Background(), r, opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := retrain.Write(dir, r, opt, full, "test"); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(progress); err != nil {
		t.Fatal(err)
	}
	before = nil
	refused("seeds, by the summary", r, edit(func(o *retrain.Options) { o.Seeds = 1 }), "Seeds 2 there, 1 here")
	if res, calls, err := runUntil(t, r, opt, dir, 1, nil); !errors.Is(err, context.Canceled) || res.Reused != 0 || len(calls) != 1 {
		t.Errorf("this job's summary without a progress file: %v, %d calls; want a fresh start", err, len(calls))
	}

	// Rows out of the job's order are refused.
	p := readProgress(t, dir)
	p.Rows = []retrain.Row{{Checkpoint: 100, Part: retrain.Attention, Seed: 1}}
	if err := expio.WriteJSON(progress, p); err != nil {
		t.Fatal(err)
	}
	if _, err := retrain.Resume(dir, r, opt); err == nil || !strings.Contains(err.Error(), "row 0") || !strings.Contains(err.Error(), "delete it to start over") {
		t.Errorf("rows out of order: %v", err)
	}
}
