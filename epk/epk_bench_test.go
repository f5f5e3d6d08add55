package epk_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/optim"
	"github.com/explaind/explaind/tensor"
)

// tokens returns n random samples [a, p, b, p+1] and their labels.
func tokens[T tensor.Float](rng *rand.Rand, p, n int) (*tensor.Dense[T], []int) {
	x := tensor.New[T](n, 4)
	y := make([]int, n)
	for i := 0; i < n; i++ {
		a, b := rng.IntN(p), rng.IntN(p)
		x.Data[4*i], x.Data[4*i+1], x.Data[4*i+2], x.Data[4*i+3] = T(a), T(p), T(b), T(p+1)
		y[i] = (a + b) % p
	}
	return x, y
}

// paperStep returns the paper-size modulo transformer (P 113, d 64, 4
// heads, MLP 512) at random initial parameters, one AdamW step of the
// paper's settings (lr 1e-3, betas 0.9/0.98, weight decay 4) on a random
// batch of 512 samples split into its parts, a separate model instance for
// the evaluator, and 64 random test samples.
func paperStep[T tensor.Float](b *testing.B) (*models.Modulo[T], *epk.Update[T], *tensor.Dense[T]) {
	b.Helper()
	cfg := models.DefaultModuloConfig()
	m, err := models.NewModulo[T](cfg)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 11))
	m.Init(rng)
	x, y := tokens[T](rng, cfg.P, 512)
	xt, _ := tokens[T](rng, cfg.P, 64)
	opt, err := optim.NewAdamW[T](0.9, 0.98, 1e-8, 4.0)
	if err != nil {
		b.Fatal(err)
	}
	sp, err := epk.NewAdamWSplitter(opt)
	if err != nil {
		b.Fatal(err)
	}
	u := splitStep[T](b, m, opt, sp, x, y, 1e-3)
	ev, err := models.NewModulo[T](cfg)
	if err != nil {
		b.Fatal(err)
	}
	return ev, u, xt
}

// splitStep takes one step of opt (learning rate lr) on model's mean loss
// over the batch (x, y), in place, and returns it split into its parts by
// sp.
func splitStep[T tensor.Float](b *testing.B, model nn.Layer[T], opt optim.Optimizer[T], sp epk.Splitter[T], x *tensor.Dense[T], y []int, lr float64) *epk.Update[T] {
	b.Helper()
	params := model.Params()
	before := make([]*nn.Param[T], len(params))
	for i, p := range params {
		before[i] = &nn.Param[T]{Name: p.Name, Value: p.Value.Clone()}
	}
	g, err := epk.MeanGradient[T](model, x, y)
	if err != nil {
		b.Fatal(err)
	}
	if err := opt.Step(params, gradsOf(params, g), lr); err != nil {
		b.Fatal(err)
	}
	u, err := sp.Split(epk.StepInput[T]{Step: 0, LR: lr, Before: before, After: params, Grad: g})
	if err != nil {
		b.Fatal(err)
	}
	return u
}

// BenchmarkExactStep times the Exact rule on one AdamW step of the
// paper-size model for 64 test samples: locating every switching point,
// the piece check and the contributions (data, reg, residual and, with
// PerTensor, the 14 tensors: 17 tangents). Reported per step: JVP rows
// (with all tangents) and planning rows per sample, pieces per sample and
// the completeness error.
func BenchmarkExactStep(b *testing.B) {
	for _, c := range []struct {
		points    int
		perTensor bool
		skip      bool
	}{{3, false, false}, {3, true, false}, {4, true, false}, {6, true, false}, {3, true, true}} {
		name := fmt.Sprintf("GL%d/perTensor=%v/check=%v", c.points, c.perTensor, !c.skip)
		b.Run("float64/"+name, func(b *testing.B) { benchExact[float64](b, c.points, c.perTensor, c.skip) })
		b.Run("float32/"+name, func(b *testing.B) { benchExact[float32](b, c.points, c.perTensor, c.skip) })
	}
}

func benchExact[T tensor.Float](b *testing.B, points int, perTensor, skip bool) {
	m, u, xt := paperStep[T](b)
	ev, err := epk.NewEvaluator[T](m, epk.Options{Quadrature: epk.Quadrature{Rule: epk.Exact, Points: points, SkipCheck: skip}, PerTensor: perTensor})
	if err != nil {
		b.Fatal(err)
	}
	var res *epk.StepResult[T]
	b.ResetTimer()
	for b.Loop() {
		if res, err = ev.Contributions(u, xt, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportStep(b, res, xt.Shape[0])
}

func reportStep[T tensor.Float](b *testing.B, res *epk.StepResult[T], n int) {
	pieces := 0
	for _, p := range res.Plan.Pieces {
		pieces += p
	}
	b.ReportMetric(float64(pieces)/float64(n), "pieces/sample")
	b.ReportMetric(float64(res.Stats.JVPRows)/float64(n), "JVPs/sample")
	b.ReportMetric(float64(res.Stats.DerivRows)/float64(n), "1-tangent-rows/sample")
	b.ReportMetric(float64(res.Stats.ForwardRows)/float64(n), "fwd-rows/sample")
	b.Logf("%d samples: max completeness error %.2g against max |change| %.3g; %d tangents", n, res.MaxCompleteness, res.MaxChange, res.Stats.Tangents)
	b.ReportMetric(float64(res.Stats.Plan.Milliseconds()), "plan-ms")
	b.ReportMetric(float64(res.Stats.JVP.Milliseconds()), "jvp-ms")
}

// BenchmarkMidpointStep is the reference's rule on the same step, for
// comparison: 100 midpoint nodes per sample, 17 tangents.
func BenchmarkMidpointStep(b *testing.B) {
	for _, pts := range []int{10, 100} {
		b.Run(fmt.Sprintf("float64/midpoint%d", pts), func(b *testing.B) {
			m, u, xt := paperStep[float64](b)
			ev, err := epk.NewEvaluator[float64](m, epk.Options{Quadrature: epk.Quadrature{Rule: epk.Midpoint, Points: pts}, PerTensor: true})
			if err != nil {
				b.Fatal(err)
			}
			var res *epk.StepResult[float64]
			b.ResetTimer()
			for b.Loop() {
				if res, err = ev.Contributions(u, xt, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			reportStep(b, res, xt.Shape[0])
		})
	}
}

// BenchmarkExactFeatures times the reverse-mode features with the
// class-summed cotangent (K = 1) at the Exact rule's nodes, float32.
func BenchmarkExactFeatures(b *testing.B) {
	m, u, xt := paperStep[float32](b)
	ev, err := epk.NewEvaluator[float32](m, epk.Options{Quadrature: epk.Quadrature{Rule: epk.Exact, Points: 3}})
	if err != nil {
		b.Fatal(err)
	}
	plan, err := ev.Plan(u, xt)
	if err != nil {
		b.Fatal(err)
	}
	cot := tensor.New[float32](1, m.Classes())
	for i := range cot.Data {
		cot.Data[i] = 1
	}
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := ev.Features(u, xt, plan, cot); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(plan.Nodes))/float64(xt.Shape[0]), "backward-rows/sample")
}
