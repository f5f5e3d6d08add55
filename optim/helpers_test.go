package optim

import (
	"math"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// The fixture: three parameters, a run of steps with random gradients, and
// the last parameter missing its gradient on some steps.

var testShapes = []struct {
	name  string
	shape []int
}{
	{"layer1.weight", []int{3, 4}},
	{"layer1.bias", []int{4}},
	{"head.weight", []int{2, 3}},
	{"wide.weight", []int{16, 32}}, // many elements, to catch rare rounding differences
}

// absent reports whether parameter j gets no gradient at step s.
func absent(s, j int) bool { return j == 2 && (s == 1 || s == 3 || s == 4) }

// fixture is a deterministic run: initial values and per-step gradients in
// float64 (already rounded to the element type under test).
type fixture struct {
	init  [][]float64
	grads [][][]float64 // [step][param], nil when absent
}

func newFixture(steps int, seed uint64, round func(float64) float64) fixture {
	rng := rand.New(rand.NewPCG(seed, 7))
	var f fixture
	for _, s := range testShapes {
		v := make([]float64, tensor.Numel(s.shape))
		for i := range v {
			v[i] = round(rng.NormFloat64())
		}
		f.init = append(f.init, v)
	}
	for s := 0; s < steps; s++ {
		var gs [][]float64
		for j, sh := range testShapes {
			if absent(s, j) {
				gs = append(gs, nil)
				continue
			}
			g := make([]float64, tensor.Numel(sh.shape))
			for i := range g {
				g[i] = round(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(3)-1)))
			}
			gs = append(gs, g)
		}
		f.grads = append(f.grads, gs)
	}
	return f
}

func roundTo[T tensor.Float](x float64) float64 { return float64(T(x)) }

func toT[T tensor.Float](x []float64) []T {
	out := make([]T, len(x))
	for i, v := range x {
		out[i] = T(v)
	}
	return out
}

// makeParams builds T parameters holding f's initial values.
func makeParams[T tensor.Float](f fixture) []*nn.Param[T] {
	var ps []*nn.Param[T]
	for j, s := range testShapes {
		v, err := tensor.FromSlice(toT[T](f.init[j]), s.shape...)
		if err != nil {
			panic(err)
		}
		ps = append(ps, &nn.Param[T]{Name: s.name, Value: v})
	}
	return ps
}

// gradsAt returns the summed-mode gradients of step s for params.
func gradsAt[T tensor.Float](f fixture, params []*nn.Param[T], s int) *nn.Grads[T] {
	g := &nn.Grads[T]{Mode: nn.Summed, Of: map[*nn.Param[T]]*tensor.Dense[T]{}}
	for j, p := range params {
		if f.grads[s][j] == nil {
			continue
		}
		d, err := tensor.FromSlice(toT[T](f.grads[s][j]), p.Value.Shape...)
		if err != nil {
			panic(err)
		}
		g.Of[p] = d
	}
	return g
}

func copy2(x [][]float64) [][]float64 {
	out := make([][]float64, len(x))
	for i, v := range x {
		if v != nil {
			out[i] = append([]float64(nil), v...)
		}
	}
	return out
}

// testSchedule starts at lr 0 (the CIFAR triangle).
func testSchedule(t *testing.T) Schedule {
	t.Helper()
	s, err := Triangle(0.05, 2, 2, 4)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkClose compares got against the reference want in the max norm.
func checkClose[T tensor.Float](t *testing.T, what string, got []T, want []float64, tol float64) {
	t.Helper()
	if e := tensor.RelErr(got, want); !(e <= tol) {
		t.Errorf("%s: relative error %.3g > %.3g\n got  %v\n want %v", what, e, tol, got, want)
	}
}

// sameBits reports whether a and b are bitwise identical.
func sameBits[T tensor.Float](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float64bits(float64(a[i])) != math.Float64bits(float64(b[i])) {
			return false
		}
	}
	return true
}

func cloneParams[T tensor.Float](ps []*nn.Param[T]) []*nn.Param[T] {
	out := make([]*nn.Param[T], len(ps))
	for i, p := range ps {
		out[i] = &nn.Param[T]{Name: p.Name, Value: p.Value.Clone()}
	}
	return out
}

// wantErr fails unless err is non-nil and mentions every fragment.
func wantErr(t *testing.T, what string, err error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: got no error", what)
		return
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("%s: error %q does not mention %q", what, err, f)
		}
	}
}

func scalarParam(name string, v float64) *nn.Param[float64] {
	return &nn.Param[float64]{Name: name, Value: &tensor.Dense[float64]{Shape: []int{1}, Data: []float64{v}}}
}

func scalarGrads(p *nn.Param[float64], g float64) *nn.Grads[float64] {
	return &nn.Grads[float64]{Mode: nn.Summed, Of: map[*nn.Param[float64]]*tensor.Dense[float64]{
		p: {Shape: []int{1}, Data: []float64{g}},
	}}
}

func TestStateNames(t *testing.T) {
	if got := StateName(KindExpAvg, "layer1.weight"); got != "exp_avg/layer1.weight" {
		t.Errorf("StateName = %q", got)
	}
	kind, param, ok := SplitStateName("momentum_buffer/a/b.weight")
	if !ok || kind != KindMomentumBuffer || param != "a/b.weight" {
		t.Errorf("SplitStateName = %q, %q, %v", kind, param, ok)
	}
	for _, bad := range []string{"exp_avg", "/w", "exp_avg/", ""} {
		if _, _, ok := SplitStateName(bad); ok {
			t.Errorf("SplitStateName(%q) accepted", bad)
		}
	}
}

func TestBiasCorrection(t *testing.T) {
	// Variables, so that 1 − β is rounded like Python's, not exact like a Go constant.
	b9, b999 := 0.9, 0.999
	p1000, p75 := 0.36769542477096373, 0.00036998848503512764
	cases := []struct {
		beta float64
		step int
		want float64
	}{
		{0.5, 3, 0.875},
		{0.9, 1, 1 - b9},
		{0.999, 1, 1 - b999},
		{0, 5, 1},
		{0.9, 0, 0},
		{0.25, 2, 0.9375},
		// Python: 1 - 0.999**1000, 1 - 0.9**75 (glibc pow, correctly rounded
		// here; math.Pow is tens of ulps off).
		{0.999, 1000, 1 - p1000},
		{0.9, 75, 1 - p75},
	}
	for _, c := range cases {
		if got := BiasCorrection(c.beta, c.step); got != c.want {
			t.Errorf("BiasCorrection(%v, %d) = %v, want %v", c.beta, c.step, got, c.want)
		}
	}
	for _, c := range []struct {
		beta float64
		step int
		want float64
	}{{0.999, 1000, 0.36769542477096373}, {0.9, 75, 0.00036998848503512764}, {0.9, 1999, 3.394504347331844e-92}, {0.999, 223, 0.8000255819490791}} {
		if got := powInt(c.beta, c.step); got != c.want {
			t.Errorf("powInt(%v, %d) = %v, want Python's %v", c.beta, c.step, got, c.want)
		}
	}
	// Correct rounding, against a different algorithm in wider arithmetic:
	// step-by-step multiplication at 2048 bits.
	for _, beta := range []float64{0.9, 0.999, 0.95, 0.123456789} {
		acc := new(big.Float).SetPrec(2048).SetFloat64(1)
		b := new(big.Float).SetPrec(2048).SetFloat64(beta)
		for step := 1; step <= 3000; step++ {
			acc.Mul(acc, b)
			want, _ := acc.Float64()
			if got := powInt(beta, step); got != want {
				t.Fatalf("powInt(%v, %d) = %v, want %v", beta, step, got, want)
			}
		}
	}
}
