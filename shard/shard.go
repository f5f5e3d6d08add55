// Package shard splits a job into n deterministic parts for a cluster's
// job array: task i of n computes shard i/n of the job's work items
// (test samples for an EPK job, retraining rows for retrain), writes it
// as a complete output of its own, and a merge step joins the shards.
//
// Items are split into n contiguous blocks in order, of sizes that differ
// by at most one: shard i of n covers the items
//
//	[⌊i·N/n⌋, ⌊(i+1)·N/n⌋)
//
// of N. Contiguous blocks keep a merge a concatenation in item order;
// equal sizes balance the work when the items cost about the same (every
// test sample of an EPK job does).
package shard

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// A Shard is part Index of Count (0 ≤ Index < Count). The zero Shard
// means the whole job, unsharded.
type Shard struct {
	Index, Count int
}

// MaxCount bounds the shard count: more shards than this is a typo,
// not a cluster.
const MaxCount = 1 << 20

// Parse reads "i/n", the shard i of n (0-based). The empty string is the
// zero Shard.
func Parse(s string) (Shard, error) {
	if s == "" {
		return Shard{}, nil
	}
	is, ns, ok := strings.Cut(s, "/")
	if !ok {
		return Shard{}, fmt.Errorf("shard %q: want I/N, the shard I (0 … N-1) of N, such as 0/4", s)
	}
	i, err1 := strconv.Atoi(is)
	n, err2 := strconv.Atoi(ns)
	if err1 != nil || err2 != nil {
		return Shard{}, fmt.Errorf("shard %q: want I/N with whole numbers I and N, such as 0/4", s)
	}
	sh := Shard{Index: i, Count: n}
	if n < 1 { // 0/0 is not the zero Shard's spelling: that is no shard at all
		return Shard{}, fmt.Errorf("shard %q: the count must be 1 … %d", s, MaxCount)
	}
	if err := sh.Check(); err != nil {
		return Shard{}, err
	}
	return sh, nil
}

// Check reports whether s is the zero Shard or a valid shard.
func (s Shard) Check() error {
	switch {
	case s == Shard{}:
		return nil
	case s.Count < 1 || s.Count > MaxCount:
		return fmt.Errorf("shard %d/%d: the count must be 1 … %d", s.Index, s.Count, MaxCount)
	case s.Index < 0 || s.Index >= s.Count:
		return fmt.Errorf("shard %d/%d: the index must be 0 … %d (shards count from 0)", s.Index, s.Count, s.Count-1)
	}
	return nil
}

// IsZero reports whether s is the zero Shard, the whole job.
func (s Shard) IsZero() bool { return s == Shard{} }

// String returns "i/n", or "" for the zero Shard.
func (s Shard) String() string {
	if s.IsZero() {
		return ""
	}
	return fmt.Sprintf("%d/%d", s.Index, s.Count)
}

// Range returns the block [lo, hi) of n items that s covers; the zero
// Shard covers all of them. It is an error for a shard to cover no item
// (more shards than items).
func (s Shard) Range(n int) (lo, hi int, err error) {
	if err := s.Check(); err != nil {
		return 0, 0, err
	}
	if s.IsZero() {
		return 0, n, nil
	}
	if s.Count > n {
		return 0, 0, fmt.Errorf("%d shards of %d items: each shard needs at least one; use at most %d shards", s.Count, n, n)
	}
	// i·n fits in an int: i < Count ≤ MaxCount and n is a count of items.
	return s.Index * n / s.Count, (s.Index + 1) * n / s.Count, nil
}

// Env returns a note when the environment says the process is one task of
// a job array (Slurm's SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT,
// Kubernetes' JOB_COMPLETION_INDEX of an Indexed Job), "" otherwise. A
// command without an explicit shard prints it and carries on unsharded:
// nobody shards by accident, and every task of an array computing the whole
// job is visible in the log.
func Env() string {
	if id := os.Getenv("SLURM_ARRAY_TASK_ID"); id != "" {
		n := os.Getenv("SLURM_ARRAY_TASK_COUNT")
		return fmt.Sprintf("note: this is task %s of a Slurm job array of %s, but no shard is set, so it computes the whole job; "+
			"to compute one shard per task, pass the shard (as $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT with an array 0-based like --array=0-%s)", id, orUnknown(n), lastIndex(n))
	}
	if id := os.Getenv("JOB_COMPLETION_INDEX"); id != "" {
		return fmt.Sprintf("note: this is index %s of a Kubernetes Indexed Job, but no shard is set, so it computes the whole job; "+
			"to compute one shard per index, pass the shard as $JOB_COMPLETION_INDEX/COMPLETIONS", id)
	}
	return ""
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown size"
	}
	return s
}

func lastIndex(n string) string {
	if c, err := strconv.Atoi(n); err == nil && c > 0 {
		return strconv.Itoa(c - 1)
	}
	return "N-1"
}
