//go:build openblas

package gemm

/*
#cgo CFLAGS: -I/usr/include/x86_64-linux-gnu -I/usr/include/openblas
#cgo LDFLAGS: -lopenblas
#include <stdlib.h>
#include <cblas.h>

// The kernel selection of an OpenBLAS built with DYNAMIC_ARCH (Debian's):
// weak, so that a library built without it still links (they are NULL).
extern void gotoblas_dynamic_init(void) __attribute__((weak));
extern void gotoblas_dynamic_quit(void) __attribute__((weak));

// retarget makes OpenBLAS select its kernels again as if OPENBLAS_CORETYPE
// were core, and reports whether it could.
static int retarget(const char *core) {
	if (!gotoblas_dynamic_init || !gotoblas_dynamic_quit) {
		return 0;
	}
	setenv("OPENBLAS_CORETYPE", core, 1);
	gotoblas_dynamic_quit();
	gotoblas_dynamic_init();
	unsetenv("OPENBLAS_CORETYPE");
	return 1;
}
*/
import "C"

import (
	"os"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/cpu"
)

// kernels names the OpenBLAS kernels in use, and why when explaind chose
// them (see retargetUnknownCPU).
var kernels string

func init() {
	// OpenBLAS's own threads spin between calls and fight the Go
	// goroutines that explaind runs beside them (measured: a ResNet-9 step
	// 4.9 s with two OpenBLAS threads, 3.7 s with one). So OpenBLAS runs
	// single-threaded and large products are split across goroutines here
	// instead (see split). OPENBLAS_NUM_THREADS, if set, is respected.
	if os.Getenv("OPENBLAS_NUM_THREADS") == "" {
		C.openblas_set_num_threads(1)
	}
	kernels = retargetUnknownCPU()
}

// retargetUnknownCPU corrects OpenBLAS's choice of kernels on processors
// newer than the library: OpenBLAS 0.3.21 (Debian 12) does not know Intel's
// model 207 (Emerald Rapids) and falls back to its Prescott kernels (SSE3),
// which multiply at a quarter of the speed of its SkylakeX (AVX-512)
// kernels there (measured: 33 against 143 GFLOP/s on -bench KernelFloor).
// When OpenBLAS chose Prescott, OPENBLAS_CORETYPE is not set and the
// processor has AVX-512 (F, BW, DQ, VL) or AVX2 with FMA, the kernels are
// selected again as SkylakeX or Haswell, before any product runs. It
// returns the kernels' name, with that note when it changed them.
func retargetUnknownCPU() string {
	core := C.GoString(C.openblas_get_corename())
	if core != "Prescott" || os.Getenv("OPENBLAS_CORETYPE") != "" {
		return core + " kernels"
	}
	want := ""
	switch {
	case cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512DQ && cpu.X86.HasAVX512VL:
		want = "SkylakeX"
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		want = "Haswell"
	default:
		return core + " kernels"
	}
	name := C.CString(want)
	defer C.free(unsafe.Pointer(name))
	if C.retarget(name) == 0 {
		return core + " kernels"
	}
	got := C.GoString(C.openblas_get_corename())
	return got + " kernels (OpenBLAS chose " + core + " for this processor)"
}

// splitMin is the work (m·n·k) above which a product is split.
const splitMin = 1 << 21

// split runs a product as row blocks of C (or column blocks when C has
// few rows), one per processor. The result is not bit-identical to the
// unsplit call (OpenBLAS's kernels at the blocks' edges round
// differently: measured, up to 11 % of the elements of a float32 product
// differ in their last bits), so the number of blocks must depend on
// GOMAXPROCS alone, never on timing (such as the processors other
// products leave free), for a replay to reproduce training.
func (o OpenBLAS) split(m, n, k int, run func(i0, i1, j0, j1 int)) {
	workers := runtime.GOMAXPROCS(0)
	if o.Serial || workers < 2 || m*n*k < splitMin {
		run(0, m, 0, n)
		return
	}
	block := func(w int) {
		if m >= n || m >= 4*workers {
			run(m*w/workers, m*(w+1)/workers, 0, n)
		} else {
			run(0, m, n*w/workers, n*(w+1)/workers)
		}
	}
	// Block 0 runs on the calling goroutine: one goroutine fewer per
	// product, and CPU profiles keep the caller of its share.
	var wg sync.WaitGroup
	for w := 1; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			block(w)
		}(w)
	}
	block(0)
	wg.Wait()
}

// offsets returns the element offsets of op(A)'s row i0, op(B)'s column j0
// and C's element (i0, j0).
func offsets(transA, transB bool, i0, j0, lda, ldb, ldc int) (oa, ob, oc int) {
	oa, ob = i0*lda, j0
	if transA {
		oa = i0
	}
	if transB {
		ob = j0 * ldb
	}
	return oa, ob, i0*ldc + j0
}

// OpenBLAS is the cgo backend over OpenBLAS's cblas_sgemm and cblas_dgemm.
// It is compiled in with the build tag "openblas". Large products are split
// across goroutines unless Serial is set (for callers that already run one
// product per core).
type OpenBLAS struct{ Serial bool }

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
func (o OpenBLAS) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	ar, ac := dims(transA, m, k)
	br, bc := dims(transB, k, n)
	span("A", len(a), ar, ac, lda)
	span("B", len(b), br, bc, ldb)
	span("C", len(c), m, n, ldc)
	o.split(m, n, k, func(i0, i1, j0, j1 int) {
		if i1 <= i0 || j1 <= j0 {
			return
		}
		oa, ob, oc := offsets(transA, transB, i0, j0, lda, ldb, ldc)
		C.cblas_sgemm(C.CblasRowMajor, ctrans(transA), ctrans(transB), C.blasint(i1-i0), C.blasint(j1-j0), C.blasint(k),
			C.float(alpha), (*C.float)(unsafe.Pointer(&a[oa])), C.blasint(lda),
			(*C.float)(unsafe.Pointer(&b[ob])), C.blasint(ldb),
			C.float(beta), (*C.float)(unsafe.Pointer(&c[oc])), C.blasint(ldc))
	})
}

// Dgemm computes C = alpha*op(A)*op(B) + beta*C in float64.
func (o OpenBLAS) Dgemm(transA, transB bool, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	ar, ac := dims(transA, m, k)
	br, bc := dims(transB, k, n)
	span("A", len(a), ar, ac, lda)
	span("B", len(b), br, bc, ldb)
	span("C", len(c), m, n, ldc)
	o.split(m, n, k, func(i0, i1, j0, j1 int) {
		if i1 <= i0 || j1 <= j0 {
			return
		}
		oa, ob, oc := offsets(transA, transB, i0, j0, lda, ldb, ldc)
		C.cblas_dgemm(C.CblasRowMajor, ctrans(transA), ctrans(transB), C.blasint(i1-i0), C.blasint(j1-j0), C.blasint(k),
			C.double(alpha), (*C.double)(unsafe.Pointer(&a[oa])), C.blasint(lda),
			(*C.double)(unsafe.Pointer(&b[ob])), C.blasint(ldb),
			C.double(beta), (*C.double)(unsafe.Pointer(&c[oc])), C.blasint(ldc))
	})
}
