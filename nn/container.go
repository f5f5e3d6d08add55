package nn

import (
	"fmt"

	"github.com/explaind/explaind/tensor"
)

// Sequential applies its layers in order, like torch.nn.Sequential.
type Sequential[T tensor.Float] struct {
	Layers []Layer[T]
}

// NewSequential returns a Sequential of the given layers.
func NewSequential[T tensor.Float](layers ...Layer[T]) *Sequential[T] {
	return &Sequential[T]{Layers: layers}
}

// Params concatenates the layers' parameters in order.
func (s *Sequential[T]) Params() []*Param[T] {
	var ps []*Param[T]
	for _, l := range s.Layers {
		ps = append(ps, l.Params()...)
	}
	return ps
}

// OutShape chains the layers' shape rules.
func (s *Sequential[T]) OutShape(in []int) ([]int, error) {
	shape := in
	for i, l := range s.Layers {
		out, err := l.OutShape(shape)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		shape = out
	}
	return shape, nil
}

type sequentialState []State

// Forward runs the layers in order and keeps each layer's state.
func (s *Sequential[T]) Forward(x *tensor.Dense[T]) (*tensor.Dense[T], State, error) {
	if _, err := s.OutShape(x.Shape); err != nil {
		return nil, nil, err
	}
	st := make(sequentialState, len(s.Layers))
	for i, l := range s.Layers {
		y, ls, err := l.Forward(x)
		if err != nil {
			return nil, nil, fmt.Errorf("layer %d: %w", i, err)
		}
		st[i], x = ls, y
	}
	return x, st, nil
}

// Backward runs the layers' VJPs in reverse order.
func (s *Sequential[T]) Backward(st State, dy *tensor.Dense[T], g *Grads[T], needDx bool) (*tensor.Dense[T], error) {
	states, ok := st.(sequentialState)
	if !ok || len(states) != len(s.Layers) {
		return nil, fmt.Errorf("nn.Sequential: Backward got a state from another layer")
	}
	for i := len(s.Layers) - 1; i >= 0; i-- {
		var err error
		dy, err = s.Layers[i].Backward(states[i], dy, g, needDx || i > 0)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	return dy, nil
}

// JVP chains the layers' JVPs.
func (s *Sequential[T]) JVP(x, dx *tensor.Dense[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	if _, err := s.OutShape(x.Shape); err != nil {
		return nil, nil, err
	}
	for i, l := range s.Layers {
		var err error
		x, dx, err = l.JVP(x, dx, t)
		if err != nil {
			return nil, nil, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	return x, dx, nil
}

// Residual is y = x + Module(x), like the TRAK ResNet-9's Residual block.
// Its parameters are Module's (state_dict names "<i>.module.…").
type Residual[T tensor.Float] struct {
	Module Layer[T]
}

// Params returns the inner module's parameters.
func (r *Residual[T]) Params() []*Param[T] { return r.Module.Params() }

// OutShape checks that the inner module preserves the shape.
func (r *Residual[T]) OutShape(in []int) ([]int, error) {
	out, err := r.Module.OutShape(in)
	if err != nil {
		return nil, err
	}
	if !tensor.SameShape(in, out) {
		return nil, fmt.Errorf("nn.Residual: inner module maps %v to %v; a residual needs equal shapes", in, out)
	}
	return out, nil
}

// Forward computes x + Module(x).
func (r *Residual[T]) Forward(x *tensor.Dense[T]) (*tensor.Dense[T], State, error) {
	if _, err := r.OutShape(x.Shape); err != nil {
		return nil, nil, err
	}
	m, st, err := r.Module.Forward(x)
	if err != nil {
		return nil, nil, err
	}
	// A new array: the inner module's output may be held in its state.
	y := x.Clone()
	tensor.AddScaled(y.Data, 1, m.Data)
	return y, st, nil
}

// Backward: dx = dy + Module's VJP of dy.
func (r *Residual[T]) Backward(st State, dy *tensor.Dense[T], g *Grads[T], needDx bool) (*tensor.Dense[T], error) {
	dm, err := r.Module.Backward(st, dy, g, true)
	if err != nil || !needDx {
		return nil, err
	}
	dx := dy.Clone() // dm may be a view of dy (Flatten): do not add in place
	tensor.AddScaled(dx.Data, 1, dm.Data)
	return dx, nil
}

// JVP: dy = dx + Module's JVP.
func (r *Residual[T]) JVP(x, dx *tensor.Dense[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	if _, err := r.OutShape(x.Shape); err != nil {
		return nil, nil, err
	}
	y, dy, err := r.Module.JVP(x, dx, t)
	if err != nil {
		return nil, nil, err
	}
	tensor.AddScaled(y.Data, 1, x.Data)
	if dx != nil {
		tensor.AddScaled(dy.Data, 1, dx.Data)
	}
	return y, dy, nil
}

// Flatten reshapes [B, d1, d2, ...] to [B, d1·d2·…].
type Flatten[T tensor.Float] struct{}

// Params returns nil: Flatten has no parameters.
func (Flatten[T]) Params() []*Param[T] { return nil }

// OutShape returns [B, product of the other axes].
func (Flatten[T]) OutShape(in []int) ([]int, error) {
	if len(in) < 1 {
		return nil, fmt.Errorf("nn.Flatten: input needs a batch axis, got shape %v", in)
	}
	return []int{in[0], tensor.Numel(in[1:])}, nil
}

type flattenState struct{ in []int }

// Forward returns a reshaped view of x.
func (f Flatten[T]) Forward(x *tensor.Dense[T]) (*tensor.Dense[T], State, error) {
	out, err := checkInput[T](f, x)
	if err != nil {
		return nil, nil, err
	}
	return &tensor.Dense[T]{Shape: out, Data: x.Data}, flattenState{in: x.Shape}, nil
}

// Backward reshapes dy back to the input's trailing shape.
func (Flatten[T]) Backward(st State, dy *tensor.Dense[T], _ *Grads[T], needDx bool) (*tensor.Dense[T], error) {
	s, ok := st.(flattenState)
	if !ok {
		return nil, fmt.Errorf("nn.Flatten: Backward got a state from another layer")
	}
	if !needDx {
		return nil, nil
	}
	return dy.Reshape(append([]int{dy.Shape[0]}, s.in[1:]...)...)
}

// JVP reshapes x and dx.
func (f Flatten[T]) JVP(x, dx *tensor.Dense[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	y, _, err := f.Forward(x)
	if err != nil {
		return nil, nil, err
	}
	m := t.Count()
	if err := checkTangentInput("Flatten", x, dx, m); err != nil {
		return nil, nil, err
	}
	if dx == nil {
		return y, tensor.New[T](x.Shape[0]*m, y.Shape[1]), nil
	}
	return y, &tensor.Dense[T]{Shape: []int{dx.Shape[0], y.Shape[1]}, Data: dx.Data}, nil
}
