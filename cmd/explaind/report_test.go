package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/npy"
)

// writeValidationEPK writes an EPK output with the validation preset only
// (made-up values) that claims to explain the run with fingerprint fp.
func writeValidationEPK(t *testing.T, dir, run, fp string, x, c, steps int) {
	t.Helper()
	m, err := history.ReadManifest(run)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var shapes [][]int
	for _, p := range m.Params {
		names, shapes = append(names, p.Name), append(shapes, p.Shape)
	}
	w, err := epkfile.NewWriter(dir, epkfile.Manifest{Run: run, RunFingerprint: fp, Presets: []string{epkfile.Validation},
		Steps: [2]int{0, steps}, Precision: "float64", Quadrature: "exact", Test: epkfile.TestSet{Split: "val", Count: x}, Classes: c,
		Tensors: names, TensorShapes: shapes})
	if err != nil {
		t.Fatal(err)
	}
	idx := make([]int, x)
	for i := range idx {
		idx[i] = i % c
	}
	for _, n := range []string{"test_indices", "test_labels"} {
		if err := epkfile.Write(w, n, npy.Ints(idx), epkfile.ArrayInfo{Shape: []int{x}}); err != nil {
			t.Fatal(err)
		}
	}
	v := make([]float64, x*c)
	for i := range v {
		v[i] = -2 + 0.01*float64(i%7)
	}
	for _, n := range []string{"f0", "model", "epk", "data", "reg", "resid", "quad_residual"} {
		if err := epkfile.Write(w, n, v, epkfile.ArrayInfo{Shape: []int{x, c}}); err != nil {
			t.Fatal(err)
		}
	}
	comp := make([]float64, steps)
	for i := range comp {
		comp[i] = 1e-12
	}
	if err := epkfile.Write(w, "step_max_completeness", comp, epkfile.ArrayInfo{Shape: []int{steps}}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteManifest(true); err != nil {
		t.Fatal(err)
	}
}

func TestReport(t *testing.T) {
	root := t.TempDir()
	dir := swapTestRun(t)
	m, err := history.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	epk := filepath.Join(root, "epk")
	writeValidationEPK(t, epk, dir, epkfile.RunFingerprint(m), 4, 9, len(m.Steps))
	stale := filepath.Join(root, "stale")
	writeValidationEPK(t, stale, dir, "0123456789abcdef", 4, 9, len(m.Steps))
	exp := filepath.Join(root, "swap")
	os.MkdirAll(exp, 0o755)
	os.WriteFile(filepath.Join(exp, "summary.json"), []byte(`{"swapped": 3}`), 0o644)

	html := filepath.Join(root, "out", "r.html")
	out, err := run("report", "--run", dir, "--epk", epk, "--experiments", exp, "--out", html)
	if err != nil {
		t.Fatalf("report: %v\n%s", err, out)
	}
	for _, want := range []string{"wrote " + html, "run " + dir, "epk " + epk, "experiment " + exp, filepath.Join(root, "out", "r.json")} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q:\n%s", want, out)
		}
	}
	b, err := os.ReadFile(html)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Training and validation loss", "Validation (computed from the arrays)", "&#34;swapped&#34;: 3", `src="data:image/png;base64,`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	for _, f := range []string{"r.json", "r_figures/run_loss.png", "r_figures/run_loss.svg", "r_figures/epk1_validation.svg"} {
		if _, err := os.Stat(filepath.Join(root, "out", f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}

	bad := filepath.Join(root, "bad", "r.html")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"report", "--out", bad}, `"run" not set`},
		{[]string{"report", "--run", dir}, `"out" not set`},
		{[]string{"report", "--run", filepath.Join(root, "nope"), "--out", bad}, "not a run directory"},
		{[]string{"report", "--run", dir, "--epk", stale, "--out", bad}, "different run"},
		{[]string{"report", "--run", dir, "--out", filepath.Join(root, "bad", "r.pdf")}, ".html"},
	} {
		if _, err := run(c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want an error mentioning %q", c.args, err, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "bad")); err == nil {
		t.Error("a refused report left files behind")
	}
}
