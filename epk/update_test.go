package epk_test

import (
	"github.com/explaind/explaind/internal/fixtures"
	"math"
	"strings"
	"testing"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/optim"
	"github.com/explaind/explaind/tensor"
)

// checkKernel rebuilds every step's data part from the kernel
// coefficients and the steps' mean loss gradients,
//
//	Data_s = −Σ_{i≤s} A_s ⊙ Beta^{s−i} E_i g_i,
//
// and, when regViaBuffer (SGD), the regularization part
// Reg_s = −Σ_{i≤s} A_s ⊙ Beta^{s−i} E_i λ θ_i; otherwise (AdamW)
// Reg_s = −α_s λ θ_s. No quadrature is involved.
func checkKernel(t *testing.T, r *run, lambda float64, regViaBuffer bool) {
	t.Helper()
	worstD, worstR := 0.0, 0.0
	for s, u := range r.ups {
		for j, name := range u.Names {
			n := len(u.Data[j].Data)
			data := make([]float64, n)
			reg := make([]float64, n)
			for i := 0; i <= s; i++ {
				ui := r.ups[i]
				w := math.Pow(u.Kernel.Beta, float64(s-i)) * ui.Kernel.E[j]
				g := r.grads[i][name].Data
				for e := range data {
					a := u.Kernel.A[j].Data[e]
					data[e] -= a * w * g[e]
					if regViaBuffer {
						reg[e] -= a * w * lambda * ui.Before[j].Data[e]
					}
				}
			}
			if !regViaBuffer {
				for e := range reg {
					reg[e] = -u.LR * lambda * u.Before[j].Data[e]
				}
			}
			dd, ds := tensor.MaxAbsDiff(data, u.Data[j].Data)
			rd, rs := tensor.MaxAbsDiff(reg, u.Reg[j].Data)
			if ds > 0 {
				worstD = math.Max(worstD, dd/ds)
			}
			if rs > 0 {
				worstR = math.Max(worstR, rd/rs)
			}
		}
	}
	t.Logf("data parts rebuilt from the kernel coefficients to %.2g, regularization parts to %.2g (relative, per tensor)", worstD, worstR)
	if !(worstD <= 1e-12) || !(worstR <= 1e-12) {
		t.Errorf("kernel coefficients do not rebuild the parts: data %.3g, reg %.3g (relative), want ≤ 1e-12", worstD, worstR)
	}
}

func TestKernelCoefficients(t *testing.T) {
	fixtures.EachOracle(t, models.ModuloArch, func(t *testing.T, path string) {
		r, _ := moduloRunAt(t, path)
		checkKernel(t, r, metaFloats(t, r.f, "weight_decay")[0], false)
	})
	fixtures.EachOracle(t, models.ResNet9Arch, func(t *testing.T, path string) {
		r, _ := cnnRunAt(t, path)
		checkKernel(t, r, metaFloats(t, r.f, "weight_decay")[0], true)
	})
}

// TestSplitResidual checks that the reconstruction residual is reported,
// not hidden: a recorded step that differs from what the gradient implies
// shows up in Resid.
func TestSplitResidual(t *testing.T) {
	p := &nn.Param[float64]{Name: "w", Value: tensor.New[float64](3)}
	copy(p.Value.Data, []float64{1, -2, 0.5})
	g := tensor.New[float64](3)
	copy(g.Data, []float64{0.3, -0.1, 0.2})
	opt, err := optim.NewAdamW[float64](0.9, 0.98, 1e-8, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	before := []*nn.Param[float64]{{Name: "w", Value: p.Value.Clone()}}
	if err := opt.Step([]*nn.Param[float64]{p}, &nn.Grads[float64]{Mode: nn.Summed, Of: map[*nn.Param[float64]]*tensor.Dense[float64]{p: g}}, 0.01); err != nil {
		t.Fatal(err)
	}
	p.Value.Data[1] += 1e-6 // a recorded update that is not AdamW's
	sp, err := epk.NewAdamWSplitter(opt)
	if err != nil {
		t.Fatal(err)
	}
	u, err := sp.Split(epk.StepInput[float64]{Step: 0, LR: 0.01, Before: before, After: []*nn.Param[float64]{p}, Grad: map[string]*tensor.Dense[float64]{"w": g}})
	if err != nil {
		t.Fatal(err)
	}
	if !(math.Abs(u.Resid[0].Data[1]-1e-6) <= 1e-15) || !(math.Abs(u.Resid[0].Data[0]) <= 1e-16) || !(math.Abs(u.MaxResid-1e-6) <= 1e-15) {
		t.Errorf("residual %v (max %.3g), want 1e-6 in element 1 only", u.Resid[0].Data, u.MaxResid)
	}
	// First AdamW step: m = (1−β1) g, v = (1−β2) g², so Data = −lr·g/(|g|+ε') and Reg = −lr·λ·θ.
	for i, gi := range g.Data {
		if want := -0.01 * 0.5 * before[0].Value.Data[i]; !(math.Abs(u.Reg[0].Data[i]-want) <= 1e-18) {
			t.Errorf("reg[%d] = %v, want %v", i, u.Reg[0].Data[i], want)
		}
		if want := -0.01 * gi / (math.Abs(gi) + 1e-8); !(math.Abs(u.Data[0].Data[i]-want) <= 1e-15) {
			t.Errorf("data[%d] = %v, want %v", i, u.Data[0].Data[i], want)
		}
	}
	t.Logf("a 1e-6 tampering with the recorded update is reported as residual %.3g", u.MaxResid)
}

func TestSGDSplitterOrder(t *testing.T) {
	opt, err := optim.NewSGD[float64](0.9, 0, 0.01, false)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := epk.NewSGDSplitter(opt)
	if err != nil {
		t.Fatal(err)
	}
	p := &nn.Param[float64]{Name: "w", Value: tensor.New[float64](2)}
	in := epk.StepInput[float64]{Step: 3, LR: 0.1, Before: []*nn.Param[float64]{p}, After: []*nn.Param[float64]{p},
		OptBefore: map[string]*tensor.Dense[float64]{"momentum_buffer/w": tensor.New[float64](2)},
		Grad:      map[string]*tensor.Dense[float64]{"w": tensor.New[float64](2)}}
	if _, err := sp.Split(in); err == nil || !strings.Contains(err.Error(), "regularization part") {
		t.Errorf("splitting step 3 first: got %v, want an error about the unknown regularization buffer", err)
	}
	if _, err := epk.NewSGDSplitter(&optim.SGD[float64]{Momentum: 0.9, Nesterov: true}); err == nil {
		t.Error("Nesterov: want an error")
	}
}
