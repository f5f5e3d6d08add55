package gemm_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/explaind/explaind/gemm"
	"github.com/explaind/explaind/tensor"
)

// naive computes C = alpha*op(A)*op(B) + beta*C in float64 by the definition.
func naive(transA, transB bool, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for l := 0; l < k; l++ {
				var av, bv float64
				if transA {
					av = a[l*lda+i]
				} else {
					av = a[i*lda+l]
				}
				if transB {
					bv = b[j*ldb+l]
				} else {
					bv = b[l*ldb+j]
				}
				s += av * bv
			}
			c[i*ldc+j] = alpha*s + beta*c[i*ldc+j]
		}
	}
}

func randSlice(rng *rand.Rand, n int) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = rng.NormFloat64()
	}
	return s
}

func to32(s []float64) []float32 {
	out := make([]float32, len(s))
	for i, v := range s {
		out[i] = float32(v)
	}
	return out
}

func TestBackendsAgreeWithDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for _, be := range gemm.Available() {
		// The last two are large enough for the OpenBLAS backend to split them
		// by rows and by columns.
		for _, tc := range []struct{ m, n, k int }{{1, 1, 1}, {3, 5, 7}, {17, 1, 33}, {64, 65, 63}, {201, 150, 101}, {3, 2001, 401}} {
			for _, tr := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
				name := fmt.Sprintf("%s/%dx%dx%d/%v", be.Name(), tc.m, tc.n, tc.k, tr)
				// Leading dimensions larger than the rows, to test strides.
				ar, ac := tc.m, tc.k
				if tr[0] {
					ar, ac = ac, ar
				}
				br, bc := tc.k, tc.n
				if tr[1] {
					br, bc = bc, br
				}
				lda, ldb, ldc := ac+2, bc+1, tc.n+3
				a, b := randSlice(rng, ar*lda), randSlice(rng, br*ldb)
				c := randSlice(rng, tc.m*ldc)
				want := append([]float64(nil), c...)
				naive(tr[0], tr[1], tc.m, tc.n, tc.k, 0.7, a, lda, b, ldb, -0.3, want, ldc)
				got := append([]float64(nil), c...)
				gemm.GemmOn(be, tr[0], tr[1], tc.m, tc.n, tc.k, 0.7, a, lda, b, ldb, -0.3, got, ldc)
				if e := tensor.RelErr(got, want); e > 1e-13 {
					t.Errorf("%s float64: relative error %.3g", name, e)
				}
				got32 := to32(c)
				gemm.GemmOn(be, tr[0], tr[1], tc.m, tc.n, tc.k, float32(0.7), to32(a), lda, to32(b), ldb, float32(-0.3), got32, ldc)
				if e := tensor.RelErr(got32, want); e > 1e-5 {
					t.Errorf("%s float32: relative error %.3g", name, e)
				}
			}
		}
	}
}

func TestEmptyInnerDimensionScalesC(t *testing.T) {
	c := []float64{1, 2, 3, 4}
	gemm.Gemm(false, false, 2, 2, 0, 1, nil, 1, nil, 2, 0.5, c, 2)
	if c[0] != 0.5 || c[3] != 2 {
		t.Errorf("k = 0 should scale C by beta, got %v", c)
	}
}

func TestMatMulShapes(t *testing.T) {
	a := tensor.New[float32](2, 3)
	b := tensor.New[float32](4, 3)
	if _, err := gemm.MatMul(a, false, b, false); err == nil {
		t.Error("2×3 by 4×3: want an inner-dimension error")
	}
	c, err := gemm.MatMul(a, false, b, true)
	if err != nil || c.Shape[0] != 2 || c.Shape[1] != 4 {
		t.Errorf("2×3 by (4×3)ᵀ: got %v, %v", c, err)
	}
}

// BenchmarkSgemm reports GFLOP/s of square float32 products on every
// compiled-in backend: go test -tags openblas -bench Sgemm ./gemm/
func BenchmarkSgemm(b *testing.B) {
	for _, be := range gemm.Available() {
		for _, n := range []int{256, 1024} {
			b.Run(fmt.Sprintf("%s/%d", be.Name(), n), func(b *testing.B) {
				rng := rand.New(rand.NewPCG(1, 1))
				x, y := to32(randSlice(rng, n*n)), to32(randSlice(rng, n*n))
				z := make([]float32, n*n)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					be.Sgemm(false, false, n, n, n, 1, x, n, y, n, 0, z, n)
				}
				b.ReportMetric(2*float64(n)*float64(n)*float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// BenchmarkDgemm is BenchmarkSgemm in float64.
func BenchmarkDgemm(b *testing.B) {
	for _, be := range gemm.Available() {
		n := 1024
		b.Run(fmt.Sprintf("%s/%d", be.Name(), n), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 1))
			x, y := randSlice(rng, n*n), randSlice(rng, n*n)
			z := make([]float64, n*n)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				be.Dgemm(false, false, n, n, n, 1, x, n, y, n, 0, z, n)
			}
			b.ReportMetric(2*float64(n)*float64(n)*float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkKernelFloor is the floor of the kernel preset on the paper's
// modulo run (explain's addKernel): one step's product of the sweep's rows
// Q [113 classes × 89024 parameters] with the training samples' per-sample
// gradients G [4000 × 89024], out = Q·Gᵀ, in float32, on the default
// backend. "whole" is one product; "chunks" the same product over blocks
// of 256 training samples and the modulo model's parameter tensors, as
// addKernel issues it. ns/op is one step:
//
//	go test -tags openblas -run XXX -bench KernelFloor -benchtime 3x ./gemm/
func BenchmarkKernelFloor(b *testing.B) {
	const R, N, chunk = 113, 4000, 256
	// The modulo transformer's tensors (p = 113, d 64, 4 heads, MLP 512).
	sizes := []int{115 * 64, 16 * 64, 16 * 64, 16 * 64, 16 * 64, 64 * 16, 64 * 16, 64 * 16, 64 * 16,
		512 * 64, 512, 64 * 512, 64, 115 * 64}
	P := 0
	for _, s := range sizes {
		P += s
	}
	rng := rand.New(rand.NewPCG(1, 1))
	fill := func(n int) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = float32(rng.NormFloat64())
		}
		return s
	}
	q := fill(R * P)
	flops := 2 * float64(R) * float64(N) * float64(P)
	b.Run("whole", func(b *testing.B) {
		g := fill(N * P)
		out := make([]float32, R*N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			gemm.Gemm(false, true, R, N, P, 1, q, P, g, P, 0, out, N)
		}
		b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
	b.Run("chunks", func(b *testing.B) {
		// One chunk's per-sample gradients, tensor by tensor ([chunk × size] each).
		qt, gt := make([][]float32, len(sizes)), make([][]float32, len(sizes))
		for t, s := range sizes {
			qt[t], gt[t] = fill(R*s), fill(chunk*s)
		}
		out := make([]float32, R*chunk)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			for lo := 0; lo < N; lo += chunk {
				m := min(chunk, N-lo)
				for t, s := range sizes {
					gemm.Gemm(false, true, R, m, s, 1, qt[t], s, gt[t], s, 1, out, m)
				}
			}
		}
		b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
}
