// Package optim holds explaind's optimizers and learning-rate schedules.
//
// The optimizers reproduce PyTorch's single-tensor (non-foreach, non-fused)
// torch.optim.SGD and torch.optim.AdamW, operation by operation:
//
//   - the update of a T tensor is computed in T arithmetic (float32 stays
//     float32, as PyTorch's CPU kernels do for float32 tensors);
//   - scalars that PyTorch computes as Python floats (bias corrections, the
//     step size, 1−lr·λ, 1−β) are computed in float64 and converted to T once,
//     as PyTorch converts a Python scalar to the tensor's dtype;
//   - every product is rounded before it is added (no fused multiply-add), so
//     results are the same on every architecture and a replay is bit exact.
//     PyTorch's vectorized CPU kernels use FMA in places, so agreement with
//     PyTorch itself is to rounding, not to the bit.
//
// Optimizer state is keyed by parameter name (nn.Param.Name), never by
// pointer, so it survives a process restart: State exports it as named
// tensors and LoadState restores it. State names are "<kind>/<param name>",
// with kind one of KindMomentumBuffer (SGD), KindExpAvg, KindExpAvgSq and
// KindStep (AdamW); see StateName.
//
// Optimizers are not safe for concurrent use.
package optim

import (
	"fmt"
	"math"
	"math/big"
	"sort"
	"strings"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// Optimizer updates parameters in place from their gradients.
type Optimizer[T tensor.Float] interface {
	// Step applies one update with learning rate lr to params, given
	// summed-mode gradients: grads.Of[p] has p's shape, and a parameter
	// absent from grads.Of gets no gradient (and no update). Step validates
	// everything before it changes anything, so on error neither the
	// parameters nor the optimizer state have been modified.
	Step(params []*nn.Param[T], grads *nn.Grads[T], lr float64) error
	// State returns a deep copy of the optimizer state as named tensors,
	// keyed "<kind>/<param name>" (see StateName).
	State() map[string]*tensor.Dense[T]
	// LoadState replaces the optimizer state by a state saved by State,
	// after validating every name and shape against params. The tensors are
	// copied. An empty or nil state clears the optimizer.
	LoadState(params []*nn.Param[T], state map[string]*tensor.Dense[T]) error
}

// Both optimizers implement Optimizer in both precisions.
var (
	_ Optimizer[float32] = (*SGD[float32])(nil)
	_ Optimizer[float64] = (*SGD[float64])(nil)
	_ Optimizer[float32] = (*AdamW[float32])(nil)
	_ Optimizer[float64] = (*AdamW[float64])(nil)
)

// State kinds: the part of a state name before the first "/".
const (
	// KindMomentumBuffer names SGD's momentum buffer (PyTorch's
	// "momentum_buffer"), a tensor of the parameter's shape.
	KindMomentumBuffer = "momentum_buffer"
	// KindExpAvg names AdamW's first moment m (PyTorch's "exp_avg"), a
	// tensor of the parameter's shape.
	KindExpAvg = "exp_avg"
	// KindExpAvgSq names AdamW's second moment v (PyTorch's "exp_avg_sq"),
	// a tensor of the parameter's shape.
	KindExpAvgSq = "exp_avg_sq"
	// KindStep names AdamW's per-parameter step count (PyTorch's "step"):
	// a 1-element tensor of shape [1] holding the number of updates the
	// parameter has received, a positive integer. (In float32 it is exact up
	// to 2^24 steps, like PyTorch's own float32 step tensor.)
	KindStep = "step"
)

// StateName returns the state name "<kind>/<param>", for example
// "exp_avg/linear1.weight".
func StateName(kind, param string) string { return kind + "/" + param }

// SplitStateName splits a state name at its first "/" into kind and
// parameter name. ok is false when there is no "/" or either part is empty.
func SplitStateName(name string) (kind, param string, ok bool) {
	kind, param, ok = strings.Cut(name, "/")
	if !ok || kind == "" || param == "" {
		return "", "", false
	}
	return kind, param, true
}

// BiasCorrection returns 1 − beta^step in float64, as PyTorch computes
// bias_correction = 1 - beta ** step with Python floats. beta^step is
// computed to well beyond float64 precision and rounded once (C's pow, which
// Python calls, is correctly rounded in all but rare cases; math.Pow loses a
// few ulps for large steps). step must be ≥ 0.
func BiasCorrection(beta float64, step int) float64 {
	return 1 - powInt(beta, step)
}

// powInt returns x^n rounded to float64, computed in 256-bit arithmetic.
func powInt(x float64, n int) float64 {
	if n <= 0 {
		return 1
	}
	if x == 0 || x == 1 || math.IsNaN(x) || math.IsInf(x, 0) {
		return math.Pow(x, float64(n))
	}
	const prec = 256
	base := new(big.Float).SetPrec(prec).SetFloat64(x)
	acc := new(big.Float).SetPrec(prec).SetFloat64(1)
	for ; n > 0; n >>= 1 {
		if n&1 == 1 {
			acc.Mul(acc, base)
		}
		if n > 1 {
			base.Mul(base, base)
		}
	}
	f, _ := acc.Float64()
	return f
}

// checkLR validates a learning rate.
func checkLR(lr float64) error {
	if math.IsNaN(lr) || math.IsInf(lr, 0) || lr < 0 {
		return fmt.Errorf("optim: invalid learning rate %v (want a finite value ≥ 0)", lr)
	}
	return nil
}

// checkNonNegative validates a finite hyperparameter that must be ≥ 0.
func checkNonNegative(opt, name string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return fmt.Errorf("optim.%s: invalid %s %v (want a finite value ≥ 0)", opt, name, v)
	}
	return nil
}

// work is one parameter to update and its gradient.
type work[T tensor.Float] struct {
	p *nn.Param[T]
	g []T
}

// indexParams checks params (non-nil, consistent, uniquely named) and
// returns them by name.
func indexParams[T tensor.Float](opt string, params []*nn.Param[T]) (map[string]*nn.Param[T], error) {
	byName := make(map[string]*nn.Param[T], len(params))
	for i, p := range params {
		if p == nil {
			return nil, fmt.Errorf("optim.%s: parameter %d is nil", opt, i)
		}
		if p.Name == "" {
			return nil, fmt.Errorf("optim.%s: parameter %d has no name (state is keyed by name)", opt, i)
		}
		if p.Value == nil {
			return nil, fmt.Errorf("optim.%s: parameter %s has no value", opt, p.Name)
		}
		if n := tensor.Numel(p.Value.Shape); n != len(p.Value.Data) {
			return nil, fmt.Errorf("optim.%s: parameter %s has %d values for shape %v (%d elements)", opt, p.Name, len(p.Value.Data), p.Value.Shape, n)
		}
		if _, dup := byName[p.Name]; dup {
			return nil, fmt.Errorf("optim.%s: two parameters are named %s (state is keyed by name)", opt, p.Name)
		}
		byName[p.Name] = p
	}
	return byName, nil
}

// gather validates params and grads and lists the parameters that have a
// gradient, in the order of params.
func gather[T tensor.Float](opt string, params []*nn.Param[T], grads *nn.Grads[T]) ([]work[T], error) {
	if _, err := indexParams(opt, params); err != nil {
		return nil, err
	}
	if grads == nil {
		return nil, fmt.Errorf("optim.%s: nil gradients", opt)
	}
	if grads.Mode != nn.Summed {
		return nil, fmt.Errorf("optim.%s: gradients must be in Summed mode (got mode %d)", opt, grads.Mode)
	}
	ws := make([]work[T], 0, len(params))
	for _, p := range params {
		g, ok := grads.Of[p]
		if !ok {
			continue
		}
		if g == nil {
			return nil, fmt.Errorf("optim.%s: gradient for %s is nil (omit the parameter instead)", opt, p.Name)
		}
		if !tensor.SameShape(g.Shape, p.Value.Shape) || len(g.Data) != len(p.Value.Data) {
			return nil, fmt.Errorf("optim.%s: gradient for %s has shape %v (%d values), want %v", opt, p.Name, g.Shape, len(g.Data), p.Value.Shape)
		}
		ws = append(ws, work[T]{p: p, g: g.Data})
	}
	return ws, nil
}

// checkStateTensor validates a state tensor against its parameter's shape.
func checkStateTensor[T tensor.Float](opt, key string, t *tensor.Dense[T], p *nn.Param[T]) error {
	if t == nil {
		return fmt.Errorf("optim.%s: state %s is nil", opt, key)
	}
	if !tensor.SameShape(t.Shape, p.Value.Shape) || len(t.Data) != len(p.Value.Data) {
		return fmt.Errorf("optim.%s: state %s has shape %v (%d values), want %v (the shape of %s)", opt, key, t.Shape, len(t.Data), p.Value.Shape, p.Name)
	}
	return nil
}

// sortedKeys returns the keys of m in increasing order, so that errors and
// iteration are deterministic.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
