package nn

import (
	"fmt"

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
	if err := e.addPath(y, x, st.(*embeddingState).ids, p); err != nil {
		return nil, nil, err
	}
	return y, st, nil
}

// addPath adds t_b·Scale·ΔW[x[b, s]] to Forward's lookups y of the tokens
// x, whose ids are given, or read from x when nil and needed.
func (e *Embedding[T]) addPath(y, x *tensor.Dense[T], ids []int, p *Path[T]) error {
	if err := p.check("Embedding", x.Shape[0]); err != nil {
		return err
	}
	dW, err := p.delta(e.Weight)
	if err != nil || dW == nil {
		return err
	}
	if ids == nil {
		if ids, err = e.tokens(x); err != nil {
			return err
		}
	}
	seq, d := x.Shape[1], e.Dim
	tmp := getScratch[T](len(y.Data))
	defer putScratch(tmp)
	e.gather(dW.Data, ids, tmp)
	addRowScaled(y.Data, tmp, seq*d, p.T, 1)
	return nil
}

// PathBackward is Backward: the lookup's gradient does not depend on the
// table, so the path position does not matter.
func (e *Embedding[T]) PathBackward(st State, dy *tensor.Dense[T], g *Grads[T], needDx bool) (*tensor.Dense[T], error) {
	return e.Backward(st, dy, g, needDx)
}

// PathJVP returns PathForward's output and JVP's tangents, which do not
// depend on the table: dy[b*M+m, s] = Scale·dW_m[x[b, s]].
func (e *Embedding[T]) PathJVP(x, dx *tensor.Dense[T], p *Path[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	y, dy, err := e.JVP(x, dx, t)
	if err != nil {
		return nil, nil, err
	}
	if err := e.addPath(y, x, nil, p); err != nil {
		return nil, nil, err
	}
	return y, dy, nil
}

// PathBackwardGrouped is PathBackward with the weight gradients of the
// cotangent rows summed per group of samples: sample b belongs to group
// groups[b] (nondecreasing, in [0, nGroups)), and g, which must be PerRow,
// has a weight buffer of shape [nGroups*K, Vocab, Dim] (K cotangents per
// sample), or none. Each row touches only its S tokens' rows of the table,
// so their cotangents are scattered straight into the group's block,
// gW[groups[b]*K+k][x[b, s]] += Scale·dy[b*K+k, s], with no per-row buffer
// over the whole table. Like Backward it returns no input cotangent.
func (e *Embedding[T]) PathBackwardGrouped(st State, dy *tensor.Dense[T], g *Grads[T], groups []int, nGroups int) error {
	s, ok := st.(*embeddingState)
	if !ok {
		return fmt.Errorf("nn.Embedding(%s): PathBackwardGrouped got a state from another layer", e.Weight.Name)
	}
	seq := len(s.ids) / s.batch
	k, err := cotangentsPerSample("Embedding", dy.Shape, s.batch, []int{s.batch, seq, e.Dim})
	if err != nil {
		return err
	}
	grp := &rowGroups{of: groups, n: nGroups}
	if err := grp.check(s.batch); err != nil {
		return fmt.Errorf("nn.Embedding(%s): PathBackwardGrouped: %w", e.Weight.Name, err)
	}
	if g != nil && g.Mode != PerRow {
		return fmt.Errorf("nn.Embedding(%s): PathBackwardGrouped needs PerRow gradient buffers", e.Weight.Name)
	}
	gw, err := g.checkBuf(e.Weight, nGroups*k)
	if err != nil || gw == nil {
		return err
	}
	d := e.Dim
	scale := T(e.Scale)
	size := e.Vocab * d
	for b, gi := range groups {
		for kk := 0; kk < k; kk++ {
			dst := gw.Data[(gi*k+kk)*size : (gi*k+kk+1)*size]
			r := b*k + kk
			addTokenRows(dst, s.ids[b*seq:(b+1)*seq], dy.Data[r*seq*d:(r+1)*seq*d], d, scale)
		}
	}
	return nil
}
