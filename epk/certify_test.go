package epk_test

import (
	"math"
	"testing"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/internal/fixtures"
	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/tensor"
)

// certifyRun evaluates every step of r at tolerances 1e-4 and 1e-6 with
// rule q and checks that every step's completeness residual ends at most
// the tolerance for every test sample and class, and that the results say
// so.
func certifyRun(t *testing.T, what string, r *run, model epk.PathModel[float64], q epk.Quadrature, x *tensor.Dense[float64]) {
	for _, tol := range []float64{1e-4, 1e-6} {
		q.Tol = tol
		ev, err := epk.NewEvaluator(model, epk.Options{Quadrature: q})
		if err != nil {
			t.Fatal(err)
		}
		var worst float64
		nodes, refined := 0, 0
		for s, u := range r.ups {
			res, err := ev.Contributions(u, x, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range res.Completeness.Data {
				if !(math.Abs(v) <= tol) {
					t.Errorf("%s, Tol %g, step %d: completeness %.3g of (sample %d, class %d)", what, tol, s, v, i/res.Change.Shape[1], i%res.Change.Shape[1])
				}
			}
			if !res.Certified || len(res.Missed) != 0 {
				t.Errorf("%s, Tol %g, step %d: certified %v, misses %v", what, tol, s, res.Certified, res.Missed)
			}
			worst = math.Max(worst, res.MaxCompleteness)
			nodes += len(res.Plan.Nodes)
			refined += res.Stats.Refined
		}
		t.Logf("%s, Tol %g: max completeness %.3g over %d steps, %.1f nodes per sample and step, %d intervals refined by the measured check",
			what, tol, worst, len(r.ups), float64(nodes)/float64(len(r.ups)*x.Shape[0]), refined)
	}
}

// TestCertifiedModulo checks the transformer's adaptive rule (switching
// points located, 2 Gauss–Legendre points per piece, as explaind epk's
// adaptive) on every step of the modulo oracle fixtures.
func TestCertifiedModulo(t *testing.T) {
	fixtures.EachOracle(t, models.ModuloArch, func(t *testing.T, path string) {
		r, m := moduloRunAt(t, path)
		certifyRun(t, "modulo", r, m, epk.Quadrature{Rule: epk.Exact, Points: 2, Grid: 4}, r.xTest)
	})
}

// TestCertifiedCNN checks the CNN's adaptive rule (bisection, Simpson's
// rule per interval, as explaind epk's adaptive, and 3 Gauss–Legendre
// points per interval) on every step of the ResNet-9 oracle fixtures
// through the model's path methods.
func TestCertifiedCNN(t *testing.T) {
	fixtures.EachOracle(t, models.ResNet9Arch, func(t *testing.T, path string) {
		r, m := cnnRunAt(t, path)
		certifyRun(t, "resnet9", r, m, epk.Quadrature{Rule: epk.Adaptive, Points: 3}, r.xTest)
		certifyRun(t, "resnet9, Simpson intervals", r, m, epk.Quadrature{Rule: epk.Adaptive, Points: 3, Ends: true}, r.xTest)
	})
}
