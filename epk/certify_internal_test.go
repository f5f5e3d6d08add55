package epk

import (
	"math"
	"strings"
	"testing"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// kinked is a one-parameter PathModel without switch values (only
// Adaptive serves it) whose two outputs along τ = θ + tΔθ are
//
//	f_0(τ) = Σ_j a_j relu(τ − c_j − δ_b),  f_1(τ) = τ² − f_0(τ)/2,
//
// with δ_b = x_b/100 the sample's shift: the derivative jumps at every
// c_j + δ_b, so every interval holding one has an error of the size of
// the jump times its distance from the nodes. With nan set, f is NaN
// beyond τ = 0.5.
type kinked struct {
	w    *nn.Param[float64]
	a, c []float64
	nan  bool
	// offset is added to both outputs: it raises the rounding floor
	// without changing the integrand. quintic adds τ⁵ to f_1: an integrand
	// whose two-point Gauss–Legendre error is the same on every piece of
	// a length.
	offset  float64
	quintic bool
}

func newKinked() *kinked {
	k := &kinked{w: &nn.Param[float64]{Name: "w", Value: tensor.New[float64](1)}}
	for j := 0; j < 12; j++ {
		k.c = append(k.c, 0.05+0.075*float64(j)+0.01*math.Sqrt(float64(j+2)))
		k.a = append(k.a, 1+0.3*float64(j%3))
	}
	return k
}

func (k *kinked) Params() []*nn.Param[float64] { return []*nn.Param[float64]{k.w} }

func (k *kinked) tau(p *nn.Path[float64], r int) float64 {
	tau := k.w.Value.Data[0]
	if p != nil && p.Delta[k.w] != nil {
		tau += p.T[r] * p.Delta[k.w].Data[0]
	}
	return tau
}

// value returns f and df/dτ for a sample shifted by shift.
func (k *kinked) value(tau, shift float64) (y, dy [2]float64) {
	if k.nan && tau > 0.5 {
		return [2]float64{math.NaN(), math.NaN()}, [2]float64{math.NaN(), math.NaN()}
	}
	for j := range k.c {
		if v := tau - k.c[j] - shift; v > 0 {
			y[0] += k.a[j] * v
			dy[0] += k.a[j]
		}
	}
	y[1], dy[1] = tau*tau-y[0]/2, 2*tau-dy[0]/2
	y[0] += k.offset
	y[1] += k.offset
	if k.quintic {
		y[1] += math.Pow(tau, 5)
		dy[1] += 5 * math.Pow(tau, 4)
	}
	return y, dy
}

type kinkedState struct {
	p *nn.Path[float64]
	x *tensor.Dense[float64]
}

func (k *kinked) PathForward(x *tensor.Dense[float64], p *nn.Path[float64]) (*tensor.Dense[float64], nn.State, error) {
	b := x.Shape[0]
	y := tensor.New[float64](b, 2)
	for i := 0; i < b; i++ {
		v, _ := k.value(k.tau(p, i), x.Data[i]/100)
		copy(y.Data[2*i:], v[:])
	}
	return y, kinkedState{p, x}, nil
}

func (k *kinked) PathBackward(st nn.State, dy *tensor.Dense[float64], g *nn.Grads[float64], needDx bool) (*tensor.Dense[float64], error) {
	s := st.(kinkedState)
	rows := dy.Shape[0]
	per := rows / s.x.Shape[0]
	buf := g.Of[k.w]
	for r := 0; r < rows; r++ {
		i := r / per
		_, d := k.value(k.tau(s.p, i), s.x.Data[i]/100)
		v := d[0]*dy.Data[2*r] + d[1]*dy.Data[2*r+1]
		if g.Mode == nn.PerRow {
			buf.Data[r] += v
		} else {
			buf.Data[0] += v
		}
	}
	return nil, nil
}

func (k *kinked) PathJVP(x *tensor.Dense[float64], p *nn.Path[float64], t *nn.Tangents[float64]) (*tensor.Dense[float64], *tensor.Dense[float64], error) {
	b, m := x.Shape[0], t.Count()
	y := tensor.New[float64](b, 2)
	dy := tensor.New[float64](b*m, 2)
	for i := 0; i < b; i++ {
		v, d := k.value(k.tau(p, i), x.Data[i]/100)
		copy(y.Data[2*i:], v[:])
		for mm := 0; mm < m; mm++ {
			if tv := t.Of[k.w]; tv != nil {
				dy.Data[2*(i*m+mm)] = d[0] * tv.Data[mm]
				dy.Data[2*(i*m+mm)+1] = d[1] * tv.Data[mm]
			}
		}
	}
	return y, dy, nil
}

// kinkedBatch is a batch of samples with shifts 0, 0.013, 0.026, ….
func kinkedBatch(n int) *tensor.Dense[float64] {
	x := tensor.New[float64](n, 1)
	for i := range x.Data {
		x.Data[i] = 1.3 * float64(i)
	}
	return x
}

// splitUpdate is fakeUpdate with Δθ split into data 0.7, reg 0.2 and
// resid 0.1, so that the check's sum of three tangents is exercised.
func splitUpdate() *Update[float64] {
	u := fakeUpdate()
	u.Data[0].Data[0], u.Reg[0].Data[0], u.Resid[0].Data[0] = 0.7, 0.2, 0.1
	return u
}

// checkCertified checks that every (sample, class) completeness residual
// of res is at most tol and that res says so.
func checkCertified(t *testing.T, what string, res *StepResult[float64], tol float64) {
	t.Helper()
	for i, v := range res.Completeness.Data {
		if !(math.Abs(v) <= tol) {
			t.Errorf("%s: completeness %.3g of (sample %d, class %d) above Tol %g", what, v, i/2, i%2, tol)
		}
	}
	if !res.Certified || len(res.Missed) != 0 {
		t.Errorf("%s: certified %v with misses %v, want certified", what, res.Certified, res.Missed)
	}
}

// asPlanned plans the step and evaluates it at that plan as it stands,
// without the measured check's refinement.
func asPlanned(t *testing.T, ev *Evaluator[float64], u *Update[float64], x *tensor.Dense[float64]) (*Plan, *StepResult[float64]) {
	t.Helper()
	plan, err := ev.Plan(u, x)
	if err != nil {
		t.Fatal(err)
	}
	given, err := ev.Contributions(u, x, plan)
	if err != nil {
		t.Fatal(err)
	}
	return plan, given
}

// TestCertifyRefinesPassingIntervals accepts every interval whose own
// error is within Tol (the rule before the errors were summed per
// sample): on an integrand with twelve jumps per sample each interval
// passes its check while their sum misses Tol. Evaluated at that plan as it stands, the
// step misses; the contributions pass, measuring the step's residual,
// refines the intervals of the samples that miss until every (sample,
// class) meets Tol.
func TestCertifyRefinesPassingIntervals(t *testing.T) {
	const tol = 1e-6
	ev, err := NewEvaluator[float64](newKinked(), Options{Quadrature: Quadrature{Rule: Adaptive, Points: 2, Tol: tol}})
	if err != nil {
		t.Fatal(err)
	}
	ev.flatShare = true
	x, u := kinkedBatch(6), splitUpdate()
	plan, given := asPlanned(t, ev, u, x)
	if !(given.MaxCompleteness > tol) || given.Certified || len(given.Missed) == 0 {
		t.Fatalf("the intervals that each pass at Tol add up to %.3g (certified %v, misses %v): want a miss of Tol %g to refine",
			given.MaxCompleteness, given.Certified, given.Missed, tol)
	}
	for _, m := range given.Missed {
		worst := math.Max(math.Abs(given.Completeness.Data[2*m.Sample]), math.Abs(given.Completeness.Data[2*m.Sample+1]))
		if m.Residual != worst || !(m.Residual > tol) {
			t.Errorf("miss of sample %d: residual %.3g, its completeness is %.3g", m.Sample, m.Residual, worst)
		}
	}
	res, err := ev.Contributions(u, x, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkCertified(t, "refined", res, tol)
	if res.Stats.Refined == 0 {
		t.Errorf("no interval refined by the measured check")
	}
	if got, want := len(res.Plan.Nodes), len(plan.Nodes); !(got > want) {
		t.Errorf("the refined plan has %d nodes, the plan that missed %d", got, want)
	}
	t.Logf("intervals passing at Tol %g each: completeness %.3g (%d of 6 samples miss, %d nodes); measured and refined: %.3g with %d nodes (%d intervals refined)",
		tol, given.MaxCompleteness, len(given.Missed), len(plan.Nodes), res.MaxCompleteness, len(res.Plan.Nodes), res.Stats.Refined)
	// The features are taken at the refined plan's nodes: φ·Δθ is the
	// contributions' sum.
	f, _, err := ev.Features(u, x, res.Plan, nil)
	if err != nil {
		t.Fatal(err)
	}
	for b := 0; b < 6; b++ {
		for c := 0; c < 2; c++ {
			sum := res.Data.Data[2*b+c] + res.Reg.Data[2*b+c] + res.Resid.Data[2*b+c]
			if d := math.Abs(f.Phi[0].Data[2*b+c] - sum); !(d <= 1e-13) {
				t.Errorf("sample %d, class %d: φ·Δθ differs from the contributions by %.3g", b, c, d)
			}
		}
	}
}

// TestAdaptiveMeetsTol checks the summed errors on the same integrand:
// every (sample, class) residual ends at most Tol, for several Tol, with
// the nodes growing as Tol shrinks; and Exact on the fake switch model
// (whose pieces are smooth) likewise.
func TestAdaptiveMeetsTol(t *testing.T) {
	for _, start := range []int{1, 3, 4} {
		prev := 0
		for _, tol := range []float64{1e-4, 1e-6, 1e-9, 1e-12} {
			ev, err := NewEvaluator[float64](newKinked(), Options{Quadrature: Quadrature{Rule: Adaptive, Points: 3, Tol: tol, Start: start}, PerTensor: true})
			if err != nil {
				t.Fatal(err)
			}
			res, err := ev.Evaluate(splitUpdate(), kinkedBatch(5), Request[float64]{})
			if err != nil {
				t.Fatal(err)
			}
			checkCertified(t, "adaptive", res, tol)
			if n := len(res.Plan.Nodes); !(n >= prev) || n < 5*3*start {
				t.Errorf("start %d, Tol %g: %d nodes, fewer than the %d of a looser Tol or the %d of the start", start, tol, n, prev, 5*3*start)
			}
			prev = len(res.Plan.Nodes)
			t.Logf("adaptive, start %d, Tol %g: completeness %.3g, %.1f nodes per sample, %d intervals refined after the interval checks",
				start, tol, res.MaxCompleteness, float64(len(res.Plan.Nodes))/5, res.Stats.Refined)
		}
	}
	for _, q := range []Quadrature{{Rule: Adaptive, Start: -1}, {Rule: Adaptive, Points: 3, MaxNodes: 9, Start: 4}} {
		if _, err := NewEvaluator[float64](newKinked(), Options{Quadrature: q}); err == nil || !strings.Contains(err.Error(), "adaptive start") {
			t.Errorf("start %d with %d nodes: %v, want an error naming the start", q.Start, q.MaxNodes, err)
		}
	}
	for _, tol := range []float64{1e-6, 1e-10} {
		ev, err := NewEvaluator[float64](newFakeSwitch(), Options{Quadrature: Quadrature{Rule: Exact, Points: 2, Grid: 4, Tol: tol}})
		if err != nil {
			t.Fatal(err)
		}
		ev.flatShare = true
		res, err := ev.Evaluate(splitUpdate(), tensor.New[float64](3, 1), Request[float64]{})
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range res.Completeness.Data {
			if !(math.Abs(v) <= tol) {
				t.Errorf("exact, Tol %g: completeness %.3g of sample %d", tol, v, i)
			}
		}
		if !res.Certified {
			t.Errorf("exact, Tol %g: not certified (%v)", tol, res.Missed)
		}
		t.Logf("exact, Tol %g: completeness %.3g, %d pieces, %d intervals", tol, res.MaxCompleteness, res.Plan.Pieces[0], res.Plan.Intervals[0])
	}
}

// TestCertifyReportsMisses checks that a step that cannot meet Tol is
// reported, not certified: with a node budget of the 4 starting intervals,
// and with a NaN integrand.
func TestCertifyReportsMisses(t *testing.T) {
	const tol = 1e-10
	ev, err := NewEvaluator[float64](newKinked(), Options{Quadrature: Quadrature{Rule: Adaptive, Points: 2, Tol: tol, MaxNodes: 8, Start: 4}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := ev.Contributions(splitUpdate(), kinkedBatch(4), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Certified || len(res.Missed) == 0 {
		t.Fatalf("a budget of 8 nodes certified Tol %g (completeness %.3g)", tol, res.MaxCompleteness)
	}
	missed := map[int]float64{}
	for _, m := range res.Missed {
		missed[m.Sample] = m.Residual
	}
	for b := 0; b < 4; b++ {
		worst := math.Max(math.Abs(res.Completeness.Data[2*b]), math.Abs(res.Completeness.Data[2*b+1]))
		r, ok := missed[b]
		switch {
		case ok && (r != worst || !(r > tol)):
			t.Errorf("sample %d: reported residual %.3g, its completeness %.3g", b, r, worst)
		case !ok && !(worst <= tol):
			t.Errorf("sample %d: completeness %.3g above Tol and not reported", b, worst)
		}
	}
	for b, n := range res.Plan.NodesPerSample() {
		if n > 8 {
			t.Errorf("sample %d: %d nodes, over the budget of 8", b, n)
		}
	}
	t.Logf("budget 8 nodes, Tol %g: %d of 4 samples reported with residuals %v", tol, len(res.Missed), res.Missed)

	k := newKinked()
	k.nan = true
	ev, err = NewEvaluator[float64](k, Options{Quadrature: Quadrature{Rule: Adaptive, Points: 2, Tol: 1e-6}})
	if err != nil {
		t.Fatal(err)
	}
	res, err = ev.Contributions(splitUpdate(), kinkedBatch(2), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Certified || len(res.Missed) != 2 || !math.IsNaN(res.Missed[0].Residual) || !math.IsNaN(res.Missed[1].Residual) {
		t.Errorf("NaN integrand: certified %v, misses %v; want both samples missed with NaN residuals", res.Certified, res.Missed)
	}

	// The fixed rules have no tolerance: they certify nothing.
	ev, err = NewEvaluator[float64](newKinked(), Options{Quadrature: Quadrature{Rule: Midpoint, Points: 256}})
	if err != nil {
		t.Fatal(err)
	}
	if res, err = ev.Contributions(splitUpdate(), kinkedBatch(2), nil); err != nil {
		t.Fatal(err)
	}
	if res.Certified || res.Missed != nil {
		t.Errorf("midpoint: certified %v, misses %v; want neither", res.Certified, res.Missed)
	}
}

// TestCertifyLowersTheFloor: pieces whose errors sit below their rounding
// floor are not refined while planning, though together they can miss
// Tol; the measured check then lowers the floor of the samples that miss
// (down to minFloorScale of it) and refines them until they meet Tol.
// The floor is raised here (noiseFactor) so that float64 on the kinked
// integrand is in the position float32 is in on ResNet-9.
func TestCertifyLowersTheFloor(t *testing.T) {
	const tol = 1e-6
	defer func(f float64) { noiseFactor = f }(noiseFactor)
	// A floor at which 4 of the 6 samples end planning above Tol, and an
	// eighth of which lets them meet it.
	noiseFactor = 1e9
	ev, err := NewEvaluator[float64](newKinked(), Options{Quadrature: Quadrature{Rule: Adaptive, Points: 2, Tol: tol}})
	if err != nil {
		t.Fatal(err)
	}
	x, u := kinkedBatch(6), splitUpdate()
	plan, given := asPlanned(t, ev, u, x)
	if given.Certified {
		t.Fatalf("the plan at the raised floor met Tol %g (completeness %.3g): the test needs pieces left at the floor that miss it",
			tol, given.MaxCompleteness)
	}
	res, err := ev.Contributions(u, x, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkCertified(t, "floor lowered", res, tol)
	t.Logf("floor %g·ε: the plan's completeness %.3g (%d of 6 samples miss, %d nodes); measured and refined below the floor: %.3g with %d nodes",
		noiseFactor, given.MaxCompleteness, len(given.Missed), len(plan.Nodes), res.MaxCompleteness, len(res.Plan.Nodes))
}

// TestCertifyLowersTheFloorOverRounds: when halving the floor once lets
// no piece of the samples that miss be refined, the measured check must
// go on halving it (down to minFloorScale) rather than stop. On a smooth
// integrand (f_1 = τ² + τ⁵, no kinks) every piece at a depth has the same
// error, and a large offset of the outputs makes the floor the same for
// all: the floor is chosen so that the planning stops at a depth where
// the pieces' errors lie between an eighth and a half of it. On the
// width/8 Fashion-2 run (512 images, float32) stopping after the first
// round left 5 (step, image) pairs at up to 1.25e-4 of Tol 1e-4.
func TestCertifyLowersTheFloorOverRounds(t *testing.T) {
	const tol = 1e-6
	defer func(f float64) { noiseFactor = f }(noiseFactor)
	x, u := kinkedBatch(3), splitUpdate()
	k := &kinked{w: &nn.Param[float64]{Name: "w", Value: tensor.New[float64](1)}, offset: 1e6, quintic: true}
	ev, err := NewEvaluator[float64](k, Options{Quadrature: Quadrature{Rule: Adaptive, Points: 2, Tol: tol}})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for nf := 1.0; nf < 1e9 && !found; nf *= 1.25 {
		noiseFactor = nf
		plan, given := asPlanned(t, ev, u, x)
		if given.Certified {
			continue
		}
		noiseFactor = nf / 2
		half, _ := asPlanned(t, ev, u, x)
		noiseFactor = nf * minFloorScale
		_, low := asPlanned(t, ev, u, x)
		if len(half.Nodes) != len(plan.Nodes) || !low.Certified {
			continue
		}
		found = true
		noiseFactor = nf
		res, err := ev.Contributions(u, x, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkCertified(t, "floor lowered over rounds", res, tol)
		t.Logf("floor %.3g·ε: the plan's completeness %.3g (%d misses, %d nodes, the same at half the floor); measured and refined: %.3g with %d nodes",
			nf, given.MaxCompleteness, len(given.Missed), len(plan.Nodes), res.MaxCompleteness, len(res.Plan.Nodes))
	}
	if !found {
		t.Fatal("no floor where half of it refines nothing and minFloorScale of it certifies: the test needs one")
	}
}
