package epk_test

import (
	"fmt"
	"github.com/explaind/explaind/internal/fixtures"
	"math"
	"strings"
	"testing"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/tensor"
)

// probeRow is one step of a quadrature probe: the step's largest change
// and each rule's completeness error (max abs over samples and classes).
type probeRow struct {
	change float64
	errs   []float64
	note   string
}

// probe evaluates every step of r with each rule and returns the table
// and the results, by step and rule.
func probe(t *testing.T, r *run, model epk.PathModel[float64], rules []epk.Quadrature) ([]probeRow, [][]*epk.StepResult[float64]) {
	t.Helper()
	var rows []probeRow
	var all [][]*epk.StepResult[float64]
	evs := make([]*epk.Evaluator[float64], len(rules))
	for i, q := range rules {
		ev, err := epk.NewEvaluator[float64](model, epk.Options{Quadrature: q})
		if err != nil {
			t.Fatal(err)
		}
		evs[i] = ev
	}
	B := r.xTest.Shape[0]
	for _, u := range r.ups {
		var row probeRow
		var step []*epk.StepResult[float64]
		for _, ev := range evs {
			res, err := ev.Contributions(u, r.xTest, nil)
			if err != nil {
				t.Fatal(err)
			}
			step = append(step, res)
			row.change = res.MaxChange
			row.errs = append(row.errs, res.MaxCompleteness)
			if q := ev.Options().Quadrature; q.Rule == epk.Exact || q.Rule == epk.Adaptive {
				pieces := 0
				for _, p := range res.Plan.Pieces {
					pieces += p
				}
				row.note += fmt.Sprintf(" %.1f / %.0f / %.0f+%.0f |",
					float64(pieces)/float64(B), float64(res.Stats.JVPRows)/float64(B),
					float64(res.Stats.DerivRows)/float64(B), float64(res.Stats.ForwardRows)/float64(B))
			}
		}
		rows = append(rows, row)
		all = append(all, step)
	}
	return rows, all
}

func logProbe(t *testing.T, title string, names, costNames []string, rows []probeRow) {
	t.Helper()
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s\n| step | max abs change | %s |\n", title, strings.Join(names, " | "))
	for s, r := range rows {
		fmt.Fprintf(&sb, "| %d | %.3g |", s, r.change)
		for _, e := range r.errs {
			fmt.Fprintf(&sb, " %.2g |", e)
		}
		sb.WriteString("\n")
	}
	if len(costNames) == 0 {
		t.Log(sb.String())
		return
	}
	fmt.Fprintf(&sb, "cost per sample (pieces / JVP rows with all tangents / single-tangent + forward rows of planning):\n| step | %s |\n", strings.Join(costNames, " | "))
	for s, r := range rows {
		fmt.Fprintf(&sb, "| %d |%s\n", s, r.note)
	}
	t.Log(sb.String())
}

// TestModuloProbe compares the rules on the modulo oracle's steps, like
// the argument of docs/method.md §4: the fixed rules converge like 1/n at
// best, since the integrand jumps; locating the switches reaches rounding
// level.
func TestModuloProbe(t *testing.T) {
	fixtures.EachOracle(t, models.ModuloArch, checkModuloProbe)
}

func checkModuloProbe(t *testing.T, path string) {
	r, m := moduloRunAt(t, path)
	names := []string{"midpoint 10", "midpoint 100", "Gauss–Legendre 8", "exact GL3 no check", "exact GL3", "exact GL4", "exact GL6", "adaptive GL4"}
	costNames := names[3:]
	rows, _ := probe(t, r, m, []epk.Quadrature{
		{Rule: epk.Midpoint, Points: 10}, {Rule: epk.Midpoint, Points: 100}, {Rule: epk.GaussLegendre, Points: 8},
		{Rule: epk.Exact, Points: 3, SkipCheck: true}, {Rule: epk.Exact, Points: 3}, {Rule: epk.Exact, Points: 4},
		{Rule: epk.Exact, Points: 6}, {Rule: epk.Adaptive, Points: 4},
	})
	logProbe(t, "completeness error |Σ contributions − (f(θ_{s+1}) − f(θ_s))|, max over 8 test samples × 13 classes:", names, costNames, rows)
	for s, row := range rows {
		mid10, mid100, gl8, exact := row.errs[0], row.errs[1], row.errs[2], row.errs[5]
		for i := 4; i < len(row.errs); i++ {
			if !(row.errs[i] <= 1e-12) {
				t.Errorf("step %d: %s has completeness error %.3g, want ≤ 1e-12", s, names[i], row.errs[i])
			}
		}
		if !(exact <= 1e-12) {
			t.Errorf("step %d: the exact rule's completeness error is %.3g, want ≤ 1e-12", s, exact)
		}
		if !(mid100 < mid10) {
			t.Errorf("step %d: midpoint 100 (%.3g) is not better than midpoint 10 (%.3g)", s, mid100, mid10)
		}
		if !(mid100 > 100*exact && gl8 > 100*exact) {
			t.Errorf("step %d: a fixed rule (midpoint 100 %.3g, GL 8 %.3g) is within 100× of the exact rule (%.3g): the integrand should jump", s, mid100, gl8, exact)
		}
	}
}

// TestRulesAgreeOnSmoothStep checks the fixed rules where they must be
// exact: along a stretch of a step where no switch changes sign, Gauss–
// Legendre 16 over the whole stretch matches the exact rule to rounding.
// It does not rely on a fixture having such steps: for every step and test
// sample it takes the step itself if the exact rule finds no switch in it
// for that sample, and otherwise the stretch [0, t₁/2] before the first
// switch t₁, as a step of its own (shortenedUpdate). That a switch does
// spoil the comparison is checked too, on the full steps with switches:
// there Gauss–Legendre 16 must be far off.
func TestRulesAgreeOnSmoothStep(t *testing.T) {
	fixtures.EachOracle(t, models.ModuloArch, checkRulesAgreeOnSmoothStep)
}

func checkRulesAgreeOnSmoothStep(t *testing.T, path string) {
	r, m := moduloRunAt(t, path)
	ex, err := epk.NewEvaluator[float64](m, epk.Options{Quadrature: epk.Quadrature{Rule: epk.Exact, Points: 8}})
	if err != nil {
		t.Fatal(err)
	}
	gl, err := epk.NewEvaluator[float64](m, epk.Options{Quadrature: epk.Quadrature{Rule: epk.GaussLegendre, Points: 16}})
	if err != nil {
		t.Fatal(err)
	}
	both := func(u *epk.Update[float64], x *tensor.Dense[float64]) (exact, fixed *epk.StepResult[float64]) {
		t.Helper()
		exact, err := ex.Contributions(u, x, nil)
		if err != nil {
			t.Fatal(err)
		}
		fixed, err = gl.Contributions(u, x, nil)
		if err != nil {
			t.Fatal(err)
		}
		return exact, fixed
	}
	B := r.xTest.Shape[0]
	smooth, whole, worst, worstSwitched := 0, 0, 0.0, 0.0
	for s, u := range r.ups {
		re, rg := both(u, r.xTest)
		C := re.Data.Shape[1]
		for b := 0; b < B; b++ {
			lo, hi := b*C, (b+1)*C
			if len(re.Plan.Switches[b]) > 0 {
				worstSwitched = math.Max(worstSwitched, tensor.RelErr(rg.Data.Data[lo:hi], re.Data.Data[lo:hi]))
			}
		}
		for b := 0; b < B; b++ {
			lo, hi := b*C, (b+1)*C
			es, gs, what := re.Data.Data[lo:hi], rg.Data.Data[lo:hi], "the whole step"
			if sw := re.Plan.Switches[b]; len(sw) > 0 {
				tau := sw[0] / 2
				x := tensor.GatherRows(r.xTest, []int{b}, 1)
				se, sg := both(shortenedUpdate(u, tau), x)
				if p := se.Plan.Pieces[0]; p != 1 {
					t.Fatalf("step %d, sample %d: the stretch [0, %.3g] before the first switch has %d pieces, want 1", s, b, tau, p)
				}
				es, gs, what = se.Data.Data, sg.Data.Data, fmt.Sprintf("[0, %.3g]", tau)
			} else {
				whole++
			}
			smooth++
			d := tensor.RelErr(gs, es)
			worst = math.Max(worst, d)
			if !(d <= 1e-12) {
				t.Errorf("step %d, sample %d, %s (one smooth piece): GL 16 and exact data contributions differ by %.3g (relative)", s, b, what, d)
			}
		}
	}
	t.Logf("%d smooth (step, sample) stretches (%d of them whole steps): GL 16 matches the exact rule to %.2g; across switches it is %.2g off", smooth, whole, worst, worstSwitched)
	if !(worstSwitched > 1e-9) {
		t.Errorf("GL 16 matches the exact rule to %.3g even across switches: the comparison cannot tell a switch", worstSwitched)
	}
}

// shortenedUpdate returns u restricted to [0, tau] of its path, as a step
// of its own: θ_s + t·tau·Δθ_s for t in [0, 1], with every part of Δθ_s
// (data, regularization, residual) scaled by tau.
func shortenedUpdate(u *epk.Update[float64], tau float64) *epk.Update[float64] {
	v := *u
	scale := func(ps []*tensor.Dense[float64]) []*tensor.Dense[float64] {
		out := make([]*tensor.Dense[float64], len(ps))
		for i, p := range ps {
			out[i] = p.Clone()
			for j := range out[i].Data {
				out[i].Data[j] *= tau
			}
		}
		return out
	}
	v.Delta, v.Data, v.Reg, v.Resid = scale(u.Delta), scale(u.Data), scale(u.Reg), scale(u.Resid)
	return &v
}
