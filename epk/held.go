package epk

import (
	"fmt"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// heldGrads holds the gradients of a step's planning nodes, for
// contributions derived from the features with Gauss–Lobatto intervals of
// 2 or 3 points (Ends). There every node the planning evaluates stays a
// node of the final plan: neighbours share their ends, and a bisected
// interval's nodes (ends and midpoint) are nodes of its halves. So the
// planning evaluates each node in reverse mode instead of by a
// single-tangent JVP: one backward row with the feature cotangents gives
// the node's K gradients ∇_θ(cot_k · f(θ_s(t); x_b)) and, from the
// identity rows among them, the integrand along Δθ the planning needs,
//
//	J_c(t)·Δθ = Σ_j ⟨∇_j f_c(t), Δθ_j⟩  (float64 sums),
//
// and once the plan is final the features are the nodes' weighted sums
// φ[b] = Σ_n w_n ∇f(t_n), with no second pass over the nodes. That saves
// the JVP row per node, at the cost of holding K·P values per node until
// the plan is final: at most Options.MaxHeldGrads values. Nodes beyond
// that are evaluated by the JVP, and the feature pass runs the backward
// for them as before.
type heldGrads[T tensor.Float] struct {
	fc   *featureCot[T]
	id   []int // id[c]: the row of class c's unit cotangent
	left int   // values that may still be held
	// of holds per sample the gradients at each position: per parameter j,
	// [K, n_j] (the cotangents' rows).
	of []map[float64][][]T
}

// newHeldGrads returns the gradient store of a step of B samples, for
// cotangents fc whose identity rows are id (empty: fc is the identity),
// holding at most limit values; nil when no node fits.
func newHeldGrads[T tensor.Float](B int, fc *featureCot[T], id []int, params []*nn.Param[T], limit int) *heldGrads[T] {
	P := 0
	for _, p := range params {
		P += len(p.Value.Data)
	}
	if limit < fc.K*P {
		return nil
	}
	if len(id) == 0 {
		id = make([]int, fc.C)
		for cc := range id {
			id[cc] = cc
		}
	}
	h := &heldGrads[T]{fc: fc, id: id, left: limit, of: make([]map[float64][][]T, B)}
	for b := range h.of {
		h.of[b] = map[float64][][]T{}
	}
	return h
}

// gradRows evaluates the leading rows of (ns, nt) (samples at positions)
// in reverse mode, as many as the store has room for, into g's caches:
// f(t) and J·Δθ (the tangent row), and their gradients into g.held. It
// returns how many rows it evaluated; the caller evaluates the rest by JVP.
func (e *Evaluator[T]) gradRows(g *quad[T], ns []int, nt []float64) (int, error) {
	h, c := g.held, g.c
	fc := h.fc
	K, C := fc.K, fc.C
	per := 0
	for _, p := range e.params {
		per += K * len(p.Value.Data)
	}
	rowsPer := e.backwardRowsPer(K)
	gm, grouped := e.model.(GroupedPathModel[T])
	done := 0
	for done < len(ns) {
		n := min(rowsPer, len(ns)-done, h.left/per)
		if n == 0 {
			break
		}
		rs, ts := ns[done:done+n], nt[done:done+n]
		y, state, err := e.model.PathForward(tensor.GatherRows(c.x, rs, 1), c.path(ts))
		if err != nil {
			return done, err
		}
		if len(y.Data) != n*C {
			return done, fmt.Errorf("epk: PathForward returned %d values for %d rows of %d classes", len(y.Data), n, C)
		}
		ones := make([]float64, n)
		for i := range ones {
			ones[i] = 1
		}
		dy := fc.rows(rs, ones)
		// Each row its own group: its K gradients, [n·K, shape] per parameter.
		var grads *nn.Grads[T]
		if grouped {
			grads = &nn.Grads[T]{Mode: nn.PerRow, Of: make(map[*nn.Param[T]]*tensor.Dense[T], len(e.params))}
			groups := make([]int, n)
			for i := range groups {
				groups[i] = i
			}
			for _, p := range e.params {
				grads.Of[p] = tensor.New[T](append([]int{n * K}, p.Value.Shape...)...)
			}
			err = gm.PathBackwardGrouped(state, dy, grads, groups, n)
		} else {
			grads = nn.NewGrads(nn.PerRow, e.params, n*K)
			_, err = e.model.PathBackward(state, dy, grads, false)
		}
		if err != nil {
			return done, err
		}
		for i := 0; i < n; i++ {
			b, t := rs[i], ts[i]
			f := make([]float64, C)
			for cc := range f {
				f[cc] = float64(y.Data[i*C+cc])
			}
			d := make([]float64, C) // the single tangent Δθ: [1·C]
			held := make([][]T, len(e.params))
			for j, p := range e.params {
				nj := len(p.Value.Data)
				held[j] = grads.Of[p].Data[i*K*nj : (i+1)*K*nj]
				delta := c.delta[p].Data
				for cc, r := range h.id {
					var s float64
					for k, v := range held[j][r*nj : (r+1)*nj] {
						s += float64(v) * float64(delta[k])
					}
					d[cc] += s
				}
			}
			g.cache[b][t], g.jvp[b][t] = f, d
			h.of[b][t] = held
		}
		h.left -= n * per
		g.st.BackwardRows += n
		done += n
	}
	return done, nil
}

// add adds node nd's weighted gradients to f, reporting whether the store
// holds them (a nil store holds nothing).
func (h *heldGrads[T]) add(f *Features[T], nd Node) bool {
	if h == nil {
		return false
	}
	held, ok := h.of[nd.Sample][nd.T]
	if !ok || held == nil {
		return false
	}
	w := T(nd.W)
	for j, gj := range held {
		tensor.AddScaled(f.Phi[j].Data[nd.Sample*len(gj):(nd.Sample+1)*len(gj)], w, gj)
	}
	return true
}
