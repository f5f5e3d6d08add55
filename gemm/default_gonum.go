//go:build !openblas

package gemm

var defaultBackend Backend = Gonum{}

// Available lists the backends compiled into this binary, fastest first.
func Available() []Backend { return []Backend{Gonum{}} }
