package nn_test

import (
	"testing"

	"github.com/explaind/explaind/nn"
)

// counted is a layer that reports its own working set.
type counted struct{ nn.Flatten[float64] }

func (counted) ForwardValues(in []int) (int, error) { return 1000 * in[0], nil }

// TestForwardValues counts a small CNN by hand: every layer's output, a
// convolution's unfolded columns, a residual's sum, and a layer that
// counts itself.
func TestForwardValues(t *testing.T) {
	conv := nn.NewConv2d[float64]("c", 2, 4, 3, 2, 1)                               // 2×9×9 → 4×5×5, columns 2·9·25
	res := &nn.Residual[float64]{Module: nn.NewConv2d[float64]("r", 4, 4, 3, 1, 1)} // 4×5×5, columns 4·9·25, and the sum
	net := nn.NewSequential[float64](conv, res, nn.NewMaxPool2d[float64](2, 2), nn.Flatten[float64]{},
		nn.NewLinear[float64]("l", 16, 3, true), counted{})
	per := (4*25 + 2*9*25) + (4*25 + 4*9*25 + 4*25) + 4*2*2 + 16 + 3 + 1000
	for _, b := range []int{1, 3} {
		got, err := nn.ForwardValues[float64](net, []int{b, 2, 9, 9})
		if err != nil {
			t.Fatal(err)
		}
		if got != b*per {
			t.Errorf("batch %d: %d values, want %d", b, got, b*per)
		}
	}
	if _, err := nn.ForwardValues[float64](net, []int{1, 3, 9, 9}); err == nil {
		t.Error("3 channels into a 2-channel convolution: no error")
	}
}
