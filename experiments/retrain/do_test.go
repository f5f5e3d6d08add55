package retrain_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/experiments/expio/expiotest"
	"github.com/explaind/explaind/experiments/retrain"
	"github.com/explaind/explaind/internal/lock"
)

// TestDo: Do on the run's directory writes the complete result and
// returns its summary; run again it finds that result, rewrites nothing
// and says so (Reused).
func TestDo(t *testing.T) {
	r := tinyRun(t)
	out := filepath.Join(t.TempDir(), "out")
	opt := retrain.Options{Run: r.Dir, Out: out, Software: "test", Parts: []string{retrain.Outer}, Stride: 50, MaxEpochs: 2, Seeds: 1}
	s, err := retrain.Do(context.Background(), opt)
	if err != nil || !s.Complete || s.Reused || s.RunFingerprint != r.Fingerprint || len(s.Checkpoints) != 3 {
		t.Fatalf("Do: %+v, %v; want a complete result of 3 checkpoints", s, err)
	}
	expiotest.CheckFiles(t, out, s.Files...)
	old, _ := os.ReadFile(filepath.Join(out, retrain.SummaryFile))
	again, err := retrain.Do(context.Background(), opt)
	if err != nil || !again.Reused || !again.Complete || again.RunFingerprint != r.Fingerprint {
		t.Fatalf("Do again: %+v, %v; want the summary found, Reused", again, err)
	}
	if after, _ := os.ReadFile(filepath.Join(out, retrain.SummaryFile)); !bytes.Equal(after, old) {
		t.Error("Do of a finished job rewrote its summary")
	}
	if _, err := os.Stat(filepath.Join(out, lock.Name)); !os.IsNotExist(err) {
		t.Errorf("the lock file outlives Do: %v", err)
	}
	held, err := lock.Dir(out)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	want := fmt.Sprintf("retrain: another explaind process (PID %d) is writing to %s", os.Getpid(), out)
	if _, err := retrain.Do(context.Background(), opt); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Do into a locked output directory: %v; want %q", err, want)
	}
}

// TestDoInterrupted: a cancelled Do writes the results so far, whose
// summary says it is incomplete, and returns that summary with an error
// that errors.Is matches to the context's and that says how to resume.
func TestDoInterrupted(t *testing.T) {
	r := tinyRun(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := filepath.Join(t.TempDir(), "out")
	opt := retrain.Options{Run: r.Dir, Out: out, Parts: []string{retrain.Attention}, Stride: 50, MaxEpochs: 2, Seeds: 2, Progress: func(done, _ int) {
		if done == 3 {
			cancel()
		}
	}}
	s, err := retrain.Do(ctx, opt)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "interrupted after 3 of 6 retrainings") || s == nil || s.Complete {
		t.Fatalf("interrupted Do: %+v, %v; want an incomplete summary and context.Canceled after 3 of 6", s, err)
	}
	var written retrain.Summary
	expiotest.ReadJSON(t, filepath.Join(out, retrain.SummaryFile), &written)
	if written.Complete || written.Headline[0].Runs != 3 {
		t.Errorf("summary.json of an interrupted Do: complete %v, headline %+v", written.Complete, written.Headline)
	}
	expiotest.CheckFiles(t, out, s.Files...)
}
