package progress

import (
	"fmt"
	"io"
	"math"
	"sync"
)

// StagesTotal is the count of a Stages bar: per mille of the whole.
const StagesTotal = 1000

// Stages is the progress of a job made of stages as one bar over the
// whole (the demo's training, EPK, experiments and report): stage i has a
// weight w_i, its expected share of the time, and while it runs its own
// count done of total moves the bar to
//
//	1000 · (Σ_{j<i} w_j + w_i · done/total) / Σ_j w_j
//
// per mille, the description naming the stage and its own count. A stage
// that is skipped (its output reused) moves the bar past its share at
// once; the bar is made at the first count of a stage that runs, so that
// its rate and time left count only the work of this process (and assume
// the stages to come run at the rate of those done, by their weights).
type Stages struct {
	w       io.Writer
	what    string
	weights []float64
	sum     float64

	mu  sync.Mutex
	bar *Bar
}

// NewStages returns the progress of the stages of the given weights on w,
// described by what; nil when w is nil (no progress shown).
func NewStages(w io.Writer, what string, weights []float64) *Stages {
	if w == nil {
		return nil
	}
	s := &Stages{w: w, what: what, weights: weights}
	for _, v := range weights {
		s.sum += v
	}
	return s
}

// at returns the per mille of the whole once stage i is done to frac.
func (s *Stages) at(i int, frac float64) int {
	var before float64
	for _, v := range s.weights[:i] {
		before += v
	}
	return int(math.Floor(StagesTotal * (before + s.weights[i]*frac) / s.sum))
}

// Stage returns stage i's Progress callback (func(done, total int), as
// Func's), which names the stage name on the bar; nil for a nil Stages.
func (s *Stages) Stage(i int, name string) func(done, total int) {
	if s == nil {
		return nil
	}
	return func(done, total int) {
		frac := 1.0
		if total > 0 {
			frac = min(float64(done)/float64(total), 1)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		what := fmt.Sprintf("%s, stage %d/%d %s %d/%d", s.what, i+1, len(s.weights), name, done, total)
		if s.bar == nil {
			s.bar = New(s.w, StagesTotal, s.at(i, frac), what, "")
		}
		s.bar.Describe(what)
		s.bar.Set(s.at(i, frac))
	}
}

// Done marks stage i done (finished, or skipped because its output is
// reused); the last stage's Done finishes the bar. Stages that all were
// skipped show nothing.
func (s *Stages) Done(i int) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bar == nil {
		return
	}
	if i == len(s.weights)-1 {
		s.bar.Describe(s.what)
		s.bar.Set(StagesTotal)
		s.bar.Finish()
		return
	}
	s.bar.Set(s.at(i, 1))
}

// Writer returns a writer to w that clears the bar (Bar.Clear) before each
// write: the lines a job prints between its stages, while the bar is
// shown on the same terminal. For a nil Stages it returns w.
func (s *Stages) Writer(w io.Writer) io.Writer {
	if s == nil {
		return w
	}
	return clearing{s, w}
}

type clearing struct {
	s *Stages
	w io.Writer
}

func (c clearing) Write(p []byte) (int, error) {
	c.s.mu.Lock()
	if c.s.bar != nil {
		c.s.bar.Clear()
	}
	c.s.mu.Unlock()
	return c.w.Write(p)
}
