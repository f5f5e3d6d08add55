package retrain

import (
	"github.com/explaind/explaind/setting"

	"fmt"
	"math/bits"
	"slices"

	"github.com/explaind/explaind/shard"
)

// ShardOrder names the order in which a job's retrainings are split into
// shards (ShardRows); shard outputs record it, and Merge refuses shards of
// another order.
const ShardOrder = "bit-reversed plan index"

// ShardRecord is what a shard output (Options.Shard set) says about the
// part of the job it holds, in its progress file and its summary.
type ShardRecord struct {
	// Index and Count: the shard is Index of Count (0-based).
	Index int `json:"index"`
	Count int `json:"count"`
	// Order is ShardOrder; Of is the number of retrainings of the whole
	// job, Rows the indices into the job's Plan of those the shard
	// covers, ascending (ShardRows).
	Order string `json:"order"`
	Of    int    `json:"of"`
	Rows  []int  `json:"rows"`
}

// Shard returns the shard r records.
func (r *ShardRecord) Shard() shard.Shard {
	if r == nil {
		return shard.Shard{}
	}
	return shard.Shard{Index: r.Index, Count: r.Count}
}

// shardName returns "i/n", or "none" for an unsharded job.
func shardName(r *ShardRecord) string {
	if r == nil {
		return "none"
	}
	return r.Shard().String()
}

// bitReversed returns 0 … n−1 in van der Corput order: the k-bit
// reversals of 0 … 2^k−1 (2^k the least power of two ≥ n) that are
// below n, in order.
func bitReversed(n int) []int {
	k := bits.Len(uint(max(n-1, 0)))
	out := make([]int, 0, n)
	for j := range 1 << k {
		r := int(bits.Reverse(uint(j)) >> (bits.UintSize - k))
		if k == 0 {
			r = 0
		}
		if r < n {
			out = append(out, r)
		}
	}
	return out
}

// ShardRows returns the indices into a job's Plan (of total retrainings)
// of those shard s covers, ascending; the zero Shard covers all.
//
// The split is shard.Shard.Range's contiguous blocks, of the retrainings
// in bit-reversed (van der Corput) order of their index in Plan rather
// than in Plan's own order. Retrainings cost differently: Plan goes from
// the last checkpoint to the first, and a checkpoint's retrainings take
// from no epoch (the model is at the target already) to MaxEpochs. Any
// contiguous block of the van der Corput order is spread evenly over the
// Plan (a block of 2^j aligned items takes one from each 2^j-th of it; in
// general a shard has within about log₂(total)+1 of its share of any
// contiguous span of the Plan), so the shards get early and late
// checkpoints, every part and every seed alike, whatever their count. A
// shard does its retrainings in Plan order (one replay per checkpoint), and
// Merge puts the rows of all shards back into Plan order: the rows of the
// unsharded job.
//
// More shards than retrainings is an error naming the setting Shard.
func ShardRows(total int, s shard.Shard) ([]int, error) {
	lo, hi, err := s.Range(total)
	if err != nil {
		return nil, setting.Invalid("Shard", s.String(), "%w", err)
	}
	if s.IsZero() {
		out := make([]int, total)
		for i := range out {
			out[i] = i
		}
		return out, nil
	}
	rows := slices.Clone(bitReversed(total)[lo:hi])
	slices.Sort(rows)
	return rows, nil
}

// shardRecord returns the record of shard s of a job of total
// retrainings covering rows (ShardRows), nil for the zero Shard.
func shardRecord(s shard.Shard, total int, rows []int) *ShardRecord {
	if s.IsZero() {
		return nil
	}
	return &ShardRecord{Index: s.Index, Count: s.Count, Order: ShardOrder, Of: total, Rows: rows}
}

// sameShard reports whether a and b record the same part of a job.
func sameShard(a, b *ShardRecord) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Index == b.Index && a.Count == b.Count && a.Order == b.Order && a.Of == b.Of && slices.Equal(a.Rows, b.Rows)
}

// Describe returns "shard i/n (k of N retrainings)".
func (r *ShardRecord) Describe() string {
	return fmt.Sprintf("shard %s (%d of %d retrainings)", r.Shard(), len(r.Rows), r.Of)
}
