package prune

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/explaind/explaind/epkout"
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
	Run            string `json:"run"`
	EPK            string `json:"epk"`
	RunFingerprint string `json:"run_fingerprint"`
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

// checked is what Do has read before any work.
type checked struct {
	manifest *history.Manifest
	config   train.Config
	epk      *epkout.Output
}

// check validates the options and reads the run's manifest and the EPK
// output's: every error a mistaken command line can provoke comes from here,
// before any work.
func check(opts *Options) (*checked, error) {
	if opts.Run == "" || opts.EPK == "" || opts.Out == "" {
		return nil, fmt.Errorf("prune: name the run (--run), the EPK output (--epk) and the output directory (--out)")
	}
	if err := opts.Config.Check(); err != nil {
		return nil, err
	}
	m, err := history.ReadManifest(opts.Run)
	if err != nil {
		return nil, err
	}
	c := &checked{manifest: m}
	if err := json.Unmarshal(m.Config, &c.config); err != nil {
		return nil, fmt.Errorf("prune: %s: the run's configuration is unreadable: %v", opts.Run, err)
	}
	if c.config.Task != "cnn" {
		hint := ""
		if c.config.Task == "modulo" {
			hint = "; for a modulo run use `explaind components`"
		}
		return nil, fmt.Errorf("prune: %s is a %q run; `explaind prune` prunes CNN runs (task \"cnn\", ResNet-9)%s", opts.Run, c.config.Task, hint)
	}
	if c.epk, err = epkout.Open(opts.EPK); err != nil {
		return nil, err
	}
	if err := c.epk.CheckRun(m); err != nil {
		return nil, err
	}
	if err := c.epk.Require(epkout.Pruning); err != nil {
		return nil, err
	}
	for _, k := range opts.Keep {
		if !slices.ContainsFunc(m.Params, func(p history.ParamInfo) bool { return p.Name == k }) {
			return nil, fmt.Errorf("prune: the layer %q to leave unpruned is not a parameter of the run", k)
		}
	}
	return c, nil
}

// Do runs `explaind prune`: it checks that the EPK output explains the run
// and holds the pruning preset, evaluates every fraction kept with every
// method on the test samples outside the EPK output's, and writes
// Out/summary.json, Out/prune.csv and the figures.
func Do(opts Options) (*Summary, error) {
	c, err := check(&opts)
	if err != nil {
		return nil, err
	}
	if c.manifest.Dtype == "float64" {
		return do[float64](&opts, c)
	}
	return do[float32](&opts, c)
}

func do[T tensor.Float](opts *Options, c *checked) (*Summary, error) {
	r, sess, _, err := train.Open[T](opts.Run)
	if err != nil {
		return nil, err
	}
	if err := r.Seek(r.Steps()); err != nil {
		return nil, err
	}
	d, err := train.LoadData[T](&c.config)
	if err != nil {
		return nil, err
	}
	test, err := c.epk.Ints("test_indices")
	if err != nil {
		return nil, err
	}
	labels, err := c.epk.Ints("test_labels")
	if err != nil {
		return nil, err
	}
	if len(labels) != len(test) {
		return nil, fmt.Errorf("prune: the EPK output has %d test indices and %d labels", len(test), len(labels))
	}
	scoring := make([]bool, d.Val.Len())
	for i, x := range test {
		if x < 0 || x >= d.Val.Len() {
			return nil, fmt.Errorf("prune: the EPK output's test index %d is outside the run's %d test samples", x, d.Val.Len())
		}
		if d.Val.Labels[x] != labels[i] {
			return nil, fmt.Errorf("prune: the EPK output gives test sample %d label %d, the run's data %d", x, labels[i], d.Val.Labels[x])
		}
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
	for _, name := range c.epk.Manifest.Tensors {
		if slices.Contains(opts.Keep, name) {
			continue
		}
		a, err := c.epk.Array("importance/" + name)
		if err != nil {
			return nil, err
		}
		importance[name] = a.Data
	}
	res, err := Run(sess.Model, importance, eval, opts.Config)
	if err != nil {
		return nil, err
	}
	s := &Summary{Run: opts.Run, EPK: opts.EPK, RunFingerprint: epkout.RunFingerprint(c.manifest),
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
	raw, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(filepath.Join(dir, "summary.json"), append(raw, '\n'))
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
