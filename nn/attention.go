package nn

import (
	"fmt"
	"math"

	"github.com/explaind/explaind/gemm"
	"github.com/explaind/explaind/internal/parallel"
	"github.com/explaind/explaind/tensor"
)

// AttentionHeads is a sum of single-head self-attention blocks, the
// attention of the ExPLAIND modulo-addition transformer. For an input x of
// shape [B, S, D], head h computes
//
//	z = x Ehᵀ                 (encoder Eh: [DH, D], no bias; q = k = v = z)
//	p = softmax(z zᵀ · Scale) (over keys, no mask; Scale = 1/sqrt(DH))
//	o = p z
//	y_h = o Dhᵀ               (decoder Dh: [D, DH], no bias)
//
// and the layer returns y = Σ_h y_h. This is the reference's
// decoder(scaled_dot_product_attention(encoder(x), encoder(x), encoder(x)))
// summed over heads.
//
// With LastOnly, only the query at the last position is computed (keys and
// values still use every position) and the output is [B, D]; otherwise every
// position is a query and the output is [B, S, D].
//
// The heads are evaluated together: one GEMM for all encoders over the B·S
// rows, one for all decoders, and the per-sample softmax work in Go loops
// spread over the cores.
type AttentionHeads[T tensor.Float] struct {
	D, DH int
	// Encoders[h] has shape [DH, D]; Decoders[h] has shape [D, DH].
	Encoders, Decoders []*Param[T]
	// LastOnly restricts the queries to the last position.
	LastOnly bool
	// Scale multiplies the scores (1/sqrt(DH), PyTorch's default for
	// scaled_dot_product_attention).
	Scale float64
}

// NewAttentionHeads returns zero-initialized attention heads, one per pair
// of names: encNames[h] names the encoder weight [dh, d] of head h and
// decNames[h] its decoder weight [d, dh].
func NewAttentionHeads[T tensor.Float](encNames, decNames []string, d, dh int, lastOnly bool) (*AttentionHeads[T], error) {
	if len(encNames) == 0 || len(encNames) != len(decNames) {
		return nil, fmt.Errorf("nn.AttentionHeads: %d encoder and %d decoder names; want the same positive number", len(encNames), len(decNames))
	}
	if d < 1 || dh < 1 {
		return nil, fmt.Errorf("nn.AttentionHeads: model width %d and head width %d must be positive", d, dh)
	}
	a := &AttentionHeads[T]{D: d, DH: dh, LastOnly: lastOnly, Scale: 1 / math.Sqrt(float64(dh))}
	for h := range encNames {
		a.Encoders = append(a.Encoders, &Param[T]{Name: encNames[h], Value: tensor.New[T](dh, d)})
		a.Decoders = append(a.Decoders, &Param[T]{Name: decNames[h], Value: tensor.New[T](d, dh)})
	}
	return a, nil
}

// NewAttentionHead returns a single zero-initialized head with encoder
// weight encName [dh, d] and decoder weight decName [d, dh].
func NewAttentionHead[T tensor.Float](encName, decName string, d, dh int, lastOnly bool) (*AttentionHeads[T], error) {
	return NewAttentionHeads[T]([]string{encName}, []string{decName}, d, dh, lastOnly)
}

// Heads returns the number of heads.
func (a *AttentionHeads[T]) Heads() int { return len(a.Encoders) }

// Params returns the encoder weights, then the decoder weights (the
// reference's state_dict order).
func (a *AttentionHeads[T]) Params() []*Param[T] {
	return append(append([]*Param[T](nil), a.Encoders...), a.Decoders...)
}

// OutShape maps [B, S, D] to [B, D] (LastOnly) or [B, S, D].
func (a *AttentionHeads[T]) OutShape(in []int) ([]int, error) {
	if len(a.Encoders) == 0 || len(a.Encoders) != len(a.Decoders) {
		return nil, fmt.Errorf("nn.AttentionHeads: %d encoders and %d decoders; want the same positive number", len(a.Encoders), len(a.Decoders))
	}
	if len(in) != 3 || in[1] < 1 || in[2] != a.D {
		return nil, fmt.Errorf("nn.AttentionHeads(%s): input shape %v, want [B, S, %d]", a.Encoders[0].Name, in, a.D)
	}
	if a.LastOnly {
		return []int{in[0], a.D}, nil
	}
	return []int{in[0], in[1], a.D}, nil
}

// queries returns the number of query positions for sequence length s.
func (a *AttentionHeads[T]) queries(s int) int {
	if a.LastOnly {
		return 1
	}
	return s
}

// attentionWeights holds all heads' weights side by side: enc [H*DH, D]
// with head h in rows h*DH.., dec [D, H*DH] with head h in columns h*DH...
type attentionWeights[T tensor.Float] struct {
	enc, dec []T
}

// pack copies the heads' weights side by side, checking their shapes.
func (a *AttentionHeads[T]) pack() (attentionWeights[T], error) {
	hd := a.Heads() * a.DH
	p := attentionWeights[T]{enc: make([]T, 0, hd*a.D), dec: make([]T, a.D*hd)}
	for h := range a.Encoders {
		enc, dec := a.Encoders[h], a.Decoders[h]
		if !tensor.SameShape(enc.Value.Shape, []int{a.DH, a.D}) || !tensor.SameShape(dec.Value.Shape, []int{a.D, a.DH}) {
			return p, fmt.Errorf("nn.AttentionHeads: %s has shape %v and %s %v, want [%d %d] and [%d %d]",
				enc.Name, enc.Value.Shape, dec.Name, dec.Value.Shape, a.DH, a.D, a.D, a.DH)
		}
		p.enc = append(p.enc, enc.Value.Data...)
		for i := 0; i < a.D; i++ {
			copy(p.dec[i*hd+h*a.DH:i*hd+(h+1)*a.DH], dec.Value.Data[i*a.DH:(i+1)*a.DH])
		}
	}
	return p, nil
}

// attentionState is what Forward keeps for Backward.
type attentionState[T tensor.Float] struct {
	x    *tensor.Dense[T] // [B, S, D]
	z    []T              // [B, S, H*DH]
	p    []T              // [B, H, Q, S] attention probabilities
	o    []T              // [B, Q, H*DH]
	w    attentionWeights[T]
	b, s int
}

// Forward computes Σ_h softmax(z_h z_hᵀ·Scale) z_h D_hᵀ with z_h = x E_hᵀ.
func (a *AttentionHeads[T]) Forward(x *tensor.Dense[T]) (*tensor.Dense[T], State, error) {
	// The start of a path is θ itself: one implementation serves both.
	y, st, err := a.forward(x, nil)
	if err != nil {
		return nil, nil, err
	}
	// Backward's state is the path state without its (zero) path.
	return y, &st.attentionState, nil
}

// encode returns z = x encᵀ for rows rows of x ([rows, D] → [rows, H*DH]).
func (a *AttentionHeads[T]) encode(x, enc []T, rows int) []T {
	z := make([]T, rows*a.Heads()*a.DH)
	a.encodeTo(x, enc, z, rows)
	return z
}

// encodeTo is encode writing into z [rows, H*DH], whose contents it
// overwrites.
func (a *AttentionHeads[T]) encodeTo(x, enc, z []T, rows int) {
	hd := a.Heads() * a.DH
	gemm.Gemm(false, true, rows, hd, a.D, 1, x, a.D, enc, a.D, 0, z, hd)
}

// decode writes y = o decᵀ for rows rows ([rows, H*DH] → [rows, D]).
func (a *AttentionHeads[T]) decode(o, dec, y []T, rows int) {
	hd := a.Heads() * a.DH
	gemm.Gemm(false, true, rows, a.D, hd, 1, o, hd, dec, hd, 0, y, a.D)
}

// attend runs every head's attention for one sample: z is [S, H*DH], p
// receives [H, Q, S] probabilities and o the [Q, H*DH] outputs. scores
// ([S]) and acc ([DH]) are scratch.
func (a *AttentionHeads[T]) attend(z, p, o []T, s int, scores, acc []float64) {
	dh, hd, q := a.DH, a.Heads()*a.DH, a.queries(s)
	for h := range a.Encoders {
		for qq := 0; qq < q; qq++ {
			i := qq + s - q // query position
			zi := z[i*hd+h*dh : i*hd+(h+1)*dh]
			a.softmax(z, zi, h, s, scores)
			pr := p[(h*q+qq)*s : (h*q+qq+1)*s]
			for j, v := range scores {
				pr[j] = T(v)
			}
			mixRows(o[qq*hd+h*dh:qq*hd+(h+1)*dh], z[h*dh:], hd, scores, acc)
		}
	}
}

// mixRows writes out[e] = Σ_j w[j]·z[j*stride+e] for the len(w) rows of
// z, accumulating in float64 (acc holds len(out) scratch values).
func mixRows[T tensor.Float](out, z []T, stride int, w, acc []float64) {
	acc = acc[:len(out)]
	clear(acc)
	for j, wj := range w {
		zj := z[j*stride : j*stride+len(out)]
		for e, v := range zj {
			acc[e] += wj * float64(v)
		}
	}
	for e, v := range acc {
		out[e] = T(v)
	}
}

// softmax writes into scores the probabilities softmax_j(Scale·⟨zi, z_j⟩)
// of head h, in float64.
func (a *AttentionHeads[T]) softmax(z, zi []T, h, s int, scores []float64) {
	dh, hd := a.DH, a.Heads()*a.DH
	mx := math.Inf(-1)
	for j := 0; j < s; j++ {
		zj := z[j*hd+h*dh : j*hd+(h+1)*dh]
		var acc float64
		for e, v := range zi {
			acc += float64(v) * float64(zj[e])
		}
		scores[j] = acc * a.Scale
		mx = math.Max(mx, scores[j])
	}
	var sum float64
	for j := range scores {
		scores[j] = math.Exp(scores[j] - mx)
		sum += scores[j]
	}
	for j := range scores {
		scores[j] /= sum
	}
}

// Backward maps dy ([B*K, D] or [B*K, S, D]) to dx ([B*K, S, D]).
//
// With do = dy D (all heads at once) and, per head and query i,
//
//	dz_j += p_j do              (values)
//	ds_j  = p_j (⟨do, z_j⟩ − Σ_l p_l ⟨do, z_l⟩) · Scale
//	dz_i += Σ_j ds_j z_j        (the query)
//	dz_j += ds_j z_i            (the keys)
//
// then dx = dz E, gE = Σ dzᵀ x and gD = Σ dyᵀ o (summed or per row).
func (a *AttentionHeads[T]) Backward(st State, dy *tensor.Dense[T], g *Grads[T], needDx bool) (*tensor.Dense[T], error) {
	s, ok := st.(*attentionState[T])
	if !ok {
		return nil, fmt.Errorf("nn.AttentionHeads(%s): Backward got a state from another layer", a.Encoders[0].Name)
	}
	// The start of a path is θ itself: one implementation serves both.
	return a.backward("Backward", s, attentionPath[T]{}, dy, g, nil, needDx)
}

// sumOverK returns Σ_k v[b*K+k] for blocks of n values, or v itself when
// k is 1.
func sumOverK[T tensor.Float](v []T, b, k, n int) []T {
	if k == 1 {
		return v
	}
	out := make([]T, b*n)
	for bb := 0; bb < b; bb++ {
		dst := out[bb*n : (bb+1)*n]
		for kk := 0; kk < k; kk++ {
			tensor.AddScaled(dst, 1, v[(bb*k+kk)*n:(bb*k+kk+1)*n])
		}
	}
	return out
}

// decoderGrads adds the decoder gradients gD_h[i, e] += Σ dy[r, q, i]
// o[b, q, h*DH+e] (summed or per row).
func (a *AttentionHeads[T]) decoderGrads(mode GradMode, gDec []*tensor.Dense[T], dy, o []T, b, k, q int) {
	d, dh, hd := a.D, a.DH, a.Heads()*a.DH
	if mode == Summed {
		dys := sumOverK(dy, b, k, q*d)
		full := make([]T, d*hd)
		gemm.Gemm(true, false, d, hd, b*q, 1, dys, d, o, hd, 0, full, hd)
		for hh, gd := range gDec {
			if gd == nil {
				continue
			}
			for i := 0; i < d; i++ {
				tensor.AddScaled(gd.Data[i*dh:(i+1)*dh], 1, full[i*hd+hh*dh:i*hd+(hh+1)*dh])
			}
		}
		return
	}
	attentionParallel(b*k, q*d*hd, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			bb := r / k
			for qq := 0; qq < q; qq++ {
				ob := o[(bb*q+qq)*hd : (bb*q+qq+1)*hd]
				dyr := dy[(r*q+qq)*d : (r*q+qq+1)*d]
				for hh, gd := range gDec {
					if gd == nil {
						continue
					}
					dst := gd.Data[r*d*dh : (r+1)*d*dh]
					oh := ob[hh*dh : (hh+1)*dh]
					for i, v := range dyr {
						if v != 0 {
							tensor.AddScaled(dst[i*dh:(i+1)*dh], v, oh)
						}
					}
				}
			}
		}
	})
}

// encoderGrads adds the encoder gradients gE_h[e, :] += Σ_t dz[r, t,
// h*DH+e] x[b, t, :] (summed or per row).
func (a *AttentionHeads[T]) encoderGrads(mode GradMode, gEnc []*tensor.Dense[T], dz, x []T, b, k, seq int) {
	d, dh, hd := a.D, a.DH, a.Heads()*a.DH
	if mode == Summed {
		dzs := sumOverK(dz, b, k, seq*hd)
		full := make([]T, hd*d)
		gemm.Gemm(true, false, hd, d, b*seq, 1, dzs, hd, x, d, 0, full, d)
		for hh, ge := range gEnc {
			if ge != nil {
				tensor.AddScaled(ge.Data, 1, full[hh*dh*d:(hh+1)*dh*d])
			}
		}
		return
	}
	// Per row r and head h, one product gE_h[r] += dz[r, :, h]ᵀ x[b]
	// ([DH × seq] · [seq × D]).
	attentionParallel(b*k, seq*hd*d, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			xb, dzr := x[(r/k)*seq*d:], dz[r*seq*hd:]
			for hh, ge := range gEnc {
				if ge != nil {
					gemm.Gemm(true, false, dh, d, seq, 1, dzr[hh*dh:], hd, xb, d, 1, ge.Data[r*dh*d:(r+1)*dh*d], d)
				}
			}
		}
	})
}

// attendBackward accumulates into dz ([S, H*DH], zeroed) the cotangent of
// z for one cotangent row do ([Q, H*DH]) of one sample (z [S, H*DH],
// probabilities p [H, Q, S]).
func (a *AttentionHeads[T]) attendBackward(z, p, do, dz []T, s int, dp []float64) {
	dh, hd, q := a.DH, a.Heads()*a.DH, a.queries(s)
	for h := range a.Encoders {
		for qq := 0; qq < q; qq++ {
			i := qq + s - q
			dor := do[qq*hd+h*dh : qq*hd+(h+1)*dh]
			pr := p[(h*q+qq)*s : (h*q+qq+1)*s]
			var mean float64
			for j := 0; j < s; j++ {
				zj := z[j*hd+h*dh : j*hd+(h+1)*dh]
				var acc float64
				for e, v := range dor {
					acc += float64(v) * float64(zj[e])
				}
				dp[j] = acc
				mean += float64(pr[j]) * acc
			}
			zi := z[i*hd+h*dh : i*hd+(h+1)*dh]
			dzi := dz[i*hd+h*dh : i*hd+(h+1)*dh]
			for j := 0; j < s; j++ {
				pj := float64(pr[j])
				ds := pj * (dp[j] - mean) * a.Scale
				zj := z[j*hd+h*dh : j*hd+(h+1)*dh]
				dzj := dz[j*hd+h*dh : j*hd+(h+1)*dh]
				for e := range dzj {
					dzj[e] += T(pj*float64(dor[e]) + ds*float64(zi[e]))
				}
				for e := range dzi {
					dzi[e] += T(ds * float64(zj[e]))
				}
			}
		}
	}
}

// JVP evaluates the heads and their derivative along M tangents:
// dz = dx Eᵀ + x dEᵀ, and per head and query i, with p, z as in Forward,
//
//	ds_j = Scale (⟨dz_i, z_j⟩ + ⟨z_i, dz_j⟩)
//	dp_j = p_j (ds_j − Σ_l p_l ds_l)
//	do   = Σ_j dp_j z_j + p_j dz_j
//
// then dy = do Dᵀ + o dDᵀ.
func (a *AttentionHeads[T]) JVP(x, dx *tensor.Dense[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	// The start of a path is θ itself: one implementation serves both.
	return a.PathJVP(x, dx, nil, t)
}

// attendJVP is attend for one sample plus the tangents: dz is [M, S, H*DH]
// (nil when zero) and do receives [M, Q, H*DH]. scores, ds ([S]) and acc
// ([DH]) are scratch.
func (a *AttentionHeads[T]) attendJVP(z, dz, o, do []T, s, m int, scores, ds, acc []float64) {
	dh, hd, q := a.DH, a.Heads()*a.DH, a.queries(s)
	for h := range a.Encoders {
		for qq := 0; qq < q; qq++ {
			i := qq + s - q
			zi := z[i*hd+h*dh : i*hd+(h+1)*dh]
			a.softmax(z, zi, h, s, scores)
			mixRows(o[qq*hd+h*dh:qq*hd+(h+1)*dh], z[h*dh:], hd, scores, acc)
			if dz == nil {
				continue
			}
			for mm := 0; mm < m; mm++ {
				dzm := dz[mm*s*hd : (mm+1)*s*hd]
				dzi := dzm[i*hd+h*dh : i*hd+(h+1)*dh]
				var mean float64
				for j := 0; j < s; j++ {
					zj := z[j*hd+h*dh : j*hd+(h+1)*dh]
					dzj := dzm[j*hd+h*dh : j*hd+(h+1)*dh]
					var acc float64
					for e := range zj {
						acc += float64(dzi[e])*float64(zj[e]) + float64(zi[e])*float64(dzj[e])
					}
					ds[j] = acc * a.Scale
					mean += scores[j] * ds[j]
				}
				// do = Σ_j dp_j z_j + p_j dz_j, with dp_j = p_j (ds_j − mean).
				acc = acc[:dh]
				clear(acc)
				for j, pj := range scores {
					dpj := pj * (ds[j] - mean)
					zj := z[j*hd+h*dh : j*hd+(h+1)*dh]
					dzj := dzm[j*hd+h*dh : j*hd+(h+1)*dh]
					for e := range acc {
						acc[e] += dpj*float64(zj[e]) + pj*float64(dzj[e])
					}
				}
				dout := do[(mm*q+qq)*hd+h*dh : (mm*q+qq)*hd+(h+1)*dh]
				for e, v := range acc {
					dout[e] = T(v)
				}
			}
		}
	}
}

// attentionParallel spreads the per-sample loops over the cores.
func attentionParallel(n, cost int, fn func(lo, hi int)) { parallel.ForCost(n, cost, fn) }
