package epk

import (
	"math"
	"strings"
	"testing"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

func TestGaussLegendreRule(t *testing.T) {
	for _, n := range []int{1, 2, 3, 4, 6, 8, 17, 64} {
		x, w := GaussLegendreRule(n)
		for deg := 0; deg <= 2*n-1; deg++ {
			var got float64
			for i := range x {
				got += w[i] * math.Pow(x[i], float64(deg))
			}
			if want := 1 / float64(deg+1); !(math.Abs(got-want) <= 1e-14) {
				t.Errorf("n = %d: ∫ t^%d = %.17g, want %.17g", n, deg, got, want)
			}
		}
		for i := 1; i < n; i++ {
			if !(x[i] > x[i-1]) {
				t.Errorf("n = %d: nodes not increasing: %v", n, x)
			}
		}
	}
	t.Log("Gauss–Legendre rules of 1..64 points integrate t^k on [0, 1] exactly for k ≤ 2n−1 (to 1e-14)")
}

// bisectRoot returns the sign change of f in [lo, hi] (f(lo) and f(hi) on
// opposite sides of the predicate f > 0) to the last bit, by bisection.
func bisectRoot(f func(float64) float64, lo, hi float64) float64 {
	pos := f(lo) > 0
	for {
		mid := lo + 0.5*(hi-lo)
		if mid <= lo || mid >= hi {
			return mid
		}
		if (f(mid) > 0) == pos {
			lo = mid
		} else {
			hi = mid
		}
	}
}

// TestBrent checks the root finder on smooth, kinked, steep and
// ill-conditioned sign changes: the evaluations it needs, and the
// accuracy of its final secant step. The bracket closes to 1e-13; the
// root it returns must be within acc of the sign change (found by
// bisection to the last bit), which the bracket's end alone is not.
func TestBrent(t *testing.T) {
	for i, c := range []struct {
		f      func(float64) float64
		lo, hi float64
		iters  int
		acc    float64
	}{
		{func(x float64) float64 { return math.Sin(3*x) - 0.4 + 0.3*x*x }, 0, 0.1875, 10, 1e-16},
		{func(x float64) float64 { return math.Max(0, x-0.05)*30 - 0.5*x - 0.01 }, 0, 0.1875, 15, 1e-16}, // a kink
		{func(x float64) float64 { return math.Exp(40*x) - 2 }, 0, 0.1875, 12, 1e-16},
		{func(x float64) float64 { return math.Pow(x-0.1, 3) + 1e-9*x }, 0, 0.1875, 60, 1e-15}, // near-triple root
	} {
		z := newBrent(c.lo, c.hi, c.f(c.lo), c.f(c.hi))
		n := 0
		var root float64
		for {
			x, done := z.propose(1e-13)
			if done {
				root = x
				break
			}
			z.fb = c.f(x)
			if n++; n > 200 {
				t.Fatalf("case %d: no convergence", i)
			}
		}
		// The sign changes within about the tolerance of the root.
		if (c.f(root-1e-13) > 0) == (c.f(root+1e-13) > 0) && c.f(root) != 0 {
			t.Errorf("case %d: %v is not within 1e-13 of a sign change", i, root)
		}
		if n > c.iters {
			t.Errorf("case %d: %d evaluations, want ≤ %d", i, n, c.iters)
		}
		exact := bisectRoot(c.f, c.lo, c.hi)
		if d := math.Abs(root - exact); !(d <= c.acc) {
			t.Errorf("case %d: root %.17g is %.3g from the sign change at %.17g, want ≤ %.0e", i, root, d, exact, c.acc)
		}
		t.Logf("case %d: root %.15f in %d evaluations, %.2g from the sign change", i, root, n, math.Abs(root-exact))
	}
}

// fakeSwitch is a one-parameter SwitchModel whose switch values are known
// functions of τ = θ + tΔθ (θ = 0, Δθ = 1 gives τ = t) and whose output is
// f(τ) = Σ_j relu(s_j(τ)), so that the Jacobian jumps where an s_j changes
// sign. The input is ignored.
type fakeSwitch struct {
	w  *nn.Param[float64]
	s  []func(float64) float64
	ds []func(float64) float64
}

func newFakeSwitch() *fakeSwitch {
	const c, r = 0.47, 0.004 // two roots 0.466 and 0.474, inside one grid interval
	return &fakeSwitch{
		w: &nn.Param[float64]{Name: "w", Value: tensor.New[float64](1)},
		s: []func(float64) float64{
			func(x float64) float64 { return (x-c)*(x-c) - r*r },
			func(x float64) float64 { return math.Sin(20 * x) },
			func(x float64) float64 { return x - 0.3 },
		},
		ds: []func(float64) float64{
			func(x float64) float64 { return 2 * (x - c) },
			func(x float64) float64 { return 20 * math.Cos(20*x) },
			func(x float64) float64 { return 1 },
		},
	}
}

func (f *fakeSwitch) Params() []*nn.Param[float64] { return []*nn.Param[float64]{f.w} }

func (f *fakeSwitch) tau(p *nn.Path[float64], b int) float64 {
	tau := f.w.Value.Data[0]
	if p != nil && p.Delta[f.w] != nil {
		tau += p.T[b] * p.Delta[f.w].Data[0]
	}
	return tau
}

func (f *fakeSwitch) value(tau float64) (y, dy float64) {
	for j := range f.s {
		if v := f.s[j](tau); v > 0 {
			y += v
			dy += f.ds[j](tau)
		}
	}
	return y, dy
}

type fakeState struct {
	p *nn.Path[float64]
	b int
}

func (f *fakeSwitch) PathForward(x *tensor.Dense[float64], p *nn.Path[float64]) (*tensor.Dense[float64], nn.State, error) {
	b := x.Shape[0]
	y := tensor.New[float64](b, 1)
	for i := 0; i < b; i++ {
		y.Data[i], _ = f.value(f.tau(p, i))
	}
	return y, fakeState{p, b}, nil
}

func (f *fakeSwitch) PathBackward(st nn.State, dy *tensor.Dense[float64], g *nn.Grads[float64], needDx bool) (*tensor.Dense[float64], error) {
	s := st.(fakeState)
	k := dy.Shape[0] / s.b
	buf := g.Of[f.w]
	for r := 0; r < dy.Shape[0]; r++ {
		_, d := f.value(f.tau(s.p, r/k))
		if g.Mode == nn.PerRow {
			buf.Data[r] += d * dy.Data[r]
		} else {
			buf.Data[0] += d * dy.Data[r]
		}
	}
	return nil, nil
}

func (f *fakeSwitch) PathJVP(x *tensor.Dense[float64], p *nn.Path[float64], t *nn.Tangents[float64]) (*tensor.Dense[float64], *tensor.Dense[float64], error) {
	b, m := x.Shape[0], t.Count()
	y := tensor.New[float64](b, 1)
	dy := tensor.New[float64](b*m, 1)
	for i := 0; i < b; i++ {
		v, d := f.value(f.tau(p, i))
		y.Data[i] = v
		for mm := 0; mm < m; mm++ {
			if tv := t.Of[f.w]; tv != nil {
				dy.Data[i*m+mm] = d * tv.Data[mm]
			}
		}
	}
	return y, dy, nil
}

func (f *fakeSwitch) PathSwitches(x *tensor.Dense[float64], p *nn.Path[float64], deriv bool) (sw, dsw *tensor.Dense[float64], err error) {
	b := x.Shape[0]
	sw = tensor.New[float64](b, len(f.s))
	if deriv {
		dsw = tensor.New[float64](b, len(f.s))
	}
	for i := 0; i < b; i++ {
		tau := f.tau(p, i)
		for j := range f.s {
			sw.Data[i*len(f.s)+j] = f.s[j](tau)
			if deriv {
				dsw.Data[i*len(f.s)+j] = f.ds[j](tau) * p.Delta[f.w].Data[0]
			}
		}
	}
	return sw, dsw, nil
}

// fakeUpdate is the step θ: 0 → 1 of the fake model, all of it data.
func fakeUpdate() *Update[float64] {
	one := tensor.New[float64](1)
	one.Data[0] = 1
	return &Update[float64]{Names: []string{"w"}, Before: []*tensor.Dense[float64]{tensor.New[float64](1)},
		Delta: []*tensor.Dense[float64]{one}, Data: []*tensor.Dense[float64]{one.Clone()},
		Reg: []*tensor.Dense[float64]{tensor.New[float64](1)}, Resid: []*tensor.Dense[float64]{tensor.New[float64](1)}}
}

// TestExactFindsEverySwitch integrates the fake model, whose switches
// include two sign changes of one unit inside one grid interval (which a
// sign test on the grid cannot see), and checks the located points, the
// piece count and the completeness, for several grids.
func TestExactFindsEverySwitch(t *testing.T) {
	want := []float64{0.3, 0.466, 0.474}
	for k := 1; k <= 6; k++ {
		want = append(want, float64(k)*math.Pi/20)
	}
	sortFloats(want)
	for _, grid := range []int{4, 8, 16, 32} {
		f := newFakeSwitch()
		ev, err := NewEvaluator[float64](f, Options{Quadrature: Quadrature{Rule: Exact, Grid: grid}, PerTensor: true})
		if err != nil {
			t.Fatal(err)
		}
		x := tensor.New[float64](2, 1)
		res, err := ev.Evaluate(fakeUpdate(), x, Request[float64]{Features: true})
		if err != nil {
			t.Fatal(err)
		}
		br := res.Plan.Switches[0]
		if res.Plan.Pieces[0] != len(want)+1 || len(br) != len(want) {
			t.Errorf("grid %d: %d pieces (breaks %v), want %d", grid, res.Plan.Pieces[0], br, len(want)+1)
			continue
		}
		var worst float64
		for i := range br {
			worst = math.Max(worst, math.Abs(br[i]-want[i]))
		}
		if !(worst <= 1e-12) {
			t.Errorf("grid %d: switch points %v off by %.3g from %v", grid, br, worst, want)
		}
		if !(res.MaxCompleteness <= 1e-12) { // Tol (1e-13) per interval
			t.Errorf("grid %d: completeness %.3g", grid, res.MaxCompleteness)
		}
		// φ·Δθ = ∫ f'(t) dt = f(1) − f(0) for the identity cotangent.
		if d := math.Abs(res.Features.Phi[0].Data[0] - res.Change.Data[0]); !(d <= 1e-12) {
			t.Errorf("grid %d: feature · Δθ differs from the change by %.3g", grid, d)
		}
		t.Logf("grid %d: %d switch points located to %.1g, %d intervals after the piece check, completeness %.2g, %d derivative + %d forward rows for 2 samples",
			grid, len(br), worst, res.Plan.Intervals[0], res.MaxCompleteness, res.Stats.DerivRows, res.Stats.ForwardRows)
	}
}

func sortFloats(v []float64) {
	for i := 1; i < len(v); i++ {
		for j := i; j > 0 && v[j] < v[j-1]; j-- {
			v[j], v[j-1] = v[j-1], v[j]
		}
	}
}

func TestProbeAt(t *testing.T) {
	// f(t) = (t − 0.5)² − 1e-6 on [0.4, 0.6]: ends positive, dips below zero.
	f := func(x float64) float64 { return (x-0.5)*(x-0.5) - 1e-6 }
	d := func(x float64) float64 { return 2 * (x - 0.5) }
	tp, ok := probeAt(seg{t0: 0.4, t1: 0.6, f0: f(0.4), f1: f(0.6), d0: d(0.4), d1: d(0.6)})
	if !ok || !(math.Abs(tp-0.5) <= 1e-12) {
		t.Errorf("dip: probe at %v (%v), want 0.5", tp, ok)
	}
	// A monotone piece needs no probe.
	if _, ok := probeAt(seg{t0: 0, t1: 1, f0: 1, f1: 2, d0: 1, d1: 1}); ok {
		t.Error("monotone: unexpected probe")
	}
	// A bump well away from zero needs none either.
	g := func(x float64) float64 { return 1 + 0.1*math.Sin(3*x) }
	dg := func(x float64) float64 { return 0.3 * math.Cos(3*x) }
	if _, ok := probeAt(seg{t0: 0, t1: 1, f0: g(0), f1: g(1), d0: dg(0), d1: dg(1)}); ok {
		t.Error("bump away from zero: unexpected probe")
	}
}

func TestEvaluatorErrors(t *testing.T) {
	f := newFakeSwitch()
	lp := LayerPath[float64](nn.NewLinear[float64]("l", 2, 3, true))
	if _, err := NewEvaluator[float64](lp, Options{Quadrature: Quadrature{Rule: Exact}}); err == nil {
		t.Error("Exact without switch values: want an error")
	}
	if _, err := NewEvaluator[float64](f, Options{Quadrature: Quadrature{Rule: Midpoint, Points: -1}}); err == nil {
		t.Error("negative points: want an error")
	}
	for _, q := range []Quadrature{{Rule: Exact, Ends: true}, {Rule: Adaptive, Points: 5, Ends: true}, {Rule: Adaptive, Points: 1, Ends: true}} {
		if _, err := NewEvaluator[float64](f, Options{Quadrature: q}); err == nil || !strings.Contains(err.Error(), "Gauss–Lobatto") {
			t.Errorf("%v with %d points and Ends: %v, want an error naming the Gauss–Lobatto intervals", q.Rule, q.Points, err)
		}
	}
	ev, err := NewEvaluator[float64](f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	u := fakeUpdate()
	u.Names[0] = "other"
	if _, err := ev.Evaluate(u, tensor.New[float64](1, 1), Request[float64]{}); err == nil {
		t.Error("update for another parameter: want an error")
	}
	if _, err := ev.Evaluate(fakeUpdate(), tensor.New[float64](1, 1), Request[float64]{Features: true, Cotangents: tensor.New[float64](2, 3)}); err == nil {
		t.Error("cotangents with the wrong class count: want an error")
	}
}
