package models

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Grouping partitions a model's parameter tensors into named layer groups.
// It is the one definition of the groups that the explanations (explain,
// report) and the experiments (components, swap, retrain) sum, compare,
// swap or re-initialize.
type Grouping struct {
	model string              // the model, for errors
	names []string            // the groups in model order
	of    func(string) string // a tensor's group, "" for none
}

// Names returns the groups in model order.
func (g Grouping) Names() []string { return slices.Clone(g.names) }

// Of returns the group of a parameter tensor; ok is false for a tensor of
// no group.
func (g Grouping) Of(tensor string) (group string, ok bool) {
	group = g.of(tensor)
	return group, group != ""
}

// Lookup is Of with an error for a tensor of no group.
func (g Grouping) Lookup(tensor string) (string, error) {
	if group, ok := g.Of(tensor); ok {
		return group, nil
	}
	return "", fmt.Errorf("%q is not a parameter of the %s", tensor, g.model)
}

// The layer groups of the modulo transformer (ModuloGroups) and its
// modules (ModuloModules).
const (
	ModuloEmbedding         = "embedding"          // input_emb.weight
	ModuloAttention         = "attention"          // the module of the two below
	ModuloAttentionEncoders = "attention_encoders" // head{1..H}_encoder.weight
	ModuloAttentionDecoders = "attention_decoders" // head{1..H}_decoder.weight
	ModuloLinear1           = "linear1"            // linear1.weight, linear1.bias
	ModuloLinear2           = "linear2"            // linear2.weight, linear2.bias
	ModuloDecoder           = "decoder"            // decoder.weight
)

// moduloGroups lists the modulo transformer's groups in model order, each
// with the module (a field of Modulo) it belongs to and its tensors, by
// the state_dict names NewModulo gives them.
var moduloGroups = []struct {
	group, module string
	has           func(tensor string) bool
}{
	{ModuloEmbedding, ModuloEmbedding, oneOf("input_emb.weight")},
	{ModuloAttentionEncoders, ModuloAttention, isHead("_encoder.weight")},
	{ModuloAttentionDecoders, ModuloAttention, isHead("_decoder.weight")},
	{ModuloLinear1, ModuloLinear1, oneOf("linear1.weight", "linear1.bias")},
	{ModuloLinear2, ModuloLinear2, oneOf("linear2.weight", "linear2.bias")},
	{ModuloDecoder, ModuloDecoder, oneOf("decoder.weight")},
}

func oneOf(names ...string) func(string) bool {
	return func(t string) bool { return slices.Contains(names, t) }
}

// isHead matches "head<N><suffix>" for a number N.
func isHead(suffix string) func(string) bool {
	return func(t string) bool {
		n, ok := strings.CutPrefix(t, "head")
		if !ok {
			return false
		}
		n, ok = strings.CutSuffix(n, suffix)
		return ok && n != "" && strings.Trim(n, "0123456789") == ""
	}
}

// ModuloGroups returns the modulo transformer's layer groups, the paper's:
// embedding, attention_encoders, attention_decoders, linear1, linear2 and
// decoder. ModuloPositionalEncoding, a reference parameter the model does
// not have, belongs to none.
func ModuloGroups() Grouping { return moduloGrouping(false) }

// ModuloModules returns the modulo transformer's modules, the groups of
// ModuloGroups with the attention's encoders and decoders joined: embedding,
// attention, linear1, linear2 and decoder.
func ModuloModules() Grouping { return moduloGrouping(true) }

func moduloGrouping(modules bool) Grouping {
	name := func(i int) string {
		if modules {
			return moduloGroups[i].module
		}
		return moduloGroups[i].group
	}
	g := Grouping{model: "modulo transformer", of: func(t string) string {
		for i, mg := range moduloGroups {
			if mg.has(t) {
				return name(i)
			}
		}
		return ""
	}}
	for i := range moduloGroups {
		if n := name(i); !slices.Contains(g.names, n) {
			g.names = append(g.names, n)
		}
	}
	return g
}

// resnet9Layers are the indices, in ResNet9's top-level nn.Sequential and
// so in its state_dict names, of the layers with parameters.
var resnet9Layers = []string{"0", "1", "2", "3", "5", "6", "9"}

// ResNet9Groups returns ResNet-9's layer groups: its top-level layers with
// parameters, "layer 0" (the tensor "0.0.weight"), …, "layer 2" (the
// residual block's "2.module.0.0.weight" and "2.module.1.0.weight"), …,
// "layer 9" (the linear head "9.weight").
func ResNet9Groups() Grouping {
	g := Grouping{model: "ResNet-9", of: func(t string) string {
		if first, _, ok := strings.Cut(t, "."); ok && slices.Contains(resnet9Layers, first) {
			return "layer " + first
		}
		return ""
	}}
	for _, l := range resnet9Layers {
		g.names = append(g.names, "layer "+l)
	}
	return g
}

// GroupOf returns the layer group of a parameter tensor known only by its
// name: its group in ModuloGroups or ResNet9Groups, and for a tensor of
// neither model the group ModuleName gives it.
func GroupOf(tensor string) string { return groupOf(ModuloGroups(), tensor) }

// ModuleOf is GroupOf with the modulo transformer's modules
// (ModuloModules) instead of its groups.
func ModuleOf(tensor string) string { return groupOf(ModuloModules(), tensor) }

func groupOf(modulo Grouping, tensor string) string {
	for _, g := range []Grouping{modulo, ResNet9Groups()} {
		if group, ok := g.Of(tensor); ok {
			return group
		}
	}
	return ModuleName(tensor)
}

// ModuleName names the module of a parameter tensor of any model: for a
// tensor of a numbered nn.Sequential ("4.0.weight") its top-level layer
// ("layer 4"), otherwise the name without its last component ("fc.weight":
// "fc"), or the whole name when it has one component.
func ModuleName(tensor string) string {
	first, _, _ := strings.Cut(tensor, ".")
	if _, err := strconv.Atoi(first); err == nil {
		return "layer " + first
	}
	if i := strings.LastIndexByte(tensor, '.'); i > 0 {
		return tensor[:i]
	}
	return tensor
}
