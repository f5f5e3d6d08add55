package nn

import (
	"unsafe"

	"github.com/explaind/explaind/internal/parallel"
	"github.com/explaind/explaind/tensor"
)

// relu sets dst = max(src, 0) without branches (their outcome is a coin
// flip after a convolution): negative numbers and −0 become +0.
func relu[T tensor.Float](dst, src []T) {
	switch d := any(dst).(type) {
	case []float32:
		di, si := bits32(d), bits32(any(src).([]float32))
		si = si[:len(di)]
		for i, v := range si {
			di[i] = v &^ (v >> 31)
		}
	case []float64:
		di, si := bits64(d), bits64(any(src).([]float64))
		si = si[:len(di)]
		for i, v := range si {
			di[i] = v &^ (v >> 63)
		}
	}
}

// maskPositive sets dst = src where y > 0 and 0 elsewhere, without
// branches; dst may be src.
func maskPositive[T tensor.Float](dst, src, y []T) {
	switch d := any(dst).(type) {
	case []float32:
		di, si, yi := bits32(d), bits32(any(src).([]float32)), bits32(any(y).([]float32))
		si, yi = si[:len(di)], yi[:len(di)]
		for i, v := range yi {
			// v > 0 as a float (not ±0, not negative) iff v−1 and v are
			// both non-negative as integers.
			di[i] = si[i] &^ (((v - 1) | v) >> 31)
		}
	case []float64:
		di, si, yi := bits64(d), bits64(any(src).([]float64)), bits64(any(y).([]float64))
		si, yi = si[:len(di)], yi[:len(di)]
		for i, v := range yi {
			di[i] = si[i] &^ (((v - 1) | v) >> 63)
		}
	}
}

// maskRowsPositive applies maskPositive to k rows of n values per sample
// of y, row r against sample r/k, over goroutines.
func maskRowsPositive[T tensor.Float](dst, src, y []T, n, k int) {
	parallel.ForCost(len(src)/n, n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			maskPositive(dst[r*n:(r+1)*n], src[r*n:(r+1)*n], y[(r/k)*n:(r/k+1)*n])
		}
	})
}

// bits32 and bits64 view float slices as signed integers of the same bits.
func bits32(v []float32) []int32 {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*int32)(unsafe.Pointer(&v[0])), len(v))
}

func bits64(v []float64) []int64 {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*int64)(unsafe.Pointer(&v[0])), len(v))
}
