package models_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// ResNet-9 has path rules of its own, and sums grouped gradients itself.
var (
	_ epk.PathModel[float32]        = (*models.ResNet9[float32])(nil)
	_ epk.GroupedPathModel[float32] = (*models.ResNet9[float32])(nil)
	_ epk.PathModel[float64]        = (*models.ResNet9[float64])(nil)
)

// resnet9PathSetup builds a small ResNet-9 with random weights, a batch,
// and a path with a random direction for every weight; the positions repeat
// (as quadrature nodes shared by samples do), so that the generic
// row-grouped path (epk.LayerPath) gets groups of several rows.
func resnet9PathSetup[T tensor.Float](t *testing.T, seed uint64, b int) (*models.ResNet9[T], *tensor.Dense[T], *nn.Path[T]) {
	t.Helper()
	m, err := models.NewResNet9[T](models.ResNet9Config{WidthDiv: 16, InChannels: 2, Classes: 3, Height: 13, Width: 12})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, seed+1))
	m.Init(rng)
	x := tensor.New[T](b, 2, 13, 12)
	nn.FillUniform(x.Data, 1, rng)
	p := &nn.Path[T]{Delta: map[*nn.Param[T]]*tensor.Dense[T]{}, T: make([]float64, b)}
	for _, prm := range m.Params() {
		d := tensor.New[T](prm.Value.Shape...)
		nn.FillUniform(d.Data, 0.05, rng)
		p.Delta[prm] = d
	}
	nodes := []float64{0, 1, 0.21132486540518713, 0.7886751345948129, 0.5}
	for i := range p.T {
		p.T[i] = nodes[rng.IntN(len(nodes))]
	}
	return m, x, p
}

// TestResNet9PathMatchesLayerPath: ResNet-9's own path rules give the
// generic row-grouped path's values (epk.LayerPath, which writes
// θ + tΔθ into the weights and runs the plain rules per group of equal
// positions) to rounding, in float64 and float32: outputs, JVPs along
// several tangents, per-row gradients and gradients summed per group.
func TestResNet9PathMatchesLayerPath(t *testing.T) {
	t.Run("float64", func(t *testing.T) { checkResNet9PathMatchesLayerPath[float64](t, 1e-12) })
	t.Run("float32", func(t *testing.T) { checkResNet9PathMatchesLayerPath[float32](t, 1e-5) })
}

func checkResNet9PathMatchesLayerPath[T tensor.Float](t *testing.T, tol float64) {
	const b, k, mDirs = 9, 2, 2
	m, x, p := resnet9PathSetup[T](t, 91, b)
	generic := epk.LayerPath[T](m)
	rel := func(a, b []T) float64 {
		var num, den float64
		for i := range a {
			num = math.Max(num, math.Abs(float64(a[i])-float64(b[i])))
			den = math.Max(den, math.Abs(float64(b[i])))
		}
		if den == 0 {
			t.Fatal("a reference of zeros: the comparison checks nothing")
		}
		return num / den
	}
	expect := func(what string, got, want []T) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
		}
		e := rel(got, want)
		if !(e <= tol) {
			t.Errorf("%s: relative difference %.3g from the generic path, want ≤ %.0e", what, e, tol)
		}
		t.Logf("%s: agrees with the generic path to %.2g", what, e)
	}

	y, st, err := m.PathForward(x, p)
	if err != nil {
		t.Fatal(err)
	}
	yg, stg, err := generic.PathForward(x, p)
	if err != nil {
		t.Fatal(err)
	}
	expect("outputs", y.Data, yg.Data)

	rng := rand.New(rand.NewPCG(93, 94))
	tan := &nn.Tangents[T]{M: mDirs, Of: map[*nn.Param[T]]*tensor.Dense[T]{}}
	for _, prm := range m.Params() {
		d := tensor.New[T](append([]int{mDirs}, prm.Value.Shape...)...)
		nn.FillUniform(d.Data, 0.05, rng)
		tan.Of[prm] = d
	}
	yj, dyj, err := m.PathJVP(x, p, tan)
	if err != nil {
		t.Fatal(err)
	}
	_, dyg, err := generic.PathJVP(x, p, tan)
	if err != nil {
		t.Fatal(err)
	}
	expect("PathJVP outputs", yj.Data, yg.Data)
	expect("PathJVP tangents", dyj.Data, dyg.Data)

	cot := tensor.New[T](b*k, 3)
	nn.FillUniform(cot.Data, 1, rng)
	perRow := nn.NewGrads(nn.PerRow, m.Params(), b*k)
	if _, err := m.PathBackward(st, cot, perRow, false); err != nil {
		t.Fatal(err)
	}
	perRowG := nn.NewGrads(nn.PerRow, m.Params(), b*k)
	if _, err := generic.PathBackward(stg, cot, perRowG, false); err != nil {
		t.Fatal(err)
	}
	for _, prm := range m.Params() {
		expect("per-row gradient of "+prm.Name, perRow.Of[prm].Data, perRowG.Of[prm].Data)
	}

	groups, nGroups := []int{0, 0, 0, 1, 1, 3, 3, 3, 3}, 4
	grouped := nn.NewGrads(nn.PerRow, m.Params(), nGroups*k)
	if err := m.PathBackwardGrouped(st, cot, grouped, groups, nGroups); err != nil {
		t.Fatal(err)
	}
	for _, prm := range m.Params() {
		size := len(prm.Value.Data)
		want := make([]T, nGroups*k*size)
		for r, gi := range groups {
			tensor.AddScaled(want[gi*k*size:(gi+1)*k*size], 1, perRowG.Of[prm].Data[r*k*size:(r+1)*k*size])
		}
		expect("grouped gradient of "+prm.Name, grouped.Of[prm].Data, want)
		for i, v := range grouped.Of[prm].Data[2*k*size : 3*k*size] {
			if v != 0 {
				t.Fatalf("grouped gradient of %s: the empty group 2 has %v at %d", prm.Name, v, i)
			}
		}
	}
	if err := m.PathBackwardGrouped(st, cot, nn.NewGrads(nn.Summed, m.Params(), 0), groups, nGroups); err == nil {
		t.Error("PathBackwardGrouped with Summed buffers: want an error")
	}
}

// TestResNet9PathDerivative: along the path, d/dt of PathForward (central
// differences in float64) is PathJVP along Δθ, the integrand of exact path
// integration, at every sample's own position.
func TestResNet9PathDerivative(t *testing.T) {
	const b = 6
	m, x, p := resnet9PathSetup[float64](t, 95, b)
	along := &nn.Tangents[float64]{M: 1, Of: map[*nn.Param[float64]]*tensor.Dense[float64]{}}
	for prm, d := range p.Delta {
		along.Of[prm] = &tensor.Dense[float64]{Shape: append([]int{1}, d.Shape...), Data: d.Data}
	}
	_, dy, err := m.PathJVP(x, p, along)
	if err != nil {
		t.Fatal(err)
	}
	const eps = 1e-6
	at := func(s float64) []float64 {
		q := &nn.Path[float64]{Delta: p.Delta, T: make([]float64, b)}
		for i, v := range p.T {
			q.T[i] = v + s
		}
		y, _, err := m.PathForward(x, q)
		if err != nil {
			t.Fatal(err)
		}
		return y.Data
	}
	yp, ym := at(eps), at(-eps)
	fd := make([]float64, len(yp))
	for i := range fd {
		fd[i] = (yp[i] - ym[i]) / (2 * eps)
	}
	if e := tensor.RelErr(dy.Data, fd); !(e <= 1e-6) {
		t.Errorf("PathJVP along Δθ differs from d/dt of PathForward by %.3g (relative), want ≤ 1e-6", e)
	}
}
