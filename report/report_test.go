package report

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/lock"
	"github.com/explaind/explaind/npy"
	"github.com/explaind/explaind/train"
)

// The fabricated run: a tiny modulo model (p = 11, d_model 8, 2 heads,
// MLP 12) trained for S full-batch steps on N samples; the EPK outputs
// cover X test samples and C classes.
const (
	tS, tX, tC, tN = 12, 8, 13, 20
)

// tensorInfo is a parameter tensor's name and shape.
type tensorInfo struct {
	name  string
	shape []int
}

// tinyTensors lists the fabricated model's parameter tensors.
func tinyTensors() []tensorInfo {
	return []tensorInfo{
		{"input_emb.weight", []int{13, 8}},
		{"head1_encoder.weight", []int{4, 8}}, {"head2_encoder.weight", []int{4, 8}},
		{"head1_decoder.weight", []int{8, 4}}, {"head2_decoder.weight", []int{8, 4}},
		{"linear1.weight", []int{12, 8}}, {"linear1.bias", []int{12}},
		{"linear2.weight", []int{8, 12}}, {"linear2.bias", []int{8}},
		{"decoder.weight", []int{13, 8}},
	}
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeRun writes a run directory (manifest.json with one checkpoint file,
// metrics.jsonl, summary.json) whose step hashes start with salt, and
// returns its manifest.
func fakeRun(t *testing.T, dir, salt string) *history.Manifest {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "checkpoints"), 0o755); err != nil {
		t.Fatal(err)
	}
	ck := history.CheckpointName(0)
	if err := os.WriteFile(filepath.Join(dir, ck), []byte("placeholder"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := train.ModuloDefaults()
	cfg.Modulo.P, cfg.Modulo.TrainSize, cfg.Modulo.ValSize = 11, tN, 10
	cfg.Modulo.DModel, cfg.Modulo.Heads, cfg.Modulo.MLP = 8, 2, 12
	cfg.Epochs = tS
	raw, _ := json.Marshal(cfg)
	m := history.Manifest{Format: history.FormatVersion, Software: "test", Created: "2026-01-01T00:00:00Z",
		Config: raw, Dtype: "float32", Threads: 2, GemmBackend: "gonum", CheckpointEvery: 100, InitHash: salt + "init",
		Datasets:    map[string]history.DatasetInfo{"train": {Name: "modulo", Samples: tN, Classes: tC, Fingerprint: "f1"}, "val": {Name: "modulo", Samples: 10, Classes: tC, Fingerprint: "f2"}},
		Checkpoints: []history.Checkpoint{{Step: 0, File: ck}}, Done: true, StopReason: "epochs done"}
	for _, tt := range tinyTensors() {
		m.Params = append(m.Params, history.ParamInfo{Name: tt.name, Shape: tt.shape})
	}
	for s := range tS {
		m.Steps = append(m.Steps, history.StepRecord{Epoch: s, LR: 1e-2, WeightDecay: 1, Hash: fmt.Sprintf("%shash%d", salt, s)})
	}
	writeJSON(t, filepath.Join(dir, history.ManifestFile), m)
	var lines bytes.Buffer
	for e := range tS {
		f := float64(e) / tS
		em := train.EpochMetrics{Epoch: e, Step: e + 1, LR: 1e-2, TrainLoss: 2.5 * math.Exp(-6*f), TrainAcc: math.Min(1, 0.1+2*f),
			ValLoss: 2.6 - 2.5*f*f, ValAcc: 0.1 + 0.9*f*f, TrainEval: "full", Seconds: 0.01}
		b, _ := json.Marshal(em)
		lines.Write(append(b, '\n'))
	}
	if err := os.WriteFile(filepath.Join(dir, train.MetricsFile), lines.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	writeJSON(t, filepath.Join(dir, train.SummaryFile), train.Summary{Task: "modulo", Done: true, StopReason: "epochs done",
		Steps: tS, Epochs: tS, TrainLoss: 0.01, TrainAcc: 1, ValLoss: 0.3, ValAcc: 0.95, PerfectStep: -1, WallSeconds: 1.5, BytesOnDisk: 123456})
	got, err := history.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// wave is a smooth made-up value for the fabricated arrays.
func wave(i, j, k int) float64 {
	return math.Sin(0.7*float64(i)+1.3*float64(j)) * math.Exp(-0.1*float64(k)) / float64(1+j%3)
}

// fakeEPK writes a complete EPK output of the run with the given presets,
// and a summary.json when withSummary is set.
func fakeEPK(t *testing.T, dir string, run string, m *history.Manifest, presets []string, withSummary bool) {
	t.Helper()
	man := epkfile.Manifest{Software: "test", Created: "2026-01-01T00:00:00Z", Run: run, RunFingerprint: epkfile.RunFingerprint(m),
		Presets: presets, Steps: [2]int{0, tS}, Precision: "float64", Quadrature: "exact", Tol: 1e-10,
		Test: epkfile.TestSet{Split: "val", Count: tX}, Classes: tC}
	for _, tt := range tinyTensors() {
		man.Tensors = append(man.Tensors, tt.name)
		man.TensorShapes = append(man.TensorShapes, tt.shape)
	}
	w, err := epkfile.NewWriter(dir, man)
	if err != nil {
		t.Fatal(err)
	}
	put := func(name string, data []float64, axes []string, shape ...int) {
		t.Helper()
		if err := epkfile.Write(w, name, data, epkfile.ArrayInfo{Shape: shape, Axes: axes, Units: "log-probability"}); err != nil {
			t.Fatal(err)
		}
	}
	fill := func(n int, f func(i int) float64) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = f(i)
		}
		return v
	}
	idx, labels := make([]int, tX), make([]int, tX)
	for x := range tX {
		idx[x], labels[x] = 2*x, (3*x+1)%tC
	}
	for name, v := range map[string][]int{"test_indices": idx, "test_labels": labels} {
		if err := epkfile.Write(w, name, npy.Ints(v), epkfile.ArrayInfo{Shape: []int{tX}, Axes: []string{"test"}}); err != nil {
			t.Fatal(err)
		}
	}
	xc := []string{"test", "class"}
	if slices.Contains(presets, epkfile.Validation) {
		f0 := fill(tX*tC, func(i int) float64 { return -math.Log(tC) + 0.01*wave(i, 0, 0) })
		data := fill(tX*tC, func(i int) float64 { return 2 * wave(i/tC, i%tC, 1) })
		reg := fill(tX*tC, func(i int) float64 { return -0.3 * wave(i/tC, i%tC, 2) })
		resid := fill(tX*tC, func(i int) float64 { return 1e-9 * wave(i, 1, 0) })
		epk := fill(tX*tC, func(i int) float64 { return f0[i] + data[i] + reg[i] + resid[i] })
		model := fill(tX*tC, func(i int) float64 { return epk[i] + 1e-7*wave(i, 2, 0) })
		for _, a := range []struct {
			n string
			v []float64
		}{{"f0", f0}, {"model", model}, {"epk", epk}, {"data", data}, {"reg", reg}, {"resid", resid}, {"quad_residual", resid}} {
			put(a.n, a.v, xc, tX, tC)
		}
		put("step_max_completeness", fill(tS, func(s int) float64 { return 1e-12 * math.Exp(-0.5*float64(s)) }), []string{"step"}, tS)
	}
	if slices.Contains(presets, epkfile.Grokking) {
		T := len(tinyTensors())
		st := fill(tS*T*tX, func(i int) float64 {
			s, r := i/(T*tX), i%(T*tX)
			return 0.1 * wave(r/tX, r%tX, s) * float64(1+r/tX%3)
		})
		put("step_tensor", st, []string{"step", "tensor", "test"}, tS, T, tX)
		data := make([]float64, tS*tX)
		for s := range tS {
			for tn := range T {
				for x := range tX {
					data[s*tX+x] += st[(s*T+tn)*tX+x]
				}
			}
		}
		reg := fill(tS*tX, func(i int) float64 { return -0.02 * float64(1+i/tX) / tS })
		resid := fill(tS*tX, func(i int) float64 { return 1e-13 * wave(i, 0, 0) })
		change := fill(tS*tX, func(i int) float64 { return data[i] + reg[i] + resid[i] + 1e-12*wave(i, 3, 0) })
		sx := []string{"step", "test"}
		put("step_data", data, sx, tS, tX)
		put("step_reg", reg, sx, tS, tX)
		put("step_resid", resid, sx, tS, tX)
		put("step_change", change, sx, tS, tX)
	}
	for i, tt := range tinyTensors() {
		n := 1
		for _, d := range tt.shape {
			n *= d
		}
		if slices.Contains(presets, epkfile.Components) {
			put("scores/"+tt.name, fill(tX*n, func(j int) float64 { return wave(i, j, 0) }), append([]string{"test"}, "..."), append([]int{tX}, tt.shape...)...)
		}
		if slices.Contains(presets, epkfile.Pruning) {
			put("importance/"+tt.name, fill(n, func(j int) float64 { return math.Abs(wave(i, j, 1)) }), []string{"..."}, tt.shape...)
		}
	}
	if slices.Contains(presets, epkfile.Kernel) {
		put("kernel", fill(tC*tN, func(i int) float64 { return wave(i/tN, i%tN, 0) * float64(1+i%7) }), []string{"class", "train"}, tC, tN)
		put("kernel_reg", fill(tC, func(c int) float64 { return -0.1 * float64(c) }), []string{"class"}, tC)
		put("kernel_carried", fill(tC, func(c int) float64 { return 0 }), []string{"class"}, tC)
	}
	if err := w.WriteManifest(true); err != nil {
		t.Fatal(err)
	}
	if withSummary {
		os.WriteFile(filepath.Join(dir, "summary.json"), []byte(`{"argmax_agreement": 1, "accuracy": 0.875, "mean_abs_delta": 3.2e-08,
  "max_abs_delta": 9.9e-08, "std_delta": 4e-08, "kl_div": 1e-12, "max_completeness_residual": 1e-12,
  "wall_seconds": 12.5, "peak_rss_bytes": 734003200, "quad_points": 1234}`), 0o644)
	}
}

// fakeExperiment writes an experiment directory: summary.json, one PNG
// figure and its SVG.
func fakeExperiment(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	img := image.NewRGBA(image.Rect(0, 0, 40, 30))
	for y := range 30 {
		for x := range 40 {
			img.Set(x, y, color.RGBA{uint8(6 * x), uint8(8 * y), 128, 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "curve.png"), b.Bytes(), 0o644)
	os.WriteFile(filepath.Join(dir, "curve.svg"), []byte(`<svg xmlns="http://www.w3.org/2000/svg"/>`), 0o644)
	os.WriteFile(filepath.Join(dir, "summary.json"), []byte(`{"experiment":"prune","fractions":[0.1,0.5],"accuracy_kept":0.93,"complete":false}`), 0o644)
}

// fixture builds a run, two EPK outputs (one with every preset and a
// summary.json, one with the validation preset only) and an experiment
// directory under root.
func fixture(t *testing.T, root string) (run string, epk []string, exp string) {
	run = filepath.Join(root, "run")
	m := fakeRun(t, run, "a")
	epk = []string{filepath.Join(root, "epk-all"), filepath.Join(root, "epk-val")}
	fakeEPK(t, epk[0], run, m, epkfile.Presets, true)
	fakeEPK(t, epk[1], run, m, []string{epkfile.Validation}, false)
	exp = filepath.Join(root, "prune")
	fakeExperiment(t, exp)
	return run, epk, exp
}

func TestBuild(t *testing.T) {
	root := t.TempDir()
	run, epk, exp := fixture(t, root)
	out := filepath.Join(root, "out", "report.html")
	sum, err := Build(Options{Run: run, EPK: epk, Experiments: []string{exp}, Out: out})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	html := string(raw)
	for _, want := range []string{"<!DOCTYPE html>", "Training run " + run, "Configuration", "optimizer.weight_decay",
		"Summary (summary.json)", "Training and validation loss", "Training and validation accuracy",
		"EPK output " + epk[0], "Validation (summary.json)", "argmax_agreement", "peak_rss_bytes", "734003200 (734.0 MB)", "quad_points",
		"Per-step change: EPK against the model", "Completeness residual per step", "Layer groups: contribution per step",
		"Layer groups: contribution summed over training", "Balance of data and regularization over training",
		"Balance of data and regularization in the prediction", "EPK prediction against the model",
		"Component attribution per layer group", "Pruning importance per layer group", "Data kernel: training samples against classes",
		"EPK output " + epk[1], "Validation (computed from the arrays)", "Experiment " + exp, "&#34;accuracy_kept&#34;: 0.93", "curve.png", "This experiment has not finished",
	} {
		if !strings.Contains(html, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	for _, bad := range []string{"http://", "https://", "<script", "<link", "@import", "url("} {
		if strings.Contains(html, bad) {
			t.Errorf("the report contains %q: it must not reach outside itself", bad)
		}
	}
	// Every image is an inline PNG that decodes.
	srcs := regexp.MustCompile(`src="([^"]*)"`).FindAllStringSubmatch(html, -1)
	if len(srcs) != sum.Figures+1 {
		t.Errorf("%d images in the page, want the %d figures and the experiment's PNG", len(srcs), sum.Figures)
	}
	for _, s := range srcs {
		const prefix = "data:image/png;base64,"
		if !strings.HasPrefix(s[1], prefix) {
			t.Fatalf("image source %.40q is not an inline PNG", s[1])
		}
		b, err := base64.StdEncoding.DecodeString(s[1][len(prefix):])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := png.Decode(bytes.NewReader(b)); err != nil {
			t.Errorf("an inlined image does not decode as PNG: %v", err)
		}
	}
	// The summary, the figure files and what the summary lists.
	var disk Summary
	b, err := os.ReadFile(filepath.Join(root, "out", "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &disk); err != nil || disk.Format != SummaryFormat || disk.Figures != sum.Figures {
		t.Fatalf("report.json: %v, %+v", err, disk)
	}
	if len(disk.Sections) != 5 || disk.Sections[0].Kind != "findings" || disk.Sections[1].Kind != "run" || disk.Sections[2].Kind != "epk" || disk.Sections[4].Kind != "experiment" {
		t.Fatalf("sections %+v", disk.Sections)
	}
	// The findings come first: the milestones and each EPK output's agreement.
	if i, j := strings.Index(html, `id="findings"`), strings.Index(html, `id="run"`); i < 0 || j < i {
		t.Errorf("the findings section is not the page's first (at %d, the run's at %d)", i, j)
	}
	for _, want := range []string{"memorized (training accuracy", "grokked (validation accuracy", "EPK 1 (" + filepath.Join(root, "epk-all") + ")", "argmax agreement"} {
		if !strings.Contains(html, want) {
			t.Errorf("the findings do not show %q", want)
		}
	}
	// An experiment's figure opens at full size from the copy beside the report's figures.
	if !strings.Contains(html, `<a href="report_figures/exp1_curve.png"`) {
		t.Error("the experiment's figure is not a link to its full-size copy")
	}
	if b, err := os.ReadFile(filepath.Join(root, "out", "report_figures", "exp1_curve.png")); err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Errorf("the experiment's figure was not copied: %v", err)
	}
	disk.Sections = disk.Sections[1:]
	if n := len(disk.Sections[1].Figures); n != 10 {
		t.Errorf("the full EPK output got %d figures (%v), want 10", n, disk.Sections[1].Figures)
	}
	if n := len(disk.Sections[2].Figures); n != 3 {
		t.Errorf("the validation-only EPK output got %d figures (%v), want 3", n, disk.Sections[2].Figures)
	}
	if !slices.Equal(disk.Sections[3].Figures, []string{"curve.png"}) {
		t.Errorf("experiment figures %v", disk.Sections[3].Figures)
	}
	figDir := filepath.Join(root, "out", "report_figures")
	if disk.FiguresDir != figDir {
		t.Errorf("figures_dir %q, want %q", disk.FiguresDir, figDir)
	}
	total := 0
	for _, s := range disk.Sections[:3] {
		for _, name := range s.Figures {
			total++
			p, err := os.ReadFile(filepath.Join(figDir, name+".png"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := png.Decode(bytes.NewReader(p)); err != nil {
				t.Errorf("%s.png: %v", name, err)
			}
			if !strings.Contains(html, `href="report_figures/`+name+`.svg"`) {
				t.Errorf("the page does not link %s.svg", name)
			}
			v, err := os.ReadFile(filepath.Join(figDir, name+".svg"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(v, []byte("<svg")) || !bytes.HasSuffix(bytes.TrimSpace(v), []byte("</svg>")) {
				t.Errorf("%s.svg is not a complete SVG document", name)
			}
		}
	}
	if total != sum.Figures {
		t.Errorf("the sections list %d figures, the summary says %d", total, sum.Figures)
	}
	// A second build replaces the first.
	if _, err := Build(Options{Run: run, Out: out}); err != nil {
		t.Fatalf("rebuilding: %v", err)
	}
	if raw, _ := os.ReadFile(out); strings.Contains(string(raw), "EPK output") {
		t.Error("the rebuilt report still shows the EPK outputs")
	}
}

func TestBuildBadInput(t *testing.T) {
	root := t.TempDir()
	run, epk, _ := fixture(t, root)
	other := filepath.Join(root, "other")
	fakeRun(t, other, "b")
	empty := filepath.Join(root, "empty")
	os.MkdirAll(empty, 0o755)
	out := filepath.Join(root, "r", "report.html")
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"no run", Options{Run: filepath.Join(root, "nope"), Out: out}, "not a run directory"},
		{"no run given", Options{Out: out}, "invalid Run"},
		{"epk of another run", Options{Run: other, EPK: epk[:1], Out: out}, "different run"},
		{"not an epk output", Options{Run: run, EPK: []string{empty}, Out: out}, "not an EPK output"},
		{"out not html", Options{Run: run, Out: filepath.Join(root, "r", "report.txt")}, ".html"},
		{"no out", Options{Run: run}, ".html"},
		{"missing experiment", Options{Run: run, Experiments: []string{filepath.Join(root, "nope")}, Out: out}, "experiment directory"},
		{"empty experiment", Options{Run: run, Experiments: []string{empty}, Out: out}, "not an experiment output"},
	}
	for _, c := range cases {
		_, err := Build(c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", c.name, err, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "r")); err == nil {
		t.Error("a refused report left files behind")
	}
	// FILE.json that is not a report's summary is not overwritten.
	data := filepath.Join(root, "data.json")
	os.WriteFile(data, []byte(`{"precious": true}`), 0o644)
	if _, err := Build(Options{Run: run, Out: filepath.Join(root, "data.html")}); err == nil || !strings.Contains(err.Error(), "not a report summary") {
		t.Errorf("existing data.json: %v", err)
	}
	// A report another writer is writing to the same file.
	held, err := lock.File(out)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	want := fmt.Sprintf("report: another explaind process (PID %d) is writing to %s; wait for it to finish or stop it", os.Getpid(), out)
	if _, err := Build(Options{Run: run, Out: out}); err == nil || err.Error() != want {
		t.Errorf("a locked --out: %v; want %q", err, want)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a refused report wrote %s: %v", out, err)
	}
}

// TestGroups checks the layer groups of the report's figures: the models'
// modules (models.ModuleOf), in model order.
func TestGroups(t *testing.T) {
	names, of := groups([]string{"input_emb.weight", "head3_encoder.weight", "head1_decoder.weight", "linear1.bias", "linear2.weight",
		"decoder.weight", "positional_encoding.pe", "2.module.0.0.weight", "9.weight", "w"})
	want := []string{"embedding", "attention", "linear1", "linear2", "decoder", "positional_encoding", "layer 2", "layer 9", "w"}
	if !slices.Equal(names, want) || !slices.Equal(of, []int{0, 1, 1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Errorf("groups %v %v, want %v [0 1 1 2 3 4 5 6 7 8]", names, of, want)
	}
}

func TestFlatFields(t *testing.T) {
	fs, err := flatFields([]byte(`{"b": 1, "a": {"y": "s", "x": [1, 2]}, "e": {}, "l": [{"k": true}, null]}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []field{{"b", "1"}, {"a.y", "s"}, {"a.x", "[1, 2]"}, {"e", "{}"}, {"l[0].k", "true"}, {"l[1]", "null"}}
	if !slices.Equal(fs, want) {
		t.Errorf("got %v, want %v", fs, want)
	}
	if _, err := flatFields([]byte(`{"a": 1} x`)); err == nil {
		t.Error("trailing data accepted")
	}
}

// TestRenderInChromium opens the report in headless Chromium and checks
// that the screenshot shows something. Set EXPLAIND_REPORT_KEEP=DIR to
// keep the report and screenshot.png in DIR.
func TestRenderInChromium(t *testing.T) {
	browser, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	root := os.Getenv("EXPLAIND_REPORT_KEEP")
	if root == "" {
		root = t.TempDir()
	}
	root, _ = filepath.Abs(root)
	run, epk, exp := fixture(t, filepath.Join(root, "inputs"))
	out := filepath.Join(root, "report.html")
	if _, err := Build(Options{Run: run, EPK: epk, Experiments: []string{exp}, Out: out}); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(root, "screenshot.png")
	os.Remove(shot)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
		"--no-first-run", "--user-data-dir="+filepath.Join(t.TempDir(), "profile"),
		"--screenshot="+shot, "--window-size=1200,3000", "file://"+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, b)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	if b.Dx() < 1000 || b.Dy() < 2000 {
		t.Errorf("screenshot is %v", b)
	}
	// Non-blank: a good share of pixels is not white, and there are many
	// distinct colours (text, lines, the kernel's heat map).
	dark, colors := 0, map[color.RGBA]bool{}
	for y := b.Min.Y; y < b.Max.Y; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			c := color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)
			if int(c.R)+int(c.G)+int(c.B) < 600 {
				dark++
			}
			if len(colors) < 1000 {
				colors[c] = true
			}
		}
	}
	n := (b.Dx() / 3) * (b.Dy() / 3)
	if dark < n/100 || len(colors) < 50 {
		t.Errorf("the screenshot looks blank: %d of %d sampled pixels not white, %d colours", dark, n, len(colors))
	}
}

// TestDegenerateFigures draws figures from data gonum/plot cannot take as
// it stands: constant values on a log axis, single points, nothing finite,
// an all-zero matrix.
func TestDegenerateFigures(t *testing.T) {
	nan := math.NaN()
	for _, c := range []struct {
		name  string
		logY  bool
		floor float64
		ss    []series
		none  bool
	}{
		{"constant log", true, 1e-18, []series{{x: []float64{0, 1, 2}, y: []float64{1e-12, 1e-12, 1e-12}}}, false},
		{"zeros log", true, 1e-18, []series{{x: []float64{0, 1}, y: []float64{0, 0}}}, false},
		{"not positive, log, no floor", true, 0, []series{{x: []float64{0, 1}, y: []float64{-1, 0}}}, true},
		{"one point", false, 0, []series{{name: "p", x: []float64{3}, y: []float64{2}}}, false},
		{"constant", false, 0, []series{{x: []float64{0, 1}, y: []float64{5, 5}}}, false},
		{"nothing finite", false, 0, []series{{x: []float64{0, 1}, y: []float64{nan, math.Inf(1)}}}, true},
	} {
		ch, err := linePlot(c.name, "x", "y", c.logY, c.floor, c.ss)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if (ch == nil) != c.none {
			t.Fatalf("%s: chart %v, want none: %v", c.name, ch, c.none)
		}
		if ch == nil {
			continue
		}
		f, err := ch.render("t", c.name, "", figWidth, figHeight)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if _, err := png.Decode(bytes.NewReader(f.PNG)); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	if f, err := heatmap("h", "", "", "", "", grid{rows: 2, cols: 3, v: make([]float64, 6)}); f != nil || err != nil {
		t.Errorf("all-zero heat map: %v, %v", f, err)
	}
	wide := grid{rows: 2, cols: 4001, v: make([]float64, 2*4001)}
	wide.v[5] = 1
	f, err := heatmap("h", "wide", "", "", "", wide)
	if err != nil || f == nil || !strings.Contains(f.Caption, "mean of 3 neighbouring") {
		t.Errorf("wide heat map: %v, %+v", err, f)
	}
	ch, err := barPlot("zeros", "", []string{"a", "b"}, []float64{0, nan})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.render("b", "", "", figWidth, figHeight); err != nil {
		t.Error(err)
	}
}

// TestBuildBareRun builds a report of a run that has not finished: no
// summary.json and no metrics yet.
func TestBuildBareRun(t *testing.T) {
	root := t.TempDir()
	run := filepath.Join(root, "run")
	fakeRun(t, run, "a")
	os.Remove(filepath.Join(run, train.SummaryFile))
	os.Remove(filepath.Join(run, train.MetricsFile))
	s, err := Build(Options{Run: run, Out: filepath.Join(root, "r.html")})
	if err != nil {
		t.Fatal(err)
	}
	if s.Figures != 0 || len(s.Sections) != 2 || s.Sections[0].Kind != "findings" || len(s.Sections[1].Notes) != 2 {
		t.Errorf("summary %+v", s)
	}
	b, _ := os.ReadFile(filepath.Join(root, "r.html"))
	if !strings.Contains(string(b), "no training metrics") || !strings.Contains(string(b), "Configuration") {
		t.Error("the page does not say what is missing")
	}
}
