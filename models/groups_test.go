package models_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/nn"
)

// checkCovers checks that every parameter of a model is in a group of g,
// that the groups follow the model's parameter order and that every group
// of g has a parameter.
func checkCovers(t *testing.T, g models.Grouping, params []*nn.Param[float32]) {
	t.Helper()
	names := g.Names()
	last := 0
	used := map[string]bool{}
	for _, p := range params {
		group, ok := g.Of(p.Name)
		if !ok {
			t.Errorf("parameter %s is in no group", p.Name)
			continue
		}
		i := slices.Index(names, group)
		if i < last {
			t.Errorf("parameter %s is in group %s, before the group of the parameter preceding it (groups %v)", p.Name, group, names)
		}
		last = max(last, i)
		used[group] = true
	}
	for _, n := range names {
		if !used[n] {
			t.Errorf("group %s has no parameter", n)
		}
	}
}

func TestGroupingsCoverTheModels(t *testing.T) {
	for _, heads := range []int{2, 4, 12} {
		m, err := models.NewModulo[float32](models.ModuloConfig{P: 7, DModel: 24, Heads: heads, MLP: 12})
		if err != nil {
			t.Fatal(err)
		}
		checkCovers(t, models.ModuloGroups(), m.Params())
		checkCovers(t, models.ModuloModules(), m.Params())
	}
	m, err := models.NewResNet9[float32](models.ResNet9Config{WidthDiv: 16, InChannels: 1, Classes: 2, Height: 28, Width: 28})
	if err != nil {
		t.Fatal(err)
	}
	checkCovers(t, models.ResNet9Groups(), m.Params())

	for _, c := range []struct {
		g    models.Grouping
		want []string
	}{
		{models.ModuloGroups(), []string{"embedding", "attention_encoders", "attention_decoders", "linear1", "linear2", "decoder"}},
		{models.ModuloModules(), []string{"embedding", "attention", "linear1", "linear2", "decoder"}},
		{models.ResNet9Groups(), []string{"layer 0", "layer 1", "layer 2", "layer 3", "layer 5", "layer 6", "layer 9"}},
	} {
		if got := c.g.Names(); !slices.Equal(got, c.want) {
			t.Errorf("groups %v, want %v", got, c.want)
		}
	}
}

func TestModuloGroupOf(t *testing.T) {
	for name, want := range map[string][2]string{ // group, module
		"input_emb.weight":      {models.ModuloEmbedding, models.ModuloEmbedding},
		"head1_encoder.weight":  {models.ModuloAttentionEncoders, models.ModuloAttention},
		"head4_decoder.weight":  {models.ModuloAttentionDecoders, models.ModuloAttention},
		"head12_decoder.weight": {models.ModuloAttentionDecoders, models.ModuloAttention},
		"linear1.weight":        {models.ModuloLinear1, models.ModuloLinear1},
		"linear1.bias":          {models.ModuloLinear1, models.ModuloLinear1},
		"linear2.weight":        {models.ModuloLinear2, models.ModuloLinear2},
		"linear2.bias":          {models.ModuloLinear2, models.ModuloLinear2},
		"decoder.weight":        {models.ModuloDecoder, models.ModuloDecoder},
	} {
		g, err := models.ModuloGroups().Lookup(name)
		m, merr := models.ModuloModules().Lookup(name)
		if err != nil || merr != nil || g != want[0] || m != want[1] {
			t.Errorf("%s: group %q (%v), module %q (%v); want %q, %q", name, g, err, m, merr, want[0], want[1])
		}
	}
	for _, bad := range []string{models.ModuloPositionalEncoding, "head_decoder.weight", "headX_encoder.weight", "headx_encoder.weight",
		"decoder.bias", "input_emb.bias", "head1_encoder.bias", "0.0.weight"} {
		for _, g := range []models.Grouping{models.ModuloGroups(), models.ModuloModules()} {
			if group, ok := g.Of(bad); ok {
				t.Errorf("%s is in group %q, want none", bad, group)
			}
			if _, err := g.Lookup(bad); err == nil || !strings.Contains(err.Error(), "modulo transformer") {
				t.Errorf("Lookup(%q): %v, want an error naming the model", bad, err)
			}
		}
	}
	if _, ok := models.ResNet9Groups().Of("4.weight"); ok {
		t.Error("ResNet-9 has no parameters in layer 4 (its max-pool)")
	}
}

func TestGroupOfAnyModel(t *testing.T) {
	for name, want := range map[string][2]string{ // GroupOf, ModuleOf
		"input_emb.weight":       {"embedding", "embedding"},
		"head3_encoder.weight":   {"attention_encoders", "attention"},
		"head1_decoder.weight":   {"attention_decoders", "attention"},
		"linear1.bias":           {"linear1", "linear1"},
		"linear2.weight":         {"linear2", "linear2"},
		"decoder.weight":         {"decoder", "decoder"},
		"2.module.0.0.weight":    {"layer 2", "layer 2"},
		"9.weight":               {"layer 9", "layer 9"},
		"positional_encoding.pe": {"positional_encoding", "positional_encoding"},
		"4.0.weight":             {"layer 4", "layer 4"},
		"block.fc.weight":        {"block.fc", "block.fc"},
		"w":                      {"w", "w"},
	} {
		if g, m := models.GroupOf(name), models.ModuleOf(name); g != want[0] || m != want[1] {
			t.Errorf("%s: GroupOf %q, ModuleOf %q; want %q, %q", name, g, m, want[0], want[1])
		}
	}
}
