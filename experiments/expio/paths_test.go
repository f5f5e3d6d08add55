package expio_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/experiments/expio"
)

// TestReadOutput: a file of an output directory is read back; a name that
// leads out of it (absolute, "..", a symbolic link) is refused, naming it.
func TestReadOutput(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "out")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := expio.WriteJSON(filepath.Join(dir, "summary.json"), map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(parent, "secret.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../secret.json", filepath.Join(dir, "progress.json")); err != nil {
		t.Fatal(err)
	}
	if b, err := expio.ReadOutput(dir, "summary.json"); err != nil || !strings.Contains(string(b), `"a": 1`) {
		t.Errorf("ReadOutput(summary.json) = %q, %v", b, err)
	}
	for _, name := range []string{"progress.json", "../secret.json", filepath.Join(parent, "secret.json")} {
		if b, err := expio.ReadOutput(dir, name); err == nil || !strings.Contains(err.Error(), "not a path inside "+dir) || !strings.Contains(err.Error(), name) {
			t.Errorf("ReadOutput(%q) = %q, %v; want an error naming it", name, b, err)
		}
	}
	if _, err := expio.ReadOutput(dir, "missing.json"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadOutput of a missing file: %v, want fs.ErrNotExist", err)
	}
}
