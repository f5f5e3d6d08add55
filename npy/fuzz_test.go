package npy

import (
	"path/filepath"
	"testing"

	"github.com/explaind/explaind/internal/fuzzcheck"
)

// FuzzRead reads arbitrary bytes as a .npy file. No input may panic; an
// error names the file; a file that reads holds exactly the values its
// shape declares; and reading allocates in proportion to the file (float32
// data is read, then widened to float64, by Read and again by ReadInts),
// not to the shape its header claims. The seeds
// in testdata/fuzz/FuzzRead are files WriteFile wrote, numpy-style headers
// and damaged copies of them.
func FuzzRead(f *testing.F) {
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "fuzz.npy")
		fuzzcheck.WriteFile(t, path, b)
		fuzzcheck.Bounded(t, len(b), 16, func() {
			a, err := Read(path)
			fuzzcheck.NamesFile(t, err, path)
			if err == nil {
				if n, ok := fuzzcheck.Numel(a.Shape); !ok || n != len(a.Data) {
					t.Errorf("shape %v with %d values", a.Shape, len(a.Data))
				}
			}
			ints, shape, err := ReadInts(path)
			fuzzcheck.NamesFile(t, err, path)
			if err == nil {
				if n, ok := fuzzcheck.Numel(shape); !ok || n != len(ints) {
					t.Errorf("ReadInts: shape %v with %d values", shape, len(ints))
				}
			}
		})
	})
}
