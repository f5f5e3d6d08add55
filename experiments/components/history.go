package components

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/npy"
	"github.com/explaind/explaind/train"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// DefaultHistoryHeatmaps is the number of snapshots drawn as heatmaps when
// Options.HistorySteps names none: evenly spaced over the snapshots, the
// first and the last included.
const DefaultHistoryHeatmaps = 4

// Phase is one phase of a grokking run, the steps [From, To).
type Phase struct {
	Name string `json:"name"`
	From int    `json:"from"`
	To   int    `json:"to"`
}

// Phases returns the phases of a grokking run over the steps [0, end),
// from the milestones train.PhasesOf reads off its epoch metrics
// (metrics.jsonl), with stopAcc the validation accuracy that counts as
// grokked (the run's stop accuracy):
//
//   - memorization: until training accuracy first reaches
//     train.MemorizedAt (99 %);
//   - circuit formation: from there until validation accuracy first
//     reaches train.RisingAt (10 %), invisible in the accuracies;
//   - cleanup: from there until validation accuracy reaches stopAcc, the
//     rise of validation accuracy;
//   - grokked: the rest of the run.
//
// A phase whose end the run never reaches runs to end, and the phases
// after it are left out; no metrics, no phases.
func Phases(ms []train.EpochMetrics, stopAcc float64, end int) []Phase {
	if len(ms) == 0 {
		return nil
	}
	ph := train.PhasesOf(ms, stopAcc)
	var out []Phase
	from := 0
	for _, b := range []struct {
		name string
		to   int
	}{{"memorization", ph.Memorized}, {"circuit formation", ph.Rising}, {"cleanup", ph.Grokked}, {"grokked", end}} {
		to := b.to
		if to < 0 || to > end {
			to = end
		}
		if to > from || b.to < 0 {
			out = append(out, Phase{b.name, from, to})
		}
		if b.to < 0 || to >= end {
			break
		}
		from = to
	}
	return out
}

// HistoryPoint is one group's similarity statistics at one snapshot.
type HistoryPoint struct {
	Step           int     `json:"step"`
	Group          string  `json:"group"`
	Mean           float64 `json:"mean"`
	SameLabel      float64 `json:"same_label"`
	DifferentLabel float64 `json:"different_label"`
	Phase          string  `json:"phase"`
}

// HistorySummary is the component history's part of summary.json.
type HistorySummary struct {
	// Steps are the snapshot steps; Heatmaps those drawn as heatmaps.
	Steps    []int `json:"steps"`
	Heatmaps []int `json:"heatmaps"`
	// Phases are the run's grokking phases (Phases).
	Phases []Phase `json:"phases"`
	// Points are the statistics per snapshot and group.
	Points []HistoryPoint `json:"points"`
}

// snapshots is the history preset's arrays of an EPK output, its Gram
// matrices read one at a time (at): 2000 samples take 16 MB a matrix,
// and K snapshots of G groups K × G times that.
type snapshots struct {
	steps  []int
	groups []string
	// gram is history_gram [len(steps), len(groups), n, n], opened; n
	// the samples.
	gram *npy.File
	n    int
}

// readHistory opens the history preset's arrays for n test samples (the
// caller closes it).
func readHistory(epk *epkfile.Output, n int) (*snapshots, error) {
	steps, err := epk.Ints("history_steps")
	if err != nil {
		return nil, err
	}
	groups := epk.Manifest.Arrays["history_gram"].Labels["group"]
	g, err := epk.OpenArray("history_gram")
	if err != nil {
		return nil, err
	}
	if !slices.Equal(g.Shape, []int{len(steps), len(groups), n, n}) {
		g.Close()
		return nil, fmt.Errorf("components: history_gram has shape %v, want [%d, %d, %d, %d] (snapshots, groups, samples, samples)",
			g.Shape, len(steps), len(groups), n, n)
	}
	return &snapshots{steps: steps, groups: groups, gram: g, n: n}, nil
}

// at reads the Gram matrix of group name at snapshot k into buf (n × n
// values), returning nil if the history has no such group.
func (h *snapshots) at(k int, name string, buf []float64) ([]float64, error) {
	g := slices.Index(h.groups, name)
	if g < 0 {
		return nil, nil
	}
	if err := h.gram.ReadFloat64((k*len(h.groups)+g)*h.n*h.n, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// close closes history_gram.
func (h *snapshots) close() error { return h.gram.Close() }

// heatmapSteps returns the snapshot steps to draw: the steps named (each
// must be a snapshot) or DefaultHistoryHeatmaps evenly spaced ones.
func heatmapSteps(named, steps []int) ([]int, error) {
	if len(named) > 0 {
		for _, s := range named {
			if !slices.Contains(steps, s) {
				return nil, fmt.Errorf("components: step %d is not a snapshot of the EPK output's history (its snapshots are at %v)", s, steps)
			}
		}
		return named, nil
	}
	m := min(DefaultHistoryHeatmaps, len(steps))
	var out []int
	for i := range m {
		k := 0
		if m > 1 {
			k = int(math.Round(float64(i*(len(steps)-1)) / float64(m-1)))
		}
		if !slices.Contains(out, steps[k]) {
			out = append(out, steps[k])
		}
	}
	return out, nil
}

// phaseAt names the phase of step s ("" outside every phase).
func phaseAt(ps []Phase, s int) string {
	for _, p := range ps {
		if s >= p.From && s < p.To || s == p.To && p == ps[len(ps)-1] {
			return p.Name
		}
	}
	return ""
}

// writeHistory writes the component history into dir: history.csv (per
// snapshot and group the mean similarity over pairs, and over same-label
// and different-label pairs), history_similarity.png/svg (same against
// different label over the steps, one panel per group, the phases
// marked) and history_heatmaps.png/svg (group × snapshot small multiples,
// samples sorted by label). It passes the paths written to add.
func writeHistory(dir string, h *snapshots, hs *HistorySummary, groups []Group, ss *sampleSet, add func(...string)) error {
	n := len(ss.samples)
	var rows [][]string
	// The heatmaps' plots by (snapshot, group), each made as soon as its
	// cosine matrix is, which is then dropped: a plot holds an image of at
	// most heatmapSide² cells.
	heatmaps := map[[2]int]*plot.Plot{}
	buf := make([]float64, n*n)
	for k, step := range h.steps {
		for gi, g := range groups {
			gram, err := h.at(k, g.Name, buf)
			if err != nil {
				return err
			}
			if gram == nil {
				continue
			}
			sim := Cosine(gram, n)
			st := Similarities(sim, ss.labels, 0)
			pt := HistoryPoint{Step: step, Group: g.Name, Mean: st.Mean, SameLabel: st.SameLabel,
				DifferentLabel: st.DifferentLabel, Phase: phaseAt(hs.Phases, step)}
			hs.Points = append(hs.Points, pt)
			rows = append(rows, []string{strconv.Itoa(step), g.Name, expio.Float(pt.Mean), expio.Float(pt.SameLabel),
				expio.Float(pt.DifferentLabel), expio.Float(pt.SameLabel - pt.DifferentLabel), pt.Phase})
			if slices.Contains(hs.Heatmaps, step) {
				heatmaps[[2]int{k, gi}] = historyHeatmap(sim, g, step, gi == len(groups)-1, ss)
			}
		}
	}
	path := filepath.Join(dir, "history.csv")
	if err := expio.WriteCSV(path, []string{"step", "group", "mean", "same_label", "different_label", "same_minus_different", "phase"}, rows); err != nil {
		return err
	}
	add(path)
	var plots []*plot.Plot
	for _, g := range groups {
		var x, same, diff []float64
		for _, p := range hs.Points {
			if p.Group == g.Name {
				x, same, diff = append(x, float64(p.Step)), append(same, p.SameLabel), append(diff, p.DifferentLabel)
			}
		}
		if len(x) == 0 {
			continue
		}
		p, err := expio.LinePlot(g.Title+": mean cosine similarity of component embeddings", "step", "cosine similarity",
			[]expio.Series{{Label: "same label", X: x, Y: same}, {Label: "different label", X: x, Y: diff}})
		if err != nil {
			return err
		}
		markPhases(p, hs.Phases, slices.Concat(same, diff))
		plots = append(plots, p)
	}
	base := filepath.Join(dir, "history_similarity")
	if err := expio.SavePlots(base, 7*vg.Inch, 2.6*vg.Inch, plots...); err != nil {
		return err
	}
	add(base+".png", base+".svg")
	paths, err := historyHeatmaps(heatmaps, h, hs.Heatmaps, groups, filepath.Join(dir, "history_heatmaps"))
	if err != nil {
		return err
	}
	add(paths...)
	return nil
}

// markPhases draws the phase boundaries of ps as vertical lines across
// the range of ys, each named in the legend.
func markPhases(p *plot.Plot, ps []Phase, ys []float64) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, y := range ys {
		if !math.IsNaN(y) {
			lo, hi = math.Min(lo, y), math.Max(hi, y)
		}
	}
	if lo > hi {
		return
	}
	grey := []color.Color{color.Gray{100}, color.Gray{160}}
	for i, ph := range ps[:max(len(ps)-1, 0)] {
		l, err := plotter.NewLine(plotter.XYs{{X: float64(ph.To), Y: lo}, {X: float64(ph.To), Y: hi}})
		if err != nil {
			continue
		}
		l.Color = grey[i%2]
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s ends (step %d)", ph.Name, ph.To), l)
	}
}

// heatmapSide is the most cells a side of a history heatmap has.
const heatmapSide = 160

// historyHeatmap returns the heatmap of the cosine matrix sim of group g
// at step, the samples sorted by label; last marks the bottom row's.
func historyHeatmap(sim []float64, g Group, step int, last bool, ss *sampleSet) *plot.Plot {
	byLabel := ss.orders[1]
	p, _ := heatmapPlot(sim, len(ss.samples), byLabel, byLabel, fmt.Sprintf("%s, step %d", g.Title, step), heatmapSide)
	p.X.Label.Text, p.Y.Label.Text = "", ""
	if last {
		p.X.Label.Text = "sorted by label"
	}
	return p
}

// historyHeatmaps draws the heatmaps (historyHeatmap, by snapshot and
// group index) as small multiples, a row per group and a column per step
// of steps.
func historyHeatmaps(heatmaps map[[2]int]*plot.Plot, h *snapshots, steps []int, groups []Group, base string) ([]string, error) {
	var grid [][]*plot.Plot
	for gi := range groups {
		var row []*plot.Plot
		for _, step := range steps {
			k := slices.Index(h.steps, step)
			p, ok := heatmaps[[2]int{k, gi}]
			if !ok {
				continue
			}
			row = append(row, p)
		}
		if len(row) > 0 {
			grid = append(grid, row)
		}
	}
	if len(grid) == 0 {
		return nil, fmt.Errorf("components: the EPK output's history has none of the groups %s", groupNames(groups))
	}
	cell := 2.4 * vg.Inch
	cols := len(steps)
	return expio.SaveFigure(base, cell*vg.Length(cols), cell*vg.Length(len(grid)), func(dc draw.Canvas) {
		tiles := draw.Tiles{Rows: len(grid), Cols: cols, PadX: vg.Points(4), PadY: vg.Points(4)}
		for r, row := range grid {
			for c, p := range row {
				p.Draw(tiles.At(dc, c, r))
			}
		}
	})
}

func groupNames(gs []Group) string {
	var s []string
	for _, g := range gs {
		s = append(s, g.Name)
	}
	return strings.Join(s, ", ")
}
