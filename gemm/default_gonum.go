//go:build !openblas

package gemm

var defaultBackend Backend = Gonum{}

// Available lists the backends compiled into this binary, fastest first.
func Available() []Backend { return []Backend{Gonum{}} }

// Serial returns the default backend for callers that already run one
// product per core (gonum decides its own parallelism).
func Serial() Backend { return Gonum{} }

// Kernels names the backend's kernels for this processor, as recorded
// with a run.
func Kernels() string { return "gonum" }
