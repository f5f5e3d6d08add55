package nn_test

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/nn/nncheck"
	"github.com/explaind/explaind/tensor"
)

// randTokens returns a [b, s] array of float-coded ids in [0, vocab).
func randTokens(rng *rand.Rand, vocab, b, s int) *tensor.Dense[float64] {
	x := tensor.New[float64](b, s)
	for i := range x.Data {
		x.Data[i] = float64(rng.IntN(vocab))
	}
	return x
}

func TestEmbeddingAgainstFiniteDifferences(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, c := range []struct {
		name       string
		vocab, dim int
		scale      float64
		b, s       int
		opt        nncheck.Options
	}{
		{"plain", 7, 5, 1, 3, 4, nncheck.Options{DiscreteInput: true}},
		{"scaled K=3 M=1", 5, 3, 2.5, 4, 3, nncheck.Options{DiscreteInput: true, K: 3, M: 1}},
		{"one position M=3", 11, 4, 0.5, 2, 1, nncheck.Options{DiscreteInput: true, K: 1, M: 3}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := nn.NewEmbedding[float64]("emb", c.vocab, c.dim)
			e.Scale = c.scale
			e.InitNormal(rng)
			x := randTokens(rng, c.vocab, c.b, c.s)
			x.Data[0] = x.Data[len(x.Data)-1] // a repeated id exercises the scatter-add
			runCheck(t, e, x, c.opt)
		})
	}
}

func TestEmbeddingForwardValues(t *testing.T) {
	e := nn.NewEmbedding[float32]("emb", 3, 2)
	e.Scale = 2
	copy(e.Weight.Value.Data, []float32{1, 2, 3, 4, 5, 6})
	x, _ := tensor.FromSlice([]float32{2, 0, 1, 2}, 2, 2)
	y, _, err := e.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	want := []float32{10, 12, 2, 4, 6, 8, 10, 12}
	if !tensor.SameShape(y.Shape, []int{2, 2, 2}) || tensor.RelErr(y.Data, want) != 0 {
		t.Errorf("Forward = %v %v, want [2 2 2] %v", y.Shape, y.Data, want)
	}
	if _, err := e.Backward(nil, y, nil, true); err == nil {
		t.Error("Backward without a state: want an error")
	}
}

func TestEmbeddingBadIndex(t *testing.T) {
	e := nn.NewEmbedding[float32]("input_emb", 5, 2)
	for _, c := range []struct {
		data []float32
		want string
	}{
		{[]float32{0, 1, 5, 2}, "input[1, 0] = 5"},
		{[]float32{0, -1, 3, 2}, "input[0, 1] = -1"},
		{[]float32{0, 1, 3, 2.5}, "input[1, 1] = 2.5"},
	} {
		x, _ := tensor.FromSlice(c.data, 2, 2)
		_, _, err := e.Forward(x)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "input_emb.weight") {
			t.Errorf("input %v: got error %v, want one naming input_emb.weight and %q", c.data, err, c.want)
		}
		if _, _, err := e.JVP(x, nil, nil); err == nil {
			t.Errorf("JVP of input %v: want an error", c.data)
		}
	}
	if _, _, err := e.Forward(tensor.New[float32](2, 2, 2)); err == nil {
		t.Error("3-D input: want a shape error")
	}
}
