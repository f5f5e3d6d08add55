package models_test

import (
	"github.com/explaind/explaind/internal/fixtures"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/optim"
	"github.com/explaind/explaind/tensor"
	"github.com/explaind/explaind/weights"
)

// Tolerance on optimizer steps and states against PyTorch, in float32.
const goldenTolOptim = 1e-4

// TestGolden checks every PyTorch fixture in the golden directory
// (testdata/golden, or $EXPLAIND_GOLDEN_DIR): the model's outputs and
// derivatives, and three full-batch optimizer steps with the optimizer
// state after them. New fixtures in the same format are picked up by name.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(fixtures.GoldenDir(), "*.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no *.safetensors fixture in %s", fixtures.GoldenDir())
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			t.Logf("checking fixture %s", path)
			f, err := weights.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			switch arch := f.Metadata()["arch"]; arch {
			case models.ModuloArch:
				checkModuloFixture(t, path)
				m, x, y := loadModuloFixture(t, f)
				checkOptimizerSteps(t, f, m, x, y, m.UnusedParams())
			case "resnet9_nobn":
				checkResNet9Fixture(t, path)
				_, m := loadResNet9Fixture(t, path)
				x := resnet9Get(t, f, "input")
				y, _, err := f.Ints("target")
				if err != nil {
					t.Fatal(err)
				}
				checkOptimizerSteps(t, f, m, x, y, nil)
			default:
				t.Fatalf("unknown arch %q in the fixture's metadata", arch)
			}
		})
	}
}

func metaFloat(t *testing.T, f *weights.File, key string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(f.Metadata()[key], 64)
	if err != nil {
		t.Fatalf("%s: metadata %q: %v", f.Path(), key, err)
	}
	return v
}

func metaFloats(t *testing.T, f *weights.File, key string) []float64 {
	t.Helper()
	var out []float64
	for _, s := range strings.Split(f.Metadata()[key], ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			t.Fatalf("%s: metadata %q: %v", f.Path(), key, err)
		}
		out = append(out, v)
	}
	return out
}

// checkOptimizerSteps takes the fixture's full-batch optimizer steps with
// its learning rates and compares the parameters after each step and the
// optimizer state after the last one. Each step starts from PyTorch's own
// parameters of the step before (the optimizer state is ours throughout):
// with lr 0.1 on a ReLU network, float32 differences of 1e-7 in θ change
// activation patterns and grow from step to step, which would measure the
// chaos of training rather than this code. Parameters the model does not
// use must be left untouched by PyTorch too.
func checkOptimizerSteps(t *testing.T, f *weights.File, model models.Model[float32], x *tensor.Dense[float32], y []int, unused []string) {
	t.Helper()
	var opt optim.Optimizer[float32]
	var prefix string
	var err error
	switch name := f.Metadata()["optimizer"]; name {
	case "AdamW":
		betas := metaFloats(t, f, "betas")
		opt, err = optim.NewAdamW[float32](betas[0], betas[1], metaFloat(t, f, "eps"), metaFloat(t, f, "weight_decay"))
		prefix = "adamw"
	case "SGD":
		opt, err = optim.NewSGD[float32](metaFloat(t, f, "momentum"), metaFloat(t, f, "dampening"),
			metaFloat(t, f, "weight_decay"), f.Metadata()["nesterov"] == "True")
		prefix = "sgd"
	default:
		t.Fatalf("unknown optimizer %q", name)
	}
	if err != nil {
		t.Fatal(err)
	}
	params := model.Params()
	var worstParam, worstDelta float64
	for k, lr := range metaFloats(t, f, "step_lrs") {
		if k > 0 {
			for _, p := range params {
				copy(p.Value.Data, resnet9Get(t, f, prefix+"/step"+strconv.Itoa(k)+"/"+p.Name).Data)
			}
		}
		before := make([][]float32, len(params))
		for i, p := range params {
			before[i] = append([]float32(nil), p.Value.Data...)
		}
		logp, st, err := model.Forward(x)
		if err != nil {
			t.Fatal(err)
		}
		_, dy, err := nn.NLLLoss(logp, y)
		if err != nil {
			t.Fatal(err)
		}
		g := nn.NewGrads(nn.Summed, params, 0)
		if _, err := model.Backward(st, dy, g, false); err != nil {
			t.Fatal(err)
		}
		if err := opt.Step(params, g, lr); err != nil {
			t.Fatal(err)
		}
		for i, p := range params {
			want := resnet9Get(t, f, prefix+"/step"+strconv.Itoa(k+1)+"/"+p.Name)
			e := tensor.RelErr(p.Value.Data, want.Data)
			worstParam = max(worstParam, e)
			if e > goldenTolOptim {
				t.Errorf("%s step %d: %s relative error %.3g > %.0e", prefix, k+1, p.Name, e, goldenTolOptim)
			}
			// The update itself, which is small next to the parameter; a
			// looser bound, since near-zero gradients make AdamW's
			// m/sqrt(v) sensitive to float32 rounding. Not tested at lr 0.
			if lr > 0 {
				prev := before[i]
				got, ref := make([]float64, len(prev)), make([]float64, len(prev))
				for j := range prev {
					got[j] = float64(p.Value.Data[j]) - float64(prev[j])
					ref[j] = float64(want.Data[j]) - float64(prev[j])
				}
				worstDelta = max(worstDelta, tensor.RelErr(got, ref))
			}
		}
	}
	t.Logf("%s: max relative error of parameters after each step %.2g, of the updates %.2g", prefix, worstParam, worstDelta)
	if !(worstDelta <= 1e-3) {
		t.Errorf("%s: updates differ from PyTorch's by %.3g relative", prefix, worstDelta)
	}
	state := opt.State()
	kinds := map[string][]string{"adamw": {"exp_avg", "exp_avg_sq"}, "sgd": {"momentum_buffer"}}[prefix]
	for _, p := range params {
		for _, kind := range kinds {
			want := resnet9Get(t, f, prefix+"/"+kind+"/"+p.Name)
			got := state[optim.StateName(kind, p.Name)]
			if got == nil {
				t.Errorf("no %s state for %s", kind, p.Name)
				continue
			}
			if e := tensor.RelErr(got.Data, want.Data); e > goldenTolOptim {
				t.Errorf("%s %s: relative error %.3g > %.0e", kind, p.Name, e, goldenTolOptim)
			}
		}
	}
	// PyTorch skipped the unused parameters: no decay, no state.
	for _, name := range unused {
		p0 := resnet9Get(t, f, "param/"+name)
		p3 := resnet9Get(t, f, prefix+"/step3/"+name)
		if tensor.RelErr(p3.Data, p0.Data) != 0 {
			t.Errorf("PyTorch changed the unused %s: the fixture contradicts the model", name)
		}
		if f.Has(prefix + "/exp_avg/" + name) {
			t.Errorf("the fixture holds optimizer state for the unused %s", name)
		}
	}
}
