package nn

import (
	"github.com/explaind/explaind/tensor"
)

// PathForward gathers y[b, s] = Scale·(W + t_b ΔW)[x[b, s]], as
// Scale·W[id] + t_b·Scale·ΔW[id]. Its state is Forward's: Backward does not
// depend on the table.
func (e *Embedding[T]) PathForward(x *tensor.Dense[T], p *Path[T]) (*tensor.Dense[T], State, error) {
	y, st, err := e.Forward(x)
	if err != nil {
		return nil, nil, err
	}
	if err := p.check("Embedding", x.Shape[0]); err != nil {
		return nil, nil, err
	}
	dW, err := p.delta(e.Weight)
	if err != nil || dW == nil {
		return y, st, err
	}
	ids := st.(*embeddingState).ids
	seq, d := x.Shape[1], e.Dim
	tmp := make([]T, len(y.Data))
	e.gather(dW.Data, ids, tmp)
	addRowScaled(y.Data, tmp, seq*d, p.T, 1)
	return y, st, nil
}

// PathBackward is Backward: the lookup's gradient does not depend on the
// table, so the path position does not matter.
func (e *Embedding[T]) PathBackward(st State, dy *tensor.Dense[T], g *Grads[T], needDx bool) (*tensor.Dense[T], error) {
	return e.Backward(st, dy, g, needDx)
}

// PathJVP returns PathForward's output and JVP's tangents, which do not
// depend on the table: dy[b*M+m, s] = Scale·dW_m[x[b, s]].
func (e *Embedding[T]) PathJVP(x, dx *tensor.Dense[T], p *Path[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	y, _, err := e.PathForward(x, p)
	if err != nil {
		return nil, nil, err
	}
	_, dy, err := e.JVP(x, dx, t)
	if err != nil {
		return nil, nil, err
	}
	return y, dy, nil
}
