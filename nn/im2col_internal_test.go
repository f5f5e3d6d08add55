package nn

import (
	"math"
	"testing"
)

// TestShiftCopy checks shiftCopy against its definition, dst[oh, ow] =
// src[oh+dh, ow+dw] and zero outside src, for equal and unequal row
// lengths and every shift that leaves some, all or none of the source in
// range; dst starts as NaN so that a value it fails to write shows.
func TestShiftCopy(t *testing.T) {
	for _, sz := range [][4]int{{5, 5, 5, 5}, {4, 7, 4, 7}, {3, 3, 4, 4}, {6, 5, 3, 3}, {1, 1, 1, 1}, {7, 2, 7, 2}} {
		ho, wo, hs, ws := sz[0], sz[1], sz[2], sz[3]
		src := make([]float64, hs*ws)
		for i := range src {
			src[i] = float64(i + 1)
		}
		for dh := -ho - 1; dh <= hs+1; dh++ {
			for dw := -wo - 1; dw <= ws+1; dw++ {
				dst := make([]float64, ho*wo)
				for i := range dst {
					dst[i] = math.NaN()
				}
				shiftCopy(dst, ho, wo, src, hs, ws, dh, dw)
				for oh := 0; oh < ho; oh++ {
					for ow := 0; ow < wo; ow++ {
						want := 0.0
						if r, c := oh+dh, ow+dw; r >= 0 && r < hs && c >= 0 && c < ws {
							want = src[r*ws+c]
						}
						if got := dst[oh*wo+ow]; got != want {
							t.Fatalf("%d×%d from %d×%d shifted (%d, %d): dst[%d, %d] = %v, want %v", ho, wo, hs, ws, dh, dw, oh, ow, got, want)
						}
					}
				}
			}
		}
	}
}
