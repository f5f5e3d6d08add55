package epk_test

import (
	"math"
	"testing"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/internal/fixtures"
	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/tensor"
)

// TestFeaturesIntoReuses evaluates the features of two steps of a modulo
// oracle fixture into one buffer: each result must be the buffer itself
// and equal, bit for bit, to a fresh Features of the same step (no value of
// the previous step may survive), and a buffer of another batch size must
// be replaced, not written out of shape.
func TestFeaturesIntoReuses(t *testing.T) {
	path := fixtures.Oracles(t, models.ModuloArch)[0]
	r, m := moduloRunAt(t, path)
	if len(r.ups) < 2 {
		t.Fatalf("fixture %s has %d steps, want 2", path, len(r.ups))
	}
	ev, err := epk.NewEvaluator[float64](m, epk.Options{Quadrature: epk.Quadrature{Rule: epk.Exact, Points: 3}})
	if err != nil {
		t.Fatal(err)
	}
	x := r.xTest
	var buf *epk.Features[float64]
	for s, u := range r.ups[:2] {
		fresh, _, err := ev.Features(u, x, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := ev.FeaturesInto(buf, u, x, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if buf != nil && got != buf {
			t.Errorf("step %d: FeaturesInto allocated instead of reusing a buffer of the right shape", s)
		}
		nonzero := 0
		for j := range fresh.Phi {
			if !tensor.SameShape(got.Phi[j].Shape, fresh.Phi[j].Shape) {
				t.Fatalf("step %d: %s has shape %v, want %v", s, got.Names[j], got.Phi[j].Shape, fresh.Phi[j].Shape)
			}
			for i, v := range fresh.Phi[j].Data {
				w := got.Phi[j].Data[i]
				if w != v && !(math.IsNaN(v) && math.IsNaN(w)) {
					t.Fatalf("step %d: %s[%d] is %v into the buffer, %v fresh", s, got.Names[j], i, w, v)
				}
				if v != 0 {
					nonzero++
				}
			}
		}
		if nonzero == 0 {
			t.Fatalf("step %d: every feature is zero", s)
		}
		buf = got
	}
	// One sample fewer: the buffer does not fit and is left alone.
	small := &tensor.Dense[float64]{Shape: append([]int{x.Shape[0] - 1}, x.Shape[1:]...), Data: x.Data[:len(x.Data)/x.Shape[0]*(x.Shape[0]-1)]}
	before := buf.Phi[0].Data[0]
	got, _, err := ev.FeaturesInto(buf, r.ups[0], small, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got == buf || got.Samples != x.Shape[0]-1 || buf.Phi[0].Data[0] != before {
		t.Errorf("a buffer for %d samples was used for %d", buf.Samples, got.Samples)
	}
}
