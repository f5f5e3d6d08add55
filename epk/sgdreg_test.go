package epk_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/optim"
	"github.com/explaind/explaind/tensor"
)

// sgdSteps runs optim.SGD for n steps on random parameters and gradients,
// where has(name, s) says whether parameter name gets a gradient in step s,
// and returns the steps' inputs and, for every step, the weight-decay part
// r_s of each momentum buffer after it as optim computes it: the buffer of
// a second optimizer that sees the same parameters θ_s and zero gradients
// (with learning rate 0, so that it never moves them).
func sgdSteps(t *testing.T, o *optim.SGD[float64], n int, sizes map[string]int, has func(string, int) bool) ([]epk.StepInput[float64], []map[string][]float64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	names := []string{"a", "b", "c"}
	var params, shadow []*nn.Param[float64]
	for _, name := range names {
		p := &nn.Param[float64]{Name: name, Value: tensor.New[float64](sizes[name])}
		nn.FillUniform(p.Value.Data, 1, rng)
		params = append(params, p)
		shadow = append(shadow, &nn.Param[float64]{Name: name, Value: p.Value.Clone()})
	}
	regOpt := &optim.SGD[float64]{Momentum: o.Momentum, Dampening: o.Dampening, WeightDecay: o.WeightDecay}
	snapshot := func() []*nn.Param[float64] {
		out := make([]*nn.Param[float64], len(params))
		for i, p := range params {
			out[i] = &nn.Param[float64]{Name: p.Name, Value: p.Value.Clone()}
		}
		return out
	}
	var ins []epk.StepInput[float64]
	var regs []map[string][]float64
	for s := range n {
		lr := 0.05 + 0.01*float64(s)
		in := epk.StepInput[float64]{Step: s, LR: lr, Before: snapshot(), OptBefore: o.State(), Grad: map[string]*tensor.Dense[float64]{}}
		g := &nn.Grads[float64]{Mode: nn.Summed, Of: map[*nn.Param[float64]]*tensor.Dense[float64]{}}
		zero := &nn.Grads[float64]{Mode: nn.Summed, Of: map[*nn.Param[float64]]*tensor.Dense[float64]{}}
		for i, p := range params {
			copy(shadow[i].Value.Data, p.Value.Data)
			if !has(p.Name, s) {
				continue
			}
			gp := tensor.New[float64](p.Value.Shape...)
			nn.FillUniform(gp.Data, 1, rng)
			g.Of[p], in.Grad[p.Name] = gp, gp
			zero.Of[shadow[i]] = tensor.New[float64](p.Value.Shape...)
		}
		if err := o.Step(params, g, lr); err != nil {
			t.Fatal(err)
		}
		if err := regOpt.Step(shadow, zero, 0); err != nil {
			t.Fatal(err)
		}
		in.After = snapshot()
		ins = append(ins, in)
		r := map[string][]float64{}
		for k, v := range regOpt.State() {
			r[k[len("momentum_buffer/"):]] = v.Data
		}
		regs = append(regs, r)
	}
	return ins, regs
}

// TestSGDRegPaths checks the two users of SGD's weight-decay recurrence
// against each other and against optim: SGDSplitter.Split, and
// SGDSplitter.AdvanceReg, with which explain brings a splitter to the first
// step of a job that starts later (and records the states a reverse sweep
// needs). Parameter b gets no gradient in some steps and c none in the
// first ones: the optimizer skips them, leaving their buffers alone.
func TestSGDRegPaths(t *testing.T) {
	sizes := map[string]int{"a": 5, "b": 3, "c": 4}
	has := func(name string, s int) bool {
		switch name {
		case "b":
			return !slices.Contains([]int{2, 3, 5}, s)
		case "c":
			return s >= 3
		}
		return true
	}
	const n = 9
	o := &optim.SGD[float64]{Momentum: 0.9, Dampening: 0.3, WeightDecay: 0.05}
	settings := *o
	ins, want := sgdSteps(t, o, n, sizes, has)

	split, _ := epk.NewSGDSplitter(&settings)
	adv, _ := epk.NewSGDSplitter(&settings)
	var ups []*epk.Update[float64]
	for s, in := range ins {
		u, err := split.Split(in)
		if err != nil {
			t.Fatal(err)
		}
		ups = append(ups, u)
		if err := adv.AdvanceReg(in); err != nil {
			t.Fatal(err)
		}
		ns, rs := split.RegState()
		na, ra := adv.RegState()
		if ns != s+1 || na != s+1 {
			t.Errorf("step %d: the splitters are at steps %d and %d, want %d", s, ns, na, s+1)
		}
		for _, name := range []string{"a", "b", "c"} {
			if !slices.Equal(rs[name], ra[name]) {
				t.Errorf("step %d, %s: Split carries %v, AdvanceReg %v", s, name, rs[name], ra[name])
			}
			if len(rs[name]) != len(want[s][name]) {
				t.Errorf("step %d, %s: carried %d values, optim's buffer has %d", s, name, len(rs[name]), len(want[s][name]))
				continue
			}
			for j, w := range want[s][name] {
				if math.Abs(rs[name][j]-w) > 1e-15*math.Max(1, math.Abs(w)) {
					t.Errorf("step %d, %s[%d]: carried weight-decay part %v, optim's %v", s, name, j, rs[name][j], w)
				}
			}
			// The regularization part of the update is −α r_s, nothing
			// without a gradient; data + reg rebuild the update.
			i := slices.Index(u.Names, name)
			for j := range u.Reg[i].Data {
				wr := 0.0
				if has(name, s) {
					wr = -in.LR * want[s][name][j]
				}
				if math.Abs(u.Reg[i].Data[j]-wr) > 1e-15 || math.Abs(u.Resid[i].Data[j]) > 1e-15 {
					t.Errorf("step %d, %s[%d]: reg %v, want %v; residual %v", s, name, j, u.Reg[i].Data[j], wr, u.Resid[i].Data[j])
				}
			}
		}
	}

	// A splitter brought to step k by AdvanceReg, its state handed over as
	// explain hands it to its own splitter, splits the later steps bit for
	// bit as the one that split every step.
	for _, k := range []int{1, 3, 4, 6} {
		warm, _ := epk.NewSGDSplitter(&settings)
		for _, in := range ins[:k] {
			if err := warm.AdvanceReg(in); err != nil {
				t.Fatal(err)
			}
		}
		sp, _ := epk.NewSGDSplitter(&settings)
		sp.LoadRegState(warm.RegState())
		for s := k; s < n; s++ {
			u, err := sp.Split(ins[s])
			if err != nil {
				t.Fatal(err)
			}
			for i := range u.Names {
				if !slices.Equal(u.Data[i].Data, ups[s].Data[i].Data) || !slices.Equal(u.Reg[i].Data, ups[s].Reg[i].Data) {
					t.Errorf("from step %d: step %d of %s splits differently", k, s, u.Names[i])
				}
			}
		}
	}
}
