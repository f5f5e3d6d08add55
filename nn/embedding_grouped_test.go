package nn_test

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// groupedEmbedding builds a scaled embedding with a random table, b random
// token rows of length s (the first id repeated at the end, so that one
// row and one group hit a table row twice), a random path and K random
// cotangents per sample, and returns the embedding with its path-forward
// state and the cotangents.
func groupedEmbedding(t *testing.T, rng *rand.Rand, vocab, dim int, scale float64, b, s, k int) (*nn.Embedding[float64], nn.State, *tensor.Dense[float64]) {
	t.Helper()
	e := nn.NewEmbedding[float64]("emb", vocab, dim)
	e.Scale = scale
	e.InitNormal(rng)
	x := randTokens(rng, vocab, b, s)
	x.Data[len(x.Data)-1] = x.Data[0]
	p := &nn.Path[float64]{Delta: map[*nn.Param[float64]]*tensor.Dense[float64]{e.Weight: randInput(rng, vocab, dim)}, T: make([]float64, b)}
	for i := range p.T {
		p.T[i] = rng.Float64()
	}
	_, st, err := e.PathForward(x, p)
	if err != nil {
		t.Fatal(err)
	}
	return e, st, randInput(rng, b*k, s, dim)
}

// TestEmbeddingPathBackwardGrouped: the grouped weight gradients are
// PathBackward's per-row gradients summed per group (empty groups stay
// zero), and a second call adds the same again.
func TestEmbeddingPathBackwardGrouped(t *testing.T) {
	const tol = 1e-12
	rng := rand.New(rand.NewPCG(61, 62))
	for _, c := range []struct {
		name       string
		vocab, dim int
		scale      float64
		s, k       int
		groups     []int
		nGroups    int
	}{
		{"uneven", 9, 4, 1, 3, 2, []int{0, 0, 1, 1, 1, 2}, 3},
		{"empty groups, scaled", 7, 5, 2.5, 3, 3, []int{0, 1, 1, 1, 3}, 5},
		{"K=1", 5, 3, 0.5, 4, 1, []int{0, 0, 0, 1, 1}, 2},
		{"one group, small vocab", 3, 6, 8, 3, 4, []int{0, 0, 0, 0, 0, 0, 0}, 1},
		{"singletons", 11, 2, 1, 1, 2, []int{0, 1, 2, 3}, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := len(c.groups)
			e, st, cot := groupedEmbedding(t, rng, c.vocab, c.dim, c.scale, b, c.s, c.k)
			perRow := nn.NewGrads(nn.PerRow, e.Params(), b*c.k)
			if _, err := e.PathBackward(st, cot, perRow, false); err != nil {
				t.Fatal(err)
			}
			size := c.vocab * c.dim
			want := make([]float64, c.nGroups*c.k*size)
			for bb, gi := range c.groups {
				tensor.AddScaled(want[gi*c.k*size:(gi+1)*c.k*size], 1, perRow.Of[e.Weight].Data[bb*c.k*size:(bb+1)*c.k*size])
			}
			grouped := nn.NewGrads(nn.PerRow, e.Params(), c.nGroups*c.k)
			for call := 1; call <= 2; call++ {
				if err := e.PathBackwardGrouped(st, cot, grouped, c.groups, c.nGroups); err != nil {
					t.Fatal(err)
				}
				var worst, norm float64
				for i, v := range grouped.Of[e.Weight].Data {
					worst = math.Max(worst, math.Abs(v-float64(call)*want[i]))
					norm = math.Max(norm, math.Abs(want[i]))
				}
				if norm == 0 {
					t.Fatal("the per-row gradients are all zero; the test checks nothing")
				}
				if !(worst <= tol*norm) {
					t.Errorf("after %d calls the grouped gradients differ from %d × the per-group sums of the per-row gradients by %.3g (max |want| %.3g)", call, call, worst, norm)
				}
			}
		})
	}
}

// TestEmbeddingPathBackwardGroupedErrors: bad groups, a wrong cotangent
// shape, Summed buffers, a buffer over the wrong number of groups and a
// state from another layer are errors; no buffer at all is not.
func TestEmbeddingPathBackwardGroupedErrors(t *testing.T) {
	const k = 2
	rng := rand.New(rand.NewPCG(63, 64))
	e, st, cot := groupedEmbedding(t, rng, 6, 3, 1, 4, 3, k)
	perGroups := func(n int) *nn.Grads[float64] { return nn.NewGrads(nn.PerRow, e.Params(), n*k) }
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
		{"cotangents", perGroups(2), randInput(rng, 4*k, 3, 4), []int{0, 0, 1, 1}, 2, "cotangent shape"},
		{"summed", nn.NewGrads(nn.Summed, e.Params(), 0), cot, []int{0, 0, 1, 1}, 2, "PerRow"},
		{"buffer", perGroups(3), cot, []int{0, 0, 1, 1}, 2, "gradient buffer"},
	} {
		if err := e.PathBackwardGrouped(st, c.cot, c.g, c.groups, c.nGroups); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", c.name, err, c.want)
		}
	}
	a := newHeads(t, 1, 3, 3, false)
	_, ast, err := a.Forward(randInput(rng, 4, 3, 3))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.PathBackwardGrouped(ast, cot, perGroups(2), []int{0, 0, 1, 1}, 2); err == nil || !strings.Contains(err.Error(), "PathBackwardGrouped got a state") {
		t.Errorf("a state from another layer: got %v, want an error", err)
	}
	for _, g := range []*nn.Grads[float64]{nil, nn.NewGrads[float64](nn.PerRow, nil, 2*k)} {
		if err := e.PathBackwardGrouped(st, cot, g, []int{0, 0, 1, 1}, 2); err != nil {
			t.Errorf("no buffers (%v): %v", g, err)
		}
	}
}
