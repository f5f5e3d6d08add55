package explain

// SetKernelPath sets, for a test, whether the sweeps' training side
// contracts outer-product gradients in factored form and how many
// training samples it takes per chunk; it returns a function that
// restores the previous settings.
func SetKernelPath(factored bool, chunk int) (restore func()) {
	f, c := factorOuter, kernelChunk
	factorOuter, kernelChunk = factored, chunk
	return func() { factorOuter, kernelChunk = f, c }
}

// FactoredProducts returns the number of factored products formed so far.
func FactoredProducts() int64 { return factoredProducts.Load() }
