package nn_test

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/nn/nncheck"
	"github.com/explaind/explaind/tensor"
)

func randInput(rng *rand.Rand, shape ...int) *tensor.Dense[float64] {
	x := tensor.New[float64](shape...)
	for i := range x.Data {
		x.Data[i] = rng.NormFloat64()
	}
	return x
}

func initParams(rng *rand.Rand, l nn.Layer[float64]) {
	for _, p := range l.Params() {
		nn.FillUniform(p.Value.Data, 0.7, rng)
	}
}

func runCheck(t *testing.T, l nn.Layer[float64], x *tensor.Dense[float64], opt nncheck.Options) {
	t.Helper()
	for _, err := range nncheck.Layer(l, x, opt) {
		t.Error(err)
	}
}

func TestLayersAgainstFiniteDifferences(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cases := []struct {
		name  string
		layer nn.Layer[float64]
		in    []int
		opt   nncheck.Options
	}{
		{"Linear bias", nn.NewLinear[float64]("l", 7, 5, true), []int{3, 7}, nncheck.Options{}},
		{"Linear no bias", nn.NewLinear[float64]("l", 4, 9, false), []int{5, 4}, nncheck.Options{K: 3, M: 1}},
		{"Linear positions", nn.NewLinear[float64]("l", 6, 3, true), []int{2, 4, 6}, nncheck.Options{K: 3, M: 3}},
		{"Linear positions K=1", nn.NewLinear[float64]("l", 6, 3, true), []int{2, 5, 6}, nncheck.Options{K: 1, M: 1}},
		{"ReLU", nn.ReLU[float64]{}, []int{4, 3, 5}, nncheck.Options{}},
		{"LogSoftmax", nn.LogSoftmax[float64]{}, []int{3, 11}, nncheck.Options{K: 4}},
		{"LogSoftmax positions", nn.LogSoftmax[float64]{}, []int{2, 3, 5}, nncheck.Options{K: 2, M: 3}},
		{"Flatten", nn.Flatten[float64]{}, []int{2, 3, 4}, nncheck.Options{}},
		{"Sequential MLP", nn.NewSequential[float64](
			nn.NewLinear[float64]("0", 5, 8, true), nn.ReLU[float64]{},
			nn.NewLinear[float64]("2", 8, 3, false), nn.LogSoftmax[float64]{}), []int{4, 5}, nncheck.Options{K: 3}},
		{"Residual", &nn.Residual[float64]{Module: nn.NewSequential[float64](
			nn.NewLinear[float64]("a", 6, 6, true), nn.ReLU[float64]{})}, []int{3, 6}, nncheck.Options{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			initParams(rng, c.layer)
			runCheck(t, c.layer, randInput(rng, c.in...), c.opt)
		})
	}
}

// brokenLinear has a JVP that is off by 1%: the checker must notice.
type brokenLinear struct{ *nn.Linear[float64] }

func (b brokenLinear) JVP(x, dx *tensor.Dense[float64], t *nn.Tangents[float64]) (*tensor.Dense[float64], *tensor.Dense[float64], error) {
	y, dy, err := b.Linear.JVP(x, dx, t)
	if err == nil {
		for i := range dy.Data {
			dy.Data[i] *= 1.01
		}
	}
	return y, dy, err
}

// brokenBackward drops the bias gradient of the last row.
type brokenBackward struct{ *nn.Linear[float64] }

func (b brokenBackward) Backward(st nn.State, dy *tensor.Dense[float64], g *nn.Grads[float64], needDx bool) (*tensor.Dense[float64], error) {
	c := dy.Clone()
	n := c.Shape[len(c.Shape)-1]
	c.Data[len(c.Data)-n] += 0.5
	return b.Linear.Backward(st, c, g, needDx)
}

func TestCheckerCatchesWrongRules(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	l := nn.NewLinear[float64]("w", 4, 3, true)
	initParams(rng, l)
	x := randInput(rng, 2, 4)
	errs := nncheck.Layer(brokenLinear{l}, x, nncheck.Options{})
	if len(errs) == 0 || !strings.Contains(errs[0].Error(), "JVP") {
		t.Fatalf("a 1%% JVP error went unnoticed: %v", errs)
	}
	errs = nncheck.Layer(brokenBackward{l}, x, nncheck.Options{})
	if len(errs) == 0 || !strings.Contains(errs[0].Error(), "Backward") {
		t.Fatalf("a wrong VJP went unnoticed: %v", errs)
	}
}

func TestShapeErrors(t *testing.T) {
	l := nn.NewLinear[float32]("linear1", 4, 3, true)
	if _, _, err := l.Forward(tensor.New[float32](2, 5)); err == nil || !strings.Contains(err.Error(), "linear1") {
		t.Errorf("wrong input width: got %v, want an error naming linear1", err)
	}
	y, st, err := l.Forward(tensor.New[float32](2, 4))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Backward(st, tensor.New[float32](3, 3), nil, true); err == nil {
		t.Error("cotangent rows not a multiple of the batch: want an error")
	}
	bad := &nn.Grads[float32]{Mode: nn.Summed, Of: map[*nn.Param[float32]]*tensor.Dense[float32]{l.Weight: tensor.New[float32](4, 3)}}
	if _, err := l.Backward(st, y, bad, true); err == nil || !strings.Contains(err.Error(), "linear1.weight") {
		t.Errorf("wrongly shaped gradient buffer: got %v", err)
	}
	tan := &nn.Tangents[float32]{M: 2, Of: map[*nn.Param[float32]]*tensor.Dense[float32]{l.Bias: tensor.New[float32](3)}}
	if _, _, err := l.JVP(tensor.New[float32](2, 4), nil, tan); err == nil || !strings.Contains(err.Error(), "linear1.bias") {
		t.Errorf("wrongly shaped tangent: got %v", err)
	}
	if _, _, err := nn.NLLLoss(y, []int{0, 7}); err == nil {
		t.Error("target out of range: want an error")
	}
}
