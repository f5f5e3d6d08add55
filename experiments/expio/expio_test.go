package expio_test

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/testrun"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
	"github.com/explaind/explaind/train"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

func TestMain(m *testing.M) { testrun.Main(m) }

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
	checkFigure(t, base, 567, 680) // 10 cm × 2·6 cm at 144 dpi
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

// checkFigure fails t unless base.png is a PNG of w×h pixels (±1) and
// base.svg an SVG document.
func checkFigure(t *testing.T, base string, w, h int) {
	t.Helper()
	f, err := os.Open(base + ".png")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	if err != nil {
		t.Fatalf("%s.png: %v", base, err)
	}
	if cfg.Width < w-1 || cfg.Width > w+1 || cfg.Height < h-1 || cfg.Height > h+1 {
		t.Errorf("%s.png is %d×%d pixels, want %d×%d", base, cfg.Width, cfg.Height, w, h)
	}
	svg, err := os.ReadFile(base + ".svg")
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(bytes.NewReader(svg))
	for {
		tok, err := d.Token()
		if err != nil {
			t.Fatalf("%s.svg has no root element: %v", base, err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if se.Name.Local != "svg" {
				t.Errorf("%s.svg: root element %s, want svg", base, se.Name.Local)
			}
			break
		}
	}
	for {
		if _, err := d.Token(); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Errorf("%s.svg is not well-formed XML: %v", base, err)
			}
			break
		}
	}
}

func TestSaveFigure(t *testing.T) {
	p := plot.New()
	l, err := plotter.NewLine(plotter.XYs{{X: 0, Y: 1}, {X: 1, Y: 3}})
	if err != nil {
		t.Fatal(err)
	}
	p.Add(l)
	leg := plot.NewLegend()
	leg.Add("line", l)
	calls := 0
	paint := func(dc draw.Canvas) {
		calls++
		p.Draw(draw.Crop(dc, 0, -vg.Inch, 0, 0))
		leg.Draw(draw.Crop(dc, 3*vg.Inch, 0, 0, 0))
	}
	base := filepath.Join(t.TempDir(), "fig")
	files, err := expio.SaveFigure(base, 4*vg.Inch, 3*vg.Inch, paint)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(files, []string{base + ".png", base + ".svg"}) || calls != 2 {
		t.Errorf("SaveFigure wrote %v, painting %d times; want %s.png and %s.svg, painted twice", files, calls, base, base)
	}
	checkFigure(t, base, 480, 360) // 4 × 3 inches at 120 dpi
	missing := filepath.Join(t.TempDir(), "no", "such", "dir", "fig")
	if _, err := expio.SaveFigure(missing, vg.Inch, vg.Inch, paint); err == nil {
		t.Error("writing into a missing directory: want an error")
	}
}

// tinyModuloRun returns a three-step modulo run with 10 training and 4
// validation samples and a transformer of width 4 (MLP 4), shared by the
// tests.
func tinyModuloRun(t *testing.T) string {
	t.Helper()
	c := testrun.Modulo(3, 2)
	c.Modulo = &train.ModuloTask{P: 7, TrainSize: 10, ValSize: 4, DModel: 4, Heads: 2, MLP: 4}
	return testrun.Train[float32](t, c)
}

// writeEPK writes a complete EPK output in dir that claims to explain the
// run r with the given presets (their arrays left out) over the
// validation samples idx with the given labels, under the given
// fingerprint ("": r's).
func writeEPK(t *testing.T, r *expio.Run, dir, fingerprint string, presets []string, idx, labels []int) {
	t.Helper()
	if fingerprint == "" {
		fingerprint = r.Fingerprint
	}
	em := epkfile.Manifest{Run: r.Dir, RunFingerprint: fingerprint, Presets: presets, Test: epkfile.TestSet{Split: "val", Count: len(idx)},
		Classes: r.Data.Val.Classes}
	for _, p := range r.Manifest.Params {
		em.Tensors, em.TensorShapes = append(em.Tensors, p.Name), append(em.TensorShapes, p.Shape)
	}
	w, err := epkfile.NewWriter(dir, em)
	if err == nil {
		err = epkfile.Write(w, "test_indices", int64s(idx), epkfile.ArrayInfo{Shape: []int{len(idx)}})
	}
	if err == nil {
		err = epkfile.Write(w, "test_labels", int64s(labels), epkfile.ArrayInfo{Shape: []int{len(labels)}})
	}
	if err == nil {
		err = w.WriteManifest(true)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// must returns b, panicking on err.
func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// int64s converts v to int64.
func int64s(v []int) []int64 {
	out := make([]int64, len(v))
	for i, x := range v {
		out[i] = int64(x)
	}
	return out
}

func TestOpenEPK(t *testing.T) {
	run := tinyModuloRun(t)
	opened, err := expio.OpenRun("components", run, "modulo")
	if err != nil {
		t.Fatal(err)
	}
	val := opened.Data.ModuloVal
	label := func(x int) int { return val.Pairs[x].Label }
	root := t.TempDir()
	good := filepath.Join(root, "good")
	writeEPK(t, opened, good, "", []string{epkfile.Components}, []int{3, 0}, []int{label(3), label(0)})
	use := expio.EPKUse{Command: "components", Task: "modulo", Does: "analyses modulo runs", Preset: epkfile.Components}
	r, err := expio.OpenEPK(use, run, good)
	if err != nil {
		t.Fatal(err)
	}
	if r.Dir != run || r.Config.Task != "modulo" || r.Manifest.Steps == nil || r.EPK.Dir != good {
		t.Errorf("opened %+v", r)
	}
	src := r.Source()
	if src != (expio.EPKSource{Run: run, EPK: good, RunFingerprint: opened.Fingerprint}) {
		t.Errorf("Source() = %+v", src)
	}
	raw, err := json.Marshal(struct {
		expio.EPKSource
		N int `json:"n"`
	}{src, 1})
	if want := `{"run":` + string(must(json.Marshal(run))) + `,"epk":` + string(must(json.Marshal(good))) + `,"run_fingerprint":"` + opened.Fingerprint + `","n":1}`; err != nil || string(raw) != want {
		t.Errorf("an embedded EPKSource marshals as %s (%v), want %s", raw, err, want)
	}
	idx, err := r.TestSamples("validation", val.Len(), label)
	if err != nil || !slices.Equal(idx, []int{3, 0}) {
		t.Errorf("TestSamples: %v, %v; want [3 0]", idx, err)
	}
	if _, err := r.TestSamples("validation", 3, label); err == nil || !strings.Contains(err.Error(), "components: the EPK output's test index 3 is outside the run's 3 validation samples") {
		t.Errorf("index outside the data: %v", err)
	}
	wrong := filepath.Join(root, "wrong")
	writeEPK(t, opened, wrong, "", []string{epkfile.Components}, []int{3, 0}, []int{label(3), label(0) + 1})
	r, err = expio.OpenEPK(use, run, wrong)
	if err != nil {
		t.Fatal(err)
	}
	want := "components: the EPK output gives validation sample 0 label"
	if _, err := r.TestSamples("validation", val.Len(), label); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("wrong label: %v, want %q", err, want)
	}

	other := filepath.Join(root, "other")
	writeEPK(t, opened, other, "0123456789abcdef", []string{epkfile.Components}, []int{0}, []int{label(0)})
	cnn := expio.EPKUse{Command: "prune", Task: "cnn", Does: `prunes CNN runs (task "cnn", ResNet-9)`,
		Hints: map[string]string{"modulo": "for a modulo run use `explaind components`"}, Preset: epkfile.Pruning}
	for _, c := range []struct {
		use      expio.EPKUse
		run, epk string
		want     string
	}{
		{use, "", good, "components: name the run (Run) and the EPK output (EPK)"},
		{use, run, "", "components: name the run (Run) and the EPK output (EPK)"},
		{use, filepath.Join(root, "none"), good, "not a run directory"},
		{use, run, filepath.Join(root, "none"), "not an EPK output"},
		{use, run, other, "different run"},
		{cnn, run, good, "prune: " + run + " is a \"modulo\" run; `explaind prune` prunes CNN runs (task \"cnn\", ResNet-9); for a modulo run use `explaind components`"},
		{expio.EPKUse{Command: "x", Task: "modulo", Preset: epkfile.Pruning}, run, good, "--preset pruning"},
	} {
		if _, err := expio.OpenEPK(c.use, c.run, c.epk); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("OpenEPK(%s, %q, %q): %v; want an error with %q", c.use.Command, c.run, c.epk, err, c.want)
		}
	}
	if _, err := expio.OpenEPK(expio.EPKUse{Command: "x", Task: "cnn", Does: "reads CNN runs"}, run, good); err == nil || err.Error() != "x: "+run+" is a \"modulo\" run; `explaind x` reads CNN runs" {
		t.Errorf("wrong task without a hint: %v", err)
	}
}

func TestOpenRun(t *testing.T) {
	if _, err := expio.OpenRun("swap", filepath.Join(t.TempDir(), "none"), "modulo"); err == nil || !strings.Contains(err.Error(), "swap: invalid Run") {
		t.Errorf("missing run: %v", err)
	}
	if _, err := expio.OpenRun("swap", "", "modulo"); err == nil || !strings.Contains(err.Error(), "(Run)") {
		t.Errorf("no run named: %v", err)
	}
	dir := tinyModuloRun(t)
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
