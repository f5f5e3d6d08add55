package job

import (
	"bufio"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/explaind/explaind/explain"
)

// stateMagic starts a job state file: then a gob of stateHeader, the state
// without its accumulators, and the accumulators' values, little-endian
// float64, in the order of stateArrays. The accumulators (1.4 GB for the
// components preset on the paper run's 2000 samples) are streamed from
// where they live: a gob of the whole state would build its whole
// encoding in memory first, up to twice the accumulators' size more.
// A file without the magic is the earlier format, one gob of saved.
const stateMagic = "explaind epk state 2\n"

// stateHeader is a state file's gob: the job key, the state with its
// accumulators left out, and their lengths.
type stateHeader struct {
	Key   string
	State *explain.State
	// Acc, Facc, Q and FwdDat are the lengths of the state's arrays of the
	// same names; HasFwdDat says whether State.FwdDat was set.
	Acc       []int
	Facc, Q   [][]int
	FwdDat    []int
	HasFwdDat bool
}

// stateArrays calls fn on every accumulator of st, in the file's order.
func stateArrays(st *explain.State, fn func(*[]float64) error) error {
	for i := range st.Acc {
		if err := fn(&st.Acc[i]); err != nil {
			return err
		}
	}
	for i := range st.Facc {
		for t := range st.Facc[i] {
			if err := fn(&st.Facc[i][t]); err != nil {
				return err
			}
		}
	}
	for i := range st.Q {
		for t := range st.Q[i] {
			if err := fn(&st.Q[i][t]); err != nil {
				return err
			}
		}
	}
	for i := range st.FwdDat {
		if err := fn(&st.FwdDat[i]); err != nil {
			return err
		}
	}
	return nil
}

func lengths(v [][]float64) []int {
	n := make([]int, len(v))
	for i, a := range v {
		n[i] = len(a)
	}
	return n
}

// writeState writes the job state s to w.
func writeState(w io.Writer, s saved) error {
	st := *s.State
	h := stateHeader{Key: s.Key, Acc: lengths(st.Acc), FwdDat: lengths(st.FwdDat), HasFwdDat: st.FwdDat != nil}
	for _, f := range st.Facc {
		h.Facc = append(h.Facc, lengths(f))
	}
	for _, q := range st.Q {
		h.Q = append(h.Q, lengths(q))
	}
	small := st
	small.Acc, small.Facc, small.Q, small.FwdDat = nil, nil, nil, nil
	h.State = &small
	bw := bufio.NewWriterSize(w, 1<<20)
	if _, err := io.WriteString(bw, stateMagic); err != nil {
		return err
	}
	if err := gob.NewEncoder(bw).Encode(h); err != nil {
		return err
	}
	buf := make([]byte, 0, 1<<16)
	err := stateArrays(&st, func(a *[]float64) error {
		for i := 0; i < len(*a); {
			b := buf[:0]
			for ; i < len(*a) && len(b) < cap(b); i++ {
				b = binary.LittleEndian.AppendUint64(b, math.Float64bits((*a)[i]))
			}
			if _, err := bw.Write(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return bw.Flush()
}

// readState reads a job state written by writeState, or by the earlier
// format (one gob of saved).
func readState(r io.Reader) (saved, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	if head, err := br.Peek(len(stateMagic)); err != nil || string(head) != stateMagic {
		var s saved
		err := gob.NewDecoder(br).Decode(&s)
		if err == nil && s.State == nil {
			err = errors.New("no state")
		}
		return s, err
	}
	br.Discard(len(stateMagic))
	var h stateHeader
	// br is an io.ByteReader, so the decoder reads no further than its
	// message.
	if err := gob.NewDecoder(br).Decode(&h); err != nil {
		return saved{}, err
	}
	if h.State == nil {
		return saved{}, errors.New("no state")
	}
	st := h.State
	st.Acc = make([][]float64, len(h.Acc))
	for i, n := range h.Acc {
		st.Acc[i] = make([]float64, n)
	}
	mk := func(ns [][]int) [][][]float64 {
		out := make([][][]float64, len(ns))
		for i, ts := range ns {
			if ts == nil {
				continue
			}
			out[i] = make([][]float64, len(ts))
			for t, n := range ts {
				out[i][t] = make([]float64, n)
			}
		}
		return out
	}
	st.Facc, st.Q = mk(h.Facc), mk(h.Q)
	if h.HasFwdDat {
		st.FwdDat = make([][]float64, len(h.FwdDat))
		for i, n := range h.FwdDat {
			st.FwdDat[i] = make([]float64, n)
		}
	}
	buf := make([]byte, 1<<16)
	err := stateArrays(st, func(a *[]float64) error {
		for i := 0; i < len(*a); {
			n := min(len(buf)/8, len(*a)-i)
			if _, err := io.ReadFull(br, buf[:8*n]); err != nil {
				return fmt.Errorf("the accumulators end early: %w", err)
			}
			for k := range n {
				(*a)[i+k] = math.Float64frombits(binary.LittleEndian.Uint64(buf[8*k:]))
			}
			i += n
		}
		return nil
	})
	if err != nil {
		return saved{}, err
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return saved{}, errors.New("data after the accumulators")
	}
	return saved{Key: h.Key, State: st}, nil
}
