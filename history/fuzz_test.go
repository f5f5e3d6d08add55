package history_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/fuzzcheck"
)

// FuzzReadManifest reads arbitrary bytes as a run's manifest.json, in a
// directory holding the (empty) checkpoint files of steps 0, 5 and 6 and
// a directory where a checkpoint might be. No input may panic; every
// error names the manifest; a manifest that reads answers Hash and
// LastCheckpoint for every step, and names only regular files inside the
// run directory as checkpoints (they are read whole and hashed, so
// /dev/zero would never end). The seeds in testdata/fuzz/FuzzReadManifest
// are a recorded run's manifest and edited copies.
func FuzzReadManifest(f *testing.F) {
	dir := f.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "checkpoints", "dir.safetensors"), 0o755); err != nil {
		f.Fatal(err)
	}
	for _, s := range []int{0, 5, 6} {
		if err := os.WriteFile(filepath.Join(dir, history.CheckpointName(s)), nil, 0o644); err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, history.ManifestFile)
		fuzzcheck.WriteFile(t, path, b)
		var m *history.Manifest
		fuzzcheck.Bounded(t, len(b), 64, func() {
			var err error
			m, err = history.ReadManifest(dir)
			fuzzcheck.NamesFile(t, err, path)
		})
		if m == nil {
			return
		}
		for s := 0; s <= len(m.Steps); s++ {
			m.Hash(s)
			if c := m.LastCheckpoint(s); c.Step > s {
				t.Errorf("LastCheckpoint(%d) is the checkpoint of step %d", s, c.Step)
			}
		}
		for _, c := range m.Checkpoints {
			st, err := os.Stat(filepath.Join(dir, c.File))
			if !filepath.IsLocal(c.File) || err != nil || !st.Mode().IsRegular() {
				t.Errorf("checkpoint %q is not a regular file inside the run directory", c.File)
			}
		}
	})
}

// FuzzReadStamp reads arbitrary bytes as a run's verified.json. No input
// may panic; every error names the file; a stamp that reads covers a step
// count ≥ 0 "trained" or "replayed". The seeds in
// testdata/fuzz/FuzzReadStamp are a stamp WriteStamp wrote and edited
// copies.
func FuzzReadStamp(f *testing.F) {
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, history.StampFile)
		fuzzcheck.WriteFile(t, path, b)
		fuzzcheck.Bounded(t, len(b), 64, func() {
			s, err := history.ReadStamp(dir)
			fuzzcheck.NamesFile(t, err, path)
			if err == nil && (s.Steps < 0 || (s.How != "trained" && s.How != "replayed")) {
				t.Errorf("stamp of %d steps %q read", s.Steps, s.How)
			}
		})
	})
}

// FuzzCheckpoint replaces the last checkpoint (step 5) of a recorded
// 5-step run with arbitrary bytes, then loads it (Seek, Resume) and
// compares it with the replayed state (Verify), all in strict mode. No
// input may panic; every error names the checkpoint file; loading
// allocates in proportion to the file. The seeds in
// testdata/fuzz/FuzzCheckpoint are the genuine checkpoint, checkpoint 0
// (a valid file of another step) and damaged copies.
func FuzzCheckpoint(f *testing.F) {
	dir := f.TempDir()
	record(f, dir, false, 5)
	path := filepath.Join(dir, history.CheckpointName(5))
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzcheck.WriteFile(t, path, b)
		fuzzcheck.Bounded(t, len(b), 64, func() {
			r, err := history.Open[float32](dir, newStepper(t, false))
			if err != nil {
				t.Fatal(err)
			}
			fuzzcheck.NamesFile(t, r.Seek(5), path)
			fuzzcheck.NamesFile(t, r.Verify(nil), path)
			_, err = history.Resume[float32](dir, newStepper(t, false))
			fuzzcheck.NamesFile(t, err, path)
		})
	})
}
