package nn_test

import (
	"math/rand/v2"
	"testing"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// TestLinearOuterFactors checks that a linear layer at one position per
// sample hands its per-row weight gradients to Grads.Outer as factors whose
// outer products dy[r]ᵀ x[r/k] are the PerRow gradients, leaves the
// weight's buffer alone, and still forms the bias's per-row gradients; and
// that at several positions per sample it forms the gradients itself.
func TestLinearOuterFactors(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range []struct {
		shape  []int
		k      int
		factor bool
	}{{[]int{3, 5}, 1, true}, {[]int{3, 5}, 2, true}, {[]int{2, 4, 5}, 1, false}} {
		l := nn.NewLinear[float64]("l", 5, 4, true)
		l.InitUniform(rng)
		x := randInput(rng, c.shape...)
		y, st, err := l.Forward(x)
		if err != nil {
			t.Fatal(err)
		}
		b := c.shape[0]
		dy := randInput(rng, append([]int{b * c.k}, y.Shape[1:]...)...)
		want := nn.NewGrads(nn.PerRow, l.Params(), b*c.k)
		if _, err := l.Backward(st, dy, want, false); err != nil {
			t.Fatal(err)
		}
		got := nn.NewGrads(nn.PerRow, l.Params(), b*c.k)
		calls := 0
		got.Outer = map[*nn.Param[float64]]func(dy, x []float64, b, k int){l.Weight: func(d, xs []float64, bb, kk int) {
			calls++
			if bb != b || kk != c.k || len(d) != b*c.k*4 || len(xs) != b*5 {
				t.Fatalf("Outer got b %d, k %d, %d and %d values", bb, kk, len(d), len(xs))
			}
			for r := 0; r < bb*kk; r++ {
				for o := 0; o < 4; o++ {
					for i := 0; i < 5; i++ {
						got.Of[l.Weight].Data[(r*4+o)*5+i] += d[r*4+o] * xs[(r/kk)*5+i]
					}
				}
			}
		}}
		if _, err := l.Backward(st, dy, got, false); err != nil {
			t.Fatal(err)
		}
		if c.factor != (calls == 1) {
			t.Errorf("input %v, k %d: Outer called %d times", c.shape, c.k, calls)
		}
		for _, p := range l.Params() {
			if e := tensor.RelErr(got.Of[p].Data, want.Of[p].Data); !(e <= 1e-15) {
				t.Errorf("input %v, k %d: %s's per-row gradients differ by %.3g", c.shape, c.k, p.Name, e)
			}
		}
	}
}
