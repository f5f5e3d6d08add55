package history_test

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/weights"
)

// recordDiverged records a run whose learning rate explodes after step 3
// until a parameter stops being finite, and closes it as train does, with
// history.DivergedReason. It returns the step that diverged.
func recordDiverged(t *testing.T, dir string) int {
	t.Helper()
	s := newStepper(t, false)
	rec, err := history.Create[float32](dir, s, history.Options{CheckpointEvery: 5, Config: []byte(`{"test":true}`)})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 12; i++ {
		r := schedule(i)
		if i > 3 {
			r.LR = 1e30
		}
		if err := rec.Step(r); err != nil {
			t.Fatal(err)
		}
		for _, p := range s.Params() {
			for _, v := range p.Value.Data {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					if err := rec.Close(false, history.DivergedReason(i)); err != nil {
						t.Fatal(err)
					}
					return i
				}
			}
		}
	}
	t.Fatal("the parameters stayed finite: the test does not diverge")
	return 0
}

// TestDivergedRunIsRefused checks that a run that diverged is refused by
// Verify for what its manifest records and, when that record is lost, for
// the step that makes a parameter non-finite; that a checkpoint of such a
// state is refused when loaded; and that no verification stamp covers it.
func TestDivergedRunIsRefused(t *testing.T) {
	dir := t.TempDir()
	bad := recordDiverged(t, dir)
	err := verify(t, dir)
	want := history.DivergedReason(bad)
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), history.ManifestFile) {
		t.Errorf("verify of a diverged run: got %v, want an error naming %s and saying %q", err, history.ManifestFile, want)
	}
	const sw = "test build"
	if err := history.WriteStamp(dir, bad+1, "replayed", sw); err != nil {
		t.Fatal(err)
	}
	if ok, why, err := history.StampCovers(dir, bad+1, sw); err != nil || ok || !strings.Contains(why, "diverged") {
		t.Errorf("the stamp of a diverged run: covered %v, %q, %v; want void, saying it diverged", ok, why, err)
	}

	// Without the record, the replay itself refuses the step.
	editManifest(t, dir, func(m map[string]any) { m["stop_reason"] = "interrupted" })
	err = verify(t, dir)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("step %d makes parameter", bad)) || !strings.Contains(err.Error(), "diverged") {
		t.Errorf("verify of a run that diverges at step %d: got %v, want an error naming the step", bad, err)
	}
	// The last checkpoint holds the non-finite state.
	r, err := history.Open[float32](dir, newStepper(t, false))
	if err != nil {
		t.Fatal(err)
	}
	last := history.CheckpointName(bad + 1)
	if err := r.Seek(bad + 1); err == nil || !strings.Contains(err.Error(), last) || !strings.Contains(err.Error(), "diverged or the file is corrupt") {
		t.Errorf("seek to the checkpoint of the diverged state: got %v, want an error naming %s", err, last)
	}
	if _, err := history.Resume[float32](dir, newStepper(t, false)); err == nil || !strings.Contains(err.Error(), last) {
		t.Errorf("resume from the diverged state: got %v, want an error naming %s", err, last)
	}
}

// rewriteCheckpoint rewrites the checkpoint of step in dir with edit
// applied to the tensor name.
func rewriteCheckpoint(t *testing.T, dir string, step int, name string, edit func([]float32)) {
	t.Helper()
	ck := filepath.Join(dir, history.CheckpointName(step))
	f, err := weights.Open(ck)
	if err != nil {
		t.Fatal(err)
	}
	var ts []*nn.Param[float32]
	found := false
	for _, n := range f.Names() {
		v, err := weights.Get[float32](f, n)
		if err != nil {
			t.Fatal(err)
		}
		if n == name {
			edit(v.Data)
			found = true
		}
		ts = append(ts, &nn.Param[float32]{Name: n, Value: v})
	}
	if !found {
		t.Fatalf("%s holds no %s", ck, name)
	}
	if err := weights.Save(ck, ts, f.Metadata()); err != nil {
		t.Fatal(err)
	}
}

// TestNonFiniteCheckpoint checks that a checkpoint holding a NaN or an
// infinity, in a parameter or in the optimizer state, is refused with an
// error naming the file, the tensor and the value.
func TestNonFiniteCheckpoint(t *testing.T) {
	clean := t.TempDir()
	record(t, clean, true, 12)
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	for _, c := range []struct {
		step int
		name string
		v    float32
		want string
	}{
		{0, "param/0.weight", nan, `holds NaN in "param/0.weight" at element 3`},
		{0, "param/2.bias", inf, `holds +Inf in "param/2.bias" at element 2`},
		{10, "param/0.weight", nan, `holds NaN in "param/0.weight" at element 3`},
	} {
		dir := t.TempDir()
		if err := os.CopyFS(dir, os.DirFS(clean)); err != nil {
			t.Fatal(err)
		}
		rewriteCheckpoint(t, dir, c.step, c.name, func(d []float32) { d[min(3, len(d)-1)] = c.v })
		file := history.CheckpointName(c.step)
		err := verify2(t, dir)
		if err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), c.name) || !strings.Contains(err.Error(), "NaN") && !strings.Contains(err.Error(), "Inf") {
			t.Errorf("verify, %v in %s of %s: got %v, want an error naming the file, the tensor and the value", c.v, c.name, file, err)
		}
		r, err := history.Open[float32](dir, newStepper(t, true))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Seek(c.step + 1); err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("seek through %s: got %v, want an error naming it and saying %s", file, err, c.want)
		}
	}
	// The optimizer state too.
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(clean)); err != nil {
		t.Fatal(err)
	}
	f, err := weights.Open(filepath.Join(dir, history.CheckpointName(5)))
	if err != nil {
		t.Fatal(err)
	}
	var optName string
	for _, n := range f.Names() {
		if strings.HasPrefix(n, "optim/") {
			optName = n
			break
		}
	}
	rewriteCheckpoint(t, dir, 5, optName, func(d []float32) { d[0] = -inf })
	r, err := history.Open[float32](dir, newStepper(t, true))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Seek(6); err == nil || !strings.Contains(err.Error(), `holds -Inf in "`+optName+`" at element 0`) {
		t.Errorf("seek through an optimizer state holding -Inf: got %v", err)
	}
}

// TestCheckpointSymlinkOutside checks that a checkpoint that is a symbolic
// link leading out of the run directory is refused when the manifest is
// read, though its name is local.
func TestCheckpointSymlinkOutside(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "run")
	record(t, dir, false, 6)
	ck := filepath.Join(dir, history.CheckpointName(5))
	outside := filepath.Join(parent, "outside.safetensors")
	if err := os.Rename(ck, outside); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, ck); err != nil {
		t.Fatal(err)
	}
	_, err := history.ReadManifest(dir)
	if err == nil || !strings.Contains(err.Error(), "not a path inside") || !strings.Contains(err.Error(), history.CheckpointName(5)) || !strings.Contains(err.Error(), history.ManifestFile) {
		t.Errorf("checkpoint linked outside: got %v, want an error naming the manifest and the checkpoint", err)
	}
	// A link inside the run directory is fine.
	if err := os.Remove(ck); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(outside, filepath.Join(dir, "moved.safetensors")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../moved.safetensors", ck); err != nil {
		t.Fatal(err)
	}
	if _, err := history.ReadManifest(dir); err != nil {
		t.Errorf("checkpoint linked inside the run directory: %v", err)
	}
}
