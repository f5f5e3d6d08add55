package testrun_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/explaind/explaind/data"
	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/testrun"
	"github.com/explaind/explaind/train"
)

func TestMain(m *testing.M) { testrun.Main(m) }

// recorder is a testing.TB that records failures and cleanups instead of
// acting on them, to test the checks themselves. Fatal stops the calling
// function with a panic that fatal recovers.
type recorder struct {
	testing.TB
	errs     []string
	cleanups []func()
}

type fatalPanic struct{}

func (r *recorder) Helper()           {}
func (r *recorder) Cleanup(f func())  { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Error(args ...any) { r.errs = append(r.errs, fmt.Sprint(args...)) }
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recorder) Fatal(args ...any) { r.Error(args...); panic(fatalPanic{}) }
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	panic(fatalPanic{})
}

// cleanup runs the recorded cleanups, last first.
func (r *recorder) cleanup() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	r.cleanups = nil
}

// fatal calls f and reports whether it stopped at a Fatal.
func fatal(f func()) (stopped bool) {
	defer func() {
		if p := recover(); p != nil {
			if _, ok := p.(fatalPanic); !ok {
				panic(p)
			}
			stopped = true
		}
	}()
	f()
	return false
}

func TestModulo(t *testing.T) {
	c := testrun.Modulo(5, 2)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := train.ModuloTask{P: 7, TrainSize: 20, ValSize: 8, DModel: 8, Heads: 2, MLP: 12}
	if c.Task != "modulo" || *c.Modulo != want || c.Epochs != 5 || c.CheckpointEvery != 2 || c.StopAtPerfect || c.Optimizer != train.ModuloDefaults().Optimizer {
		t.Errorf("Modulo(5, 2) = %+v (task %+v)", c, *c.Modulo)
	}
	// Each call has its own task: changing one leaves the next as it was.
	c.Modulo.TrainSize = 3
	if testrun.Modulo(5, 2).Modulo.TrainSize != 20 {
		t.Error("Modulo shares its task between calls")
	}
}

// TestTrainIsSharedAndDeterministic: the same configuration gives the
// same directory, trained once; it holds the run that training it afresh
// gives; another configuration gives another run.
func TestTrainIsSharedAndDeterministic(t *testing.T) {
	c := testrun.Modulo(3, 2)
	dir := testrun.Train[float32](t, c)
	st, err := os.Stat(filepath.Join(dir, history.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	if again := testrun.Train[float32](t, c); again != dir {
		t.Errorf("the same configuration trained into %s and %s", dir, again)
	}
	if st2, err := os.Stat(filepath.Join(dir, history.ManifestFile)); err != nil || !st2.ModTime().Equal(st.ModTime()) {
		t.Errorf("asking again rewrote the run (%v)", err)
	}
	fresh := filepath.Join(t.TempDir(), "run")
	if _, err := train.Train[float32](context.Background(), fresh, c, train.Options{}); err != nil {
		t.Fatal(err)
	}
	a, b := manifest(t, dir), manifest(t, fresh)
	if len(a.Steps) != 3 || epkfile.RunFingerprint(a) != epkfile.RunFingerprint(b) {
		t.Errorf("shared run of %d steps, fingerprint %s; trained afresh %s", len(a.Steps), epkfile.RunFingerprint(a), epkfile.RunFingerprint(b))
	}
	c.Epochs = 4
	other := testrun.Train[float32](t, c)
	if other == dir || len(manifest(t, other).Steps) != 4 {
		t.Errorf("4 epochs: %s, %d steps (3 epochs: %s)", other, len(manifest(t, other).Steps), dir)
	}
	if d64 := testrun.Train[float64](t, testrun.Modulo(3, 2)); d64 == dir || manifest(t, d64).Dtype != "float64" {
		t.Errorf("float64: %s (float32: %s)", d64, dir)
	}
}

func manifest(t *testing.T, dir string) *history.Manifest {
	t.Helper()
	m, err := history.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestDirChecksTheFixture: a test that modifies a shared fixture fails
// when it ends, and so does every later test that asks for it; one that
// modifies its Copy does not; a failed build fails every test that asks
// for it.
func TestDirChecksTheFixture(t *testing.T) {
	builds := 0
	build := func(dir string) error {
		builds++
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		// A file beside the run belongs to the fixture too.
		if err := os.WriteFile(filepath.Join(dir, "..", "data"), []byte("data"), 0o644); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, "a"), []byte("a"), 0o644)
	}
	key := t.Name()
	r := &recorder{TB: t}
	dir := testrun.Dir(r, key, build)
	cp := testrun.Copy(t, dir)
	if filepath.Base(cp) != filepath.Base(dir) || cp == dir {
		t.Errorf("Copy(%s) = %s", dir, cp)
	}
	if b, err := os.ReadFile(filepath.Join(cp, "a")); err != nil || string(b) != "a" {
		t.Errorf("the copy holds %q (%v)", b, err)
	}
	if err := os.WriteFile(filepath.Join(cp, "a"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.cleanup()
	if len(r.errs) != 0 {
		t.Errorf("an untouched fixture: %q", r.errs)
	}

	for _, change := range []struct {
		name string
		edit func(dir string) error
	}{
		{"a file", func(dir string) error { return os.WriteFile(filepath.Join(dir, "a"), []byte("b"), 0o644) }},
		{"a new file", func(dir string) error { return os.WriteFile(filepath.Join(dir, "b"), nil, 0o644) }},
		{"the data beside the run", func(dir string) error { return os.WriteFile(filepath.Join(dir, "..", "data"), []byte("DATA"), 0o644) }},
	} {
		key := key + "/" + change.name
		r := &recorder{TB: t}
		dir := testrun.Dir(r, key, build)
		if again := testrun.Dir(r, key, build); again != dir {
			t.Fatalf("asking again: %s, first %s", again, dir)
		}
		if err := change.edit(dir); err != nil {
			t.Fatal(err)
		}
		r.cleanup()
		if len(r.errs) != 2 || !strings.Contains(r.errs[0], "the test modified the shared fixture "+key) {
			t.Errorf("%s changed: %q, want an error from each of the two asks", change.name, r.errs)
		}
		// Later tests are told which test modified it.
		r = &recorder{TB: t}
		if !fatal(func() { testrun.Dir(r, key, build) }) || len(r.errs) != 1 || !strings.Contains(r.errs[0], "was modified by "+t.Name()) {
			t.Errorf("asking for a fixture that %s changed in: %q", change.name, r.errs)
		}
	}
	if builds != 4 {
		t.Errorf("built %d times, want once per key (4)", builds)
	}

	// A build that fails the test instead of returning its error fails
	// every later test that asks for it.
	stop := &recorder{TB: t}
	if !fatal(func() { testrun.Dir(stop, key+"/stops", func(string) error { stop.Fatal("no data"); return nil }) }) {
		t.Error("the build's Fatal did not stop the test")
	}
	for range 2 {
		r := &recorder{TB: t}
		if !fatal(func() { testrun.Dir(r, key+"/stops", build) }) || len(r.errs) != 1 || !strings.Contains(r.errs[0], "stopped in an earlier test") {
			t.Errorf("asking for a fixture whose build stopped: %q", r.errs)
		}
	}

	boom := errors.New("boom")
	for range 2 {
		r := &recorder{TB: t}
		if !fatal(func() { testrun.Dir(r, key+"/fails", func(string) error { return boom }) }) || len(r.errs) != 1 || !strings.Contains(r.errs[0], "boom") {
			t.Errorf("a failed build: %q", r.errs)
		}
	}
}

// TestOpenEPK: the checks of an EPK output pass on a sound one and fail on
// each kind of damage.
func TestOpenEPK(t *testing.T) {
	write := func(t *testing.T, data []float64) string {
		dir := filepath.Join(t.TempDir(), "epk")
		w, err := epkfile.NewWriter(dir, epkfile.Manifest{Presets: []string{epkfile.Validation}})
		if err != nil {
			t.Fatal(err)
		}
		if err := epkfile.Write(w, "test_indices", []int64{0, 1}, epkfile.ArrayInfo{Shape: []int{2}, Axes: []string{"test"}}); err != nil {
			t.Fatal(err)
		}
		if err := epkfile.Write(w, "model", data, epkfile.ArrayInfo{Shape: []int{2, 2}, Axes: []string{"test", "class"}}); err != nil {
			t.Fatal(err)
		}
		if err := w.WriteManifest(true); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	good := write(t, []float64{1, 2, 3, 4})
	r := &recorder{TB: t}
	if o := testrun.OpenEPK(r, good); len(r.errs) != 0 || len(o.Manifest.Arrays) != 2 {
		t.Errorf("a sound output: %q", r.errs)
	}

	nan := write(t, []float64{1, math.NaN(), 3, 4})
	r = &recorder{TB: t}
	if testrun.OpenEPK(r, nan); len(r.errs) != 1 || !strings.Contains(r.errs[0], "array model[1] = NaN") {
		t.Errorf("a NaN: %q", r.errs)
	}

	state := write(t, []float64{1, 2, 3, 4})
	if err := os.WriteFile(filepath.Join(state, ".epk-state.gob"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r = &recorder{TB: t}
	if testrun.OpenEPK(r, state); len(r.errs) != 1 || !strings.Contains(r.errs[0], ".epk-state.gob") {
		t.Errorf("a left-over job state: %q", r.errs)
	}

	short := write(t, []float64{1, 2, 3, 4})
	o, _ := epkfile.Open(short)
	info := o.Manifest.Arrays["model"]
	if err := epkfile.Write(&epkfile.Writer{Dir: short, Manifest: o.Manifest}, "model", []float64{1, 2}, epkfile.ArrayInfo{Shape: []int{2}}); err != nil {
		t.Fatal(err)
	}
	o.Manifest.Arrays["model"] = info // the manifest still says [2, 2]
	if err := (&epkfile.Writer{Dir: short, Manifest: o.Manifest}).WriteManifest(true); err != nil {
		t.Fatal(err)
	}
	r = &recorder{TB: t}
	if testrun.OpenEPK(r, short); len(r.errs) != 1 || !strings.Contains(r.errs[0], "array model: file shape [2] (2 values), manifest [2 2]") {
		t.Errorf("a file of another shape: %q", r.errs)
	}

	r = &recorder{TB: t}
	if !fatal(func() { testrun.OpenEPK(r, t.TempDir()) }) || len(r.errs) != 1 {
		t.Errorf("no output: %q", r.errs)
	}
}

func TestEPKSummary(t *testing.T) {
	good := `{"argmax_agreement": 1, "accuracy": 0.5, "mean_abs_delta": 1e-9, "max_abs_delta": 1e-8, "std_delta": 1e-9,
		"kl_div": 0, "max_completeness_residual": 1e-10, "wall_seconds": 0.5, "peak_rss_bytes": 5e7, "run": "r"}`
	for _, c := range []struct {
		name, json, want string
	}{
		{"sound", good, ""},
		{"negative", strings.Replace(good, `"kl_div": 0`, `"kl_div": -1`, 1), "kl_div = -1, want a non-negative number"},
		{"missing", strings.Replace(good, `"std_delta": 1e-9,`, "", 1), "std_delta is <nil>, want a number"},
		{"no wall time", strings.Replace(good, `"wall_seconds": 0.5`, `"wall_seconds": 0`, 1), "wall_seconds is 0"},
		{"no memory", strings.Replace(good, `5e7`, `1000`, 1), "peak_rss_bytes 1000"},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "summary.json"), []byte(c.json), 0o644); err != nil {
			t.Fatal(err)
		}
		r := &recorder{TB: t}
		s := testrun.EPKSummary(r, dir)
		if c.want == "" && (len(r.errs) != 0 || s["run"] != "r") || c.want != "" && (len(r.errs) != 1 || !strings.Contains(r.errs[0], c.want)) {
			t.Errorf("%s: %q, want %q", c.name, r.errs, c.want)
		}
	}
}

func TestWriteCIFAR(t *testing.T) {
	a, b := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	if err := testrun.WriteCIFAR(a, 4); err != nil {
		t.Fatal(err)
	}
	if err := testrun.WriteCIFAR(b, 4); err != nil {
		t.Fatal(err)
	}
	for _, name := range append(slices.Clone(data.CIFARTrainFiles), data.CIFARTestFile) {
		x, err := os.ReadFile(filepath.Join(a, name))
		if err != nil {
			t.Fatal(err)
		}
		y, _ := os.ReadFile(filepath.Join(b, name))
		if len(x) != 4*data.CIFARRecordSize || !bytes.Equal(x, y) {
			t.Errorf("%s: %d bytes (want 4 records), equal for equal n: %v", name, len(x), bytes.Equal(x, y))
			continue
		}
		for i, want := range []byte{3, 5, 1, 3} {
			rec := x[i*data.CIFARRecordSize : (i+1)*data.CIFARRecordSize]
			top, bottom := mean(rec[1:1+512]), mean(rec[1+512:1+1024]) // the first channel's halves
			if rec[0] != want || want == 3 && top < bottom+30 || want == 5 && bottom < top+30 {
				t.Errorf("%s record %d: label %d (want %d), top half %.0f, bottom %.0f", name, i, rec[0], want, top, bottom)
			}
		}
	}
}

func mean(b []byte) float64 {
	var s float64
	for _, v := range b {
		s += float64(v)
	}
	return s / float64(len(b))
}
