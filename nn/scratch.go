package nn

import (
	"math/bits"
	"sync"

	"github.com/explaind/explaind/tensor"
)

// scratchPools recycle large scratch slices that live only within one
// call (the unfolded inputs of convolutions, the intermediates of the path
// rules), per element type and power-of-two capacity, sparing the
// allocator, the zeroing and the page faults of fresh memory. A slice from
// getScratch holds arbitrary values: its user overwrites (or clears) it
// before reading, and hands it back with putScratch only when nothing
// refers to it any more.
var scratchPools [2][64]sync.Pool

func scratchPool[T tensor.Float](class int) *sync.Pool {
	var z T
	if _, ok := any(z).(float32); ok {
		return &scratchPools[0][class]
	}
	return &scratchPools[1][class]
}

// getScratch returns a slice of n elements with arbitrary contents.
func getScratch[T tensor.Float](n int) []T {
	class := bits.Len(uint(max(n, 1) - 1))
	if p, ok := scratchPool[T](class).Get().(*[]T); ok {
		return (*p)[:n]
	}
	return make([]T, n, 1<<class)
}

// putScratch hands s, from getScratch, back for reuse.
func putScratch[T tensor.Float](s []T) {
	class := bits.Len(uint(cap(s) - 1))
	if cap(s) != 1<<class {
		return // not from getScratch
	}
	scratchPool[T](class).Put(&s)
}
