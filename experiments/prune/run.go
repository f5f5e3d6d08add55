package prune

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/explaind/explaind/data"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// Grid is a named set of fractions kept, plotted together.
type Grid struct {
	Name      string    `json:"name"`
	Fractions []float64 `json:"fractions"`
}

// DefaultGrids returns the experiment's grids: "coarse", 0.01 to 0.30 in
// steps of 0.01, and "fine", 0.001 to 0.030 in steps of 0.001.
func DefaultGrids() []Grid {
	grid := func(name string, step float64) Grid {
		g := Grid{Name: name}
		for i := 1; i <= 30; i++ {
			g.Fractions = append(g.Fractions, roundFraction(float64(i)*step))
		}
		return g
	}
	return []Grid{grid("coarse", 0.01), grid("fine", 0.001)}
}

// roundFraction removes the rounding noise of a computed grid point.
func roundFraction(f float64) float64 { return math.Round(f*1e9) / 1e9 }

// Config configures Run.
type Config struct {
	// Grids are the fractions kept (each in [0, 1]); every distinct
	// fraction is evaluated once.
	Grids []Grid
	// Scope is ScopeGlobal or ScopeModule.
	Scope string
	// Seeds is the number of random-pruning draws (at least 1); Seed
	// seeds them.
	Seeds int
	Seed  uint64
	// Keep names the layers that are never pruned.
	Keep []string
	// Chunk bounds the samples per forward pass (0: 256).
	Chunk int
	// Progress, if set, is called after each evaluation with the number
	// done and the total.
	Progress func(done, total int)
}

// Fractions returns the distinct fractions of the grids, in increasing
// order.
func (c *Config) Fractions() []float64 {
	var fs []float64
	for _, g := range c.Grids {
		fs = append(fs, g.Fractions...)
	}
	slices.Sort(fs)
	return slices.Compact(fs)
}

// Check validates the configuration.
func (c *Config) Check() error {
	if len(c.Fractions()) == 0 {
		return fmt.Errorf("prune: no fractions to evaluate")
	}
	for _, g := range c.Grids {
		for _, f := range g.Fractions {
			if err := CheckFraction(f); err != nil {
				return err
			}
		}
	}
	if c.Scope != ScopeGlobal && c.Scope != ScopeModule {
		return fmt.Errorf("prune: scope %q, want %q or %q", c.Scope, ScopeGlobal, ScopeModule)
	}
	if c.Seeds < 1 {
		return fmt.Errorf("prune: %d seeds, want at least 1", c.Seeds)
	}
	if c.Chunk < 0 {
		return fmt.Errorf("prune: chunk %d must be ≥ 0", c.Chunk)
	}
	return nil
}

// Row is one evaluated pruned model.
type Row struct {
	Method string `json:"method"`
	// Seed is the random draw (0 for the deterministic methods).
	Seed     int     `json:"seed"`
	Fraction float64 `json:"fraction"`
	// Kept is the number of prunable parameters kept.
	Kept int `json:"kept"`
	Metrics
	// PrunedPerLayer is the fraction of each layer's parameters removed.
	PrunedPerLayer []float64 `json:"pruned_per_layer"`
}

// Result is the outcome of Run.
type Result struct {
	Scope     string    `json:"scope"`
	Layers    []Layer   `json:"layers"`
	Fractions []float64 `json:"fractions"`
	Seeds     int       `json:"seeds"`
	// Samples is the number of evaluation samples.
	Samples int `json:"samples"`
	// Unpruned holds the unpruned model's metrics (agreement 1, KL 0).
	Unpruned Metrics `json:"unpruned"`
	// Rows holds every evaluation: per fraction, MethodEPK, MethodMagnitude
	// and each seed of MethodRandom.
	Rows []Row `json:"-"`
}

// Run prunes model (left at its values on return) at every fraction with
// each method and evaluates it on eval. importance maps every prunable
// parameter tensor's name to its flattened scores. When ctx is cancelled
// it stops before the next evaluation and returns ctx's error.
func Run[T tensor.Float](ctx context.Context, model nn.Layer[T], importance map[string][]float64, eval data.Dataset[T], cfg Config) (*Result, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if eval.Len() == 0 {
		return nil, fmt.Errorf("prune: no evaluation samples")
	}
	params := model.Params()
	layers := make([]Layer, len(params))
	final := make([][]T, len(params))
	scores := make([][]float64, len(params))
	magnitude := make([][]float64, len(params))
	for l, p := range params {
		layers[l] = Layer{Name: p.Name, Shape: slices.Clone(p.Value.Shape), Size: len(p.Value.Data), Prunable: !slices.Contains(cfg.Keep, p.Name)}
		final[l] = slices.Clone(p.Value.Data)
		if !layers[l].Prunable {
			continue
		}
		s, ok := importance[p.Name]
		if !ok {
			return nil, fmt.Errorf("prune: no importance for parameter %s", p.Name)
		}
		scores[l] = s
		magnitude[l] = make([]float64, len(final[l]))
		for i, v := range final[l] {
			magnitude[l][i] = math.Abs(float64(v))
		}
	}
	for _, k := range cfg.Keep {
		if !slices.ContainsFunc(layers, func(l Layer) bool { return l.Name == k }) {
			return nil, fmt.Errorf("prune: the layer %q to keep unpruned is not a parameter of the model", k)
		}
	}
	if PrunableSize(layers) == 0 {
		return nil, fmt.Errorf("prune: no prunable parameters")
	}
	byEPK, err := Rank(scores, layers, cfg.Scope)
	if err != nil {
		return nil, err
	}
	byMagnitude, err := Rank(magnitude, layers, cfg.Scope)
	if err != nil {
		return nil, err
	}
	random := make([]*Ranking, cfg.Seeds)
	for s := range random {
		random[s] = RandomRanking(layers, rand.New(rand.NewPCG(cfg.Seed, uint64(s)+1)))
	}
	chunk := cfg.Chunk
	if chunk == 0 {
		chunk = 256
	}
	fractions := cfg.Fractions()
	total, done := 1+len(fractions)*(2+cfg.Seeds), 0
	tick := func() {
		done++
		if cfg.Progress != nil {
			cfg.Progress(done, total)
		}
	}
	defer func() {
		for l, p := range params {
			copy(p.Value.Data, final[l])
		}
	}()
	ref, err := forward(model, eval.Inputs, chunk)
	if err != nil {
		return nil, err
	}
	unpruned, err := Compare(ref, ref, eval.Labels)
	if err != nil {
		return nil, err
	}
	tick()
	res := &Result{Scope: cfg.Scope, Layers: layers, Fractions: fractions, Seeds: cfg.Seeds, Samples: eval.Len(), Unpruned: unpruned}
	evaluate := func(method string, seed int, f float64, masks [][]bool) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := Apply(params, final, masks); err != nil {
			return err
		}
		got, err := forward(model, eval.Inputs, chunk)
		if err != nil {
			return err
		}
		m, err := Compare(ref, got, eval.Labels)
		if err != nil {
			return err
		}
		kept := 0
		for l, c := range Counts(masks) {
			if layers[l].Prunable {
				kept += c
			}
		}
		res.Rows = append(res.Rows, Row{Method: method, Seed: seed, Fraction: f, Kept: kept, Metrics: m, PrunedPerLayer: PrunedFractions(masks)})
		tick()
		return nil
	}
	for _, f := range fractions {
		epk, err := byEPK.Keep(f)
		if err != nil {
			return nil, err
		}
		if err := evaluate(MethodEPK, 0, f, epk); err != nil {
			return nil, err
		}
		mag, err := byMagnitude.Keep(f)
		if err != nil {
			return nil, err
		}
		if err := evaluate(MethodMagnitude, 0, f, mag); err != nil {
			return nil, err
		}
		counts := Counts(epk)
		for s, r := range random {
			masks, err := r.KeepCounts(counts)
			if err != nil {
				return nil, err
			}
			if err := evaluate(MethodRandom, s, f, masks); err != nil {
				return nil, err
			}
		}
	}
	return res, nil
}

// forward returns the model's outputs on x in chunks of at most chunk
// samples.
func forward[T tensor.Float](model nn.Layer[T], x *tensor.Dense[T], chunk int) (*tensor.Dense[T], error) {
	n := x.Shape[0]
	per := len(x.Data) / max(n, 1)
	var out *tensor.Dense[T]
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		shape := append([]int{hi - lo}, x.Shape[1:]...)
		xb, err := tensor.FromSlice(x.Data[lo*per:hi*per], shape...)
		if err != nil {
			return nil, err
		}
		y, _, err := model.Forward(xb)
		if err != nil {
			return nil, err
		}
		if out == nil {
			out = tensor.New[T](n, y.Shape[1])
		}
		copy(out.Data[lo*y.Shape[1]:], y.Data)
	}
	return out, nil
}

// Stat summarizes a metric over the random seeds (for the deterministic
// methods Mean = Min = Max and Std = 0).
type Stat struct {
	Mean float64 `json:"mean"`
	Std  float64 `json:"std"`
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
}

func stat(v []float64) Stat {
	s := Stat{Min: math.Inf(1), Max: math.Inf(-1)}
	for _, x := range v {
		s.Mean += x
		s.Min, s.Max = min(s.Min, x), max(s.Max, x)
	}
	s.Mean /= float64(len(v))
	if len(v) > 1 {
		for _, x := range v {
			s.Std += (x - s.Mean) * (x - s.Mean)
		}
		s.Std = math.Sqrt(s.Std / float64(len(v)-1))
	}
	return s
}

// Point is one method at one fraction, over its seeds.
type Point struct {
	Fraction  float64 `json:"fraction"`
	Kept      int     `json:"kept"`
	Accuracy  Stat    `json:"accuracy"`
	Agreement Stat    `json:"agreement"`
	KL        Stat    `json:"kl"`
	// PrunedPerLayer is the mean over seeds of each layer's fraction
	// pruned.
	PrunedPerLayer []float64 `json:"pruned_per_layer"`
}

// Curve is one method's points, by increasing fraction.
type Curve struct {
	Method string  `json:"method"`
	Points []Point `json:"points"`
}

// Curves summarizes the rows per method and fraction: MethodEPK,
// MethodRandom, then MethodMagnitude.
func (r *Result) Curves() []Curve {
	var cs []Curve
	for _, m := range []string{MethodEPK, MethodRandom, MethodMagnitude} {
		c := Curve{Method: m}
		for _, f := range r.Fractions {
			var rows []Row
			for _, row := range r.Rows {
				if row.Method == m && row.Fraction == f {
					rows = append(rows, row)
				}
			}
			if len(rows) == 0 {
				continue
			}
			p := Point{Fraction: f, Kept: rows[0].Kept, PrunedPerLayer: make([]float64, len(r.Layers))}
			var acc, agr, kl []float64
			for _, row := range rows {
				acc, agr, kl = append(acc, row.Accuracy), append(agr, row.Agreement), append(kl, row.KL)
				for l, v := range row.PrunedPerLayer {
					p.PrunedPerLayer[l] += v
				}
			}
			for l := range p.PrunedPerLayer {
				p.PrunedPerLayer[l] /= float64(len(rows))
			}
			p.Accuracy, p.Agreement, p.KL = stat(acc), stat(agr), stat(kl)
			c.Points = append(c.Points, p)
		}
		cs = append(cs, c)
	}
	return cs
}
