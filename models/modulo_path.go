package models

import (
	"fmt"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// Switches returns the number of switch values per sample (see
// PathSwitches): MLP + DModel.
func (m *Modulo[T]) Switches() int { return m.Config.MLP + m.Config.DModel }

// PathForward evaluates the model at θ + t_b Δθ for every sample b (see
// nn.Path) and returns the log-probabilities [B, P+2] and a state for
// PathBackward. A nil path is θ itself: Forward.
func (m *Modulo[T]) PathForward(x *tensor.Dense[T], p *nn.Path[T]) (*tensor.Dense[T], nn.State, error) {
	y, st, _, _, err := m.forward(x, p, true)
	if err != nil {
		return nil, nil, fmt.Errorf("models.Modulo: %w", err)
	}
	return y, st, nil
}

// forward is PathForward that also returns the ReLU inputs u and v;
// without full it stops after v (y and st are nil).
func (m *Modulo[T]) forward(x *tensor.Dense[T], p *nn.Path[T], full bool) (y *tensor.Dense[T], st *moduloState[T], u, v *tensor.Dense[T], err error) {
	if _, err := m.OutShape(x.Shape); err != nil {
		return nil, nil, nil, nil, err
	}
	st = &moduloState[T]{}
	h0, s, err := m.Embedding.PathForward(x, p)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	st.emb = s
	a, s, err := m.Attention.PathForward(h0, p)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	st.attn, st.a = s, a
	u, s, err = m.Linear1.PathForward(a, p)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	st.l1 = s
	r1, s, err := nn.ReLU[T]{}.Forward(u)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	st.relu1, st.r1 = s, r1
	v, s, err = m.Linear2.PathForward(r1, p)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if !full {
		return nil, nil, u, v, nil
	}
	st.l2 = s
	r2, s, err := nn.ReLU[T]{}.Forward(v)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	st.relu2 = s
	h := a.Clone() // residual: h = a + ReLU(linear2(ReLU(linear1(a))))
	tensor.AddScaled(h.Data, 1, r2.Data)
	st.h = h
	logits, s, err := m.Decoder.PathForward(h, p)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	st.dec = s
	y, s, err = nn.LogSoftmax[T]{}.Forward(logits)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	st.lsm = s
	return y, st, u, v, nil
}

// PathBackward is Backward at each sample's path point, for a state from
// PathForward: it maps K cotangents per sample ([B*K, P+2]) to parameter
// gradients in g (summed or per row). Like Backward it returns no input
// cotangent.
func (m *Modulo[T]) PathBackward(st nn.State, dy *tensor.Dense[T], g *nn.Grads[T], needDx bool) (*tensor.Dense[T], error) {
	return nil, m.backward("PathBackward", st, dy, m.rowGrads(g))
}

// PathBackwardGrouped is PathBackward with the gradients of the rows summed
// per group: batch row b belongs to group groups[b] (nondecreasing), and
// g, which must be PerRow, has buffers with the PerRow layout over groups,
// [nGroups*K, shape...] (K cotangents per row). Every parameter's gradient
// goes straight into the group buffers, none is formed per row: the
// weights of the linear layers and of the attention heads with one GEMM
// per run of rows in a group (see nn.Linear.PathBackwardGrouped and
// nn.AttentionHeads.PathBackwardGrouped), the embedding by scattering each
// row's token cotangents into its group (see
// nn.Embedding.PathBackwardGrouped) and the biases by adding each row's
// cotangents to its group's. epk's feature pass uses it to sum quadrature
// nodes per test sample.
func (m *Modulo[T]) PathBackwardGrouped(st nn.State, dy *tensor.Dense[T], g *nn.Grads[T], groups []int, nGroups int) error {
	if _, ok := st.(*moduloState[T]); !ok {
		return fmt.Errorf("models.Modulo: PathBackwardGrouped got a state from another model")
	}
	B := len(groups)
	if B == 0 || dy.Shape[0]%B != 0 {
		return fmt.Errorf("models.Modulo: %d cotangent rows for %d grouped rows", dy.Shape[0], B)
	}
	for i, gi := range groups {
		if gi < 0 || gi >= nGroups || (i > 0 && gi < groups[i-1]) {
			return fmt.Errorf("models.Modulo: groups must be nondecreasing in [0, %d)", nGroups)
		}
	}
	if g != nil && g.Mode != nn.PerRow {
		return fmt.Errorf("models.Modulo: PathBackwardGrouped needs PerRow gradient buffers")
	}
	return m.backward("PathBackwardGrouped", st, dy, moduloGrads[T]{g: g, groups: groups, nGroups: nGroups})
}

// PerRowValues is the number of parameter values whose gradients
// PathBackwardGrouped forms per row before summing them per group: none,
// since every parameter's gradient goes straight into the group buffers.
// epk's feature pass divides its gradient-value budget by it (times K) to
// bound the rows of one call; with 0 only its row limit applies.
func (m *Modulo[T]) PerRowValues() int { return 0 }

// moduloGrads says where backward puts the parameter gradients: into g
// (nil: nowhere), Summed or PerRow, or with groups summed per group of
// rows into g's PerRow buffers over the groups (PathBackwardGrouped).
type moduloGrads[T tensor.Float] struct {
	g *nn.Grads[T]
	// linear is what the linear layers' PathBackward gets without groups:
	// g, or for PerRow g without the linear weights, which perRowWeight
	// forms instead.
	linear *nn.Grads[T]
	// groups[b] is the group of row b, of nGroups (nil: no groups).
	groups  []int
	nGroups int
}

// rowGrads returns the moduloGrads of Backward and PathBackward, which put
// the gradients into g.
func (m *Modulo[T]) rowGrads(g *nn.Grads[T]) moduloGrads[T] {
	mg := moduloGrads[T]{g: g, linear: g}
	if g != nil && g.Mode == nn.PerRow {
		mg.linear = &nn.Grads[T]{Mode: nn.PerRow, Of: make(map[*nn.Param[T]]*tensor.Dense[T], len(g.Of))}
		for p, buf := range g.Of {
			if p != m.Linear1.Weight && p != m.Linear2.Weight && p != m.Decoder.Weight {
				mg.linear.Of[p] = buf
			}
		}
	}
	return mg
}

// linearBackward runs l's backward pass for the output cotangents dy
// [B*K, out] at the state st (x [B, in] is l's input) and returns the
// input cotangent.
func (mg moduloGrads[T]) linearBackward(l *nn.Linear[T], st nn.State, dy, x *tensor.Dense[T]) (*tensor.Dense[T], error) {
	if mg.groups != nil {
		return l.PathBackwardGrouped(st, dy, mg.g, mg.groups, mg.nGroups, true)
	}
	dx, err := l.PathBackward(st, dy, mg.linear, true)
	if err != nil {
		return nil, err
	}
	return dx, perRowWeight(mg.g, l.Weight, dy, x)
}

// attentionBackward runs a's backward pass for the output cotangents dy
// at the state st and returns the input cotangent.
func (mg moduloGrads[T]) attentionBackward(a *nn.AttentionHeads[T], st nn.State, dy *tensor.Dense[T]) (*tensor.Dense[T], error) {
	if mg.groups != nil {
		return a.PathBackwardGrouped(st, dy, mg.g, mg.groups, mg.nGroups, true)
	}
	return a.PathBackward(st, dy, mg.g, true)
}

// embeddingBackward runs e's backward pass for the output cotangents dy at
// the state st.
func (mg moduloGrads[T]) embeddingBackward(e *nn.Embedding[T], st nn.State, dy *tensor.Dense[T]) error {
	if mg.groups != nil {
		return e.PathBackwardGrouped(st, dy, mg.g, mg.groups, mg.nGroups)
	}
	_, err := e.PathBackward(st, dy, mg.g, false)
	return err
}

// backward is the backward pass at each sample's path point for a state
// from forward (method names the caller in errors), with the gradients
// going where mg says.
func (m *Modulo[T]) backward(method string, st nn.State, dy *tensor.Dense[T], mg moduloGrads[T]) error {
	s, ok := st.(*moduloState[T])
	if !ok {
		return fmt.Errorf("models.Modulo: %s got a state from another model", method)
	}
	if err := m.backwardLayers(s, dy, mg); err != nil {
		return fmt.Errorf("models.Modulo: %w", err)
	}
	return nil
}

// backwardLayers runs the layers' backward passes from the output down:
// log-softmax, decoder, ReLU, linear2, ReLU, linear1 (plus the residual),
// attention, embedding.
func (m *Modulo[T]) backwardLayers(s *moduloState[T], dy *tensor.Dense[T], mg moduloGrads[T]) error {
	dl, err := nn.LogSoftmax[T]{}.Backward(s.lsm, dy, nil, true)
	if err != nil {
		return err
	}
	dh, err := mg.linearBackward(m.Decoder, s.dec, dl, s.h)
	if err != nil {
		return err
	}
	dv, err := nn.ReLU[T]{}.Backward(s.relu2, dh, nil, true)
	if err != nil {
		return err
	}
	dr1, err := mg.linearBackward(m.Linear2, s.l2, dv, s.r1)
	if err != nil {
		return err
	}
	du, err := nn.ReLU[T]{}.Backward(s.relu1, dr1, nil, true)
	if err != nil {
		return err
	}
	da, err := mg.linearBackward(m.Linear1, s.l1, du, s.a)
	if err != nil {
		return err
	}
	tensor.AddScaled(da.Data, 1, dh.Data) // the residual path
	dh0, err := mg.attentionBackward(m.Attention, s.attn, da)
	if err != nil {
		return err
	}
	return mg.embeddingBackward(m.Embedding, s.emb, dh0)
}

// PathJVP returns the log-probabilities [B, P+2] at each sample's path
// point and their derivatives [B*M, P+2] along M parameter tangents.
func (m *Modulo[T]) PathJVP(x *tensor.Dense[T], p *nn.Path[T], t *nn.Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	y, dy, _, _, err := m.jvp(x, nil, p, t, true)
	if err != nil {
		return nil, nil, fmt.Errorf("models.Modulo: %w", err)
	}
	return y, dy, nil
}

// PathSwitches returns, for each sample at its path point, the inputs of
// the model's two ReLUs: sw [B, MLP+DModel] holds linear1's outputs, then
// linear2's. The activation pattern, and with it the Jacobian, changes
// exactly where one of them changes sign; between such points every output
// is smooth in t. With deriv, dsw [B, MLP+DModel] holds their derivatives
// d/dt along the path (a JVP along Δθ); otherwise dsw is nil.
func (m *Modulo[T]) PathSwitches(x *tensor.Dense[T], p *nn.Path[T], deriv bool) (sw, dsw *tensor.Dense[T], err error) {
	var u, v, du, dv *tensor.Dense[T]
	if deriv {
		tan := &nn.Tangents[T]{M: 1, Of: map[*nn.Param[T]]*tensor.Dense[T]{}}
		if p != nil {
			for prm, d := range p.Delta {
				if d != nil {
					tan.Of[prm] = &tensor.Dense[T]{Shape: append([]int{1}, d.Shape...), Data: d.Data}
				}
			}
		}
		var us, dus [2]*tensor.Dense[T]
		_, _, us, dus, err = m.jvp(x, nil, p, tan, false)
		u, v, du, dv = us[0], us[1], dus[0], dus[1]
	} else {
		_, _, u, v, err = m.forward(x, p, false)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("models.Modulo: %w", err)
	}
	sw = concatRows(u, v)
	if deriv {
		dsw = concatRows(du, dv)
	}
	return sw, dsw, nil
}

// concatRows returns [a | b] for a [B, n] and b [B, k].
func concatRows[T tensor.Float](a, b *tensor.Dense[T]) *tensor.Dense[T] {
	rows := a.Shape[0]
	na, nb := len(a.Data)/rows, len(b.Data)/rows
	out := tensor.New[T](rows, na+nb)
	for r := 0; r < rows; r++ {
		copy(out.Data[r*(na+nb):], a.Data[r*na:(r+1)*na])
		copy(out.Data[r*(na+nb)+na:], b.Data[r*nb:(r+1)*nb])
	}
	return out
}

// jvp is PathJVP (JVP for a nil path, with the input tangent dx checked)
// that also returns the ReLU inputs u, v and their tangents du, dv;
// without full it stops after v (y and dy are nil).
func (m *Modulo[T]) jvp(x, dx *tensor.Dense[T], p *nn.Path[T], t *nn.Tangents[T], full bool) (y, dy *tensor.Dense[T], sw, dsw [2]*tensor.Dense[T], err error) {
	if _, err = m.OutShape(x.Shape); err != nil {
		return
	}
	h0, dh0, err := m.Embedding.PathJVP(x, dx, p, t)
	if err != nil {
		return
	}
	a, da, err := m.Attention.PathJVP(h0, dh0, p, t)
	if err != nil {
		return
	}
	u, du, err := m.Linear1.PathJVP(a, da, p, t)
	if err != nil {
		return
	}
	r1, dr1, err := nn.ReLU[T]{}.JVP(u, du, t)
	if err != nil {
		return
	}
	v, dv, err := m.Linear2.PathJVP(r1, dr1, p, t)
	if err != nil {
		return
	}
	if !full {
		return nil, nil, [2]*tensor.Dense[T]{u, v}, [2]*tensor.Dense[T]{du, dv}, nil
	}
	r2, dr2, err := nn.ReLU[T]{}.JVP(v, dv, t)
	if err != nil {
		return
	}
	tensor.AddScaled(r2.Data, 1, a.Data) // h = a + r2, dh = da + dr2 (fresh arrays)
	tensor.AddScaled(dr2.Data, 1, da.Data)
	logits, dlogits, err := m.Decoder.PathJVP(r2, dr2, p, t)
	if err != nil {
		return
	}
	y, dy, err = nn.LogSoftmax[T]{}.JVP(logits, dlogits, t)
	return y, dy, [2]*tensor.Dense[T]{u, v}, [2]*tensor.Dense[T]{du, dv}, err
}

// PathSwitchesAt returns, for each row b, the one switch value units[b]
// of PathSwitches at the row's path point. A linear1 unit needs only the
// attention and one dot product; a linear2 unit needs linear1 and one dot
// product, so root refinement, which needs one unit per row, skips most of
// the model.
func (m *Modulo[T]) PathSwitchesAt(x *tensor.Dense[T], p *nn.Path[T], units []int) ([]T, error) {
	out, err := m.pathSwitchesAt(x, p, units)
	if err != nil {
		return nil, fmt.Errorf("models.Modulo: %w", err)
	}
	return out, nil
}

func (m *Modulo[T]) pathSwitchesAt(x *tensor.Dense[T], p *nn.Path[T], units []int) ([]T, error) {
	if _, err := m.OutShape(x.Shape); err != nil {
		return nil, err
	}
	b := x.Shape[0]
	if len(units) != b {
		return nil, fmt.Errorf("%d switch units for %d rows", len(units), b)
	}
	mlp, d := m.Config.MLP, m.Config.DModel
	for r, j := range units {
		if j < 0 || j >= mlp+d {
			return nil, fmt.Errorf("switch unit %d of row %d is outside [0, %d)", j, r, mlp+d)
		}
	}
	ts := make([]float64, b)
	if p != nil {
		if len(p.T) != b {
			return nil, fmt.Errorf("path has %d positions for %d rows", len(p.T), b)
		}
		copy(ts, p.T)
	}
	h0, _, err := m.Embedding.PathForward(x, p)
	if err != nil {
		return nil, err
	}
	a, _, err := m.Attention.PathForward(h0, p)
	if err != nil {
		return nil, err
	}
	out := make([]T, b)
	var vRows []int
	for r, j := range units {
		if j < mlp {
			out[r] = pathUnit(m.Linear1, p, j, a.Data[r*d:(r+1)*d], ts[r])
		} else {
			vRows = append(vRows, r)
		}
	}
	if len(vRows) == 0 {
		return out, nil
	}
	av := tensor.New[T](len(vRows), d)
	sub := &nn.Path[T]{T: make([]float64, len(vRows))}
	if p != nil {
		sub.Delta = p.Delta
	}
	for i, r := range vRows {
		copy(av.Data[i*d:(i+1)*d], a.Data[r*d:(r+1)*d])
		sub.T[i] = ts[r]
	}
	u, _, err := m.Linear1.PathForward(av, sub)
	if err != nil {
		return nil, err
	}
	r1, _, err := nn.ReLU[T]{}.Forward(u)
	if err != nil {
		return nil, err
	}
	for i, r := range vRows {
		out[r] = pathUnit(m.Linear2, p, units[r]-mlp, r1.Data[i*mlp:(i+1)*mlp], ts[r])
	}
	return out, nil
}

// pathUnit returns output j of l at x for weights θ + tΔθ:
// ⟨W_j, x⟩ + b_j + t (⟨ΔW_j, x⟩ + Δb_j), accumulated in float64.
func pathUnit[T tensor.Float](l *nn.Linear[T], p *nn.Path[T], j int, x []T, t float64) T {
	in := l.In
	w := l.Weight.Value.Data[j*in : (j+1)*in]
	var y, dy float64
	for i, v := range x {
		y += float64(w[i]) * float64(v)
	}
	if l.Bias != nil {
		y += float64(l.Bias.Value.Data[j])
	}
	if p != nil && p.Delta != nil {
		if dW := p.Delta[l.Weight]; dW != nil {
			dw := dW.Data[j*in : (j+1)*in]
			for i, v := range x {
				dy += float64(dw[i]) * float64(v)
			}
		}
		if l.Bias != nil {
			if db := p.Delta[l.Bias]; db != nil {
				dy += float64(db.Data[j])
			}
		}
	}
	return T(y + t*dy)
}
