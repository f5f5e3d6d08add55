package job

import (
	"bytes"
	"encoding/gob"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/explaind/explaind/explain"
)

func testState() saved {
	st := &explain.State{Done: 3, Wall: time.Second, Nodes: 7,
		Val:    explain.Validation{Start: []float64{1, 2}, Model: []float64{3, math.Inf(-1)}, StepChange: []float64{0.5}},
		Acc:    [][]float64{{1, 2, 3}, {}, {math.NaN()}},
		Facc:   [][][]float64{{}, {{4, 5}, {6}}, {}},
		Q:      [][][]float64{{}, {}, {{-7, 8e300}}},
		FwdDat: [][]float64{{}, {}, {9}},
		SGDReg: map[string][]float64{"w": {1}}}
	return saved{Key: "k", State: st}
}

// TestStateFileRoundTrip writes a state with accumulators of every kind
// and reads it back to the same values (NaN included), and reads a state
// file of the earlier format (one gob).
func TestStateFileRoundTrip(t *testing.T) {
	want := testState()
	var b bytes.Buffer
	if err := writeState(&b, want); err != nil {
		t.Fatal(err)
	}
	got, err := readState(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if got.Key != want.Key || !math.IsNaN(got.State.Acc[2][0]) {
		t.Fatalf("read key %q, NaN %v", got.Key, got.State.Acc[2][0])
	}
	got.State.Acc[2][0], want.State.Acc[2][0] = 0, 0
	norm := func(s *explain.State) {
		for _, a := range [][][][]float64{s.Facc, s.Q} {
			for i := range a {
				if len(a[i]) == 0 {
					a[i] = nil
				}
			}
		}
		for i := range s.Acc {
			if len(s.Acc[i]) == 0 {
				s.Acc[i] = nil
			}
		}
		for i := range s.FwdDat {
			if len(s.FwdDat[i]) == 0 {
				s.FwdDat[i] = nil
			}
		}
	}
	norm(got.State)
	norm(want.State)
	if !reflect.DeepEqual(got.State, want.State) {
		t.Errorf("read back\n%+v\nwant\n%+v", got.State, want.State)
	}
	t.Logf("state of %d bytes read back", b.Len())

	// A truncated file and one with trailing data are refused.
	if _, err := readState(bytes.NewReader(b.Bytes()[:b.Len()-4])); err == nil || !strings.Contains(err.Error(), "end early") {
		t.Errorf("truncated state: %v, want an error", err)
	}
	if _, err := readState(bytes.NewReader(append(b.Bytes(), 0))); err == nil {
		t.Error("a state with trailing data was read")
	}

	// The earlier format.
	old := testState()
	var ob bytes.Buffer
	if err := gob.NewEncoder(&ob).Encode(old); err != nil {
		t.Fatal(err)
	}
	o, err := readState(&ob)
	if err != nil || o.Key != "k" || o.State.Facc[1][0][1] != 5 {
		t.Errorf("earlier format: %v, key %q", err, o.Key)
	}
}
