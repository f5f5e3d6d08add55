package models_test

import (
	"math/rand/v2"
	"testing"

	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// TestModuloPath compares the model's Path methods, with a position per
// sample, against Forward, JVP and Backward evaluated sample by sample at
// θ + t_b Δθ, and checks PathSwitches' derivatives against a central
// difference in t.
func TestModuloPath(t *testing.T) {
	const tol = 1e-12
	cfg := models.ModuloConfig{P: 7, DModel: 8, Heads: 2, MLP: 12}
	m, err := models.NewModulo[float64](cfg)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(31, 32))
	m.Init(rng)
	const b, k, mt = 5, 3, 2
	x := moduloTokens[float64](rng, cfg.P, b)
	params := m.Params()
	base := make([][]float64, len(params))
	p := &nn.Path[float64]{Delta: map[*nn.Param[float64]]*tensor.Dense[float64]{}, T: make([]float64, b)}
	tan := &nn.Tangents[float64]{M: mt, Of: map[*nn.Param[float64]]*tensor.Dense[float64]{}}
	for i, prm := range params {
		base[i] = append([]float64(nil), prm.Value.Data...)
		d := tensor.New[float64](prm.Value.Shape...)
		nn.FillUniform(d.Data, 0.3, rng)
		p.Delta[prm] = d
		v := tensor.New[float64](append([]int{mt}, prm.Value.Shape...)...)
		nn.FillUniform(v.Data, 1, rng)
		tan.Of[prm] = v
	}
	for i := range p.T {
		p.T[i] = rng.Float64()
	}
	setAt := func(tt float64) {
		for i, prm := range params {
			copy(prm.Value.Data, base[i])
			tensor.AddScaled(prm.Value.Data, tt, p.Delta[prm].Data)
		}
	}
	defer setAt(0)

	y, st, err := m.PathForward(x, p)
	if err != nil {
		t.Fatal(err)
	}
	yj, dyj, err := m.PathJVP(x, p, tan)
	if err != nil {
		t.Fatal(err)
	}
	if d := tensor.RelErr(yj.Data, y.Data); d > tol {
		t.Errorf("PathJVP's output differs from PathForward's by %.3g", d)
	}
	sw, dsw, err := m.PathSwitches(x, p, true)
	if err != nil {
		t.Fatal(err)
	}
	sw0, dsw0, err := m.PathSwitches(x, p, false)
	if err != nil {
		t.Fatal(err)
	}
	if dsw0 != nil || tensor.RelErr(sw0.Data, sw.Data) > tol {
		t.Errorf("PathSwitches without derivatives disagrees with itself")
	}
	if got, want := sw.Shape, []int{b, m.Switches()}; !tensor.SameShape(got, want) {
		t.Fatalf("PathSwitches shape %v, want %v", got, want)
	}
	cot := tensor.New[float64](b*k, cfg.P+2)
	nn.FillUniform(cot.Data, 1, rng)
	gRow := nn.NewGrads(nn.PerRow, params, b*k)
	gSum := nn.NewGrads(nn.Summed, params, 0)
	if _, err := m.PathBackward(st, cot, gRow, false); err != nil {
		t.Fatal(err)
	}
	if _, err := m.PathBackward(st, cot, gSum, false); err != nil {
		t.Fatal(err)
	}

	// Central difference of the switch values in t.
	const h = 1e-6
	shift := func(dt float64) *tensor.Dense[float64] {
		q := &nn.Path[float64]{Delta: p.Delta, T: make([]float64, b)}
		for i := range q.T {
			q.T[i] = p.T[i] + dt
		}
		s, _, err := m.PathSwitches(x, q, false)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	plus, minus := shift(h), shift(-h)
	fd := make([]float64, len(plus.Data))
	for i := range fd {
		fd[i] = (plus.Data[i] - minus.Data[i]) / (2 * h)
	}
	if d := tensor.RelErr(dsw.Data, fd); d > 1e-6 {
		t.Errorf("switch derivatives differ from a central difference by %.3g (relative)", d)
	}

	wantSum := nn.NewGrads(nn.Summed, params, 0)
	for s := 0; s < b; s++ {
		setAt(p.T[s])
		xs := &tensor.Dense[float64]{Shape: []int{1, 4}, Data: x.Data[4*s : 4*s+4]}
		ys, sts, err := m.Forward(xs)
		if err != nil {
			t.Fatal(err)
		}
		c := cfg.P + 2
		if d := tensor.RelErr(y.Data[s*c:(s+1)*c], ys.Data); d > tol {
			t.Errorf("sample %d: PathForward differs from Forward at θ+tΔθ by %.3g", s, d)
		}
		_, dys, err := m.JVP(xs, nil, tan)
		if err != nil {
			t.Fatal(err)
		}
		if d := tensor.RelErr(dyj.Data[s*mt*c:(s+1)*mt*c], dys.Data); d > tol {
			t.Errorf("sample %d: PathJVP differs from JVP at θ+tΔθ by %.3g", s, d)
		}
		cs := &tensor.Dense[float64]{Shape: []int{k, c}, Data: cot.Data[s*k*c : (s+1)*k*c]}
		gs := nn.NewGrads(nn.PerRow, params, k)
		if _, err := m.Backward(sts, cs, gs, false); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Backward(sts, cs, wantSum, false); err != nil {
			t.Fatal(err)
		}
		for _, prm := range params {
			n := len(prm.Value.Data)
			if d := tensor.RelErr(gRow.Of[prm].Data[s*k*n:(s+1)*k*n], gs.Of[prm].Data); d > tol {
				t.Errorf("sample %d: per-row gradient of %s differs by %.3g", s, prm.Name, d)
			}
		}
	}
	for _, prm := range params {
		if d := tensor.RelErr(gSum.Of[prm].Data, wantSum.Of[prm].Data); d > tol {
			t.Errorf("summed gradient of %s differs by %.3g", prm.Name, d)
		}
	}
	t.Logf("Modulo Path methods (%d samples at their own t, K = %d, M = %d) match per-sample evaluation to %.0e; switch derivatives match a central difference", b, k, mt, tol)
}

// TestModuloPathSwitchesAt checks the one-unit switch evaluation against
// PathSwitches, for linear1 and linear2 units.
func TestModuloPathSwitchesAt(t *testing.T) {
	cfg := models.ModuloConfig{P: 7, DModel: 8, Heads: 2, MLP: 12}
	m, err := models.NewModulo[float64](cfg)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(33, 34))
	m.Init(rng)
	const b = 40
	x := moduloTokens[float64](rng, cfg.P, b)
	p := &nn.Path[float64]{Delta: map[*nn.Param[float64]]*tensor.Dense[float64]{}, T: make([]float64, b)}
	for _, prm := range m.Params() {
		d := tensor.New[float64](prm.Value.Shape...)
		nn.FillUniform(d.Data, 0.3, rng)
		p.Delta[prm] = d
	}
	units := make([]int, b)
	for i := range p.T {
		p.T[i] = rng.Float64()
		units[i] = rng.IntN(m.Switches())
	}
	sw, _, err := m.PathSwitches(x, p, false)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.PathSwitchesAt(x, p, units)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float64, b)
	for i, j := range units {
		want[i] = sw.Data[i*m.Switches()+j]
	}
	if d := tensor.RelErr(got, want); d > 1e-13 {
		t.Errorf("PathSwitchesAt differs from PathSwitches by %.3g (relative)", d)
	}
	if _, err := m.PathSwitchesAt(x, p, make([]int, b-1)); err == nil {
		t.Error("too few units: want an error")
	}
	t.Logf("%d rows, units in both layers: PathSwitchesAt matches PathSwitches", b)
}
