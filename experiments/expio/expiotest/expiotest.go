// Package expiotest holds test fixtures shared by the tests of explaind's
// experiments (experiments/swap, experiments/retrain, ...): the tiny
// recorded training run they open (built on internal/testrun), and readers
// of the files the experiments write (expio's CSV, JSON and figures).
package expiotest

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/internal/testrun"
)

// TinyModuloRun returns the tiny modulo-addition run of the experiments'
// tests (testrun.Modulo with trainSize training samples, AdamW at learning
// rate 0.05 and weight decay 0.1, for exactly steps full-batch steps with a
// checkpoint every checkpointEvery steps), trained once per test binary
// (testrun.Train): the test must not modify it, and its package calls
// testrun.Main from TestMain. Any error fails the test at once.
func TinyModuloRun(t testing.TB, trainSize, steps, checkpointEvery int) string {
	t.Helper()
	c := testrun.Modulo(steps, checkpointEvery)
	c.Modulo.TrainSize = trainSize
	c.Optimizer.LR, c.Optimizer.WeightDecay = 0.05, 0.1
	return testrun.Train[float32](t, c)
}

// OpenTinyModuloRun opens the run of TinyModuloRun for the experiment
// named command (expio.OpenRun).
func OpenTinyModuloRun(t testing.TB, command string, trainSize, steps, checkpointEvery int) *expio.Run {
	t.Helper()
	r, err := expio.OpenRun(command, TinyModuloRun(t, trainSize, steps, checkpointEvery), "modulo")
	if err != nil {
		t.Fatalf("opening the tiny modulo run: %v", err)
	}
	return r
}

// ReadCSV returns the records of the CSV file at path (the header first,
// as expio.WriteCSV writes it). Any error fails the test at once.
func ReadCSV(t testing.TB, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return recs
}

// ReadJSON decodes the JSON file at path into v and returns the file's
// bytes. Any error fails the test at once.
func ReadJSON(t testing.TB, path string, v any) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return b
}

// CheckFigure reports an error unless base.png is a PNG image and
// base.svg an SVG drawing, as expio.SavePlots writes a figure.
func CheckFigure(t testing.TB, base string) {
	t.Helper()
	png, _ := os.ReadFile(base + ".png")
	svg, _ := os.ReadFile(base + ".svg")
	if !bytes.HasPrefix(png, []byte("\x89PNG")) || !bytes.Contains(svg, []byte("<svg")) {
		t.Errorf("figure %s: %d bytes of PNG, %d of SVG", base, len(png), len(svg))
	}
}

// CheckFiles fails the test (without stopping it) for every name that is
// not a non-empty file in dir: an experiment's expected outputs, or the
// files its summary lists.
func CheckFiles(t testing.TB, dir string, names ...string) {
	t.Helper()
	for _, name := range names {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Size() == 0 {
			t.Errorf("%s: missing or empty (%v)", filepath.Join(dir, name), err)
		}
	}
}
