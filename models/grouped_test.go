package models_test

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// groupedTestSetup builds a small float64 modulo transformer, a random path
// with one position per row, and K random cotangents per row, and returns
// the model with its path-forward state and cotangents.
func groupedTestSetup(t *testing.T, seed uint64, rows, k int) (*models.Modulo[float64], nn.State, *tensor.Dense[float64]) {
	t.Helper()
	cfg := models.ModuloConfig{P: 7, DModel: 8, Heads: 2, MLP: 12}
	m, err := models.NewModulo[float64](cfg)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, seed+1))
	m.Init(rng)
	x := moduloTokens[float64](rng, cfg.P, rows)
	p := &nn.Path[float64]{Delta: map[*nn.Param[float64]]*tensor.Dense[float64]{}, T: make([]float64, rows)}
	for _, prm := range m.Params() {
		d := tensor.New[float64](prm.Value.Shape...)
		nn.FillUniform(d.Data, 0.3, rng)
		p.Delta[prm] = d
	}
	for i := range p.T {
		p.T[i] = rng.Float64()
	}
	_, st, err := m.PathForward(x, p)
	if err != nil {
		t.Fatal(err)
	}
	cot := tensor.New[float64](rows*k, cfg.P+2)
	nn.FillUniform(cot.Data, 1, rng)
	return m, st, cot
}

// pick returns the parameters of params that are one of want, a parameter
// or a string its name contains, failing unless each picks one.
func pick(t *testing.T, params []*nn.Param[float64], want ...any) []*nn.Param[float64] {
	t.Helper()
	var out []*nn.Param[float64]
	for _, p := range params {
		for _, w := range want {
			if q, ok := w.(*nn.Param[float64]); ok && q == p {
				out = append(out, p)
			} else if name, ok := w.(string); ok && strings.Contains(p.Name, name) {
				out = append(out, p)
			}
		}
	}
	if len(out) != len(want) {
		t.Fatalf("picked %d parameters, want %d", len(out), len(want))
	}
	return out
}

// TestModuloPathBackwardGrouped: the grouped gradients are the per-row
// gradients of PathBackward summed per group, for every parameter, with
// empty groups left at zero and only the requested parameters filled.
func TestModuloPathBackwardGrouped(t *testing.T) {
	const tol = 1e-12
	for _, c := range []struct {
		name    string
		k       int // cotangents per row
		groups  []int
		nGroups int
		subset  string // ask for some parameters only: "some", "embedding", "biases"
	}{
		{"contiguous", 3, []int{0, 0, 1, 1, 1, 2}, 3, ""},
		{"empty groups", 3, []int{0, 0, 2, 2, 2, 3}, 5, ""},
		{"one group", 3, []int{0, 0, 0, 0, 0, 0}, 1, ""},
		{"singletons", 3, []int{0, 1, 2, 3, 4, 5}, 6, ""},
		{"some parameters", 3, []int{0, 0, 1, 1, 1, 2}, 3, "some"},
		{"embedding only", 2, []int{0, 0, 1, 3, 3, 3}, 4, "embedding"},
		{"biases only", 2, []int{1, 1, 1, 2, 2, 2}, 3, "biases"},
		{"K=1", 1, []int{0, 1, 1, 1, 1, 3}, 4, ""},
		{"K=2, uneven", 2, []int{0, 2, 2, 2, 2, 4, 4}, 6, ""},
		{"K=5, many rows", 5, []int{0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 4, 4, 4, 4, 4, 4, 4}, 5, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			k, rows := c.k, len(c.groups)
			m, st, cot := groupedTestSetup(t, 41, rows, k)
			params := m.Params()
			perRow := nn.NewGrads(nn.PerRow, params, rows*k)
			if _, err := m.PathBackward(st, cot, perRow, false); err != nil {
				t.Fatal(err)
			}
			asked := params
			switch c.subset {
			case "some": // a linear weight, a bias, two attention tensors
				asked = pick(t, params, m.Linear1.Weight, m.Linear2.Bias, "head1_encoder", "head2_decoder")
			case "embedding":
				asked = pick(t, params, m.Embedding.Weight)
			case "biases":
				asked = pick(t, params, m.Linear1.Bias, m.Linear2.Bias)
			}
			grouped := nn.NewGrads(nn.PerRow, asked, c.nGroups*k)
			if err := m.PathBackwardGrouped(st, cot, grouped, c.groups, c.nGroups); err != nil {
				t.Fatal(err)
			}
			if len(grouped.Of) != len(asked) {
				t.Errorf("PathBackwardGrouped filled %d parameters, want the %d asked for", len(grouped.Of), len(asked))
			}
			for _, p := range asked {
				size := len(p.Value.Data)
				want := make([]float64, c.nGroups*k*size)
				for b, gi := range c.groups {
					tensor.AddScaled(want[gi*k*size:(gi+1)*k*size], 1, perRow.Of[p].Data[b*k*size:(b+1)*k*size])
				}
				got := grouped.Of[p]
				if wantShape := append([]int{c.nGroups * k}, p.Value.Shape...); !tensor.SameShape(got.Shape, wantShape) {
					t.Fatalf("%s: grouped buffer shape %v, want %v", p.Name, got.Shape, wantShape)
				}
				var worst, norm float64
				for i := range want {
					worst = math.Max(worst, math.Abs(got.Data[i]-want[i]))
					norm = math.Max(norm, math.Abs(want[i]))
				}
				if norm == 0 {
					t.Fatalf("%s: the per-row gradients are all zero; the test checks nothing", p.Name)
				}
				if !(worst <= tol*norm) {
					t.Errorf("%s: grouped gradients differ from the per-group sums of PathBackward's per-row gradients by %.3g (max |want| %.3g)", p.Name, worst, norm)
				}
			}
		})
	}
}

// TestModuloPathBackwardGroupedAccumulates: like every Backward, the
// grouped gradients are added to the buffers (+=).
func TestModuloPathBackwardGroupedAccumulates(t *testing.T) {
	const k = 3
	groups := []int{0, 0, 1, 1, 1, 2}
	m, st, cot := groupedTestSetup(t, 43, len(groups), k)
	once := nn.NewGrads(nn.PerRow, m.Params(), 3*k)
	twice := nn.NewGrads(nn.PerRow, m.Params(), 3*k)
	if err := m.PathBackwardGrouped(st, cot, once, groups, 3); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := m.PathBackwardGrouped(st, cot, twice, groups, 3); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range m.Params() {
		for i, v := range once.Of[p].Data {
			if d := math.Abs(twice.Of[p].Data[i] - 2*v); !(d <= 1e-12*math.Max(1, math.Abs(v))) {
				t.Fatalf("%s[%d]: two calls gave %v, want 2 × %v", p.Name, i, twice.Of[p].Data[i], v)
			}
		}
	}
}

// TestModuloPerRowValues: PathBackwardGrouped forms every gradient in the
// group buffers, none per row.
func TestModuloPerRowValues(t *testing.T) {
	for _, cfg := range []models.ModuloConfig{{P: 7, DModel: 8, Heads: 2, MLP: 12}, models.DefaultModuloConfig()} {
		m, err := models.NewModulo[float64](cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.PerRowValues(); got != 0 {
			t.Errorf("%+v: PerRowValues %d, want 0", cfg, got)
		}
	}
}

// TestModuloPathBackwardGroupedNoGrads: with no buffers (nil or empty
// Grads) PathBackwardGrouped checks its arguments and does nothing else.
func TestModuloPathBackwardGroupedNoGrads(t *testing.T) {
	m, st, cot := groupedTestSetup(t, 47, 4, 2)
	for _, g := range []*nn.Grads[float64]{nil, nn.NewGrads[float64](nn.PerRow, nil, 4)} {
		if err := m.PathBackwardGrouped(st, cot, g, []int{0, 1, 1, 2}, 3); err != nil {
			t.Errorf("Grads %v: %v", g, err)
		}
	}
}

// TestModuloPathBackwardGroupedBadGroups: groups that decrease or leave
// [0, nGroups), and a cotangent count that the rows do not divide, are
// errors.
func TestModuloPathBackwardGroupedBadGroups(t *testing.T) {
	const k = 3
	m, st, cot := groupedTestSetup(t, 45, 6, k)
	for _, c := range []struct {
		name    string
		groups  []int
		nGroups int
		want    string
	}{
		{"decreasing", []int{0, 1, 1, 0, 2, 2}, 3, "nondecreasing"},
		{"too large", []int{0, 0, 1, 1, 1, 3}, 3, "nondecreasing in [0, 3)"},
		{"negative", []int{-1, 0, 1, 1, 1, 2}, 3, "nondecreasing in [0, 3)"},
		{"no groups", []int{0, 0, 0, 0, 0, 0}, 0, "[0, 0)"},
		{"rows", []int{0, 0, 1, 1}, 2, "18 cotangent rows for 4 grouped rows"},
		{"empty", nil, 1, "cotangent rows for 0 grouped rows"},
	} {
		n := c.nGroups
		if n < 1 {
			n = 1
		}
		g := nn.NewGrads(nn.PerRow, m.Params(), n*k)
		err := m.PathBackwardGrouped(st, cot, g, c.groups, c.nGroups)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s (groups %v of %d): got %v, want an error mentioning %q", c.name, c.groups, c.nGroups, err, c.want)
		}
	}
	// A buffer with the wrong number of groups: all of them, or one.
	g := nn.NewGrads(nn.PerRow, m.Params(), 2*k)
	if err := m.PathBackwardGrouped(st, cot, g, []int{0, 0, 1, 1, 1, 2}, 3); err == nil || !strings.Contains(err.Error(), "gradient buffer") {
		t.Errorf("buffers for 2 groups, 3 asked: got %v, want an error naming the gradient buffer", err)
	}
	for _, p := range []*nn.Param[float64]{m.Embedding.Weight, m.Linear1.Bias, m.Linear2.Bias} {
		g := nn.NewGrads(nn.PerRow, m.Params(), 3*k)
		g.Of[p] = tensor.New[float64](append([]int{2 * k}, p.Value.Shape...)...)
		if err := m.PathBackwardGrouped(st, cot, g, []int{0, 0, 1, 1, 1, 2}, 3); err == nil || !strings.Contains(err.Error(), "gradient buffer for "+p.Name) {
			t.Errorf("%s's buffer for 2 groups, 3 asked: got %v, want an error naming it", p.Name, err)
		}
	}
	if err := m.PathBackwardGrouped(st, cot, nn.NewGrads(nn.Summed, m.Params(), 0), []int{0, 0, 1, 1, 1, 2}, 3); err == nil || !strings.Contains(err.Error(), "PerRow") {
		t.Errorf("Summed buffers: got %v, want an error asking for PerRow", err)
	}
}

// BenchmarkModuloPathBackwardGrouped is one call of the EPK feature pass's
// backward step on the paper-size model in float64: 16 test samples
// (groups) × 5 quadrature nodes (rows), K = 2 cotangents per row, every
// parameter asked for. The path forward pass is outside the timer; the
// group buffers accumulate over the iterations (as they may: every
// backward adds).
func BenchmarkModuloPathBackwardGrouped(b *testing.B) {
	const nGroups, perGroup, k = 16, 5, 2
	m, err := models.NewModulo[float64](models.DefaultModuloConfig())
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	m.Init(rng)
	rows := nGroups * perGroup
	x := moduloTokens[float64](rng, m.Config.P, rows)
	p := &nn.Path[float64]{Delta: map[*nn.Param[float64]]*tensor.Dense[float64]{}, T: make([]float64, rows)}
	for _, prm := range m.Params() {
		d := tensor.New[float64](prm.Value.Shape...)
		nn.FillUniform(d.Data, 0.01, rng)
		p.Delta[prm] = d
	}
	groups := make([]int, rows)
	for i := range groups {
		groups[i] = i / perGroup
		p.T[i] = rng.Float64()
	}
	_, st, err := m.PathForward(x, p)
	if err != nil {
		b.Fatal(err)
	}
	cot := tensor.New[float64](rows*k, m.Classes())
	nn.FillUniform(cot.Data, 1, rng)
	g := nn.NewGrads(nn.PerRow, m.Params(), nGroups*k)
	b.ResetTimer()
	for b.Loop() {
		if err := m.PathBackwardGrouped(st, cot, g, groups, nGroups); err != nil {
			b.Fatal(err)
		}
	}
}
