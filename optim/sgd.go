package optim

import (
	"fmt"
	"math"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// SGD is torch.optim.SGD (single-tensor path, maximize=False). For each
// parameter θ with a gradient g, one Step with learning rate lr does
//
//	d = g + λθ                      (only when WeightDecay λ ≠ 0)
//	if Momentum μ ≠ 0:
//	    b = clone(d)                on the parameter's first step
//	    b = μb + (1−Dampening)·d    afterwards
//	    d = d + μb  if Nesterov, else d = b
//	θ = θ − lr·d
//
// The momentum buffer is created on a parameter's first step even when lr is
// 0. A parameter without a gradient is skipped and its buffer left alone.
//
// The zero value is plain SGD without momentum. Set the fields before the
// first Step; NewSGD validates them up front, and Step validates them again.
type SGD[T tensor.Float] struct {
	// Momentum is μ ≥ 0; 0 disables momentum (and the buffer).
	Momentum float64
	// Dampening d scales the new gradient by 1−d in the momentum update.
	Dampening float64
	// WeightDecay λ ≥ 0 is L2 regularization, added to the gradient.
	WeightDecay float64
	// Nesterov selects Nesterov momentum; it needs Momentum > 0 and
	// Dampening = 0.
	Nesterov bool

	buf map[string]*tensor.Dense[T] // momentum buffers by parameter name
}

// NewSGD returns an SGD optimizer with the given settings, or an error when
// they are invalid (as torch.optim.SGD's constructor would raise).
func NewSGD[T tensor.Float](momentum, dampening, weightDecay float64, nesterov bool) (*SGD[T], error) {
	o := &SGD[T]{Momentum: momentum, Dampening: dampening, WeightDecay: weightDecay, Nesterov: nesterov}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return o, nil
}

// Validate reports whether the settings are valid: Momentum and WeightDecay
// finite and ≥ 0, Dampening finite, and Nesterov only with Momentum > 0 and
// Dampening = 0.
func (o *SGD[T]) Validate() error {
	if err := checkNonNegative("SGD", "momentum", o.Momentum); err != nil {
		return err
	}
	if err := checkNonNegative("SGD", "weight decay", o.WeightDecay); err != nil {
		return err
	}
	if math.IsNaN(o.Dampening) || math.IsInf(o.Dampening, 0) {
		return fmt.Errorf("optim.SGD: invalid dampening %v (want a finite value)", o.Dampening)
	}
	if o.Nesterov && (o.Momentum <= 0 || o.Dampening != 0) {
		return fmt.Errorf("optim.SGD: Nesterov momentum requires a momentum > 0 and zero dampening (got momentum %v, dampening %v)", o.Momentum, o.Dampening)
	}
	return nil
}

// Step applies one SGD update with learning rate lr; see Optimizer.Step.
func (o *SGD[T]) Step(params []*nn.Param[T], grads *nn.Grads[T], lr float64) error {
	if err := o.Validate(); err != nil {
		return err
	}
	if err := checkLR(lr); err != nil {
		return err
	}
	ws, err := gather("SGD", params, grads)
	if err != nil {
		return err
	}
	if o.Momentum != 0 {
		for _, w := range ws {
			if b := o.buf[w.p.Name]; b != nil {
				if err := checkStateTensor("SGD", StateName(KindMomentumBuffer, w.p.Name), b, w.p); err != nil {
					return err
				}
			}
		}
	}
	if o.buf == nil {
		o.buf = make(map[string]*tensor.Dense[T])
	}
	// Python scalars, converted to the tensor dtype as PyTorch's kernels do.
	wd := T(o.WeightDecay)
	mu := T(o.Momentum)
	keep := T(1 - o.Dampening)
	negLR := T(-lr)
	for _, w := range ws {
		theta, g := w.p.Value.Data, w.g
		if o.Momentum == 0 {
			for i, gi := range g {
				d := gi
				if o.WeightDecay != 0 {
					d += T(wd * theta[i])
				}
				theta[i] += T(negLR * d)
			}
			continue
		}
		b := o.buf[w.p.Name]
		fresh := b == nil
		if fresh {
			b = tensor.New[T](w.p.Value.Shape...)
			o.buf[w.p.Name] = b
		}
		bd := b.Data
		for i, gi := range g {
			d := gi
			if o.WeightDecay != 0 {
				d += T(wd * theta[i])
			}
			if fresh {
				bd[i] = d
			} else {
				bd[i] = T(bd[i]*mu) + T(keep*d)
			}
			if o.Nesterov {
				d += T(mu * bd[i])
			} else {
				d = bd[i]
			}
			theta[i] += T(negLR * d)
		}
	}
	return nil
}

// State returns copies of the momentum buffers, named
// "momentum_buffer/<param name>". Parameters that have not yet had a step
// (or any parameter, when Momentum is 0) have no entry.
func (o *SGD[T]) State() map[string]*tensor.Dense[T] {
	out := make(map[string]*tensor.Dense[T], len(o.buf))
	for name, b := range o.buf {
		out[StateName(KindMomentumBuffer, name)] = b.Clone()
	}
	return out
}

// LoadState replaces the momentum buffers by copies of those in state; see
// Optimizer.LoadState. Every name must be "momentum_buffer/<name>" with
// <name> one of params and the tensor of that parameter's shape; a state with
// buffers is refused when Momentum is 0. On error the state is unchanged.
func (o *SGD[T]) LoadState(params []*nn.Param[T], state map[string]*tensor.Dense[T]) error {
	byName, err := indexParams("SGD", params)
	if err != nil {
		return err
	}
	if len(state) > 0 && o.Momentum == 0 {
		return fmt.Errorf("optim.SGD: state has %d momentum buffers but Momentum is 0", len(state))
	}
	buf := make(map[string]*tensor.Dense[T], len(state))
	for _, key := range sortedKeys(state) {
		kind, name, ok := SplitStateName(key)
		if !ok || kind != KindMomentumBuffer {
			return fmt.Errorf("optim.SGD: unexpected state name %q (want %q)", key, StateName(KindMomentumBuffer, "<param name>"))
		}
		p := byName[name]
		if p == nil {
			return fmt.Errorf("optim.SGD: state %s is for unknown parameter %s", key, name)
		}
		if err := checkStateTensor("SGD", key, state[key], p); err != nil {
			return err
		}
		buf[name] = state[key].Clone()
	}
	o.buf = buf
	return nil
}

// MomentumBuffer returns p's momentum buffer b (the live array, updated in
// place by the next Step; do not modify it), or nil when p has none yet.
// After a Step, the update applied to p was −lr·b (without Nesterov).
func (o *SGD[T]) MomentumBuffer(p *nn.Param[T]) *tensor.Dense[T] {
	if p == nil {
		return nil
	}
	return o.buf[p.Name]
}
