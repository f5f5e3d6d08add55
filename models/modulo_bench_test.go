package models_test

import (
	"math/rand/v2"
	"testing"

	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// benchModulo returns the paper-size model (P 113) in float32, initialized,
// with n random samples and their targets (a+b mod P).
func benchModulo(b *testing.B, n int) (*models.Modulo[float32], *tensor.Dense[float32], []int) {
	b.Helper()
	m, err := models.NewModulo[float32](models.DefaultModuloConfig())
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	m.Init(rng)
	p := m.Config.P
	x := moduloTokens[float32](rng, p, n)
	target := make([]int, n)
	for i := range target {
		target[i] = (int(x.Data[4*i]) + int(x.Data[4*i+2])) % p
	}
	return m, x, target
}

// BenchmarkModuloStep is one full-batch training step of the paper's
// setting: forward and backward (summed gradients of the mean NLL) over
// 4000 samples.
func BenchmarkModuloStep(b *testing.B) {
	m, x, target := benchModulo(b, 4000)
	g := nn.NewGrads(nn.Summed, m.Params(), 0)
	b.ResetTimer()
	for b.Loop() {
		for _, v := range g.Of {
			v.Zero()
		}
		logp, st, err := m.Forward(x)
		if err != nil {
			b.Fatal(err)
		}
		_, dy, err := nn.NLLLoss(logp, target)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.Backward(st, dy, g, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkModuloPerSampleGrad computes every sample's own NLL gradient
// (PerRow) for 4000 samples: 4000 × 89024 float32 values, about 1.4 GB.
// The buffers are allocated and touched once before the timer starts (the
// first touch of fresh pages costs more than the whole backward pass) and
// zeroed in every iteration (timed).
func BenchmarkModuloPerSampleGrad(b *testing.B) {
	m, x, target := benchModulo(b, 4000)
	g := nn.NewGrads(nn.PerRow, m.Params(), len(target))
	for _, v := range g.Of {
		for i := range v.Data {
			v.Data[i] = 1
		}
	}
	b.ResetTimer()
	for b.Loop() {
		for _, v := range g.Of {
			v.Zero()
		}
		logp, st, err := m.Forward(x)
		if err != nil {
			b.Fatal(err)
		}
		cot, err := nn.NLLCotangent(logp, target, 1)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.Backward(st, cot, g, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkModuloJVP is one forward-mode pass over 2000 samples along one
// tangent in every parameter (M = 1), as the EPK quadrature needs.
func BenchmarkModuloJVP(b *testing.B) {
	m, x, _ := benchModulo(b, 2000)
	rng := rand.New(rand.NewPCG(3, 4))
	tan := &nn.Tangents[float32]{M: 1, Of: map[*nn.Param[float32]]*tensor.Dense[float32]{}}
	for _, p := range m.Params() {
		d := tensor.New[float32](append([]int{1}, p.Value.Shape...)...)
		nn.FillUniform(d.Data, 0.01, rng)
		tan.Of[p] = d
	}
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := m.JVP(x, nil, tan); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkModuloJacobian is a backward pass with one cotangent per class
// (K = 115) for 100 samples: the per-class parameter gradients summed over
// samples, as a per-parameter, per-class kernel query needs.
func BenchmarkModuloJacobian(b *testing.B) {
	m, x, _ := benchModulo(b, 100)
	c := m.Classes()
	dy := tensor.New[float32](100*c, c)
	for r := 0; r < 100*c; r++ {
		dy.Data[r*c+r%c] = 1
	}
	g := nn.NewGrads(nn.Summed, m.Params(), 0)
	b.ResetTimer()
	for b.Loop() {
		_, st, err := m.Forward(x)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.Backward(st, dy, g, false); err != nil {
			b.Fatal(err)
		}
	}
}
