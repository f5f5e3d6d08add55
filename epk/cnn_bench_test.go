package epk_test

import (
	"math/rand/v2"
	"testing"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/optim"
	"github.com/explaind/explaind/tensor"
)

// cnnStep returns a width/8 ResNet-9 for 28×28 grey images and 2 classes
// (the Fashion-2 model of explaind's CNN runs) at random initial
// parameters, one SGD step (momentum 0.9, weight decay 5e-4, learning rate
// lr) on a batch of 64 random images split into its parts, and 4 random
// test images.
func cnnStep(b *testing.B, lr float64) (*models.ResNet9[float32], *epk.Update[float32], *tensor.Dense[float32]) {
	b.Helper()
	m, err := models.NewResNet9[float32](models.ResNet9Config{WidthDiv: 8, InChannels: 1, Classes: 2, Height: 28, Width: 28})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 5))
	m.Init(rng)
	images := func(n int) *tensor.Dense[float32] {
		x := tensor.New[float32](n, 1, 28, 28)
		for i := range x.Data {
			x.Data[i] = float32(rng.NormFloat64())
		}
		return x
	}
	x := images(64)
	y := make([]int, 64)
	for i := range y {
		y[i] = rng.IntN(2)
	}
	xt := images(4)
	opt, err := optim.NewSGD[float32](0.9, 0, 5e-4, false)
	if err != nil {
		b.Fatal(err)
	}
	sp, err := epk.NewSGDSplitter(opt)
	if err != nil {
		b.Fatal(err)
	}
	u := splitStep[float32](b, m, opt, sp, x, y, lr)
	return m, u, xt
}

// BenchmarkCNNStep times one step of the pruning preset's evaluation (the
// contributions and every class's features, float32, tol 1e-4) for 4 test
// images of the width/8 ResNet-9, the way explaind's job did it before
// and does it now: "forward" plans, certifies with the 3-tangent JVP pass
// and then runs the feature pass; "derived" certifies along Δθ alone and
// takes the contributions from the features; gauss3 and simpson are the
// interval rules; "held" plans in reverse mode and holds the nodes'
// gradients for the features (Options.MaxHeldGrads, the default), the
// others plan by single-tangent JVP. Reported per image: final nodes and
// the rows of each kind; and the wall times of the last iteration's
// planning and feature pass.
func BenchmarkCNNStep(b *testing.B) {
	m, u, xt := cnnStep(b, 2)
	for _, c := range []struct {
		name    string
		derived bool
		held    int
		q       epk.Quadrature
	}{
		{"forward/gauss3", false, -1, epk.Quadrature{Rule: epk.Adaptive, Points: 3, Tol: 1e-4}},
		{"derived/gauss3", true, -1, epk.Quadrature{Rule: epk.Adaptive, Points: 3, Tol: 1e-4}},
		{"derived/simpson", true, -1, epk.Quadrature{Rule: epk.Adaptive, Points: 3, Ends: true, Tol: 1e-4}},
		{"held/simpson", true, 0, epk.Quadrature{Rule: epk.Adaptive, Points: 3, Ends: true, Tol: 1e-4}},
	} {
		b.Run(c.name, func(b *testing.B) {
			ev, err := epk.NewEvaluator[float32](m, epk.Options{Quadrature: c.q, MaxHeldGrads: c.held})
			if err != nil {
				b.Fatal(err)
			}
			var res *epk.StepResult[float32]
			var back int
			var planT, backT float64
			for b.Loop() {
				if c.derived {
					if res, err = ev.Evaluate(u, xt, epk.Request[float32]{Features: true}); err != nil {
						b.Fatal(err)
					}
					back = res.Stats.BackwardRows
					planT, backT = res.Stats.Plan.Seconds(), res.Stats.Backward.Seconds()
					continue
				}
				if res, err = ev.Contributions(u, xt, nil); err != nil {
					b.Fatal(err)
				}
				_, st, err := ev.Features(u, xt, res.Plan, nil)
				if err != nil {
					b.Fatal(err)
				}
				back = st.BackwardRows
				planT, backT = res.Stats.Plan.Seconds(), st.Backward.Seconds()
			}
			if !res.Certified {
				b.Errorf("not certified: misses %v", res.Missed)
			}
			n := float64(xt.Shape[0])
			b.ReportMetric(float64(len(res.Plan.Nodes))/n, "nodes/image")
			b.ReportMetric(float64(res.Stats.DerivRows)/n, "1-tangent-rows/image")
			b.ReportMetric(float64(res.Stats.JVPRows)/n, "3-tangent-rows/image")
			b.ReportMetric(float64(res.Stats.ForwardRows)/n, "fwd-rows/image")
			b.ReportMetric(float64(back)/n, "backward-rows/image")
			b.ReportMetric(planT*1e3, "plan-ms")
			b.ReportMetric(backT*1e3, "feature-pass-ms")
		})
	}
}
