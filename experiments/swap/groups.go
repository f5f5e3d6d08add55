package swap

import (
	"fmt"
	"slices"
	"strings"

	"github.com/explaind/explaind/models"
)

// The parameter groups of a swap: the modulo-addition transformer's
// modules (models.ModuloModules), by PyTorch state_dict name:
//
//	embedding  input_emb.weight
//	attention  head{1..H}_encoder.weight, head{1..H}_decoder.weight
//	linear1    linear1.weight, linear1.bias
//	linear2    linear2.weight, linear2.bias
//	decoder    decoder.weight
const (
	Embedding = models.ModuloEmbedding
	Attention = models.ModuloAttention
	Linear1   = models.ModuloLinear1
	Linear2   = models.ModuloLinear2
	Decoder   = models.ModuloDecoder
)

// Groups returns the group names in the model's order.
func Groups() []string { return models.ModuloModules().Names() }

// KeptSet names the parameter groups that keep the final model's values
// in a swap; every other group takes the values of the swapped-in step.
type KeptSet struct {
	// Name is how the set is written on the command line and in outputs.
	Name string `json:"name"`
	// Groups lists the kept groups, in the model's order.
	Groups []string `json:"groups"`
}

// DefaultKeptSets returns the five kept sets of the paper's swap
// experiment: embedding + linear2 + decoder, decoder + linear2, decoder
// only, embedding + decoder, and all but attention.
func DefaultKeptSets() []KeptSet {
	var out []KeptSet
	for _, s := range DefaultKeptSetNames() {
		k, _ := ParseKeptSet(s)
		out = append(out, k)
	}
	return out
}

// DefaultKeptSetNames returns the names of DefaultKeptSets.
func DefaultKeptSetNames() []string {
	return []string{"embedding+linear2+decoder", "decoder+linear2", "decoder", "embedding+decoder", "all-but-attention"}
}

// ParseKeptSet reads a kept set: group names joined by "+" (for example
// "decoder+linear2"), or "all-but-" followed by such a list (every group
// except those). The name is kept as written; the groups come out in the
// model's order.
func ParseKeptSet(s string) (KeptSet, error) {
	list, but := strings.CutPrefix(s, "all-but-")
	named := map[string]bool{}
	for _, g := range strings.Split(list, "+") {
		if !slices.Contains(Groups(), g) {
			return KeptSet{}, fmt.Errorf("kept set %q: unknown group %q; the groups are %s", s, g, strings.Join(Groups(), ", "))
		}
		if named[g] {
			return KeptSet{}, fmt.Errorf("kept set %q names %s twice", s, g)
		}
		named[g] = true
	}
	k := KeptSet{Name: s}
	for _, g := range Groups() {
		if named[g] != but {
			k.Groups = append(k.Groups, g)
		}
	}
	if len(k.Groups) == 0 {
		return KeptSet{}, fmt.Errorf("kept set %q keeps no group", s)
	}
	return k, nil
}

// Keeps reports whether the set keeps the final value of a parameter.
func (k KeptSet) Keeps(param string) (bool, error) {
	g, err := models.ModuloModules().Lookup(param)
	if err != nil {
		return false, err
	}
	return slices.Contains(k.Groups, g), nil
}
