package nn_test

import (
	"math"
	"strings"
	"testing"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// checkGroupedBackward checks a layer's PathBackwardGrouped, run(g, needDx)
// for groups over nGroups and K = k cotangents per sample, against
// PathBackward at the same state: its per-row gradients perRow and input
// cotangent dxWant. dx must be PathBackward's; the gradients of the
// parameters asked for (and only those) the per-row gradients summed per
// group, within tol relative to the largest (empty groups stay zero); and
// without dx a second call must add the same gradients (+=).
func checkGroupedBackward(t *testing.T, run func(g *nn.Grads[float64], needDx bool) (*tensor.Dense[float64], error), asked []*nn.Param[float64], perRow *nn.Grads[float64], dxWant *tensor.Dense[float64], groups []int, nGroups, k int, tol float64) {
	t.Helper()
	grouped := nn.NewGrads(nn.PerRow, asked, nGroups*k)
	dx, err := run(grouped, true)
	if err != nil {
		t.Fatal(err)
	}
	if d := tensor.RelErr(dx.Data, dxWant.Data); d != 0 || !tensor.SameShape(dx.Shape, dxWant.Shape) {
		t.Errorf("dx %v differs from PathBackward's %v by %.3g", dx.Shape, dxWant.Shape, d)
	}
	if len(grouped.Of) != len(asked) {
		t.Errorf("filled %d parameters, want the %d asked for", len(grouped.Of), len(asked))
	}
	for _, p := range asked {
		size := len(p.Value.Data)
		want := make([]float64, nGroups*k*size)
		for bb, gi := range groups {
			tensor.AddScaled(want[gi*k*size:(gi+1)*k*size], 1, perRow.Of[p].Data[bb*k*size:(bb+1)*k*size])
		}
		var worst, norm float64
		for i, v := range grouped.Of[p].Data {
			worst = math.Max(worst, math.Abs(v-want[i]))
			norm = math.Max(norm, math.Abs(want[i]))
		}
		if norm == 0 {
			t.Fatalf("%s: the per-row gradients are all zero; the test checks nothing", p.Name)
		}
		if !(worst <= tol*norm) {
			t.Errorf("%s: grouped gradients differ from the per-group sums of the per-row gradients by %.3g (max |want| %.3g)", p.Name, worst, norm)
		}
	}
	// Without dx, the gradients are the same and are added (+=).
	if out, err := run(grouped, false); err != nil || out != nil {
		t.Fatalf("without dx: got %v, %v; want nil, nil", out, err)
	}
	once := nn.NewGrads(nn.PerRow, asked, nGroups*k)
	if _, err := run(once, false); err != nil {
		t.Fatal(err)
	}
	for _, p := range asked {
		for i, v := range once.Of[p].Data {
			if d := math.Abs(grouped.Of[p].Data[i] - 2*v); !(d <= tol*math.Max(1, math.Abs(v))) {
				t.Fatalf("%s[%d]: two calls gave %v, want 2 × %v", p.Name, i, grouped.Of[p].Data[i], v)
			}
		}
	}
}

// checkGroupedErrors checks that a layer's PathBackwardGrouped, run(g,
// groups, nGroups), refuses the arguments every grouped backward pass
// refuses, for 4 samples in 2 groups and K = k: groups that decrease,
// leave [0, 2) or do not cover the samples, Summed buffers, and PerRow
// buffers over 3 groups (an error mentioning bufErr). params are the
// layer's parameters.
func checkGroupedErrors(t *testing.T, run func(g *nn.Grads[float64], groups []int, nGroups int) error, params []*nn.Param[float64], k int, bufErr string) {
	t.Helper()
	perGroups := func(n int) *nn.Grads[float64] { return nn.NewGrads(nn.PerRow, params, n*k) }
	for _, c := range []struct {
		name    string
		g       *nn.Grads[float64]
		groups  []int
		nGroups int
		want    string
	}{
		{"decreasing", perGroups(2), []int{0, 1, 0, 1}, 2, "nondecreasing in [0, 2)"},
		{"too large", perGroups(2), []int{0, 0, 1, 2}, 2, "nondecreasing in [0, 2)"},
		{"negative", perGroups(2), []int{-1, 0, 1, 1}, 2, "nondecreasing in [0, 2)"},
		{"too few", perGroups(2), []int{0, 0, 1}, 2, "3 groups for 4 samples"},
		{"summed", nn.NewGrads(nn.Summed, params, 0), []int{0, 0, 1, 1}, 2, "PerRow"},
		{"buffer", perGroups(3), []int{0, 0, 1, 1}, 2, bufErr},
	} {
		if err := run(c.g, c.groups, c.nGroups); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", c.name, err, c.want)
		}
	}
}
