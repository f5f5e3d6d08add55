package gemm

import (
	"gonum.org/v1/gonum/blas/gonum"
)

// Gonum is the pure-Go backend (gonum's BLAS, which uses all cores).
type Gonum struct{}

// Name returns "gonum".
func (Gonum) Name() string { return "gonum" }

// Sgemm computes C = alpha*op(A)*op(B) + beta*C in float32.
func (Gonum) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	gonum.Implementation{}.Sgemm(trans(transA), trans(transB), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// Dgemm computes C = alpha*op(A)*op(B) + beta*C in float64.
func (Gonum) Dgemm(transA, transB bool, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	gonum.Implementation{}.Dgemm(trans(transA), trans(transB), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}
