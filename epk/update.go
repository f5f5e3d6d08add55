package epk

import (
	"fmt"
	"math"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/optim"
	"github.com/explaind/explaind/tensor"
)

// StepInput is what splitting one optimizer step needs: the parameters
// before and after it, the optimizer state before it and the step's mean
// loss gradient at the parameters before it.
type StepInput[T tensor.Float] struct {
	// Step is the 0-based step index s.
	Step int
	// LR is the step's learning rate α_s.
	LR float64
	// Before and After are θ_s and θ_{s+1}, in the same (model) order.
	Before, After []*nn.Param[T]
	// OptBefore is the optimizer state before the step, as optim's State
	// returns it ("exp_avg/<name>", …); nil or empty before the first step.
	OptBefore map[string]*tensor.Dense[T]
	// Grad is g_s, the gradient of the step's mean NLL loss at θ_s, by
	// parameter name (see MeanGradient). A parameter absent from Grad got no
	// gradient, and PyTorch's optimizers leave it alone.
	Grad map[string]*tensor.Dense[T]
}

// MeanGradient returns the gradient of the mean NLL loss of model on the
// batch (x, y) at the model's current parameters, by parameter name: the g_s
// that train.Session.Step hands to the optimizer (every parameter gets one).
func MeanGradient[T tensor.Float](model nn.Layer[T], x *tensor.Dense[T], y []int) (map[string]*tensor.Dense[T], error) {
	logp, st, err := model.Forward(x)
	if err != nil {
		return nil, fmt.Errorf("epk: %w", err)
	}
	_, dy, err := nn.NLLLoss(logp, y)
	if err != nil {
		return nil, fmt.Errorf("epk: %w", err)
	}
	params := model.Params()
	g := nn.NewGrads(nn.Summed, params, 0)
	if _, err := model.Backward(st, dy, g, false); err != nil {
		return nil, fmt.Errorf("epk: %w", err)
	}
	out := make(map[string]*tensor.Dense[T], len(params))
	for _, p := range params {
		out[p.Name] = g.Of[p]
	}
	return out, nil
}

// Update is one optimizer step split into its parts (docs/method.md §1):
//
//	Delta = θ_{s+1} − θ_s = Data + Reg + Resid
//
// Data is the gradient part, Reg the weight-decay part and Resid the
// update-reconstruction residual (the recorded Delta against the parts
// rebuilt in float64 from the gradient and the optimizer state), reported
// rather than hidden. Every slice is aligned with Names, the model's
// parameter order; a parameter without a gradient has zero parts.
type Update[T tensor.Float] struct {
	// Step is the step index s and LR its learning rate α_s.
	Step int
	LR   float64
	// Names are the parameter names.
	Names []string
	// Before is θ_s (the input's arrays, not copied).
	Before []*tensor.Dense[T]
	// Delta is the recorded θ_{s+1} − θ_s; Data, Reg and Resid its parts.
	Delta, Data, Reg, Resid []*tensor.Dense[T]
	// Kernel ties Data to the training samples' gradients.
	Kernel Kernel[T]
	// MaxResid is max |Resid| and MaxDelta max |Delta| over all elements,
	// in float64.
	MaxResid, MaxDelta float64
}

// Kernel holds the coefficients that write a step's data part in terms of
// the training samples' output gradients of this and earlier steps:
//
//	Data_s = Σ_{i≤s} A_s ⊙ Beta^{s−i} · E_i/|B_i| · Σ_{k∈B_i} ∇θ f_{y_k}(θ_i; x_k)
//
// (for NLL on log-probabilities the loss gradient is −∇θ f_{y_k}). A
// reverse-time sweep over steps forms Q_s = A_s ⊙ φ_s + Beta·Q_{s+1} for
// each kept test feature φ_s, and training sample k of step i contributes
// E_i/|B_i| · ⟨Q_i, ∇θ f_{y_k}(θ_i; x_k)⟩ (docs/method.md §3).
//
// For AdamW, A_s = α_s/(1−β1^{s+1}) · D_s with the preconditioner
// D_s = 1/(sqrt(v̂_s)+ε), Beta = β1 and E_i = 1−β1; Reg_s = −α_s λ θ_s is
// local to the step. For SGD with momentum μ and dampening d, A_s = α_s,
// Beta = μ, E_i = 1 on a parameter's first step and 1−d afterwards; the
// weight decay flows through the buffer, Reg_s = −Σ_{i≤s} A_s μ^{s−i} E_i
// λ θ_i, so the same sweep gives the regularization contribution
// −E_i λ ⟨Q_i, θ_i⟩ without a carried buffer.
type Kernel[T tensor.Float] struct {
	// A is the elementwise multiplier of φ_s per parameter (nil for a
	// parameter without a gradient).
	A []*tensor.Dense[T]
	// Precond is AdamW's D_s per parameter (nil for SGD and for parameters
	// without a gradient).
	Precond []*tensor.Dense[T]
	// Beta is the decay of the sweep (β1 or μ).
	Beta float64
	// E is the weight of this step's own gradient in the optimizer's
	// buffer, per parameter (0 for a parameter without a gradient).
	E []float64
}

// Splitter splits optimizer steps into their parts.
type Splitter[T tensor.Float] interface {
	// Split decomposes one step.
	Split(in StepInput[T]) (*Update[T], error)
}

// newUpdate checks in and allocates an Update with zero parts.
func newUpdate[T tensor.Float](in StepInput[T]) (*Update[T], error) {
	if len(in.Before) == 0 || len(in.Before) != len(in.After) {
		return nil, fmt.Errorf("epk: step %d: %d parameters before and %d after", in.Step, len(in.Before), len(in.After))
	}
	if math.IsNaN(in.LR) || math.IsInf(in.LR, 0) || in.LR < 0 {
		return nil, fmt.Errorf("epk: step %d: invalid learning rate %v", in.Step, in.LR)
	}
	n := len(in.Before)
	u := &Update[T]{Step: in.Step, LR: in.LR, Names: make([]string, n), Before: make([]*tensor.Dense[T], n),
		Delta: make([]*tensor.Dense[T], n), Data: make([]*tensor.Dense[T], n), Reg: make([]*tensor.Dense[T], n),
		Resid: make([]*tensor.Dense[T], n)}
	u.Kernel.A = make([]*tensor.Dense[T], n)
	u.Kernel.E = make([]float64, n)
	for i, b := range in.Before {
		a := in.After[i]
		if b == nil || a == nil || b.Value == nil || a.Value == nil {
			return nil, fmt.Errorf("epk: step %d: parameter %d is nil", in.Step, i)
		}
		if b.Name != a.Name || !tensor.SameShape(b.Value.Shape, a.Value.Shape) || len(b.Value.Data) != len(a.Value.Data) {
			return nil, fmt.Errorf("epk: step %d: parameter %d is %s %v before and %s %v after", in.Step, i, b.Name, b.Value.Shape, a.Name, a.Value.Shape)
		}
		if g := in.Grad[b.Name]; g != nil && (!tensor.SameShape(g.Shape, b.Value.Shape) || len(g.Data) != len(b.Value.Data)) {
			return nil, fmt.Errorf("epk: step %d: gradient of %s has shape %v, want %v", in.Step, b.Name, g.Shape, b.Value.Shape)
		}
		u.Names[i] = b.Name
		u.Before[i] = b.Value
		shape := b.Value.Shape
		u.Delta[i] = tensor.New[T](shape...)
		for j, v := range a.Value.Data {
			u.Delta[i].Data[j] = v - b.Value.Data[j]
		}
		u.Data[i] = tensor.New[T](shape...)
		u.Reg[i] = tensor.New[T](shape...)
		u.Resid[i] = tensor.New[T](shape...)
	}
	return u, nil
}

// finish stores one element's parts and residual (computed in float64)
// and updates the maxima.
func (u *Update[T]) finish(i, j int, before, after, data, reg float64) {
	delta := after - before
	resid := delta - data - reg
	u.Data[i].Data[j] = T(data)
	u.Reg[i].Data[j] = T(reg)
	u.Resid[i].Data[j] = T(resid)
	u.MaxResid = math.Max(u.MaxResid, math.Abs(resid))
	u.MaxDelta = math.Max(u.MaxDelta, math.Abs(delta))
}

// stateTensor returns the float64 values of a state tensor, or nil when it
// is absent, checking its size.
func stateTensor[T tensor.Float](state map[string]*tensor.Dense[T], key string, n int) ([]float64, error) {
	t := state[key]
	if t == nil {
		return nil, nil
	}
	if len(t.Data) != n {
		return nil, fmt.Errorf("epk: optimizer state %s has %d values, want %d", key, len(t.Data), n)
	}
	out := make([]float64, n)
	for i, v := range t.Data {
		out[i] = float64(v)
	}
	return out, nil
}

// AdamWSplitter splits torch.optim.AdamW steps (amsgrad off). It keeps no
// state: the moments come from the step's input.
type AdamWSplitter[T tensor.Float] struct {
	Beta1, Beta2, Eps, WeightDecay float64
}

// NewAdamWSplitter returns a splitter with the settings of o.
func NewAdamWSplitter[T tensor.Float](o *optim.AdamW[T]) (*AdamWSplitter[T], error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return &AdamWSplitter[T]{Beta1: o.Beta1, Beta2: o.Beta2, Eps: o.Eps, WeightDecay: o.WeightDecay}, nil
}

// Split decomposes one AdamW step. For each parameter with a gradient g_s,
// with its step counter t = (previous count)+1 and m_s, v_s the moments
// after the step (from the state before and g_s, in float64, in PyTorch's
// operation order):
//
//	Reg  = −α λ θ_s
//	Data = −α/(1−β1^t) · m_s ⊙ D_s,  D_s = 1/(sqrt(v_s)/sqrt(1−β2^t) + ε)
//
// Parameters without a gradient are skipped (zero parts), weight decay
// included, as in PyTorch.
func (a *AdamWSplitter[T]) Split(in StepInput[T]) (*Update[T], error) {
	o := optim.AdamW[T]{Beta1: a.Beta1, Beta2: a.Beta2, Eps: a.Eps, WeightDecay: a.WeightDecay}
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("epk: %w", err)
	}
	u, err := newUpdate(in)
	if err != nil {
		return nil, err
	}
	u.Kernel.Precond = make([]*tensor.Dense[T], len(in.Before))
	u.Kernel.Beta = a.Beta1
	w1 := 1 - a.Beta1
	for i, p := range in.Before {
		name := p.Name
		n := len(p.Value.Data)
		g := in.Grad[name]
		if g == nil {
			for j, v := range p.Value.Data {
				u.finish(i, j, float64(v), float64(in.After[i].Value.Data[j]), 0, 0)
			}
			continue
		}
		m0, err := stateTensor(in.OptBefore, optim.StateName(optim.KindExpAvg, name), n)
		if err != nil {
			return nil, err
		}
		v0, err := stateTensor(in.OptBefore, optim.StateName(optim.KindExpAvgSq, name), n)
		if err != nil {
			return nil, err
		}
		st, err := stateTensor(in.OptBefore, optim.StateName(optim.KindStep, name), 1)
		if err != nil {
			return nil, err
		}
		if (m0 == nil) != (v0 == nil) || (m0 == nil) != (st == nil) {
			return nil, fmt.Errorf("epk: step %d: incomplete AdamW state for %s", in.Step, name)
		}
		step := 1
		if st != nil {
			step = int(st[0]) + 1
		}
		c := o.Coefficients(in.LR, step)
		A := tensor.New[T](p.Value.Shape...)
		D := tensor.New[T](p.Value.Shape...)
		for j, tv := range p.Value.Data {
			th := float64(tv)
			gi := float64(g.Data[j])
			var mp, vp float64
			if m0 != nil {
				mp, vp = m0[j], v0[j]
			}
			var m float64
			if w1 < 0.5 { // PyTorch's lerp(m, g, 1−β1), both branches
				m = mp + w1*(gi-mp)
			} else {
				m = gi - (gi-mp)*(1-w1)
			}
			v := a.Beta2*vp + (1-a.Beta2)*gi*gi
			den := math.Sqrt(v)/c.BiasCorrection2Sqrt + a.Eps
			data := -c.StepSize * m / den
			var reg float64
			if a.WeightDecay != 0 {
				reg = -in.LR * a.WeightDecay * th
			}
			u.finish(i, j, th, float64(in.After[i].Value.Data[j]), data, reg)
			D.Data[j] = T(1 / den)
			A.Data[j] = T(c.StepSize / den)
		}
		u.Kernel.A[i] = A
		u.Kernel.Precond[i] = D
		u.Kernel.E[i] = w1
	}
	return u, nil
}

// SGDSplitter splits torch.optim.SGD steps (without Nesterov momentum).
// With momentum, the weight decay flows through the momentum buffer
// b_s = μ b_{s−1} + (1−d)(g_s + λθ_s) (b = g_0 + λθ_0 on the first step),
// Δθ_s = −α_s b_s, and the regularization part of step s is −α_s times the
// part of b_s that comes from the λθ_i terms of the steps i ≤ s. The
// optimizer state only holds the whole buffer, so the splitter carries
// that part itself (one float64 vector per parameter): split the steps in
// order, starting at step 0 or at a step whose regularization buffer was
// restored with LoadRegState.
type SGDSplitter[T tensor.Float] struct {
	Momentum, Dampening, WeightDecay float64

	reg  map[string][]float64 // the λθ part of the momentum buffer, by name
	next int                  // the step the carried buffer belongs before
}

// NewSGDSplitter returns a splitter with the settings of o. Nesterov
// momentum is not supported.
func NewSGDSplitter[T tensor.Float](o *optim.SGD[T]) (*SGDSplitter[T], error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Nesterov {
		return nil, fmt.Errorf("epk: splitting Nesterov SGD steps is not supported")
	}
	return &SGDSplitter[T]{Momentum: o.Momentum, Dampening: o.Dampening, WeightDecay: o.WeightDecay}, nil
}

// NewSplitter returns the splitter, in precision E, of the optimizer o that
// trained a run in precision T: an AdamWSplitter or an SGDSplitter with
// o's settings (see NewAdamWSplitter and NewSGDSplitter).
func NewSplitter[E, T tensor.Float](o optim.Optimizer[T]) (Splitter[E], error) {
	switch o := o.(type) {
	case *optim.AdamW[T]:
		sp, err := NewAdamWSplitter(&optim.AdamW[E]{Beta1: o.Beta1, Beta2: o.Beta2, Eps: o.Eps, WeightDecay: o.WeightDecay})
		if err != nil {
			return nil, err
		}
		return sp, nil
	case *optim.SGD[T]:
		sp, err := NewSGDSplitter(&optim.SGD[E]{Momentum: o.Momentum, Dampening: o.Dampening, WeightDecay: o.WeightDecay,
			Nesterov: o.Nesterov})
		if err != nil {
			return nil, err
		}
		return sp, nil
	}
	return nil, fmt.Errorf("epk: optimizer %T is not supported (SGD or AdamW)", o)
}

// RegState returns a copy of the carried regularization part of the
// momentum buffers, by parameter name, and the step it is due before.
func (s *SGDSplitter[T]) RegState() (next int, buf map[string][]float64) {
	buf = make(map[string][]float64, len(s.reg))
	for k, v := range s.reg {
		buf[k] = append([]float64(nil), v...)
	}
	return s.next, buf
}

// LoadRegState restores a state saved by RegState.
func (s *SGDSplitter[T]) LoadRegState(next int, buf map[string][]float64) {
	s.next = next
	s.reg = make(map[string][]float64, len(buf))
	for k, v := range buf {
		s.reg[k] = append([]float64(nil), v...)
	}
}

func (s *SGDSplitter[T]) validate() error {
	if s.Momentum < 0 || s.WeightDecay < 0 || math.IsNaN(s.Dampening) {
		return fmt.Errorf("epk: invalid SGD settings (momentum %v, dampening %v, weight decay %v)", s.Momentum, s.Dampening, s.WeightDecay)
	}
	return nil
}

// SGDReg is the recurrence of the weight-decay part r of a parameter's SGD
// momentum buffer (see SGDSplitter) over one step in which the parameter
// has a gradient, in float64:
//
//	r_s = λ θ_s                      on its first step (first) or without momentum
//	r_s = μ r_{s−1} + (1−d) λ θ_s    otherwise
//
// with r_{s−1} = prev (nil: zero) and θ_s = theta. In a step without a
// gradient the optimizer skips the parameter, and r stays as it was.
func SGDReg[T tensor.Float](prev []float64, theta []T, first bool, momentum, dampening, weightDecay float64) []float64 {
	keep := 1 - dampening
	r := make([]float64, len(theta))
	for j, tv := range theta {
		wd := weightDecay * float64(tv)
		if momentum == 0 || first {
			r[j] = wd
			continue
		}
		var rp float64
		if prev != nil {
			rp = prev[j]
		}
		r[j] = momentum*rp + keep*wd
	}
	return r
}

// regPart is one parameter's weight-decay part of its momentum buffer
// before (prev, nil: zero) and after (r) a step; r is nil when the
// parameter has no gradient in the step.
type regPart struct {
	prev, r []float64
}

// regStep applies SGDReg to every parameter of step in. It returns each
// parameter's parts and the carried state after the step (by name; empty
// without momentum), and leaves s unchanged.
func (s *SGDSplitter[T]) regStep(in StepInput[T]) ([]regPart, map[string][]float64, error) {
	parts := make([]regPart, len(in.Before))
	next := make(map[string][]float64, len(in.Before))
	for i, p := range in.Before {
		if p == nil || p.Value == nil {
			return nil, nil, fmt.Errorf("epk: step %d: parameter %d is nil", in.Step, i)
		}
		name := p.Name
		if in.Grad[name] == nil {
			if r := s.reg[name]; r != nil {
				next[name] = r // a skipped parameter keeps its buffer
			}
			continue
		}
		first := s.Momentum == 0 || in.OptBefore[optim.StateName(optim.KindMomentumBuffer, name)] == nil
		var prev []float64
		if !first && s.WeightDecay != 0 {
			prev = s.reg[name]
			if prev == nil || s.next != in.Step {
				return nil, nil, fmt.Errorf("epk: step %d: the regularization part of the momentum buffer of %s is not known "+
					"(split the steps in order from step 0, or restore it with LoadRegState; the splitter is at step %d)",
					in.Step, name, s.next)
			}
			if len(prev) != len(p.Value.Data) {
				return nil, nil, fmt.Errorf("epk: step %d: carried regularization buffer of %s has %d values, want %d",
					in.Step, name, len(prev), len(p.Value.Data))
			}
		}
		parts[i] = regPart{prev: prev, r: SGDReg(prev, p.Value.Data, first, s.Momentum, s.Dampening, s.WeightDecay)}
		if s.Momentum != 0 {
			next[name] = parts[i].r
		}
	}
	return parts, next, nil
}

// AdvanceReg carries the regularization part of the momentum buffers over
// step in as Split does, without splitting the step: it reads the step, θ_s,
// the optimizer state and which parameters have a gradient (not the
// gradients' values). A job that starts after step 0 brings a splitter's
// state to its first step with it.
func (s *SGDSplitter[T]) AdvanceReg(in StepInput[T]) error {
	if err := s.validate(); err != nil {
		return err
	}
	_, next, err := s.regStep(in)
	if err != nil {
		return err
	}
	s.reg, s.next = next, in.Step+1
	return nil
}

// Split decomposes one SGD step; see SGDSplitter.
func (s *SGDSplitter[T]) Split(in StepInput[T]) (*Update[T], error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	u, err := newUpdate(in)
	if err != nil {
		return nil, err
	}
	regs, next, err := s.regStep(in)
	if err != nil {
		return nil, err
	}
	u.Kernel.Beta = s.Momentum
	keep := 1 - s.Dampening
	for i, p := range in.Before {
		name := p.Name
		n := len(p.Value.Data)
		g := in.Grad[name]
		if g == nil {
			for j, v := range p.Value.Data {
				u.finish(i, j, float64(v), float64(in.After[i].Value.Data[j]), 0, 0)
			}
			continue
		}
		var buf []float64
		if s.Momentum != 0 {
			if buf, err = stateTensor(in.OptBefore, optim.StateName(optim.KindMomentumBuffer, name), n); err != nil {
				return nil, err
			}
		}
		first := buf == nil
		A := tensor.New[T](p.Value.Shape...)
		aT := T(in.LR)
		for j := range A.Data {
			A.Data[j] = aT
		}
		prev, reg := regs[i].prev, regs[i].r
		for j, tv := range p.Value.Data {
			// The data part of the new buffer: the whole buffer less its
			// regularization part.
			bd := float64(g.Data[j])
			if s.Momentum != 0 && !first {
				brp := 0.0
				if prev != nil {
					brp = prev[j]
				}
				bd = s.Momentum*(buf[j]-brp) + keep*bd
			}
			u.finish(i, j, float64(tv), float64(in.After[i].Value.Data[j]), -in.LR*bd, -in.LR*reg[j])
		}
		u.Kernel.A[i] = A
		u.Kernel.E[i] = 1
		if !first && s.Momentum != 0 {
			u.Kernel.E[i] = keep
		}
	}
	s.reg, s.next = next, in.Step+1
	return u, nil
}
