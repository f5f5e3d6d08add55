package prune

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestRunStopsWhenCancelled: a cancelled context stops Run before the next
// evaluation, with the context's error and the model's values restored.
func TestRunStopsWhenCancelled(t *testing.T) {
	m, eval := tinyCNN(t)
	var before [][]float32
	importance := map[string][]float64{}
	rng := rand.New(rand.NewPCG(5, 5))
	for _, p := range m.Params() {
		before = append(before, slices.Clone(p.Value.Data))
		s := make([]float64, len(p.Value.Data))
		for i := range s {
			s[i] = rng.Float64()
		}
		importance[p.Name] = s
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ticks := 0
	cfg := Config{Grids: []Grid{{Name: "g", Fractions: []float64{1, 0.1, 0}}}, Scope: ScopeGlobal, Seeds: 2, Keep: []string{"9.weight"},
		Progress: func(d, _ int) {
			ticks = d
			if d == 3 {
				cancel()
			}
		}}
	res, err := Run(ctx, m, importance, eval, cfg)
	if !errors.Is(err, context.Canceled) || res != nil || ticks != 3 {
		t.Fatalf("cancelled after 3 of 13 evaluations: %v, %v, %d evaluations; want context.Canceled after 3", res, err, ticks)
	}
	for l, p := range m.Params() {
		if !slices.Equal(p.Value.Data, before[l]) {
			t.Errorf("a cancelled Run left %s changed", p.Name)
		}
	}
}
