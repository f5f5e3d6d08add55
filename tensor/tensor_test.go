package tensor

import (
	"math"
	"slices"
	"testing"
)

func TestShapesAndViews(t *testing.T) {
	a := New[float32](2, 3)
	if a.Numel() != 6 || a.Dim(-1) != 3 || Numel(nil) != 1 {
		t.Fatalf("sizes: %d %d %d", a.Numel(), a.Dim(-1), Numel(nil))
	}
	v, err := a.Reshape(3, 2)
	if err != nil {
		t.Fatal(err)
	}
	v.Data[5] = 7
	if a.Data[5] != 7 {
		t.Error("Reshape must be a view")
	}
	if _, err := a.Reshape(4, 2); err == nil {
		t.Error("reshape to a different size: want an error")
	}
	if _, err := FromSlice([]float64{1, 2, 3}, 2, 2); err == nil {
		t.Error("3 values as 2×2: want an error")
	}
	c := a.Clone()
	c.Data[0] = 1
	if a.Data[0] != 0 {
		t.Error("Clone must copy")
	}
	if d := Convert[float64](a); d.Data[5] != 7 || !SameShape(d.Shape, a.Shape) {
		t.Errorf("Convert: %v", d)
	}
}

func TestRelErr(t *testing.T) {
	if e := RelErr([]float32{1, 2.002}, []float64{1, 2}); !(math.Abs(e-0.001) <= 1e-6) {
		t.Errorf("RelErr = %v, want 0.001", e)
	}
	if e := RelErr([]float32{1}, []float64{1, 2}); !math.IsInf(e, 1) {
		t.Errorf("mismatched lengths: %v, want +Inf", e)
	}
	if e := RelErr([]float64{math.NaN()}, []float64{1}); !math.IsInf(e, 1) {
		t.Errorf("NaN must not pass: %v", e)
	}
	dst := []float64{1, 1}
	AddScaled(dst, 2, []float64{1, 3})
	if dst[0] != 3 || dst[1] != 7 {
		t.Errorf("AddScaled: %v", dst)
	}
	AddScaled(dst, 2, nil) // an empty source is fine
}

// TestAddScaled2 checks it against plain loops for lengths up to 11.
func TestAddScaled2(t *testing.T) {
	for n := 0; n <= 11; n++ {
		a := make([]float32, n)
		b := make([]float32, n+2) // the destinations are longer than src
		for i := range b {
			b[i] = float32(i%5) - 1.75
			if i < n {
				a[i] = float32(i*i%7) + 0.5
			}
		}
		d0, d1 := slices.Clone(b), slices.Clone(b)
		AddScaled2(d0, d1, 2, -0.5, a)
		if !slices.Equal(d0[n:], b[n:]) || !slices.Equal(d1[n:], b[n:]) {
			t.Fatalf("n=%d: AddScaled2 wrote beyond len(src)", n)
		}
		for i := range a {
			// float32 rounding (or a fused multiply-add) within 1e-6.
			if w0, w1 := float64(b[i])+2*float64(a[i]), float64(b[i])-0.5*float64(a[i]); !(math.Abs(float64(d0[i])-w0) <= 1e-6*math.Max(1, math.Abs(w0))) || !(math.Abs(float64(d1[i])-w1) <= 1e-6*math.Max(1, math.Abs(w1))) {
				t.Fatalf("n=%d: AddScaled2 at %d: %v, %v", n, i, d0[i], d1[i])
			}
		}
	}
}

func TestGatherRows(t *testing.T) {
	a, err := FromSlice([]float64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 6, 2)
	if err != nil {
		t.Fatal(err)
	}
	got := GatherRows(a, []int{2, 0}, 1)
	if !SameShape(got.Shape, []int{2, 2}) || !slices.Equal(got.Data, []float64{4, 5, 0, 1}) {
		t.Errorf("per 1: got %v %v, want [2 2] [4 5 0 1]", got.Shape, got.Data)
	}
	// Blocks of 2 rows: block 1 is rows 2 and 3.
	got = GatherRows(a, []int{1, 2}, 2)
	if !SameShape(got.Shape, []int{4, 2}) || !slices.Equal(got.Data, []float64{4, 5, 6, 7, 8, 9, 10, 11}) {
		t.Errorf("per 2: got %v %v", got.Shape, got.Data)
	}
	got.Data[0] = -1
	if a.Data[4] != 4 {
		t.Error("GatherRows shares its result's data with its input")
	}
}
