package history

import (
	"fmt"
	"path/filepath"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
	"github.com/explaind/explaind/weights"
)

// Replay recomputes the states of a recorded run and checks every
// recomputed step against its recorded hash.
type Replay[T tensor.Float] struct {
	dir string
	m   *Manifest
	st  Stepper[T]
	pos int // the stepper holds the state before step pos; -1 if unknown
}

// Open prepares a replay of the run in dir with the given stepper, whose
// model and optimizer must match the run's.
func Open[T tensor.Float](dir string, st Stepper[T]) (*Replay[T], error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	if err := checkParams(m, st.Params()); err != nil {
		return nil, err
	}
	return &Replay[T]{dir: dir, m: m, st: st, pos: -1}, nil
}

// Manifest returns the run's manifest. Callers must not modify it.
func (r *Replay[T]) Manifest() *Manifest { return r.m }

// Steps returns the number of recorded steps.
func (r *Replay[T]) Steps() int { return len(r.m.Steps) }

// MismatchError reports a recomputed step whose parameters differ from the
// recorded hash.
type MismatchError struct {
	Step       int    // the step whose result differs (0-based)
	Got, Want  string // recomputed and recorded hashes
	Checkpoint int    // the checkpoint the replay started from
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("history: step %d does not reproduce: recomputed parameters hash to %s, the manifest records %s (replayed from the checkpoint of step %d); the run was modified, or is replayed with another build, thread count or GEMM backend", e.Step, e.Got, e.Want, e.Checkpoint)
}

// Seek puts the stepper in the state before step s (0 ≤ s ≤ Steps()),
// loading the nearest checkpoint at or before s and recomputing from there.
func (r *Replay[T]) Seek(s int) error {
	if s < 0 || s > len(r.m.Steps) {
		return fmt.Errorf("history: step %d is outside the run's 0..%d", s, len(r.m.Steps))
	}
	c := r.m.LastCheckpoint(s)
	if r.pos < c.Step || r.pos > s {
		if err := loadCheckpoint(r.dir, r.m, c, r.st); err != nil {
			return err
		}
		r.pos = c.Step
	}
	from := r.pos
	for r.pos < s {
		if err := r.advance(from); err != nil {
			return err
		}
	}
	return nil
}

// advance redoes step r.pos and checks its hash.
func (r *Replay[T]) advance(from int) error {
	s := r.pos
	rec := r.m.Steps[s]
	rec.Hash = ""
	if err := r.st.Step(rec); err != nil {
		r.pos = -1
		return fmt.Errorf("history: replaying step %d: %w", s, err)
	}
	for _, p := range r.st.Params() {
		if i, ok := firstNonFinite(p.Value.Data); ok {
			r.pos = -1
			return fmt.Errorf("history: step %d makes parameter %s %v at element %d: the run diverged, and a state that is not finite cannot be explained", s, p.Name, p.Value.Data[i], i)
		}
	}
	if got := ParamHash(r.st.Params()); got != r.m.Steps[s].Hash {
		r.pos = -1
		return &MismatchError{Step: s, Got: got, Want: r.m.Steps[s].Hash, Checkpoint: from}
	}
	r.pos++
	return nil
}

// StepView is one replayed step: its record, the parameters before and
// after it, and the optimizer state before it (as optim's State names it).
// Its arrays are copies owned by the visitor.
type StepView[T tensor.Float] struct {
	Step      int
	Record    StepRecord
	Before    []*nn.Param[T]
	After     []*nn.Param[T]
	OptBefore map[string]*tensor.Dense[T]
	// Grad is the mean loss gradient the step applied, by parameter name,
	// when the stepper is a GradientStepper and the view comes from
	// Forward; nil otherwise (Backward drops it to bound a segment's
	// memory).
	Grad map[string]*tensor.Dense[T]
}

func snapshot[T tensor.Float](ps []*nn.Param[T]) []*nn.Param[T] {
	out := make([]*nn.Param[T], len(ps))
	for i, p := range ps {
		out[i] = &nn.Param[T]{Name: p.Name, Value: p.Value.Clone()}
	}
	return out
}

// Forward visits steps from..to-1 in order.
func (r *Replay[T]) Forward(from, to int, visit func(*StepView[T]) error) error {
	if from < 0 || to > len(r.m.Steps) || from > to {
		return fmt.Errorf("history: step range %d:%d is outside the run's 0:%d", from, to, len(r.m.Steps))
	}
	if err := r.Seek(from); err != nil {
		return err
	}
	start := r.m.LastCheckpoint(from).Step
	for s := from; s < to; s++ {
		v := &StepView[T]{Step: s, Record: r.m.Steps[s], Before: snapshot(r.st.Params()), OptBefore: r.st.Optimizer().State()}
		if err := r.advance(start); err != nil {
			return err
		}
		v.After = snapshot(r.st.Params())
		if gs, ok := r.st.(GradientStepper[T]); ok {
			v.Grad = gs.LastGradient()
		}
		if err := visit(v); err != nil {
			return err
		}
	}
	return nil
}

// Backward visits steps to-1 down to from, one checkpoint segment at a
// time: each segment is recomputed forwards from its checkpoint and its
// states are held in memory (at most CheckpointEvery steps' worth of
// parameters and optimizer state), then visited in reverse.
func (r *Replay[T]) Backward(from, to int, visit func(*StepView[T]) error) error {
	if from < 0 || to > len(r.m.Steps) || from > to {
		return fmt.Errorf("history: step range %d:%d is outside the run's 0:%d", from, to, len(r.m.Steps))
	}
	end := to
	for end > from {
		c := r.m.LastCheckpoint(end - 1)
		start := max(c.Step, from)
		var seg []*StepView[T]
		err := r.Forward(start, end, func(v *StepView[T]) error {
			v.Grad = nil
			seg = append(seg, v)
			return nil
		})
		if err != nil {
			return err
		}
		for i := len(seg) - 1; i >= 0; i-- {
			if err := visit(seg[i]); err != nil {
				return err
			}
			seg[i] = nil
		}
		end = start
	}
	return nil
}

// Verify replays the whole run from its initial checkpoint, checks every
// step's hash, and compares every later checkpoint file bit for bit with
// the recomputed state of its step (parameters and optimizer state). It
// returns the first problem found, if any; progress, if non-nil, is called
// after each step.
func (r *Replay[T]) Verify(progress func(step int)) error {
	return r.VerifyTo(len(r.m.Steps), func(step int) error {
		if progress != nil {
			progress(step)
		}
		return nil
	})
}

// VerifyTo is Verify of the steps 0..to−1 and of the checkpoints of the
// steps 1..to. It calls after, if non-nil, after each step, and stops with
// its error. A run whose manifest records that it diverged
// (Manifest.Diverged) is refused before any replay, and so is a step that
// makes a parameter NaN or infinite, or a checkpoint that holds one.
func (r *Replay[T]) VerifyTo(to int, after func(step int) error) error {
	if to < 0 || to > len(r.m.Steps) {
		return fmt.Errorf("history: step %d is outside the run's 0..%d", to, len(r.m.Steps))
	}
	if err := r.m.checkConverged(r.dir); err != nil {
		return err
	}
	r.pos = -1
	if err := r.Seek(0); err != nil {
		return err
	}
	next := 1 // index of the next checkpoint to compare
	for r.pos < to {
		if err := r.advance(0); err != nil {
			return err
		}
		if after != nil {
			if err := after(r.pos); err != nil {
				return err
			}
		}
		for next < len(r.m.Checkpoints) && r.m.Checkpoints[next].Step == r.pos {
			if err := compareCheckpoint(r.dir, r.m.Checkpoints[next], r.st); err != nil {
				return err
			}
			next++
		}
	}
	return nil
}

// CheckCheckpoints refuses a run whose manifest records that it diverged
// and loads each checkpoint of the steps 0..to, checking that it holds
// finite values and parameters that hash to the manifest's record. It
// reads each file once and replays nothing: the check of a run whose steps
// are known to reproduce (a verification stamp) but whose files may not be
// what the stamp saw.
func (r *Replay[T]) CheckCheckpoints(to int) error {
	if to < 0 || to > len(r.m.Steps) {
		return fmt.Errorf("history: step %d is outside the run's 0..%d", to, len(r.m.Steps))
	}
	if err := r.m.checkConverged(r.dir); err != nil {
		return err
	}
	for _, c := range r.m.Checkpoints {
		if c.Step > to {
			break
		}
		r.pos = -1
		if err := loadCheckpoint(r.dir, r.m, c, r.st); err != nil {
			return err
		}
		r.pos = c.Step
	}
	return nil
}

// compareCheckpoint checks a checkpoint file against the stepper's state.
func compareCheckpoint[T tensor.Float](dir string, c Checkpoint, st Stepper[T]) error {
	path := filepath.Join(dir, c.File)
	f, err := weights.Open(path)
	if err != nil {
		return fmt.Errorf("history: checkpoint of step %d: %w", c.Step, err)
	}
	want := map[string]*tensor.Dense[T]{}
	for _, p := range st.Params() {
		want["param/"+p.Name] = p.Value
	}
	for k, v := range st.Optimizer().State() {
		want["optim/"+k] = v
	}
	names := f.Names()
	if len(names) != len(want) {
		return fmt.Errorf("history: checkpoint %s holds %d tensors, the replayed state has %d", path, len(names), len(want))
	}
	for _, name := range names {
		w, ok := want[name]
		if !ok {
			return fmt.Errorf("history: checkpoint %s holds %q, which the replayed state lacks", path, name)
		}
		got, err := weights.Get[T](f, name)
		if err != nil {
			return fmt.Errorf("history: %w", err)
		}
		if !tensor.SameShape(got.Shape, w.Shape) {
			return fmt.Errorf("history: checkpoint %s: %q has shape %v, the replayed state %v", path, name, got.Shape, w.Shape)
		}
		for i := range got.Data {
			if got.Data[i] != w.Data[i] {
				return fmt.Errorf("history: checkpoint %s differs from the replayed state of step %d in %q at element %d (%v against %v): the file was modified", path, c.Step, name, i, got.Data[i], w.Data[i])
			}
		}
	}
	return nil
}
