package epkfile_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/internal/fuzzcheck"
	"github.com/explaind/explaind/npy"
)

// FuzzOpen reads arbitrary bytes as an EPK output's manifest.json, in a
// directory holding a float64 array f0.npy [2, 3], an int64 array
// test_indices.npy [2] and a directory sub.npy. No input may panic; every
// error of Open names the manifest; reading allocates in proportion to
// the manifest. An output that opens names as arrays only paths inside
// its directory (Array and Ints read them whole, so ../../dev/zero or a
// FIFO elsewhere would never end), and its arrays, presets and tensors
// can be asked for (Array, Ints, Require, CheckRun), each error naming
// the output or the array's file. The seeds in testdata/fuzz/FuzzOpen
// are a manifest Writer wrote and edited copies.
func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	if err := npy.WriteFile(filepath.Join(dir, "f0.npy"), []int{2, 3}, []float64{1, 2, 3, 4, 5, 6}); err != nil {
		f.Fatal(err)
	}
	if err := npy.WriteFile(filepath.Join(dir, "test_indices.npy"), []int{2}, []int64{4, 1}); err != nil {
		f.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub.npy"), 0o755); err != nil {
		f.Fatal(err)
	}
	m := run()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "manifest.json")
		fuzzcheck.WriteFile(t, path, b)
		var o *epkfile.Output
		fuzzcheck.Bounded(t, len(b), 64, func() {
			var err error
			o, err = epkfile.Open(dir)
			fuzzcheck.NamesFile(t, err, path)
		})
		if o == nil {
			return
		}
		names := make([]string, 0, len(o.Manifest.Arrays))
		for name, info := range o.Manifest.Arrays {
			if !filepath.IsLocal(info.File) {
				t.Errorf("array %q is stored in %q, outside the output", name, info.File)
			}
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range append(names[:min(len(names), 8)], "nope") {
			file := o.Manifest.Arrays[name].File
			if _, err := o.Array(name); err != nil && !strings.Contains(err.Error(), dir) && (file == "" || !strings.Contains(err.Error(), file)) {
				t.Errorf("Array(%q): the error names neither the output nor %q: %v", name, file, err)
			}
			if _, err := o.Ints(name); err != nil && !strings.Contains(err.Error(), dir) && (file == "" || !strings.Contains(err.Error(), file)) {
				t.Errorf("Ints(%q): the error names neither the output nor %q: %v", name, file, err)
			}
		}
		for _, p := range epkfile.Presets {
			fuzzcheck.NamesFile(t, o.Require(p), dir)
		}
		o.CheckRun(m)
	})
}
