package atomicfile

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestSetFault: a write the hook fails leaves the old file and no
// temporary file, its error names the file and wraps the hook's; other
// paths, and every path once the hook is restored, are written.
func TestSetFault(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.gob")
	other := filepath.Join(dir, "other")
	if err := WriteBytes(path, []byte("old")); err != nil {
		t.Fatal(err)
	}
	restore := SetFault(func(p string) error {
		if p == path {
			return syscall.ENOSPC
		}
		return nil
	})
	err := WriteBytes(path, bytes.Repeat([]byte("new"), 1000))
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), path) {
		t.Errorf("faulted write: %v, want ENOSPC naming %s", err, path)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("after the failed write the file holds %q, want the old contents", b)
	}
	if err := WriteBytes(other, []byte("x")); err != nil {
		t.Errorf("a path the hook passes: %v", err)
	}
	restore()
	if err := WriteBytes(path, []byte("new")); err != nil {
		t.Errorf("after restore: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("%d entries in the directory, want 2 (no temporary file)", len(entries))
	}
}

// TestFullDisk fills a small tmpfs (mounted by the test, so only as root
// where mounting is allowed) and checks that a write that does not fit
// fails with ENOSPC, keeps the old file and leaves no temporary file.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	path := filepath.Join(dir, "f.npy")
	if err := WriteBytes(path, []byte("old")); err != nil {
		t.Fatal(err)
	}
	err := WriteBytes(path, make([]byte, 1<<20))
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), path) {
		t.Errorf("a write larger than the disk: %v, want ENOSPC naming %s", err, path)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("after the failed write the file holds %d bytes, want the old contents", len(b))
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("%d entries on the disk, want 1 (no temporary file)", len(entries))
	}
	if err := WriteBytes(path, []byte("new")); err != nil {
		t.Errorf("a write that fits after the failure: %v", err)
	}
}
