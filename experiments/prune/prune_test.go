package prune

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/explaind/explaind/data"
	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// threeLayers is a model-free layout: two prunable layers and a kept one.
func threeLayers() []Layer {
	return []Layer{
		{Name: "a", Size: 10, Prunable: true},
		{Name: "b", Size: 30, Prunable: true},
		{Name: "head", Size: 4, Prunable: false},
	}
}

// marked returns scores 1 at the chosen parameters and small distinct
// values below 1 elsewhere, and the masks that keep exactly the chosen ones.
func marked(layers []Layer, chosen map[int][]int, rng *rand.Rand) ([][]float64, [][]bool) {
	scores := make([][]float64, len(layers))
	want := make([][]bool, len(layers))
	for l, ly := range layers {
		scores[l] = make([]float64, ly.Size)
		want[l] = make([]bool, ly.Size)
		for i := range scores[l] {
			scores[l][i] = 0.5 * rng.Float64()
			want[l][i] = !ly.Prunable
		}
		for _, i := range chosen[l] {
			scores[l][i] = 1 + rng.Float64()
			want[l][i] = true
		}
	}
	return scores, want
}

func TestKeepTopKeepsTheMarkedWeights(t *testing.T) {
	layers := threeLayers()
	rng := rand.New(rand.NewPCG(1, 2))
	// Global: 8 of the 40 prunable weights, unevenly spread (1 in a, 7 in b).
	scores, want := marked(layers, map[int][]int{0: {3}, 1: {0, 5, 6, 11, 17, 28, 29}}, rng)
	r, err := Rank(scores, layers, ScopeGlobal)
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Keep(8.0 / 40)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("global keep-top: got %v, want %v", got, want)
	}
	if c := Counts(got); !slices.Equal(c, []int{1, 7, 4}) {
		t.Errorf("global counts %v, want [1 7 4]", c)
	}
	// Module: 20% of each layer, 2 in a and 6 in b.
	scores, want = marked(layers, map[int][]int{0: {2, 9}, 1: {1, 4, 8, 15, 22, 27}}, rng)
	r, err = Rank(scores, layers, ScopeModule)
	if err != nil {
		t.Fatal(err)
	}
	got, err = r.Keep(0.2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("module keep-top: got %v, want %v", got, want)
	}
	if f := PrunedFractions(got); f[0] != 0.8 || f[1] != 0.8 || f[2] != 0 {
		t.Errorf("pruned fractions %v, want [0.8 0.8 0]", f)
	}
}

func TestExtremeFractions(t *testing.T) {
	layers := threeLayers()
	scores, _ := marked(layers, nil, rand.New(rand.NewPCG(3, 4)))
	for _, scope := range []string{ScopeGlobal, ScopeModule} {
		r, err := Rank(scores, layers, scope)
		if err != nil {
			t.Fatal(err)
		}
		all, _ := r.Keep(1)
		none, _ := r.Keep(0)
		if c := Counts(all); !slices.Equal(c, []int{10, 30, 4}) {
			t.Errorf("%s: fraction 1 keeps %v, want everything", scope, c)
		}
		if c := Counts(none); !slices.Equal(c, []int{0, 0, 4}) {
			t.Errorf("%s: fraction 0 keeps %v, want only the unprunable layer", scope, c)
		}
		for _, f := range []float64{-0.1, 1.5, math.NaN()} {
			if _, err := r.Keep(f); err == nil || !strings.Contains(err.Error(), "outside [0, 1]") {
				t.Errorf("%s: fraction %v: got %v", scope, f, err)
			}
		}
	}
	scores[1][3] = math.NaN()
	if _, err := Rank(scores, layers, ScopeGlobal); err == nil {
		t.Error("a NaN score was accepted")
	}
	if _, err := Rank(scores, layers, "layer"); err == nil {
		t.Error("an unknown scope was accepted")
	}
}

func TestRandomKeepsTheSameCountsPerLayer(t *testing.T) {
	layers := threeLayers()
	scores, _ := marked(layers, map[int][]int{1: {2, 3, 4, 5, 6, 7, 8}}, rand.New(rand.NewPCG(5, 6)))
	r, _ := Rank(scores, layers, ScopeGlobal)
	epk, _ := r.Keep(0.25) // 10 of 40: all 7 marked in b, then the 3 best others
	counts := Counts(epk)
	for s := range 5 {
		rr := RandomRanking(layers, rand.New(rand.NewPCG(7, uint64(s))))
		masks, err := rr.KeepCounts(counts)
		if err != nil {
			t.Fatal(err)
		}
		if c := Counts(masks); !slices.Equal(c, counts) {
			t.Errorf("seed %d: random keeps %v per layer, EPK %v", s, c, counts)
		}
	}
	if _, err := r.KeepCounts(counts); err == nil {
		t.Error("per-layer counts on a global ranking were accepted")
	}
}

func TestCompare(t *testing.T) {
	ref, _ := tensor.FromSlice([]float64{math.Log(0.5), math.Log(0.5), math.Log(0.9), math.Log(0.1)}, 2, 2)
	got, _ := tensor.FromSlice([]float64{math.Log(0.25), math.Log(0.75), math.Log(0.9), math.Log(0.1)}, 2, 2)
	m, err := Compare(ref, got, []int{1, 1})
	if err != nil {
		t.Fatal(err)
	}
	// Sample 0: argmax 1 (label 1; ref's first maximum is 0), KL =
	// 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75); sample 1 unchanged.
	kl := (0.5*math.Log(2) + 0.5*math.Log(0.5/0.75)) / 2
	if m.Accuracy != 0.5 || m.Agreement != 0.5 || !(math.Abs(m.KL-kl) <= 1e-15) {
		t.Errorf("metrics %+v, want accuracy 0.5, agreement 0.5, KL %v", m, kl)
	}
	if m, _ := Compare(ref, ref, []int{0, 0}); m.Agreement != 1 || m.KL != 0 || m.Accuracy != 1 {
		t.Errorf("a model against itself: %+v", m)
	}
}

// tinyCNN returns a small ResNet-9 and random two-class images.
func tinyCNN(t *testing.T) (*models.ResNet9[float32], data.Dataset[float32]) {
	m, err := models.NewResNet9[float32](models.ResNet9Config{WidthDiv: 16, InChannels: 1, Classes: 2, Height: 12, Width: 12})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(9, 9))
	m.Init(rng)
	x := tensor.New[float32](12, 1, 12, 12)
	for i := range x.Data {
		x.Data[i] = float32(rng.NormFloat64())
	}
	labels := make([]int, 12)
	for i := range labels {
		labels[i] = i % 2
	}
	return m, data.Dataset[float32]{Name: "tiny", Inputs: x, Labels: labels, Classes: 2}
}

func TestRunOnATinyResNet(t *testing.T) {
	m, eval := tinyCNN(t)
	before := make([][]float32, 0)
	importance := map[string][]float64{}
	rng := rand.New(rand.NewPCG(11, 11))
	for _, p := range m.Params() {
		before = append(before, slices.Clone(p.Value.Data))
		s := make([]float64, len(p.Value.Data))
		for i := range s {
			s[i] = rng.Float64()
		}
		importance[p.Name] = s
	}
	var ticks, total int
	cfg := Config{Grids: []Grid{{Name: "g", Fractions: []float64{1, 0.1, 0}}}, Scope: ScopeModule, Seeds: 3, Keep: []string{"9.weight"},
		Chunk: 5, Progress: func(d, n int) { ticks, total = d, n }}
	res, err := Run(context.Background(), m, importance, eval, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if ticks != total || total != 1+3*5 || len(res.Rows) != 3*5 {
		t.Errorf("%d rows, progress %d of %d; want 15 rows and 16 ticks", len(res.Rows), ticks, total)
	}
	for l, p := range m.Params() {
		if !slices.Equal(p.Value.Data, before[l]) {
			t.Errorf("Run left %s changed", p.Name)
		}
	}
	last := len(res.Layers) - 1
	for _, r := range res.Rows {
		switch r.Fraction {
		case 1:
			if r.Agreement != 1 || r.KL != 0 || r.Accuracy != res.Unpruned.Accuracy || r.Kept != PrunableSize(res.Layers) {
				t.Errorf("%s seed %d at fraction 1: %+v, want the unpruned model (accuracy %v)", r.Method, r.Seed, r, res.Unpruned.Accuracy)
			}
		case 0:
			if r.Kept != 0 || r.PrunedPerLayer[0] != 1 || r.PrunedPerLayer[last] != 0 {
				t.Errorf("%s at fraction 0: kept %d, pruned %v", r.Method, r.Kept, r.PrunedPerLayer)
			}
		case 0.1:
			// Module scope: every method keeps round(0.1·n) per layer.
			for l, ly := range res.Layers[:last] {
				want := 1 - float64(KeepCount(ly.Size, 0.1))/float64(ly.Size)
				if r.PrunedPerLayer[l] != want {
					t.Errorf("%s at 0.1: %s pruned %v, want %v", r.Method, ly.Name, r.PrunedPerLayer[l], want)
				}
			}
		}
	}
	if res.Unpruned.Agreement != 1 || res.Unpruned.KL != 0 {
		t.Errorf("unpruned metrics %+v", res.Unpruned)
	}
	curves := res.Curves()
	if len(curves) != 3 || curves[1].Method != MethodRandom || len(curves[1].Points) != 3 || curves[1].Points[2].Agreement.Std != 0 {
		t.Errorf("curves %+v", curves)
	}
	// A missing importance tensor or an unknown layer to keep is an error.
	delete(importance, "0.0.weight")
	if _, err := Run(context.Background(), m, importance, eval, cfg); err == nil || !strings.Contains(err.Error(), "0.0.weight") {
		t.Errorf("missing importance: %v", err)
	}
	cfg.Keep = []string{"10.weight"}
	if _, err := Run(context.Background(), m, importance, eval, cfg); err == nil {
		t.Error("an unknown layer to keep was accepted")
	}
}

func TestApplyZeroesThePruned(t *testing.T) {
	p := &nn.Param[float32]{Name: "w", Value: tensor.New[float32](4)}
	final := [][]float32{{1, 2, 3, 4}}
	if err := Apply([]*nn.Param[float32]{p}, final, [][]bool{{true, false, true, false}}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Value.Data, []float32{1, 0, 3, 0}) {
		t.Errorf("pruned values %v", p.Value.Data)
	}
}

func TestConfigCheck(t *testing.T) {
	good := Config{Grids: DefaultGrids(), Scope: ScopeGlobal, Seeds: 5}
	if err := good.Check(); err != nil {
		t.Fatal(err)
	}
	if fs := good.Fractions(); len(fs) != 57 || fs[0] != 0.001 || fs[len(fs)-1] != 0.3 || !slices.Contains(fs, 0.03) {
		t.Errorf("default fractions %v: want 57 from 0.001 to 0.3", fs)
	}
	for _, bad := range []Config{
		{Grids: []Grid{{Fractions: []float64{0.1, 1.01}}}, Scope: ScopeGlobal, Seeds: 1},
		{Grids: []Grid{{Fractions: []float64{-0.01}}}, Scope: ScopeGlobal, Seeds: 1},
		{Grids: nil, Scope: ScopeGlobal, Seeds: 1},
		{Grids: DefaultGrids(), Scope: "layer", Seeds: 1},
		{Grids: DefaultGrids(), Scope: ScopeModule, Seeds: 0},
	} {
		if err := bad.Check(); err == nil {
			t.Errorf("%+v was accepted", bad)
		}
	}
}
