package data

import (
	"path/filepath"
	"testing"

	"github.com/explaind/explaind/internal/fuzzcheck"
)

// FuzzReadIDX reads arbitrary bytes, plain or gzipped (gzip), as an IDX
// images file and as an IDX labels file. No input may panic; every error
// names the file; images that read hold exactly the n·rows·cols bytes
// their dimensions declare; and reading allocates in proportion to the
// data, not to the dimensions the header claims. The seeds in
// testdata/fuzz/FuzzReadIDX are small image and label files and damaged
// copies.
func FuzzReadIDX(f *testing.F) {
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte, gzipped bool) {
		path := filepath.Join(dir, "fuzz-idx-ubyte")
		file := b
		if gzipped {
			file = gz(t, b)
		}
		fuzzcheck.WriteFile(t, path, file)
		fuzzcheck.Bounded(t, len(b), 16, func() {
			n, rows, cols, pix, err := ReadIDXImages(path)
			fuzzcheck.NamesFile(t, err, path)
			if err == nil {
				if size, ok := fuzzcheck.Numel([]int{n, rows, cols}); !ok || size != len(pix) {
					t.Errorf("%d images of %d×%d with %d pixel bytes", n, rows, cols, len(pix))
				}
			}
			labels, err := ReadIDXLabels(path)
			fuzzcheck.NamesFile(t, err, path)
			if err == nil && len(labels) > len(b) {
				t.Errorf("%d labels from %d bytes", len(labels), len(b))
			}
		})
	})
}

// FuzzReadCIFARFile reads arbitrary bytes as a CIFAR-10 batch file. No
// input may panic; every error names the file; a file that reads yields
// one label 0..9 and 3072 pixel bytes per 3073-byte record. The seeds in
// testdata/fuzz/FuzzReadCIFARFile are a two-record file and damaged
// copies.
func FuzzReadCIFARFile(f *testing.F) {
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "data_batch_1.bin")
		fuzzcheck.WriteFile(t, path, b)
		fuzzcheck.Bounded(t, len(b), 4, func() {
			pix, labels, err := ReadCIFARFile(path)
			fuzzcheck.NamesFile(t, err, path)
			if err != nil {
				return
			}
			if len(labels)*CIFARRecordSize != len(b) || len(pix) != len(labels)*(CIFARRecordSize-1) {
				t.Errorf("%d bytes read as %d labels and %d pixel bytes", len(b), len(labels), len(pix))
			}
			for i, y := range labels {
				if y > 9 {
					t.Errorf("label %d of record %d", y, i)
				}
			}
		})
	})
}

// FuzzReadModuloCSV reads arbitrary bytes as a modulo split for modulus p.
// No input may panic; every error names the file; a split that reads holds
// valid pairs only, and writing it back and reading it again gives the
// same split. The seeds in testdata/fuzz/FuzzReadModuloCSV are splits
// WriteCSV wrote and damaged copies.
func FuzzReadModuloCSV(f *testing.F) {
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte, p int) {
		path := filepath.Join(dir, "split.csv")
		fuzzcheck.WriteFile(t, path, b)
		var s *ModuloSplit
		fuzzcheck.Bounded(t, len(b), 16, func() {
			var err error
			s, err = ReadModuloCSV(path, p, "fuzz")
			fuzzcheck.NamesFile(t, err, path)
		})
		if s == nil {
			return
		}
		for i, q := range s.Pairs {
			// a+b may overflow an int for p near the int range; not a uint64.
			if q.A < 0 || q.B < q.A || q.B >= p || uint64(q.Label) != (uint64(q.A)+uint64(q.B))%uint64(p) {
				t.Fatalf("pair %d is %+v for p = %d", i, q, p)
			}
		}
		again := filepath.Join(dir, "again.csv")
		if err := s.WriteCSV(again); err != nil {
			t.Fatal(err)
		}
		back, err := ReadModuloCSV(again, p, "fuzz")
		if err != nil {
			t.Fatalf("a split that read does not read back: %v", err)
		}
		if len(back.Pairs) != len(s.Pairs) {
			t.Fatalf("%d pairs read back as %d", len(s.Pairs), len(back.Pairs))
		}
		for i := range s.Pairs {
			if back.Pairs[i] != s.Pairs[i] {
				t.Fatalf("pair %d read back as %+v, was %+v", i, back.Pairs[i], s.Pairs[i])
			}
		}
	})
}
