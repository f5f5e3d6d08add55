package components

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/epkfile"
)

// TestDoCancelledWritesNothing: a context cancelled while Do reads the
// scores stops it before the next tensor, with an error that errors.Is
// matches to the context's and that says nothing was written, and leaves
// no output directory behind.
func TestDoCancelledWritesNothing(t *testing.T) {
	root := t.TempDir()
	run := tinyRun(t)
	epk := filepath.Join(root, "epk")
	writeEPK(t, run, epk, []string{epkfile.Components}, []int{0, 1, 2, 3}, func(name string, x, j int) float64 {
		return math.Sin(float64(len(name)*x + j))
	})
	out := filepath.Join(root, "out")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ticks := 0
	s, err := Do(ctx, Options{Run: run, EPK: epk, Out: out, Progress: func(d, _ int) {
		ticks = d
		if d == 2 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) || s != nil || ticks != 2 || !strings.Contains(err.Error(), "nothing was written to "+out) {
		t.Fatalf("cancelled after 2 tensors: %v, %v after %d ticks; want context.Canceled after 2", s, err, ticks)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a cancelled Do left %s behind (%v)", out, err)
	}
}
