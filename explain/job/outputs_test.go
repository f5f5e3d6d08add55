package job

import (
	"slices"
	"testing"

	"github.com/explaind/explaind/epkfile"
)

// TestOutputs checks the presets' table: the queries of every preset in
// the order epk runs them, one output per query name, and a preset of
// epkfile for each.
func TestOutputs(t *testing.T) {
	var names []string
	for _, q := range queries(epkfile.Presets) {
		names = append(names, q.Name)
	}
	want := []string{"step_tensor", "step_data", "step_reg", "step_resid", "scores", "history", "importance", "kernel", "scores_class", "kernel_full"}
	if !slices.Equal(names, want) {
		t.Errorf("queries %v, want %v", names, want)
	}
	if got := queries([]string{epkfile.Validation}); len(got) != 0 {
		t.Errorf("validation alone asks for %v, want no query", got)
	}
	for _, o := range outputs {
		if !slices.Contains(epkfile.Presets, o.preset) {
			t.Errorf("%s: unknown preset %q", o.query.Name, o.preset)
		}
		if got, ok := outputOf(o.query.Name); !ok || got.preset != o.preset {
			t.Errorf("%s: outputOf gives %+v, %v", o.query.Name, got, ok)
		}
	}
	if _, ok := outputOf("nope"); ok {
		t.Error("outputOf(nope) found an output")
	}
}
