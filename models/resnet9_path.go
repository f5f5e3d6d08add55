package models

import (
	"fmt"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// PathForward evaluates the model at θ + t_b Δθ for every sample b (see
// nn.Path) and returns the log-probabilities [B, Classes] and a state for
// PathBackward. Every layer is evaluated for all samples at once by its
// path rule: the convolutions as W ⋆ x + t_b (ΔW ⋆ x) from one GEMM of the
// stacked [W; ΔW] (nn.Conv2d.PathForward), the head likewise
// (nn.Linear.PathForward); the ReLUs, max-pools, flatten and log-softmax
// have no parameters and act on the path's activations as they are. A nil
// path is θ itself: Forward.
func (m *ResNet9[T]) PathForward(x *tensor.Dense[T], p *nn.Path[T]) (*tensor.Dense[T], nn.State, error) {
	if err := m.checkInput(x); err != nil {
		return nil, nil, err
	}
	y, st, err := m.net.PathForward(x, p)
	if err != nil {
		return nil, nil, fmt.Errorf("models: ResNet-9: %w", err)
	}
	return y, st, nil
}

// PathBackward is Backward at each sample's path point, for a state from
// PathForward: it maps K cotangents per sample ([B*K, Classes]) to
// parameter gradients in g (summed or per row) and, if needDx, returns the
// input cotangents.
func (m *ResNet9[T]) PathBackward(st nn.State, dy *tensor.Dense[T], g *nn.Grads[T], needDx bool) (*tensor.Dense[T], error) {
	dx, err := m.net.PathBackward(st, dy, g, needDx)
	if err != nil {
		return nil, fmt.Errorf("models: ResNet-9: %w", err)
	}
	return dx, nil
}

// PathBackwardGrouped is PathBackward with the gradients of the rows summed
// per group: batch row b belongs to group groups[b] (nondecreasing, in
// [0, nGroups)), and g, which must be PerRow, has buffers
// [nGroups*K, shape...]. Every weight's gradient goes straight into the
// group buffers, one GEMM per run of rows of a group and chunk (see
// nn.Conv2d.PathBackwardGrouped and nn.Linear.PathBackwardGrouped); none is
// formed per row. epk's feature pass uses it to sum quadrature nodes per
// test sample.
func (m *ResNet9[T]) PathBackwardGrouped(st nn.State, dy *tensor.Dense[T], g *nn.Grads[T], groups []int, nGroups int) error {
	if g != nil && g.Mode != nn.PerRow {
		return fmt.Errorf("models: ResNet-9: PathBackwardGrouped needs PerRow gradient buffers")
	}
	if _, err := m.net.PathBackwardGrouped(st, dy, g, groups, nGroups, false); err != nil {
		return fmt.Errorf("models: ResNet-9: %w", err)
	}
	return nil
}

// LogProbabilities reports that the outputs are log-probabilities (the
// model ends in a log-softmax), for epk.LogProbModel.
func (m *ResNet9[T]) LogProbabilities() bool { return true }

// PerRowValues is the number of parameter values whose gradients
// PathBackwardGrouped forms per row before summing them per group: none.
func (m *ResNet9[T]) PerRowValues() int { return 0 }

// PathJVP returns the log-probabilities [B, Classes] at each sample's path
// point and their derivatives [B*M, Classes] along M parameter tangents.
func (m *ResNet9[T]) PathJVP(x *tensor.Dense[T], p *nn.Path[T], t *nn.Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	if err := m.checkInput(x); err != nil {
		return nil, nil, err
	}
	y, dy, err := m.net.PathJVP(x, nil, p, t)
	if err != nil {
		return nil, nil, fmt.Errorf("models: ResNet-9: %w", err)
	}
	return y, dy, nil
}

// checkInput checks an input batch's shape.
func (m *ResNet9[T]) checkInput(x *tensor.Dense[T]) error {
	if x == nil {
		return fmt.Errorf("models: ResNet-9: nil input")
	}
	_, err := m.OutShape(x.Shape)
	return err
}
