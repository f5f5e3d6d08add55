package lds_test

import (
	"context"
	"math"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/experiments/lds"
)

// TestTRAK: the trak attributions equal TRAK's formula evaluated
// independently in float64 with the seed's projection matrix R (whose
// rows have norm 1: E[R Rᵀ] = I): the gradients of one sample at a time,
// Φ̃'s rows Rᵀ∇ log(p_i/(1 − p_i)) from 1 − p_i = 1 − exp(ℓ_i), the Gram
// matrix inverted by LU, and a[x, i] = φ(x)ᵀ(Φ̃ᵀΦ̃)⁻¹φ̃_i (1 − p_i).
func TestTRAK(t *testing.T) {
	r, err := expio.OpenRun(lds.Command, tinyRun(t), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Replay.Seek(r.Steps()); err != nil {
		t.Fatal(err)
	}
	idx := []int{0, 3, 5}
	tests, err := lds.NewTests(r.Session.Model, r.Data.Val, idx)
	if err != nil {
		t.Fatal(err)
	}
	const seed = 7
	got, ridge, err := lds.TRAKAttributions(context.Background(), r.Session.Model, r.Session.Params(), tests, r.Data.Train, seed)
	if err != nil {
		t.Fatal(err)
	}
	N := r.Data.Train.Len()
	k := min(lds.TRAKDim, N/2)
	if len(got) != 2 || got[0].Method != lds.TRAK || got[0].Target != lds.LogProb || got[1].Target != lds.Margin || ridge != 0 {
		t.Fatalf("%d attributions (ridge %v), want trak logprob and margin without a ridge", len(got), ridge)
	}
	var P int
	for _, p := range r.Session.Params() {
		P += len(p.Value.Data)
	}
	R := lds.Projection(P, k, seed)
	for row := range P {
		var s float64
		for j := range k {
			s += float64(R[row*k+j]) * float64(R[row*k+j])
		}
		if math.Abs(s-1) > 1e-6 {
			t.Fatalf("row %d of R has squared norm %v, want 1", row, s)
		}
	}
	project := func(g []float64) []float64 {
		out := make([]float64, k)
		for row, v := range g {
			for j := range k {
				out[j] += v * float64(R[row*k+j])
			}
		}
		return out
	}
	phi := mat.NewDense(N, k, nil) // rows Rᵀ∇ log(p_i/(1 − p_i))
	q := make([]float64, N)
	for i := range N {
		zi, yi, _ := r.Data.Train.Batch([]int{i})
		g, logp := oneGrad(t, r, zi, yi[0], -1)
		q[i] = 1 - math.Exp(float64(logp[yi[0]]))
		if !(q[i] > 1e-3) {
			t.Fatalf("training sample %d: 1 − p = %v; the test needs it well away from 0", i, q[i])
		}
		for j, v := range project(g) {
			phi.Set(i, j, v/q[i])
		}
	}
	var gram, inv mat.Dense
	gram.Mul(phi.T(), phi)
	if err := inv.Inverse(&gram); err != nil {
		t.Fatal(err)
	}
	for n, a := range got {
		var worst, scale float64
		for x := range idx {
			xs, _, _ := r.Data.Val.Batch([]int{idx[x]})
			neg := -1
			if a.Target == lds.Margin {
				neg = tests.Rival[x]
			}
			gx, _ := oneGrad(t, r, xs, tests.Labels[x], neg)
			w := mat.NewVecDense(k, nil)
			w.MulVec(&inv, mat.NewVecDense(k, project(gx)))
			for i := range N {
				want := mat.Dot(w, phi.RowView(i)) * q[i]
				scale = max(scale, math.Abs(want))
				worst = max(worst, math.Abs(a.At(x, i)-want))
				if math.IsNaN(a.At(x, i)) {
					t.Fatalf("trak %s [%d, %d] is NaN", a.Target, x, i)
				}
			}
		}
		t.Logf("trak %s: max |Δ| %.3g of max |a| %.3g (k = %d, N = %d)", a.Target, worst, scale, k, N)
		if !(scale > 0) || worst > 1e-3*scale {
			t.Errorf("trak %s (n %d): max |Δ| %v against the float64 formula, max |a| %v; want ≤ 1e-3 of it", a.Target, n, worst, scale)
		}
	}
}
