package nn

import (
	"fmt"

	"github.com/explaind/explaind/tensor"
)

// PathLayer is a layer with path rules: its Forward, Backward and JVP at
// θ + t_b Δθ for every sample b (see Path). Linear, Embedding,
// AttentionHeads, Conv2d, Sequential and Residual are PathLayers.
type PathLayer[T tensor.Float] interface {
	Layer[T]
	PathForward(x *tensor.Dense[T], p *Path[T]) (*tensor.Dense[T], State, error)
	PathBackward(st State, dy *tensor.Dense[T], g *Grads[T], needDx bool) (*tensor.Dense[T], error)
	PathJVP(x, dx *tensor.Dense[T], p *Path[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error)
}

// GroupedPathLayer is a PathLayer whose parameter gradients can be summed
// per group of samples straight into PerRow buffers over the groups,
// [nGroups*K, shape...]: sample b belongs to group groups[b]
// (nondecreasing, in [0, nGroups)). Linear, Conv2d, AttentionHeads,
// Sequential and Residual are GroupedPathLayers.
type GroupedPathLayer[T tensor.Float] interface {
	PathLayer[T]
	PathBackwardGrouped(st State, dy *tensor.Dense[T], g *Grads[T], groups []int, nGroups int, needDx bool) (*tensor.Dense[T], error)
}

// pathForward is l's PathForward, or Forward for a layer without
// parameters (which the path does not move).
func pathForward[T tensor.Float](l Layer[T], x *tensor.Dense[T], p *Path[T]) (*tensor.Dense[T], State, error) {
	if pl, ok := l.(PathLayer[T]); ok {
		return pl.PathForward(x, p)
	}
	if len(l.Params()) > 0 {
		return nil, nil, fmt.Errorf("nn: %T has parameters but no path rules", l)
	}
	if x != nil && len(x.Shape) > 0 {
		if err := p.check(fmt.Sprintf("%T", l), x.Shape[0]); err != nil {
			return nil, nil, err
		}
	}
	return l.Forward(x)
}

// pathBackward is l's PathBackward, or for non-nil grp its
// PathBackwardGrouped; a layer without parameters runs Backward.
func pathBackward[T tensor.Float](l Layer[T], st State, dy *tensor.Dense[T], g *Grads[T], grp *rowGroups, needDx bool) (*tensor.Dense[T], error) {
	if len(l.Params()) == 0 {
		return l.Backward(st, dy, nil, needDx)
	}
	if grp != nil {
		gl, ok := l.(GroupedPathLayer[T])
		if !ok {
			return nil, fmt.Errorf("nn: %T has no grouped path backward pass", l)
		}
		return gl.PathBackwardGrouped(st, dy, g, grp.of, grp.n, needDx)
	}
	pl, ok := l.(PathLayer[T])
	if !ok {
		return nil, fmt.Errorf("nn: %T has parameters but no path rules", l)
	}
	return pl.PathBackward(st, dy, g, needDx)
}

// pathJVP is l's PathJVP, or JVP for a layer without parameters.
func pathJVP[T tensor.Float](l Layer[T], x, dx *tensor.Dense[T], p *Path[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	if pl, ok := l.(PathLayer[T]); ok {
		return pl.PathJVP(x, dx, p, t)
	}
	if len(l.Params()) > 0 {
		return nil, nil, fmt.Errorf("nn: %T has parameters but no path rules", l)
	}
	if x != nil && len(x.Shape) > 0 {
		if err := p.check(fmt.Sprintf("%T", l), x.Shape[0]); err != nil {
			return nil, nil, err
		}
	}
	return l.JVP(x, dx, t)
}

// PathForward runs the layers' path rules in order (a layer without
// parameters runs Forward) and keeps each layer's state.
func (s *Sequential[T]) PathForward(x *tensor.Dense[T], p *Path[T]) (*tensor.Dense[T], State, error) {
	if _, err := s.OutShape(x.Shape); err != nil {
		return nil, nil, err
	}
	st := make(sequentialState, len(s.Layers))
	for i, l := range s.Layers {
		y, ls, err := pathForward(l, x, p)
		if err != nil {
			return nil, nil, fmt.Errorf("layer %d: %w", i, err)
		}
		st[i], x = ls, y
	}
	return x, st, nil
}

// PathBackward runs the layers' path VJPs in reverse order, for a state
// from PathForward.
func (s *Sequential[T]) PathBackward(st State, dy *tensor.Dense[T], g *Grads[T], needDx bool) (*tensor.Dense[T], error) {
	return s.pathBackward(st, dy, g, nil, needDx)
}

// PathBackwardGrouped is PathBackward with every layer's parameter
// gradients summed per group of samples (see GroupedPathLayer).
func (s *Sequential[T]) PathBackwardGrouped(st State, dy *tensor.Dense[T], g *Grads[T], groups []int, nGroups int, needDx bool) (*tensor.Dense[T], error) {
	return s.pathBackward(st, dy, g, &rowGroups{of: groups, n: nGroups}, needDx)
}

func (s *Sequential[T]) pathBackward(st State, dy *tensor.Dense[T], g *Grads[T], grp *rowGroups, needDx bool) (*tensor.Dense[T], error) {
	states, ok := st.(sequentialState)
	if !ok || len(states) != len(s.Layers) {
		return nil, fmt.Errorf("nn.Sequential: PathBackward got a state from another layer")
	}
	for i := len(s.Layers) - 1; i >= 0; i-- {
		var err error
		dy, err = pathBackward(s.Layers[i], states[i], dy, g, grp, needDx || i > 0)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	return dy, nil
}

// PathJVP chains the layers' path JVPs (JVP for a layer without
// parameters).
func (s *Sequential[T]) PathJVP(x, dx *tensor.Dense[T], p *Path[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	if _, err := s.OutShape(x.Shape); err != nil {
		return nil, nil, err
	}
	for i, l := range s.Layers {
		var err error
		x, dx, err = pathJVP(l, x, dx, p, t)
		if err != nil {
			return nil, nil, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	return x, dx, nil
}

// PathForward computes x + Module(x) with the module on the path.
func (r *Residual[T]) PathForward(x *tensor.Dense[T], p *Path[T]) (*tensor.Dense[T], State, error) {
	if _, err := r.OutShape(x.Shape); err != nil {
		return nil, nil, err
	}
	m, st, err := pathForward(r.Module, x, p)
	if err != nil {
		return nil, nil, err
	}
	y := x.Clone()
	tensor.AddScaled(y.Data, 1, m.Data)
	return y, st, nil
}

// PathBackward: dx = dy + the module's path VJP of dy.
func (r *Residual[T]) PathBackward(st State, dy *tensor.Dense[T], g *Grads[T], needDx bool) (*tensor.Dense[T], error) {
	return r.pathBackward(st, dy, g, nil, needDx)
}

// PathBackwardGrouped is PathBackward with the module's parameter
// gradients summed per group of samples (see GroupedPathLayer).
func (r *Residual[T]) PathBackwardGrouped(st State, dy *tensor.Dense[T], g *Grads[T], groups []int, nGroups int, needDx bool) (*tensor.Dense[T], error) {
	return r.pathBackward(st, dy, g, &rowGroups{of: groups, n: nGroups}, needDx)
}

func (r *Residual[T]) pathBackward(st State, dy *tensor.Dense[T], g *Grads[T], grp *rowGroups, needDx bool) (*tensor.Dense[T], error) {
	dm, err := pathBackward(r.Module, st, dy, g, grp, true)
	if err != nil || !needDx {
		return nil, err
	}
	dx := dy.Clone()
	tensor.AddScaled(dx.Data, 1, dm.Data)
	return dx, nil
}

// PathJVP: dy = dx + the module's path JVP.
func (r *Residual[T]) PathJVP(x, dx *tensor.Dense[T], p *Path[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	if _, err := r.OutShape(x.Shape); err != nil {
		return nil, nil, err
	}
	y, dy, err := pathJVP(r.Module, x, dx, p, t)
	if err != nil {
		return nil, nil, err
	}
	tensor.AddScaled(y.Data, 1, x.Data)
	if dx != nil {
		tensor.AddScaled(dy.Data, 1, dx.Data)
	}
	return y, dy, nil
}

var (
	_ GroupedPathLayer[float32] = (*Linear[float32])(nil)
	_ GroupedPathLayer[float32] = (*Conv2d[float32])(nil)
	_ GroupedPathLayer[float32] = (*AttentionHeads[float32])(nil)
	_ GroupedPathLayer[float32] = (*Sequential[float32])(nil)
	_ GroupedPathLayer[float32] = (*Residual[float32])(nil)
	_ PathLayer[float32]        = (*Embedding[float32])(nil)
)
