package data

import (
	"reflect"
	"testing"

	"github.com/explaind/explaind/tensor"
)

func TestFlipDraws(t *testing.T) {
	a := FlipDraws(NewRNG(7), 10000)
	b := FlipDraws(NewRNG(7), 10000)
	c := FlipDraws(NewRNG(8), 10000)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed, different draws")
	}
	if reflect.DeepEqual(a, c) {
		t.Fatal("different seeds, same draws")
	}
	n := 0
	for _, f := range a {
		if f {
			n++
		}
	}
	// Binomial(10000, 0.5): sd 50, so 4750..5250 is a 5-sigma band.
	if n < 4750 || n > 5250 {
		t.Fatalf("%d of 10000 flipped", n)
	}
	// Each draw consumes exactly one Float64 of the generator.
	r := NewRNG(7)
	for i := range 5 {
		if want := r.Float64() < 0.5; a[i] != want {
			t.Fatalf("draw %d = %v, want %v", i, a[i], want)
		}
	}
	if len(FlipDraws(NewRNG(1), 0)) != 0 {
		t.Fatal("n = 0")
	}
}

func TestApplyFlips(t *testing.T) {
	// Two images, two channels, 2×3.
	data := make([]float32, 2*2*2*3)
	for i := range data {
		data[i] = float32(i)
	}
	x, _ := tensor.FromSlice(data, 2, 2, 2, 3)
	y, err := ApplyFlips(x, []bool{true, false})
	if err != nil {
		t.Fatal(err)
	}
	want := []float32{
		2, 1, 0, 5, 4, 3, 8, 7, 6, 11, 10, 9, // image 0 mirrored
		12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, // image 1 as is
	}
	if !reflect.DeepEqual(y.Data, want) || !reflect.DeepEqual(y.Shape, x.Shape) {
		t.Fatalf("ApplyFlips = %v", y.Data)
	}
	if x.Data[0] != 0 || x.Data[2] != 2 {
		t.Fatal("input modified")
	}
	y.Data[12] = -1
	if x.Data[12] != 12 {
		t.Fatal("output shares memory with the input")
	}
	twice, _ := ApplyFlips(x, []bool{true, true})
	twice, _ = ApplyFlips(twice, []bool{true, true})
	if !reflect.DeepEqual(twice.Data, x.Data) {
		t.Fatal("flipping twice is not the identity")
	}
	if _, err := ApplyFlips(x, []bool{true}); err == nil {
		t.Error("wrong number of draws accepted")
	}
	flat, _ := tensor.FromSlice(data, 4, 6)
	if _, err := ApplyFlips(flat, []bool{true, true, true, true}); err == nil {
		t.Error("rank-2 input accepted")
	}
	if _, err := ApplyFlips[float32](nil, nil); err == nil {
		t.Error("nil input accepted")
	}
}
