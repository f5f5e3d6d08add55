package lds

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/npy"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Write writes the outputs into Out (which exists): the subsets, the
// retrainings, the actual targets, the attributions, the LDS per test
// sample, the figures, and summary.json last.
func (j *Job) Write(rows []Row, attrs []*Attribution, s *Summary) error {
	dir := j.Opt.Out
	M, K, X := len(j.Subsets), j.Opt.Seeds, len(j.Tests.Labels)
	k := len(j.Subsets[0])
	flat := make([]int64, 0, M*k)
	csvRows := make([][]string, M)
	for m, sub := range j.Subsets {
		f := make([]string, len(sub))
		for i, v := range sub {
			flat = append(flat, int64(v))
			f[i] = fmt.Sprint(v)
		}
		csvRows[m] = []string{fmt.Sprint(m), fmt.Sprint(len(sub)), strings.Join(f, " ")}
	}
	if err := npy.WriteFile(filepath.Join(dir, SubsetsFile), []int{M, k}, flat); err != nil {
		return err
	}
	if err := expio.WriteCSV(filepath.Join(dir, SubsetsCSV), []string{"subset", "size", "train_indices"}, csvRows); err != nil {
		return err
	}
	rc := make([][]string, len(rows))
	for i, r := range rows {
		rc[i] = []string{fmt.Sprint(r.Subset), fmt.Sprint(r.Seed), expio.Float(r.TrainAcc), expio.Float(r.ValAcc), fmt.Sprint(r.Diverged), expio.Float(r.Seconds)}
	}
	if err := expio.WriteCSV(filepath.Join(dir, RetrainCSV), []string{"subset", "seed", "train_acc", "val_acc", "diverged", "seconds"}, rc); err != nil {
		return err
	}
	for _, target := range Targets() {
		t := make([]float64, M*K*X)
		for i := range t {
			t[i] = math.NaN()
		}
		for _, r := range rows {
			v := r.LogProb
			if target == Margin {
				v = r.Margin
			}
			if r.Diverged {
				continue
			}
			copy(t[(r.Subset*K+int(r.Seed))*X:], v)
		}
		if err := npy.WriteFile(filepath.Join(dir, TargetsFile(target)), []int{M, K, X}, t); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, AttributionDir), 0o755); err != nil {
		return err
	}
	var lc [][]string
	for _, a := range attrs {
		if err := npy.WriteFile(filepath.Join(dir, AttributionFile(a.Method, a.Target)), []int{a.X, a.N}, a.A); err != nil {
			return err
		}
		for x, v := range s.LDS[a.Method][a.Target] {
			lc = append(lc, []string{a.Method, a.Target, fmt.Sprint(j.Key.TestIndices[x]), expio.Float(v)})
		}
	}
	if err := expio.WriteCSV(filepath.Join(dir, CSVFile), []string{"method", "target", "test_index", "lds"}, lc); err != nil {
		return err
	}
	if err := j.plots(attrs, s); err != nil {
		return err
	}
	return expio.WriteJSON(filepath.Join(dir, SummaryFile), s)
}

// methodsIn returns the methods of attrs in the order of Methods.
func methodsIn(s *Summary) []string {
	var out []string
	for _, m := range Methods() {
		if _, ok := s.Methods[m]; ok {
			out = append(out, m)
		}
	}
	return out
}

// plots draws lds.{png,svg} (the mean LDS per method with its interval, a
// panel per target) and scatter.{png,svg} (for the first test samples,
// each method's prediction, standardized, against the actual log p_y).
func (j *Job) plots(attrs []*Attribution, s *Summary) error {
	methods := methodsIn(s)
	var panels []*plot.Plot
	for _, target := range Targets() {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("LDS (%s) per method: mean over %d test samples, %g%% bootstrap interval; %d subsets of %d%%, %d seed(s)",
			target, len(j.Tests.Labels), 100*j.Opt.Confidence, len(j.Subsets), int(math.Round(100*j.Opt.Fraction)), j.Opt.Seeds)
		p.Title.TextStyle.Font.Size = vg.Points(9)
		p.Y.Label.Text = "LDS (Spearman)"
		p.Add(plotter.NewGrid())
		var pts plotter.XYs
		var errs plotter.YErrors
		for i, m := range methods {
			iv := s.Methods[m][target]
			if !finite(float64(iv.Mean)) {
				continue
			}
			pts = append(pts, plotter.XY{X: float64(i), Y: float64(iv.Mean)})
			errs = append(errs, struct{ Low, High float64 }{float64(iv.Mean - iv.Lo), float64(iv.Hi - iv.Mean)})
		}
		if len(pts) > 0 {
			sc, err := plotter.NewScatter(pts)
			if err != nil {
				return err
			}
			sc.Radius = vg.Points(3)
			eb, err := plotter.NewYErrorBars(struct {
				plotter.XYs
				plotter.YErrors
			}{pts, errs})
			if err != nil {
				return err
			}
			p.Add(sc, eb)
		}
		zero, err := plotter.NewLine(plotter.XYs{{X: -0.5, Y: 0}, {X: float64(len(methods)) - 0.5, Y: 0}})
		if err != nil {
			return err
		}
		zero.Color = color.Gray{Y: 0x80}
		p.Add(zero)
		p.NominalX(methods...)
		panels = append(panels, p)
	}
	if err := expio.SavePlots(filepath.Join(j.Opt.Out, FigureBase), 16*vg.Centimeter, 8*vg.Centimeter, panels...); err != nil {
		return err
	}
	var scatters []*plot.Plot
	for x := range min(4, len(j.Tests.Labels)) {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("test sample %d: predicted (standardized) vs actual log p_y over the %d subsets", j.Key.TestIndices[x], len(j.Subsets))
		p.Title.TextStyle.Font.Size = vg.Points(9)
		p.X.Label.Text = "actual log p_y (mean over seeds)"
		p.Y.Label.Text = "prediction (z-score)"
		p.Legend.Top = true
		p.Add(plotter.NewGrid())
		for i, m := range methods {
			for _, a := range attrs {
				if a.Method != m || a.Target != LogProb {
					continue
				}
				pred := standardize(Predict(a, x, j.Subsets))
				var pts plotter.XYs
				for sub := range j.Subsets {
					if v := s.Actual[LogProb][sub][x]; finite(v) && finite(pred[sub]) {
						pts = append(pts, plotter.XY{X: v, Y: pred[sub]})
					}
				}
				if len(pts) == 0 {
					continue
				}
				sc, err := plotter.NewScatter(pts)
				if err != nil {
					return err
				}
				sc.Color, sc.Shape, sc.Radius = plotutil.Color(i), plotutil.Shape(i), vg.Points(2)
				p.Add(sc)
				p.Legend.Add(fmt.Sprintf("%s (LDS %.2f)", m, s.LDS[m][LogProb][x]), sc)
			}
		}
		scatters = append(scatters, p)
	}
	return expio.SavePlots(filepath.Join(j.Opt.Out, ScatterBase), 16*vg.Centimeter, 9*vg.Centimeter, scatters...)
}

// standardize returns (v − mean) / sd, or zeros when v is constant.
func standardize(v []float64) []float64 {
	m, d := mean(v), sd(v)
	out := make([]float64, len(v))
	for i, e := range v {
		if d > 0 {
			out[i] = (e - m) / d
		}
	}
	return out
}
