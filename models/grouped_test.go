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
		subset  bool // ask for some parameters only
	}{
		{"contiguous", 3, []int{0, 0, 1, 1, 1, 2}, 3, false},
		{"empty groups", 3, []int{0, 0, 2, 2, 2, 3}, 5, false},
		{"one group", 3, []int{0, 0, 0, 0, 0, 0}, 1, false},
		{"singletons", 3, []int{0, 1, 2, 3, 4, 5}, 6, false},
		{"some parameters", 3, []int{0, 0, 1, 1, 1, 2}, 3, true},
		{"K=1", 1, []int{0, 1, 1, 1, 1, 3}, 4, false},
		{"K=2, uneven", 2, []int{0, 2, 2, 2, 2, 4, 4}, 6, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			k, rows := c.k, len(c.groups)
			m, st, cot := groupedTestSetup(t, 41, rows, k)
			params := m.Params()
			perRow := nn.NewGrads(nn.PerRow, params, rows*k)
			if err := m.PathBackward(st, cot, perRow); err != nil {
				t.Fatal(err)
			}
			asked := params
			if c.subset { // a linear weight, a bias, two attention tensors
				asked = nil
				for _, p := range params {
					if p == m.Linear1.Weight || p == m.Linear2.Bias || strings.Contains(p.Name, "head1_encoder") || strings.Contains(p.Name, "head2_decoder") {
						asked = append(asked, p)
					}
				}
				if len(asked) != 4 {
					t.Fatalf("picked %d parameters, want 4", len(asked))
				}
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
				if worst > tol*norm {
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
			if d := math.Abs(twice.Of[p].Data[i] - 2*v); d > 1e-12*math.Max(1, math.Abs(v)) {
				t.Fatalf("%s[%d]: two calls gave %v, want 2 × %v", p.Name, i, twice.Of[p].Data[i], v)
			}
		}
	}
}

// TestModuloPerRowValues: all parameter values but the weights of the
// three linear layers (linear1, linear2, decoder) and of the attention
// heads, i.e. the embedding and the biases.
func TestModuloPerRowValues(t *testing.T) {
	for _, cfg := range []models.ModuloConfig{{P: 7, DModel: 8, Heads: 2, MLP: 12}, {P: 11, DModel: 12, Heads: 3, MLP: 5}, models.DefaultModuloConfig()} {
		m, err := models.NewModulo[float64](cfg)
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for _, p := range m.Params() {
			total += len(p.Value.Data)
		}
		c := cfg.P + 2
		want := c*cfg.DModel + cfg.MLP + cfg.DModel // embedding, linear1 and linear2 biases
		if got := m.PerRowValues(); got != want {
			t.Errorf("%+v: PerRowValues %d, want %d (of %d values: the embedding and the biases)", cfg, got, want, total)
		}
	}
	// The paper's model: 89024 values, of which 64·512·2 + 115·64 = 72896
	// are the linear weights and 2·64·64 = 8192 the attention weights.
	m, _ := models.NewModulo[float64](models.DefaultModuloConfig())
	if got := m.PerRowValues(); got != 89024-72896-8192 {
		t.Errorf("paper's model: PerRowValues %d, want %d", got, 89024-72896-8192)
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
	// A buffer with the wrong number of groups.
	g := nn.NewGrads(nn.PerRow, m.Params(), 2*k)
	if err := m.PathBackwardGrouped(st, cot, g, []int{0, 0, 1, 1, 1, 2}, 3); err == nil || !strings.Contains(err.Error(), "gradient buffer") {
		t.Errorf("buffers for 2 groups, 3 asked: got %v, want an error naming the gradient buffer", err)
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
