// Package nn holds explaind's differentiable layers.
//
// Every layer is written out by hand, in the spirit of llm.c: its forward
// pass, its reverse-mode rule (VJP) and its forward-mode rule (JVP) sit side
// by side in one file, as plain loops and GEMM calls.
//
// Conventions, shared by every layer:
//
//   - Arrays are batch-major: x has shape [B, ...].
//   - Backward takes K cotangents per sample at once, as dy of shape
//     [B*K, out...] with row b*K+k the k-th cotangent of sample b (K = 1 for
//     ordinary training; K = C, one per class, for Jacobian rows). It returns
//     dx of shape [B*K, in...] and accumulates parameter gradients into a
//     Grads, either summed over all rows or kept per row (per-sample
//     gradients, the Opacus/BackPACK way).
//   - JVP takes M tangent directions at once: a parameter tangent of shape
//     [M, param...] per parameter (absent means zero) and an input tangent dx
//     of shape [B*M, in...] (nil means zero). It returns the primal output y
//     and dy of shape [B*M, out...].
//
// Shapes are checked and reported as errors. Layers never keep state between
// calls, so one model can be evaluated from several goroutines, and never
// modify their inputs or an array they returned (states may hold them).
package nn

import (
	"fmt"

	"github.com/explaind/explaind/tensor"
)

// Param is a named trainable tensor. Name is the full PyTorch state_dict key
// (for example "linear1.weight").
type Param[T tensor.Float] struct {
	Name  string
	Value *tensor.Dense[T]
}

// State is what a layer's Forward keeps for its Backward. Its concrete type
// belongs to the layer that made it.
type State any

// Layer is a differentiable map from a batch of inputs to a batch of outputs.
type Layer[T tensor.Float] interface {
	// Params lists the layer's parameters in state_dict order (nil if none).
	Params() []*Param[T]
	// OutShape returns the output shape for an input shape (batch first),
	// or an error naming the mismatch.
	OutShape(in []int) ([]int, error)
	// Forward evaluates the layer and returns what Backward needs.
	Forward(x *tensor.Dense[T]) (*tensor.Dense[T], State, error)
	// Backward maps cotangents dy ([B*K, out...]) to input cotangents
	// ([B*K, in...], nil when needDx is false) and accumulates parameter
	// gradients into g (which may be nil).
	Backward(st State, dy *tensor.Dense[T], g *Grads[T], needDx bool) (*tensor.Dense[T], error)
	// JVP evaluates the layer and its directional derivatives along M
	// tangents: t for the parameters, dx ([B*M, in...] or nil) for the input.
	JVP(x, dx *tensor.Dense[T], t *Tangents[T]) (y, dy *tensor.Dense[T], err error)
}

// GradMode says how Backward accumulates parameter gradients.
type GradMode int

const (
	// Summed accumulates the gradient summed over all cotangent rows into
	// an array of the parameter's shape.
	Summed GradMode = iota
	// PerRow keeps one gradient per cotangent row: an array of shape
	// [B*K, param...]. With K = 1 these are per-sample gradients.
	PerRow
)

// Grads receives parameter gradients from Backward. Gradients are added to
// the arrays in Of (+=). A parameter absent from Of is skipped, so callers
// pay only for the gradients they ask for.
type Grads[T tensor.Float] struct {
	Mode GradMode
	Of   map[*Param[T]]*tensor.Dense[T]
	// Outer, for PerRow gradients, takes the per-row gradients of the
	// weights it names in factored form instead of their buffers in Of: a
	// layer whose weight w [out, in] has the outer product dy[r]ᵀ x[r/k]
	// as row r's gradient (a linear layer at one position per sample, k
	// cotangent rows per sample) calls Outer[w](dy, x, b, k) with dy
	// [b*k, out] and x [b, in] and leaves w's buffer untouched. Data
	// attribution contracts the factors directly, without forming the
	// rows·out·in values of the gradients (package explain).
	Outer map[*Param[T]]func(dy, x []T, b, k int)
}

// OuterOf returns the receiver of w's factored per-row gradients (nil
// when g does not ask for them).
func (g *Grads[T]) OuterOf(w *Param[T]) func(dy, x []T, b, k int) {
	if g == nil || g.Mode != PerRow {
		return nil
	}
	return g.Outer[w]
}

// NewGrads returns zeroed gradient buffers for params. For PerRow, rows is
// the number of cotangent rows (B*K); it is ignored for Summed.
func NewGrads[T tensor.Float](mode GradMode, params []*Param[T], rows int) *Grads[T] {
	g := &Grads[T]{Mode: mode, Of: make(map[*Param[T]]*tensor.Dense[T], len(params))}
	for _, p := range params {
		if mode == PerRow {
			g.Of[p] = tensor.New[T](append([]int{rows}, p.Value.Shape...)...)
		} else {
			g.Of[p] = tensor.New[T](p.Value.Shape...)
		}
	}
	return g
}

// buf returns the gradient buffer of p, or nil when p is not wanted.
func (g *Grads[T]) buf(p *Param[T]) *tensor.Dense[T] {
	if g == nil {
		return nil
	}
	return g.Of[p]
}

// checkBuf verifies a gradient buffer's shape for rows cotangent rows.
func (g *Grads[T]) checkBuf(p *Param[T], rows int) (*tensor.Dense[T], error) {
	b := g.buf(p)
	if b == nil {
		return nil, nil
	}
	want := p.Value.Shape
	if g.Mode == PerRow {
		want = append([]int{rows}, want...)
	}
	if !tensor.SameShape(b.Shape, want) {
		return nil, fmt.Errorf("nn: gradient buffer for %s has shape %v, want %v", p.Name, b.Shape, want)
	}
	return b, nil
}

// Tangents holds M parameter tangent directions for JVP: Of[p] has shape
// [M, p's shape...]. A parameter absent from Of has a zero tangent.
type Tangents[T tensor.Float] struct {
	M  int
	Of map[*Param[T]]*tensor.Dense[T]
}

// dir returns the tangent of p and checks its shape, or nil when p's
// tangent is zero.
func (t *Tangents[T]) dir(p *Param[T]) (*tensor.Dense[T], error) {
	if t == nil || t.Of == nil {
		return nil, nil
	}
	d := t.Of[p]
	if d == nil {
		return nil, nil
	}
	want := append([]int{t.M}, p.Value.Shape...)
	if !tensor.SameShape(d.Shape, want) {
		return nil, fmt.Errorf("nn: tangent for %s has shape %v, want %v", p.Name, d.Shape, want)
	}
	return d, nil
}

// Count returns the number of tangent directions (1 when t is nil).
func (t *Tangents[T]) Count() int {
	if t == nil || t.M < 1 {
		return 1
	}
	return t.M
}

// cotangentsPerSample returns K for cotangents dy against batch size b and
// checks that the trailing shape matches out.
func cotangentsPerSample(layer string, dy []int, b int, out []int) (int, error) {
	if len(dy) != len(out) || b == 0 || dy[0]%b != 0 || dy[0] == 0 {
		return 0, fmt.Errorf("nn.%s: cotangent shape %v does not fit output shape %v (want [B*K, ...] with B = %d)", layer, dy, out, b)
	}
	if !tensor.SameShape(dy[1:], out[1:]) {
		return 0, fmt.Errorf("nn.%s: cotangent shape %v does not fit output shape %v", layer, dy, out)
	}
	return dy[0] / b, nil
}

// checkTangentInput validates an input tangent against x for m directions.
func checkTangentInput[T tensor.Float](layer string, x, dx *tensor.Dense[T], m int) error {
	if dx == nil {
		return nil
	}
	want := append([]int{x.Shape[0] * m}, x.Shape[1:]...)
	if !tensor.SameShape(dx.Shape, want) {
		return fmt.Errorf("nn.%s: input tangent has shape %v, want %v (M = %d)", layer, dx.Shape, want, m)
	}
	return nil
}

// checkInput validates x against the layer's OutShape rule.
func checkInput[T tensor.Float](l Layer[T], x *tensor.Dense[T]) ([]int, error) {
	if x == nil {
		return nil, fmt.Errorf("nn: nil input")
	}
	if len(x.Data) != tensor.Numel(x.Shape) {
		return nil, fmt.Errorf("nn: input has %d values for shape %v", len(x.Data), x.Shape)
	}
	return l.OutShape(x.Shape)
}
