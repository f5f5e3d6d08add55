package lds

import (
	"context"
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"

	"github.com/explaind/explaind/data"
	"github.com/explaind/explaind/gemm"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// TRAKDim is the largest projection dimension k of the trak method: a
// training set of N samples is projected to k = min(TRAKDim, ⌊N/2⌋)
// dimensions (k < N, so that the projected Gram matrix can be inverted).
const TRAKDim = 512

// trakStream is the PCG stream of the trak method's projection.
const trakStream = 0x7472616b

// projBlock is the number of the projection's parameter rows generated at
// once.
const projBlock = 2048

// projector maps gradients of P parameters to k dimensions, g ↦ gᵀR, with
// the random Rademacher matrix R ∈ {±1/√k}^{P×k} (E[R Rᵀ] = I), whose rows
// are generated block by block from the seed each time they are needed:
// R is never held whole (P·k values: 13 GB for a full-width ResNet-9).
type projector struct {
	P, k  int
	seed  uint64
	block []float32
}

func newProjector(P, k int, seed uint64) *projector {
	return &projector{P: P, k: k, seed: seed, block: make([]float32, projBlock*k)}
}

// project returns G R [n × k] for the n rows of G [n × P].
func (p *projector) project(g []float32, n int) []float32 {
	out := make([]float32, n*p.k)
	for b, off := 0, 0; off < p.P; b, off = b+1, off+projBlock {
		rows := min(projBlock, p.P-off)
		blk := p.fill(b, rows)
		gemm.Gemm[float32](false, false, n, p.k, rows, 1, g[off:], p.P, blk, p.k, 1, out, p.k)
	}
	return out
}

// fill generates block b of R: its rows b·projBlock … + rows, [rows × k].
func (p *projector) fill(b, rows int) []float32 {
	rng := newRand(p.seed, trakStream+uint64(b))
	v := float32(1 / math.Sqrt(float64(p.k)))
	blk := p.block[:rows*p.k]
	for j := 0; j < len(blk); j += 64 {
		bits := rng.Uint64()
		for t := 0; t < 64 && j+t < len(blk); t++ {
			blk[j+t] = v
			if bits>>t&1 == 1 {
				blk[j+t] = -v
			}
		}
	}
	return blk
}

// TRAKAttributions returns the trak attributions of both targets (see the
// package comment) at the model's current parameters, the run's final
// model: TRAK with one model (Park et al. 2023),
//
//	a[x, i] = φ(x)ᵀ (Φ̃ᵀΦ̃)⁻¹ φ̃_i (1 − p_i),
//
// where φ(x) = Rᵀ∇f(x) projects the target's gradient, φ̃_i = Rᵀ∇g_i
// projects the gradient of the training sample's model output function
// g_i = log(p_i/(1 − p_i)), p_i = p_{y_i}(z_i), and Φ̃ stacks the φ̃_i. Since
// ∇g_i = ∇ℓ_i/(1 − p_i) (ℓ_i = log p_i), a[x, i] = φ(x)ᵀ(Φ̃ᵀΦ̃)⁻¹Rᵀ∇ℓ_i.
// 1 − p_i is summed from the other classes' probabilities, exact also
// where p_i rounds to 1. R is seeded by seed. When rounding leaves Φ̃ᵀΦ̃
// not positive definite, 10⁻⁹ of its mean diagonal is added to the
// diagonal (the returned ridge, else 0).
func TRAKAttributions(ctx context.Context, model nn.Layer[float32], params []*nn.Param[float32], t *Tests, tr data.Dataset[float32], seed uint64) ([]*Attribution, float64, error) {
	X, N := len(t.Labels), tr.Len()
	k := min(TRAKDim, N/2)
	if k < 1 {
		return nil, 0, fmt.Errorf("%s: trak needs at least 2 training samples, the run has %d", Command, N)
	}
	shape, err := model.OutShape(t.X.Shape)
	if err != nil {
		return nil, 0, err
	}
	C := shape[1]
	P := 0
	for _, p := range params {
		P += len(p.Value.Data)
	}
	pr := newProjector(P, k, seed)
	phi := make([]float64, N*k)  // Rᵀ∇ℓ_i
	gram := make([]float64, k*k) // Φ̃ᵀΦ̃
	scaled := make([]float64, gradChunk*k)
	err = trainGrads(ctx, model, params, tr, C, func(lo int, g []float32, logp *tensor.Dense[float32]) error {
		n := len(g) / P
		f := pr.project(g, n)
		for i := range n {
			y := tr.Labels[lo+i]
			var q float64 // 1 − p_i
			for c := range C {
				if c != y {
					q += math.Exp(float64(logp.Data[i*C+c]))
				}
			}
			if !(q > 0) || math.IsInf(q, 0) {
				return fmt.Errorf("%s: trak: training sample %d has 1 − p = %v; want a positive finite value", Command, lo+i, q)
			}
			for j := range k {
				phi[(lo+i)*k+j] = float64(f[i*k+j])
				scaled[i*k+j] = phi[(lo+i)*k+j] / q
			}
		}
		gemm.Gemm[float64](true, false, k, k, n, 1, scaled, k, scaled, k, 1, gram, k)
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	var ridge float64
	var ch mat.Cholesky
	if !ch.Factorize(mat.NewSymDense(k, gram)) {
		var tr float64
		for j := range k {
			tr += gram[j*k+j]
		}
		ridge = 1e-9 * tr / float64(k)
		for j := range k {
			gram[j*k+j] += ridge
		}
		if !ch.Factorize(mat.NewSymDense(k, gram)) {
			return nil, 0, fmt.Errorf("%s: trak: the projected Gram matrix of the training gradients is singular even with a ridge of %g", Command, ridge)
		}
	}
	var out []*Attribution
	for n, neg := range [][]int{nil, t.Rival} {
		g, _, _, err := flatGrads(model, params, t.X, cotangent(X, C, t.Labels, neg))
		if err != nil {
			return nil, 0, err
		}
		f := pr.project(g, X)
		fx := mat.NewDense(k, X, nil) // φ(x) as columns
		for x := range X {
			for j := range k {
				fx.Set(j, x, float64(f[x*k+j]))
			}
		}
		var w mat.Dense // (Φ̃ᵀΦ̃)⁻¹ φ(x), k × X
		if err := ch.SolveTo(&w, fx); err != nil && !errors.As(err, new(mat.Condition)) {
			return nil, 0, fmt.Errorf("%s: trak: %w", Command, err) // an ill-conditioned Gram matrix still solves
		}
		a := make([]float64, X*N)
		wt := mat.DenseCopyOf(w.T()) // X × k, row-major
		gemm.Gemm[float64](false, true, X, N, k, 1, wt.RawMatrix().Data, k, phi, k, 0, a, N)
		out = append(out, &Attribution{Method: TRAK, Target: Targets()[n], X: X, N: N, A: a})
	}
	return out, ridge, nil
}
