package epkfile_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/history"
)

// TestWriteAndOpen writes an output of every kind of array, and reads it
// back: the manifest as written, each array's values, and an output that
// is not finished or not there refused.
func TestWriteAndOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "epk")
	m := epkfile.Manifest{Software: "test", Created: "2026-01-01T00:00:00Z", Run: "runs/r", RunFingerprint: "0123456789abcdef0123456789abcdef",
		Presets: []string{epkfile.Validation, epkfile.Components}, Steps: [2]int{2, 5}, Precision: "float64", Quadrature: "midpoint:4", Tol: 0,
		Test: epkfile.TestSet{Split: "val", Count: 2}, Classes: 3, Tensors: []string{"a.weight"}, TensorShapes: [][]int{{2}}}
	w, err := epkfile.NewWriter(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		t.Fatalf("NewWriter did not create %s (%v)", dir, err)
	}
	if _, err := epkfile.Open(dir); err == nil || !strings.Contains(err.Error(), dir+" is not an EPK output (no manifest.json); create one with `explaind epk --run RUN --out "+dir+"`") {
		t.Errorf("an output without a manifest: %v", err)
	}

	f0 := []float64{0.5, -1.25, 3, 1e-300, -0.1, 7}
	scores := []float32{1.5, -2.25, 0.1, 4}
	kernel := []float64{0.1, 1.0 / 3, -2e-8, 1e30, 5, 6}
	idx := []int64{4, 1}
	if err := epkfile.Write(w, "f0", f0, epkfile.ArrayInfo{Shape: []int{2, 3}, Axes: []string{"test", "class"}, Units: "log-probability", Preset: epkfile.Validation, Description: "start"}); err != nil {
		t.Fatal(err)
	}
	if err := epkfile.Write(w, "scores/a.weight", scores, epkfile.ArrayInfo{Shape: []int{2, 2}, Axes: []string{"test", "param_dim0"}, Preset: epkfile.Components}); err != nil {
		t.Fatal(err)
	}
	if err := epkfile.WriteFloat32(w, "kernel", kernel, epkfile.ArrayInfo{Shape: []int{3, 2}, Axes: []string{"class", "train"}}); err != nil {
		t.Fatal(err)
	}
	if err := epkfile.Write(w, "test_indices", idx, epkfile.ArrayInfo{Shape: []int{2}, Axes: []string{"test"}, Units: "index"}); err != nil {
		t.Fatal(err)
	}

	if err := w.WriteManifest(false); err != nil {
		t.Fatal(err)
	}
	if _, err := epkfile.Open(dir); !errors.Is(err, epkfile.ErrIncomplete) || !strings.Contains(err.Error(), "rerun the same `explaind epk` command to resume it") {
		t.Errorf("an unfinished output: %v, want ErrIncomplete", err)
	}
	if err := w.WriteManifest(true); err != nil {
		t.Fatal(err)
	}
	o, err := epkfile.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := m
	want.Format, want.Complete = epkfile.Format, true
	want.Arrays = map[string]epkfile.ArrayInfo{
		"f0":              {File: "f0.npy", Dtype: "float64", Shape: []int{2, 3}, Axes: []string{"test", "class"}, Units: "log-probability", Preset: epkfile.Validation, Description: "start"},
		"scores/a.weight": {File: "scores/a.weight.npy", Dtype: "float32", Shape: []int{2, 2}, Axes: []string{"test", "param_dim0"}, Preset: epkfile.Components},
		"kernel":          {File: "kernel.npy", Dtype: "float32", Shape: []int{3, 2}, Axes: []string{"class", "train"}},
		"test_indices":    {File: "test_indices.npy", Dtype: "int64", Shape: []int{2}, Axes: []string{"test"}, Units: "index"},
	}
	if o.Dir != dir || !reflect.DeepEqual(o.Manifest, want) {
		t.Errorf("opened %s:\n%+v\nwant\n%+v", o.Dir, o.Manifest, want)
	}
	if !reflect.DeepEqual(w.Manifest, want) {
		t.Errorf("the writer's manifest %+v", w.Manifest)
	}
	for name, info := range want.Arrays {
		if info.File != epkfile.FileName(name) {
			t.Errorf("FileName(%q) = %q, the manifest says %q", name, epkfile.FileName(name), info.File)
		}
		if _, err := os.Stat(filepath.Join(dir, info.File)); err != nil {
			t.Error(err)
		}
	}

	// The values, as float64.
	for _, c := range []struct {
		name string
		want []float64
	}{
		{"f0", f0},
		{"scores/a.weight", []float64{1.5, -2.25, float64(float32(0.1)), 4}},
		{"kernel", []float64{float64(float32(0.1)), float64(float32(1.0 / 3)), float64(float32(-2e-8)), float64(float32(1e30)), 5, 6}},
	} {
		a, err := o.Array(c.name)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !slices.Equal(a.Data, c.want) || !slices.Equal(a.Shape, want.Arrays[c.name].Shape) {
			t.Errorf("%s: %v of shape %v, want %v", c.name, a.Data, a.Shape, c.want)
		}
	}
	if v, err := o.Ints("test_indices"); err != nil || !slices.Equal(v, []int{4, 1}) {
		t.Errorf("test_indices %v (%v)", v, err)
	}
	if _, err := o.Array("nope"); err == nil || !strings.Contains(err.Error(), `the EPK output `+dir+` has no array "nope"`) {
		t.Errorf("a missing array: %v", err)
	}
	if _, err := o.Ints("nope"); err == nil || !strings.Contains(err.Error(), `has no array "nope"`) {
		t.Errorf("a missing integer array: %v", err)
	}
	// A manifest that disagrees with the file is not believed.
	info := o.Manifest.Arrays["f0"]
	info.Shape = []int{3, 2}
	o.Manifest.Arrays["f0"] = info
	if _, err := o.Array("f0"); err == nil || !strings.Contains(err.Error(), "f0.npy: shape [2 3], the manifest says [3 2]") {
		t.Errorf("a shape that disagrees with the manifest: %v", err)
	}
}

// TestOpenRefuses: another format and an unreadable manifest are errors
// naming the directory.
func TestOpenRefuses(t *testing.T) {
	for _, c := range []struct{ manifest, want string }{
		{`{"format": 2, "complete": true}`, "EPK output format 2, this explaind reads format 1"},
		{`{"format": 1, "complete": tru`, "/manifest.json: "},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(c.manifest), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := epkfile.Open(dir); err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("manifest %s: %v, want an error mentioning %q", c.manifest, err, c.want)
		}
	}
}

func TestRequire(t *testing.T) {
	o := &epkfile.Output{Dir: "out/epk", Manifest: epkfile.Manifest{Run: "runs/r", Presets: []string{epkfile.Validation, epkfile.Components}}}
	if err := o.Require(epkfile.Components); err != nil {
		t.Error(err)
	}
	want := `the EPK output out/epk has no "pruning" preset (it has validation, components); compute it with ` + "`explaind epk --run runs/r --out DIR --preset pruning`"
	if err := o.Require(epkfile.Pruning); err == nil || err.Error() != want {
		t.Errorf("a missing preset: %v, want %q", err, want)
	}
}

// run returns the manifest of a made-up run of two parameter tensors and
// three steps.
func run() *history.Manifest {
	return &history.Manifest{Software: "test", Config: json.RawMessage(`{"task":"modulo","epochs":3}`), Dtype: "float32", InitHash: "init",
		Steps:  []history.StepRecord{{Hash: "h1"}, {Hash: "h2"}, {Hash: "h3"}},
		Params: []history.ParamInfo{{Name: "w", Shape: []int{2, 3}}, {Name: "b", Shape: []int{3}}}}
}

// TestRunFingerprint: the fingerprint hashes the configuration, the
// initial parameters and every step's parameters, and nothing else.
func TestRunFingerprint(t *testing.T) {
	fp := epkfile.RunFingerprint(run())
	if len(fp) != 32 || strings.Trim(fp, "0123456789abcdef") != "" || epkfile.RunFingerprint(run()) != fp {
		t.Fatalf("fingerprint %q: want 32 hex digits, the same for the same run", fp)
	}
	for _, c := range []struct {
		name string
		edit func(m *history.Manifest)
		same bool
	}{
		{"configuration", func(m *history.Manifest) { m.Config = json.RawMessage(`{"task":"modulo","epochs":4}`) }, false},
		{"initial parameters", func(m *history.Manifest) { m.InitHash = "init2" }, false},
		{"a step's parameters", func(m *history.Manifest) { m.Steps[1].Hash = "h2'" }, false},
		{"another step", func(m *history.Manifest) { m.Steps = append(m.Steps, history.StepRecord{Hash: "h4"}) }, false},
		{"one step less", func(m *history.Manifest) { m.Steps = m.Steps[:2] }, false},
		{"the software", func(m *history.Manifest) { m.Software = "other" }, true},
		{"a step's learning rate", func(m *history.Manifest) { m.Steps[0].LR = 0.5 }, true},
	} {
		m := run()
		c.edit(m)
		if got := epkfile.RunFingerprint(m); (got == fp) != c.same {
			t.Errorf("%s changed: fingerprint %s, was %s; want the same: %v", c.name, got, fp, c.same)
		}
	}
}

// TestCheckRun: an output explains a run only with the run's fingerprint
// and its parameter tensors, in order.
func TestCheckRun(t *testing.T) {
	m := run()
	good := func() *epkfile.Output {
		return &epkfile.Output{Dir: "out/epk", Manifest: epkfile.Manifest{Run: "runs/r", RunFingerprint: epkfile.RunFingerprint(m),
			Tensors: []string{"w", "b"}, TensorShapes: [][]int{{2, 3}, {3}}}}
	}
	if err := good().CheckRun(m); err != nil {
		t.Fatal(err)
	}
	other := run()
	other.Steps[2].Hash = "h3'"
	for _, c := range []struct {
		name string
		edit func(o *epkfile.Output)
		run  *history.Manifest
		want string
	}{
		{"another run", func(*epkfile.Output) {}, other,
			"the EPK output out/epk was computed for a different run (fingerprint " + epkfile.RunFingerprint(m) + ", this run's is " + epkfile.RunFingerprint(other) + "; it names run runs/r): run `explaind epk` on this run"},
		{"a tensor less", func(o *epkfile.Output) { o.Manifest.Tensors, o.Manifest.TensorShapes = []string{"w"}, [][]int{{2, 3}} }, m,
			"the EPK output out/epk lists 1 tensors, the run has 2 parameters"},
		{"a shape less", func(o *epkfile.Output) { o.Manifest.TensorShapes = o.Manifest.TensorShapes[:1] }, m,
			"the EPK output out/epk lists 2 tensors, the run has 2 parameters"},
		{"another name", func(o *epkfile.Output) { o.Manifest.Tensors[1] = "c" }, m,
			"the EPK output's tensor 1 is c [3], the run's parameter b [3]"},
		{"another shape", func(o *epkfile.Output) { o.Manifest.TensorShapes[0] = []int{3, 2} }, m,
			"the EPK output's tensor 0 is w [3 2], the run's parameter w [2 3]"},
		{"another order", func(o *epkfile.Output) {
			o.Manifest.Tensors, o.Manifest.TensorShapes = []string{"b", "w"}, [][]int{{3}, {2, 3}}
		}, m, "the EPK output's tensor 0 is b [3], the run's parameter w [2 3]"},
	} {
		o := good()
		c.edit(o)
		if err := o.CheckRun(c.run); err == nil || err.Error() != c.want {
			t.Errorf("%s: %v,\nwant %q", c.name, err, c.want)
		}
	}
}
