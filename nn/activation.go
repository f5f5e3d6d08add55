package nn

import (
	"fmt"
	"math"

	"github.com/explaind/explaind/tensor"
)

// ReLU is y = max(x, 0). Its derivative at 0 is taken as 0, as in PyTorch.
type ReLU[T tensor.Float] struct{}

// Params returns nil: ReLU has no parameters.
func (ReLU[T]) Params() []*Param[T] { return nil }

// OutShape returns the input shape.
func (ReLU[T]) OutShape(in []int) ([]int, error) {
	if len(in) < 1 {
		return nil, fmt.Errorf("nn.ReLU: input needs a batch axis, got shape %v", in)
	}
	return append([]int(nil), in...), nil
}

type reluState[T tensor.Float] struct{ y *tensor.Dense[T] }

// Forward computes max(x, 0).
func (r ReLU[T]) Forward(x *tensor.Dense[T]) (*tensor.Dense[T], State, error) {
	if _, err := checkInput[T](r, x); err != nil {
		return nil, nil, err
	}
	y := tensor.New[T](x.Shape...)
	for i, v := range x.Data {
		if v > 0 {
			y.Data[i] = v
		}
	}
	return y, &reluState[T]{y: y}, nil
}

// Backward passes dy where the input was positive.
func (ReLU[T]) Backward(st State, dy *tensor.Dense[T], _ *Grads[T], needDx bool) (*tensor.Dense[T], error) {
	s, ok := st.(*reluState[T])
	if !ok {
		return nil, fmt.Errorf("nn.ReLU: Backward got a state from another layer")
	}
	k, err := cotangentsPerSample("ReLU", dy.Shape, s.y.Shape[0], s.y.Shape)
	if err != nil || !needDx {
		return nil, err
	}
	return maskRows(dy, s.y.Data, k), nil
}

// maskRows returns dy with entries zeroed where the sample's primal value
// y is not positive; dy has k rows per sample of y.
func maskRows[T tensor.Float](dy *tensor.Dense[T], y []T, k int) *tensor.Dense[T] {
	dx := tensor.New[T](dy.Shape...)
	n := len(y) / (dy.Shape[0] / k) // features per sample
	for r := 0; r < dy.Shape[0]; r++ {
		yb := y[(r/k)*n : (r/k+1)*n]
		src := dy.Data[r*n : (r+1)*n]
		dst := dx.Data[r*n : (r+1)*n]
		for i, v := range yb {
			if v > 0 {
				dst[i] = src[i]
			}
		}
	}
	return dx
}

// JVP: dy = dx where x > 0. ReLU has no parameters, so only dx matters.
func (r ReLU[T]) JVP(x, dx *tensor.Dense[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	y, _, err := r.Forward(x)
	if err != nil {
		return nil, nil, err
	}
	m := t.Count()
	if err := checkTangentInput("ReLU", x, dx, m); err != nil {
		return nil, nil, err
	}
	if dx == nil {
		return y, tensor.New[T](append([]int{x.Shape[0] * m}, x.Shape[1:]...)...), nil
	}
	return y, maskRows(dx, y.Data, m), nil
}

// LogSoftmax normalizes the last axis: y = x − log Σ exp x.
type LogSoftmax[T tensor.Float] struct{}

// Params returns nil: LogSoftmax has no parameters.
func (LogSoftmax[T]) Params() []*Param[T] { return nil }

// OutShape returns the input shape.
func (LogSoftmax[T]) OutShape(in []int) ([]int, error) {
	if len(in) < 2 {
		return nil, fmt.Errorf("nn.LogSoftmax: input shape %v, want [B, ..., C]", in)
	}
	return append([]int(nil), in...), nil
}

type logSoftmaxState[T tensor.Float] struct{ y *tensor.Dense[T] }

// Forward computes the log-softmax of each row, stably (max subtracted).
func (l LogSoftmax[T]) Forward(x *tensor.Dense[T]) (*tensor.Dense[T], State, error) {
	if _, err := checkInput[T](l, x); err != nil {
		return nil, nil, err
	}
	c := x.Shape[len(x.Shape)-1]
	y := tensor.New[T](x.Shape...)
	for r := 0; r < len(x.Data)/c; r++ {
		src, dst := x.Data[r*c:(r+1)*c], y.Data[r*c:(r+1)*c]
		mx := math.Inf(-1)
		for _, v := range src {
			mx = math.Max(mx, float64(v))
		}
		var sum float64
		for _, v := range src {
			sum += math.Exp(float64(v) - mx)
		}
		lse := mx + math.Log(sum)
		for i, v := range src {
			dst[i] = T(float64(v) - lse)
		}
	}
	return y, &logSoftmaxState[T]{y: y}, nil
}

// softmaxRows applies the Jacobian of log-softmax to rows of src, k rows
// per row of p = exp(y) = softmax: transposed, dst = src − p Σsrc (the
// VJP); otherwise dst = src − ⟨p, src⟩ (the JVP).
func softmaxRows[T tensor.Float](p []T, c, k int, src []T, transpose bool) []T {
	dst := make([]T, len(src))
	for r := 0; r < len(src)/c; r++ {
		pr := p[(r/k)*c : (r/k+1)*c]
		s, d := src[r*c:(r+1)*c], dst[r*c:(r+1)*c]
		var acc float64
		if transpose {
			for _, v := range s {
				acc += float64(v)
			}
			for i, v := range s {
				d[i] = T(float64(v) - float64(pr[i])*acc)
			}
			continue
		}
		for i, v := range s {
			acc += float64(pr[i]) * float64(v)
		}
		for i, v := range s {
			d[i] = T(float64(v) - acc)
		}
	}
	return dst
}

// Backward: dx = dy − softmax(x)·Σ dy, row by row.
func (LogSoftmax[T]) Backward(st State, dy *tensor.Dense[T], _ *Grads[T], needDx bool) (*tensor.Dense[T], error) {
	s, ok := st.(*logSoftmaxState[T])
	if !ok {
		return nil, fmt.Errorf("nn.LogSoftmax: Backward got a state from another layer")
	}
	k, err := cotangentsPerSample("LogSoftmax", dy.Shape, s.y.Shape[0], s.y.Shape)
	if err != nil || !needDx {
		return nil, err
	}
	c := s.y.Shape[len(s.y.Shape)-1]
	// Rows of dy: (b, k, positions...); y rows: (b, positions...).
	return &tensor.Dense[T]{Shape: append([]int(nil), dy.Shape...), Data: softmaxRowsK(s.y, c, k, dy.Data, true)}, nil
}

// softmaxRowsK applies softmaxRows to cotangents or tangents with k rows
// per sample, when each sample may hold several positions; exp(y) is
// computed once per sample, not once per row.
func softmaxRowsK[T tensor.Float](y *tensor.Dense[T], c, k int, src []T, transpose bool) []T {
	p := make([]T, len(y.Data))
	for i, v := range y.Data {
		p[i] = T(math.Exp(float64(v)))
	}
	per := len(y.Data) / y.Shape[0] // values per sample
	if per == c {
		return softmaxRows(p, c, k, src, transpose)
	}
	dst := make([]T, 0, len(src))
	for r := 0; r < len(src)/per; r++ {
		dst = append(dst, softmaxRows(p[(r/k)*per:(r/k+1)*per], c, 1, src[r*per:(r+1)*per], transpose)...)
	}
	return dst
}

// JVP: dy = dx − ⟨softmax(x), dx⟩ per row.
func (l LogSoftmax[T]) JVP(x, dx *tensor.Dense[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	y, _, err := l.Forward(x)
	if err != nil {
		return nil, nil, err
	}
	m := t.Count()
	if err := checkTangentInput("LogSoftmax", x, dx, m); err != nil {
		return nil, nil, err
	}
	if dx == nil {
		return y, tensor.New[T](append([]int{x.Shape[0] * m}, x.Shape[1:]...)...), nil
	}
	c := x.Shape[len(x.Shape)-1]
	return y, &tensor.Dense[T]{Shape: append([]int(nil), dx.Shape...), Data: softmaxRowsK(y, c, m, dx.Data, false)}, nil
}
