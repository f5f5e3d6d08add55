package nn_test

import (
	"math"
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
			grouped := nn.NewGrads(nn.PerRow, asked, c.nGroups*c.k)
			dx, err := a.PathBackwardGrouped(st, cot, grouped, c.groups, c.nGroups, true)
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
				if !(worst <= tol*norm) {
					t.Errorf("%s: grouped gradients differ from the per-group sums of the per-row gradients by %.3g (max |want| %.3g)", p.Name, worst, norm)
				}
			}
			// Without dx, the gradients are the same and are added (+=).
			if out, err := a.PathBackwardGrouped(st, cot, grouped, c.groups, c.nGroups, false); err != nil || out != nil {
				t.Fatalf("without dx: got %v, %v; want nil, nil", out, err)
			}
			once := nn.NewGrads(nn.PerRow, asked, c.nGroups*c.k)
			if _, err := a.PathBackwardGrouped(st, cot, once, c.groups, c.nGroups, false); err != nil {
				t.Fatal(err)
			}
			for _, p := range asked {
				for i, v := range once.Of[p].Data {
					if d := math.Abs(grouped.Of[p].Data[i] - 2*v); !(d <= tol*math.Max(1, math.Abs(v))) {
						t.Fatalf("%s[%d]: two calls gave %v, want 2 × %v", p.Name, i, grouped.Of[p].Data[i], v)
					}
				}
			}
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
	for _, c := range []struct {
		name    string
		g       *nn.Grads[float64]
		groups  []int
		nGroups int
		want    string
	}{
		{"decreasing", perGroups(2), []int{0, 1, 0, 1}, 2, "nondecreasing in [0, 2)"},
		{"too large", perGroups(2), []int{0, 0, 1, 2}, 2, "nondecreasing in [0, 2)"},
		{"negative", perGroups(2), []int{-1, 0, 1, 1}, 2, "nondecreasing in [0, 2)"},
		{"too few", perGroups(2), []int{0, 0, 1}, 2, "3 groups for 4 samples"},
		{"summed", nn.NewGrads(nn.Summed, a.Params(), 0), []int{0, 0, 1, 1}, 2, "PerRow"},
		{"buffer", perGroups(3), []int{0, 0, 1, 1}, 2, "gradient buffer"},
	} {
		if _, err := a.PathBackwardGrouped(st, cot, c.g, c.groups, c.nGroups, true); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", c.name, err, c.want)
		}
	}
	_, fst, err := a.Forward(randInput(rng, 4, 3, 4))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.PathBackwardGrouped(fst, cot, perGroups(2), []int{0, 0, 1, 1}, 2, true); err == nil || !strings.Contains(err.Error(), "PathBackwardGrouped got a state") {
		t.Errorf("a state from Forward: got %v, want an error", err)
	}
}
