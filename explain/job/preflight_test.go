package job_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/explain/job"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/testrun"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/weights"
)

// editCheckpoint rewrites element 0 of the first tensor whose name starts
// with prefix ("param/", "optim/") in the tiny run's checkpoint of step.
func editCheckpoint(t *testing.T, run string, step int, prefix string, edit func(float32) float32) {
	t.Helper()
	path := filepath.Join(run, history.CheckpointName(step))
	f, err := weights.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var ts []*nn.Param[float32]
	done := false
	for _, n := range f.Names() {
		v, err := weights.Get[float32](f, n)
		if err != nil {
			t.Fatal(err)
		}
		if !done && strings.HasPrefix(n, prefix) {
			v.Data[0] = edit(v.Data[0])
			done = true
		}
		ts = append(ts, &nn.Param[float32]{Name: n, Value: v})
	}
	if !done {
		t.Fatalf("%s holds no tensor %s…", path, prefix)
	}
	if err := weights.Save(path, ts, f.Metadata()); err != nil {
		t.Fatal(err)
	}
}

// editRunManifest applies edit to the manifest.json of the tiny run, or
// of another directory run (an EPK output's).
func editRunManifest(t *testing.T, run string, edit func(m map[string]any)) {
	t.Helper()
	path := filepath.Join(run, history.ManifestFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestPreflightRefusesCorruptRuns: a run whose checkpoint was edited
// (finite values that do not hash to the manifest's record, or a NaN), a
// run that diverged (recorded in its manifest) and a run whose replay
// makes a parameter infinite are each refused before any work, with an
// error naming the file or step and the problem, whether the run's
// verification stamp is void (the files changed after it) or was written
// again for the changed files (it still covers nothing that fails).
func TestPreflightRefusesCorruptRuns(t *testing.T) {
	cases := []struct {
		name   string
		tamper func(t *testing.T, run string)
		want   []string // in the error without a valid stamp
		// stamp is in the error with one (nil: not checked; the
		// optimizer state has no recorded hash to check without a replay)
		stamp []string
	}{
		{"finite checkpoint edit", func(t *testing.T, run string) {
			editCheckpoint(t, run, 4, "param/", func(v float32) float32 { return v + 1e-3 })
		}, []string{history.CheckpointName(4), "differs from the replayed state of step 4"},
			[]string{history.CheckpointName(4), "does not match the manifest"}},
		{"finite optimizer state edit", func(t *testing.T, run string) {
			editCheckpoint(t, run, 4, "optim/", func(v float32) float32 { return v + 1e-3 })
		}, []string{history.CheckpointName(4), "differs from the replayed state of step 4"}, nil},
		{"NaN in a checkpoint", func(t *testing.T, run string) {
			editCheckpoint(t, run, 4, "param/", func(float32) float32 { return float32(math.NaN()) })
		}, []string{history.CheckpointName(4), "NaN"},
			[]string{history.CheckpointName(4), "holds NaN", "diverged or the file is corrupt"}},
		{"NaN in the initial checkpoint", func(t *testing.T, run string) {
			editCheckpoint(t, run, 0, "param/", func(float32) float32 { return float32(math.Inf(-1)) })
		}, []string{history.CheckpointName(0), "holds -Inf"},
			[]string{history.CheckpointName(0), "holds -Inf"}},
		{"diverged", func(t *testing.T, run string) {
			editRunManifest(t, run, func(m map[string]any) { m["stop_reason"] = history.DivergedReason(3) })
		}, []string{history.ManifestFile, "the run diverged at step 3"},
			[]string{history.ManifestFile, "the run diverged at step 3"}},
		{"infinite learning rate", func(t *testing.T, run string) {
			editRunManifest(t, run, func(m map[string]any) { m["steps"].([]any)[2].(map[string]any)["lr"] = 1e39 })
		}, []string{"step 2 makes parameter", "the run diverged"},
			[]string{"step 2 makes parameter", "the run diverged"}},
	}
	shared := tinyRun(t)
	for _, c := range cases {
		for _, restamp := range []bool{false, true} {
			if restamp && c.stamp == nil {
				continue
			}
			run := testrun.Copy(t, shared)
			c.tamper(t, run)
			want := c.want
			if restamp {
				// A stamp for the changed files, as if a build without these
				// checks had verified them.
				if err := history.WriteStamp(run, tinyS, "replayed", ""); err != nil {
					t.Fatal(err)
				}
				want = c.stamp
			}
			out := filepath.Join(t.TempDir(), "out")
			var log bytes.Buffer
			s, err := job.Run(context.Background(), job.Options{Run: run, Out: out, Log: &log})
			if err == nil {
				t.Errorf("%s (restamped %v): the job ran (%+v)", c.name, restamp, s)
				continue
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s (restamped %v): got %v, want an error saying %q", c.name, restamp, err, w)
				}
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("%s (restamped %v): a refused job created its output directory", c.name, restamp)
			}
			if !restamp && !strings.Contains(log.String(), "replaying steps 0:6") {
				t.Errorf("%s: the stamp of the changed run was not void: %s", c.name, log.String())
			}
		}
	}
}

// TestOutputLinksOut: an output directory whose manifest.json or job state
// is a symbolic link leading out of it is refused before either is read,
// naming the file, and nothing is written there.
func TestOutputLinksOut(t *testing.T) {
	run := tinyRun(t)
	for _, name := range []string{"manifest.json", ".epk-state.gob"} {
		parent := t.TempDir()
		out := filepath.Join(parent, "out")
		if err := os.Mkdir(out, 0o755); err != nil {
			t.Fatal(err)
		}
		outside := filepath.Join(parent, "elsewhere")
		if err := os.WriteFile(outside, []byte("not the job's"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, filepath.Join(out, name)); err != nil {
			t.Fatal(err)
		}
		_, err := job.Run(context.Background(), job.Options{Run: run, Out: out})
		if err == nil || !strings.Contains(err.Error(), `"`+name+`" is not a path inside `+out) {
			t.Errorf("%s linked out: got %v, want an error naming it", name, err)
		}
		if entries, _ := os.ReadDir(out); len(entries) != 1 {
			t.Errorf("%s linked out: the refused job wrote into the output directory (%d entries)", name, len(entries))
		}
		if b, _ := os.ReadFile(outside); string(b) != "not the job's" {
			t.Errorf("%s linked out: the file outside changed", name)
		}
	}
}
