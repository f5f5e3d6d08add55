// Package gemm is explaind's single seam for matrix products.
//
// Every matrix product in explaind goes through a Backend. Two exist: Gonum,
// pure Go, which builds anywhere; and OpenBLAS, through cgo, compiled in with
// the build tag "openblas" (Debian: apt-get install libopenblas-dev). Default
// returns the fastest one compiled into the binary; the choice is fixed at
// build time, so there is no mutable global state.
//
// All matrices are row-major. C = alpha*op(A)*op(B) + beta*C, with op(A) of
// size m×k and op(B) of size k×n, as in BLAS.
package gemm

import (
	"fmt"

	"github.com/explaind/explaind/tensor"
	"gonum.org/v1/gonum/blas"
)

// Backend multiplies row-major matrices in float32 and float64.
type Backend interface {
	// Name identifies the implementation ("gonum" or "openblas").
	Name() string
	// Sgemm computes C = alpha*op(A)*op(B) + beta*C in float32.
	Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)
	// Dgemm computes C = alpha*op(A)*op(B) + beta*C in float64.
	Dgemm(transA, transB bool, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int)
}

// Default returns the fastest backend compiled into this binary.
func Default() Backend { return defaultBackend }

func trans(t bool) blas.Transpose {
	if t {
		return blas.Trans
	}
	return blas.NoTrans
}

// Gemm computes C = alpha*op(A)*op(B) + beta*C on the default backend for
// either element type. Empty products (m, n or k zero) are handled: with k
// zero, C is only scaled by beta.
func Gemm[T tensor.Float](transA, transB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	GemmOn(defaultBackend, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// GemmOn is Gemm on a given backend.
func GemmOn[T tensor.Float](be Backend, transA, transB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		for i := 0; i < m; i++ {
			row := c[i*ldc : i*ldc+n]
			for j := range row {
				if beta == 0 {
					row[j] = 0
				} else {
					row[j] *= beta
				}
			}
		}
		return
	}
	switch a := any(a).(type) {
	case []float32:
		be.Sgemm(transA, transB, m, n, k, float32(alpha), a, lda, any(b).([]float32), ldb, float32(beta), any(c).([]float32), ldc)
	case []float64:
		be.Dgemm(transA, transB, m, n, k, float64(alpha), a, lda, any(b).([]float64), ldb, float64(beta), any(c).([]float64), ldc)
	default:
		panic(fmt.Sprintf("gemm: unsupported element type %T", a))
	}
}

// MatMul computes C = op(A)·op(B) for dense 2-D arrays and returns it.
// It returns an error when the inner dimensions disagree.
func MatMul[T tensor.Float](a *tensor.Dense[T], transA bool, b *tensor.Dense[T], transB bool) (*tensor.Dense[T], error) {
	if len(a.Shape) != 2 || len(b.Shape) != 2 {
		return nil, fmt.Errorf("gemm.MatMul: want 2-D arrays, got shapes %v and %v", a.Shape, b.Shape)
	}
	m, ka := a.Shape[0], a.Shape[1]
	if transA {
		m, ka = ka, m
	}
	kb, n := b.Shape[0], b.Shape[1]
	if transB {
		kb, n = n, kb
	}
	if ka != kb {
		return nil, fmt.Errorf("gemm.MatMul: inner dimensions differ: op(A) is %d×%d, op(B) is %d×%d", m, ka, kb, n)
	}
	c := tensor.New[T](m, n)
	Gemm(transA, transB, m, n, ka, 1, a.Data, a.Shape[1], b.Data, b.Shape[1], 0, c.Data, n)
	return c, nil
}
