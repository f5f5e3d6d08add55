package parallel

import "testing"

func TestForCoversEveryItemOnce(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 17, 1000} {
		for _, cost := range []int{1, MinWork} {
			seen := make([]int, n)
			ForCost(n, cost, func(lo, hi int) {
				for i := lo; i < hi; i++ {
					seen[i]++
				}
			})
			for i, c := range seen {
				if c != 1 {
					t.Fatalf("n=%d cost=%d: item %d visited %d times", n, cost, i, c)
				}
			}
		}
	}
}
