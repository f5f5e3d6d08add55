package history_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/atomicfile"
)

// failWrites makes writes of the file rel of dir fail with ENOSPC until
// the returned function is called.
func failWrites(dir, rel string) func() {
	path := filepath.Join(dir, rel)
	return atomicfile.SetFault(func(p string) error {
		if p == path {
			return syscall.ENOSPC
		}
		return nil
	})
}

// TestFailedWritesKeepTheRun: a checkpoint that cannot be written, and
// then a manifest that cannot, stop the recording with an error naming the
// file and the cause; the run on disk stays the last complete one (its
// manifest readable, naming only checkpoints that are whole, no temporary
// file beside them), and resuming it twice finishes the run bit for bit
// as an uninterrupted recording.
func TestFailedWritesKeepTheRun(t *testing.T) {
	want := record(t, t.TempDir(), true, 17)
	dir := t.TempDir()
	s := newStepper(t, true)
	rec, err := history.Create[float32](dir, s, history.Options{CheckpointEvery: 5, Config: []byte(`{"test":true}`)})
	if err != nil {
		t.Fatal(err)
	}
	restore := failWrites(dir, history.CheckpointName(10))
	var stepErr error
	for i := 0; i < 17 && stepErr == nil; i++ {
		stepErr = rec.Step(schedule(i))
	}
	restore()
	ck10 := filepath.Join(dir, history.CheckpointName(10))
	if !errors.Is(stepErr, syscall.ENOSPC) || !strings.Contains(stepErr.Error(), ck10) || !strings.Contains(stepErr.Error(), "step 10") {
		t.Fatalf("checkpoint 10 unwritable: got %v, want ENOSPC naming %s", stepErr, ck10)
	}
	checkOnDisk := func(lastCheckpoint int, files int) {
		t.Helper()
		m, err := history.ReadManifest(dir)
		if err != nil {
			t.Fatalf("the run left behind does not open: %v", err)
		}
		if c := m.Checkpoints[len(m.Checkpoints)-1]; c.Step != lastCheckpoint {
			t.Errorf("the manifest's last checkpoint is of step %d, want %d", c.Step, lastCheckpoint)
		}
		entries, _ := os.ReadDir(filepath.Join(dir, "checkpoints"))
		if len(entries) != files {
			t.Errorf("%d files in checkpoints/, want %d (no temporary file)", len(entries), files)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 2 {
			t.Errorf("%d entries in the run directory, want the manifest and checkpoints/", len(entries))
		}
	}
	checkOnDisk(5, 2)

	// Resumed, it records to step 15, whose manifest cannot be written.
	s = newStepper(t, true)
	if rec, err = history.Resume[float32](dir, s); err != nil {
		t.Fatal(err)
	}
	for rec.Steps() < 10 {
		if err := rec.Step(schedule(rec.Steps())); err != nil {
			t.Fatal(err)
		}
	}
	restore = failWrites(dir, history.ManifestFile)
	stepErr = nil
	for stepErr == nil && rec.Steps() < 17 {
		stepErr = rec.Step(schedule(rec.Steps()))
	}
	restore()
	mf := filepath.Join(dir, history.ManifestFile)
	if !errors.Is(stepErr, syscall.ENOSPC) || !strings.Contains(stepErr.Error(), mf) {
		t.Fatalf("manifest unwritable at checkpoint 15: got %v, want ENOSPC naming %s", stepErr, mf)
	}
	checkOnDisk(10, 4) // checkpoint 15 is whole, but its manifest was not written

	s = newStepper(t, true)
	if rec, err = history.Resume[float32](dir, s); err != nil {
		t.Fatal(err)
	}
	if rec.Steps() != 10 {
		t.Fatalf("resumed at step %d, want 10", rec.Steps())
	}
	for rec.Steps() < 17 {
		if err := rec.Step(schedule(rec.Steps())); err != nil {
			t.Fatal(err)
		}
	}
	if err := rec.Close(true, "finished"); err != nil {
		t.Fatal(err)
	}
	final := capture(s)
	for i := range final.params {
		sameBits(t, "final parameters after two failed writes", final.params[i].Data, want[17].params[i].Data)
	}
	if err := verify2(t, dir); err != nil {
		t.Fatal(err)
	}
}
