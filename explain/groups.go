package explain

import "github.com/explaind/explaind/models"

// DefaultGroups returns the layer groups of the tensors names, in the
// order of their first tensors: the groups their models define
// (models.GroupOf: for the modulo transformer embedding, attention
// encoders and decoders, linear1, linear2 and decoder; for ResNet-9 each
// top-level layer), and for tensors of other models their modules.
func DefaultGroups(names []string) []TensorGroup {
	var out []TensorGroup
	add := func(group, name string) {
		for i := range out {
			if out[i].Name == group {
				out[i].Tensors = append(out[i].Tensors, name)
				return
			}
		}
		out = append(out, TensorGroup{Name: group, Tensors: []string{name}})
	}
	for _, n := range names {
		add(models.GroupOf(n), n)
	}
	return out
}
