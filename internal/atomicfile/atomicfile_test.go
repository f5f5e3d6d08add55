package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestFailedWriteKeepsTheOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.json")
	if err := WriteBytes(path, []byte("old")); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("disk full")
	err := Write(path, func(w io.Writer) error {
		w.Write([]byte("half of the new"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the writer's error", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("file now holds %q, want the old contents", b)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("%d entries left in the directory, want 1 (no temporary file)", len(entries))
	}
	if err := WriteBytes(path, []byte("new")); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if b, _ := os.ReadFile(path); string(b) != "new" || fi.Mode().Perm() != 0o644 {
		t.Errorf("after a good write: %q, mode %v", b, fi.Mode().Perm())
	}
	if err := WriteBytes(filepath.Join(dir, "missing", "f"), nil); err == nil {
		t.Error("a missing directory: want an error")
	}
}

func TestRemoveTempsClearsAKilledWritersFiles(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "checkpoints")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	keep := []string{filepath.Join(dir, "manifest.json"), filepath.Join(sub, "step-0.safetensors"),
		filepath.Join(dir, ".tmp-"), filepath.Join(dir, "a.tmp-1")}
	for _, p := range keep {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Temporaries as Write names them, left by a writer killed before its rename.
	var temps []string
	for _, target := range []string{filepath.Join(dir, "manifest.json"), filepath.Join(sub, "step-1.safetensors")} {
		f, err := os.CreateTemp(filepath.Dir(target), "."+filepath.Base(target)+tempMark+"*")
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if !IsTemp(filepath.Base(f.Name())) {
			t.Fatalf("IsTemp(%q) = false", filepath.Base(f.Name()))
		}
		temps = append(temps, f.Name())
	}
	if err := RemoveTemps(dir); err != nil {
		t.Fatal(err)
	}
	for _, p := range temps {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived RemoveTemps (stat: %v)", p, err)
		}
	}
	for _, p := range keep {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("RemoveTemps removed %s, not a temporary file: %v", p, err)
		}
	}
	if err := RemoveTemps(filepath.Join(dir, "absent")); err != nil {
		t.Errorf("RemoveTemps of a missing directory: %v", err)
	}
}
