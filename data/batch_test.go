package data

import (
	"reflect"
	"strings"
	"testing"

	"github.com/explaind/explaind/tensor"
)

func TestEpochBatches(t *testing.T) {
	if StepsPerEpoch(10000, 256) != 39 || StepsPerEpoch(512, 256) != 2 || StepsPerEpoch(255, 256) != 0 || StepsPerEpoch(10, 0) != 0 {
		t.Fatal("StepsPerEpoch")
	}
	b, err := EpochBatches(NewRNG(1), 10000, 256)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 39 {
		t.Fatalf("%d batches, want 39", len(b))
	}
	seen := make([]bool, 10000)
	for _, batch := range b {
		if len(batch) != 256 {
			t.Fatalf("batch of %d", len(batch))
		}
		for _, i := range batch {
			if i < 0 || i >= 10000 || seen[i] {
				t.Fatalf("index %d repeated or out of range", i)
			}
			seen[i] = true
		}
	}
	sorted := true
	for i := 1; i < 256; i++ {
		if b[0][i] < b[0][i-1] {
			sorted = false
		}
	}
	if sorted {
		t.Fatal("first batch is not shuffled")
	}
	again, _ := EpochBatches(NewRNG(1), 10000, 256)
	if !reflect.DeepEqual(b, again) {
		t.Fatal("same seed, different batches")
	}
	other, _ := EpochBatches(NewRNG(2), 10000, 256)
	if reflect.DeepEqual(b, other) {
		t.Fatal("different seeds, same batches")
	}
	// Consecutive epochs from one generator differ.
	rng := NewRNG(1)
	e1, _ := EpochBatches(rng, 100, 10)
	e2, _ := EpochBatches(rng, 100, 10)
	if reflect.DeepEqual(e1, e2) {
		t.Fatal("two epochs from one generator are equal")
	}
	// Appending to a batch must not clobber the next one.
	e1[0] = append(e1[0], -7)
	if e1[1][0] == -7 {
		t.Fatal("batches alias past their length")
	}
	if small, err := EpochBatches(NewRNG(1), 5, 10); err != nil || len(small) != 0 {
		t.Fatalf("n < batch: %v %v", small, err)
	}
	for _, c := range []struct{ n, bs int }{{-1, 2}, {10, 0}, {10, -3}} {
		if _, err := EpochBatches(NewRNG(1), c.n, c.bs); err == nil {
			t.Errorf("EpochBatches(%d, %d) succeeded", c.n, c.bs)
		}
	}
	if _, err := EpochBatches(nil, 10, 2); err == nil {
		t.Error("nil rng accepted")
	}
}

func TestGather(t *testing.T) {
	x, _ := tensor.FromSlice([]float64{0, 1, 10, 11, 20, 21, 30, 31}, 4, 2)
	g, err := Gather(x, []int{3, 1, 1})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g.Shape, []int{3, 2}) || !reflect.DeepEqual(g.Data, []float64{30, 31, 10, 11, 10, 11}) {
		t.Fatalf("Gather = %v %v", g.Shape, g.Data)
	}
	if _, err := Gather(x, []int{4}); err == nil || !strings.Contains(err.Error(), "index 4") {
		t.Errorf("out of range: %v", err)
	}
	if _, err := Gather[float64](nil, []int{0}); err == nil {
		t.Error("nil input accepted")
	}
	y, err := GatherLabels([]int{5, 6, 7}, []int{2, 0})
	if err != nil || !reflect.DeepEqual(y, []int{7, 5}) {
		t.Fatalf("GatherLabels = %v %v", y, err)
	}
	if _, err := GatherLabels([]int{5}, []int{1}); err == nil {
		t.Error("label index out of range accepted")
	}
	d := Dataset[float64]{Name: "g", Inputs: x, Labels: []int{0, 1, 0, 1}, Classes: 2}
	bx, by, err := d.Batch([]int{2, 3})
	if err != nil || !reflect.DeepEqual(bx.Data, []float64{20, 21, 30, 31}) || !reflect.DeepEqual(by, []int{0, 1}) {
		t.Fatalf("Batch = %v %v %v", bx, by, err)
	}
}
