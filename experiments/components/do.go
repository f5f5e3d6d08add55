package components

import (
	"github.com/explaind/explaind/setting"

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
	"github.com/explaind/explaind/internal/atomicfile"
	"github.com/explaind/explaind/npy"
	"github.com/explaind/explaind/tensor"
	"github.com/explaind/explaind/train"
	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/plot/palette/moreland"
)

// Options configure Do.
type Options struct {
	// Run is the modulo training run, EPK the `explaind epk` output (with
	// the components preset) explaining it, Out the directory to write.
	Run, EPK, Out string
	// Top is the number of most and least similar samples listed per
	// sample (0: DefaultTop).
	Top int
	// HistK is the number of nearest neighbours in the histograms (0:
	// DefaultHistK), Examples the number of example samples (0:
	// DefaultExamples).
	HistK, Examples int
	// HistorySteps are the snapshot steps whose similarity matrices are
	// drawn when the EPK output has the history preset (none:
	// DefaultHistoryHeatmaps evenly spaced snapshots).
	HistorySteps []int
	// TrainEPK, if set, is a second EPK output of the run with the
	// components preset on training samples (`explaind epk --test-split
	// train`): validation samples are then compared with training samples
	// per group.
	TrainEPK string
	// Progress, if set, is called with the work done and the total.
	Progress func(done, total int)
}

// The defaults of Options.Top, HistK and Examples (and of the command's
// flags).
const (
	DefaultTop      = 5
	DefaultHistK    = 50
	DefaultExamples = 4
)

// GroupSummary is one group's entry in summary.json.
type GroupSummary struct {
	Group
	Stats
	// Explained is the fraction of variance of the two PCA components;
	// PCAMethod says how they were computed ("stat.PC" on the embeddings
	// or "gram" from the Gram matrix).
	Explained [2]float64 `json:"pca_explained"`
	PCAMethod string     `json:"pca_method"`
}

// Summary is DIR/summary.json.
type Summary struct {
	// EPKSource names the run and EPK output read.
	expio.EPKSource
	// Samples is the number of validation samples compared, P the modulus.
	Samples int `json:"samples"`
	P       int `json:"p"`
	Top     int `json:"top"`
	HistK   int `json:"hist_k"`
	// Examples are the positions of the example samples of the histograms.
	Examples []int          `json:"examples"`
	Groups   []GroupSummary `json:"groups"`
	// Ungrouped lists parameters that belong to no layer group (they count
	// in the whole model only).
	Ungrouped []string `json:"ungrouped,omitempty"`
	// History is the component history (EPK outputs with the history
	// preset).
	History *HistorySummary `json:"history,omitempty"`
	// TrainEPK and Train compare validation with training samples
	// (Options.TrainEPK).
	TrainEPK     string              `json:"train_epk,omitempty"`
	TrainSamples int                 `json:"train_samples,omitempty"`
	Train        []TrainGroupSummary `json:"train,omitempty"`
	Files        []string            `json:"files"`
}

// use is what `explaind components` reads: a modulo run and the EPK
// output's components preset.
var use = expio.EPKUse{
	Command: "components",
	Task:    "modulo",
	Does:    `analyses modulo runs (task "modulo")`,
	Hints:   map[string]string{"cnn": "for a CNN run use `explaind prune`"},
	Preset:  epkfile.Components,
}

// check validates the options and reads the run's manifest and the EPK
// output's, so that a mistaken command line fails before any work.
func check(opts *Options) (*expio.EPKRun, error) {
	if err := use.Named(opts.Run, opts.EPK, opts.Out); err != nil {
		return nil, err
	}
	for _, s := range opts.HistorySteps {
		if s < 1 {
			return nil, setting.Invalid("HistorySteps", s, "components: want snapshot steps ≥ 1")
		}
	}
	if opts.Top == 0 {
		opts.Top = DefaultTop
	}
	if opts.HistK == 0 {
		opts.HistK = DefaultHistK
	}
	if opts.Examples == 0 {
		opts.Examples = DefaultExamples
	}
	if opts.Top < 1 || opts.HistK < 1 || opts.Examples < 0 {
		return nil, setting.Errorf("components: %v %d and %v %d must be ≥ 1, %v %d ≥ 0",
			setting.Name("Top"), opts.Top, setting.Name("HistK"), opts.HistK, setting.Name("Examples"), opts.Examples)
	}
	c, err := expio.OpenEPK(use, opts.Run, opts.EPK)
	if err != nil {
		return nil, err
	}
	if c.EPK.Manifest.Test.Split == "train" {
		return nil, setting.Errorf("components: the EPK output %s explains training samples; give it as %v and an output of validation samples as %v",
			opts.EPK, setting.Name("TrainEPK"), setting.Name("EPK"))
	}
	if len(opts.HistorySteps) > 0 {
		if err := c.EPK.Require(epkfile.History); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// checkTrain opens the EPK output of training samples, Options.TrainEPK.
func checkTrain(opts *Options) (*expio.EPKRun, error) {
	tc, err := expio.OpenEPK(use, opts.Run, opts.TrainEPK)
	if err != nil {
		return nil, err
	}
	if sp := tc.EPK.Manifest.Test.Split; sp != "train" {
		return nil, setting.Errorf("components: the EPK output %s (%v) explains %q samples, not training samples; compute one of the run %s with `explaind epk` on the training split (its TestSplit train) and the components preset",
			opts.TrainEPK, setting.Name("TrainEPK"), sp, opts.Run)
	}
	return tc, nil
}

// Do runs `explaind components`: it checks that the EPK output explains
// the modulo run and holds the components preset, then writes, for every
// layer group, the similarity matrix, heatmaps, neighbour lists and
// histograms, and the PCA projection, and Out/summary.json. Its three
// phases are readSamples, accumulate and write. When ctx is cancelled
// while it reads the scores it stops and writes nothing; once writing has
// begun it finishes.
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
	var tc *expio.EPKRun
	if opts.TrainEPK != "" {
		if tc, err = checkTrain(&opts); err != nil {
			return nil, err
		}
	}
	ss, err := readSamples(c)
	if err != nil {
		return nil, err
	}
	n := len(ss.samples)
	var hist *snapshots
	var hs *HistorySummary
	if slices.Contains(c.EPK.Manifest.Presets, epkfile.History) {
		if hist, err = readHistory(c.EPK, n); err != nil {
			return nil, err
		}
		defer hist.close()
		hs = &HistorySummary{Steps: hist.steps}
		if hs.Heatmaps, err = heatmapSteps(opts.HistorySteps, hist.steps); err != nil {
			return nil, err
		}
		ms, err := train.ReadMetrics(c.Dir)
		if err != nil {
			return nil, err
		}
		hs.Phases = Phases(ms, train.AccuracyTarget(c.Config.StopAccuracy), len(c.Manifest.Steps))
	}
	var tss *sampleSet
	if tc != nil {
		if tss, err = readSplitSamples(tc, "training", c.Config, true); err != nil {
			return nil, err
		}
	}
	em := c.EPK.Manifest
	sizes := make([]int, len(em.Tensors))
	for i, s := range em.TensorShapes {
		sizes[i] = tensor.Numel(s)
	}
	groups := Groups(em.Tensors, sizes)
	s := &Summary{EPKSource: c.Source(), Samples: n, P: ss.p,
		Top: min(opts.Top, n-1), HistK: min(opts.HistK, n-1)}
	for _, t := range em.Tensors {
		if groupOf(t) == "" {
			s.Ungrouped = append(s.Ungrouped, t)
		}
	}
	total, done := len(em.Tensors)+len(groups), 0
	if hs != nil {
		total++
	}
	if tc != nil {
		total += len(em.Tensors) + 1
	}
	tick := func() {
		done++
		if opts.Progress != nil {
			opts.Progress(done, total)
		}
	}
	e, err := accumulate(ctx, c.EPK, groups, sizes, n, tick)
	if stop := ctx.Err(); stop != nil && errors.Is(err, stop) {
		return nil, expio.Interrupted(stop, "components: interrupted; nothing was written to %s", opts.Out)
	}
	if err != nil {
		return nil, err
	}
	var cross, nval, ntr map[string][]float64
	if tc != nil {
		cross, nval, ntr, err = crossGrams(ctx, c, tc, groups, sizes, n, len(tss.samples), tick)
		if stop := ctx.Err(); stop != nil && errors.Is(err, stop) {
			return nil, expio.Interrupted(stop, "components: interrupted; nothing was written to %s", opts.Out)
		}
		if err != nil {
			return nil, err
		}
	}
	s.Examples = examples(ss.orders[0], opts.Examples)
	more := func(add func(...string)) error {
		if hs != nil {
			if err := writeHistory(opts.Out, hist, hs, groups, ss, add); err != nil {
				return err
			}
			s.History = hs
			tick()
		}
		if tc != nil {
			tg, err := writeTrainVal(opts.Out, groups, cross, nval, ntr, ss, tss, s.Top, add)
			if err != nil {
				return err
			}
			s.TrainEPK, s.TrainSamples, s.Train = opts.TrainEPK, len(tss.samples), tg
			tick()
		}
		return nil
	}
	if err := write(opts.Out, s, groups, e, ss, tick, more); err != nil {
		return nil, err
	}
	return s, nil
}

// sampleSet is the validation samples compared, in the EPK output's order,
// with what every group's outputs need of them.
type sampleSet struct {
	samples []Sample
	// p is the modulus; labels[i] and sums[i] are sample i's label and
	// a+b; orders are the heatmaps' orders (Orders).
	p      int
	labels []int
	sums   []int
	orders []Order
}

// readSamples returns the validation samples of the EPK output, checked
// against the run's validation split (phase 1 of Do).
func readSamples(c *expio.EPKRun) (*sampleSet, error) {
	return readSplitSamples(c, "validation", c.Config, false)
}

// readSplitSamples returns the test samples of the EPK output c, of the
// run's training split (train) or validation split, checked against it;
// split names them in errors.
func readSplitSamples(c *expio.EPKRun, split string, cfg *train.Config, trainSplit bool) (*sampleSet, error) {
	d, err := train.LoadData[float64](cfg)
	if err != nil {
		return nil, err
	}
	val := d.ModuloVal
	if trainSplit {
		val = d.ModuloTrain
	}
	idx, err := c.TestSamples(split, val.Len(), func(x int) int { return val.Pairs[x].Label })
	if err != nil {
		return nil, err
	}
	n := len(idx)
	if n < 2 {
		return nil, fmt.Errorf("components: the EPK output %s has %d test samples; comparing them needs at least 2", c.EPK.Dir, n)
	}
	ss := &sampleSet{samples: make([]Sample, n), p: val.P, labels: make([]int, n), sums: make([]int, n)}
	for i, x := range idx {
		pr := val.Pairs[x]
		ss.samples[i] = Sample{Pos: i, Index: x, A: pr.A, B: pr.B, Label: pr.Label}
		ss.labels[i], ss.sums[i] = pr.Label, pr.A+pr.B
	}
	ss.orders = Orders(ss.samples)
	return ss, nil
}

// embeddings holds every group's Gram matrix E Eᵀ (n×n, row-major) and,
// for the groups no wider than the number of samples n, the embeddings E
// themselves (for stat.PC).
type embeddings struct {
	gram map[string][]float64
	emb  map[string]*mat.Dense
}

// accumulate reads the EPK output's scores one tensor at a time (sizes[i]
// elements each, for n samples) and adds them to their groups' Gram
// matrices and embeddings (phase 2 of Do). tick is called after each
// tensor. When ctx is cancelled it returns ctx's error before the next
// tensor.
func accumulate(ctx context.Context, epk *epkfile.Output, groups []Group, sizes []int, n int, tick func()) (*embeddings, error) {
	em := epk.Manifest
	e := &embeddings{gram: map[string][]float64{}, emb: map[string]*mat.Dense{}}
	cols := map[string]int{}
	for _, g := range groups {
		e.gram[g.Name] = make([]float64, n*n)
		if g.Dim <= n {
			e.emb[g.Name] = mat.NewDense(n, g.Dim, nil)
		}
	}
	other := make([]float64, n*n)
	for i, t := range em.Tensors {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		a, err := epk.Array("scores/" + t)
		if err != nil {
			return nil, err
		}
		if len(a.Shape) == 0 || a.Shape[0] != n || len(a.Data) != n*sizes[i] {
			return nil, fmt.Errorf("components: scores/%s has shape %v, want [%d, %v...]", t, a.Shape, n, em.TensorShapes[i])
		}
		in := []string{GroupAll}
		if g := groupOf(t); g != "" {
			AddGram(e.gram[g], a.Data, n, sizes[i])
			in = append(in, g)
		} else {
			AddGram(other, a.Data, n, sizes[i])
		}
		for _, g := range in {
			if m := e.emb[g]; m != nil {
				for r := range n {
					for j := range sizes[i] {
						m.Set(r, cols[g]+j, a.Data[r*sizes[i]+j])
					}
				}
			}
			cols[g] += sizes[i]
		}
		tick()
	}
	// The whole model's Gram matrix is the sum of its groups', added in
	// the order of groups (not of the map) so that it is the same bits on
	// every run.
	all := e.gram[GroupAll]
	for _, g := range groups {
		if g.Name == GroupAll {
			continue
		}
		for i, v := range e.gram[g.Name] {
			all[i] += v
		}
	}
	for i, v := range other {
		all[i] += v
	}
	return e, nil
}

// write writes every group's outputs (writeGroup), then samples.csv and
// last summary.json into dir, filling in s.Groups and s.Files (phase 3 of
// Do). tick is called after each group.
func write(dir string, s *Summary, groups []Group, e *embeddings, ss *sampleSet, tick func(), more func(add func(...string)) error) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var files []string
	add := func(paths ...string) {
		for _, p := range paths {
			if rel, err := filepath.Rel(dir, p); err == nil {
				p = rel
			}
			files = append(files, p)
		}
	}
	pcas := make([]*PCA, len(groups))
	for gi, g := range groups {
		gs, pca, err := writeGroup(dir, g, e, ss, s, add)
		if err != nil {
			return err
		}
		pcas[gi] = pca
		s.Groups = append(s.Groups, gs)
		tick()
	}
	path := filepath.Join(dir, "samples.csv")
	if err := atomicfile.WriteBytes(path, samplesCSV(ss.samples, groups, pcas)); err != nil {
		return err
	}
	add(path)
	if err := more(add); err != nil {
		return err
	}
	s.Files = append(files, "summary.json")
	return expio.WriteJSON(filepath.Join(dir, "summary.json"), s)
}

// writeGroup writes group g's outputs into dir: its cosine similarities
// (.npy), their heatmaps in every order, the neighbour lists and
// histograms (s.Top and s.HistK neighbours of the samples s.Examples) and
// the PCA projection coloured by label and by a+b. It passes the paths
// written to add and returns the group's summary and projection.
func writeGroup(dir string, g Group, e *embeddings, ss *sampleSet, s *Summary, add func(...string)) (GroupSummary, *PCA, error) {
	n := len(ss.samples)
	gs := GroupSummary{Group: g}
	sim := Cosine(e.gram[g.Name], n)
	gs.Stats = Similarities(sim, ss.labels, s.Top)
	path := filepath.Join(dir, "similarity_"+g.Name+".npy")
	if err := npy.WriteFile(path, []int{n, n}, sim); err != nil {
		return gs, nil, err
	}
	add(path)
	for _, o := range ss.orders {
		title := fmt.Sprintf("%s: cosine similarity of EPK component embeddings", g.Title)
		paths, err := heatmap(sim, n, o, title, filepath.Join(dir, "heatmap_"+g.Name+"_by_"+o.Name))
		if err != nil {
			return gs, nil, err
		}
		add(paths...)
	}
	path = filepath.Join(dir, "neighbors_"+g.Name+".csv")
	if err := atomicfile.WriteBytes(path, neighborsCSV(sim, ss.samples, s.Top)); err != nil {
		return gs, nil, err
	}
	add(path)
	paths, err := histograms(neighborHists(sim, ss.samples, s.Examples, s.HistK, ss.p),
		fmt.Sprintf("%s: inputs and labels of the %d most similar samples (dashed: the sample's own)", g.Title, s.HistK),
		filepath.Join(dir, "neighbor_hist_"+g.Name))
	if err != nil {
		return gs, nil, err
	}
	add(paths...)
	var pca *PCA
	if m := e.emb[g.Name]; m != nil {
		pca, err = PCAEmbeddings(m)
		gs.PCAMethod = "stat.PC"
	} else {
		pca, err = PCAGram(e.gram[g.Name], n)
		gs.PCAMethod = "gram"
	}
	if err != nil {
		return gs, nil, fmt.Errorf("components: %s: %w", g.Name, err)
	}
	gs.Explained = pca.Explained
	byLabel := &cyclicMap{lo: 0, hi: float64(max(ss.p-1, 1)), alpha: 1}
	bySum := moreland.ExtendedKindlmann()
	bySum.SetMin(0)
	bySum.SetMax(float64(max(2*ss.p-2, 1)))
	title := g.Title + ": PCA of EPK component embeddings, coloured by "
	paths, err = scatter(pca, ss.labels, byLabel, "label (a+b) mod p", title+"label", filepath.Join(dir, "pca_"+g.Name+"_by_label"))
	if err != nil {
		return gs, nil, err
	}
	add(paths...)
	paths, err = scatter(pca, ss.sums, bySum, "a+b", title+"a+b", filepath.Join(dir, "pca_"+g.Name+"_by_sum"))
	if err != nil {
		return gs, nil, err
	}
	add(paths...)
	return gs, pca, nil
}

// examples picks k samples spread evenly along the order.
func examples(o Order, k int) []int {
	n := len(o.Perm)
	k = min(k, n)
	ex := make([]int, k)
	for i := range k {
		ex[i] = o.Perm[(2*i+1)*n/(2*k)]
	}
	return ex
}

// neighborHists returns, for each example, histograms of the labels, a and
// b of its k most similar samples.
func neighborHists(sim []float64, samples []Sample, examples []int, k, p int) [][]histPanel {
	var rows [][]histPanel
	for _, e := range examples {
		most, _ := Nearest(sim, len(samples), e, k)
		lab, a, b := make([]float64, p), make([]float64, p), make([]float64, p)
		for _, nb := range most {
			sm := samples[nb.Pos]
			lab[sm.Label]++
			a[sm.A]++
			b[sm.B]++
		}
		me := samples[e]
		id := fmt.Sprintf("sample %d (%d+%d=%d)", me.Index, me.A, me.B, me.Label)
		rows = append(rows, []histPanel{
			{title: id + ": neighbours' labels", counts: lab, mark: me.Label},
			{title: "their a", counts: a, mark: me.A},
			{title: "their b", counts: b, mark: me.B},
		})
	}
	return rows
}

// neighborsCSV lists each sample's top most and least similar samples.
func neighborsCSV(sim []float64, samples []Sample, top int) []byte {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write([]string{"pos", "val_index", "a", "b", "label", "kind", "rank", "other_pos", "other_val_index", "other_a", "other_b", "other_label", "similarity"})
	it := strconv.Itoa
	for i, sm := range samples {
		most, least := Nearest(sim, len(samples), i, top)
		for _, kind := range []struct {
			name string
			nbs  []Neighbor
		}{{"most", most}, {"least", least}} {
			for r, nb := range kind.nbs {
				o := samples[nb.Pos]
				w.Write([]string{it(i), it(sm.Index), it(sm.A), it(sm.B), it(sm.Label), kind.name, it(r + 1),
					it(nb.Pos), it(o.Index), it(o.A), it(o.B), it(o.Label), strconv.FormatFloat(nb.Sim, 'g', 8, 64)})
			}
		}
	}
	w.Flush()
	return buf.Bytes()
}

// samplesCSV lists the samples with their PCA coordinates in every group.
func samplesCSV(samples []Sample, groups []Group, pcas []*PCA) []byte {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	head := []string{"pos", "val_index", "a", "b", "sum", "label"}
	for _, g := range groups {
		head = append(head, g.Name+"_pc1", g.Name+"_pc2")
	}
	w.Write(head)
	it := strconv.Itoa
	for i, sm := range samples {
		rec := []string{it(i), it(sm.Index), it(sm.A), it(sm.B), it(sm.A + sm.B), it(sm.Label)}
		for _, p := range pcas {
			rec = append(rec, strconv.FormatFloat(p.Scores[i][0], 'g', 8, 64), strconv.FormatFloat(p.Scores[i][1], 'g', 8, 64))
		}
		w.Write(rec)
	}
	w.Flush()
	return buf.Bytes()
}
