package explain

// SetKernelPath sets, for a test, whether the data kernel takes its fast
// paths (the training side's outer-product gradients in factored form,
// the feature pass of sweep-only jobs in the run's precision) and how
// many training samples the training side takes per chunk; it returns a
// function that restores the previous settings.
func SetKernelPath(fast bool, chunk int) (restore func()) {
	f, r, c := factorOuter, runPrecisionFeatures, kernelChunk
	factorOuter, runPrecisionFeatures, kernelChunk = fast, fast, chunk
	return func() { factorOuter, runPrecisionFeatures, kernelChunk = f, r, c }
}

// FactoredProducts returns the number of factored products formed so far.
func FactoredProducts() int64 { return factoredProducts.Load() }

// HelperChunks returns the number of training chunks formed so far by
// training workers other than the first.
func HelperChunks() int64 { return helperChunks.Load() }

// RunFeatureChunks returns the number of test chunks whose feature pass
// ran in the run's precision so far.
func RunFeatureChunks() int64 { return runFeatureChunks.Load() }

// GramUpper is gramUpper, for its test against the whole product.
func GramUpper(X, size int, a, prod []float64, blocks int) { gramUpper(X, size, a, prod, blocks) }

// GramPlanCheck plans a snapshot of groups over tensors' entries and
// replays the plan: it returns, per group, the tensors added to its
// matrix while it was open or held, and the number of times each group
// was handed on, and the most matrices open at once.
func GramPlanCheck(entries [][]int, groups int) (added [][]int, closed []int, most int) {
	p := newGramPlan(entries, groups)
	added, closed = make([][]int, groups), make([]int, groups)
	open := map[int]bool{}
	for _, g := range p.held {
		open[g] = true
	}
	for _, st := range p.order {
		if st.open >= 0 {
			open[st.open] = true
		}
		most = max(most, len(open))
		if st.tensor >= 0 {
			for _, g := range entries[st.tensor] {
				if open[g] {
					added[g] = append(added[g], st.tensor)
				}
			}
		}
		for _, g := range st.close {
			closed[g]++
			delete(open, g)
		}
	}
	return added, closed, most
}
