package expio

import (
	"encoding/json"
	"fmt"

	"github.com/explaind/explaind/epkout"
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
	// epkout.RunFingerprint of it.
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
// both). Errors name the command and its --run flag. The task is checked
// from the manifest before the model and data are rebuilt, so a run of the
// wrong kind is refused at once.
func OpenRun(command, dir, task string) (*Run, error) {
	if dir == "" {
		return nil, fmt.Errorf("%s: name the training run with --run DIR", command)
	}
	m, err := history.ReadManifest(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: --run %s: %w", command, dir, err)
	}
	var cfg train.Config
	if err := json.Unmarshal(m.Config, &cfg); err != nil {
		return nil, fmt.Errorf("%s: --run %s: the manifest's configuration is unreadable: %v", command, dir, err)
	}
	if task != "" && cfg.Task != task {
		return nil, fmt.Errorf("%s: --run %s is a %q run; explaind %s works on %s runs only (explaind train %s)", command, dir, cfg.Task, command, task, task)
	}
	if m.Dtype != "" && m.Dtype != "float32" {
		return nil, fmt.Errorf("%s: --run %s was trained in %s; explaind %s replays float32 runs only", command, dir, m.Dtype, command)
	}
	r, sess, c, err := train.Open[float32](dir)
	if err != nil {
		return nil, fmt.Errorf("%s: --run %s: %w", command, dir, err)
	}
	d, err := train.LoadData[float32](c)
	if err != nil {
		return nil, fmt.Errorf("%s: --run %s: %w", command, dir, err)
	}
	return &Run{Dir: dir, Manifest: r.Manifest(), Fingerprint: epkout.RunFingerprint(r.Manifest()), Config: c,
		Replay: r, Session: sess, Data: d}, nil
}

// Modulo returns the session's model as the modulo transformer, or an
// error naming command when the run holds another model.
func (r *Run) Modulo(command string) (*models.Modulo[float32], error) {
	m, ok := r.Session.Model.(*models.Modulo[float32])
	if !ok {
		return nil, fmt.Errorf("%s: --run %s holds a %T, not the modulo transformer", command, r.Dir, r.Session.Model)
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
