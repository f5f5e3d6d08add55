// Package tensor provides dense, row-major float32 and float64 arrays and the
// few whole-array operations the rest of explaind needs.
//
// A Dense is deliberately plain: a shape and a flat slice. Layers index the
// slice directly, in the style of llm.c, and call gemm for matrix products.
package tensor

import (
	"fmt"
	"math"
)

// Float is the set of element types explaind computes in.
type Float interface {
	~float32 | ~float64
}

// Dense is an n-dimensional row-major array. Data has exactly Numel(Shape)
// elements; the last axis is contiguous.
type Dense[T Float] struct {
	Shape []int
	Data  []T
}

// Numel returns the number of elements of an array of the given shape.
// The empty shape denotes a scalar (one element).
func Numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// New returns a zero-filled array of the given shape.
func New[T Float](shape ...int) *Dense[T] {
	for _, d := range shape {
		if d < 0 {
			panic(fmt.Sprintf("tensor.New: negative dimension in shape %v", shape))
		}
	}
	return &Dense[T]{Shape: append([]int(nil), shape...), Data: make([]T, Numel(shape))}
}

// FromSlice wraps data (not copied) as an array of the given shape.
// It returns an error when the length does not match the shape.
func FromSlice[T Float](data []T, shape ...int) (*Dense[T], error) {
	if n := Numel(shape); n != len(data) {
		return nil, fmt.Errorf("tensor: %d values cannot have shape %v (%d elements)", len(data), shape, n)
	}
	return &Dense[T]{Shape: append([]int(nil), shape...), Data: data}, nil
}

// Numel returns the number of elements of a.
func (a *Dense[T]) Numel() int { return len(a.Data) }

// Dim returns the size of axis i; negative i counts from the end.
func (a *Dense[T]) Dim(i int) int {
	if i < 0 {
		i += len(a.Shape)
	}
	return a.Shape[i]
}

// Clone returns a deep copy of a.
func (a *Dense[T]) Clone() *Dense[T] {
	return &Dense[T]{Shape: append([]int(nil), a.Shape...), Data: append([]T(nil), a.Data...)}
}

// Reshape returns a view of a with another shape of the same size.
func (a *Dense[T]) Reshape(shape ...int) (*Dense[T], error) {
	if Numel(shape) != len(a.Data) {
		return nil, fmt.Errorf("tensor: cannot reshape %v (%d elements) to %v", a.Shape, len(a.Data), shape)
	}
	return &Dense[T]{Shape: append([]int(nil), shape...), Data: a.Data}, nil
}

// MustReshape is Reshape for shapes the caller has already checked.
// It panics on a size mismatch, which is a programming error.
func (a *Dense[T]) MustReshape(shape ...int) *Dense[T] {
	r, err := a.Reshape(shape...)
	if err != nil {
		panic(err)
	}
	return r
}

// Zero sets every element of a to zero.
func (a *Dense[T]) Zero() { clear(a.Data) }

// SameShape reports whether a and b have identical shapes.
func SameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Convert returns a copy of a with element type U.
func Convert[U, T Float](a *Dense[T]) *Dense[U] {
	out := &Dense[U]{Shape: append([]int(nil), a.Shape...), Data: make([]U, len(a.Data))}
	for i, v := range a.Data {
		out.Data[i] = U(v)
	}
	return out
}

// MaxAbsDiff returns max_i |a_i - b_i| (+Inf where either is NaN) and
// max_i |b_i|, computed in float64.
// It is the building block of the relative-error checks in the tests.
func MaxAbsDiff[T, U Float](a []T, b []U) (diff, scale float64) {
	if len(a) != len(b) {
		return math.Inf(1), 0
	}
	for i := range a {
		d := math.Abs(float64(a[i]) - float64(b[i]))
		if math.IsNaN(d) {
			d = math.Inf(1) // a NaN never passes a tolerance check
		}
		if d > diff {
			diff = d
		}
		if s := math.Abs(float64(b[i])); s > scale {
			scale = s
		}
	}
	return diff, scale
}

// RelErr returns ‖a−b‖∞ / max(‖b‖∞, tiny): the relative error of a against
// the reference b in the max norm. Mismatched lengths give +Inf.
func RelErr[T, U Float](a []T, b []U) float64 {
	d, s := MaxAbsDiff(a, b)
	if s < 1e-30 {
		s = 1e-30
	}
	return d / s
}

// AddScaled computes dst += alpha*src elementwise.
func AddScaled[T Float](dst []T, alpha T, src []T) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] += alpha * v
	}
}

// AddScaled2 computes dst0 += a0*src and dst1 += a1*src elementwise, in
// one pass over src.
func AddScaled2[T Float](dst0, dst1 []T, a0, a1 T, src []T) {
	dst0, dst1 = dst0[:len(src)], dst1[:len(src)]
	for i, v := range src {
		dst0[i] += a0 * v
		dst1[i] += a1 * v
	}
}

// GatherRows returns the row blocks idx of a batch-major array, per
// consecutive entries of the first axis each (per = 1 for samples, K for K
// cotangent rows per sample), as a new array.
func GatherRows[T Float](a *Dense[T], idx []int, per int) *Dense[T] {
	n := len(a.Data) / a.Shape[0] * per
	out := &Dense[T]{Shape: append([]int{len(idx) * per}, a.Shape[1:]...), Data: make([]T, len(idx)*n)}
	for i, r := range idx {
		copy(out.Data[i*n:(i+1)*n], a.Data[r*n:(r+1)*n])
	}
	return out
}
