package epkfile_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/epkfile"
)

// TestOpenRefusesArraysOutside checks that an output whose manifest stores
// an array outside its directory (an absolute name, "..", a symbolic link
// leading out, as the file or as a folder on its way) is refused when it
// is opened, naming the manifest and the array, and that a link inside the
// directory is not.
func TestOpenRefusesArraysOutside(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "epk")
	w, err := epkfile.NewWriter(dir, epkfile.Manifest{Presets: []string{epkfile.Validation}})
	if err != nil {
		t.Fatal(err)
	}
	if err := epkfile.Write(w, "f0", []float64{1, 2}, epkfile.ArrayInfo{Shape: []int{2}, Axes: []string{"test"}}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteManifest(true); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(parent, "secret.npy"), []byte("not yours"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"out.npy":    filepath.Join(parent, "secret.npy"),
		"outdir":     parent,
		"in.npy":     "f0.npy",
		"sub/up.npy": "../f0.npy",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	setFile := func(file string) {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		m["arrays"].(map[string]any)["f0"].(map[string]any)["file"] = file
		b, _ := json.Marshal(m)
		if err := os.WriteFile(filepath.Join(dir, "manifest.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, file := range []string{"../secret.npy", filepath.Join(parent, "secret.npy"), "", "out.npy", "outdir/secret.npy", "sub/../../secret.npy"} {
		setFile(file)
		_, err := epkfile.Open(dir)
		if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "manifest.json")) || !strings.Contains(err.Error(), `array "f0"`) ||
			!strings.Contains(err.Error(), "not a path inside") {
			t.Errorf("array file %q: got %v, want an error naming the manifest and the array", file, err)
		}
	}
	for _, file := range []string{"in.npy", "sub/up.npy"} {
		setFile(file)
		o, err := epkfile.Open(dir)
		if err != nil {
			t.Errorf("array file %q (a link inside the output): %v", file, err)
			continue
		}
		if a, err := o.Array("f0"); err != nil || a.Data[1] != 2 {
			t.Errorf("array file %q: read %v, %v", file, a, err)
		}
	}
}

// TestWriteRefusesNamesOutside checks that the writer refuses an array
// whose name would store it outside its directory, and writes nothing.
func TestWriteRefusesNamesOutside(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "epk")
	w, err := epkfile.NewWriter(dir, epkfile.Manifest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(parent, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"../escape", "link/escape", filepath.Join(parent, "escape")} {
		err := epkfile.Write(w, name, []float64{1}, epkfile.ArrayInfo{Shape: []int{1}})
		if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "not a path inside") {
			t.Errorf("Write(%q): got %v, want an error naming the array", name, err)
		}
		err = epkfile.WriteFloat32(w, name, []float64{1}, epkfile.ArrayInfo{Shape: []int{1}})
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("WriteFloat32(%q): got %v, want an error naming the array", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(parent, "escape.npy")); err == nil {
		t.Error("an array was written outside the output directory")
	}
	if len(w.Manifest.Arrays) != 0 {
		t.Errorf("refused arrays were recorded: %v", w.Manifest.Arrays)
	}
}
