package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/experiments/prune"
)

// TestPruneDoCancelledWritesNothing: prune.Do under a cancelled context
// stops before its first evaluation, says that nothing was written, and
// leaves no output directory.
func TestPruneDoCancelledWritesNothing(t *testing.T) {
	root := t.TempDir()
	runDir := pruneTestRun(t)
	epkDir := filepath.Join(root, "epk")
	fakeEPK(t, runDir, epkDir, "", []string{epkfile.Validation, epkfile.Pruning}, []int{0, 1, 2, 3},
		func(_ string, n int) []float64 { return make([]float64, n) }, nil)
	out := filepath.Join(root, "prune")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	o := prune.Options{Run: runDir, EPK: []string{epkDir}, Out: out,
		Config: prune.Config{Grids: []prune.Grid{{Name: "g", Fractions: []float64{0.5}}}, Scope: prune.ScopeGlobal, Seeds: 1, Keep: []string{prune.DefaultKeep}}}
	s, err := prune.Do(ctx, o)
	if !errors.Is(err, context.Canceled) || s != nil || !strings.Contains(err.Error(), "nothing was written to "+out) {
		t.Fatalf("prune.Do cancelled: %+v, %v; want context.Canceled and nothing written", s, err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a cancelled prune.Do left %s behind (%v)", out, err)
	}
}
