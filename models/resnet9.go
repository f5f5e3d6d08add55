package models

import (
	"fmt"
	"math/rand/v2"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// ResNet9Config sizes a ResNet9.
type ResNet9Config struct {
	// WidthDiv divides every channel count of the reference (64, 128, 256);
	// it must divide 64. 1 is the full-width model of the paper.
	WidthDiv int
	// InChannels is the number of image channels (3 for CIFAR, 1 for
	// Fashion-MNIST).
	InChannels int
	// Classes is the number of outputs.
	Classes int
	// Height and Width are the image size; both must be at least
	// ResNet9MinSize.
	Height, Width int
}

// ResNet9MinSize is the smallest image side ResNet-9 accepts: the stride-2
// convolution and the 2×2 max-pool must leave at least 3×3 for the last,
// unpadded 3×3 convolution.
const ResNet9MinSize = 11

// Validate reports the first problem with c, or nil.
func (c ResNet9Config) Validate() error {
	switch {
	case c.WidthDiv < 1 || 64%c.WidthDiv != 0:
		return fmt.Errorf("models: ResNet-9 width_div %d must be a positive divisor of 64", c.WidthDiv)
	case c.InChannels < 1:
		return fmt.Errorf("models: ResNet-9 needs at least one input channel, got %d", c.InChannels)
	case c.Classes < 1:
		return fmt.Errorf("models: ResNet-9 needs at least one class, got %d", c.Classes)
	case c.Height < ResNet9MinSize || c.Width < ResNet9MinSize:
		return fmt.Errorf("models: a %d×%d image is too small for ResNet-9 (each side needs at least %d pixels)", c.Height, c.Width, ResNet9MinSize)
	}
	return nil
}

// ResNet9 is the TRAK ResNet-9 without batch norm, as in the ExPLAIND
// reference: bias-free convolutions, each followed by a ReLU, with channel
// counts c1, c2, c3 = 64, 128, 256 divided by WidthDiv:
//
//	0  conv 3×3 pad 1, in → c1                 "0.0.weight"
//	1  conv 5×5 stride 2 pad 2, c1 → c2        "1.0.weight"
//	2  Residual(conv 3×3 c2 → c2, conv 3×3)    "2.module.0.0.weight", "2.module.1.0.weight"
//	3  conv 3×3 pad 1, c2 → c3                 "3.0.weight"
//	4  MaxPool2d(2)
//	5  Residual(conv 3×3 c3 → c3, conv 3×3)    "5.module.0.0.weight", "5.module.1.0.weight"
//	6  conv 3×3 pad 0, c3 → c2                 "6.0.weight"
//	7  AdaptiveMaxPool2d(1), 8 Flatten
//	9  Linear c2 → classes, no bias            "9.weight"
//
// followed by LogSoftmax. Each conv+ReLU pair is one nn.Conv2d with its
// ReLU fused. The TRAK original scales the logits by 0.2 (a
// Mul layer at index 10); the ExPLAIND reference, whose fixtures this model
// reproduces, does not.
//
// Input [B, InChannels, Height, Width]; output log-probabilities
// [B, Classes].
type ResNet9[T tensor.Float] struct {
	cfg   ResNet9Config
	net   *nn.Sequential[T]
	convs []*nn.Conv2d[T]
	head  *nn.Linear[T]
}

// NewResNet9 builds a zero-initialized ResNet9 (call Init or load weights).
func NewResNet9[T tensor.Float](cfg ResNet9Config) (*ResNet9[T], error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c1, c2, c3 := 64/cfg.WidthDiv, 128/cfg.WidthDiv, 256/cfg.WidthDiv
	m := &ResNet9[T]{cfg: cfg}
	// PyTorch's Sequential(Conv2d, ReLU) at index i: the ReLU is fused
	// into the convolution (see nn.Conv2d.ReLU); the weight keeps its
	// state_dict name "i.0.weight".
	block := func(name string, in, out, kernel, stride, pad int) nn.Layer[T] {
		conv := nn.NewConv2d[T](name+".0", in, out, kernel, stride, pad)
		conv.ReLU = true
		m.convs = append(m.convs, conv)
		return conv
	}
	residual := func(name string, ch int) nn.Layer[T] {
		return &nn.Residual[T]{Module: nn.NewSequential[T](
			block(name+".module.0", ch, ch, 3, 1, 1),
			block(name+".module.1", ch, ch, 3, 1, 1))}
	}
	layers := []nn.Layer[T]{
		block("0", cfg.InChannels, c1, 3, 1, 1),
		block("1", c1, c2, 5, 2, 2),
		residual("2", c2),
		block("3", c2, c3, 3, 1, 1),
		nn.NewMaxPool2d[T](2, 2),
		residual("5", c3),
		block("6", c3, c2, 3, 1, 0),
		nn.AdaptiveMaxPool2d[T]{},
		nn.Flatten[T]{},
	}
	m.head = nn.NewLinear[T]("9", c2, cfg.Classes, false)
	layers = append(layers, m.head, nn.LogSoftmax[T]{})
	m.net = nn.NewSequential[T](layers...)
	if _, err := m.net.OutShape(append([]int{1}, m.SampleShape()...)); err != nil {
		return nil, fmt.Errorf("models: ResNet-9 cannot take %d×%d images: %w", cfg.Height, cfg.Width, err)
	}
	return m, nil
}

// Config returns the configuration the model was built with.
func (m *ResNet9[T]) Config() ResNet9Config { return m.cfg }

// ResNet9Arch is the architecture name of ResNet-9 without batch norm, as
// the fixtures' metadata and the run manifests name it.
const ResNet9Arch = "resnet9_nobn"

// Arch returns ResNet9Arch.
func (m *ResNet9[T]) Arch() string { return ResNet9Arch }

// Classes returns the number of outputs.
func (m *ResNet9[T]) Classes() int { return m.cfg.Classes }

// SampleShape returns [InChannels, Height, Width].
func (m *ResNet9[T]) SampleShape() []int {
	return []int{m.cfg.InChannels, m.cfg.Height, m.cfg.Width}
}

// Init draws every weight with PyTorch's default initialization, uniform in
// ±1/sqrt(fan_in), in state_dict order.
func (m *ResNet9[T]) Init(rng *rand.Rand) {
	for _, c := range m.convs {
		c.InitUniform(rng)
	}
	m.head.InitUniform(rng)
}

// Params lists the nine weights in state_dict order.
func (m *ResNet9[T]) Params() []*nn.Param[T] { return m.net.Params() }

// OutShape returns [B, Classes] for an input [B, InChannels, Height, Width].
func (m *ResNet9[T]) OutShape(in []int) ([]int, error) {
	if len(in) != 4 || !tensor.SameShape(in[1:], m.SampleShape()) {
		return nil, fmt.Errorf("models: ResNet-9 input shape %v, want [B, %d, %d, %d]", in, m.cfg.InChannels, m.cfg.Height, m.cfg.Width)
	}
	return m.net.OutShape(in)
}

// Forward computes the log-probabilities.
func (m *ResNet9[T]) Forward(x *tensor.Dense[T]) (*tensor.Dense[T], nn.State, error) {
	if x == nil {
		return nil, nil, fmt.Errorf("models: ResNet-9: nil input")
	}
	if _, err := m.OutShape(x.Shape); err != nil {
		return nil, nil, err
	}
	return m.net.Forward(x)
}

// Backward maps cotangents of the log-probabilities ([B*K, Classes]) to
// parameter gradients and, if needDx, input cotangents.
func (m *ResNet9[T]) Backward(st nn.State, dy *tensor.Dense[T], g *nn.Grads[T], needDx bool) (*tensor.Dense[T], error) {
	return m.net.Backward(st, dy, g, needDx)
}

// JVP evaluates the model and its derivatives along M tangents.
func (m *ResNet9[T]) JVP(x, dx *tensor.Dense[T], t *nn.Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	if x == nil {
		return nil, nil, fmt.Errorf("models: ResNet-9: nil input")
	}
	if _, err := m.OutShape(x.Shape); err != nil {
		return nil, nil, err
	}
	return m.net.JVP(x, dx, t)
}

var _ Model[float32] = (*ResNet9[float32])(nil)

// ForwardValues is nn.ForwardValues of the model's layers: the values one
// forward pass on an input of shape in creates, unfolded columns included.
func (m *ResNet9[T]) ForwardValues(in []int) (int, error) { return nn.ForwardValues[T](m.net, in) }
