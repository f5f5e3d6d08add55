package nn_test

import (
	"math/rand/v2"
	"testing"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// pathLayer is a layer with the Path methods.
type pathLayer interface {
	nn.Layer[float64]
	PathForward(x *tensor.Dense[float64], p *nn.Path[float64]) (*tensor.Dense[float64], nn.State, error)
	PathBackward(st nn.State, dy *tensor.Dense[float64], g *nn.Grads[float64], needDx bool) (*tensor.Dense[float64], error)
	PathJVP(x, dx *tensor.Dense[float64], p *nn.Path[float64], t *nn.Tangents[float64]) (*tensor.Dense[float64], *tensor.Dense[float64], error)
}

// rowsOf returns rows [lo, hi) of a batch-major array whose first axis has
// n entries.
func rowsOf(a *tensor.Dense[float64], lo, hi int) *tensor.Dense[float64] {
	per := len(a.Data) / a.Shape[0]
	return &tensor.Dense[float64]{Shape: append([]int{hi - lo}, a.Shape[1:]...), Data: a.Data[lo*per : hi*per]}
}

// checkPathLayer compares the Path methods of l, with a position per
// sample, against the plain methods evaluated sample by sample at the
// parameters θ + t_b Δθ. The last parameter gets no direction (it stays
// put), so absent directions are covered too.
func checkPathLayer(t *testing.T, rng *rand.Rand, l pathLayer, x, dx *tensor.Dense[float64], k, m int) {
	t.Helper()
	checkPathLayerAt(t, rng, l, x, dx, k, m, nil)
}

// checkPathLayerAt is checkPathLayer at the positions ts (random ones for
// nil ts).
func checkPathLayerAt(t *testing.T, rng *rand.Rand, l pathLayer, x, dx *tensor.Dense[float64], k, m int, ts []float64) {
	t.Helper()
	const tol = 1e-12
	params := l.Params()
	b := x.Shape[0]
	base := make([][]float64, len(params))
	p := &nn.Path[float64]{Delta: map[*nn.Param[float64]]*tensor.Dense[float64]{}, T: make([]float64, b)}
	tan := &nn.Tangents[float64]{M: m, Of: map[*nn.Param[float64]]*tensor.Dense[float64]{}}
	for i, prm := range params {
		base[i] = append([]float64(nil), prm.Value.Data...)
		if i < len(params)-1 || len(params) == 1 {
			p.Delta[prm] = randInput(rng, prm.Value.Shape...)
		}
		tan.Of[prm] = randInput(rng, append([]int{m}, prm.Value.Shape...)...)
	}
	for i := range p.T {
		p.T[i] = rng.Float64()*1.4 - 0.2
	}
	p.T[0] = 0
	if b > 1 {
		p.T[1] = 1
	}
	if ts != nil {
		copy(p.T, ts)
	}
	restore := func() {
		for i, prm := range params {
			copy(prm.Value.Data, base[i])
		}
	}
	defer restore()

	y, st, err := l.PathForward(x, p)
	if err != nil {
		t.Fatal(err)
	}
	yj, dyj, err := l.PathJVP(x, dx, p, tan)
	if err != nil {
		t.Fatal(err)
	}
	if d := tensor.RelErr(yj.Data, y.Data); d > tol {
		t.Errorf("PathJVP's output differs from PathForward's by %.3g", d)
	}
	cot := randInput(rng, append([]int{b * k}, y.Shape[1:]...)...)
	gRow := nn.NewGrads(nn.PerRow, params, b*k)
	gSum := nn.NewGrads(nn.Summed, params, 0)
	dxp, err := l.PathBackward(st, cot, gRow, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.PathBackward(st, cot, gSum, false); err != nil {
		t.Fatal(err)
	}

	wantSum := nn.NewGrads(nn.Summed, params, 0)
	for s := 0; s < b; s++ {
		for i, prm := range params {
			copy(prm.Value.Data, base[i])
			if d := p.Delta[prm]; d != nil {
				tensor.AddScaled(prm.Value.Data, p.T[s], d.Data)
			}
		}
		xs := rowsOf(x, s, s+1)
		ys, sts, err := l.Forward(xs)
		if err != nil {
			t.Fatal(err)
		}
		if d := tensor.RelErr(rowsOf(y, s, s+1).Data, ys.Data); d > tol {
			t.Errorf("sample %d (t = %.3f): PathForward differs from Forward at θ+tΔθ by %.3g", s, p.T[s], d)
		}
		var dxs *tensor.Dense[float64]
		if dx != nil {
			dxs = rowsOf(dx, s*m, (s+1)*m)
		}
		_, dys, err := l.JVP(xs, dxs, tan)
		if err != nil {
			t.Fatal(err)
		}
		if d := tensor.RelErr(rowsOf(dyj, s*m, (s+1)*m).Data, dys.Data); d > tol {
			t.Errorf("sample %d (t = %.3f): PathJVP tangents differ from JVP at θ+tΔθ by %.3g", s, p.T[s], d)
		}
		gs := nn.NewGrads(nn.PerRow, params, k)
		dxr, err := l.Backward(sts, rowsOf(cot, s*k, (s+1)*k), gs, true)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Backward(sts, rowsOf(cot, s*k, (s+1)*k), wantSum, false); err != nil {
			t.Fatal(err)
		}
		if dxr != nil {
			if d := tensor.RelErr(rowsOf(dxp, s*k, (s+1)*k).Data, dxr.Data); d > tol {
				t.Errorf("sample %d (t = %.3f): PathBackward's dx differs by %.3g", s, p.T[s], d)
			}
		}
		for _, prm := range params {
			if d := tensor.RelErr(rowsOf(gRow.Of[prm], s*k, (s+1)*k).Data, gs.Of[prm].Data); d > tol {
				t.Errorf("sample %d: PathBackward's per-row gradient of %s differs by %.3g", s, prm.Name, d)
			}
		}
	}
	for _, prm := range params {
		if d := tensor.RelErr(gSum.Of[prm].Data, wantSum.Of[prm].Data); d > tol {
			t.Errorf("PathBackward's summed gradient of %s differs by %.3g", prm.Name, d)
		}
	}
	t.Logf("%d samples, K = %d, M = %d: Path methods match sample-by-sample evaluation at θ+tΔθ to %.0e", b, k, m, tol)
}

func TestPathMethods(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	t.Run("Linear", func(t *testing.T) {
		l := nn.NewLinear[float64]("l", 5, 4, true)
		initParams(rng, l)
		checkPathLayer(t, rng, l, randInput(rng, 4, 5), randInput(rng, 4*3, 5), 2, 3)
	})
	t.Run("Linear positions", func(t *testing.T) {
		l := nn.NewLinear[float64]("l", 3, 6, true)
		initParams(rng, l)
		checkPathLayer(t, rng, l, randInput(rng, 3, 4, 3), randInput(rng, 3*2, 4, 3), 3, 2)
	})
	t.Run("Linear no bias M=1", func(t *testing.T) {
		l := nn.NewLinear[float64]("l", 3, 2, false)
		initParams(rng, l)
		checkPathLayer(t, rng, l, randInput(rng, 5, 3), nil, 1, 1)
	})
	t.Run("Embedding", func(t *testing.T) {
		e := nn.NewEmbedding[float64]("e", 7, 4)
		e.Scale = 2
		initParams(rng, e)
		x := tensor.New[float64](4, 3)
		for i := range x.Data {
			x.Data[i] = float64(rng.IntN(7))
		}
		checkPathLayer(t, rng, e, x, nil, 2, 3)
	})
	for _, c := range []struct {
		name         string
		heads, d, dh int
		last         bool
		b, s, k, m   int
	}{
		{"Attention last", 2, 6, 3, true, 4, 4, 3, 2},
		{"Attention all", 3, 6, 2, false, 3, 3, 2, 3},
		{"Attention M=1 K=1", 2, 4, 2, true, 3, 5, 1, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := newHeads(t, c.heads, c.d, c.dh, c.last)
			initParams(rng, a)
			checkPathLayer(t, rng, a, randInput(rng, c.b, c.s, c.d), randInput(rng, c.b*c.m, c.s, c.d), c.k, c.m)
		})
	}
}

// TestPathNil checks that a nil path is the plain layer.
func TestPathNil(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	l := nn.NewLinear[float64]("l", 3, 2, true)
	initParams(rng, l)
	x := randInput(rng, 2, 3)
	y, _, err := l.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	yp, _, err := l.PathForward(x, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := tensor.RelErr(yp.Data, y.Data); d != 0 {
		t.Errorf("nil path differs from Forward by %g", d)
	}
	if _, _, err := l.PathForward(x, &nn.Path[float64]{T: []float64{0}}); err == nil {
		t.Error("a path with one position for two samples: want an error")
	}
}
