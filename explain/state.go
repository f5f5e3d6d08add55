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
	FwdDat [][]float64
	// SGDNext and SGDReg are the SGD splitter's carried state (forward
	// jobs).
	SGDNext int
	SGDReg  map[string][]float64
}

func (j *job[T, E]) save() *State {
	st := &State{Done: j.done, Val: j.val, Nodes: j.nodes, FwdDat: j.fwdDat}
	for qi, q := range j.qs {
		st.Acc = append(st.Acc, q.acc)
		st.Facc = append(st.Facc, q.facc)
		var qq [][]float64
		if j.q != nil && j.q[qi] != nil {
			for _, v := range j.q[qi] {
				f := make([]float64, len(v))
				for i, x := range v {
					f[i] = float64(x)
				}
				qq = append(qq, f)
			}
		}
		st.Q = append(st.Q, qq)
	}
	if j.sgd != nil && !j.sweep {
		st.SGDNext, st.SGDReg = j.sgd.RegState()
	}
	return st
}

func (j *job[T, E]) restore(st *State) error {
	if len(st.Acc) != len(j.qs) || st.Done < 0 || st.Done >= j.S {
		return fmt.Errorf("explain: the saved state (%d queries, %d steps done) does not fit this job (%d queries, %d steps)", len(st.Acc), st.Done, len(j.qs), j.S)
	}
	for qi, q := range j.qs {
		if len(st.Acc[qi]) != len(q.acc) || len(st.Facc[qi]) != len(q.facc) {
			return fmt.Errorf("explain: the saved state of query %q does not fit this job", q.q.Name)
		}
		for t := range q.facc {
			if len(st.Facc[qi][t]) != len(q.facc[t]) {
				return fmt.Errorf("explain: the saved state of query %q does not fit this job", q.q.Name)
			}
		}
		q.acc, q.facc = st.Acc[qi], st.Facc[qi]
		if j.q != nil && j.q[qi] != nil {
			if len(st.Q[qi]) != len(j.q[qi]) {
				return fmt.Errorf("explain: the saved sweep state of query %q does not fit this job", q.q.Name)
			}
			for t, v := range st.Q[qi] {
				if len(v) != len(j.q[qi][t]) {
					return fmt.Errorf("explain: the saved sweep state of query %q does not fit this job", q.q.Name)
				}
				for i, x := range v {
					j.q[qi][t][i] = E(x)
				}
			}
		}
	}
	if len(st.Val.Start) != j.X*j.C || len(st.Val.StepChange) != j.S*j.X {
		return fmt.Errorf("explain: the saved validation state does not fit this job")
	}
	j.done, j.val, j.nodes = st.Done, st.Val, st.Nodes
	if st.FwdDat != nil {
		j.fwdDat = st.FwdDat
	}
	if j.sgd != nil && !j.sweep {
		j.sgd.LoadRegState(st.SGDNext, st.SGDReg)
	}
	return nil
}
