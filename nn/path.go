package nn

import (
	"fmt"
	"math"

	"github.com/explaind/explaind/gemm"
	"github.com/explaind/explaind/tensor"
)

// Path is the straight segment θ(t) = θ + t·Δθ through parameter space,
// evaluated at one position t per sample. The layers' Path methods
// (PathForward, PathBackward, PathJVP) evaluate a layer at θ(T[b]) for
// sample b, where θ is the parameters' current value and Δθ is Delta; a
// batch can so hold every sample at its own point of an optimizer step,
// which exact path integration needs (each sample has its own quadrature
// nodes).
//
// A layer that is linear in its parameters (Linear, Embedding, the attention
// encoders and decoders) evaluates θ(t) at no more than twice the cost of θ:
// W x + t ⊙ (ΔW x), two GEMMs.
//
// A nil *Path is the segment's start θ for every sample.
type Path[T tensor.Float] struct {
	// Delta[p] is Δθ for parameter p, of p's shape. A parameter absent
	// from Delta (or mapped to nil) does not move along the path.
	Delta map[*Param[T]]*tensor.Dense[T]
	// T[b] is the position of sample b on the segment: 0 is θ, 1 is θ+Δθ.
	// Its length must be the batch size.
	T []float64
}

// delta returns Δθ for prm (nil when it does not move) and checks its shape.
func (p *Path[T]) delta(prm *Param[T]) (*tensor.Dense[T], error) {
	if p == nil || p.Delta == nil || prm == nil {
		return nil, nil
	}
	d := p.Delta[prm]
	if d == nil {
		return nil, nil
	}
	if !tensor.SameShape(d.Shape, prm.Value.Shape) || len(d.Data) != len(prm.Value.Data) {
		return nil, fmt.Errorf("nn: path direction for %s has shape %v, want %v", prm.Name, d.Shape, prm.Value.Shape)
	}
	return d, nil
}

// check validates the path against a batch of b samples.
func (p *Path[T]) check(layer string, b int) error {
	if p == nil {
		return nil
	}
	if len(p.T) != b {
		return fmt.Errorf("nn.%s: path has %d positions for a batch of %d samples", layer, len(p.T), b)
	}
	for i, t := range p.T {
		if math.IsNaN(t) || math.IsInf(t, 0) {
			return fmt.Errorf("nn.%s: path position %d is %v", layer, i, t)
		}
	}
	return nil
}

// positions returns p.T, or nil for a nil path.
func (p *Path[T]) positions() []float64 {
	if p == nil {
		return nil
	}
	return p.T
}

// addRowScaled adds t[r/per]·src[r] to dst[r] for consecutive rows of width
// values: rows r·per … r·per+per−1 belong to sample r (per rows per sample,
// for example K cotangents times S positions).
func addRowScaled[T tensor.Float](dst, src []T, width int, t []float64, per int) {
	rows := len(src) / width
	for r := 0; r < rows; r++ {
		tv := T(t[r/per])
		if tv == 0 {
			continue
		}
		d := dst[r*width : (r+1)*width]
		for i, v := range src[r*width : (r+1)*width] {
			d[i] += tv * v
		}
	}
}

// addScaledProduct adds t[r/per] · (row r of a·op(B)) to row r of c, for a
// [rows, k], op(B) [k, n] (B is [n, k] when transB) and c [rows, n]. It
// scales whichever side is narrower, so that no [rows, max(k, n)]
// temporary is needed: with k ≤ n it multiplies the scaled rows of a into
// c directly.
func addScaledProduct[T tensor.Float](c, a, b []T, rows, n, k int, transB bool, t []float64, per int) {
	ldb := n
	if transB {
		ldb = k
	}
	if k <= n {
		as := getScratch[T](rows * k)
		defer putScratch(as)
		for r := 0; r < rows; r++ {
			tv := T(t[r/per])
			dst, src := as[r*k:(r+1)*k], a[r*k:(r+1)*k]
			if tv == 0 {
				clear(dst)
				continue
			}
			for i, v := range src {
				dst[i] = tv * v
			}
		}
		gemm.Gemm(false, transB, rows, n, k, 1, as, k, b, ldb, 1, c, n)
		return
	}
	tmp := getScratch[T](rows * n)
	defer putScratch(tmp)
	gemm.Gemm(false, transB, rows, n, k, 1, a, k, b, ldb, 0, tmp, n)
	addRowScaled(c, tmp, n, t, per)
}
