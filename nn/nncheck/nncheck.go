// Package nncheck verifies a layer's derivative rules against central
// finite differences in float64. Every layer of explaind, and any layer a
// user writes, can be checked with one call:
//
//	errs := nncheck.Layer(layer, x, nncheck.Options{})
//
// It checks, for random directions and cotangents:
//   - JVP's primal output against Forward;
//   - JVP along parameter and input tangents (M of them at once) against
//     (f(θ+εv, x+εu) − f(θ−εv, x−εu)) / 2ε;
//   - Backward (K cotangents per sample) against the same finite
//     differences through ⟨dy, Df·v⟩ = ⟨Backward(dy), v⟩, one parameter at a
//     time and for the input, so an error names the tensor it is in;
//   - per-row gradients: each row equals the summed gradient of that
//     cotangent row alone;
//   - that samples do not leak into each other (each sample alone gives its
//     row of the batched output).
package nncheck

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// Options tune a check. Zero values select the defaults.
type Options struct {
	K, M int // cotangents per sample and tangent directions (default 2 each)
	// Eps is the finite-difference step (default 1e-6).
	Eps float64
	// Tol is the relative tolerance (default 1e-6).
	Tol float64
	// DiscreteInput marks inputs that are indices (Embedding): no input
	// tangent is checked.
	DiscreteInput bool
	// Seed seeds the random directions.
	Seed uint64
}

func (o *Options) defaults() {
	if o.K == 0 {
		o.K = 2
	}
	if o.M == 0 {
		o.M = 2
	}
	if o.Eps == 0 {
		o.Eps = 1e-6
	}
	if o.Tol == 0 {
		o.Tol = 1e-6
	}
}

func randn(rng *rand.Rand, shape ...int) *tensor.Dense[float64] {
	t := tensor.New[float64](shape...)
	for i := range t.Data {
		t.Data[i] = rng.NormFloat64()
	}
	return t
}

func dot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// forwardAt evaluates the layer with parameters θ + s·v and input x + s·u
// (u may be nil), restoring the parameters afterwards.
func forwardAt(l nn.Layer[float64], x, u *tensor.Dense[float64], v map[*nn.Param[float64]][]float64, s float64) (*tensor.Dense[float64], error) {
	saved := map[*nn.Param[float64]][]float64{}
	for p, dir := range v {
		saved[p] = append([]float64(nil), p.Value.Data...)
		tensor.AddScaled(p.Value.Data, s, dir)
	}
	defer func() {
		for p, old := range saved {
			copy(p.Value.Data, old)
		}
	}()
	xs := x
	if u != nil {
		xs = x.Clone()
		tensor.AddScaled(xs.Data, s, u.Data)
	}
	y, _, err := l.Forward(xs)
	return y, err
}

// fdDirectional returns the central difference of f along (v, u).
func fdDirectional(l nn.Layer[float64], x, u *tensor.Dense[float64], v map[*nn.Param[float64]][]float64, eps float64) (*tensor.Dense[float64], error) {
	yp, err := forwardAt(l, x, u, v, eps)
	if err != nil {
		return nil, err
	}
	ym, err := forwardAt(l, x, u, v, -eps)
	if err != nil {
		return nil, err
	}
	d := tensor.New[float64](yp.Shape...)
	for i := range d.Data {
		d.Data[i] = (yp.Data[i] - ym.Data[i]) / (2 * eps)
	}
	return d, nil
}

// Layer runs every check on l at input x and returns the failures found
// (nil when the layer passes).
func Layer(l nn.Layer[float64], x *tensor.Dense[float64], opt Options) []error {
	opt.defaults()
	rng := rand.New(rand.NewPCG(opt.Seed, 0x5eed))
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	check := func(what string, got, want []float64) {
		if e := tensor.RelErr(got, want); !(e <= opt.Tol) {
			fail("%s: relative error %.3g exceeds %.3g", what, e, opt.Tol)
		}
	}

	y, st, err := l.Forward(x)
	if err != nil {
		return []error{fmt.Errorf("Forward: %w", err)}
	}
	b := x.Shape[0]
	params := l.Params()

	// Samples are independent.
	for bb := 0; bb < b; bb++ {
		n := len(x.Data) / b
		xb := &tensor.Dense[float64]{Shape: append([]int{1}, x.Shape[1:]...), Data: x.Data[bb*n : (bb+1)*n]}
		yb, _, err := l.Forward(xb)
		if err != nil {
			fail("Forward of sample %d alone: %v", bb, err)
			continue
		}
		ny := len(y.Data) / b
		check(fmt.Sprintf("sample %d alone vs in the batch", bb), yb.Data, y.Data[bb*ny:(bb+1)*ny])
	}

	// JVP with M directions in every parameter and the input.
	m := opt.M
	tan := &nn.Tangents[float64]{M: m, Of: map[*nn.Param[float64]]*tensor.Dense[float64]{}}
	for _, p := range params {
		tan.Of[p] = randn(rng, append([]int{m}, p.Value.Shape...)...)
	}
	var dx *tensor.Dense[float64]
	if !opt.DiscreteInput {
		dx = randn(rng, append([]int{b * m}, x.Shape[1:]...)...)
	}
	yj, dyj, err := l.JVP(x, dx, tan)
	if err != nil {
		return append(errs, fmt.Errorf("JVP: %w", err))
	}
	check("JVP primal vs Forward", yj.Data, y.Data)
	nx, ny := len(x.Data)/b, len(y.Data)/b
	for mm := 0; mm < m; mm++ {
		v := map[*nn.Param[float64]][]float64{}
		for _, p := range params {
			n := p.Value.Numel()
			v[p] = tan.Of[p].Data[mm*n : (mm+1)*n]
		}
		var u *tensor.Dense[float64]
		if dx != nil {
			u = tensor.New[float64](x.Shape...)
			for bb := 0; bb < b; bb++ {
				copy(u.Data[bb*nx:(bb+1)*nx], dx.Data[(bb*m+mm)*nx:(bb*m+mm+1)*nx])
			}
		}
		fd, err := fdDirectional(l, x, u, v, opt.Eps)
		if err != nil {
			return append(errs, err)
		}
		got := make([]float64, 0, len(fd.Data))
		for bb := 0; bb < b; bb++ {
			got = append(got, dyj.Data[(bb*m+mm)*ny:(bb*m+mm+1)*ny]...)
		}
		check(fmt.Sprintf("JVP direction %d vs finite differences", mm), got, fd.Data)
	}

	// Backward with K cotangents per sample, summed gradients.
	k := opt.K
	cot := randn(rng, append([]int{b * k}, y.Shape[1:]...)...)
	g := nn.NewGrads(nn.Summed, params, 0)
	dxb, err := l.Backward(st, cot, g, !opt.DiscreteInput)
	if err != nil {
		return append(errs, fmt.Errorf("Backward: %w", err))
	}
	// ⟨cot, D⟩ summed over the K cotangents of each sample.
	pair := func(d *tensor.Dense[float64]) float64 {
		var s float64
		for bb := 0; bb < b; bb++ {
			for kk := 0; kk < k; kk++ {
				s += dot(cot.Data[(bb*k+kk)*ny:(bb*k+kk+1)*ny], d.Data[bb*ny:(bb+1)*ny])
			}
		}
		return s
	}
	scalarCheck := func(what string, got, want, scale float64) {
		if e := math.Abs(got-want) / math.Max(scale, 1e-30); !(e <= opt.Tol) {
			fail("%s: got %.10g, finite differences %.10g (relative error %.3g)", what, got, want, e)
		}
	}
	for _, p := range params {
		dir := randn(rng, p.Value.Shape...).Data
		fd, err := fdDirectional(l, x, nil, map[*nn.Param[float64]][]float64{p: dir}, opt.Eps)
		if err != nil {
			return append(errs, err)
		}
		want := pair(fd)
		got := dot(g.Of[p].Data, dir)
		scalarCheck("Backward gradient of "+p.Name, got, want, math.Sqrt(dot(g.Of[p].Data, g.Of[p].Data)*dot(dir, dir)))
	}
	if !opt.DiscreteInput {
		u := randn(rng, x.Shape...)
		fd, err := fdDirectional(l, x, u, nil, opt.Eps)
		if err != nil {
			return append(errs, err)
		}
		var got float64
		for bb := 0; bb < b; bb++ {
			for kk := 0; kk < k; kk++ {
				got += dot(dxb.Data[(bb*k+kk)*nx:(bb*k+kk+1)*nx], u.Data[bb*nx:(bb+1)*nx])
			}
		}
		scalarCheck("Backward input cotangent", got, pair(fd), math.Sqrt(dot(dxb.Data, dxb.Data)*dot(u.Data, u.Data)))
	}

	// Per-row gradients: row r equals the summed gradient of cotangent r alone.
	if len(params) > 0 {
		pr := nn.NewGrads(nn.PerRow, params, b*k)
		if _, err := l.Backward(st, cot, pr, false); err != nil {
			return append(errs, fmt.Errorf("Backward per row: %w", err))
		}
		for r := 0; r < b*k; r++ {
			one := tensor.New[float64](cot.Shape...)
			copy(one.Data[r*ny:(r+1)*ny], cot.Data[r*ny:(r+1)*ny])
			gr := nn.NewGrads(nn.Summed, params, 0)
			if _, err := l.Backward(st, one, gr, false); err != nil {
				return append(errs, err)
			}
			for _, p := range params {
				n := p.Value.Numel()
				check(fmt.Sprintf("per-row gradient of %s, row %d", p.Name, r), pr.Of[p].Data[r*n:(r+1)*n], gr.Of[p].Data)
			}
		}
	}
	return errs
}
