package history

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/explaind/explaind/gemm"
	"github.com/explaind/explaind/internal/atomicfile"
	"github.com/explaind/explaind/internal/lock"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/optim"
	"github.com/explaind/explaind/setting"
	"github.com/explaind/explaind/tensor"
	"github.com/explaind/explaind/weights"
)

// Stepper redoes training steps. It owns the parameters and the optimizer;
// Step must be a pure function of the current parameters, the optimizer
// state and the record, so that replaying it reproduces training bit for
// bit. explaind's train.Session is a Stepper for classifiers trained on the
// mean NLL loss; a user's own training loop can supply its own.
type Stepper[T tensor.Float] interface {
	// Params lists the parameters in a fixed order.
	Params() []*nn.Param[T]
	// Optimizer returns the optimizer whose state Step advances.
	Optimizer() optim.Optimizer[T]
	// Step applies one optimizer step as described by rec (batch, flips,
	// learning rate, weight decay); rec.Hash is not yet set.
	Step(rec StepRecord) error
}

// GradientStepper is a Stepper that also hands out the mean loss gradient
// its last Step applied, so that a replay's visitors need not recompute it.
type GradientStepper[T tensor.Float] interface {
	Stepper[T]
	// LastGradient returns the gradient of the last Step at the parameters
	// before it, by parameter name, in arrays the caller may keep (the
	// next Step must not reuse them).
	LastGradient() map[string]*tensor.Dense[T]
}

// ParamHash returns a hex SHA-256 (128 bits) of the parameters' names,
// shapes and exact values.
func ParamHash[T tensor.Float](params []*nn.Param[T]) string {
	h := sha256.New()
	buf := make([]byte, 0, 1<<16)
	for _, p := range params {
		buf = append(buf[:0], p.Name...)
		buf = append(buf, 0)
		for _, d := range p.Value.Shape {
			buf = binary.LittleEndian.AppendUint64(buf, uint64(d))
		}
		h.Write(buf)
		buf = buf[:0]
		for _, v := range p.Value.Data {
			switch x := any(v).(type) {
			case float32:
				buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(x))
			case float64:
				buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(x))
			}
			if len(buf) >= 1<<16-8 {
				h.Write(buf)
				buf = buf[:0]
			}
		}
		h.Write(buf)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func dtypeName[T tensor.Float]() string {
	var z T
	if _, ok := any(z).(float32); ok {
		return "float32"
	}
	return "float64"
}

// Recorder writes a run directory while training proceeds.
type Recorder[T tensor.Float] struct {
	dir string
	m   *Manifest
	st  Stepper[T]
	// OnCheckpoint is Options.OnCheckpoint (settable after Resume).
	OnCheckpoint func(step int) error
}

// Options configure a new run.
type Options struct {
	// Config is the caller's JSON description of the run (see Manifest).
	Config []byte
	// Datasets fingerprints the data by role.
	Datasets map[string]DatasetInfo
	// CheckpointEvery is K (default 100).
	CheckpointEvery int
	// Overwrite allows replacing an existing run directory.
	Overwrite bool
	// Software describes the program writing the run.
	Software string
	// OnCheckpoint, if set, runs after each checkpoint file is written and
	// before the manifest naming it is, so files the caller keeps beside
	// the run (metrics, say) are never behind the manifest.
	OnCheckpoint func(step int) error
}

// Create starts a new run in dir with the stepper's current parameters as
// the initial state, writing checkpoint 0 and the manifest. An existing
// non-empty dir (lock files, internal/lock, aside) is refused unless
// opts.Overwrite is set.
//
// A directory holding only what a Create killed before its first manifest
// wrote (an empty checkpoints folder, or one with checkpoint 0 alone) is
// no run yet: it is cleared and the run created afresh.
func Create[T tensor.Float](dir string, st Stepper[T], opts Options) (*Recorder[T], error) {
	if abortedCreate(dir) {
		if err := lock.RemoveContents(dir); err != nil {
			return nil, fmt.Errorf("history: cannot clear %s, left by an interrupted start: %w", dir, err)
		}
	}
	if entries, err := lock.ReadDir(dir); err == nil && len(entries) > 0 {
		if !opts.Overwrite {
			return nil, setting.Errorf("history: %s already exists and is not empty; choose another directory or set %v to replace it", dir, setting.Name("Overwrite"))
		}
		if _, err := os.Stat(filepath.Join(dir, ManifestFile)); err != nil {
			return nil, fmt.Errorf("history: refusing to overwrite %s: it is not a run directory (no %s)", dir, ManifestFile)
		}
		if err := lock.RemoveContents(dir); err != nil { // the writer's lock file stays
			return nil, fmt.Errorf("history: cannot replace %s: %w", dir, err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "checkpoints"), 0o755); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	k := opts.CheckpointEvery
	if k == 0 {
		k = 100
	}
	if k < 0 {
		return nil, fmt.Errorf("history: checkpoint interval %d, want ≥ 1", k)
	}
	m := &Manifest{
		Format:          FormatVersion,
		Software:        opts.Software,
		Created:         time.Now().UTC().Format(time.RFC3339),
		Config:          opts.Config,
		Dtype:           dtypeName[T](),
		Datasets:        opts.Datasets,
		Threads:         runtime.GOMAXPROCS(0),
		GemmBackend:     gemm.Default().Name(),
		CheckpointEvery: k,
		InitHash:        ParamHash(st.Params()),
		Steps:           []StepRecord{},
	}
	for _, p := range st.Params() {
		m.Params = append(m.Params, ParamInfo{Name: p.Name, Shape: append([]int(nil), p.Value.Shape...)})
	}
	r := &Recorder[T]{dir: dir, m: m, st: st, OnCheckpoint: opts.OnCheckpoint}
	if err := r.checkpoint(); err != nil {
		return nil, err
	}
	return r, nil
}

// abortedCreate reports whether dir holds exactly what a Create killed
// before writing the manifest leaves: a checkpoints folder that is empty or
// holds checkpoint 0 alone (temporary files of killed writers and lock
// files aside), and nothing else.
func abortedCreate(dir string) bool {
	entries, err := lock.ReadDir(dir)
	if err != nil || len(entries) != 1 || entries[0].Name() != "checkpoints" || !entries[0].IsDir() {
		return false
	}
	sub, err := os.ReadDir(filepath.Join(dir, "checkpoints"))
	if err != nil {
		return false
	}
	for _, e := range sub {
		if e.Name() != filepath.Base(CheckpointName(0)) && !atomicfile.IsTemp(e.Name()) {
			return false
		}
	}
	return true
}

// Resume reopens an interrupted run: it loads the last checkpoint into the
// stepper (checking it against the manifest) and drops any steps recorded
// after it, so training can continue exactly where the checkpoint stands.
func Resume[T tensor.Float](dir string, st Stepper[T]) (*Recorder[T], error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	if err := checkParams(m, st.Params()); err != nil {
		return nil, err
	}
	last := m.Checkpoints[len(m.Checkpoints)-1]
	if err := loadCheckpoint(dir, m, last, st); err != nil {
		return nil, err
	}
	// Checkpoints after the one resumed from cannot exist (the manifest is
	// written with its last checkpoint), but steps after it are redone.
	m.Steps = m.Steps[:last.Step]
	m.Done, m.StopReason = false, ""
	return &Recorder[T]{dir: dir, m: m, st: st}, nil
}

// Manifest returns the manifest as recorded so far. Callers must not
// modify it.
func (r *Recorder[T]) Manifest() *Manifest { return r.m }

// Steps returns the number of steps recorded.
func (r *Recorder[T]) Steps() int { return len(r.m.Steps) }

// Step performs one step through the stepper, records it with the hash of
// the new parameters, and writes a checkpoint every K steps.
func (r *Recorder[T]) Step(rec StepRecord) error {
	if err := r.st.Step(rec); err != nil {
		return fmt.Errorf("step %d: %w", len(r.m.Steps), err)
	}
	rec.Hash = ParamHash(r.st.Params())
	r.m.Steps = append(r.m.Steps, rec)
	if len(r.m.Steps)%r.m.CheckpointEvery == 0 {
		return r.checkpoint()
	}
	return nil
}

// Close writes a final checkpoint (unless the last step has one) and the
// manifest. done marks the run as finished; reason says why it stopped.
func (r *Recorder[T]) Close(done bool, reason string) error {
	r.m.Done, r.m.StopReason = done, reason
	last := r.m.Checkpoints[len(r.m.Checkpoints)-1]
	if last.Step != len(r.m.Steps) {
		return r.checkpoint()
	}
	if r.OnCheckpoint != nil {
		if err := r.OnCheckpoint(last.Step); err != nil {
			return err
		}
	}
	return r.m.write(r.dir)
}

// checkpoint writes the current state as a checkpoint, then the manifest
// that names it.
func (r *Recorder[T]) checkpoint() error {
	step := len(r.m.Steps)
	c := Checkpoint{Step: step, File: CheckpointName(step)}
	if err := saveCheckpoint(filepath.Join(r.dir, c.File), step, r.m.Hash(step), r.st); err != nil {
		return err
	}
	if n := len(r.m.Checkpoints); n == 0 || r.m.Checkpoints[n-1].Step != step {
		r.m.Checkpoints = append(r.m.Checkpoints, c)
	}
	if r.OnCheckpoint != nil {
		if err := r.OnCheckpoint(step); err != nil {
			return err
		}
	}
	return r.m.write(r.dir)
}

func saveCheckpoint[T tensor.Float](path string, step int, hash string, st Stepper[T]) error {
	var tensors []*nn.Param[T]
	for _, p := range st.Params() {
		tensors = append(tensors, &nn.Param[T]{Name: "param/" + p.Name, Value: p.Value})
	}
	state := st.Optimizer().State()
	keys := make([]string, 0, len(state))
	for k := range state {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		tensors = append(tensors, &nn.Param[T]{Name: "optim/" + k, Value: state[k]})
	}
	meta := map[string]string{"step": fmt.Sprint(step), "param_hash": hash}
	if err := weights.Save(path, tensors, meta); err != nil {
		return fmt.Errorf("history: checkpoint of step %d: %w", step, err)
	}
	return nil
}

// loadCheckpoint restores a checkpoint into the stepper and checks the
// parameters against the hash the manifest records for that step.
func loadCheckpoint[T tensor.Float](dir string, m *Manifest, c Checkpoint, st Stepper[T]) error {
	path := filepath.Join(dir, c.File)
	f, err := weights.Open(path)
	if err != nil {
		return fmt.Errorf("history: checkpoint of step %d: %w", c.Step, err)
	}
	if err := weights.LoadParams(f, "param/", st.Params()); err != nil {
		return fmt.Errorf("history: checkpoint of step %d: %w", c.Step, err)
	}
	state := map[string]*tensor.Dense[T]{}
	for _, name := range f.Names() {
		if key, ok := strings.CutPrefix(name, "optim/"); ok {
			t, err := weights.Get[T](f, name)
			if err != nil {
				return fmt.Errorf("history: checkpoint of step %d: %w", c.Step, err)
			}
			state[key] = t
		}
	}
	if err := st.Optimizer().LoadState(st.Params(), state); err != nil {
		return fmt.Errorf("history: checkpoint of step %d (%s): %w", c.Step, path, err)
	}
	for _, p := range st.Params() {
		if err := checkFinite(path, c.Step, "param/"+p.Name, p.Value.Data); err != nil {
			return err
		}
	}
	for k, v := range state {
		if err := checkFinite(path, c.Step, "optim/"+k, v.Data); err != nil {
			return err
		}
	}
	if got, want := ParamHash(st.Params()), m.Hash(c.Step); got != want {
		return fmt.Errorf("history: checkpoint %s does not match the manifest: its parameters hash to %s, the manifest records %s for step %d (the file was modified or belongs to another run)", path, got, want, c.Step)
	}
	return nil
}

// checkParams verifies that the stepper's parameters match the manifest.
func checkParams[T tensor.Float](m *Manifest, params []*nn.Param[T]) error {
	if len(params) != len(m.Params) {
		return fmt.Errorf("history: the model has %d parameters, the run recorded %d", len(params), len(m.Params))
	}
	for i, p := range params {
		if p.Name != m.Params[i].Name || !tensor.SameShape(p.Value.Shape, m.Params[i].Shape) {
			return fmt.Errorf("history: parameter %d is %s %v, the run recorded %s %v", i, p.Name, p.Value.Shape, m.Params[i].Name, m.Params[i].Shape)
		}
	}
	if d := dtypeName[T](); d != m.Dtype {
		return fmt.Errorf("history: the run was trained in %s; replay it in %s, not %s", m.Dtype, m.Dtype, d)
	}
	return nil
}

// firstNonFinite returns the index of the first NaN or infinite value.
func firstNonFinite[T tensor.Float](data []T) (int, bool) {
	for i, v := range data {
		if x := float64(v); math.IsNaN(x) || math.IsInf(x, 0) {
			return i, true
		}
	}
	return 0, false
}

// checkFinite refuses a checkpoint tensor holding a NaN or an infinity.
func checkFinite[T tensor.Float](path string, step int, name string, data []T) error {
	if i, ok := firstNonFinite(data); ok {
		return fmt.Errorf("history: checkpoint %s (step %d) holds %v in %q at element %d: the run diverged or the file is corrupt", path, step, data[i], name, i)
	}
	return nil
}
