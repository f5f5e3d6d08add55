package nn

import (
	"fmt"

	"github.com/explaind/explaind/tensor"
)

// rowGroups assigns each sample of a batch to a group: the layers'
// PathBackwardGrouped sum the gradients of a group's samples.
type rowGroups struct {
	of []int // the group of each sample, nondecreasing
	n  int   // the number of groups
}

// check verifies that the groups cover b samples, nondecreasing in [0, n).
func (r *rowGroups) check(b int) error {
	if len(r.of) != b {
		return fmt.Errorf("%d groups for %d samples", len(r.of), b)
	}
	for i, gi := range r.of {
		if gi < 0 || gi >= r.n || (i > 0 && gi < r.of[i-1]) {
			return fmt.Errorf("groups must be nondecreasing in [0, %d)", r.n)
		}
	}
	return nil
}

// distinct reports whether no two samples share a group (true for nil,
// where every sample is its own).
func (r *rowGroups) distinct() bool {
	if r == nil {
		return true
	}
	for i := 1; i < len(r.of); i++ {
		if r.of[i] == r.of[i-1] {
			return false
		}
	}
	return true
}

// runs calls fn for each maximal run [lo, hi) of samples in one group.
func (r *rowGroups) runs(fn func(lo, hi, group int)) {
	for lo := 0; lo < len(r.of); {
		hi := lo + 1
		for hi < len(r.of) && r.of[hi] == r.of[lo] {
			hi++
		}
		fn(lo, hi, r.of[lo])
		lo = hi
	}
}

// swapK reorders v from [B, K, S, H, N] to [B, S, H, K, N], putting the K
// cotangents of one sample, position and head side by side. It returns v
// itself when the order does not change (K = 1, or S = H = 1).
func swapK[T tensor.Float](v []T, b, k, s, h, n int) []T {
	if k == 1 || (s == 1 && h == 1) {
		return v
	}
	out := make([]T, len(v))
	for bb := 0; bb < b; bb++ {
		for kk := 0; kk < k; kk++ {
			for t := 0; t < s; t++ {
				for hh := 0; hh < h; hh++ {
					src := (((bb*k+kk)*s+t)*h + hh) * n
					dst := (((bb*s+t)*h+hh)*k + kk) * n
					copy(out[dst:dst+n], v[src:src+n])
				}
			}
		}
	}
	return out
}
