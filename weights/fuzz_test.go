package weights_test

import (
	"slices"
	"testing"

	"github.com/explaind/explaind/internal/fuzzcheck"
	"github.com/explaind/explaind/weights"
)

// FuzzParse parses arbitrary bytes as a safetensors file and reads every
// tensor it holds as float32, float64 and ints, and loads it strictly into
// params32's parameters. No input may panic; every error names the file; a
// tensor that reads holds exactly the values its shape declares, and
// parsing allocates in proportion to the file (the JSON header's maps and
// arrays, and float32 data widened to float64, dominate). The seeds in
// testdata/fuzz/FuzzParse are files Save wrote, an integer tensor and
// damaged copies.
func FuzzParse(f *testing.F) {
	const name = "fuzz.safetensors"
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzcheck.Bounded(t, len(b), 64, func() {
			wf, err := weights.Parse(name, b)
			fuzzcheck.NamesFile(t, err, name)
			if err != nil {
				return
			}
			wf.Metadata()
			for _, n := range wf.Names() {
				if !wf.Has(n) {
					t.Errorf("Names lists %q, Has denies it", n)
				}
				shape, err := wf.Shape(n)
				if err != nil {
					t.Fatalf("Shape(%q): %v", n, err)
				}
				numel, ok := fuzzcheck.Numel(shape)
				if !ok {
					t.Errorf("tensor %q has shape %v", n, shape)
				}
				check := func(what string, got []int, values int) {
					if !slices.Equal(got, shape) || values != numel {
						t.Errorf("%s(%q): shape %v with %d values, the file says %v", what, n, got, values, shape)
					}
				}
				if a, err := weights.Get[float32](wf, n); err != nil {
					fuzzcheck.NamesFile(t, err, name)
				} else {
					check("Get[float32]", a.Shape, len(a.Data))
				}
				if a, err := weights.Get[float64](wf, n); err != nil {
					fuzzcheck.NamesFile(t, err, name)
				} else {
					check("Get[float64]", a.Shape, len(a.Data))
				}
				if ints, s, err := wf.Ints(n); err != nil {
					fuzzcheck.NamesFile(t, err, name)
				} else {
					check("Ints", s, len(ints))
				}
			}
			fuzzcheck.NamesFile(t, weights.LoadParams(wf, "", fresh()), name)
		})
	})
}
