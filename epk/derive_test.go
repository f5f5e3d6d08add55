package epk_test

import (
	"math"
	"strings"
	"testing"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/internal/fixtures"
	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// TestContributionsFromFeatures checks Evaluate's reverse-mode-only path on
// every step of the ResNet-9 oracle fixtures (through the model's path
// rules): with the identity among the cotangents, the contributions
// derived from the features, Σ_j ⟨φ_j[b, c], v_j⟩, must equal the
// forward-mode pass's at the same plan to rounding, the completeness must
// meet Tol for every sample and class, and no JVP row may be evaluated.
// Cotangents without a unit row for every class take the forward-mode pass.
// The rule is explaind's for CNNs, Simpson intervals, whose planning
// evaluates each final node once and no other: in reverse mode, holding
// the node's gradients for the features (no single-tangent row).
func TestContributionsFromFeatures(t *testing.T) {
	fixtures.EachOracle(t, models.ResNet9Arch, func(t *testing.T, path string) {
		r, m := cnnRunAt(t, path)
		const tol = 1e-5
		ev, err := epk.NewEvaluator[float64](m, epk.Options{Quadrature: epk.Quadrature{Rule: epk.Adaptive, Points: 3, Ends: true, Tol: tol}, PerTensor: true})
		if err != nil {
			t.Fatal(err)
		}
		const nTest = 2
		x := &tensor.Dense[float64]{Shape: append([]int{nTest}, r.xTest.Shape[1:]...), Data: r.xTest.Data[:nTest*len(r.xTest.Data)/r.xTest.Shape[0]]}
		var worst float64
		for s, u := range r.ups {
			res, err := ev.Evaluate(u, x, epk.Request[float64]{Features: true})
			if err != nil {
				t.Fatal(err)
			}
			if res.Stats.JVPRows != 0 || res.Stats.BackwardRows != len(res.Plan.Nodes) {
				t.Errorf("step %d: %d JVP rows and %d backward rows for %d nodes, want none and one per node", s, res.Stats.JVPRows, res.Stats.BackwardRows, len(res.Plan.Nodes))
			}
			if res.Stats.DerivRows != 0 {
				t.Errorf("step %d: %d single-tangent rows for %d final nodes, want none (their gradients held)", s, res.Stats.DerivRows, len(res.Plan.Nodes))
			}
			if res.Stats.ForwardRows != 1 {
				t.Errorf("step %d: %d forward rows, want the class count's alone (the end values come from the plan)", s, res.Stats.ForwardRows)
			}
			if !res.Certified || len(res.Missed) != 0 {
				t.Errorf("step %d: certified %v, misses %v", s, res.Certified, res.Missed)
			}
			for i, v := range res.Completeness.Data {
				if !(math.Abs(v) <= tol) {
					t.Errorf("step %d: completeness %.3g of (sample %d, class %d), want ≤ %g", s, v, i/res.Change.Shape[1], i%res.Change.Shape[1], tol)
				}
			}
			fw, err := ev.Contributions(u, x, res.Plan)
			if err != nil {
				t.Fatal(err)
			}
			if fw.Stats.JVPRows != len(res.Plan.Nodes) {
				t.Errorf("step %d: the forward-mode pass evaluated %d JVP rows at a plan of %d nodes", s, fw.Stats.JVPRows, len(res.Plan.Nodes))
			}
			// The end values the plan evaluated are the model's outputs at
			// θ_s and θ_s + Δθ_s, as the forward-mode pass evaluates them.
			for k, p := range [][2]*tensor.Dense[float64]{{res.Before, fw.Before}, {res.After, fw.After}} {
				if d, _ := tensor.MaxAbsDiff(p[0].Data, p[1].Data); !(d <= 1e-12) {
					t.Errorf("step %d: end value %d differs from the forward pass's by %.3g", s, k, d)
				}
			}
			// Same nodes: the two differ by rounding, against the scale of
			// the step's change.
			scale := math.Max(res.MaxChange, 1e-300)
			pairs := [][2]*tensor.Dense[float64]{{res.Data, fw.Data}, {res.Reg, fw.Reg}, {res.Resid, fw.Resid}}
			for j := range res.Tensor {
				pairs = append(pairs, [2]*tensor.Dense[float64]{res.Tensor[j], fw.Tensor[j]})
			}
			for k, p := range pairs {
				d, _ := tensor.MaxAbsDiff(p[0].Data, p[1].Data)
				if !(d <= 1e-10*scale) {
					t.Errorf("step %d: part %d derived from the features differs from the forward-mode pass by %.3g (|change| %.3g)", s, k, d, res.MaxChange)
				}
				worst = math.Max(worst, d/scale)
			}
			if res.MaxChange == 0 && res.MaxCompleteness != 0 {
				t.Errorf("step %d: a zero step has completeness %.3g", s, res.MaxCompleteness)
			}
		}
		t.Logf("contributions derived from the features agree with the forward-mode pass to %.2g of the step's change over %d steps", worst, len(r.ups))

		// The identity among other cotangents, per sample; and cotangents
		// that lack it.
		u := r.ups[len(r.ups)-1]
		base, err := ev.Evaluate(u, x, epk.Request[float64]{Features: true})
		if err != nil {
			t.Fatal(err)
		}
		C := base.Change.Shape[1]
		cot := tensor.New[float64](nTest, C+1, C)
		for b := 0; b < nTest; b++ {
			for c := 0; c < C; c++ {
				cot.Data[(b*(C+1))*C+c] = 1           // row 0: the class sum
				cot.Data[(b*(C+1)+1+(C-1-c))*C+c] = 1 // rows 1…C: the identity, reversed
			}
		}
		mixed, err := ev.Evaluate(u, x, epk.Request[float64]{Features: true, Cotangents: cot})
		if err != nil {
			t.Fatal(err)
		}
		if mixed.Stats.JVPRows != 0 {
			t.Errorf("cotangents holding the identity among other rows took the forward-mode pass (%d JVP rows)", mixed.Stats.JVPRows)
		}
		if d, _ := tensor.MaxAbsDiff(mixed.Data.Data, base.Data.Data); !(d <= 1e-10*math.Max(base.MaxChange, 1e-300)) {
			t.Errorf("the identity's rows in another order give data contributions %.3g off", d)
		}
		ones := tensor.New[float64](1, C)
		for c := range ones.Data {
			ones.Data[c] = 1
		}
		summed, err := ev.Evaluate(u, x, epk.Request[float64]{Features: true, Cotangents: ones})
		if err != nil {
			t.Fatal(err)
		}
		if summed.Stats.JVPRows == 0 {
			t.Errorf("cotangents without the identity derived their contributions from the features")
		}
		if d, _ := tensor.MaxAbsDiff(summed.Data.Data, base.Data.Data); !(d <= 1e-6*math.Max(base.MaxChange, 1e-300)) {
			t.Errorf("the forward-mode pass and the derived contributions differ by %.3g", d)
		}
	})
}

// TestHeldGradients checks that holding the planning nodes' gradients
// (Options.MaxHeldGrads) changes the work, not the result: on every step
// of the ResNet-9 oracle fixtures, evaluations that hold every node's
// gradients, none, room for only 5 nodes (the rest planned by JVP and
// their features by a backward pass of their own), and every node's in
// the general form rather than the two-class log-probability one (the
// model's LogProbModel claim hidden), each certify Tol, each evaluate one
// backward row per final node and one single-tangent row per node not
// held, and agree with the first: at equal plans to rounding (features and
// contributions), otherwise within the tolerance. A model that claims
// log-probabilities it does not output is refused.
func TestHeldGradients(t *testing.T) {
	fixtures.EachOracle(t, models.ResNet9Arch, func(t *testing.T, path string) {
		r, m := cnnRunAt(t, path)
		const tol = 1e-5
		const nTest = 2
		P := 0
		for _, p := range m.Params() {
			P += len(p.Value.Data)
		}
		x := &tensor.Dense[float64]{Shape: append([]int{nTest}, r.xTest.Shape[1:]...), Data: r.xTest.Data[:nTest*len(r.xTest.Data)/r.xTest.Shape[0]]}
		q := epk.Quadrature{Rule: epk.Adaptive, Points: 3, Ends: true, Tol: tol}
		// Every node held, none, room for 5 nodes (of P values each, in
		// the two-class form: C = 2 known after the first evaluation), and
		// every node in the general form.
		var evs []*epk.Evaluator[float64]
		for _, held := range []int{0, -1} {
			ev, err := epk.NewEvaluator[float64](m, epk.Options{Quadrature: q, MaxHeldGrads: held})
			if err != nil {
				t.Fatal(err)
			}
			evs = append(evs, ev)
		}
		general, err := epk.NewEvaluator[float64](notLogProbs{m}, epk.Options{Quadrature: q})
		if err != nil {
			t.Fatal(err)
		}
		var worst float64
		samePlans := 0
		for s, u := range r.ups {
			var res []*epk.StepResult[float64]
			for i := 0; i < 4; i++ {
				if i == len(evs) {
					if C := res[0].Change.Shape[1]; C != 2 {
						t.Fatalf("the fixture's model has %d classes, want 2", C)
					}
					ev, err := epk.NewEvaluator[float64](m, epk.Options{Quadrature: q, MaxHeldGrads: 5 * P})
					if err != nil {
						t.Fatal(err)
					}
					evs = append(evs, ev, general)
				}
				rs, err := evs[i].Evaluate(u, x, epk.Request[float64]{Features: true})
				if err != nil {
					t.Fatal(err)
				}
				nodes := len(rs.Plan.Nodes)
				if !rs.Certified || !(rs.MaxCompleteness <= tol) {
					t.Errorf("step %d, evaluation %d: certified %v, completeness %.3g", s, i, rs.Certified, rs.MaxCompleteness)
				}
				if rs.Stats.BackwardRows != nodes || rs.Stats.JVPRows != 0 {
					t.Errorf("step %d, evaluation %d: %d backward and %d JVP rows for %d nodes, want one backward row per node", s, i, rs.Stats.BackwardRows, rs.Stats.JVPRows, nodes)
				}
				switch held := nodes - rs.Stats.DerivRows; {
				case (i == 0 || i == 3) && held != nodes, i == 1 && held != 0, i == 2 && held != min(5, nodes):
					t.Errorf("step %d, evaluation %d: %d of %d nodes held (%d single-tangent rows)", s, i, held, nodes, rs.Stats.DerivRows)
				}
				res = append(res, rs)
			}
			scale := math.Max(res[0].MaxChange, 1e-300)
			for i, rs := range res[1:] {
				bound := 2 * tol
				if equalNodes(rs.Plan.Nodes, res[0].Plan.Nodes) {
					bound = 1e-10 * scale
					samePlans++
					for j := range rs.Features.Phi {
						a, b := rs.Features.Phi[j].Data, res[0].Features.Phi[j].Data
						d, _ := tensor.MaxAbsDiff(a, b)
						if !(d <= 1e-10*(1+maxAbs(b))) {
							t.Errorf("step %d, evaluation %d: features of %s differ by %.3g at equal plans", s, i+1, rs.Features.Names[j], d)
						}
					}
				}
				for k, p := range [][2]*tensor.Dense[float64]{{rs.Data, res[0].Data}, {rs.Reg, res[0].Reg}, {rs.Resid, res[0].Resid}} {
					d, _ := tensor.MaxAbsDiff(p[0].Data, p[1].Data)
					if !(d <= bound) {
						t.Errorf("step %d, evaluation %d: part %d differs by %.3g from the one holding every node (bound %.3g)", s, i+1, k, d, bound)
					}
					if bound < tol {
						worst = math.Max(worst, d/scale)
					}
				}
			}
		}
		t.Logf("%d of %d comparisons at equal plans, agreeing to %.2g of the step's change", samePlans, 3*len(r.ups), worst)
		if samePlans == 0 {
			t.Errorf("no evaluation planned the nodes of the one holding every node's gradients")
		}

		lying, err := epk.NewEvaluator[float64](shiftedOutputs{m}, epk.Options{Quadrature: q})
		if err != nil {
			t.Fatal(err)
		}
		_, err = lying.Evaluate(r.ups[0], x, epk.Request[float64]{Features: true})
		if err == nil || !strings.Contains(err.Error(), "log-probability") {
			t.Errorf("a model claiming log-probabilities that sum to e: error %v, want one naming the claim", err)
		}
	})
}

// notLogProbs hides the ResNet-9's log-probability claim (LogProbModel).
type notLogProbs struct{ *models.ResNet9[float64] }

func (notLogProbs) LogProbabilities() bool { return false }

// shiftedOutputs adds 1 to the ResNet-9's log-probabilities and still
// claims log-probabilities.
type shiftedOutputs struct{ *models.ResNet9[float64] }

func (s shiftedOutputs) PathForward(x *tensor.Dense[float64], p *nn.Path[float64]) (*tensor.Dense[float64], nn.State, error) {
	y, st, err := s.ResNet9.PathForward(x, p)
	if err == nil {
		for i := range y.Data {
			y.Data[i]++
		}
	}
	return y, st, err
}

func equalNodes(a, b []epk.Node) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
