package nn

import (
	"fmt"

	"github.com/explaind/explaind/gemm"
	"github.com/explaind/explaind/tensor"
)

// attentionPathState is what PathForward keeps for PathBackward: Forward's
// state plus the path.
type attentionPathState[T tensor.Float] struct {
	attentionState[T]
	path attentionPath[T]
}

// attentionPath is the path a state was evaluated on: the packed path
// directions ΔE, ΔD (valid where hasEnc, hasDec) and the positions. Its
// zero value is the start θ for every sample (Forward).
type attentionPath[T tensor.Float] struct {
	dw             attentionWeights[T]
	hasEnc, hasDec bool
	t              []float64
}

// packDeltas packs the heads' path directions side by side like pack;
// heads whose weights do not move get zeros. hasEnc (hasDec) reports
// whether any encoder (decoder) moves.
func (a *AttentionHeads[T]) packDeltas(p *Path[T]) (w attentionWeights[T], hasEnc, hasDec bool, err error) {
	hd := a.Heads() * a.DH
	for h := range a.Encoders {
		de, err := p.delta(a.Encoders[h])
		if err != nil {
			return w, false, false, err
		}
		dd, err := p.delta(a.Decoders[h])
		if err != nil {
			return w, false, false, err
		}
		if de != nil {
			if w.enc == nil {
				w.enc = make([]T, hd*a.D)
			}
			copy(w.enc[h*a.DH*a.D:(h+1)*a.DH*a.D], de.Data)
			hasEnc = true
		}
		if dd != nil {
			if w.dec == nil {
				w.dec = make([]T, a.D*hd)
			}
			for i := 0; i < a.D; i++ {
				copy(w.dec[i*hd+h*a.DH:i*hd+(h+1)*a.DH], dd.Data[i*a.DH:(i+1)*a.DH])
			}
			hasDec = true
		}
	}
	return w, hasEnc, hasDec, nil
}

// PathForward is Forward at θ + t_b Δθ for each sample b: the encoder and
// decoder products are x Eᵀ + t_b x ΔEᵀ and o Dᵀ + t_b o ΔDᵀ.
func (a *AttentionHeads[T]) PathForward(x *tensor.Dense[T], p *Path[T]) (*tensor.Dense[T], State, error) {
	y, st, err := a.forward(x, p)
	if err != nil {
		return nil, nil, err
	}
	return y, st, nil
}

// forward is PathForward, and Forward for a nil path.
func (a *AttentionHeads[T]) forward(x *tensor.Dense[T], p *Path[T]) (*tensor.Dense[T], *attentionPathState[T], error) {
	shape, err := checkInput[T](a, x)
	if err != nil {
		return nil, nil, err
	}
	b, s := x.Shape[0], x.Shape[1]
	if err := p.check("AttentionHeads", b); err != nil {
		return nil, nil, err
	}
	h, hd, q := a.Heads(), a.Heads()*a.DH, a.queries(s)
	w, path, err := a.weightsAt(p)
	if err != nil {
		return nil, nil, err
	}
	st := &attentionPathState[T]{
		attentionState: attentionState[T]{x: x, w: w, b: b, s: s, p: make([]T, b*h*q*s), o: make([]T, b*q*hd)},
		path:           path,
	}
	st.z = a.encodeAt(x.Data, w, path, b*s, s)
	attentionParallel(b, s*s*hd, func(lo, hi int) {
		scores, acc := make([]float64, s), make([]float64, a.DH)
		for bb := lo; bb < hi; bb++ {
			a.attend(st.z[bb*s*hd:(bb+1)*s*hd], st.p[bb*h*q*s:(bb+1)*h*q*s], st.o[bb*q*hd:(bb+1)*q*hd], s, scores, acc)
		}
	})
	y := tensor.New[T](shape...)
	a.decodeAt(st.o, w, path, y.Data, b*q, q)
	return y, st, nil
}

// weightsAt returns the heads' packed weights and the packed directions
// of the path p (see pack and packDeltas).
func (a *AttentionHeads[T]) weightsAt(p *Path[T]) (attentionWeights[T], attentionPath[T], error) {
	w, err := a.pack()
	if err != nil {
		return w, attentionPath[T]{}, err
	}
	dw, hasEnc, hasDec, err := a.packDeltas(p)
	return w, attentionPath[T]{dw: dw, hasEnc: hasEnc, hasDec: hasDec, t: p.positions()}, err
}

// encodeAt returns z = x (E + t_b ΔE)ᵀ for rows rows of x, per rows per
// sample b ([rows, D] → [rows, H*DH]).
func (a *AttentionHeads[T]) encodeAt(x []T, w attentionWeights[T], path attentionPath[T], rows, per int) []T {
	return a.encodeAtTo(x, w, path, make([]T, rows*a.Heads()*a.DH), rows, per)
}

// encodeAtTo is encodeAt writing into z [rows, H*DH], whose contents it
// overwrites.
func (a *AttentionHeads[T]) encodeAtTo(x []T, w attentionWeights[T], path attentionPath[T], z []T, rows, per int) []T {
	a.encodeTo(x, w.enc, z, rows)
	if path.hasEnc {
		addScaledProduct(z, x, path.dw.enc, rows, a.Heads()*a.DH, a.D, true, path.t, per)
	}
	return z
}

// decodeAt writes y = o (D + t_b ΔD)ᵀ for rows rows of o, per rows per
// sample b ([rows, H*DH] → [rows, D]).
func (a *AttentionHeads[T]) decodeAt(o []T, w attentionWeights[T], path attentionPath[T], y []T, rows, per int) {
	a.decode(o, w.dec, y, rows)
	if path.hasDec {
		addScaledProduct(y, o, path.dw.dec, rows, a.D, a.Heads()*a.DH, true, path.t, per)
	}
}

// PathBackward is Backward at each sample's path point. The parameter
// gradients have Backward's form; the weights enter only through
// do = dy (D + t_b ΔD) and dx = dz (E + t_b ΔE).
func (a *AttentionHeads[T]) PathBackward(st State, dy *tensor.Dense[T], g *Grads[T], needDx bool) (*tensor.Dense[T], error) {
	return a.pathBackward("PathBackward", st, dy, g, nil, needDx)
}

// PathBackwardGrouped is PathBackward with the heads' weight gradients of
// the cotangent rows summed per group of samples: sample b belongs to group
// groups[b] (nondecreasing, in [0, nGroups)), and g, which must be PerRow,
// has buffers [nGroups*K, shape...] (K cotangents per sample) for the
// encoder and decoder weights wanted; g's other parameters are ignored.
// The sums are formed straight in the group buffers, with one GEMM per
// head and run of samples in one group for each of the two weights, rather
// than row by row. dx is PathBackward's.
func (a *AttentionHeads[T]) PathBackwardGrouped(st State, dy *tensor.Dense[T], g *Grads[T], groups []int, nGroups int, needDx bool) (*tensor.Dense[T], error) {
	return a.pathBackward("PathBackwardGrouped", st, dy, g, &rowGroups{of: groups, n: nGroups}, needDx)
}

// pathBackward is PathBackward, or PathBackwardGrouped for non-nil grp;
// method names the caller in errors.
func (a *AttentionHeads[T]) pathBackward(method string, st State, dy *tensor.Dense[T], g *Grads[T], grp *rowGroups, needDx bool) (*tensor.Dense[T], error) {
	s, ok := st.(*attentionPathState[T])
	if !ok {
		return nil, fmt.Errorf("nn.AttentionHeads(%s): %s got a state from another layer or from Forward", a.Encoders[0].Name, method)
	}
	return a.backward(method, &s.attentionState, s.path, dy, g, grp, needDx)
}

// backward is Backward at each sample's point on path (the zero path is θ
// itself), with PathBackwardGrouped's gradients for non-nil grp; method
// names the caller in errors.
func (a *AttentionHeads[T]) backward(method string, s *attentionState[T], path attentionPath[T], dy *tensor.Dense[T], g *Grads[T], grp *rowGroups, needDx bool) (*tensor.Dense[T], error) {
	outShape, _ := a.OutShape(s.x.Shape)
	k, err := cotangentsPerSample("AttentionHeads", dy.Shape, s.b, outShape)
	if err != nil {
		return nil, err
	}
	b, seq, d := s.b, s.s, a.D
	h, hd, q := a.Heads(), a.Heads()*a.DH, a.queries(s.s)
	rows, bufRows := b*k, b*k
	if grp != nil {
		if err := grp.check(b); err != nil {
			return nil, fmt.Errorf("nn.AttentionHeads(%s): %s: %w", a.Encoders[0].Name, method, err)
		}
		if g != nil && g.Mode != PerRow {
			return nil, fmt.Errorf("nn.AttentionHeads(%s): %s needs PerRow gradient buffers", a.Encoders[0].Name, method)
		}
		bufRows = grp.n * k
	}
	gEnc := make([]*tensor.Dense[T], h)
	gDec := make([]*tensor.Dense[T], h)
	anyEnc, anyDec := false, false
	for hh := 0; hh < h; hh++ {
		if gEnc[hh], err = g.checkBuf(a.Encoders[hh], bufRows); err != nil {
			return nil, err
		}
		if gDec[hh], err = g.checkBuf(a.Decoders[hh], bufRows); err != nil {
			return nil, err
		}
		anyEnc = anyEnc || gEnc[hh] != nil
		anyDec = anyDec || gDec[hh] != nil
	}
	if anyDec {
		if grp != nil {
			a.decoderGradsGrouped(gDec, dy.Data, s.o, b, k, q, grp)
		} else {
			a.decoderGrads(g.Mode, gDec, dy.Data, s.o, b, k, q)
		}
	}
	if !anyEnc && !needDx {
		return nil, nil
	}
	do := make([]T, rows*q*hd)
	gemm.Gemm(false, false, rows*q, hd, d, 1, dy.Data, d, s.w.dec, hd, 0, do, hd)
	if path.hasDec {
		addScaledProduct(do, dy.Data, path.dw.dec, rows*q, hd, d, false, path.t, k*q)
	}
	dz := make([]T, rows*seq*hd)
	attentionParallel(rows, q*seq*hd, func(lo, hi int) {
		dp := make([]float64, seq)
		for r := lo; r < hi; r++ {
			bb := r / k
			a.attendBackward(s.z[bb*seq*hd:(bb+1)*seq*hd], s.p[bb*h*q*seq:(bb+1)*h*q*seq],
				do[r*q*hd:(r+1)*q*hd], dz[r*seq*hd:(r+1)*seq*hd], seq, dp)
		}
	})
	if anyEnc {
		if grp != nil {
			a.encoderGradsGrouped(gEnc, dz, s.x.Data, b, k, seq, grp)
		} else {
			a.encoderGrads(g.Mode, gEnc, dz, s.x.Data, b, k, seq)
		}
	}
	if !needDx {
		return nil, nil
	}
	dx := tensor.New[T](rows, seq, d)
	gemm.Gemm(false, false, rows*seq, d, hd, 1, dz, hd, s.w.enc, d, 0, dx.Data, d)
	if path.hasEnc {
		addScaledProduct(dx.Data, dz, path.dw.enc, rows*seq, d, hd, false, path.t, k*seq)
	}
	return dx, nil
}

// decoderGradsGrouped adds the decoder gradients summed per group,
// gD_h[g*K+k][i, e] += Σ_{b in g} Σ_q dy[b*K+k, q, i] o[b, q, h*DH+e]. With
// dy reordered to [B, Q, K, D], a run of samples [lo, hi) in group g is,
// for head h, one GEMM: [K*D × DH] (the group's block of gD_h) +=
// dy[lo:hi]ᵀ ([(n·Q) × K*D]) · o[lo:hi]'s head-h columns ([(n·Q) × DH]).
func (a *AttentionHeads[T]) decoderGradsGrouped(gDec []*tensor.Dense[T], dy, o []T, b, k, q int, grp *rowGroups) {
	d, dh, hd := a.D, a.DH, a.Heads()*a.DH
	dyp := swapK(dy, b, k, q, 1, d)
	grp.runs(func(lo, hi, gi int) {
		for hh, gd := range gDec {
			if gd == nil {
				continue
			}
			gemm.Gemm(true, false, k*d, dh, (hi-lo)*q, 1, dyp[lo*q*k*d:hi*q*k*d], k*d,
				o[lo*q*hd+hh*dh:hi*q*hd], hd, 1, gd.Data[gi*k*d*dh:(gi+1)*k*d*dh], dh)
		}
	})
}

// encoderGradsGrouped adds the encoder gradients summed per group,
// gE_h[g*K+k][e, :] += Σ_{b in g} Σ_t dz[b*K+k, t, h*DH+e] x[b, t, :].
// With dz reordered to [B, S, H, K, DH], a run of samples [lo, hi) in group
// g is, for head h, one GEMM: [K*DH × D] (the group's block of gE_h) +=
// dz[lo:hi]'s head-h columns ([(n·S) × K*DH])ᵀ · x[lo:hi] ([(n·S) × D]).
func (a *AttentionHeads[T]) encoderGradsGrouped(gEnc []*tensor.Dense[T], dz, x []T, b, k, seq int, grp *rowGroups) {
	d, dh, h := a.D, a.DH, a.Heads()
	kh := k * h * dh
	dzp := swapK(dz, b, k, seq, h, dh)
	grp.runs(func(lo, hi, gi int) {
		for hh, ge := range gEnc {
			if ge == nil {
				continue
			}
			gemm.Gemm(true, false, k*dh, d, (hi-lo)*seq, 1, dzp[lo*seq*kh+hh*k*dh:hi*seq*kh], kh,
				x[lo*seq*d:hi*seq*d], d, 1, ge.Data[gi*k*dh*d:(gi+1)*k*dh*d], d)
		}
	})
}

// PathJVP is JVP at each sample's path point: with E_b = E + t_b ΔE and
// D_b = D + t_b ΔD, z = x E_bᵀ, dz = dx E_bᵀ + x dEᵀ, the attention as in
// JVP, then y = o D_bᵀ and dy = do D_bᵀ + o dDᵀ.
func (a *AttentionHeads[T]) PathJVP(x, dx *tensor.Dense[T], p *Path[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	shape, err := checkInput[T](a, x)
	if err != nil {
		return nil, nil, err
	}
	m := t.Count()
	if err := checkTangentInput("AttentionHeads", x, dx, m); err != nil {
		return nil, nil, err
	}
	b, seq, d, dh := x.Shape[0], x.Shape[1], a.D, a.DH
	if err := p.check("AttentionHeads", b); err != nil {
		return nil, nil, err
	}
	h, hd, q := a.Heads(), a.Heads()*a.DH, a.queries(seq)
	dEnc := make([]*tensor.Dense[T], h)
	dDec := make([]*tensor.Dense[T], h)
	anyEnc, anyDec := false, false
	for hh := 0; hh < h; hh++ {
		if dEnc[hh], err = t.dir(a.Encoders[hh]); err != nil {
			return nil, nil, err
		}
		if dDec[hh], err = t.dir(a.Decoders[hh]); err != nil {
			return nil, nil, err
		}
		anyEnc = anyEnc || dEnc[hh] != nil
		anyDec = anyDec || dDec[hh] != nil
	}
	w, path, err := a.weightsAt(p)
	if err != nil {
		return nil, nil, err
	}
	// The intermediates z, dz, o and do live only in this call: they are
	// scratch, handed back at its end.
	z := a.encodeAtTo(x.Data, w, path, getScratch[T](b*seq*hd), b*seq, seq)
	defer putScratch(z)

	// dz = dx E_bᵀ + x dEᵀ: [B*M, S, H*DH].
	var dz []T
	if dx != nil {
		dz = a.encodeAtTo(dx.Data, w, path, getScratch[T](b*m*seq*hd), b*m*seq, m*seq)
	} else if anyEnc {
		dz = getScratch[T](b * m * seq * hd)
		clear(dz)
	}
	if dz != nil {
		defer putScratch(dz)
	}
	if anyEnc {
		stack := make([]T, m*hd*d)
		for mm := 0; mm < m; mm++ {
			for hh, de := range dEnc {
				if de != nil {
					copy(stack[(mm*hd+hh*dh)*d:(mm*hd+(hh+1)*dh)*d], de.Data[mm*dh*d:(mm+1)*dh*d])
				}
			}
		}
		tmp := getScratch[T](b * seq * m * hd) // row (b, t), column (m, o)
		defer putScratch(tmp)
		gemm.Gemm(false, true, b*seq, m*hd, d, 1, x.Data, d, stack, d, 0, tmp, m*hd)
		for bb := 0; bb < b; bb++ {
			for mm := 0; mm < m; mm++ {
				for tt := 0; tt < seq; tt++ {
					tensor.AddScaled(dz[((bb*m+mm)*seq+tt)*hd:((bb*m+mm)*seq+tt+1)*hd], 1,
						tmp[(bb*seq+tt)*m*hd+mm*hd:(bb*seq+tt)*m*hd+(mm+1)*hd])
				}
			}
		}
	}

	o := getScratch[T](b * q * hd) // attendJVP writes every element of o and do
	defer putScratch(o)
	var do []T
	if dz != nil {
		do = getScratch[T](b * m * q * hd)
		defer putScratch(do)
	}
	attentionParallel(b, (m+1)*q*seq*hd, func(lo, hi int) {
		scores, ds, acc := make([]float64, seq), make([]float64, seq), make([]float64, dh)
		for bb := lo; bb < hi; bb++ {
			zb := z[bb*seq*hd : (bb+1)*seq*hd]
			ob := o[bb*q*hd : (bb+1)*q*hd]
			var dzb, dob []T
			if dz != nil {
				dzb = dz[bb*m*seq*hd : (bb+1)*m*seq*hd]
				dob = do[bb*m*q*hd : (bb+1)*m*q*hd]
			}
			a.attendJVP(zb, dzb, ob, dob, seq, m, scores, ds, acc)
		}
	})

	y := tensor.New[T](shape...)
	a.decodeAt(o, w, path, y.Data, b*q, q)
	dy := tensor.New[T](append([]int{b * m}, shape[1:]...)...)
	if do != nil {
		a.decodeAt(do, w, path, dy.Data, b*m*q, m*q)
	}
	if anyDec {
		stack := make([]T, m*d*hd)
		for mm := 0; mm < m; mm++ {
			for hh, dd := range dDec {
				if dd == nil {
					continue
				}
				for i := 0; i < d; i++ {
					copy(stack[(mm*d+i)*hd+hh*dh:(mm*d+i)*hd+(hh+1)*dh], dd.Data[(mm*d+i)*dh:(mm*d+i+1)*dh])
				}
			}
		}
		tmp := getScratch[T](b * q * m * d)
		defer putScratch(tmp)
		gemm.Gemm(false, true, b*q, m*d, hd, 1, o, hd, stack, hd, 0, tmp, m*d)
		for bb := 0; bb < b; bb++ {
			for mm := 0; mm < m; mm++ {
				for qq := 0; qq < q; qq++ {
					tensor.AddScaled(dy.Data[((bb*m+mm)*q+qq)*d:((bb*m+mm)*q+qq+1)*d], 1,
						tmp[(bb*q+qq)*m*d+mm*d:(bb*q+qq)*m*d+(mm+1)*d])
				}
			}
		}
	}
	return y, dy, nil
}
