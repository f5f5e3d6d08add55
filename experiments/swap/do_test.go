package swap_test

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
	"github.com/explaind/explaind/experiments/swap"
	"github.com/explaind/explaind/internal/lock"
)

// TestDoIsRunThenWrite: Do on the run's directory writes the files that
// Run and Write write, byte for byte, and returns the summary it wrote;
// a bad option fails before the output directory is created.
func TestDoIsRunThenWrite(t *testing.T) {
	r := tinyRun(t)
	root := t.TempDir()
	bad := filepath.Join(root, "bad")
	if _, err := swap.Do(context.Background(), swap.Options{Run: r.Dir, Out: bad}); err == nil || !strings.Contains(err.Error(), "invalid Every 0") {
		t.Errorf("Do with Every 0: %v", err)
	}
	if _, err := os.Stat(bad); err == nil {
		t.Error("a refused Do created its output directory")
	}
	held, err := lock.Dir(bad)
	if err != nil {
		t.Fatal(err)
	}
	refusal := fmt.Sprintf("swap: another explaind process (PID %d) is writing to %s; wait for it to finish or stop it", os.Getpid(), bad)
	if _, err := swap.Do(context.Background(), swap.Options{Run: r.Dir, Out: bad, Every: 10}); err == nil || err.Error() != refusal {
		t.Errorf("Do into a locked output directory: %v; want %q", err, refusal)
	}
	if entries, _ := os.ReadDir(bad); len(entries) != 1 {
		t.Errorf("a refused Do wrote into the locked --out: %v", entries)
	}
	held.Release()
	opt := swap.Options{Run: r.Dir, Out: filepath.Join(root, "do"), Software: "test", Every: 10}
	s, err := swap.Do(context.Background(), opt)
	if err != nil || !s.Complete {
		t.Fatalf("Do: %+v, %v", s, err)
	}
	res, err := swap.Run(context.Background(), r, swap.Options{Every: 10})
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(root, "write")
	if err := os.Mkdir(want, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := swap.Write(want, r, opt, res, "test"); err != nil {
		t.Fatal(err)
	}
	var written swap.Summary
	expiotest.ReadJSON(t, filepath.Join(opt.Out, swap.SummaryFile), &written)
	if written.FinalAcc != s.FinalAcc || written.Steps != s.Steps || len(written.Headline) != len(s.Headline) {
		t.Errorf("Do returned %+v, wrote %+v", s, written)
	}
	for _, f := range s.Files {
		a, _ := os.ReadFile(filepath.Join(want, f))
		b, _ := os.ReadFile(filepath.Join(opt.Out, f))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("%s: Do wrote %d bytes, Run and Write %d, or they differ", f, len(b), len(a))
		}
	}
}

// TestDoInterrupted: a cancelled Do writes the results so far, whose
// summary says it is incomplete, and returns that summary with an error
// that errors.Is matches to the context's and that says where they are.
func TestDoInterrupted(t *testing.T) {
	r := tinyRun(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := filepath.Join(t.TempDir(), "out")
	s, err := swap.Do(ctx, swap.Options{Run: r.Dir, Out: out, Every: 5, Progress: func(done, _ int) {
		if done == 2 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "the results so far are in "+out) || s == nil || s.Complete || s.Steps != 2 {
		t.Fatalf("interrupted Do: %+v, %v; want the summary of 2 steps and context.Canceled", s, err)
	}
	var written swap.Summary
	expiotest.ReadJSON(t, filepath.Join(out, swap.SummaryFile), &written)
	if written.Complete || written.Steps != 2 {
		t.Errorf("summary.json of an interrupted Do: complete %v, %d steps", written.Complete, written.Steps)
	}
	expiotest.CheckFiles(t, out, s.Files...)
}
