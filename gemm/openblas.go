//go:build openblas

package gemm

/*
#cgo CFLAGS: -I/usr/include/x86_64-linux-gnu -I/usr/include/openblas
#cgo LDFLAGS: -lopenblas
#include <cblas.h>
*/
import "C"

import "unsafe"

// OpenBLAS is the cgo backend over OpenBLAS's cblas_sgemm and cblas_dgemm.
// It is compiled in with the build tag "openblas".
type OpenBLAS struct{}

// Name returns "openblas".
func (OpenBLAS) Name() string { return "openblas" }

func ctrans(t bool) C.enum_CBLAS_TRANSPOSE {
	if t {
		return C.CblasTrans
	}
	return C.CblasNoTrans
}

// span checks that a row-major matrix of rows×cols with leading dimension ld
// fits in a slice of length n, so that C never reads out of bounds.
func span(name string, n, rows, cols, ld int) {
	if rows == 0 || cols == 0 {
		return
	}
	if ld < cols || (rows-1)*ld+cols > n {
		panic("gemm: " + name + " is too short for its dimensions")
	}
}

func dims(trans bool, r, c int) (int, int) {
	if trans {
		return c, r
	}
	return r, c
}

// Sgemm computes C = alpha*op(A)*op(B) + beta*C in float32.
func (OpenBLAS) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	ar, ac := dims(transA, m, k)
	br, bc := dims(transB, k, n)
	span("A", len(a), ar, ac, lda)
	span("B", len(b), br, bc, ldb)
	span("C", len(c), m, n, ldc)
	C.cblas_sgemm(C.CblasRowMajor, ctrans(transA), ctrans(transB), C.blasint(m), C.blasint(n), C.blasint(k),
		C.float(alpha), (*C.float)(unsafe.Pointer(&a[0])), C.blasint(lda),
		(*C.float)(unsafe.Pointer(&b[0])), C.blasint(ldb),
		C.float(beta), (*C.float)(unsafe.Pointer(&c[0])), C.blasint(ldc))
}

// Dgemm computes C = alpha*op(A)*op(B) + beta*C in float64.
func (OpenBLAS) Dgemm(transA, transB bool, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	ar, ac := dims(transA, m, k)
	br, bc := dims(transB, k, n)
	span("A", len(a), ar, ac, lda)
	span("B", len(b), br, bc, ldb)
	span("C", len(c), m, n, ldc)
	C.cblas_dgemm(C.CblasRowMajor, ctrans(transA), ctrans(transB), C.blasint(m), C.blasint(n), C.blasint(k),
		C.double(alpha), (*C.double)(unsafe.Pointer(&a[0])), C.blasint(lda),
		(*C.double)(unsafe.Pointer(&b[0])), C.blasint(ldb),
		C.double(beta), (*C.double)(unsafe.Pointer(&c[0])), C.blasint(ldc))
}
