//go:build openblas

package gemm

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/cpu"
)

// TestKernelsNotGeneric: on a processor with AVX2 and FMA, OpenBLAS must
// not multiply with its generic Prescott kernels (which it picks for
// processors newer than itself), unless OPENBLAS_CORETYPE asks for them.
func TestKernelsNotGeneric(t *testing.T) {
	t.Logf("kernels: %s", Kernels())
	if os.Getenv("OPENBLAS_CORETYPE") != "" || !(cpu.X86.HasAVX2 && cpu.X86.HasFMA) {
		t.Skip("OPENBLAS_CORETYPE is set, or the processor has no AVX2 with FMA")
	}
	if strings.HasPrefix(Kernels(), "openblas, Prescott kernels") {
		t.Errorf("OpenBLAS multiplies with its generic kernels on a processor with AVX2: %s", Kernels())
	}
}
