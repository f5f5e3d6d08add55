package job_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/explain/job"
	"github.com/explaind/explaind/internal/atomicfile"
	"github.com/explaind/explaind/internal/testrun"
)

// failNth makes the writes of path fail with ENOSPC from the nth on (1:
// the first), until the returned function is called.
func failNth(path string, n int) func() {
	calls := 0
	return atomicfile.SetFault(func(p string) error {
		if p != path {
			return nil
		}
		calls++
		if calls >= n {
			return syscall.ENOSPC
		}
		return nil
	})
}

// sameOutputs fails the test unless the EPK outputs a and b hold the same
// arrays with the same values.
func sameOutputs(t *testing.T, a, b string) {
	t.Helper()
	x, y := testrun.OpenEPK(t, a), testrun.OpenEPK(t, b)
	if len(x.Manifest.Arrays) != len(y.Manifest.Arrays) {
		t.Fatalf("%s has %d arrays, %s %d", b, len(y.Manifest.Arrays), a, len(x.Manifest.Arrays))
	}
	for name, info := range x.Manifest.Arrays {
		if info.Dtype == "int64" {
			continue
		}
		u, err := x.Array(name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := y.Array(name)
		if err != nil {
			t.Fatal(err)
		}
		for i := range u.Data {
			if d := u.Data[i] - v.Data[i]; d > 1e-12 || d < -1e-12 {
				t.Errorf("%s[%d]: %v after the failed write, %v without", name, i, v.Data[i], u.Data[i])
				break
			}
		}
	}
}

// TestFailedWrites: a job whose state file, or one of whose arrays, or
// whose manifest cannot be written (a full disk) stops with an error
// naming the file and the cause, leaves the output directory as a rerun
// of the same job can use (the previous state whole, no partial output),
// and the rerun finishes it with the outputs of a job that never failed.
func TestFailedWrites(t *testing.T) {
	run := tinyRun(t)
	root := t.TempDir()
	presets := []string{epkfile.Validation, epkfile.Components}
	whole := filepath.Join(root, "whole")
	if _, err := job.Run(context.Background(), job.Options{Run: run, Out: whole, Presets: presets}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		file  string // the file that cannot be written
		nth   int    // from its nth write on
		every time.Duration
		// resumed is the number of steps the rerun finds done.
		resumed int
	}{
		{"state", ".epk-state.gob", 3, time.Nanosecond, 2},
		{"array, with a saved state", "f0.npy", 1, time.Nanosecond, 5},
		{"array, no state saved", "f0.npy", 1, 0, 0},
		{"manifest", "manifest.json", 1, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			o := job.Options{Run: run, Out: out, Presets: presets, CheckpointEvery: c.every}
			path := filepath.Join(out, c.file)
			restore := failNth(path, c.nth)
			_, err := job.Run(context.Background(), o)
			restore()
			if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), path) {
				t.Fatalf("got %v, want ENOSPC naming %s", err, path)
			}
			if _, err := epkfile.Open(out); err == nil {
				t.Error("the failed output opens as a finished one")
			}
			entries, _ := os.ReadDir(out)
			for _, e := range entries {
				if e.Name() != ".epk-state.gob" {
					t.Errorf("the failed job left %s in the output directory", e.Name())
				}
			}
			if _, err := os.Stat(filepath.Join(out, ".epk-state.gob")); (err == nil) != (c.resumed > 0) {
				t.Errorf("saved state after the failure: %v, want one only if the job saved one (%d steps)", err, c.resumed)
			}
			var log bytes.Buffer
			o.Log = &log
			if _, err := job.Run(context.Background(), o); err != nil {
				t.Fatalf("the rerun after the failed write: %v", err)
			}
			if c.resumed > 0 && !strings.Contains(log.String(), fmt.Sprintf("resuming the job in %s after %d of %d steps", out, c.resumed, tinyS)) {
				t.Errorf("the rerun did not resume after %d steps: %q", c.resumed, log.String())
			}
			sameOutputs(t, whole, out)
			if _, err := os.Stat(filepath.Join(out, ".epk-state.gob")); err == nil {
				t.Error("the finished output still holds the job state")
			}
		})
	}
}
