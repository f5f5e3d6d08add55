package nn_test

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/nn/nncheck"
	"github.com/explaind/explaind/tensor"
)

func newHeads(t *testing.T, heads, d, dh int, last bool) *nn.AttentionHeads[float64] {
	t.Helper()
	var enc, dec []string
	for h := 0; h < heads; h++ {
		enc = append(enc, "enc"+string(rune('1'+h))+".weight")
		dec = append(dec, "dec"+string(rune('1'+h))+".weight")
	}
	a, err := nn.NewAttentionHeads[float64](enc, dec, d, dh, last)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAttentionAgainstFiniteDifferences(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, c := range []struct {
		name         string
		heads, d, dh int
		last         bool
		b, s         int
		opt          nncheck.Options
	}{
		{"one head last", 1, 5, 3, true, 3, 5, nncheck.Options{K: 3, M: 2}},
		{"two heads last", 2, 7, 3, true, 3, 3, nncheck.Options{K: 2, M: 3}},
		{"two heads last K=1 M=1", 2, 5, 3, true, 2, 4, nncheck.Options{K: 1, M: 1}},
		{"two heads all", 2, 5, 3, false, 3, 3, nncheck.Options{K: 3, M: 2}},
		{"three heads all K=1 M=1", 3, 7, 1, false, 2, 5, nncheck.Options{K: 1, M: 1}},
		{"one position", 2, 3, 5, true, 2, 1, nncheck.Options{K: 2, M: 2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := newHeads(t, c.heads, c.d, c.dh, c.last)
			initParams(rng, a)
			runCheck(t, a, randInput(rng, c.b, c.s, c.d), c.opt)
		})
	}
}

// TestAttentionLargeBatch runs the parallel paths (enough work for several
// goroutines) and compares them with sample-by-sample evaluation.
func TestAttentionLargeBatch(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	a := newHeads(t, 2, 6, 3, true)
	initParams(rng, a)
	const b, s, k, m = 1500, 4, 2, 2
	x := randInput(rng, b, s, 6)
	y, st, err := a.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	dy := randInput(rng, b*k, 6)
	pr := nn.NewGrads(nn.PerRow, a.Params(), b*k)
	dx, err := a.Backward(st, dy, pr, true)
	if err != nil {
		t.Fatal(err)
	}
	tan := &nn.Tangents[float64]{M: m, Of: map[*nn.Param[float64]]*tensor.Dense[float64]{}}
	for _, p := range a.Params() {
		tan.Of[p] = randInput(rng, append([]int{m}, p.Value.Shape...)...)
	}
	dxt := randInput(rng, b*m, s, 6)
	_, dyt, err := a.JVP(x, dxt, tan)
	if err != nil {
		t.Fatal(err)
	}
	for _, bb := range []int{0, 137, b / 2, b - 1} {
		xb := &tensor.Dense[float64]{Shape: []int{1, s, 6}, Data: x.Data[bb*s*6 : (bb+1)*s*6]}
		yb, stb, err := a.Forward(xb)
		if err != nil {
			t.Fatal(err)
		}
		if e := tensor.RelErr(yb.Data, y.Data[bb*6:(bb+1)*6]); e > 1e-14 {
			t.Errorf("sample %d: output differs by %.3g", bb, e)
		}
		dxtb := &tensor.Dense[float64]{Shape: []int{m, s, 6}, Data: dxt.Data[bb*m*s*6 : (bb+1)*m*s*6]}
		_, dytb, err := a.JVP(xb, dxtb, tan)
		if err != nil {
			t.Fatal(err)
		}
		if e := tensor.RelErr(dytb.Data, dyt.Data[bb*m*6:(bb+1)*m*6]); e > 1e-14 {
			t.Errorf("sample %d: JVP differs by %.3g", bb, e)
		}
		dyb := &tensor.Dense[float64]{Shape: []int{k, 6}, Data: dy.Data[bb*k*6 : (bb+1)*k*6]}
		prb := nn.NewGrads(nn.PerRow, a.Params(), k)
		dxb, err := a.Backward(stb, dyb, prb, true)
		if err != nil {
			t.Fatal(err)
		}
		if e := tensor.RelErr(dxb.Data, dx.Data[bb*k*s*6:(bb+1)*k*s*6]); e > 1e-14 {
			t.Errorf("sample %d: input cotangent differs by %.3g", bb, e)
		}
		for _, p := range a.Params() {
			n := k * p.Value.Numel()
			if e := tensor.RelErr(prb.Of[p].Data, pr.Of[p].Data[bb*n:(bb+1)*n]); e > 1e-14 {
				t.Errorf("sample %d: per-row gradient of %s differs by %.3g", bb, p.Name, e)
			}
		}
	}
}

// TestAttentionByHand checks one head against a direct evaluation of
// softmax(q kᵀ/sqrt(dh)) v at the last position.
func TestAttentionByHand(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const d, dh, s = 4, 2, 3
	a := newHeads(t, 1, d, dh, true)
	initParams(rng, a)
	x := randInput(rng, 1, s, d)
	y, _, err := a.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	enc, dec := a.Encoders[0].Value.Data, a.Decoders[0].Value.Data
	z := make([][dh]float64, s)
	for j := range z {
		for e := 0; e < dh; e++ {
			for i := 0; i < d; i++ {
				z[j][e] += x.Data[j*d+i] * enc[e*d+i]
			}
		}
	}
	var w [s]float64
	var sum float64
	for j := range z {
		w[j] = math.Exp((z[s-1][0]*z[j][0] + z[s-1][1]*z[j][1]) / math.Sqrt(dh))
		sum += w[j]
	}
	var o [dh]float64
	for j := range z {
		for e := range o {
			o[e] += w[j] / sum * z[j][e]
		}
	}
	want := make([]float64, d)
	for i := range want {
		for e := range o {
			want[i] += dec[i*dh+e] * o[e]
		}
	}
	if e := tensor.RelErr(y.Data, want); e > 1e-14 {
		t.Errorf("Forward = %v, want %v", y.Data, want)
	}
}

func TestAttentionErrors(t *testing.T) {
	if _, err := nn.NewAttentionHeads[float32]([]string{"a"}, nil, 4, 2, true); err == nil {
		t.Error("mismatched names: want an error")
	}
	if _, err := nn.NewAttentionHead[float32]("a", "b", 4, 0, true); err == nil {
		t.Error("zero head width: want an error")
	}
	a, err := nn.NewAttentionHead[float32]("head1_encoder.weight", "head1_decoder.weight", 4, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Forward(tensor.New[float32](2, 3, 5)); err == nil {
		t.Error("wrong width: want an error")
	}
	y, st, err := a.Forward(tensor.New[float32](2, 3, 4))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Backward(st, tensor.New[float32](2, 3, 4), nil, true); err == nil {
		t.Error("cotangent with a position axis in last-only mode: want an error")
	}
	if _, err := a.Backward(st, y, nil, true); err != nil {
		t.Error(err)
	}
	a.Decoders[0].Value = tensor.New[float32](2, 4)
	if _, _, err := a.Forward(tensor.New[float32](2, 3, 4)); err == nil || !strings.Contains(err.Error(), "head1_decoder.weight") {
		t.Errorf("decoder of shape [2 4]: got %v, want an error naming it", err)
	}
}
