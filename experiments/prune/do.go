package prune

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/atomicfile"
	"github.com/explaind/explaind/tensor"
	"github.com/explaind/explaind/train"
	"gonum.org/v1/plot/vg"
)

// DefaultKeep is the layer Do leaves unpruned unless told otherwise: the
// ResNet-9's final Linear layer.
const DefaultKeep = "9.weight"

// Options configure Do.
type Options struct {
	// Run is the training run and Out the directory to write.
	Run, Out string
	// EPK are `explaind epk` outputs (with the pruning preset) explaining
	// the run: one, or several of disjoint test samples computed with the
	// same steps, quadrature and precision (the shards of one job, say),
	// whose importances add up to that of their union.
	EPK []string
	Config
}

// Summary is DIR/summary.json.
type Summary struct {
	// EPKSource names the run and the (first) EPK output read;
	// EPKOutputs all of them when there are several.
	expio.EPKSource
	EPKOutputs []string `json:"epk_outputs,omitempty"`
	// Scope, Seeds, Seed and Keep are as configured; Grids the fractions.
	Scope string   `json:"scope"`
	Seeds int      `json:"seeds"`
	Seed  uint64   `json:"seed"`
	Keep  []string `json:"unpruned_layers"`
	Grids []Grid   `json:"grids"`
	// ScoringSamples is the number of test samples the importance was
	// computed on; EvalSamples the other test samples, the pruned models
	// are evaluated on.
	ScoringSamples int `json:"scoring_samples"`
	EvalSamples    int `json:"eval_samples"`
	// PrunableParams counts the parameters the fractions refer to.
	PrunableParams int     `json:"prunable_params"`
	Layers         []Layer `json:"layers"`
	Unpruned       Metrics `json:"unpruned"`
	Curves         []Curve `json:"curves"`
	// Files lists the files written, relative to the output directory.
	Files []string `json:"files"`
}

// use is what `explaind prune` reads: a CNN run and the EPK output's
// pruning preset.
var use = expio.EPKUse{
	Command: "prune",
	Task:    "cnn",
	Does:    `prunes CNN runs (task "cnn", ResNet-9)`,
	Hints:   map[string]string{"modulo": "for a modulo run use `explaind components`"},
	Preset:  epkfile.Pruning,
}

// check validates the options and reads the run's manifest and the EPK
// outputs': every error a mistaken command line can provoke comes from
// here, before any work.
func check(opts *Options) ([]*expio.EPKRun, error) {
	first := ""
	if len(opts.EPK) > 0 {
		first = opts.EPK[0]
	}
	if err := use.Named(opts.Run, first, opts.Out); err != nil {
		return nil, err
	}
	if err := opts.Config.Check(); err != nil {
		return nil, err
	}
	var cs []*expio.EPKRun
	for _, dir := range opts.EPK {
		c, err := expio.OpenEPK(use, opts.Run, dir)
		if err != nil {
			return nil, err
		}
		if len(cs) > 0 {
			if err := sameJob(cs[0].EPK, c.EPK); err != nil {
				return nil, err
			}
		}
		cs = append(cs, c)
	}
	for _, k := range opts.Keep {
		if !slices.ContainsFunc(cs[0].Manifest.Params, func(p history.ParamInfo) bool { return p.Name == k }) {
			return nil, fmt.Errorf("prune: the layer %q to leave unpruned is not a parameter of the run", k)
		}
	}
	return cs, nil
}

// sameJob checks that two EPK outputs of the run were computed alike
// (steps, quadrature, tolerance, precision, test split), so that their
// importances may be added.
func sameJob(a, b *epkfile.Output) error {
	ma, mb := &a.Manifest, &b.Manifest
	diff := func(what string, x, y any) error {
		return fmt.Errorf("prune: the EPK outputs %s and %s differ in %s (%v and %v); their importances add up only when computed alike, as the shards of one EPK job are", a.Dir, b.Dir, what, x, y)
	}
	switch {
	case ma.Steps != mb.Steps:
		return diff("steps", ma.Steps, mb.Steps)
	case ma.Quadrature != mb.Quadrature:
		return diff("quadrature", ma.Quadrature, mb.Quadrature)
	case ma.Tol != mb.Tol:
		return diff("tolerance", ma.Tol, mb.Tol)
	case ma.Precision != mb.Precision:
		return diff("precision", ma.Precision, mb.Precision)
	case ma.Test.Split != mb.Test.Split:
		return diff("test split", ma.Test.Split, mb.Test.Split)
	}
	return nil
}

// Do runs `explaind prune`: it checks that the EPK outputs explain the run
// and hold the pruning preset, adds their importances, evaluates every
// fraction kept with every method on the test samples outside the EPK
// outputs', and writes
// Out/summary.json, Out/prune.csv and the figures. When ctx is cancelled
// it stops before the next evaluation and writes nothing.
func Do(ctx context.Context, opts Options) (*Summary, error) {
	cs, err := check(&opts)
	if err != nil {
		return nil, err
	}
	l, err := expio.LockOut(use.Command, opts.Out)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	var s *Summary
	if cs[0].Manifest.Dtype == "float64" {
		s, err = do[float64](ctx, &opts, cs)
	} else {
		s, err = do[float32](ctx, &opts, cs)
	}
	if stop := ctx.Err(); stop != nil && errors.Is(err, stop) {
		return nil, expio.Interrupted(stop, "prune: interrupted; nothing was written to %s", opts.Out)
	}
	return s, err
}

func do[T tensor.Float](ctx context.Context, opts *Options, cs []*expio.EPKRun) (*Summary, error) {
	o, err := train.Open[T](opts.Run)
	if err != nil {
		return nil, err
	}
	r, sess, d := o.Replay, o.Session, o.Data
	if err := r.Seek(r.Steps()); err != nil {
		return nil, err
	}
	scoring := make([]bool, d.Val.Len())
	from := make([]string, d.Val.Len())
	nScoring := 0
	for _, c := range cs {
		test, err := c.TestSamples("test", d.Val.Len(), func(x int) int { return d.Val.Labels[x] })
		if err != nil {
			return nil, err
		}
		for _, x := range test {
			if scoring[x] {
				return nil, fmt.Errorf("prune: test sample %d is scored by both %s and %s; give EPK outputs of disjoint test samples (the shards of one job)", x, from[x], c.EPK.Dir)
			}
			scoring[x], from[x] = true, c.EPK.Dir
		}
		nScoring += len(test)
	}
	var evalIdx []int
	for i, s := range scoring {
		if !s {
			evalIdx = append(evalIdx, i)
		}
	}
	if len(evalIdx) == 0 {
		return nil, fmt.Errorf("prune: the EPK outputs score all %d test samples, which leaves none to evaluate the pruned models on; compute them on a subset of them", d.Val.Len())
	}
	eval, err := d.Val.Subset(evalIdx)
	if err != nil {
		return nil, err
	}
	// The importance of the union is the sum of the outputs' (each a sum
	// over its test samples).
	importance := map[string][]float64{}
	for _, c := range cs {
		for _, name := range c.EPK.Manifest.Tensors {
			if slices.Contains(opts.Keep, name) {
				continue
			}
			a, err := c.EPK.Array("importance/" + name)
			if err != nil {
				return nil, err
			}
			sum := importance[name]
			if sum == nil {
				importance[name] = a.Data // read for this call: the sum may own it
				continue
			}
			if len(a.Data) != len(sum) {
				return nil, fmt.Errorf("prune: importance/%s holds %d values in %s and %d in %s", name, len(a.Data), c.EPK.Dir, len(sum), cs[0].EPK.Dir)
			}
			for i, v := range a.Data {
				sum[i] += v
			}
		}
	}
	res, err := Run(ctx, sess.Model, importance, eval, opts.Config)
	if err != nil {
		return nil, err
	}
	s := &Summary{EPKSource: cs[0].Source(),
		Scope: opts.Scope, Seeds: opts.Seeds, Seed: opts.Seed, Keep: opts.Keep, Grids: opts.Grids,
		ScoringSamples: nScoring, EvalSamples: eval.Len(), PrunableParams: PrunableSize(res.Layers),
		Layers: res.Layers, Unpruned: res.Unpruned, Curves: res.Curves()}
	if len(opts.EPK) > 1 {
		s.EPKOutputs = opts.EPK
	}
	if err := write(opts.Out, s, res); err != nil {
		return nil, err
	}
	return s, nil
}

// write stores the CSV, the figures and the summary (last) in dir.
func write(dir string, s *Summary, res *Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var files []string
	add := func(paths ...string) {
		for _, p := range paths {
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				rel = p
			}
			files = append(files, rel)
		}
	}
	path := filepath.Join(dir, "prune.csv")
	if err := atomicfile.WriteBytes(path, rowsCSV(res)); err != nil {
		return err
	}
	add(path)
	for _, g := range s.Grids {
		for _, metric := range []string{"accuracy", "agreement", "kl"} {
			ref := map[string]float64{"accuracy": s.Unpruned.Accuracy, "agreement": 1, "kl": 0}[metric]
			p, leg, err := metricPlot(s.Curves, g, metric, ref, s.Scope, s.Seeds)
			if err != nil {
				return err
			}
			paths, err := savePlotLegend(p, leg, 8.5*vg.Inch, 4.5*vg.Inch, 1.9*vg.Inch, filepath.Join(dir, metric+"_"+g.Name))
			if err != nil {
				return err
			}
			add(paths...)
		}
		for _, c := range s.Curves {
			if c.Method == MethodRandom {
				continue // the same counts per layer as MethodEPK
			}
			p, leg, err := prunedBars(c, g, s.Layers, s.Scope)
			if err != nil {
				return err
			}
			paths, err := savePlotLegend(p, leg, 9*vg.Inch, 4.5*vg.Inch, 2*vg.Inch, filepath.Join(dir, "pruned_per_layer_"+c.Method+"_"+g.Name))
			if err != nil {
				return err
			}
			add(paths...)
		}
	}
	s.Files = append(files, "summary.json")
	return expio.WriteJSON(filepath.Join(dir, "summary.json"), s)
}

// rowsCSV renders every evaluation as CSV: method, seed, fraction kept,
// parameters kept, the metrics and each layer's fraction pruned.
func rowsCSV(res *Result) []byte {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	head := []string{"method", "seed", "fraction_kept", "kept", "prunable", "accuracy", "agreement", "kl"}
	for _, l := range res.Layers {
		head = append(head, "pruned:"+l.Name)
	}
	w.Write(head)
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	total := strconv.Itoa(PrunableSize(res.Layers))
	for _, r := range res.Rows {
		rec := []string{r.Method, strconv.Itoa(r.Seed), f(r.Fraction), strconv.Itoa(r.Kept), total, f(r.Accuracy), f(r.Agreement), f(r.KL)}
		for _, v := range r.PrunedPerLayer {
			rec = append(rec, f(v))
		}
		w.Write(rec)
	}
	w.Flush()
	return b.Bytes()
}
