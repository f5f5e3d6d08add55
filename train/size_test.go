package train

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/explaind/explaind/internal/lock"
)

// TestDirSizeLeavesOutLockFiles: a run's bytes on disk are its files',
// not the lock file's its writer holds while it measures them.
func TestDirSizeLeavesOutLockFiles(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "checkpoints"), 0o755)
	os.WriteFile(filepath.Join(dir, "manifest.json"), make([]byte, 100), 0o644)
	os.WriteFile(filepath.Join(dir, "checkpoints", "c"), make([]byte, 20), 0o644)
	l, err := lock.Dir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if n := dirSize(dir); n != 120 {
		t.Errorf("dirSize = %d, want 120", n)
	}
}
