package data

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"

	"github.com/explaind/explaind/tensor"
)

// Dataset ties together the inputs of a classification task, their labels,
// the number of classes and a human-readable name.
//
// Inputs has the sample axis first: Inputs.Shape[0] == len(Labels). Every
// label lies in [0, Classes). A Dataset is a small value; copying it copies
// the header only, not the underlying arrays.
type Dataset[T tensor.Float] struct {
	// Name identifies the data, e.g. "modulo_p113_train" or
	// "fashion2_0v6_train".
	Name string
	// Inputs holds one sample per row of the first axis.
	Inputs *tensor.Dense[T]
	// Labels holds one class index per sample.
	Labels []int
	// Classes is the number of classes of the task.
	Classes int
}

// Len returns the number of samples.
func (d Dataset[T]) Len() int { return len(d.Labels) }

// SampleShape returns the shape of one sample (Inputs.Shape without the
// sample axis). It returns nil when Inputs is nil.
func (d Dataset[T]) SampleShape() []int {
	if d.Inputs == nil || len(d.Inputs.Shape) == 0 {
		return nil
	}
	return append([]int(nil), d.Inputs.Shape[1:]...)
}

// Validate checks the structural invariants of d: inputs present with a
// sample axis matching the labels, data length matching the shape, a
// positive class count and every label in range.
func (d Dataset[T]) Validate() error {
	if d.Inputs == nil {
		return fmt.Errorf("data: dataset %q has no inputs", d.Name)
	}
	if len(d.Inputs.Shape) == 0 {
		return fmt.Errorf("data: dataset %q inputs have no sample axis (scalar shape)", d.Name)
	}
	if n := tensor.Numel(d.Inputs.Shape); n != len(d.Inputs.Data) {
		return fmt.Errorf("data: dataset %q inputs have shape %v (%d elements) but %d values", d.Name, d.Inputs.Shape, n, len(d.Inputs.Data))
	}
	if d.Inputs.Shape[0] != len(d.Labels) {
		return fmt.Errorf("data: dataset %q has %d input samples but %d labels", d.Name, d.Inputs.Shape[0], len(d.Labels))
	}
	if d.Classes <= 0 {
		return fmt.Errorf("data: dataset %q has class count %d, want > 0", d.Name, d.Classes)
	}
	for i, y := range d.Labels {
		if y < 0 || y >= d.Classes {
			return fmt.Errorf("data: dataset %q label %d of sample %d is outside [0, %d)", d.Name, y, i, d.Classes)
		}
	}
	return nil
}

// fingerprintTag versions the encoding hashed by Fingerprint.
const fingerprintTag = "explaind-dataset-v1\x00"

// Fingerprint returns the hex SHA-256 of the content of d, so that a run can
// record exactly which data it used. The name is not part of it.
//
// The hashed byte stream is, all integers little-endian:
//
//	"explaind-dataset-v1\x00"
//	uint64 rank, then uint64 per dimension of Inputs.Shape
//	every input value widened to float64, as its IEEE-754 bits (uint64)
//	uint64 number of labels, then int64 per label
//	int64 Classes
//
// Widening to float64 is exact, so the fingerprint does not depend on the
// element type as such: a float32 and a float64 dataset holding the same
// values (the integer token ids of the modulo task, say) hash the same, while
// data normalized in different precisions (and so holding different values)
// does not. A nil Inputs hashes as rank 0 with no values.
func (d Dataset[T]) Fingerprint() string {
	h := sha256.New()
	buf := make([]byte, 0, 1<<16)
	flush := func() {
		h.Write(buf)
		buf = buf[:0]
	}
	put := func(v uint64) {
		if len(buf)+8 > cap(buf) {
			flush()
		}
		buf = binary.LittleEndian.AppendUint64(buf, v)
	}
	buf = append(buf, fingerprintTag...)
	var shape []int
	var values []T
	if d.Inputs != nil {
		shape, values = d.Inputs.Shape, d.Inputs.Data
	}
	put(uint64(len(shape)))
	for _, s := range shape {
		put(uint64(s))
	}
	for _, v := range values {
		put(math.Float64bits(float64(v)))
	}
	put(uint64(len(d.Labels)))
	for _, y := range d.Labels {
		put(uint64(int64(y)))
	}
	put(uint64(int64(d.Classes)))
	flush()
	return hex.EncodeToString(h.Sum(nil))
}

// Head returns a new dataset holding copies of the first n samples of d.
// It returns an error unless 0 <= n <= d.Len().
func (d Dataset[T]) Head(n int) (Dataset[T], error) {
	if err := d.Validate(); err != nil {
		return Dataset[T]{}, err
	}
	if n < 0 || n > d.Len() {
		return Dataset[T]{}, fmt.Errorf("data: cannot take the first %d samples of dataset %q: it has %d (want 0 <= n <= %d)", n, d.Name, d.Len(), d.Len())
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return d.Subset(idx)
}

// Subset returns a new dataset holding copies of the samples of d at the
// given indices, in that order (repeats allowed). It returns an error naming
// the first index outside [0, d.Len()).
func (d Dataset[T]) Subset(indices []int) (Dataset[T], error) {
	if err := d.Validate(); err != nil {
		return Dataset[T]{}, err
	}
	x, err := Gather(d.Inputs, indices)
	if err != nil {
		return Dataset[T]{}, fmt.Errorf("data: subset of dataset %q: %w", d.Name, err)
	}
	y, err := GatherLabels(d.Labels, indices)
	if err != nil {
		return Dataset[T]{}, fmt.Errorf("data: subset of dataset %q: %w", d.Name, err)
	}
	return Dataset[T]{Name: d.Name, Inputs: x, Labels: y, Classes: d.Classes}, nil
}

// Batch returns the inputs and labels of the samples at the given indices,
// as built by Gather and GatherLabels.
func (d Dataset[T]) Batch(indices []int) (*tensor.Dense[T], []int, error) {
	if d.Inputs == nil {
		return nil, nil, fmt.Errorf("data: dataset %q has no inputs", d.Name)
	}
	x, err := Gather(d.Inputs, indices)
	if err != nil {
		return nil, nil, err
	}
	y, err := GatherLabels(d.Labels, indices)
	if err != nil {
		return nil, nil, err
	}
	return x, y, nil
}
