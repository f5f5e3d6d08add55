package explain

import (
	"fmt"
	"time"
)

// State is a job's progress, saved so that an interrupted job can resume
// (Spec.Checkpoint, Spec.Resume). It holds the accumulators as they stand
// after Done steps; callers store it (for example with encoding/gob) and
// must pass it back only to a job with the same run, queries, test set,
// steps and quadrature.
type State struct {
	Done   int
	Wall   time.Duration
	Val    Validation
	Nodes  int
	Acc    [][]float64   // per query: Forward and Sweep results
	Facc   [][][]float64 // per query, per tensor: Feature accumulators
	Q      [][][]float64 // per query, per tensor: the sweep's Q vectors
	FwdDat [][]float64   // per query: the sweep's forward data contributions
	// SGDNext and SGDReg are the SGD splitter's carried state (forward
	// jobs).
	SGDNext int
	SGDReg  map[string][]float64
}

// queryState is one query's part of a State: the fields of its kind of
// evaluation, nil for the others.
type queryState struct {
	values      []float64   // State.Acc: Forward and Sweep results
	tensors     [][]float64 // State.Facc: Feature accumulators per tensor
	sweep       [][]float64 // State.Q: the sweep's Q per tensor
	forwardData []float64   // State.FwdDat: the sweep's forward data
}

func errStateMismatch(q Query) error {
	return fmt.Errorf("explain: the saved state of query %q does not fit this job", q.Name)
}

func (j *job[T, E]) save() *State {
	st := &State{Done: j.done, Val: j.val.Validation, Nodes: j.val.nodes}
	if len(j.sweeps) > 0 {
		st.FwdDat = make([][]float64, len(j.queries))
	}
	for i, q := range j.queries {
		s := q.save()
		st.Acc = append(st.Acc, s.values)
		st.Facc = append(st.Facc, s.tensors)
		st.Q = append(st.Q, s.sweep)
		if st.FwdDat != nil {
			st.FwdDat[i] = s.forwardData
		}
	}
	if j.sgd != nil && len(j.sweeps) == 0 {
		st.SGDNext, st.SGDReg = j.sgd.RegState()
	}
	return st
}

func (j *job[T, E]) restore(st *State) error {
	if len(st.Acc) != len(j.queries) || len(st.Facc) != len(j.queries) || len(st.Q) != len(j.queries) ||
		(st.FwdDat != nil && len(st.FwdDat) != len(j.queries)) || st.Done < 0 || st.Done >= j.steps {
		return fmt.Errorf("explain: the saved state (%d queries, %d steps done) does not fit this job (%d queries, %d steps)",
			len(st.Acc), st.Done, len(j.queries), j.steps)
	}
	for i, q := range j.queries {
		s := queryState{values: st.Acc[i], tensors: st.Facc[i], sweep: st.Q[i]}
		if st.FwdDat != nil {
			s.forwardData = st.FwdDat[i]
		}
		if err := q.restore(s); err != nil {
			return err
		}
	}
	if len(st.Val.Start) != j.samples*j.classes || len(st.Val.StepChange) != j.steps*j.samples {
		return fmt.Errorf("explain: the saved validation state does not fit this job")
	}
	j.done, j.val.Validation, j.val.nodes = st.Done, st.Val, st.Nodes
	if j.sgd != nil && len(j.sweeps) == 0 {
		j.sgd.LoadRegState(st.SGDNext, st.SGDReg)
	}
	return nil
}
