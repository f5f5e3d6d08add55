//go:build openblas

package gemm

var defaultBackend Backend = OpenBLAS{}

// Available lists the backends compiled into this binary, fastest first.
func Available() []Backend { return []Backend{OpenBLAS{}, Gonum{}} }

// Serial returns the default backend without its own splitting across
// goroutines, for callers that already run one product per core.
func Serial() Backend { return OpenBLAS{Serial: true} }

// Kernels names the backend's kernels for this processor, as recorded
// with a run: OpenBLAS's core type (see retargetUnknownCPU).
func Kernels() string { return "openblas, " + kernels }
