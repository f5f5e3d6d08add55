package nn_test

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// groupedLinear builds a linear layer with random parameters, a random path
// with one position per sample, and K random cotangents per sample for an
// input [B, in] (s = 0) or [B, s, in], and returns the layer with its
// path-forward state and cotangents.
func groupedLinear(t *testing.T, rng *rand.Rand, in, out int, bias bool, b, s, k int) (*nn.Linear[float64], nn.State, *tensor.Dense[float64]) {
	t.Helper()
	l := nn.NewLinear[float64]("lin", in, out, bias)
	initParams(rng, l)
	p := &nn.Path[float64]{Delta: map[*nn.Param[float64]]*tensor.Dense[float64]{}, T: make([]float64, b)}
	for _, prm := range l.Params() {
		p.Delta[prm] = randInput(rng, prm.Value.Shape...)
	}
	for i := range p.T {
		p.T[i] = rng.Float64()
	}
	shape := []int{b, in}
	if s > 0 {
		shape = []int{b, s, in}
	}
	y, st, err := l.PathForward(randInput(rng, shape...), p)
	if err != nil {
		t.Fatal(err)
	}
	return l, st, randInput(rng, append([]int{b * k}, y.Shape[1:]...)...)
}

// TestLinearPathBackwardGrouped: the grouped weight and bias gradients are
// PathBackward's per-row gradients summed per group (empty groups stay
// zero, only the wanted parameters are filled, a second call adds), and dx
// is PathBackward's.
func TestLinearPathBackwardGrouped(t *testing.T) {
	const tol = 1e-12
	rng := rand.New(rand.NewPCG(71, 72))
	for _, c := range []struct {
		name    string
		in, out int
		bias    bool
		s, k    int
		groups  []int
		nGroups int
		weight  bool // ask for the weight only
	}{
		{"rows, uneven", 5, 4, true, 0, 3, []int{0, 0, 1, 1, 1, 2}, 3, false},
		{"rows, K=1, empty group", 3, 6, true, 0, 1, []int{0, 1, 1, 1, 3}, 5, false},
		{"positions", 4, 3, true, 3, 2, []int{0, 0, 1, 2, 2}, 3, false},
		{"positions, K=1", 4, 5, true, 2, 1, []int{0, 0, 0, 1}, 2, false},
		{"no bias, one group", 3, 4, false, 2, 4, []int{0, 0, 0}, 1, false},
		{"weight only", 4, 3, true, 0, 2, []int{0, 1, 1}, 2, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := len(c.groups)
			l, st, cot := groupedLinear(t, rng, c.in, c.out, c.bias, b, c.s, c.k)
			params := l.Params()
			perRow := nn.NewGrads(nn.PerRow, params, b*c.k)
			dxWant, err := l.PathBackward(st, cot, perRow, true)
			if err != nil {
				t.Fatal(err)
			}
			asked := params
			if c.weight {
				asked = []*nn.Param[float64]{l.Weight}
			}
			grouped := nn.NewGrads(nn.PerRow, asked, c.nGroups*c.k)
			dx, err := l.PathBackwardGrouped(st, cot, grouped, c.groups, c.nGroups, true)
			if err != nil {
				t.Fatal(err)
			}
			if d := tensor.RelErr(dx.Data, dxWant.Data); d != 0 || !tensor.SameShape(dx.Shape, dxWant.Shape) {
				t.Errorf("dx %v differs from PathBackward's %v by %.3g", dx.Shape, dxWant.Shape, d)
			}
			if len(grouped.Of) != len(asked) {
				t.Errorf("filled %d parameters, want the %d asked for", len(grouped.Of), len(asked))
			}
			for _, p := range asked {
				size := len(p.Value.Data)
				want := make([]float64, c.nGroups*c.k*size)
				for bb, gi := range c.groups {
					tensor.AddScaled(want[gi*c.k*size:(gi+1)*c.k*size], 1, perRow.Of[p].Data[bb*c.k*size:(bb+1)*c.k*size])
				}
				var worst, norm float64
				for i, v := range grouped.Of[p].Data {
					worst = math.Max(worst, math.Abs(v-want[i]))
					norm = math.Max(norm, math.Abs(want[i]))
				}
				if norm == 0 {
					t.Fatalf("%s: the per-row gradients are all zero; the test checks nothing", p.Name)
				}
				if worst > tol*norm {
					t.Errorf("%s: grouped gradients differ from the per-group sums of the per-row gradients by %.3g (max |want| %.3g)", p.Name, worst, norm)
				}
			}
			// Without dx, the gradients are the same and are added (+=).
			if out, err := l.PathBackwardGrouped(st, cot, grouped, c.groups, c.nGroups, false); err != nil || out != nil {
				t.Fatalf("without dx: got %v, %v; want nil, nil", out, err)
			}
			once := nn.NewGrads(nn.PerRow, asked, c.nGroups*c.k)
			if _, err := l.PathBackwardGrouped(st, cot, once, c.groups, c.nGroups, false); err != nil {
				t.Fatal(err)
			}
			for _, p := range asked {
				for i, v := range once.Of[p].Data {
					if d := math.Abs(grouped.Of[p].Data[i] - 2*v); d > tol*math.Max(1, math.Abs(v)) {
						t.Fatalf("%s[%d]: two calls gave %v, want 2 × %v", p.Name, i, grouped.Of[p].Data[i], v)
					}
				}
			}
		})
	}
}

// TestLinearPathBackwardGroupedErrors: bad groups, a wrong cotangent shape,
// Summed buffers, a buffer over the wrong number of groups and a state
// from Forward are errors; no buffer at all is not.
func TestLinearPathBackwardGroupedErrors(t *testing.T) {
	const k = 2
	rng := rand.New(rand.NewPCG(73, 74))
	l, st, cot := groupedLinear(t, rng, 3, 4, true, 4, 0, k)
	perGroups := func(n int) *nn.Grads[float64] { return nn.NewGrads(nn.PerRow, l.Params(), n*k) }
	for _, c := range []struct {
		name    string
		g       *nn.Grads[float64]
		cot     *tensor.Dense[float64]
		groups  []int
		nGroups int
		want    string
	}{
		{"decreasing", perGroups(2), cot, []int{0, 1, 0, 1}, 2, "nondecreasing in [0, 2)"},
		{"too large", perGroups(2), cot, []int{0, 0, 1, 2}, 2, "nondecreasing in [0, 2)"},
		{"negative", perGroups(2), cot, []int{-1, 0, 1, 1}, 2, "nondecreasing in [0, 2)"},
		{"too few", perGroups(2), cot, []int{0, 0, 1}, 2, "3 groups for 4 samples"},
		{"cotangents", perGroups(2), randInput(rng, 4*k, 5), []int{0, 0, 1, 1}, 2, "cotangent shape"},
		{"summed", nn.NewGrads(nn.Summed, l.Params(), 0), cot, []int{0, 0, 1, 1}, 2, "PerRow"},
		{"buffer", perGroups(3), cot, []int{0, 0, 1, 1}, 2, "gradient buffer for lin.weight"},
	} {
		if _, err := l.PathBackwardGrouped(st, c.cot, c.g, c.groups, c.nGroups, true); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", c.name, err, c.want)
		}
	}
	_, fst, err := l.Forward(randInput(rng, 4, 3))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.PathBackwardGrouped(fst, cot, perGroups(2), []int{0, 0, 1, 1}, 2, true); err == nil || !strings.Contains(err.Error(), "PathBackwardGrouped got a state") {
		t.Errorf("a state from Forward: got %v, want an error", err)
	}
	for _, g := range []*nn.Grads[float64]{nil, nn.NewGrads[float64](nn.PerRow, nil, 2*k)} {
		if _, err := l.PathBackwardGrouped(st, cot, g, []int{0, 0, 1, 1}, 2, true); err != nil {
			t.Errorf("no buffers (%v): %v", g, err)
		}
	}
}
