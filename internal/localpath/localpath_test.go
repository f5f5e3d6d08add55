package localpath_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/internal/localpath"
)

func TestCheck(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "out")
	for _, d := range []string{dir, filepath.Join(dir, "sub")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(parent, "secret"), filepath.Join(dir, "a.npy")} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"out.npy":     "../secret",                     // relative, climbs out
		"abs.npy":     filepath.Join(parent, "secret"), // absolute target
		"in.npy":      "a.npy",                         // stays inside
		"sub/up.npy":  "../a.npy",                      // climbs, but stays inside
		"outdir":      parent,                          // a directory outside
		"dangling.np": "../missing",                    // points outside at nothing
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"a.npy", "in.npy", "sub/up.npy", "missing.npy", "sub/missing.npy"} {
		if err := localpath.Check(dir, name); err != nil {
			t.Errorf("Check(%q): %v, want nil", name, err)
		}
	}
	for _, name := range []string{"../secret", "/etc/passwd", "", "sub/../../secret", "out.npy", "abs.npy", "outdir/secret", "dangling.np"} {
		err := localpath.Check(dir, name)
		if err == nil || !strings.Contains(err.Error(), "not a path inside "+dir) || !strings.Contains(err.Error(), name) {
			t.Errorf("Check(%q): %v, want an error naming it and saying it is not inside %s", name, err, dir)
		}
	}
}

func TestReadFile(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "out")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(parent, "secret"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "summary.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../secret", filepath.Join(dir, "progress.json")); err != nil {
		t.Fatal(err)
	}
	if b, err := localpath.ReadFile(dir, "summary.json"); err != nil || string(b) != "{}" {
		t.Errorf("ReadFile(summary.json) = %q, %v", b, err)
	}
	if b, err := localpath.ReadFile(dir, "progress.json"); err == nil || !strings.Contains(err.Error(), `"progress.json" is not a path inside`) {
		t.Errorf("ReadFile of a link leading out = %q, %v; want an error naming it", b, err)
	}
	if _, err := localpath.ReadFile(dir, "missing.json"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile of a missing file: %v, want fs.ErrNotExist", err)
	}
}

func TestMissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "none")
	if err := localpath.Check(dir, "a.npy"); err != nil {
		t.Errorf("Check in a missing directory: %v", err)
	}
	if err := localpath.Check(dir, "../a.npy"); err == nil {
		t.Error("Check in a missing directory accepts ../a.npy")
	}
	if _, err := localpath.ReadFile(dir, "a.npy"); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), filepath.Join(dir, "a.npy")) {
		t.Errorf("ReadFile in a missing directory: %v, want fs.ErrNotExist naming the file", err)
	}
}
