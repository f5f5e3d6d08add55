package data

import (
	"fmt"
	"math/rand/v2"

	"github.com/explaind/explaind/tensor"
)

// rngStream is the second PCG word used by NewRNG, so that a seed means the
// same stream everywhere in explaind's data handling.
const rngStream = 0x6578706c61696e64 // "explaind"

// NewRNG returns a math/rand/v2 generator seeded with rand.NewPCG(seed, c)
// for a fixed constant c. Equal seeds give equal streams.
func NewRNG(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, rngStream))
}

// StepsPerEpoch returns the number of full batches of size batchSize in n
// samples, that is n / batchSize with the last partial batch dropped (39 for
// 10000 samples in batches of 256). It returns 0 when batchSize <= 0.
func StepsPerEpoch(n, batchSize int) int {
	if batchSize <= 0 || n <= 0 {
		return 0
	}
	return n / batchSize
}

// EpochBatches draws one epoch of batches: a random permutation of 0..n-1
// from rng (rng.Perm), cut into consecutive batches of batchSize indices,
// the last partial batch dropped, as a PyTorch DataLoader with shuffle=True
// and drop_last=True does. The batches are sub-slices of one permutation.
//
// It returns an error when n < 0 or batchSize <= 0. When n < batchSize the
// result is empty, but the permutation is still drawn so that the rng
// advances the same way regardless.
func EpochBatches(rng *rand.Rand, n, batchSize int) ([][]int, error) {
	if rng == nil {
		return nil, fmt.Errorf("data: EpochBatches needs a random generator, got nil")
	}
	if n < 0 {
		return nil, fmt.Errorf("data: EpochBatches: negative sample count %d", n)
	}
	if batchSize <= 0 {
		return nil, fmt.Errorf("data: EpochBatches: batch size %d, want > 0", batchSize)
	}
	perm := rng.Perm(n)
	steps := StepsPerEpoch(n, batchSize)
	out := make([][]int, steps)
	for s := range out {
		out[s] = perm[s*batchSize : (s+1)*batchSize : (s+1)*batchSize]
	}
	return out, nil
}

// Gather returns a new array holding the samples (rows of the first axis) of
// inputs at the given indices, in order; its shape is inputs.Shape with the
// first axis replaced by len(indices). It returns an error for a nil or
// scalar input or an index outside [0, inputs.Shape[0]).
func Gather[T tensor.Float](inputs *tensor.Dense[T], indices []int) (*tensor.Dense[T], error) {
	if inputs == nil || len(inputs.Shape) == 0 {
		return nil, fmt.Errorf("data: Gather needs an array with a sample axis")
	}
	n := inputs.Shape[0]
	row := 1
	for _, d := range inputs.Shape[1:] {
		row *= d
	}
	if n*row != len(inputs.Data) {
		return nil, fmt.Errorf("data: Gather: shape %v does not match %d values", inputs.Shape, len(inputs.Data))
	}
	shape := append([]int{len(indices)}, inputs.Shape[1:]...)
	out := make([]T, len(indices)*row)
	for j, i := range indices {
		if i < 0 || i >= n {
			return nil, fmt.Errorf("data: Gather: index %d (position %d) is outside [0, %d)", i, j, n)
		}
		copy(out[j*row:(j+1)*row], inputs.Data[i*row:(i+1)*row])
	}
	return &tensor.Dense[T]{Shape: shape, Data: out}, nil
}

// GatherLabels returns labels[i] for each i in indices, in order. It returns
// an error for an index outside [0, len(labels)).
func GatherLabels(labels []int, indices []int) ([]int, error) {
	out := make([]int, len(indices))
	for j, i := range indices {
		if i < 0 || i >= len(labels) {
			return nil, fmt.Errorf("data: GatherLabels: index %d (position %d) is outside [0, %d)", i, j, len(labels))
		}
		out[j] = labels[i]
	}
	return out, nil
}

// newPCGRand returns rand.New(rand.NewPCG(seed, stream)).
func newPCGRand(seed, stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, stream))
}
