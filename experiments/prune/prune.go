// Package prune is the pruning experiment of ExPLAIND: keep the
// parameters of a trained CNN that the exact path kernel marks as most
// important, set the others to zero, and compare the pruned model with the
// unpruned one against two baselines, random pruning with the same number
// of parameters kept in every layer and magnitude pruning (|θ_final|).
//
// A parameter's importance is the EPK output's pruning preset,
// importance/<tensor> = Σ_{x,c} |Σ_s φ_s(x)[c,:] ⊙ Δθ_s| over the scoring
// test samples. The fraction kept counts the prunable parameters only:
// layers named in Config.Keep (the final Linear layer, "9.weight", by
// default in Do) are never pruned and are not counted. With scope "global"
// the top fraction is taken across all prunable layers (one threshold);
// with scope "module" within each layer. Ties are broken by parameter
// order, so every mask is deterministic.
//
// Each pruned model is evaluated on samples the importance was not computed
// on: test accuracy, agreement of its argmax with the unpruned model's, and
// the mean KL(unpruned ‖ pruned) of the output distributions.
//
// Run is the computation on a model in memory; Do is `explaind prune`: it
// checks the run and the EPK output, evaluates every fraction and method and
// writes summary.json, prune.csv and the figures.
package prune

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// The pruning scopes.
const (
	// ScopeGlobal keeps the top fraction across all prunable layers.
	ScopeGlobal = "global"
	// ScopeModule keeps the top fraction within each prunable layer.
	ScopeModule = "module"
)

// The pruning methods compared.
const (
	// MethodEPK keeps the parameters of highest EPK importance.
	MethodEPK = "epk"
	// MethodRandom keeps random parameters, as many per layer as MethodEPK.
	MethodRandom = "random"
	// MethodMagnitude keeps the parameters of largest |θ_final|.
	MethodMagnitude = "magnitude"
)

// Layer describes one parameter tensor of the model.
type Layer struct {
	Name  string `json:"name"`
	Shape []int  `json:"shape"`
	Size  int    `json:"size"`
	// Prunable is false for layers that are never pruned.
	Prunable bool `json:"prunable"`
}

// PrunableSize returns the number of prunable parameters of layers.
func PrunableSize(layers []Layer) int {
	n := 0
	for _, l := range layers {
		if l.Prunable {
			n += l.Size
		}
	}
	return n
}

// KeepCount returns how many of n parameters a fraction keeps:
// round(fraction·n), so fraction 1 keeps all and 0 none.
func KeepCount(n int, fraction float64) int {
	k := int(math.Round(fraction * float64(n)))
	return min(max(k, 0), n)
}

// CheckFraction returns an error unless f is a fraction in [0, 1].
func CheckFraction(f float64) error {
	if !(f >= 0 && f <= 1) {
		return fmt.Errorf("prune: fraction kept %v is outside [0, 1]", f)
	}
	return nil
}

// Ranking orders the prunable parameters of a model by decreasing score,
// across all prunable layers (scope global) or within each (scope module).
type Ranking struct {
	// Scope is ScopeGlobal or ScopeModule.
	Scope  string
	Layers []Layer
	// rank[l][i] is the position of parameter i of layer l in its order
	// (nil for a layer that is not prunable).
	rank [][]int32
}

// Rank orders the parameters by decreasing score (scores[l] holds layer l's
// scores, one per parameter); equal scores keep parameter order. Scores must
// be finite.
func Rank(scores [][]float64, layers []Layer, scope string) (*Ranking, error) {
	if scope != ScopeGlobal && scope != ScopeModule {
		return nil, fmt.Errorf("prune: scope %q, want %q or %q", scope, ScopeGlobal, ScopeModule)
	}
	if len(scores) != len(layers) {
		return nil, fmt.Errorf("prune: %d score tensors for %d layers", len(scores), len(layers))
	}
	for l, s := range scores {
		if !layers[l].Prunable {
			continue
		}
		if len(s) != layers[l].Size {
			return nil, fmt.Errorf("prune: %s: %d scores for %d parameters", layers[l].Name, len(s), layers[l].Size)
		}
		for i, v := range s {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("prune: %s: score %v of parameter %d is not finite", layers[l].Name, v, i)
			}
		}
	}
	r := &Ranking{Scope: scope, Layers: layers, rank: make([][]int32, len(layers))}
	type item struct {
		layer, index int32
		score        float64
	}
	order := func(items []item) {
		slices.SortStableFunc(items, func(a, b item) int { return cmp.Compare(b.score, a.score) })
		for pos, it := range items {
			r.rank[it.layer][it.index] = int32(pos)
		}
	}
	var all []item
	for l, s := range scores {
		if !layers[l].Prunable {
			continue
		}
		r.rank[l] = make([]int32, len(s))
		items := make([]item, len(s))
		for i, v := range s {
			items[i] = item{int32(l), int32(i), v}
		}
		if scope == ScopeModule {
			order(items)
		} else {
			all = append(all, items...)
		}
	}
	if scope == ScopeGlobal {
		order(all)
	}
	return r, nil
}

// RandomRanking orders each prunable layer's parameters by a random
// permutation drawn from rng (scope module), for the random baseline.
func RandomRanking(layers []Layer, rng *rand.Rand) *Ranking {
	r := &Ranking{Scope: ScopeModule, Layers: layers, rank: make([][]int32, len(layers))}
	for l, ly := range layers {
		if !ly.Prunable {
			continue
		}
		r.rank[l] = make([]int32, ly.Size)
		for pos, i := range rng.Perm(ly.Size) {
			r.rank[l][i] = int32(pos)
		}
	}
	return r
}

// Keep returns the masks (true: kept) that keep the top fraction of the
// prunable parameters in the ranking's scope; layers that are not prunable
// are kept whole.
func (r *Ranking) Keep(fraction float64) ([][]bool, error) {
	if err := CheckFraction(fraction); err != nil {
		return nil, err
	}
	counts := make([]int, len(r.Layers))
	if r.Scope == ScopeGlobal {
		k := KeepCount(PrunableSize(r.Layers), fraction)
		masks := make([][]bool, len(r.Layers))
		for l, ly := range r.Layers {
			masks[l] = make([]bool, ly.Size)
			for i := range masks[l] {
				masks[l][i] = !ly.Prunable || int(r.rank[l][i]) < k
			}
		}
		return masks, nil
	}
	for l, ly := range r.Layers {
		counts[l] = KeepCount(ly.Size, fraction)
	}
	return r.KeepCounts(counts)
}

// KeepCounts returns the masks that keep the counts[l] top-ranked
// parameters of each prunable layer l (a module-scope ranking only).
func (r *Ranking) KeepCounts(counts []int) ([][]bool, error) {
	if r.Scope != ScopeModule {
		return nil, fmt.Errorf("prune: per-layer counts need a module-scope ranking, this one is %s", r.Scope)
	}
	if len(counts) != len(r.Layers) {
		return nil, fmt.Errorf("prune: %d counts for %d layers", len(counts), len(r.Layers))
	}
	masks := make([][]bool, len(r.Layers))
	for l, ly := range r.Layers {
		if ly.Prunable && (counts[l] < 0 || counts[l] > ly.Size) {
			return nil, fmt.Errorf("prune: %s: cannot keep %d of %d parameters", ly.Name, counts[l], ly.Size)
		}
		masks[l] = make([]bool, ly.Size)
		for i := range masks[l] {
			masks[l][i] = !ly.Prunable || int(r.rank[l][i]) < counts[l]
		}
	}
	return masks, nil
}

// Counts returns the number of kept parameters of each mask.
func Counts(masks [][]bool) []int {
	c := make([]int, len(masks))
	for l, m := range masks {
		for _, k := range m {
			if k {
				c[l]++
			}
		}
	}
	return c
}

// PrunedFractions returns, for each layer, the fraction of its parameters
// the masks remove.
func PrunedFractions(masks [][]bool) []float64 {
	f := make([]float64, len(masks))
	for l, c := range Counts(masks) {
		if n := len(masks[l]); n > 0 {
			f[l] = float64(n-c) / float64(n)
		}
	}
	return f
}

// Apply sets every parameter to its final value where the mask keeps it and
// to zero where it does not. final[l] holds layer l's values, in the order
// of params.
func Apply[T tensor.Float](params []*nn.Param[T], final [][]T, masks [][]bool) error {
	if len(params) != len(final) || len(params) != len(masks) {
		return fmt.Errorf("prune: %d parameters, %d value sets and %d masks", len(params), len(final), len(masks))
	}
	for l, p := range params {
		v := p.Value.Data
		if len(v) != len(final[l]) || len(v) != len(masks[l]) {
			return fmt.Errorf("prune: %s: %d values, %d final values, %d mask entries", p.Name, len(v), len(final[l]), len(masks[l]))
		}
		for i, keep := range masks[l] {
			if keep {
				v[i] = final[l][i]
			} else {
				v[i] = 0
			}
		}
	}
	return nil
}

// Metrics compare a pruned model with the unpruned one on the same samples.
type Metrics struct {
	// Accuracy is the fraction of samples whose argmax is the label.
	Accuracy float64 `json:"accuracy"`
	// Agreement is the fraction of samples whose argmax equals the
	// unpruned model's.
	Agreement float64 `json:"agreement"`
	// KL is the mean KL(unpruned ‖ pruned) of the output distributions,
	// in nats.
	KL float64 `json:"kl"`
}

// Compare returns the metrics of the log-probabilities got against the
// unpruned model's ref ([N, C] both) and the labels.
func Compare[T tensor.Float](ref, got *tensor.Dense[T], labels []int) (Metrics, error) {
	if len(ref.Shape) != 2 || !tensor.SameShape(ref.Shape, got.Shape) || ref.Shape[0] != len(labels) {
		return Metrics{}, fmt.Errorf("prune: outputs of shapes %v and %v for %d labels", ref.Shape, got.Shape, len(labels))
	}
	n, c := ref.Shape[0], ref.Shape[1]
	if n == 0 {
		return Metrics{}, fmt.Errorf("prune: no samples to compare on")
	}
	var m Metrics
	for i := range n {
		r, g := ref.Data[i*c:(i+1)*c], got.Data[i*c:(i+1)*c]
		ag := nn.Argmax(g)
		if ag == labels[i] {
			m.Accuracy++
		}
		if ag == nn.Argmax(r) {
			m.Agreement++
		}
		kl := 0.0
		for j := range c {
			if p := math.Exp(float64(r[j])); p > 0 {
				kl += p * (float64(r[j]) - float64(g[j]))
			}
		}
		m.KL += kl
	}
	m.Accuracy /= float64(n)
	m.Agreement /= float64(n)
	m.KL /= float64(n)
	return m, nil
}
