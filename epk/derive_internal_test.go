package epk

import (
	"math"
	"slices"
	"testing"

	"github.com/explaind/explaind/tensor"
)

// TestIdentityRows checks which cotangents count as holding the identity:
// a unit row e_c for every class, in the same row for every sample.
func TestIdentityRows(t *testing.T) {
	shared := dense([]float64{
		1, 1, 1, // the class sum
		0, 0, 1, // e_2
		1, 0, 0, // e_0
		0, 1, 0, // e_1
	}, 4, 3)
	perSample := tensor.New[float64](2, 2, 2)
	copy(perSample.Data, []float64{1, 0, 0, 1, 1, 0, 0, 1})
	moved := perSample.Clone() // sample 1 has e_1 and e_0 swapped
	copy(moved.Data[4:], []float64{0, 1, 1, 0})
	lacking := dense([]float64{1, 0, 0, 2}, 2, 2)
	nan := dense([]float64{1, 0, 0, math.NaN()}, 2, 2)
	for _, c := range []struct {
		name string
		cot  *tensor.Dense[float64]
		want []int
	}{
		{"nil (the identity)", nil, []int{}},
		{"shared, among other rows", shared, []int{2, 3, 1}},
		{"per sample", perSample, []int{0, 1}},
		{"per sample, rows differ between samples", moved, nil},
		{"a class without a unit row", lacking, nil},
		{"NaN", nan, nil},
		{"per sample, wrong batch", tensor.New[float64](3, 2, 2), nil},
	} {
		got := identityRows(c.cot, 2)
		if (got == nil) != (c.want == nil) || !slices.Equal(got, c.want) {
			t.Errorf("%s: identity rows %v, want %v", c.name, got, c.want)
		}
	}
}

func dense(data []float64, shape ...int) *tensor.Dense[float64] {
	return &tensor.Dense[float64]{Shape: shape, Data: data}
}

// TestLobattoPlan checks the Gauss–Lobatto rules (exact for polynomials of
// degree 2n−3 on [0, 1], ends included) and that a plan of Simpson
// intervals holds each shared end once, with the weights of both
// neighbours: its nodes are increasing and integrate a cubic exactly.
func TestLobattoPlan(t *testing.T) {
	for n := 2; n <= 4; n++ {
		ts, ws := LobattoRule(n)
		if ts[0] != 0 || ts[n-1] != 1 {
			t.Errorf("%d points: nodes %v do not start at 0 and end at 1", n, ts)
		}
		for d := 0; d <= 2*n-3; d++ {
			got := 0.0
			for i := range ts {
				got += ws[i] * math.Pow(ts[i], float64(d))
			}
			if want := 1 / float64(d+1); math.Abs(got-want) > 1e-15 {
				t.Errorf("%d points: ∫ t^%d = %.17g, want %.17g", n, d, got, want)
			}
		}
	}
	breaks := [][]float64{{0.3, 0.1, 0.55}, nil}
	q := Quadrature{Rule: Adaptive, Points: 3, Ends: true}
	p := piecewisePlan(Adaptive, q, breaks)
	cubic := func(x float64) float64 { return 4*x*x*x - 3*x*x + 2*x - 1 } // ∫_0^1 = 1 − 1 + 1 − 1 = 0
	if got, want := len(p.Nodes), (4*2+1)+(1*2+1); got != want {
		t.Errorf("%d nodes, want %d (2 per interval and one more per sample)", got, want)
	}
	for b := range breaks {
		sum, last := 0.0, -1.0
		for _, nd := range p.Nodes {
			if nd.Sample != b {
				continue
			}
			if !(nd.T > last) {
				t.Errorf("sample %d: node %g after %g", b, nd.T, last)
			}
			last = nd.T
			sum += nd.W * cubic(nd.T)
		}
		if math.Abs(sum) > 1e-15 || last != 1 {
			t.Errorf("sample %d: Σ w·cubic = %.3g, want 0; last node %g, want 1", b, sum, last)
		}
	}
}
