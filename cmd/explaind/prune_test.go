package main

import (
	"encoding/csv"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/experiments/expio/expiotest"
	"github.com/explaind/explaind/experiments/prune"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/train"
)

// pruneTestRun returns a tiny CNN run (ResNet-9 at width/16, 4 steps) on
// fabricated CIFAR-2 data with 20 test images, shared by the tests
// (trainTestRun).
func pruneTestRun(t *testing.T) string {
	t.Helper()
	return trainTestRun(t, "cnn", "--width-div", "16", "--train-size", "16",
		"--batch-size", "8", "--epochs", "2", "--peak-epoch", "1", "--lr", "0.05", "--checkpoint-every", "4", "--quiet")
}

// fakeEPK writes an EPK output for the run with the given presets over the
// test samples idx: importance/<tensor> from importance (pruning) and
// scores/<tensor> from scores (components), each called per tensor.
func fakeEPK(t *testing.T, runDir, dir, fingerprint string, presets []string, idx []int,
	importance func(name string, n int) []float64, scores func(name string, x, n int) []float64) {
	t.Helper()
	m, err := history.ReadManifest(runDir)
	if err != nil {
		t.Fatal(err)
	}
	var cfg train.Config
	if err := json.Unmarshal(m.Config, &cfg); err != nil {
		t.Fatal(err)
	}
	d, err := train.LoadData[float32](&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if fingerprint == "" {
		fingerprint = epkfile.RunFingerprint(m)
	}
	em := epkfile.Manifest{Run: runDir, RunFingerprint: fingerprint, Presets: presets, Test: epkfile.TestSet{Split: "val", Count: len(idx)},
		Classes: d.Val.Classes, Precision: "float64", Quadrature: "midpoint:4"}
	for _, p := range m.Params {
		em.Tensors = append(em.Tensors, p.Name)
		em.TensorShapes = append(em.TensorShapes, p.Shape)
	}
	w, err := epkfile.NewWriter(dir, em)
	if err != nil {
		t.Fatal(err)
	}
	labels := make([]int, len(idx))
	for i, x := range idx {
		labels[i] = d.Val.Labels[x]
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(epkfile.Write(w, "test_indices", data64(idx), epkfile.ArrayInfo{Shape: []int{len(idx)}, Axes: []string{"x"}}))
	must(epkfile.Write(w, "test_labels", data64(labels), epkfile.ArrayInfo{Shape: []int{len(idx)}, Axes: []string{"x"}}))
	for _, p := range m.Params {
		n := 1
		for _, s := range p.Shape {
			n *= s
		}
		if slices.Contains(presets, epkfile.Pruning) {
			must(epkfile.Write(w, "importance/"+p.Name, importance(p.Name, n),
				epkfile.ArrayInfo{Shape: p.Shape, Preset: epkfile.Pruning}))
		}
		if slices.Contains(presets, epkfile.Components) {
			must(epkfile.Write(w, "scores/"+p.Name, scores(p.Name, len(idx), n),
				epkfile.ArrayInfo{Shape: append([]int{len(idx)}, p.Shape...), Preset: epkfile.Components}))
		}
	}
	must(w.WriteManifest(true))
}

func data64(v []int) []int64 {
	out := make([]int64, len(v))
	for i, x := range v {
		out[i] = int64(x)
	}
	return out
}

// finalMagnitudes returns |θ_final| of every parameter of the run.
func finalMagnitudes(t *testing.T, dir string) map[string][]float64 {
	t.Helper()
	o, err := train.Open[float32](dir)
	if err != nil {
		t.Fatal(err)
	}
	r, sess := o.Replay, o.Session
	if err := r.Seek(r.Steps()); err != nil {
		t.Fatal(err)
	}
	out := map[string][]float64{}
	for _, p := range sess.Params() {
		for _, v := range p.Value.Data {
			out[p.Name] = append(out[p.Name], math.Abs(float64(v)))
		}
	}
	return out
}

// runPrune runs `explaind prune` with args (and --quiet) and returns the
// summary it wrote to out.
func runPrune(t *testing.T, out string, args ...string) prune.Summary {
	t.Helper()
	if o, err := run(append(append([]string{"prune"}, args...), "--out", out, "--quiet")...); err != nil {
		t.Fatalf("prune: %v\n%s", err, o)
	}
	raw, err := os.ReadFile(filepath.Join(out, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s prune.Summary
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPrune(t *testing.T) {
	root := t.TempDir()
	runDir := pruneTestRun(t)
	mags := finalMagnitudes(t, runDir)
	// Importance |θ_final|: EPK pruning must then equal magnitude pruning.
	epkDir := filepath.Join(root, "epk")
	scoring := []int{0, 2, 3, 5, 7, 8, 11, 12, 13, 17, 18, 19}
	fakeEPK(t, runDir, epkDir, "", []string{epkfile.Validation, epkfile.Pruning}, scoring,
		func(name string, n int) []float64 { return mags[name] }, nil)
	out := filepath.Join(root, "prune")
	s := runPrune(t, out, "--run", runDir, "--epk", epkDir, "--fractions", "0,0.05,0.5,1", "--seeds", "3")
	if s.ScoringSamples != 12 || s.EvalSamples != 8 || s.Scope != prune.ScopeGlobal || len(s.Curves) != 3 {
		t.Fatalf("summary: %d scoring, %d eval samples, scope %s, %d curves; want 12, 8, global, 3", s.ScoringSamples, s.EvalSamples, s.Scope, len(s.Curves))
	}
	last := len(s.Layers) - 1
	if s.Layers[last].Name != "9.weight" || s.Layers[last].Prunable || s.PrunableParams != prune.PrunableSize(s.Layers) {
		t.Errorf("layers %+v: the final Linear layer must be kept", s.Layers)
	}
	epk, mag := s.Curves[0], s.Curves[2]
	for i, p := range epk.Points {
		q := mag.Points[i]
		if p.Accuracy != q.Accuracy || p.KL != q.KL || p.Kept != q.Kept || !slices.Equal(p.PrunedPerLayer, q.PrunedPerLayer) {
			t.Errorf("fraction %v: EPK by |θ| %+v differs from magnitude %+v", p.Fraction, p, q)
		}
	}
	for _, c := range s.Curves {
		one := c.Points[len(c.Points)-1]
		if one.Fraction != 1 || one.Agreement.Min != 1 || one.KL.Max != 0 || one.Accuracy.Min != s.Unpruned.Accuracy || one.Accuracy.Max != s.Unpruned.Accuracy {
			t.Errorf("%s at fraction 1: %+v, want the unpruned model (accuracy %v)", c.Method, one, s.Unpruned.Accuracy)
		}
		zero := c.Points[0]
		if zero.Kept != 0 || zero.PrunedPerLayer[0] != 1 || zero.PrunedPerLayer[last] != 0 {
			t.Errorf("%s at fraction 0: %+v", c.Method, zero)
		}
	}
	f, err := os.Open(filepath.Join(out, "prune.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil || len(rows) != 1+4*(2+3) || rows[0][2] != "fraction_kept" || rows[0][8] != "pruned:0.0.weight" {
		t.Fatalf("prune.csv: %d rows (%v), want a header and 20 rows", len(rows), err)
	}
	// Every random draw prunes as many parameters per layer as EPK.
	epkRows := map[string][]string{}
	for _, r := range rows[1:] {
		if r[0] == prune.MethodEPK {
			epkRows[r[2]] = r[3:5]
			epkRows[r[2]] = append(epkRows[r[2]], r[8:]...)
		}
	}
	for _, r := range rows[1:] {
		if r[0] == prune.MethodRandom && !slices.Equal(append(slices.Clone(r[3:5]), r[8:]...), epkRows[r[2]]) {
			t.Errorf("random seed %s at %s: %v, EPK %v", r[1], r[2], r, epkRows[r[2]])
		}
	}
	expiotest.CheckFiles(t, out, "accuracy_custom.png", "agreement_custom.svg", "kl_custom.png", "pruned_per_layer_epk_custom.png", "pruned_per_layer_magnitude_custom.svg")
	expiotest.CheckFiles(t, out, s.Files...)

	// Errors before any work: nothing is written.
	modRun := swapTestRun(t)
	modEPK := filepath.Join(root, "modepk")
	fakeEPK(t, modRun, modEPK, "", []string{epkfile.Pruning, epkfile.Components}, []int{0, 1, 2},
		func(_ string, n int) []float64 { return make([]float64, n) }, func(_ string, x, n int) []float64 { return make([]float64, x*n) })
	otherEPK := filepath.Join(root, "otherepk")
	fakeEPK(t, runDir, otherEPK, "0123456789abcdef", []string{epkfile.Pruning}, scoring,
		func(_ string, n int) []float64 { return make([]float64, n) }, nil)
	noPreset := filepath.Join(root, "nopreset")
	fakeEPK(t, runDir, noPreset, "", []string{epkfile.Validation}, scoring, nil, nil)
	modNoPreset := filepath.Join(root, "modnopreset")
	fakeEPK(t, modRun, modNoPreset, "", []string{epkfile.Validation}, []int{0, 1}, nil, nil)
	bad := filepath.Join(root, "bad")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"prune", "--run", runDir, "--epk", epkDir, "--out", bad, "--fractions", "0.1,1.5"}, "outside [0, 1]"},
		{[]string{"prune", "--run", runDir, "--epk", epkDir, "--out", bad, "--fractions", "-0.1"}, "outside [0, 1]"},
		{[]string{"prune", "--run", runDir, "--epk", epkDir, "--out", bad, "--scope", "layer"}, "scope"},
		{[]string{"prune", "--run", runDir, "--epk", otherEPK, "--out", bad}, "different run"},
		{[]string{"prune", "--run", runDir, "--epk", noPreset, "--out", bad}, "explaind epk --run " + runDir + " --out DIR --preset pruning"},
		{[]string{"prune", "--run", modRun, "--epk", modEPK, "--out", bad}, "explaind components"},
		{[]string{"prune", "--run", runDir, "--epk", filepath.Join(root, "nothing"), "--out", bad}, "not an EPK output"},
		{[]string{"prune", "--run", runDir, "--epk", epkDir, "--out", bad, "--unpruned", "10.weight"}, "10.weight"},
		{[]string{"components", "--run", runDir, "--epk", epkDir, "--out", bad}, "modulo"},
		{[]string{"components", "--run", modRun, "--epk", otherEPK, "--out", bad}, "different run"},
		{[]string{"components", "--run", modRun, "--epk", modNoPreset, "--out", bad}, "--preset components"},
		{[]string{"components", "--run", modRun, "--epk", modEPK, "--out", bad, "--top", "0"}, "--top"},
	}
	for _, c := range cases {
		if _, err := run(append(c.args, "--quiet")...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want an error mentioning %q", c.args, err, c.want)
		}
	}
	if _, err := os.Stat(bad); err == nil {
		t.Error("a refused command left an output directory behind")
	}
}

// TestPruneSeveralEPK: importances of EPK outputs of disjoint test samples
// are added (two outputs whose importances add up to |θ_final|, neither
// ranking like it alone, prune like magnitude), the pruned models are
// evaluated on the samples neither scored, and outputs that overlap or
// were computed differently are refused before any work.
func TestPruneSeveralEPK(t *testing.T) {
	root := t.TempDir()
	runDir := pruneTestRun(t)
	mags := finalMagnitudes(t, runDir)
	rng := rand.New(rand.NewPCG(3, 4))
	share := map[string][]float64{}
	for name, m := range mags {
		for range m {
			share[name] = append(share[name], rng.Float64())
		}
	}
	part := func(first bool) func(string, int) []float64 {
		return func(name string, n int) []float64 {
			out := make([]float64, n)
			for i, w := range share[name] {
				if !first {
					w = 1 - w
				}
				out[i] = w * mags[name][i]
			}
			return out
		}
	}
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	fakeEPK(t, runDir, a, "", []string{epkfile.Validation, epkfile.Pruning}, []int{0, 2, 3, 5, 7, 8}, part(true), nil)
	fakeEPK(t, runDir, b, "", []string{epkfile.Validation, epkfile.Pruning}, []int{11, 12, 13, 17, 18, 19}, part(false), nil)
	out := filepath.Join(root, "prune")
	s := runPrune(t, out, "--run", runDir, "--epk", a, "--epk", b, "--fractions", "0.05,0.2,0.5", "--seeds", "1")
	if s.ScoringSamples != 12 || s.EvalSamples != 8 || !slices.Equal(s.EPKOutputs, []string{a, b}) {
		t.Fatalf("summary: %d scoring, %d eval samples, outputs %v; want 12, 8, [%s %s]", s.ScoringSamples, s.EvalSamples, s.EPKOutputs, a, b)
	}
	epk, mag := s.Curves[0], s.Curves[2]
	for i, p := range epk.Points {
		q := mag.Points[i]
		if p.Kept != q.Kept || !slices.Equal(p.PrunedPerLayer, q.PrunedPerLayer) || p.Accuracy != q.Accuracy || p.KL != q.KL {
			t.Errorf("fraction %v: the summed importance %+v differs from magnitude %+v", p.Fraction, p, q)
		}
	}
	// Alone, the first output does not rank like magnitude: the test
	// above could not pass without the sum.
	alone := filepath.Join(root, "alone")
	one := runPrune(t, alone, "--run", runDir, "--epk", a, "--fractions", "0.05,0.2,0.5", "--seeds", "1")
	same := true
	for i, p := range one.Curves[0].Points {
		same = same && slices.Equal(p.PrunedPerLayer, one.Curves[2].Points[i].PrunedPerLayer)
	}
	if same {
		t.Error("the first output alone prunes like magnitude; the test cannot tell a sum from one output")
	}

	overlap := filepath.Join(root, "overlap")
	fakeEPK(t, runDir, overlap, "", []string{epkfile.Pruning}, []int{1, 5}, part(true), nil)
	otherTol := filepath.Join(root, "othertol")
	fakeEPK(t, runDir, otherTol, "", []string{epkfile.Pruning}, []int{1, 4}, part(true), nil)
	mp := filepath.Join(otherTol, "manifest.json")
	raw, err := os.ReadFile(mp)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m["tol"] = 1e-3
	raw, _ = json.Marshal(m)
	if err := os.WriteFile(mp, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(root, "bad")
	for _, c := range []struct {
		epk  []string
		want string
	}{
		{[]string{a, overlap}, "test sample 5 is scored by both"},
		{[]string{a, a}, "scored by both"},
		{[]string{a, otherTol}, "differ in tolerance"},
	} {
		args := []string{"prune", "--run", runDir, "--out", bad, "--quiet"}
		for _, e := range c.epk {
			args = append(args, "--epk", e)
		}
		if _, err := run(args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want an error mentioning %q", c.epk, err, c.want)
		}
	}
	if _, err := os.Stat(bad); err == nil {
		t.Error("a refused command left an output directory behind")
	}
}
