// Package models builds the two reference architectures of the ExPLAIND
// paper with PyTorch state_dict names and shapes: the modulo-addition
// transformer and ResNet-9 without batch norm.
package models

import (
	"math/rand/v2"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// Model is a classifier: a layer from a batch of inputs to log-probabilities
// [B, Classes], whose parameters carry PyTorch state_dict names.
type Model[T tensor.Float] interface {
	nn.Layer[T]
	// Arch names the architecture ("modulo_transformer", "resnet9_nobn").
	Arch() string
	// Classes is the number of outputs.
	Classes() int
	// SampleShape is the shape of one input sample (without the batch axis).
	SampleShape() []int
	// Init draws the parameters with PyTorch's default initialization.
	Init(rng *rand.Rand)
}
