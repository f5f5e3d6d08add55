package epk

import (
	"fmt"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// PathModel is a classifier that can be evaluated along a straight segment
// θ + t·Δθ of parameter space with one position per input row (nn.Path):
// the parameters' current values are θ, p.Delta is Δθ and p.T[b] the
// position of row b. Outputs are log-probabilities [B, C].
type PathModel[T tensor.Float] interface {
	// Params lists the parameters (θ are their current values).
	Params() []*nn.Param[T]
	// PathForward evaluates the outputs [B, C] and returns a state for
	// PathBackward.
	PathForward(x *tensor.Dense[T], p *nn.Path[T]) (*tensor.Dense[T], nn.State, error)
	// PathBackward maps K cotangents per row ([B*K, C]) to parameter
	// gradients at each row's path point, summed or per row, and returns
	// the input cotangent when needDx (nil where the input is discrete),
	// like the nn layers' PathBackward. epk asks for no input cotangent.
	PathBackward(st nn.State, dy *tensor.Dense[T], g *nn.Grads[T], needDx bool) (*tensor.Dense[T], error)
	// PathJVP returns the outputs [B, C] and their derivatives [B*M, C]
	// along M parameter tangents, at each row's path point.
	PathJVP(x *tensor.Dense[T], p *nn.Path[T], t *nn.Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error)
}

// SwitchModel is a PathModel whose Jacobian is smooth in t except where
// one of its switch values (the inputs of its ReLUs) changes sign: the
// activation pattern is "switch value > 0", and between pattern changes
// every output is smooth along the path. Exact quadrature locates the sign
// changes.
type SwitchModel[T tensor.Float] interface {
	PathModel[T]
	// PathSwitches returns the switch values [B, S] at each row's path
	// point and, when deriv is set, their derivatives d/dt along the path
	// [B, S] (dsw is nil otherwise).
	PathSwitches(x *tensor.Dense[T], p *nn.Path[T], deriv bool) (sw, dsw *tensor.Dense[T], err error)
}

// SwitchPicker is an optional method set of a SwitchModel: the value of
// one chosen switch per row, cheaper than all of them. Exact's root
// refinement needs one unit per bracket and uses it when present.
type SwitchPicker[T tensor.Float] interface {
	// PathSwitchesAt returns, for each row b, switch value units[b] of
	// PathSwitches at the row's path point.
	PathSwitchesAt(x *tensor.Dense[T], p *nn.Path[T], units []int) ([]T, error)
}

// LayerPath adapts any layer (a classifier's nn.Layer, such as
// models.ResNet9) to PathModel without path methods of its own: rows are
// grouped by equal position t, and each group is evaluated with the
// layer's own Forward, JVP and Backward after θ + t·Δθ has been written into
// its parameters. The parameters are restored (bit for bit) before every
// method returns. Fixed rules and Adaptive (whose nodes are shared by all
// samples, or dyadic) give few groups; Exact's per-sample nodes would give
// one group per row.
//
// The adapter writes to the layer's parameters: it is not safe for
// concurrent use, nor for use while another goroutine evaluates the layer.
func LayerPath[T tensor.Float](l nn.Layer[T]) PathModel[T] {
	return &layerPath[T]{l: l}
}

type layerPath[T tensor.Float] struct {
	l nn.Layer[T]
}

// Params returns the layer's parameters.
func (lp *layerPath[T]) Params() []*nn.Param[T] { return lp.l.Params() }

// group is the rows of one path position.
type group struct {
	t    float64
	rows []int
}

// groupRows groups row indices by equal position, in order of first
// appearance.
func groupRows(ts []float64) []group {
	idx := map[float64]int{}
	var gs []group
	for r, t := range ts {
		i, ok := idx[t]
		if !ok {
			i = len(gs)
			idx[t] = i
			gs = append(gs, group{t: t})
		}
		gs[i].rows = append(gs[i].rows, r)
	}
	return gs
}

// mover writes θ + t·Δθ into parameters and restores θ.
type mover[T tensor.Float] struct {
	params []*nn.Param[T]
	deltas []*tensor.Dense[T]
	base   [][]T
}

func newMover[T tensor.Float](params []*nn.Param[T], p *nn.Path[T]) (*mover[T], error) {
	mv := &mover[T]{}
	if p == nil {
		return mv, nil
	}
	for _, prm := range params {
		d := p.Delta[prm]
		if d == nil {
			continue
		}
		if len(d.Data) != len(prm.Value.Data) {
			return nil, fmt.Errorf("epk: path direction for %s has %d values, want %d", prm.Name, len(d.Data), len(prm.Value.Data))
		}
		mv.params = append(mv.params, prm)
		mv.deltas = append(mv.deltas, d)
		mv.base = append(mv.base, append([]T(nil), prm.Value.Data...))
	}
	return mv, nil
}

// set writes θ + t·Δθ (in T arithmetic) into the parameters.
func (mv *mover[T]) set(t float64) {
	tv := T(t)
	for i, prm := range mv.params {
		dst, base, d := prm.Value.Data, mv.base[i], mv.deltas[i].Data
		if tv == 0 {
			copy(dst, base)
			continue
		}
		for j := range dst {
			dst[j] = base[j] + tv*d[j]
		}
	}
}

// restore writes θ back.
func (mv *mover[T]) restore() {
	for i, prm := range mv.params {
		copy(prm.Value.Data, mv.base[i])
	}
}

// scatterRows copies row block i of src to row block idx[i] of dst.
func scatterRows[T tensor.Float](dst, src *tensor.Dense[T], idx []int) {
	n := len(src.Data) / len(idx)
	for i, r := range idx {
		copy(dst.Data[r*n:(r+1)*n], src.Data[i*n:(i+1)*n])
	}
}

// positionsOf returns p's positions for b rows (zeros for a nil path).
func positionsOf[T tensor.Float](p *nn.Path[T], b int) ([]float64, error) {
	ts := make([]float64, b)
	if p != nil {
		if len(p.T) != b {
			return nil, fmt.Errorf("epk: path has %d positions for %d rows", len(p.T), b)
		}
		copy(ts, p.T)
	}
	return ts, nil
}

type layerPathState[T tensor.Float] struct {
	p      *nn.Path[T]
	groups []group
	states []nn.State
	b      int
}

// PathForward evaluates each group of equal positions at its parameters.
func (lp *layerPath[T]) PathForward(x *tensor.Dense[T], p *nn.Path[T]) (*tensor.Dense[T], nn.State, error) {
	if x == nil || len(x.Shape) == 0 || x.Shape[0] == 0 {
		return nil, nil, fmt.Errorf("epk: empty input")
	}
	b := x.Shape[0]
	ts, err := positionsOf(p, b)
	if err != nil {
		return nil, nil, err
	}
	mv, err := newMover(lp.l.Params(), p)
	if err != nil {
		return nil, nil, err
	}
	defer mv.restore()
	st := &layerPathState[T]{p: p, groups: groupRows(ts), b: b}
	var y *tensor.Dense[T]
	for _, g := range st.groups {
		mv.set(g.t)
		yg, sg, err := lp.l.Forward(tensor.GatherRows(x, g.rows, 1))
		if err != nil {
			return nil, nil, err
		}
		if y == nil {
			y = tensor.New[T](append([]int{b}, yg.Shape[1:]...)...)
		}
		scatterRows(y, yg, g.rows)
		st.states = append(st.states, sg)
	}
	return y, st, nil
}

// PathBackward runs each group's Backward at its parameters. It returns no
// input cotangent (nil), whatever needDx says.
func (lp *layerPath[T]) PathBackward(st nn.State, dy *tensor.Dense[T], g *nn.Grads[T], needDx bool) (*tensor.Dense[T], error) {
	s, ok := st.(*layerPathState[T])
	if !ok {
		return nil, fmt.Errorf("epk: PathBackward got a state that LayerPath's PathForward did not make")
	}
	if dy == nil || len(dy.Shape) == 0 || dy.Shape[0]%s.b != 0 || dy.Shape[0] == 0 {
		return nil, fmt.Errorf("epk: cotangents do not fit a batch of %d rows", s.b)
	}
	k := dy.Shape[0] / s.b
	mv, err := newMover(lp.l.Params(), s.p)
	if err != nil {
		return nil, err
	}
	defer mv.restore()
	for i, gr := range s.groups {
		mv.set(gr.t)
		dyg := tensor.GatherRows(dy, gr.rows, k)
		if g == nil || g.Mode == nn.Summed {
			if _, err := lp.l.Backward(s.states[i], dyg, g, false); err != nil {
				return nil, err
			}
			continue
		}
		sub := &nn.Grads[T]{Mode: nn.PerRow, Of: make(map[*nn.Param[T]]*tensor.Dense[T], len(g.Of))}
		for prm, buf := range g.Of {
			sub.Of[prm] = tensor.New[T](append([]int{len(gr.rows) * k}, buf.Shape[1:]...)...)
		}
		if _, err := lp.l.Backward(s.states[i], dyg, sub, false); err != nil {
			return nil, err
		}
		for prm, buf := range g.Of {
			src := sub.Of[prm]
			n := len(src.Data) / len(gr.rows) // values of one sample's K rows
			for j, r := range gr.rows {
				tensor.AddScaled(buf.Data[r*n:(r+1)*n], 1, src.Data[j*n:(j+1)*n])
			}
		}
	}
	return nil, nil
}

// PathJVP evaluates each group's JVP at its parameters.
func (lp *layerPath[T]) PathJVP(x *tensor.Dense[T], p *nn.Path[T], t *nn.Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	if x == nil || len(x.Shape) == 0 || x.Shape[0] == 0 {
		return nil, nil, fmt.Errorf("epk: empty input")
	}
	b := x.Shape[0]
	ts, err := positionsOf(p, b)
	if err != nil {
		return nil, nil, err
	}
	mv, err := newMover(lp.l.Params(), p)
	if err != nil {
		return nil, nil, err
	}
	defer mv.restore()
	m := t.Count()
	var y, dy *tensor.Dense[T]
	for _, g := range groupRows(ts) {
		mv.set(g.t)
		yg, dyg, err := lp.l.JVP(tensor.GatherRows(x, g.rows, 1), nil, t)
		if err != nil {
			return nil, nil, err
		}
		if y == nil {
			y = tensor.New[T](append([]int{b}, yg.Shape[1:]...)...)
			dy = tensor.New[T](append([]int{b * m}, dyg.Shape[1:]...)...)
		}
		scatterRows(y, yg, g.rows)
		scatterRows(dy, dyg, g.rows)
	}
	return y, dy, nil
}
