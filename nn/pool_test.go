package nn_test

import (
	"math/rand/v2"
	"testing"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/nn/nncheck"
	"github.com/explaind/explaind/tensor"
)

func TestPoolsAgainstFiniteDifferences(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	cases := []struct {
		name  string
		layer nn.Layer[float64]
		in    []int
		opt   nncheck.Options
	}{
		{"MaxPool2d even", nn.NewMaxPool2d[float64](2, 2), []int{2, 3, 6, 4}, nncheck.Options{}},
		{"MaxPool2d odd", nn.NewMaxPool2d[float64](2, 2), []int{3, 2, 7, 5}, nncheck.Options{K: 3, M: 1}},
		{"MaxPool2d 2x3", nn.NewMaxPool2d[float64](2, 2), []int{1, 1, 2, 3}, nncheck.Options{K: 1, M: 3}},
		{"MaxPool2d overlapping", nn.NewMaxPool2d[float64](3, 2), []int{2, 2, 7, 8}, nncheck.Options{}},
		{"MaxPool2d large", nn.NewMaxPool2d[float64](2, 2), []int{4, 16, 33, 31}, nncheck.Options{K: 2, M: 2}},
		{"AdaptiveMaxPool2d", nn.AdaptiveMaxPool2d[float64]{}, []int{3, 4, 5, 3}, nncheck.Options{K: 3, M: 2}},
		{"AdaptiveMaxPool2d 1x1", nn.AdaptiveMaxPool2d[float64]{}, []int{2, 3, 1, 1}, nncheck.Options{}},
		{"AdaptiveMaxPool2d large", nn.AdaptiveMaxPool2d[float64]{}, []int{4, 32, 15, 17}, nncheck.Options{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			runCheck(t, c.layer, randInput(rng, c.in...), c.opt)
		})
	}
}

func TestMaxPoolForwardMatchesDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 9))
	x := randInput(rng, 2, 3, 7, 5)
	y, _, err := nn.NewMaxPool2d[float64](2, 2).Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	if !tensor.SameShape(y.Shape, []int{2, 3, 3, 2}) {
		t.Fatalf("shape %v, want floor mode [2 3 3 2]", y.Shape)
	}
	for p := 0; p < 6; p++ {
		for i := 0; i < 3; i++ {
			for j := 0; j < 2; j++ {
				mx := x.Data[p*35+(2*i)*5+2*j]
				for _, d := range [][2]int{{0, 1}, {1, 0}, {1, 1}} {
					mx = max(mx, x.Data[p*35+(2*i+d[0])*5+2*j+d[1]])
				}
				if got := y.Data[p*6+i*2+j]; got != mx {
					t.Errorf("plane %d window (%d, %d): %g, want %g", p, i, j, got, mx)
				}
			}
		}
	}
	g, _, err := nn.AdaptiveMaxPool2d[float64]{}.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	if !tensor.SameShape(g.Shape, []int{2, 3, 1, 1}) {
		t.Fatalf("shape %v, want [2 3 1 1]", g.Shape)
	}
	for p := 0; p < 6; p++ {
		mx := x.Data[p*35]
		for _, v := range x.Data[p*35 : (p+1)*35] {
			mx = max(mx, v)
		}
		if g.Data[p] != mx {
			t.Errorf("plane %d: %g, want %g", p, g.Data[p], mx)
		}
	}
}

// TestMaxPoolTies: after a ReLU whole windows are 0. PyTorch's CPU kernels
// take the first maximum in row-major order, so the gradient (and the
// tangent) of a tied window is that of its first element only.
func TestMaxPoolTies(t *testing.T) {
	// One 4×5 plane (the last column is dropped by floor mode):
	//   0 0 | 3 3 | 9
	//   0 0 | 1 3 | 9
	//   -----------
	//   2 5 | 7 7 | 9
	//   5 1 | 7 0 | 9
	x, _ := tensor.FromSlice([]float64{
		0, 0, 3, 3, 9,
		0, 0, 1, 3, 9,
		2, 5, 7, 7, 9,
		5, 1, 7, 0, 9,
	}, 1, 1, 4, 5)
	pool := nn.NewMaxPool2d[float64](2, 2)
	y, st, err := pool.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	if want := []float64{0, 3, 5, 7}; tensor.RelErr(y.Data, want) != 0 {
		t.Fatalf("outputs %v, want %v", y.Data, want)
	}
	dy, _ := tensor.FromSlice([]float64{1, 2, 3, 4, 10, 20, 30, 40}, 2, 1, 2, 2) // K = 2
	dx, err := pool.Backward(st, dy, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{
		1, 0, 2, 0, 0,
		0, 0, 0, 0, 0,
		0, 3, 4, 0, 0,
		0, 0, 0, 0, 0,

		10, 0, 20, 0, 0,
		0, 0, 0, 0, 0,
		0, 30, 40, 0, 0,
		0, 0, 0, 0, 0,
	}
	if !tensor.SameShape(dx.Shape, []int{2, 1, 4, 5}) || tensor.RelErr(dx.Data, want) != 0 {
		t.Errorf("input cotangent %v %v, want %v", dx.Shape, dx.Data, want)
	}
	u := tensor.New[float64](1, 1, 4, 5)
	for i := range u.Data {
		u.Data[i] = float64(i + 1)
	}
	_, du, err := pool.JVP(x, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []float64{1, 3, 12, 13}; tensor.RelErr(du.Data, want) != 0 {
		t.Errorf("tangent %v, want %v", du.Data, want)
	}

	// An all-zero plane sends the global pool's gradient to its first element.
	z := tensor.New[float64](2, 2, 3, 3)
	z.Data[9+4] = -1 // plane (0, 1) has zeros and a −1: first zero wins
	ag := nn.AdaptiveMaxPool2d[float64]{}
	_, st, err = ag.Forward(z)
	if err != nil {
		t.Fatal(err)
	}
	dg, err := ag.Backward(st, &tensor.Dense[float64]{Shape: []int{2, 2, 1, 1}, Data: []float64{1, 2, 3, 4}}, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	for p := 0; p < 4; p++ {
		for i := 0; i < 9; i++ {
			w := 0.0
			if i == 0 {
				w = float64(p + 1)
			}
			if dg.Data[p*9+i] != w {
				t.Errorf("plane %d element %d: gradient %g, want %g", p, i, dg.Data[p*9+i], w)
			}
		}
	}
}

func TestPoolShapeErrors(t *testing.T) {
	pool := nn.NewMaxPool2d[float32](2, 2)
	for _, in := range [][]int{{2, 3, 1, 4}, {2, 3, 4, 1}, {3, 4, 4}, {1, 2, 3, 4, 5}} {
		if _, err := pool.OutShape(in); err == nil {
			t.Errorf("MaxPool2d.OutShape(%v): want an error", in)
		}
		if _, _, err := pool.Forward(tensor.New[float32](in...)); err == nil {
			t.Errorf("MaxPool2d.Forward(%v): want an error", in)
		}
	}
	if _, err := nn.NewMaxPool2d[float32](0, 2).OutShape([]int{1, 1, 4, 4}); err == nil {
		t.Error("kernel 0: want an error")
	}
	ag := nn.AdaptiveMaxPool2d[float32]{}
	for _, in := range [][]int{{2, 3, 0, 4}, {3, 4}} {
		if _, _, err := ag.Forward(tensor.New[float32](in...)); err == nil {
			t.Errorf("AdaptiveMaxPool2d.Forward(%v): want an error", in)
		}
	}
	y, st, err := pool.Forward(tensor.New[float32](2, 3, 5, 5))
	if err != nil {
		t.Fatal(err)
	}
	if !tensor.SameShape(y.Shape, []int{2, 3, 2, 2}) {
		t.Fatalf("shape %v", y.Shape)
	}
	if _, err := pool.Backward(st, tensor.New[float32](3, 3, 2, 2), nil, true); err == nil {
		t.Error("cotangent rows not a multiple of the batch: want an error")
	}
	if _, err := pool.Backward(st, tensor.New[float32](2, 3, 2, 3), nil, true); err == nil {
		t.Error("cotangent of another shape: want an error")
	}
	if _, _, err := pool.JVP(tensor.New[float32](2, 3, 5, 5), tensor.New[float32](2, 3, 5, 4), nil); err == nil {
		t.Error("input tangent of another shape: want an error")
	}
}
