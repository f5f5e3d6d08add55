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
	// Run is the training run, EPK the `explaind epk` output (with the
	// pruning preset) explaining it, Out the directory to write.
	Run, EPK, Out string
	Config
}

// Summary is DIR/summary.json.
type Summary struct {
	// EPKSource names the run and EPK output read.
	expio.EPKSource
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
// output's: every error a mistaken command line can provoke comes from here,
// before any work.
func check(opts *Options) (*expio.EPKRun, error) {
	if err := use.Named(opts.Run, opts.EPK, opts.Out); err != nil {
		return nil, err
	}
	if err := opts.Config.Check(); err != nil {
		return nil, err
	}
	c, err := expio.OpenEPK(use, opts.Run, opts.EPK)
	if err != nil {
		return nil, err
	}
	for _, k := range opts.Keep {
		if !slices.ContainsFunc(c.Manifest.Params, func(p history.ParamInfo) bool { return p.Name == k }) {
			return nil, fmt.Errorf("prune: the layer %q to leave unpruned is not a parameter of the run", k)
		}
	}
	return c, nil
}

// Do runs `explaind prune`: it checks that the EPK output explains the run
// and holds the pruning preset, evaluates every fraction kept with every
// method on the test samples outside the EPK output's, and writes
// Out/summary.json, Out/prune.csv and the figures. When ctx is cancelled
// it stops before the next evaluation and writes nothing.
func Do(ctx context.Context, opts Options) (*Summary, error) {
	c, err := check(&opts)
	if err != nil {
		return nil, err
	}
	l, err := expio.LockOut(use.Command, opts.Out)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	var s *Summary
	if c.Manifest.Dtype == "float64" {
		s, err = do[float64](ctx, &opts, c)
	} else {
		s, err = do[float32](ctx, &opts, c)
	}
	if stop := ctx.Err(); stop != nil && errors.Is(err, stop) {
		return nil, expio.Interrupted(stop, "prune: interrupted; nothing was written to %s", opts.Out)
	}
	return s, err
}

func do[T tensor.Float](ctx context.Context, opts *Options, c *expio.EPKRun) (*Summary, error) {
	o, err := train.Open[T](opts.Run)
	if err != nil {
		return nil, err
	}
	r, sess, d := o.Replay, o.Session, o.Data
	if err := r.Seek(r.Steps()); err != nil {
		return nil, err
	}
	test, err := c.TestSamples("test", d.Val.Len(), func(x int) int { return d.Val.Labels[x] })
	if err != nil {
		return nil, err
	}
	scoring := make([]bool, d.Val.Len())
	for _, x := range test {
		scoring[x] = true
	}
	var evalIdx []int
	for i, s := range scoring {
		if !s {
			evalIdx = append(evalIdx, i)
		}
	}
	if len(evalIdx) == 0 {
		return nil, fmt.Errorf("prune: the EPK output scores all %d test samples, which leaves none to evaluate the pruned models on; compute it on a subset of them", d.Val.Len())
	}
	eval, err := d.Val.Subset(evalIdx)
	if err != nil {
		return nil, err
	}
	importance := map[string][]float64{}
	for _, name := range c.EPK.Manifest.Tensors {
		if slices.Contains(opts.Keep, name) {
			continue
		}
		a, err := c.EPK.Array("importance/" + name)
		if err != nil {
			return nil, err
		}
		importance[name] = a.Data
	}
	res, err := Run(ctx, sess.Model, importance, eval, opts.Config)
	if err != nil {
		return nil, err
	}
	s := &Summary{EPKSource: c.Source(),
		Scope: opts.Scope, Seeds: opts.Seeds, Seed: opts.Seed, Keep: opts.Keep, Grids: opts.Grids,
		ScoringSamples: len(test), EvalSamples: eval.Len(), PrunableParams: PrunableSize(res.Layers),
		Layers: res.Layers, Unpruned: res.Unpruned, Curves: res.Curves()}
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
