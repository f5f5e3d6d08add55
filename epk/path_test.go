package epk_test

import (
	"github.com/explaind/explaind/internal/fixtures"
	"math"
	"testing"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/optim"
	"github.com/explaind/explaind/tensor"
	"github.com/explaind/explaind/weights"
)

// TestLayerPathMatchesNative evaluates the first step of a modulo oracle
// fixture with a fixed rule and with Adaptive through the model's own path
// methods and through LayerPath (parameter substitution): the
// contributions and features must agree to rounding. It tests the
// adapter, not the fixture, so one fixture (the first) is enough.
func TestLayerPathMatchesNative(t *testing.T) {
	path := fixtures.Oracles(t, models.ModuloArch)[0]
	t.Logf("stepping through EPK oracle fixture %s", path)
	r, m := moduloRunAt(t, path)
	u := r.ups[0]
	// Two test samples: Adaptive's per-sample nodes make one LayerPath
	// group per row.
	x := &tensor.Dense[float64]{Shape: []int{2, 4}, Data: r.xTest.Data[:8]}
	for _, q := range []epk.Quadrature{{Rule: epk.GaussLegendre, Points: 5}, {Rule: epk.Adaptive, Points: 4, Tol: 1e-8}} {
		var out [2]*epk.StepResult[float64]
		for i, model := range []epk.PathModel[float64]{m, epk.LayerPath[float64](m)} {
			ev, err := epk.NewEvaluator(model, epk.Options{Quadrature: q, PerTensor: true})
			if err != nil {
				t.Fatal(err)
			}
			res, err := ev.Evaluate(u, x, epk.Request[float64]{Features: true})
			if err != nil {
				t.Fatal(err)
			}
			out[i] = res
		}
		worst := 0.0
		for _, pair := range [][2][]float64{
			{out[0].Data.Data, out[1].Data.Data}, {out[0].Reg.Data, out[1].Reg.Data},
			{out[0].Change.Data, out[1].Change.Data}, {out[0].Tensor[3].Data, out[1].Tensor[3].Data},
		} {
			worst = math.Max(worst, tensor.RelErr(pair[1], pair[0]))
		}
		for j := range out[0].Features.Phi {
			worst = math.Max(worst, tensor.RelErr(out[1].Features.Phi[j].Data, out[0].Features.Phi[j].Data))
		}
		if !(worst <= 1e-12) {
			t.Errorf("%s: LayerPath and the native path methods differ by %.3g (relative)", q.Rule, worst)
		}
		t.Logf("%s: LayerPath matches the native path methods to %.2g (%d intervals per sample)", q.Rule, worst, out[0].Plan.Intervals[0])
	}
}

// TestModuloFloat32 runs the oracle's training and the Exact rule in
// float32: the update split's residual is the float32 rounding of the
// recorded update, and the completeness error sits at float32 rounding.
func TestModuloFloat32(t *testing.T) {
	fixtures.EachOracle(t, models.ModuloArch, checkModuloFloat32)
}

func checkModuloFloat32(t *testing.T, path string) {
	f, err := weights.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := models.ModuloConfigFromMetadata(f.Metadata())
	if err != nil {
		t.Fatal(err)
	}
	m, err := models.NewModulo[float32](cfg)
	if err != nil {
		t.Fatal(err)
	}
	params := m.Params()
	if err := weights.LoadParams(f, "params/step0/", params); err != nil {
		t.Fatal(err)
	}
	betas := metaFloats(t, f, "betas")
	opt, err := optim.NewAdamW[float32](betas[0], betas[1], metaFloats(t, f, "eps")[0], metaFloats(t, f, "weight_decay")[0])
	if err != nil {
		t.Fatal(err)
	}
	sp, err := epk.NewAdamWSplitter(opt)
	if err != nil {
		t.Fatal(err)
	}
	x := tensor.Convert[float32](inputOf(t, f, "train/input"))
	y, _ := ints(t, f, "train/target")
	xt := tensor.Convert[float32](inputOf(t, f, "test/input"))
	lr := getF64(t, f, "lr").Data
	stepChange := getF64(t, f, "step_change")
	// The evaluator writes θ_s into its model's parameters: give it its own.
	me, err := models.NewModulo[float32](cfg)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := epk.NewEvaluator[float32](me, epk.Options{PerTensor: true})
	if err != nil {
		t.Fatal(err)
	}
	for s := 0; s < 3; s++ {
		before := snapshot32(params)
		optBefore := opt.State()
		g, err := epk.MeanGradient[float32](m, x, y)
		if err != nil {
			t.Fatal(err)
		}
		grads := gradsOf(params, g)
		if err := opt.Step(params, grads, lr[s]); err != nil {
			t.Fatal(err)
		}
		u, err := sp.Split(epk.StepInput[float32]{Step: s, LR: lr[s], Before: before, After: snapshot32(params), OptBefore: optBefore, Grad: g})
		if err != nil {
			t.Fatal(err)
		}
		res, err := ev.Evaluate(u, xt, epk.Request[float32]{})
		if err != nil {
			t.Fatal(err)
		}
		rel := u.MaxResid / u.MaxDelta
		if !(rel < 1e-5) || !(u.MaxResid > 0) {
			t.Errorf("step %d: float32 reconstruction residual %.3g of max |Δθ| %.3g, want a float32 rounding level (0 < rel < 1e-5)", s, u.MaxResid, u.MaxDelta)
		}
		if !(res.MaxCompleteness < 1e-4*res.MaxChange) {
			t.Errorf("step %d: float32 completeness %.3g against max change %.3g", s, res.MaxCompleteness, res.MaxChange)
		}
		// Against the float64 oracle: float32 training drifts a little.
		e := tensor.RelErr(res.Change.Data, slab(stepChange, s))
		if !(e <= 1e-4) {
			t.Errorf("step %d: float32 step change off from the oracle by %.3g (relative)", s, e)
		}
		t.Logf("step %d (float32): residual %.2g (%.2g of max |Δθ|), completeness %.2g of max change %.3g, pieces %v, step change vs float64 oracle %.2g",
			s, u.MaxResid, rel, res.MaxCompleteness, res.MaxChange, res.Plan.Pieces, e)
	}
}
