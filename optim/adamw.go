package optim

import (
	"fmt"
	"math"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// AdamW is torch.optim.AdamW (single-tensor path, amsgrad=False,
// maximize=False). For each parameter θ with a gradient g, one Step with
// learning rate lr does, with the parameter's own step counter t:
//
//	t = t + 1
//	θ = θ·(1 − lr·λ)                          (only when WeightDecay λ ≠ 0)
//	m = lerp(m, g, 1−β1)                      (= m + (1−β1)(g − m))
//	v = β2·v + (1−β2)·g·g
//	θ = θ − (lr/(1−β1^t)) · m / (sqrt(v)/sqrt(1−β2^t) + ε)
//
// m and v start at zero on the parameter's first step. A parameter without a
// gradient is skipped entirely: no weight decay, no moment update, and its
// step counter does not advance (PyTorch's per-parameter "step").
//
// Set the fields before the first Step; NewAdamW validates them up front,
// and Step validates them again. The zero value is invalid (Eps = 0).
type AdamW[T tensor.Float] struct {
	// Beta1 is β1 ∈ [0, 1), the decay of the first moment (PyTorch: 0.9).
	Beta1 float64
	// Beta2 is β2 ∈ [0, 1), the decay of the second moment (PyTorch: 0.999).
	Beta2 float64
	// Eps is ε > 0, added to the denominator (PyTorch: 1e-8).
	Eps float64
	// WeightDecay is the decoupled weight decay λ ≥ 0 (PyTorch: 0.01).
	WeightDecay float64

	state map[string]*adamState[T] // by parameter name
}

// adamState is one parameter's AdamW state.
type adamState[T tensor.Float] struct {
	step int
	m, v *tensor.Dense[T]
}

// NewAdamW returns an AdamW optimizer with the given settings, or an error
// when they are invalid.
func NewAdamW[T tensor.Float](beta1, beta2, eps, weightDecay float64) (*AdamW[T], error) {
	o := &AdamW[T]{Beta1: beta1, Beta2: beta2, Eps: eps, WeightDecay: weightDecay}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return o, nil
}

// Validate reports whether the settings are valid: both betas in [0, 1),
// Eps finite and > 0, WeightDecay finite and ≥ 0.
func (o *AdamW[T]) Validate() error {
	for i, b := range []float64{o.Beta1, o.Beta2} {
		if !(b >= 0 && b < 1) {
			return fmt.Errorf("optim.AdamW: invalid beta%d %v (want a value in [0, 1))", i+1, b)
		}
	}
	if !(o.Eps > 0) || math.IsInf(o.Eps, 0) {
		return fmt.Errorf("optim.AdamW: invalid eps %v (want a finite value > 0)", o.Eps)
	}
	return checkNonNegative("AdamW", "weight decay", o.WeightDecay)
}

// AdamWCoefficients are the float64 scalars of one AdamW update, computed as
// PyTorch computes them with Python floats. Each is converted to the tensor
// dtype once before use.
type AdamWCoefficients struct {
	// Decay is 1 − lr·λ, the weight-decay factor (1 when λ = 0, and then not
	// applied at all).
	Decay float64
	// BiasCorrection1 is 1 − β1^t.
	BiasCorrection1 float64
	// BiasCorrection2 is 1 − β2^t.
	BiasCorrection2 float64
	// StepSize is lr / BiasCorrection1.
	StepSize float64
	// BiasCorrection2Sqrt is sqrt(BiasCorrection2).
	BiasCorrection2Sqrt float64
}

// Coefficients returns the scalars of the update of a parameter whose step
// counter becomes step (≥ 1) with learning rate lr. With them, Step computes
// θ ← θ·Decay − StepSize · m / (sqrt(v)/BiasCorrection2Sqrt + Eps)
// (with the dtype conversions and rounding order described on AdamW).
func (o *AdamW[T]) Coefficients(lr float64, step int) AdamWCoefficients {
	c := AdamWCoefficients{
		Decay:           1 - lr*o.WeightDecay,
		BiasCorrection1: BiasCorrection(o.Beta1, step),
		BiasCorrection2: BiasCorrection(o.Beta2, step),
	}
	c.StepSize = lr / c.BiasCorrection1
	c.BiasCorrection2Sqrt = math.Sqrt(c.BiasCorrection2)
	return c
}

// Step applies one AdamW update with learning rate lr; see Optimizer.Step.
func (o *AdamW[T]) Step(params []*nn.Param[T], grads *nn.Grads[T], lr float64) error {
	if err := o.Validate(); err != nil {
		return err
	}
	if err := checkLR(lr); err != nil {
		return err
	}
	ws, err := gather("AdamW", params, grads)
	if err != nil {
		return err
	}
	for _, w := range ws {
		if st := o.state[w.p.Name]; st != nil {
			if err := checkStateTensor("AdamW", StateName(KindExpAvg, w.p.Name), st.m, w.p); err != nil {
				return err
			}
			if err := checkStateTensor("AdamW", StateName(KindExpAvgSq, w.p.Name), st.v, w.p); err != nil {
				return err
			}
		}
	}
	if o.state == nil {
		o.state = make(map[string]*adamState[T])
	}
	// Step-independent Python scalars, converted to the tensor dtype.
	decay := T(1 - lr*o.WeightDecay)
	w1 := T(1 - o.Beta1) // lerp weight
	small := math.Abs(float64(w1)) < 0.5
	w1c := 1 - w1 // PyTorch's opmath_t(1) - weight, for the large-weight branch
	b2 := T(o.Beta2)
	c2 := T(1 - o.Beta2)
	eps := T(o.Eps)
	for _, w := range ws {
		st := o.state[w.p.Name]
		if st == nil {
			st = &adamState[T]{m: tensor.New[T](w.p.Value.Shape...), v: tensor.New[T](w.p.Value.Shape...)}
			o.state[w.p.Name] = st
		}
		st.step++
		c := o.Coefficients(lr, st.step)
		negStep := T(-c.StepSize)
		bc2 := T(c.BiasCorrection2Sqrt)
		theta, g, m, v := w.p.Value.Data, w.g, st.m.Data, st.v.Data
		for i, gi := range g {
			th := theta[i]
			if o.WeightDecay != 0 {
				th *= decay
			}
			mi := m[i]
			if small {
				mi += T(w1 * (gi - mi))
			} else {
				mi = gi - T((gi-mi)*w1c)
			}
			vi := T(v[i]*b2) + T(T(c2*gi)*gi)
			denom := T(T(math.Sqrt(float64(vi)))/bc2) + eps
			th += T(T(negStep*mi) / denom)
			theta[i], m[i], v[i] = th, mi, vi
		}
	}
	return nil
}

// State returns copies of the AdamW state: for each parameter that has had
// at least one step, "exp_avg/<name>" and "exp_avg_sq/<name>" (the
// parameter's shape) and "step/<name>" (shape [1], the step count).
func (o *AdamW[T]) State() map[string]*tensor.Dense[T] {
	out := make(map[string]*tensor.Dense[T], 3*len(o.state))
	for name, st := range o.state {
		out[StateName(KindExpAvg, name)] = st.m.Clone()
		out[StateName(KindExpAvgSq, name)] = st.v.Clone()
		step := tensor.New[T](1)
		step.Data[0] = T(st.step)
		out[StateName(KindStep, name)] = step
	}
	return out
}

// LoadState replaces the AdamW state by copies of that in state; see
// Optimizer.LoadState. Names must be "exp_avg/<name>", "exp_avg_sq/<name>"
// or "step/<name>" with <name> one of params; each parameter has all three
// or none; the moments have the parameter's shape and the step is a
// 1-element tensor holding a positive integer. On error the state is
// unchanged.
func (o *AdamW[T]) LoadState(params []*nn.Param[T], state map[string]*tensor.Dense[T]) error {
	byName, err := indexParams("AdamW", params)
	if err != nil {
		return err
	}
	type entry struct{ m, v, step *tensor.Dense[T] }
	entries := make(map[string]*entry)
	for _, key := range sortedKeys(state) {
		kind, name, ok := SplitStateName(key)
		if !ok || (kind != KindExpAvg && kind != KindExpAvgSq && kind != KindStep) {
			return fmt.Errorf("optim.AdamW: unexpected state name %q (want %s/, %s/ or %s/ followed by a parameter name)", key, KindExpAvg, KindExpAvgSq, KindStep)
		}
		p := byName[name]
		if p == nil {
			return fmt.Errorf("optim.AdamW: state %s is for unknown parameter %s", key, name)
		}
		t := state[key]
		e := entries[name]
		if e == nil {
			e = &entry{}
			entries[name] = e
		}
		switch kind {
		case KindExpAvg, KindExpAvgSq:
			if err := checkStateTensor("AdamW", key, t, p); err != nil {
				return err
			}
			if kind == KindExpAvg {
				e.m = t
			} else {
				e.v = t
			}
		case KindStep:
			if t == nil {
				return fmt.Errorf("optim.AdamW: state %s is nil", key)
			}
			if len(t.Data) != 1 || tensor.Numel(t.Shape) != 1 {
				return fmt.Errorf("optim.AdamW: state %s has shape %v (%d values), want one element", key, t.Shape, len(t.Data))
			}
			e.step = t
		}
	}
	loaded := make(map[string]*adamState[T], len(entries))
	for _, name := range sortedKeys(entries) {
		e := entries[name]
		for _, part := range []struct {
			kind string
			t    *tensor.Dense[T]
		}{{KindExpAvg, e.m}, {KindExpAvgSq, e.v}, {KindStep, e.step}} {
			if part.t == nil {
				return fmt.Errorf("optim.AdamW: state for %s lacks %s", name, StateName(part.kind, name))
			}
		}
		s := float64(e.step.Data[0])
		if !(s >= 1) || s != math.Trunc(s) || s > float64(math.MaxInt32) {
			return fmt.Errorf("optim.AdamW: state %s is %v, want a positive integer step count", StateName(KindStep, name), s)
		}
		loaded[name] = &adamState[T]{step: int(s), m: e.m.Clone(), v: e.v.Clone()}
	}
	o.state = loaded
	return nil
}

// Moments returns p's AdamW state after its latest update: the first moment
// m (exp_avg), the second moment v (exp_avg_sq) and the step count t (the
// number of updates p has received). m and v are the live arrays, updated in
// place by the next Step; do not modify them. ok is false (and m, v nil,
// step 0) when p has had no update yet.
//
// With c = Coefficients(lr, step), the update applied to p at that step was
// θ·(c.Decay−1) − c.StepSize · m/(sqrt(v)/c.BiasCorrection2Sqrt + Eps), with θ
// the value before the update (Decay is applied only when WeightDecay ≠ 0).
func (o *AdamW[T]) Moments(p *nn.Param[T]) (m, v *tensor.Dense[T], step int, ok bool) {
	if p == nil {
		return nil, nil, 0, false
	}
	st := o.state[p.Name]
	if st == nil {
		return nil, nil, 0, false
	}
	return st.m, st.v, st.step, true
}
