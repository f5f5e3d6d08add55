package expio

import (
	"github.com/explaind/explaind/internal/lock"
	"github.com/explaind/explaind/setting"

	"fmt"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/train"
)

// Run is a recorded training run opened for an experiment, in float32
// (the element type explaind trains in).
type Run struct {
	// Dir is the run directory as given.
	Dir string
	// Manifest is the run's manifest; Fingerprint is
	// epkfile.RunFingerprint of it.
	Manifest    *history.Manifest
	Fingerprint string
	// Config is the run's training configuration.
	Config *train.Config
	// Replay recomputes the run's states into Session's parameters.
	Replay  *history.Replay[float32]
	Session *train.Session[float32]
	// Data holds the run's training and validation sets.
	Data *train.Data[float32]
}

// OpenRun opens the run in dir for the experiment named command, which
// works on runs of the given task only ("modulo" or "cnn"; "" accepts
// both). Errors name the command and the setting Run. The task is checked
// from the manifest before the model and data are rebuilt, so a run of the
// wrong kind is refused at once.
func OpenRun(command, dir, task string) (*Run, error) {
	if dir == "" {
		return nil, setting.Errorf("%s: name the training run (%v)", command, setting.Name("Run"))
	}
	m, err := history.ReadManifest(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", command, setting.Invalid("Run", dir, "%w", err))
	}
	cfg, err := train.ManifestConfig(m)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", command, setting.Invalid("Run", dir, "%w", err))
	}
	if task != "" && cfg.Task != task {
		return nil, fmt.Errorf("%s: %w", command, setting.Invalid("Run", dir, "is a %q run; explaind %s works on %s runs only (explaind train %s)", cfg.Task, command, task, task))
	}
	if m.Dtype != "" && m.Dtype != "float32" {
		return nil, fmt.Errorf("%s: %w", command, setting.Invalid("Run", dir, "was trained in %s; explaind %s replays float32 runs only", m.Dtype, command))
	}
	o, err := train.Open[float32](dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", command, setting.Invalid("Run", dir, "%w", err))
	}
	r := o.Replay
	return &Run{Dir: dir, Manifest: r.Manifest(), Fingerprint: epkfile.RunFingerprint(r.Manifest()), Config: o.Config,
		Replay: r, Session: o.Session, Data: o.Data}, nil
}

// Modulo returns the session's model as the modulo transformer, or an
// error naming command when the run holds another model.
func (r *Run) Modulo(command string) (*models.Modulo[float32], error) {
	m, ok := r.Session.Model.(*models.Modulo[float32])
	if !ok {
		return nil, fmt.Errorf("%s: %w", command, setting.Invalid("Run", r.Dir, "holds a %T, not the modulo transformer", r.Session.Model))
	}
	return m, nil
}

// Steps returns the number of recorded steps (the final state is the one
// before step Steps()).
func (r *Run) Steps() int { return r.Replay.Steps() }

// State returns a copy of the parameters before step s (s = Steps() is
// the final model), recomputed by replay and checked against the recorded
// hashes.
func (r *Run) State(s int) ([]*nn.Param[float32], error) {
	if err := r.Replay.Seek(s); err != nil {
		return nil, err
	}
	return CopyParams(r.Session.Params()), nil
}

// CopyParams returns deep copies of the parameters.
func CopyParams[T interface{ ~float32 | ~float64 }](ps []*nn.Param[T]) []*nn.Param[T] {
	out := make([]*nn.Param[T], len(ps))
	for i, p := range ps {
		out[i] = &nn.Param[T]{Name: p.Name, Value: p.Value.Clone()}
	}
	return out
}

// LoadParams copies the values of src into dst, matching them by name;
// every parameter of dst must be in src with the same shape. Parameters of
// src that dst lacks are an error too.
func LoadParams[T interface{ ~float32 | ~float64 }](dst, src []*nn.Param[T]) error {
	byName := make(map[string]*nn.Param[T], len(src))
	for _, p := range src {
		byName[p.Name] = p
	}
	if len(byName) != len(dst) {
		return fmt.Errorf("expio: %d parameters to load into a model of %d", len(byName), len(dst))
	}
	for _, d := range dst {
		s, ok := byName[d.Name]
		if !ok {
			return fmt.Errorf("expio: no value for parameter %s", d.Name)
		}
		if len(s.Value.Data) != len(d.Value.Data) || fmt.Sprint(s.Value.Shape) != fmt.Sprint(d.Value.Shape) {
			return fmt.Errorf("expio: parameter %s has shape %v, the model's is %v", d.Name, s.Value.Shape, d.Value.Shape)
		}
	}
	for _, d := range dst {
		copy(d.Value.Data, byName[d.Name].Value.Data)
	}
	return nil
}

// EPKUse says which runs and `explaind epk` outputs an experiment reads,
// and how OpenEPK's errors name them.
type EPKUse struct {
	// Command names the experiment ("prune"); every error starts with it.
	Command string
	// Task is the task of the runs the experiment works on ("cnn" or
	// "modulo").
	Task string
	// Does completes the sentence "`explaind Command` ..." in the error
	// for a run of another task, saying what the experiment does with
	// which runs: `prunes CNN runs (task "cnn", ResNet-9)`.
	Does string
	// Hints maps another task to advice added to that error, such as
	// "for a modulo run use `explaind components`".
	Hints map[string]string
	// Preset is the preset of `explaind epk` the experiment reads.
	Preset string
}

// EPKRun is a recorded run's manifest and configuration with the
// `explaind epk` output that explains it, as checked by OpenEPK. Unlike
// Run, it rebuilds neither the model nor the data.
type EPKRun struct {
	// Dir is the run directory as given.
	Dir string
	// Manifest is the run's manifest and Config its training
	// configuration.
	Manifest *history.Manifest
	Config   *train.Config
	// EPK is the opened EPK output.
	EPK *epkfile.Output
	// command names the experiment in errors.
	command string
}

// OpenEPK reads the manifest of the run in dir and opens the EPK output in
// epkDir for the experiment u describes. It checks, before any work, that
// the run is of task u.Task, that the output is complete, was computed for
// this run (its fingerprint and parameter tensors) and holds u.Preset;
// the errors of epkfile and history are returned as they are, since they
// name the directory at fault and the command that fixes it.
func OpenEPK(u EPKUse, dir, epkDir string) (*EPKRun, error) {
	if dir == "" || epkDir == "" {
		return nil, setting.Errorf("%s: name the run (%v) and the EPK output (%v)", u.Command, setting.Name("Run"), setting.Name("EPK"))
	}
	m, err := history.ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	r := &EPKRun{Dir: dir, Manifest: m, command: u.Command}
	if r.Config, err = train.ManifestConfig(m); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", u.Command, dir, err)
	}
	if task := r.Config.Task; task != u.Task {
		hint := ""
		if h := u.Hints[task]; h != "" {
			hint = "; " + h
		}
		return nil, fmt.Errorf("%s: %s is a %q run; `explaind %s` %s%s", u.Command, dir, task, u.Command, u.Does, hint)
	}
	if r.EPK, err = epkfile.Open(epkDir); err != nil {
		return nil, err
	}
	if err := r.EPK.CheckRun(m); err != nil {
		return nil, err
	}
	if err := r.EPK.Require(u.Preset); err != nil {
		return nil, err
	}
	return r, nil
}

// TestSamples reads the EPK output's test_indices and test_labels and
// checks them against the run's data: n samples, of which label(x) is
// sample x's label; split names the samples in errors ("test",
// "validation"). It returns the indices, in the output's order.
func (r *EPKRun) TestSamples(split string, n int, label func(x int) int) ([]int, error) {
	idx, err := r.EPK.Ints("test_indices")
	if err != nil {
		return nil, err
	}
	labels, err := r.EPK.Ints("test_labels")
	if err != nil {
		return nil, err
	}
	if len(labels) != len(idx) {
		return nil, fmt.Errorf("%s: the EPK output has %d test indices and %d labels", r.command, len(idx), len(labels))
	}
	for i, x := range idx {
		if x < 0 || x >= n {
			return nil, fmt.Errorf("%s: the EPK output's test index %d is outside the run's %d %s samples", r.command, x, n, split)
		}
		if l := label(x); l != labels[i] {
			return nil, fmt.Errorf("%s: the EPK output gives %s sample %d label %d, the run's data %d", r.command, split, x, labels[i], l)
		}
	}
	return idx, nil
}

// EPKSource says what an experiment that reads an EPK output computed its
// results from: the run and EPK output directories, as given, and the
// run's fingerprint (epkfile.RunFingerprint). Summaries embed it, which
// puts its fields first in their JSON.
type EPKSource struct {
	Run            string `json:"run"`
	EPK            string `json:"epk"`
	RunFingerprint string `json:"run_fingerprint"`
}

// Source returns the EPKSource of the run and EPK output r holds.
func (r *EPKRun) Source() EPKSource {
	return EPKSource{Run: r.Dir, EPK: r.EPK.Dir, RunFingerprint: epkfile.RunFingerprint(r.Manifest)}
}

// Named checks that an experiment reading a run and an EPK output was
// given all three of run, epk and out, naming the settings otherwise.
func (u EPKUse) Named(run, epk, out string) error {
	if run == "" || epk == "" || out == "" {
		return setting.Errorf("%s: name the run (%v), the EPK output (%v) and the output directory (%v)",
			u.Command, setting.Name("Run"), setting.Name("EPK"), setting.Name("Out"))
	}
	return nil
}

// Start does what an experiment on a run of task does before its work:
// it checks that an output directory out is named and that check (the
// options' own validation) passes, opens the run (OpenRun) and takes the
// output's lock (LockOut), which the caller releases.
func Start(command, task, run, out string, check func() error) (*Run, *lock.Lock, error) {
	if out == "" {
		return nil, nil, setting.Errorf("%s: name the output directory (%v)", command, setting.Name("Out"))
	}
	if err := check(); err != nil {
		return nil, nil, err
	}
	r, err := OpenRun(command, run, task)
	if err != nil {
		return nil, nil, err
	}
	l, err := LockOut(command, out)
	if err != nil {
		return nil, nil, err
	}
	return r, l, nil
}
