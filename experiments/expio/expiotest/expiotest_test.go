package expiotest_test

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/experiments/expio/expiotest"
	"github.com/explaind/explaind/internal/testrun"
)

func TestMain(m *testing.M) { testrun.Main(m) }

func TestTinyModuloRun(t *testing.T) {
	r := expiotest.OpenTinyModuloRun(t, "test", 12, 7, 3)
	if r.Steps() != 7 || r.Config.CheckpointEvery != 3 || r.Data.Train.Len() != 12 || r.Data.Val.Len() != 8 || r.Config.Modulo.P != 7 {
		t.Errorf("run of %d steps, checkpoints every %d, %d+%d samples, p = %d; want 7, 3, 12+8, 7",
			r.Steps(), r.Config.CheckpointEvery, r.Data.Train.Len(), r.Data.Val.Len(), r.Config.Modulo.P)
	}
	if again := expiotest.OpenTinyModuloRun(t, "test", 12, 7, 3); again.Dir != r.Dir || again.Fingerprint != r.Fingerprint {
		t.Errorf("the same tiny run asked for twice: %s (fingerprint %s) and %s (%s)", again.Dir, again.Fingerprint, r.Dir, r.Fingerprint)
	}
	if other := expiotest.OpenTinyModuloRun(t, "test", 12, 8, 3); other.Fingerprint == r.Fingerprint {
		t.Error("runs of 7 and 8 steps have the same fingerprint")
	}
}

func TestReaders(t *testing.T) {
	dir := t.TempDir()
	header, rows := []string{"a", "b"}, [][]string{{"1", "x,y"}, {"2", ""}}
	if err := expio.WriteCSV(filepath.Join(dir, "t.csv"), header, rows); err != nil {
		t.Fatal(err)
	}
	if recs := expiotest.ReadCSV(t, filepath.Join(dir, "t.csv")); len(recs) != 3 || !slices.Equal(recs[0], header) || !slices.Equal(recs[1], rows[0]) || !slices.Equal(recs[2], rows[1]) {
		t.Errorf("ReadCSV: %q", recs)
	}
	if err := expio.WriteJSON(filepath.Join(dir, "t.json"), map[string]int{"n": 3}); err != nil {
		t.Fatal(err)
	}
	var v struct{ N int }
	if b := expiotest.ReadJSON(t, filepath.Join(dir, "t.json"), &v); v.N != 3 || len(b) == 0 {
		t.Errorf("ReadJSON: %+v from %q", v, b)
	}
	p, err := expio.LinePlot("t", "x", "y", []expio.Series{{Label: "s", X: []float64{0, 1}, Y: []float64{1, 2}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := expio.SavePlots(filepath.Join(dir, "fig"), 200, 100, p); err != nil {
		t.Fatal(err)
	}
	expiotest.CheckFigure(t, filepath.Join(dir, "fig"))
}
