// Package parallel splits loops over samples across the processors.
//
// The split depends only on n and GOMAXPROCS, and every range is handled by
// one goroutine in order, so results that do not reduce across ranges are
// bit-identical to a serial loop; the run store's replay relies on this.
package parallel

import (
	"runtime"
	"sync"
)

// MinWork is the work (items × cost) below which a loop runs serially:
// below it, starting goroutines costs more than it saves.
const MinWork = 1 << 15

// For calls fn on consecutive ranges covering [0, n), one per processor,
// and waits for all of them. fn must only write to per-item outputs.
func For(n int, fn func(lo, hi int)) { ForCost(n, MinWork, fn) }

// ForCost is For for items of about cost operations each: it runs fn(0, n)
// directly when n·cost is below MinWork.
func ForCost(n, cost int, fn func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 || n*cost < MinWork {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	for i := 1; i < workers; i++ {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			fn(lo, hi)
		}(n*i/workers, n*(i+1)/workers)
	}
	fn(0, n/workers)
	wg.Wait()
}
