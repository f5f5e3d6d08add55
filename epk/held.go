package epk

import (
	"fmt"
	"math"

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
//
// For a model of two classes whose outputs are log-probabilities
// (LogProbModel), a node needs one cotangent row instead of K: with
// p = exp f and h = ∇(f_0 − f_1), Σ_c p_c ∇f_c = ∇ Σ_c exp f_c = 0 gives
//
//	∇f_0 = p_1 h,  ∇f_1 = −p_0 h,  ∇(cot_k · f) = (cot_k0 p_1 − cot_k1 p_0) h,
//
// so the backward runs the cotangent (1, −1) alone, and the store holds h
// (P values) and the K scalars.
type heldGrads[T tensor.Float] struct {
	fc   *featureCot[T]
	id   []int // id[c]: the row of class c's unit cotangent
	pair bool  // two classes of log-probabilities: hold h and scalars
	left int   // values that may still be held
	// of holds per sample the nodes at each position.
	of []map[float64]heldNode[T]
}

// heldNode is one node's gradients: per parameter j, g[j] is [K, n_j] (the
// cotangents' rows), or with pair [n_j] (h) and s the K cotangents'
// factors.
type heldNode[T tensor.Float] struct {
	g [][]T
	s []float64
}

// LogProbModel is an optional method set of a PathModel whose outputs are
// log-probabilities: log Σ_c exp f_c(θ; x) = 0 for every θ and x, as after
// a final log-softmax. With two classes their gradients are then parallel
// (see heldGrads), and the planning of contributions derived from the
// features runs one backward cotangent per node instead of two.
type LogProbModel interface {
	// LogProbabilities reports whether the outputs are log-probabilities.
	LogProbabilities() bool
}

// pairOf reports whether model's outputs are log-probabilities of C = 2
// classes (LogProbModel).
func pairOf(model any, C int) bool {
	lp, ok := model.(LogProbModel)
	return ok && C == 2 && lp.LogProbabilities()
}

// maxLogSum is how far log Σ_c exp f_c of a LogProbModel's outputs may be
// from 0 before gradRows refuses the model's claim (float32 log-softmax
// rounds it to about 1e-7).
const maxLogSum = 1e-3

// newHeldGrads returns the gradient store of a step of B samples, for
// cotangents fc whose identity rows are id (empty: fc is the identity),
// holding at most limit values; nil when no node fits. pair selects the
// two-class log-probability form.
func newHeldGrads[T tensor.Float](B int, fc *featureCot[T], id []int, params []*nn.Param[T], limit int, pair bool) *heldGrads[T] {
	P := 0
	for _, p := range params {
		P += len(p.Value.Data)
	}
	if limit < heldValues(fc.K, P, pair) {
		return nil
	}
	if len(id) == 0 {
		id = make([]int, fc.C)
		for cc := range id {
			id[cc] = cc
		}
	}
	h := &heldGrads[T]{fc: fc, id: id, pair: pair, left: limit, of: make([]map[float64]heldNode[T], B)}
	for b := range h.of {
		h.of[b] = map[float64]heldNode[T]{}
	}
	return h
}

// heldValues is the number of values a node holds: K·P, or with pair P
// (and K scalars).
func heldValues(K, P int, pair bool) int {
	if pair {
		return P
	}
	return K * P
}

// gradRows evaluates the leading rows of (ns, nt) (samples at positions)
// in reverse mode, as many as the store has room for, into g's caches:
// f(t) and J·Δθ (the tangent row), and their gradients into g.held. It
// returns how many rows it evaluated; the caller evaluates the rest by JVP.
func (e *Evaluator[T]) gradRows(g *quad[T], ns []int, nt []float64) (int, error) {
	h, c := g.held, g.c
	fc := h.fc
	K, C := fc.K, fc.C
	kb := K // cotangent rows of the backward per node
	if h.pair {
		kb = 1
	}
	P := 0
	for _, p := range e.params {
		P += len(p.Value.Data)
	}
	per := heldValues(K, P, h.pair)
	rowsPer := e.backwardRowsPer(kb)
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
		var dy *tensor.Dense[T]
		if h.pair {
			dy = tensor.New[T](n, 2)
			for i := 0; i < n; i++ {
				dy.Data[2*i], dy.Data[2*i+1] = 1, -1
			}
		} else {
			ones := make([]float64, n)
			for i := range ones {
				ones[i] = 1
			}
			dy = fc.rows(rs, ones)
		}
		// Each row its own group: its kb gradients, [n·kb, shape] per
		// parameter.
		var grads *nn.Grads[T]
		if grouped {
			grads = &nn.Grads[T]{Mode: nn.PerRow, Of: make(map[*nn.Param[T]]*tensor.Dense[T], len(e.params))}
			groups := make([]int, n)
			for i := range groups {
				groups[i] = i
			}
			for _, p := range e.params {
				grads.Of[p] = tensor.New[T](append([]int{n * kb}, p.Value.Shape...)...)
			}
			err = gm.PathBackwardGrouped(state, dy, grads, groups, n)
		} else {
			grads = nn.NewGrads(nn.PerRow, e.params, n*kb)
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
			node := heldNode[T]{g: make([][]T, len(e.params))}
			dots := make([]float64, kb) // ⟨gradient row, Δθ⟩
			for j, p := range e.params {
				nj := len(p.Value.Data)
				node.g[j] = grads.Of[p].Data[i*kb*nj : (i+1)*kb*nj]
				delta := c.delta[p].Data
				for r := range dots {
					var s float64
					for k, v := range node.g[j][r*nj : (r+1)*nj] {
						s += float64(v) * float64(delta[k])
					}
					dots[r] += s
				}
			}
			d := make([]float64, C) // J_c·Δθ, the single tangent Δθ: [1·C]
			if h.pair {
				p0, p1 := math.Exp(f[0]), math.Exp(f[1])
				if ls := math.Log(p0 + p1); math.Abs(ls) > maxLogSum { // a NaN passes on, to be reported
					return done, fmt.Errorf("epk: the model declares log-probability outputs (LogProbModel), but at test sample %d, t = %g, log Σ exp f = %.3g", b, t, ls)
				}
				d[0], d[1] = p1*dots[0], -p0*dots[0]
				node.s = make([]float64, K)
				for k := range node.s {
					row := fc.row(b)[k*C : (k+1)*C]
					node.s[k] = float64(row[0])*p1 - float64(row[1])*p0
				}
			} else {
				for cc, r := range h.id {
					d[cc] = dots[r]
				}
			}
			g.cache[b][t], g.jvp[b][t] = f, d
			h.of[b][t] = node
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
	node, ok := h.of[nd.Sample][nd.T]
	if !ok {
		return false
	}
	K := f.K
	for j, gj := range node.g {
		phi := f.Phi[j].Data
		if node.s == nil {
			tensor.AddScaled(phi[nd.Sample*len(gj):(nd.Sample+1)*len(gj)], T(nd.W), gj)
			continue
		}
		nj := len(gj)
		if K == 2 {
			r := nd.Sample * K
			tensor.AddScaled2(phi[r*nj:(r+1)*nj], phi[(r+1)*nj:(r+2)*nj], T(nd.W*node.s[0]), T(nd.W*node.s[1]), gj)
			continue
		}
		for k, s := range node.s {
			r := nd.Sample*K + k
			tensor.AddScaled(phi[r*nj:(r+1)*nj], T(nd.W*s), gj)
		}
	}
	return true
}
