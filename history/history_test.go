package history_test

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/optim"
	"github.com/explaind/explaind/tensor"
	"github.com/explaind/explaind/weights"
)

// mlpStepper trains a small MLP classifier on fixed random data: the same
// shape of step as explaind's train.Session, without its dependencies.
type mlpStepper struct {
	model *nn.Sequential[float32]
	opt   optim.Optimizer[float32]
	x     *tensor.Dense[float32]
	y     []int
}

func newStepper(t testing.TB, adam bool) *mlpStepper {
	rng := rand.New(rand.NewPCG(11, 12))
	l1 := nn.NewLinear[float32]("0", 5, 7, true)
	l2 := nn.NewLinear[float32]("2", 7, 3, true)
	l1.InitUniform(rng)
	l2.InitUniform(rng)
	s := &mlpStepper{model: nn.NewSequential[float32](l1, nn.ReLU[float32]{}, l2, nn.LogSoftmax[float32]{})}
	var err error
	if adam {
		s.opt, err = optim.NewAdamW[float32](0.9, 0.98, 1e-8, 0.5)
	} else {
		s.opt, err = optim.NewSGD[float32](0.9, 0, 5e-3, false)
	}
	if err != nil {
		t.Fatal(err)
	}
	s.x = tensor.New[float32](20, 5)
	for i := range s.x.Data {
		s.x.Data[i] = float32(rng.NormFloat64())
	}
	for i := 0; i < 20; i++ {
		s.y = append(s.y, rng.IntN(3))
	}
	return s
}

func (s *mlpStepper) Params() []*nn.Param[float32]        { return s.model.Params() }
func (s *mlpStepper) Optimizer() optim.Optimizer[float32] { return s.opt }
func (s *mlpStepper) Step(rec history.StepRecord) error {
	idx := rec.Batch
	if idx == nil {
		for i := range s.y {
			idx = append(idx, i)
		}
	}
	x := tensor.New[float32](len(idx), 5)
	var y []int
	for i, j := range idx {
		copy(x.Data[i*5:(i+1)*5], s.x.Data[j*5:(j+1)*5])
		y = append(y, s.y[j])
	}
	logp, st, err := s.model.Forward(x)
	if err != nil {
		return err
	}
	_, dy, err := nn.NLLLoss(logp, y)
	if err != nil {
		return err
	}
	g := nn.NewGrads(nn.Summed, s.Params(), 0)
	if _, err := s.model.Backward(st, dy, g, false); err != nil {
		return err
	}
	return s.opt.Step(s.Params(), g, rec.LR)
}

// schedule returns the record of step i: batches of 4 drawn from a seeded
// generator, and a triangular learning rate starting at 0.
func schedule(i int) history.StepRecord {
	rng := rand.New(rand.NewPCG(99, uint64(i)))
	lr := 0.1 * float64(min(i, 10)) / 10
	return history.StepRecord{Epoch: i / 5, LR: lr, WeightDecay: 5e-3, Batch: rng.Perm(20)[:4]}
}

type state struct {
	params []*tensor.Dense[float32]
	opt    map[string]*tensor.Dense[float32]
}

func capture(s *mlpStepper) state {
	var st state
	for _, p := range s.Params() {
		st.params = append(st.params, p.Value.Clone())
	}
	st.opt = s.opt.State()
	return st
}

func sameBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: element %d is %v, want %v (not bit-identical)", what, i, got[i], want[i])
		}
	}
}

func record(t testing.TB, dir string, adam bool, steps int) []state {
	s := newStepper(t, adam)
	rec, err := history.Create[float32](dir, s, history.Options{CheckpointEvery: 5, Config: []byte(`{"test":true}`)})
	if err != nil {
		t.Fatal(err)
	}
	states := []state{capture(s)}
	for i := 0; i < steps; i++ {
		if err := rec.Step(schedule(i)); err != nil {
			t.Fatal(err)
		}
		states = append(states, capture(s))
	}
	if err := rec.Close(true, "finished"); err != nil {
		t.Fatal(err)
	}
	return states
}

func TestReplayIsBitIdentical(t *testing.T) {
	for _, adam := range []bool{false, true} {
		name := map[bool]string{false: "sgd", true: "adamw"}[adam]
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			states := record(t, dir, adam, 23)
			r, err := history.Open[float32](dir, newStepper(t, adam))
			if err != nil {
				t.Fatal(err)
			}
			if r.Steps() != 23 || len(r.Manifest().Checkpoints) != 6 {
				t.Fatalf("recorded %d steps, %d checkpoints; want 23 and 6 (0,5,…,20 and the final 23)", r.Steps(), len(r.Manifest().Checkpoints))
			}
			check := func(v *history.StepView[float32]) {
				for i := range v.Before {
					sameBits(t, v.Before[i].Name+" before", v.Before[i].Value.Data, states[v.Step].params[i].Data)
					sameBits(t, v.After[i].Name+" after", v.After[i].Value.Data, states[v.Step+1].params[i].Data)
				}
				for k, want := range states[v.Step].opt {
					got, ok := v.OptBefore[k]
					if !ok {
						t.Fatalf("step %d: optimizer state %s missing", v.Step, k)
					}
					sameBits(t, k, got.Data, want.Data)
				}
			}
			var order []int
			if err := r.Forward(3, 23, func(v *history.StepView[float32]) error { check(v); order = append(order, v.Step); return nil }); err != nil {
				t.Fatal(err)
			}
			if len(order) != 20 || order[0] != 3 || order[19] != 22 {
				t.Fatalf("forward visited %v", order)
			}
			order = nil
			if err := r.Backward(0, 23, func(v *history.StepView[float32]) error { check(v); order = append(order, v.Step); return nil }); err != nil {
				t.Fatal(err)
			}
			for i, s := range order {
				if s != 22-i {
					t.Fatalf("backward visited %v, want 22 down to 0", order)
				}
			}
			if err := r.Verify(nil); err != nil {
				t.Fatalf("an untouched run fails verification: %v", err)
			}
		})
	}
}

func editManifest(t *testing.T, dir string, edit func(m map[string]any)) {
	path := filepath.Join(dir, history.ManifestFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	data, _ = json.Marshal(m)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func verify(t *testing.T, dir string) error {
	r, err := history.Open[float32](dir, newStepper(t, false))
	if err != nil {
		return err
	}
	return r.Verify(nil)
}

func TestTamperingIsDetected(t *testing.T) {
	clean := t.TempDir()
	record(t, clean, false, 12)
	fresh := func() string {
		dir := t.TempDir()
		if err := os.CopyFS(dir, os.DirFS(clean)); err != nil {
			t.Fatal(err)
		}
		return dir
	}

	// A learning rate edited in the manifest: step 7 no longer reproduces.
	dir := fresh()
	editManifest(t, dir, func(m map[string]any) {
		m["steps"].([]any)[7].(map[string]any)["lr"] = 0.5
	})
	var mm *history.MismatchError
	if err := verify(t, dir); !errors.As(err, &mm) || mm.Step != 7 {
		t.Errorf("edited learning rate: got %v, want a mismatch at step 7", err)
	}

	// A parameter changed in a checkpoint file.
	dir = fresh()
	ck := filepath.Join(dir, history.CheckpointName(10))
	f, err := weights.Open(ck)
	if err != nil {
		t.Fatal(err)
	}
	var ts []*nn.Param[float32]
	for _, n := range f.Names() {
		v, _ := weights.Get[float32](f, n)
		if n == "param/0.weight" {
			v.Data[3] += 1e-3
		}
		ts = append(ts, &nn.Param[float32]{Name: n, Value: v})
	}
	if err := weights.Save(ck, ts, f.Metadata()); err != nil {
		t.Fatal(err)
	}
	if err := verify(t, dir); err == nil || !strings.Contains(err.Error(), "step-000010") {
		t.Errorf("modified checkpoint: got %v, want an error naming it", err)
	}
	// Seeking through that checkpoint fails too, naming the file.
	r, _ := history.Open[float32](dir, newStepper(t, false))
	if err := r.Seek(11); err == nil || !strings.Contains(err.Error(), "does not match the manifest") {
		t.Errorf("seek through a modified checkpoint: got %v", err)
	}

	// A missing checkpoint and a corrupt manifest are reported on open.
	dir = fresh()
	os.Remove(filepath.Join(dir, history.CheckpointName(5)))
	if err := verify(t, dir); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing checkpoint: got %v", err)
	}
	dir = fresh()
	os.WriteFile(filepath.Join(dir, history.ManifestFile), []byte(`{"format":1,`), 0o644)
	if err := verify(t, dir); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("truncated manifest: got %v", err)
	}
}

func TestResumeAfterInterruption(t *testing.T) {
	want := record(t, t.TempDir(), true, 17)

	dir := t.TempDir()
	s := newStepper(t, true)
	rec, err := history.Create[float32](dir, s, history.Options{CheckpointEvery: 5})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 13; i++ { // dies after step 13 without closing
		if err := rec.Step(schedule(i)); err != nil {
			t.Fatal(err)
		}
	}
	s2 := newStepper(t, true)
	rec2, err := history.Resume[float32](dir, s2)
	if err != nil {
		t.Fatal(err)
	}
	if rec2.Steps() != 10 {
		t.Fatalf("resumed at step %d, want the last checkpoint, 10", rec2.Steps())
	}
	for i := rec2.Steps(); i < 17; i++ {
		if err := rec2.Step(schedule(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := rec2.Close(true, "finished"); err != nil {
		t.Fatal(err)
	}
	final := capture(s2)
	for i := range final.params {
		sameBits(t, "resumed final parameters", final.params[i].Data, want[17].params[i].Data)
	}
	if err := verify2(t, dir); err != nil {
		t.Fatal(err)
	}

	// An existing run is not overwritten by accident.
	if _, err := history.Create[float32](dir, newStepper(t, true), history.Options{}); err == nil || !strings.Contains(err.Error(), "set Overwrite") {
		t.Errorf("existing directory: got %v", err)
	}
	if _, err := history.Create[float32](dir, newStepper(t, true), history.Options{Overwrite: true}); err != nil {
		t.Errorf("overwrite: %v", err)
	}
}

func verify2(t *testing.T, dir string) error {
	r, err := history.Open[float32](dir, newStepper(t, true))
	if err != nil {
		return err
	}
	return r.Verify(nil)
}

// TestStamp checks that a verification stamp covers exactly the files,
// software and step count it was written for, and that any edit of the
// manifest or of a checkpoint, another software string or more steps than
// it covers voids it.
func TestStamp(t *testing.T) {
	dir := t.TempDir()
	record(t, dir, false, 12)
	const sw = "test build, 2 threads"
	covers := func(steps int, software string) (bool, string) {
		t.Helper()
		ok, why, err := history.StampCovers(dir, steps, software)
		if err != nil {
			t.Fatal(err)
		}
		return ok, why
	}
	if ok, why := covers(12, sw); ok || !strings.Contains(why, "no verification stamp") {
		t.Fatalf("an unstamped run is covered (%v, %q)", ok, why)
	}
	if err := history.WriteStamp(dir, 8, "replayed", sw); err != nil {
		t.Fatal(err)
	}
	if ok, why := covers(8, sw); !ok {
		t.Fatalf("the stamp does not cover the 8 steps it was written for: %s", why)
	}
	if ok, why := covers(9, sw); ok || !strings.Contains(why, "covers 8 steps") {
		t.Fatalf("a stamp of 8 steps covers 9 (%v, %q)", ok, why)
	}
	if ok, why := covers(8, "other build"); ok || !strings.Contains(why, "another build") {
		t.Fatalf("the stamp covers another software string (%v, %q)", ok, why)
	}
	// A wider stamp replaces a narrower one, a narrower one keeps the wider.
	if err := history.WriteStamp(dir, 12, "trained", sw); err != nil {
		t.Fatal(err)
	}
	if err := history.WriteStamp(dir, 3, "replayed", sw); err != nil {
		t.Fatal(err)
	}
	if ok, why := covers(12, sw); !ok {
		t.Fatalf("the wider stamp was lost: %s", why)
	}
	ckpt := filepath.Join(dir, history.CheckpointName(5))
	data, err := os.ReadFile(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-1] ^= 1
	if err := os.WriteFile(ckpt, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if ok, why := covers(12, sw); ok || !strings.Contains(why, "modified") {
		t.Fatalf("an edited checkpoint keeps the stamp (%v, %q)", ok, why)
	}
	data[len(data)-1] ^= 1
	if err := os.WriteFile(ckpt, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if ok, why := covers(12, sw); !ok {
		t.Fatalf("the restored checkpoint is not covered: %s", why)
	}
	editManifest(t, dir, func(m map[string]any) { m["software"] = "edited" })
	if ok, why := covers(12, sw); ok || !strings.Contains(why, "modified") {
		t.Fatalf("an edited manifest keeps the stamp (%v, %q)", ok, why)
	}
}

// TestManifestCheckpointFiles checks that a manifest may name as
// checkpoints only regular files inside the run directory: checkpoints are
// read whole and hashed, so a device such as /dev/zero would never end.
func TestManifestCheckpointFiles(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "run")
	record(t, dir, false, 6)
	if err := os.WriteFile(filepath.Join(parent, "outside.safetensors"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "checkpoints", "dir.safetensors"), 0o755); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		"../outside.safetensors":      "not a path inside the run directory",
		"/dev/zero":                   "not a path inside the run directory",
		"checkpoints/dir.safetensors": "not a regular file",
	} {
		editManifest(t, dir, func(m map[string]any) {
			m["checkpoints"].([]any)[1].(map[string]any)["file"] = file
		})
		_, err := history.ReadManifest(dir)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), history.ManifestFile) {
			t.Errorf("checkpoint %q: got %v, want an error naming the manifest and saying %q", file, err, want)
		}
	}
}

// TestStampCorrupt checks that a corrupt stamp covers nothing, and that
// the reason names the file and the problem.
func TestStampCorrupt(t *testing.T) {
	dir := t.TempDir()
	record(t, dir, false, 3)
	path := filepath.Join(dir, history.StampFile)
	for body, want := range map[string]string{
		`{"steps": 3, "how": "trained"`:   "unexpected end of JSON input",
		`{"steps": -1, "how": "trained"}`: "steps -1",
		`{"steps": 3, "how": "guessed"}`:  `how "guessed"`,
	} {
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		ok, why, err := history.StampCovers(dir, 0, "test")
		if err != nil || ok || !strings.Contains(why, path) || !strings.Contains(why, want) {
			t.Errorf("stamp %s: got %v, %q, %v; want not covered, the reason naming %s and saying %q", body, ok, why, err, path, want)
		}
	}
}
