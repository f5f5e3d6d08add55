// Package expiotest holds test fixtures shared by the tests of explaind's
// experiments (experiments/swap, experiments/retrain, ...): tiny recorded
// training runs that take well under a second to train, and readers of
// the files the experiments write (expio's CSV, JSON and figures).
package expiotest

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/train"
)

// TinyModuloRun trains a tiny modulo-addition run into a fresh directory
// under t.TempDir() and returns that directory: p = 7, trainSize training
// and 8 validation samples, a transformer of width 8 with 2 heads and an
// MLP of 12, the default optimizer (AdamW) at learning rate 0.05 and
// weight decay 0.1, full batch, for exactly steps steps (no stop at 100%)
// with a checkpoint every checkpointEvery steps. Training is
// deterministic: the same arguments give the same run. Any error fails the
// test at once.
func TinyModuloRun(t testing.TB, trainSize, steps, checkpointEvery int) string {
	t.Helper()
	c := train.ModuloDefaults()
	c.Modulo = &train.ModuloTask{P: 7, TrainSize: trainSize, ValSize: 8, DModel: 8, Heads: 2, MLP: 12}
	c.Optimizer.LR, c.Optimizer.WeightDecay = 0.05, 0.1
	c.Epochs, c.StopAtPerfect, c.CheckpointEvery = steps, false, checkpointEvery
	dir := filepath.Join(t.TempDir(), "run")
	if _, err := train.Train[float32](context.Background(), dir, c, train.Options{}); err != nil {
		t.Fatalf("training the tiny modulo run: %v", err)
	}
	return dir
}

// OpenTinyModuloRun trains a run as TinyModuloRun does and opens it for
// the experiment named command (expio.OpenRun).
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
