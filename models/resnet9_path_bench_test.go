package models_test

import (
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// Measure with:
//
//	OPENBLAS_NUM_THREADS=1 go test -tags openblas -run XXX -bench ResNet9Path -benchtime 5x ./models/
//
// BenchmarkResNet9Path compares ResNet-9's own path rules ("native") with
// the generic row-grouped path (epk.LayerPath, "generic") on a width/8
// Fashion-2 model (28×28×1, 2 classes) in float32, for 64 rows whose
// positions are all distinct (per-sample quadrature nodes: the generic path
// runs one group per row) or take 8 values (nodes shared by all samples:
// 8 groups). "jvp" is PathJVP along Δθ (the contributions' integrand);
// "backward" is PathForward and PathBackwardGrouped with K = 2 cotangents
// into 8 groups (the feature pass; for the generic path its PathBackward
// with per-row buffers, then the sums per group, as epk does without a
// grouped backward). "held" is the reverse-mode planning's call:
// PathForward and PathBackwardGrouped with one cotangent per row and every
// row its own group. Besides wall time per row it reports the process's
// CPU time (user + system) per row, which other jobs on shared cores
// disturb less.
func BenchmarkResNet9Path(b *testing.B) {
	const rows, k, nGroups = 64, 2, 8
	m, err := models.NewResNet9[float32](models.ResNet9Config{WidthDiv: 8, InChannels: 1, Classes: 2, Height: 28, Width: 28})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	m.Init(rng)
	x := tensor.New[float32](rows, 1, 28, 28)
	nn.FillUniform(x.Data, 1, rng)
	delta := map[*nn.Param[float32]]*tensor.Dense[float32]{}
	along := &nn.Tangents[float32]{M: 1, Of: map[*nn.Param[float32]]*tensor.Dense[float32]{}}
	for _, p := range m.Params() {
		d := tensor.New[float32](p.Value.Shape...)
		nn.FillUniform(d.Data, 0.01, rng)
		delta[p] = d
		along.Of[p] = &tensor.Dense[float32]{Shape: append([]int{1}, d.Shape...), Data: d.Data}
	}
	groups := make([]int, rows)
	for i := range groups {
		groups[i] = i * nGroups / rows
	}
	cot := tensor.New[float32](rows*k, 2)
	nn.FillUniform(cot.Data, 1, rng)
	for _, shared := range []int{0, 8} {
		p := &nn.Path[float32]{Delta: delta, T: make([]float64, rows)}
		for i := range p.T {
			if shared > 0 {
				p.T[i] = float64(i%shared) / float64(shared)
			} else {
				p.T[i] = rng.Float64()
			}
		}
		positions := "distinct"
		if shared > 0 {
			positions = fmt.Sprintf("%d-shared", shared)
		}
		for _, form := range []struct {
			name  string
			model epk.PathModel[float32]
		}{{"native", m}, {"generic", epk.LayerPath[float32](m)}} {
			b.Run(fmt.Sprintf("jvp/%s/%s", positions, form.name), func(b *testing.B) {
				defer reportCPUPerRow(b, rows)()
				for i := 0; i < b.N; i++ {
					if _, _, err := form.model.PathJVP(x, p, along); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(fmt.Sprintf("backward/%s/%s", positions, form.name), func(b *testing.B) {
				defer reportCPUPerRow(b, rows)()
				for i := 0; i < b.N; i++ {
					_, st, err := form.model.PathForward(x, p)
					if err != nil {
						b.Fatal(err)
					}
					g := nn.NewGrads(nn.PerRow, m.Params(), nGroups*k)
					if gm, ok := form.model.(epk.GroupedPathModel[float32]); ok {
						if err := gm.PathBackwardGrouped(st, cot, g, groups, nGroups); err != nil {
							b.Fatal(err)
						}
						continue
					}
					pr := nn.NewGrads(nn.PerRow, m.Params(), rows*k)
					if _, err := form.model.PathBackward(st, cot, pr, false); err != nil {
						b.Fatal(err)
					}
					for _, prm := range m.Params() {
						size := k * len(prm.Value.Data)
						for r, gi := range groups {
							tensor.AddScaled(g.Of[prm].Data[gi*size:(gi+1)*size], 1, pr.Of[prm].Data[r*size:(r+1)*size])
						}
					}
				}
			})
		}
		// The reverse-mode planning's call: one cotangent (1, −1) per row,
		// every row its own group (per-node gradients).
		b.Run(fmt.Sprintf("held/%s/native", positions), func(b *testing.B) {
			one := tensor.New[float32](rows, 2)
			own := make([]int, rows)
			for i := range own {
				one.Data[2*i], one.Data[2*i+1] = 1, -1
				own[i] = i
			}
			defer reportCPUPerRow(b, rows)()
			for i := 0; i < b.N; i++ {
				_, st, err := m.PathForward(x, p)
				if err != nil {
					b.Fatal(err)
				}
				g := nn.NewGrads(nn.PerRow, m.Params(), rows)
				if err := m.PathBackwardGrouped(st, one, g, own, rows); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// reportCPUPerRow starts measuring and returns the function that reports
// wall and CPU (user + system) milliseconds per row of b.N iterations.
func reportCPUPerRow(b *testing.B, rows int) func() {
	start := cpuTime()
	b.ResetTimer()
	return func() {
		b.StopTimer()
		n := float64(b.N * rows)
		b.ReportMetric(b.Elapsed().Seconds()/n*1e3, "ms/row")
		b.ReportMetric((cpuTime()-start).Seconds()/n*1e3, "cpu-ms/row")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
