package data

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/explaind/explaind/tensor"
)

func tinyDataset() Dataset[float32] {
	x, _ := tensor.FromSlice([]float32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 3, 2, 2)
	return Dataset[float32]{Name: "tiny", Inputs: x, Labels: []int{2, 0, 1}, Classes: 3}
}

func TestFingerprintEncoding(t *testing.T) {
	d := tinyDataset()
	// Build the documented byte stream by hand.
	var b []byte
	b = append(b, "explaind-dataset-v1\x00"...)
	u := func(v uint64) { b = binary.LittleEndian.AppendUint64(b, v) }
	u(3)
	u(3)
	u(2)
	u(2)
	for _, v := range d.Inputs.Data {
		u(math.Float64bits(float64(v)))
	}
	u(3)
	for _, y := range d.Labels {
		u(uint64(y))
	}
	u(3)
	sum := sha256.Sum256(b)
	if got, want := d.Fingerprint(), hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("fingerprint %s, want %s", got, want)
	}
}

func TestFingerprintSensitivity(t *testing.T) {
	d := tinyDataset()
	base := d.Fingerprint()
	if len(base) != 64 {
		t.Fatalf("fingerprint %q is not 64 hex digits", base)
	}
	if d.Fingerprint() != base {
		t.Fatal("fingerprint not deterministic")
	}
	renamed := d
	renamed.Name = "other"
	if renamed.Fingerprint() != base {
		t.Fatal("name changed the fingerprint")
	}
	d64 := Dataset[float64]{Name: "tiny", Inputs: tensor.Convert[float64](d.Inputs), Labels: d.Labels, Classes: 3}
	if d64.Fingerprint() != base {
		t.Fatal("float64 copy of the same values hashes differently")
	}
	mut := func(f func(*Dataset[float32])) string {
		c := Dataset[float32]{Name: d.Name, Inputs: d.Inputs.Clone(), Labels: append([]int(nil), d.Labels...), Classes: d.Classes}
		f(&c)
		return c.Fingerprint()
	}
	changes := map[string]string{
		"value": mut(func(c *Dataset[float32]) { c.Inputs.Data[5] = 5.0000005 }),
		"label": mut(func(c *Dataset[float32]) { c.Labels[1] = 1 }),
		"shape": mut(func(c *Dataset[float32]) { c.Inputs = c.Inputs.MustReshape(3, 4) }),
		"class": mut(func(c *Dataset[float32]) { c.Classes = 4 }),
	}
	for what, fp := range changes {
		if fp == base {
			t.Errorf("changing the %s did not change the fingerprint", what)
		}
	}
}

func TestHeadSubset(t *testing.T) {
	d := tinyDataset()
	h, err := d.Head(2)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(h.Inputs.Shape, []int{2, 2, 2}) || !reflect.DeepEqual(h.Inputs.Data, []float32{0, 1, 2, 3, 4, 5, 6, 7}) || !reflect.DeepEqual(h.Labels, []int{2, 0}) || h.Classes != 3 || h.Name != "tiny" {
		t.Fatalf("Head(2) = %+v %v", h, h.Inputs)
	}
	s, err := d.Subset([]int{2, 0, 2})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.Inputs.Data, []float32{8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11}) || !reflect.DeepEqual(s.Labels, []int{1, 2, 1}) {
		t.Fatalf("Subset = %v %v", s.Inputs.Data, s.Labels)
	}
	s.Inputs.Data[0] = -1
	s.Labels[0] = 0
	if d.Inputs.Data[8] != 8 || d.Labels[2] != 1 {
		t.Fatal("Subset shares memory with the original")
	}
	if z, err := d.Head(0); err != nil || z.Len() != 0 || !reflect.DeepEqual(z.Inputs.Shape, []int{0, 2, 2}) {
		t.Fatalf("Head(0) = %+v, %v", z, err)
	}
	if all, err := d.Head(3); err != nil || all.Fingerprint() != d.Fingerprint() {
		t.Fatalf("Head(3) differs: %v", err)
	}
	for _, n := range []int{-1, 4} {
		_, err := d.Head(n)
		if err == nil || !strings.Contains(err.Error(), "it has 3") {
			t.Errorf("Head(%d): error %v", n, err)
		}
	}
	for _, idx := range [][]int{{0, 3}, {-1}} {
		_, err := d.Subset(idx)
		if err == nil || !strings.Contains(err.Error(), "outside [0, 3)") {
			t.Errorf("Subset(%v): error %v", idx, err)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := tinyDataset().Validate(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(*Dataset[float32]){
		"no inputs":   func(d *Dataset[float32]) { d.Inputs = nil },
		"but 2":       func(d *Dataset[float32]) { d.Labels = d.Labels[:2] },
		"outside":     func(d *Dataset[float32]) { d.Labels[0] = 3 },
		"class":       func(d *Dataset[float32]) { d.Classes = 0 },
		"elements":    func(d *Dataset[float32]) { d.Inputs.Data = d.Inputs.Data[:5] },
		"sample axis": func(d *Dataset[float32]) { d.Inputs.Shape = nil },
	}
	for want, f := range cases {
		d := tinyDataset()
		f(&d)
		if err := d.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v", want, err)
		}
		if _, err := d.Head(1); err == nil {
			t.Errorf("%s: Head on an invalid dataset succeeded", want)
		}
	}
}
