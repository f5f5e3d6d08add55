package nn

import (
	"runtime"
	"sync"

	"github.com/explaind/explaind/internal/parallel"
)

// convChunkElems bounds the scratch (unfolded inputs and their products) of
// one chunk: 4M elements, 16 MB in float32. Such chunks keep the GEMMs large
// (thousands of columns) and the scratch small next to the activations.
const convChunkElems = 1 << 22

// chunkPlan splits n items of per scratch elements each into chunks of nb
// items for workers goroutines: as large as the scratch bound allows, and,
// when the work is worth spreading, as many per worker.
func chunkPlan(n, per int) (nb, workers int) {
	nb = max(1, min(n, convChunkElems/max(per, 1)))
	workers = min(runtime.GOMAXPROCS(0), n)
	if workers > 1 && n*per >= 8*parallel.MinWork {
		// A multiple of workers chunks of (about) equal size.
		chunks := (n + nb - 1) / nb
		chunks = (chunks + workers - 1) / workers * workers
		nb = (n + chunks - 1) / chunks
	}
	workers = max(1, min(workers, (n+nb-1)/max(nb, 1)))
	return nb, workers
}

// forChunks calls body(w, b0, cnt, par) for the chunks [b0, b0+cnt) of
// [0, n), nb items each, spread over workers goroutines: worker w takes
// chunks w, w+workers, … in order (w indexes per-worker scratch). The
// assignment is fixed, so per-worker sums are reproducible bit for bit.
// With a single worker, par is true: the body may spread its own loops over
// goroutines.
func forChunks(n, nb, workers int, body func(w, b0, cnt int, par bool)) {
	if workers <= 1 {
		for b0 := 0; b0 < n; b0 += nb {
			body(0, b0, min(nb, n-b0), true)
		}
		return
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for b0 := w * nb; b0 < n; b0 += workers * nb {
				body(w, b0, min(nb, n-b0), false)
			}
		}(w)
	}
	wg.Wait()
}

// maybeParallel is parallel.ForCost when par is set and a plain call
// otherwise (inside a chunk that already has a goroutine of its own).
func maybeParallel(par bool, n, per int, fn func(lo, hi int)) {
	if par {
		parallel.ForCost(n, per, fn)
		return
	}
	fn(0, n)
}
