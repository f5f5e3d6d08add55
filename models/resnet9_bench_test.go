package models_test

import (
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// Measure with:
//
//	OPENBLAS_NUM_THREADS=1 go test -tags openblas -run XXX -bench ResNet9 -benchtime 3x ./models/
//
// The project target for BenchmarkResNet9Step is 3.8 s (PyTorch on the same
// 2-core machine). The convolutions spread their chunks over one goroutine
// per core, each calling GEMM; OpenBLAS's own threads (its default) then
// compete with them and spin between calls, which costs about 1 s here.

// benchResNet9 returns an initialized float32 ResNet-9 and a random batch.
func benchResNet9(b *testing.B, div, batch int) (*models.ResNet9[float32], *tensor.Dense[float32], []int) {
	b.Helper()
	m, err := models.NewResNet9[float32](models.ResNet9Config{WidthDiv: div, InChannels: 3, Classes: 2, Height: 32, Width: 32})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	m.Init(rng)
	x := tensor.New[float32](batch, 3, 32, 32)
	for i := range x.Data {
		x.Data[i] = float32(rng.NormFloat64())
	}
	target := make([]int, batch)
	for i := range target {
		target[i] = rng.IntN(2)
	}
	return m, x, target
}

// reportPeakRSS reports the process's peak resident memory (Linux only).
func reportPeakRSS(b *testing.B) {
	buf, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(buf), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			if kb, err := strconv.Atoi(f[1]); err == nil {
				b.ReportMetric(float64(kb)/1024, "peakRSS-MB")
			}
		}
	}
}

// BenchmarkResNet9Step is one SGD training step of the full-width model
// (batch 256 of 32×32×3, 2 classes): forward, mean NLL, backward with
// summed gradients (the update itself is negligible).
func BenchmarkResNet9Step(b *testing.B) {
	m, x, target := benchResNet9(b, 1, 256)
	g := nn.NewGrads(nn.Summed, m.Params(), 0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, buf := range g.Of {
			buf.Zero()
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
	b.StopTimer()
	reportPeakRSS(b)
}

// BenchmarkResNet9PerSampleGrad computes per-sample gradients of a batch of
// 32 at width_div 4.
func BenchmarkResNet9PerSampleGrad(b *testing.B) {
	m, x, target := benchResNet9(b, 4, 32)
	g := nn.NewGrads(nn.PerRow, m.Params(), 32)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
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

// BenchmarkResNet9JVP evaluates the outputs and 4 parameter tangents of a
// batch of 64 at width_div 4.
func BenchmarkResNet9JVP(b *testing.B) {
	m, x, _ := benchResNet9(b, 4, 64)
	const dirs = 4
	rng := rand.New(rand.NewPCG(3, 4))
	tan := &nn.Tangents[float32]{M: dirs, Of: map[*nn.Param[float32]]*tensor.Dense[float32]{}}
	for _, p := range m.Params() {
		d := tensor.New[float32](append([]int{dirs}, p.Value.Shape...)...)
		nn.FillUniform(d.Data, 0.01, rng)
		tan.Of[p] = d
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := m.JVP(x, nil, tan); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConv2d is the full-width model's costliest convolution shape
// (128 → 128 channels, 3×3, 16×16 images, batch 256): forward and backward
// with the input cotangent and the summed weight gradient.
func BenchmarkConv2d(b *testing.B) {
	conv := nn.NewConv2d[float32]("c", 128, 128, 3, 1, 1)
	rng := rand.New(rand.NewPCG(5, 6))
	conv.InitUniform(rng)
	x := tensor.New[float32](256, 128, 16, 16)
	nn.FillUniform(x.Data, 1, rng)
	dy := tensor.New[float32](256, 128, 16, 16)
	nn.FillUniform(dy.Data, 1, rng)
	g := nn.NewGrads(nn.Summed, conv.Params(), 0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, st, err := conv.Forward(x)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := conv.Backward(st, dy, g, true); err != nil {
			b.Fatal(err)
		}
	}
	// 3 GEMMs of 2·128·1152·65536 flops each.
	b.ReportMetric(3*2*128*1152*65536*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}
