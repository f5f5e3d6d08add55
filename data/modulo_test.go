package data

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestModuloPairsCount(t *testing.T) {
	pairs, err := ModuloPairs(113)
	if err != nil {
		t.Fatal(err)
	}
	if len(pairs) != 6441 || NumModuloPairs(113) != 6441 {
		t.Fatalf("p=113: %d pairs, NumModuloPairs %d, want 6441", len(pairs), NumModuloPairs(113))
	}
	seen := map[[2]int]bool{}
	for _, q := range pairs {
		if q.A < 0 || q.A > q.B || q.B >= 113 {
			t.Fatalf("pair %+v not 0 <= a <= b < 113", q)
		}
		if q.Label != (q.A+q.B)%113 {
			t.Fatalf("pair %+v: label want %d", q, (q.A+q.B)%113)
		}
		k := [2]int{q.A, q.B}
		if seen[k] {
			t.Fatalf("duplicate pair %v", k)
		}
		seen[k] = true
	}
	small, err := ModuloPairs(3)
	if err != nil {
		t.Fatal(err)
	}
	want := []ModuloPair{{0, 0, 0}, {0, 1, 1}, {0, 2, 2}, {1, 1, 2}, {1, 2, 0}, {2, 2, 1}}
	if !reflect.DeepEqual(small, want) {
		t.Fatalf("p=3 pairs %v, want %v", small, want)
	}
}

func TestMakeModuloTokensLabels(t *testing.T) {
	train, val, err := MakeModulo(DefaultModuloConfig(0))
	if err != nil {
		t.Fatal(err)
	}
	if train.Len() != 4000 || val.Len() != 2000 {
		t.Fatalf("sizes train %d val %d, want 4000 2000", train.Len(), val.Len())
	}
	if train.Vocab() != 115 || train.P != 113 {
		t.Fatalf("vocab %d p %d", train.Vocab(), train.P)
	}
	if train.Name != "modulo_p113_train" || val.Name != "modulo_p113_val" {
		t.Fatalf("names %q %q", train.Name, val.Name)
	}
	x := ModuloInputs[float32](train)
	if !reflect.DeepEqual(x.Shape, []int{4000, 4}) {
		t.Fatalf("input shape %v", x.Shape)
	}
	toks := train.Tokens()
	labels := train.Labels()
	for i, q := range train.Pairs {
		want := [4]int{q.A, 113, q.B, 114}
		if toks[i] != want {
			t.Fatalf("tokens[%d] = %v, want %v", i, toks[i], want)
		}
		for j := range 4 {
			if x.Data[4*i+j] != float32(want[j]) {
				t.Fatalf("input[%d,%d] = %v, want %d", i, j, x.Data[4*i+j], want[j])
			}
		}
		if labels[i] != (q.A+q.B)%113 {
			t.Fatalf("label[%d] = %d for %+v", i, labels[i], q)
		}
	}
	ds := ModuloDataset[float64](val)
	if err := ds.Validate(); err != nil {
		t.Fatal(err)
	}
	if ds.Classes != 113 || ds.Len() != 2000 || !reflect.DeepEqual(ds.SampleShape(), []int{4}) {
		t.Fatalf("dataset classes %d len %d sample %v", ds.Classes, ds.Len(), ds.SampleShape())
	}
}

func pairSet(s *ModuloSplit) map[[2]int]bool {
	m := map[[2]int]bool{}
	for _, q := range s.Pairs {
		m[[2]int{q.A, q.B}] = true
	}
	return m
}

func TestMakeModuloSplits(t *testing.T) {
	train, val, err := MakeModulo(DefaultModuloConfig(1))
	if err != nil {
		t.Fatal(err)
	}
	tr, va := pairSet(train), pairSet(val)
	if len(tr) != 4000 || len(va) != 2000 {
		t.Fatalf("distinct pairs train %d val %d", len(tr), len(va))
	}
	for k := range va {
		if tr[k] {
			t.Fatalf("pair %v in both splits", k)
		}
	}
	train2, val2, err := MakeModulo(DefaultModuloConfig(1))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(train, train2) || !reflect.DeepEqual(val, val2) {
		t.Fatal("same seed gave different splits")
	}
	train3, val3, err := MakeModulo(DefaultModuloConfig(2))
	if err != nil {
		t.Fatal(err)
	}
	if reflect.DeepEqual(train.Pairs, train3.Pairs) || reflect.DeepEqual(val.Pairs, val3.Pairs) {
		t.Fatal("different seeds gave the same split")
	}
	// The shuffle is not the enumeration order.
	all, _ := ModuloPairs(113)
	if reflect.DeepEqual(val.Pairs, all[:2000]) {
		t.Fatal("validation split is not shuffled")
	}
	// Small configuration: the whole pair set split exactly.
	tr5, va5, err := MakeModulo(ModuloConfig{P: 5, Train: 10, Val: 5, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	u := pairSet(tr5)
	for k := range pairSet(va5) {
		u[k] = true
	}
	if len(u) != 15 {
		t.Fatalf("p=5 splits cover %d distinct pairs, want 15", len(u))
	}
	// Empty splits are allowed.
	tr0, va0, err := MakeModulo(ModuloConfig{P: 7, Train: 0, Val: 0})
	if err != nil || tr0.Len() != 0 || va0.Len() != 0 {
		t.Fatalf("empty splits: %v %v %v", tr0, va0, err)
	}
}

// TestMakeModuloPinned pins the shuffle so an accidental change of the RNG
// construction (and so of every recorded run) is caught.
func TestMakeModuloPinned(t *testing.T) {
	train, val, err := MakeModulo(DefaultModuloConfig(0))
	if err != nil {
		t.Fatal(err)
	}
	got := [][]ModuloPair{val.Pairs[:3], train.Pairs[:3]}
	want := [][]ModuloPair{
		{{31, 110, 28}, {32, 112, 31}, {85, 94, 66}},
		{{36, 44, 80}, {51, 73, 11}, {32, 110, 29}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("seed 0 first pairs: val %v train %v, want val %v train %v", got[0], got[1], want[0], want[1])
	}
}

func TestMakeModuloErrors(t *testing.T) {
	cases := []struct {
		cfg  ModuloConfig
		want string
	}{
		{ModuloConfig{P: 2, Train: 1, Val: 1}, "p >= 3"},
		{ModuloConfig{P: 0, Train: 1, Val: 1}, "p >= 3"},
		{ModuloConfig{P: -5}, "p >= 3"},
		{ModuloConfig{P: 113, Train: -1, Val: 10}, ">= 0"},
		{ModuloConfig{P: 113, Train: 10, Val: -1}, ">= 0"},
		{ModuloConfig{P: 113, Train: 5000, Val: 2000}, "6441"},
		{ModuloConfig{P: 5, Train: 10, Val: 6}, "15 unordered pairs"},
		{ModuloConfig{P: 5, Train: 16, Val: 0}, "15 unordered pairs"},
	}
	for _, c := range cases {
		_, _, err := MakeModulo(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one containing %q", c.cfg, err, c.want)
		}
	}
	if _, err := ModuloPairs(2); err == nil {
		t.Error("ModuloPairs(2) succeeded")
	}
}

func TestModuloCSVRoundTrip(t *testing.T) {
	dir := t.TempDir()
	train, _, err := MakeModulo(ModuloConfig{P: 113, Train: 300, Val: 100, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "train.csv")
	if err := train.WriteCSV(path); err != nil {
		t.Fatal(err)
	}
	// Overwrite works and leaves no temporary files behind.
	if err := train.WriteCSV(path); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want just train.csv", len(ents))
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	q := train.Pairs[1]
	if lines[0] != "index,a,b,label" || len(lines) != 301 || lines[2] != strings.Join([]string{"1", strconv.Itoa(q.A), strconv.Itoa(q.B), strconv.Itoa(q.Label)}, ",") {
		t.Fatalf("csv starts %q, %d lines", lines[:3], len(lines))
	}
	back, err := ReadModuloCSV(path, 113, train.Name)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, train) {
		t.Fatal("CSV round trip changed the split")
	}
	if ModuloDataset[float32](back).Fingerprint() != ModuloDataset[float32](train).Fingerprint() {
		t.Fatal("fingerprint changed in round trip")
	}
	if err := train.WriteCSV(filepath.Join(dir, "missing", "x.csv")); err == nil {
		t.Error("writing into a missing directory succeeded")
	}
}

func TestReadModuloCSVErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, body, want string
	}{
		{"header", "idx,a,b,label\n0,1,2,3\n", "header"},
		{"label", "index,a,b,label\n0,1,2,4\n", "line 2: label 4"},
		{"order", "index,a,b,label\n0,1,2,3\n2,1,3,4\n", "line 3: index 2, want 1"},
		{"aleb", "index,a,b,label\n0,5,2,7\n", "not 0 <= a <= b < 113"},
		{"range", "index,a,b,label\n0,5,113,5\n", "not 0 <= a <= b < 113"},
		{"int", "index,a,b,label\n0,x,2,2\n", "not an integer"},
		{"fields", "index,a,b,label\n0,1,2\n", "wrong number of fields"},
		{"empty", "", "empty file"},
	}
	for _, c := range cases {
		p := filepath.Join(dir, c.name+".csv")
		if err := os.WriteFile(p, []byte(c.body), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ReadModuloCSV(p, 113, "x")
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %v, want one naming %s and containing %q", c.name, err, p, c.want)
		}
	}
	if _, err := ReadModuloCSV(filepath.Join(dir, "nope.csv"), 113, "x"); err == nil {
		t.Error("missing file read")
	}
	if _, err := ReadModuloCSV(filepath.Join(dir, "label.csv"), 2, "x"); err == nil {
		t.Error("p=2 accepted")
	}
}

func TestModuloLabel(t *testing.T) {
	for p := 3; p < 40; p++ {
		for a := range p {
			for b := range p {
				if got := moduloLabel(a, b, p); got != (a+b)%p {
					t.Fatalf("moduloLabel(%d, %d, %d) = %d, want %d", a, b, p, got, (a+b)%p)
				}
			}
		}
	}
	// a+b overflows here; the label does not.
	const p = math.MaxInt
	if got := moduloLabel(p-1, p-2, p); got != p-3 {
		t.Errorf("moduloLabel(p-1, p-2, p) = %d, want p-3", got)
	}
}
