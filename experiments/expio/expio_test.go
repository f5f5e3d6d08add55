package expio_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
	"github.com/explaind/explaind/train"
	"gonum.org/v1/plot/vg"
)

func TestWriteCSVAndJSON(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "t.csv")
	if err := expio.WriteCSV(path, []string{"a", "b"}, [][]string{{"1", "x,y"}, {expio.Float(0.1), expio.Float(math.Inf(1))}}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if want := "a,b\n1,\"x,y\"\n0.1,+Inf\n"; string(b) != want {
		t.Errorf("CSV %q, want %q", b, want)
	}
	if err := expio.WriteCSV(path, []string{"a", "b"}, [][]string{{"1"}}); err == nil || !strings.Contains(err.Error(), "row 0") {
		t.Errorf("short row: %v", err)
	}
	if b2, _ := os.ReadFile(path); !bytes.Equal(b, b2) {
		t.Error("a failed write changed the file")
	}
	if err := expio.WriteJSON(filepath.Join(dir, "t.json"), map[string]int{"n": 3}); err != nil {
		t.Fatal(err)
	}
	var v map[string]int
	b, _ = os.ReadFile(filepath.Join(dir, "t.json"))
	if err := json.Unmarshal(b, &v); err != nil || v["n"] != 3 {
		t.Errorf("JSON %s: %v", b, err)
	}
	if err := expio.WriteJSON(filepath.Join(dir, "nan.json"), math.NaN()); err == nil {
		t.Error("NaN in JSON: want an error")
	}
	if _, err := os.Stat(filepath.Join(dir, "nan.json")); err == nil {
		t.Error("a failed JSON write left a file")
	}
}

func TestPlots(t *testing.T) {
	s := []expio.Series{
		{Label: "a", X: []float64{0, 1, 2}, Y: []float64{1, math.NaN(), 3}},
		{Label: "b", X: []float64{0, 1, 2}, Y: []float64{2, 2, 2}, Lo: []float64{1, 1, 1}, Hi: []float64{3, 4, 3}},
	}
	p, err := expio.LinePlot("t", "x", "y", s)
	if err != nil {
		t.Fatal(err)
	}
	if p.Y.Min > 1 || p.Y.Max < 4 {
		t.Errorf("y axis %v..%v does not cover the band", p.Y.Min, p.Y.Max)
	}
	base := filepath.Join(t.TempDir(), "fig")
	if err := expio.SavePlots(base, 10*vg.Centimeter, 6*vg.Centimeter, p, p); err != nil {
		t.Fatal(err)
	}
	png, _ := os.ReadFile(base + ".png")
	svg, _ := os.ReadFile(base + ".svg")
	if !bytes.HasPrefix(png, []byte("\x89PNG")) || !bytes.Contains(svg, []byte("<svg")) {
		t.Errorf("%d bytes of PNG, %d of SVG", len(png), len(svg))
	}
	if _, err := expio.LinePlot("t", "x", "y", []expio.Series{{X: []float64{1}, Y: nil}}); err == nil {
		t.Error("x and y of different lengths: want an error")
	}
	if _, err := expio.LinePlot("t", "x", "y", []expio.Series{{X: []float64{1}, Y: []float64{1}, Lo: []float64{0}}}); err == nil {
		t.Error("a band without Hi: want an error")
	}
	if err := expio.SavePlots(base, vg.Centimeter, vg.Centimeter); err == nil {
		t.Error("no plots: want an error")
	}
}

func TestLoadParams(t *testing.T) {
	mk := func(name string, shape ...int) *nn.Param[float32] {
		return &nn.Param[float32]{Name: name, Value: tensor.New[float32](shape...)}
	}
	dst := []*nn.Param[float32]{mk("a", 2), mk("b", 1, 2)}
	src := expio.CopyParams(dst)
	src[0].Value.Data[1] = 7
	if err := expio.LoadParams(dst, src); err != nil || dst[0].Value.Data[1] != 7 {
		t.Fatalf("LoadParams: %v, %v", err, dst[0].Value.Data)
	}
	src[0].Value.Data[1] = 8
	if dst[0].Value.Data[1] != 7 {
		t.Error("LoadParams shares arrays instead of copying")
	}
	for _, bad := range [][]*nn.Param[float32]{{mk("a", 2)}, {mk("a", 2), mk("c", 1, 2)}, {mk("a", 2), mk("b", 2, 1)}} {
		if err := expio.LoadParams(dst, bad); err == nil {
			t.Errorf("LoadParams from %v: want an error", bad)
		}
	}
}

func TestOpenRun(t *testing.T) {
	if _, err := expio.OpenRun("swap", filepath.Join(t.TempDir(), "none"), "modulo"); err == nil || !strings.Contains(err.Error(), "swap: --run") {
		t.Errorf("missing run: %v", err)
	}
	if _, err := expio.OpenRun("swap", "", "modulo"); err == nil || !strings.Contains(err.Error(), "--run") {
		t.Errorf("no run named: %v", err)
	}
	c := train.ModuloDefaults()
	c.Modulo = &train.ModuloTask{P: 7, TrainSize: 10, ValSize: 4, DModel: 4, Heads: 2, MLP: 4}
	c.Epochs, c.StopAtPerfect, c.CheckpointEvery = 3, false, 2
	dir := filepath.Join(t.TempDir(), "run")
	if _, err := train.Train[float32](context.Background(), dir, c, train.Options{}); err != nil {
		t.Fatal(err)
	}
	r, err := expio.OpenRun("swap", dir, "modulo")
	if err != nil {
		t.Fatal(err)
	}
	if r.Steps() != 3 || r.Data.Val.Len() != 4 || len(r.Fingerprint) != 32 {
		t.Errorf("opened run: %d steps, %d validation samples, fingerprint %q", r.Steps(), r.Data.Val.Len(), r.Fingerprint)
	}
	if _, err := r.Modulo("swap"); err != nil {
		t.Error(err)
	}
	final, err := r.State(3)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := history.ReadManifest(dir)
	if got := history.ParamHash(final); got != m.Hash(3) {
		t.Errorf("State(3) hashes to %s, the run's final hash is %s", got, m.Hash(3))
	}
	if _, err := expio.OpenRun("retrain", dir, "cnn"); err == nil || !strings.Contains(err.Error(), `is a "modulo" run`) {
		t.Errorf("wrong task: %v", err)
	}
}
