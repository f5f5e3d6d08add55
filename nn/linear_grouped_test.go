package nn_test

import (
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
			run := func(g *nn.Grads[float64], needDx bool) (*tensor.Dense[float64], error) {
				return l.PathBackwardGrouped(st, cot, g, c.groups, c.nGroups, needDx)
			}
			checkGroupedBackward(t, run, asked, perRow, dxWant, c.groups, c.nGroups, c.k, tol)
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
	checkGroupedErrors(t, func(g *nn.Grads[float64], groups []int, nGroups int) error {
		_, err := l.PathBackwardGrouped(st, cot, g, groups, nGroups, true)
		return err
	}, l.Params(), k, "gradient buffer for lin.weight")
	if _, err := l.PathBackwardGrouped(st, randInput(rng, 4*k, 5), perGroups(2), []int{0, 0, 1, 1}, 2, true); err == nil || !strings.Contains(err.Error(), "cotangent shape") {
		t.Errorf("cotangents of the wrong shape: got %v, want an error mentioning %q", err, "cotangent shape")
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
