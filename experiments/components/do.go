package components

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/explaind/explaind/epkout"
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
	// sample (default 5).
	Top int
	// HistK is the number of nearest neighbours in the histograms
	// (default 50), Examples the number of example samples (default 4).
	HistK, Examples int
	// Progress, if set, is called with the work done and the total.
	Progress func(done, total int)
}

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
	Files     []string `json:"files"`
}

// use is what `explaind components` reads: a modulo run and the EPK
// output's components preset.
var use = expio.EPKUse{
	Command: "components",
	Task:    "modulo",
	Does:    `analyses modulo runs (task "modulo")`,
	Hints:   map[string]string{"cnn": "for a CNN run use `explaind prune`"},
	Preset:  epkout.Components,
}

// check validates the options and reads the run's manifest and the EPK
// output's, so that a mistaken command line fails before any work.
func check(opts *Options) (*expio.EPKRun, error) {
	if opts.Run == "" || opts.EPK == "" || opts.Out == "" {
		return nil, fmt.Errorf("components: name the run (--run), the EPK output (--epk) and the output directory (--out)")
	}
	if opts.Top == 0 {
		opts.Top = 5
	}
	if opts.HistK == 0 {
		opts.HistK = 50
	}
	if opts.Top < 1 || opts.HistK < 1 || opts.Examples < 0 {
		return nil, fmt.Errorf("components: --top %d and --hist-k %d must be ≥ 1, --examples %d ≥ 0", opts.Top, opts.HistK, opts.Examples)
	}
	return expio.OpenEPK(use, opts.Run, opts.EPK)
}

// Do runs `explaind components`: it checks that the EPK output explains
// the modulo run and holds the components preset, then writes, for every
// layer group, the similarity matrix, heatmaps, neighbour lists and
// histograms, and the PCA projection, and Out/summary.json.
func Do(opts Options) (*Summary, error) {
	if opts.Examples == 0 {
		opts.Examples = 4
	}
	c, err := check(&opts)
	if err != nil {
		return nil, err
	}
	d, err := train.LoadData[float64](c.Config)
	if err != nil {
		return nil, err
	}
	val := d.ModuloVal
	idx, err := c.TestSamples("validation", val.Len(), func(x int) int { return val.Pairs[x].Label })
	if err != nil {
		return nil, err
	}
	samples := make([]Sample, len(idx))
	for i, x := range idx {
		pr := val.Pairs[x]
		samples[i] = Sample{Pos: i, Index: x, A: pr.A, B: pr.B, Label: pr.Label}
	}
	n := len(samples)
	if n < 2 {
		return nil, fmt.Errorf("components: the EPK output has %d test samples; comparing them needs at least 2", n)
	}
	em := c.EPK.Manifest
	sizes := make([]int, len(em.Tensors))
	for i, s := range em.TensorShapes {
		sizes[i] = tensor.Numel(s)
	}
	groups := Groups(em.Tensors, sizes)
	s := &Summary{EPKSource: c.Source(), Samples: n, P: val.P,
		Top: min(opts.Top, n-1), HistK: min(opts.HistK, n-1)}
	for _, t := range em.Tensors {
		if groupOf(t) == "" {
			s.Ungrouped = append(s.Ungrouped, t)
		}
	}
	total, done := len(em.Tensors)+len(groups), 0
	tick := func() {
		done++
		if opts.Progress != nil {
			opts.Progress(done, total)
		}
	}

	// Gram matrices, one tensor at a time; groups no wider than the
	// number of samples also keep their embeddings for stat.PC.
	grams := map[string][]float64{}
	embs := map[string]*mat.Dense{}
	cols := map[string]int{}
	for _, g := range groups {
		grams[g.Name] = make([]float64, n*n)
		if g.Dim <= n {
			embs[g.Name] = mat.NewDense(n, g.Dim, nil)
		}
	}
	other := make([]float64, n*n)
	for i, t := range em.Tensors {
		a, err := c.EPK.Array("scores/" + t)
		if err != nil {
			return nil, err
		}
		if len(a.Shape) == 0 || a.Shape[0] != n || len(a.Data) != n*sizes[i] {
			return nil, fmt.Errorf("components: scores/%s has shape %v, want [%d, %v...]", t, a.Shape, n, em.TensorShapes[i])
		}
		in := []string{GroupAll}
		if g := groupOf(t); g != "" {
			AddGram(grams[g], a.Data, n, sizes[i])
			in = append(in, g)
		} else {
			AddGram(other, a.Data, n, sizes[i])
		}
		for _, g := range in {
			if e := embs[g]; e != nil {
				for r := range n {
					for j := range sizes[i] {
						e.Set(r, cols[g]+j, a.Data[r*sizes[i]+j])
					}
				}
			}
			cols[g] += sizes[i]
		}
		tick()
	}
	// The whole model's Gram matrix is the sum of its groups'.
	all := grams[GroupAll]
	for name, g := range grams {
		if name == GroupAll {
			continue
		}
		for i, v := range g {
			all[i] += v
		}
	}
	for i, v := range other {
		all[i] += v
	}

	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, err
	}
	var files []string
	add := func(paths ...string) {
		for _, p := range paths {
			if rel, err := filepath.Rel(opts.Out, p); err == nil {
				p = rel
			}
			files = append(files, p)
		}
	}
	labelsOf := make([]int, n)
	for i, sm := range samples {
		labelsOf[i] = sm.Label
	}
	orders := Orders(samples)
	s.Examples = examples(orders[0], opts.Examples)
	pcas := make([]*PCA, len(groups))
	for gi, g := range groups {
		gs := GroupSummary{Group: g}
		sim := Cosine(grams[g.Name], n)
		gs.Stats = Similarities(sim, labelsOf, s.Top)
		path := filepath.Join(opts.Out, "similarity_"+g.Name+".npy")
		if err := npy.WriteFile(path, []int{n, n}, sim); err != nil {
			return nil, err
		}
		add(path)
		for _, o := range orders {
			title := fmt.Sprintf("%s: cosine similarity of EPK component embeddings", g.Title)
			paths, err := heatmap(sim, n, o, title, filepath.Join(opts.Out, "heatmap_"+g.Name+"_by_"+o.Name))
			if err != nil {
				return nil, err
			}
			add(paths...)
		}
		path = filepath.Join(opts.Out, "neighbors_"+g.Name+".csv")
		if err := atomicfile.WriteBytes(path, neighborsCSV(sim, samples, s.Top)); err != nil {
			return nil, err
		}
		add(path)
		paths, err := histograms(neighborHists(sim, samples, s.Examples, s.HistK, val.P),
			fmt.Sprintf("%s: inputs and labels of the %d most similar samples (dashed: the sample's own)", g.Title, s.HistK),
			filepath.Join(opts.Out, "neighbor_hist_"+g.Name))
		if err != nil {
			return nil, err
		}
		add(paths...)
		var pca *PCA
		if e := embs[g.Name]; e != nil {
			pca, err = PCAEmbeddings(e)
			gs.PCAMethod = "stat.PC"
		} else {
			pca, err = PCAGram(grams[g.Name], n)
			gs.PCAMethod = "gram"
		}
		if err != nil {
			return nil, fmt.Errorf("components: %s: %w", g.Name, err)
		}
		pcas[gi] = pca
		gs.Explained = pca.Explained
		sums := make([]int, n)
		for i, sm := range samples {
			sums[i] = sm.A + sm.B
		}
		byLabel := &cyclicMap{lo: 0, hi: float64(max(val.P-1, 1)), alpha: 1}
		bySum := moreland.ExtendedKindlmann()
		bySum.SetMin(0)
		bySum.SetMax(float64(max(2*val.P-2, 1)))
		title := g.Title + ": PCA of EPK component embeddings, coloured by "
		paths, err = scatter(pca, labelsOf, byLabel, "label (a+b) mod p", title+"label", filepath.Join(opts.Out, "pca_"+g.Name+"_by_label"))
		if err != nil {
			return nil, err
		}
		add(paths...)
		paths, err = scatter(pca, sums, bySum, "a+b", title+"a+b", filepath.Join(opts.Out, "pca_"+g.Name+"_by_sum"))
		if err != nil {
			return nil, err
		}
		add(paths...)
		s.Groups = append(s.Groups, gs)
		tick()
	}
	path := filepath.Join(opts.Out, "samples.csv")
	if err := atomicfile.WriteBytes(path, samplesCSV(samples, groups, pcas)); err != nil {
		return nil, err
	}
	add(path)
	s.Files = append(files, "summary.json")
	if err := expio.WriteJSON(filepath.Join(opts.Out, "summary.json"), s); err != nil {
		return nil, err
	}
	return s, nil
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
