//go:build openblas

package gemm

var defaultBackend Backend = OpenBLAS{}

// Available lists the backends compiled into this binary, fastest first.
func Available() []Backend { return []Backend{OpenBLAS{}, Gonum{}} }
