package nn

import (
	"fmt"

	"github.com/explaind/explaind/tensor"
)

// linearPathState is what PathForward keeps for PathBackward.
type linearPathState[T tensor.Float] struct {
	x  *tensor.Dense[T]
	dW *tensor.Dense[T] // nil when the weight does not move
	t  []float64
}

// pathDeltas returns the weight's and the bias's path directions.
func (l *Linear[T]) pathDeltas(p *Path[T]) (dW, db *tensor.Dense[T], err error) {
	if dW, err = p.delta(l.Weight); err != nil {
		return nil, nil, err
	}
	if l.Bias != nil {
		if db, err = p.delta(l.Bias); err != nil {
			return nil, nil, err
		}
	}
	return dW, db, nil
}

// addPathAffine adds t_b ⊙ (x ΔWᵀ + Δb) to y for rows of x, per rows per
// sample.
func (l *Linear[T]) addPathAffine(x, y []T, dW, db *tensor.Dense[T], t []float64, per int) {
	rows := len(x) / l.In
	if dW != nil {
		addScaledProduct(y, x, dW.Data, rows, l.Out, l.In, true, t, per)
	}
	if db != nil {
		for r := 0; r < rows; r++ {
			tensor.AddScaled(y[r*l.Out:(r+1)*l.Out], T(t[r/per]), db.Data)
		}
	}
}

// PathForward computes y = x (W + t_b ΔW)ᵀ + (b + t_b Δb) for every sample
// b, as x Wᵀ + b + t_b ⊙ (x ΔWᵀ + Δb): two GEMMs.
func (l *Linear[T]) PathForward(x *tensor.Dense[T], p *Path[T]) (*tensor.Dense[T], State, error) {
	shape, err := checkInput[T](l, x)
	if err != nil {
		return nil, nil, err
	}
	if err := p.check("Linear", x.Shape[0]); err != nil {
		return nil, nil, err
	}
	dW, db, err := l.pathDeltas(p)
	if err != nil {
		return nil, nil, err
	}
	// Forward's product, without Forward's state: PathForward keeps its own.
	y := tensor.New[T](shape...)
	l.affine(x.Data, y.Data, len(x.Data)/l.In)
	if dW != nil || db != nil {
		l.addPathAffine(x.Data, y.Data, dW, db, p.T, len(x.Data)/(x.Shape[0]*l.In))
	}
	return y, &linearPathState[T]{x: x, dW: dW, t: p.positions()}, nil
}

// PathBackward is Backward at the path point of each sample: the parameter
// gradients (dyᵀ x and Σ dy) do not depend on the weights, and
// dx = dy (W + t_b ΔW).
func (l *Linear[T]) PathBackward(st State, dy *tensor.Dense[T], g *Grads[T], needDx bool) (*tensor.Dense[T], error) {
	s, ok := st.(*linearPathState[T])
	if !ok {
		return nil, fmt.Errorf("nn.Linear(%s): PathBackward got a state from another layer or from Forward", l.Weight.Name)
	}
	dx, err := l.Backward(&linearState[T]{x: s.x}, dy, g, needDx)
	if err != nil || !needDx || s.dW == nil {
		return dx, err
	}
	rows := len(dx.Data) / l.In
	addScaledProduct(dx.Data, dy.Data, s.dW.Data, rows, l.In, l.Out, false, s.t, rows/s.x.Shape[0])
	return dx, nil
}

// PathJVP is JVP at the path point of each sample:
// y = x (W + t_b ΔW)ᵀ + b + t_b Δb and
// dy_m = dx_m (W + t_b ΔW)ᵀ + x dW_mᵀ + db_m.
func (l *Linear[T]) PathJVP(x, dx *tensor.Dense[T], p *Path[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	y, dy, err := l.JVP(x, dx, t)
	if err != nil {
		return nil, nil, err
	}
	b := x.Shape[0]
	if err := p.check("Linear", b); err != nil {
		return nil, nil, err
	}
	dW, db, err := l.pathDeltas(p)
	if err != nil {
		return nil, nil, err
	}
	if dW == nil && db == nil {
		return y, dy, nil
	}
	pos := len(x.Data) / (b * l.In)
	l.addPathAffine(x.Data, y.Data, dW, db, p.T, pos)
	if dx != nil && dW != nil {
		rows := len(dx.Data) / l.In
		addScaledProduct(dy.Data, dx.Data, dW.Data, rows, l.Out, l.In, true, p.T, rows/b)
	}
	return y, dy, nil
}
