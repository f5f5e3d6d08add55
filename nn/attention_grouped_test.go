package nn_test

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// groupedHeads builds attention heads with random weights, a random path
// with one position per sample, and K random cotangents per sample, and
// returns the heads with their path-forward state and cotangents.
func groupedHeads(t *testing.T, rng *rand.Rand, heads, d, dh int, last bool, b, s, k int) (*nn.AttentionHeads[float64], nn.State, *tensor.Dense[float64]) {
	t.Helper()
	a := newHeads(t, heads, d, dh, last)
	initParams(rng, a)
	p := &nn.Path[float64]{Delta: map[*nn.Param[float64]]*tensor.Dense[float64]{}, T: make([]float64, b)}
	for _, prm := range a.Params() {
		p.Delta[prm] = randInput(rng, prm.Value.Shape...)
	}
	for i := range p.T {
		p.T[i] = rng.Float64()
	}
	y, st, err := a.PathForward(randInput(rng, b, s, d), p)
	if err != nil {
		t.Fatal(err)
	}
	return a, st, randInput(rng, append([]int{b * k}, y.Shape[1:]...)...)
}

// TestAttentionPathBackwardGrouped: the grouped encoder and decoder
// gradients are PathBackward's per-row gradients summed per group (empty
// groups stay zero, only the wanted heads are filled), and dx is
// PathBackward's.
func TestAttentionPathBackwardGrouped(t *testing.T) {
	const tol = 1e-12
	rng := rand.New(rand.NewPCG(51, 52))
	for _, c := range []struct {
		name         string
		heads, d, dh int
		last         bool
		s, k         int
		groups       []int
		nGroups      int
		some         bool // ask for the first encoder and the last decoder only
	}{
		{"last, uneven", 2, 6, 3, true, 4, 3, []int{0, 0, 1, 1, 1, 2}, 3, false},
		{"all queries, uneven", 3, 6, 2, false, 3, 2, []int{0, 1, 1, 1, 3}, 5, false},
		{"all queries, K=1", 2, 4, 2, false, 5, 1, []int{0, 0, 0, 1, 1}, 2, false},
		{"one head, one group", 1, 5, 3, false, 3, 4, []int{0, 0, 0}, 1, false},
		{"some heads", 3, 6, 2, false, 3, 2, []int{0, 0, 1, 2, 2}, 3, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := len(c.groups)
			a, st, cot := groupedHeads(t, rng, c.heads, c.d, c.dh, c.last, b, c.s, c.k)
			params := a.Params()
			perRow := nn.NewGrads(nn.PerRow, params, b*c.k)
			dxWant, err := a.PathBackward(st, cot, perRow, true)
			if err != nil {
				t.Fatal(err)
			}
			asked := params
			if c.some {
				asked = []*nn.Param[float64]{a.Encoders[0], a.Decoders[c.heads-1]}
			}
			run := func(g *nn.Grads[float64], needDx bool) (*tensor.Dense[float64], error) {
				return a.PathBackwardGrouped(st, cot, g, c.groups, c.nGroups, needDx)
			}
			checkGroupedBackward(t, run, asked, perRow, dxWant, c.groups, c.nGroups, c.k, tol)
		})
	}
}

// TestAttentionPathBackwardGroupedErrors: bad groups, Summed buffers,
// buffers over the wrong number of groups and a state from Forward are
// errors.
func TestAttentionPathBackwardGroupedErrors(t *testing.T) {
	const k = 2
	rng := rand.New(rand.NewPCG(53, 54))
	a, st, cot := groupedHeads(t, rng, 2, 4, 2, false, 4, 3, k)
	perGroups := func(n int) *nn.Grads[float64] { return nn.NewGrads(nn.PerRow, a.Params(), n*k) }
	checkGroupedErrors(t, func(g *nn.Grads[float64], groups []int, nGroups int) error {
		_, err := a.PathBackwardGrouped(st, cot, g, groups, nGroups, true)
		return err
	}, a.Params(), k, "gradient buffer")
	_, fst, err := a.Forward(randInput(rng, 4, 3, 4))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.PathBackwardGrouped(fst, cot, perGroups(2), []int{0, 0, 1, 1}, 2, true); err == nil || !strings.Contains(err.Error(), "PathBackwardGrouped got a state") {
		t.Errorf("a state from Forward: got %v, want an error", err)
	}
}
