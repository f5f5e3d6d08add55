package prune

import (
	"fmt"
	"image/color"
	"slices"
	"strconv"

	"github.com/explaind/explaind/experiments/expio"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/palette"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// savePlotLegend writes p with the legend leg in a strip of width legendW
// on its right.
func savePlotLegend(p *plot.Plot, leg plot.Legend, w, h, legendW vg.Length, base string) ([]string, error) {
	return expio.SaveFigure(base, w, h, func(dc draw.Canvas) {
		p.Draw(draw.Crop(dc, 0, -legendW, 0, 0))
		strip := draw.Crop(dc, w-legendW, 0, 0, -vg.Points(30))
		leg.Draw(strip)
	})
}

// methodStyle is how a method is drawn.
func methodStyle(m string) (color.Color, string) {
	switch m {
	case MethodEPK:
		return color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, "EPK importance"
	case MethodMagnitude:
		return color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, "magnitude |θ|"
	}
	return color.RGBA{R: 0x55, G: 0x55, B: 0x55, A: 0xff}, "random"
}

// metricOf picks a metric from a point.
func metricOf(p Point, metric string) Stat {
	switch metric {
	case "accuracy":
		return p.Accuracy
	case "agreement":
		return p.Agreement
	}
	return p.KL
}

// inGrid returns the curve's points whose fraction is in g.
func inGrid(c Curve, g Grid) []Point {
	var ps []Point
	for _, p := range c.Points {
		if slices.Contains(g.Fractions, p.Fraction) {
			ps = append(ps, p)
		}
	}
	return ps
}

// metricPlot plots one metric against the fraction kept on grid g: a line
// per method, the random baseline's mean with its range over the seeds
// shaded, and the unpruned model's value dashed.
func metricPlot(curves []Curve, g Grid, metric string, unpruned float64, scope string, seeds int) (*plot.Plot, plot.Legend, error) {
	p := plot.New()
	leg := plot.NewLegend()
	leg.Top, leg.Left = true, true
	leg.TextStyle.Font.Size = vg.Points(9)
	titles := map[string]string{"accuracy": "test accuracy", "agreement": "agreement with the unpruned model", "kl": "mean KL(unpruned ‖ pruned) (nats)"}
	p.Title.Text = fmt.Sprintf("Pruning (%s scope; random keeps EPK's count per layer): %s", scope, titles[metric])
	p.X.Label.Text = "fraction of prunable parameters kept"
	p.Y.Label.Text = titles[metric]
	p.Add(plotter.NewGrid())
	lo, hi := slices.Min(g.Fractions), slices.Max(g.Fractions)
	ref, err := plotter.NewLine(plotter.XYs{{X: lo, Y: unpruned}, {X: hi, Y: unpruned}})
	if err != nil {
		return nil, leg, err
	}
	ref.Color = color.Gray{Y: 0x80}
	ref.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(ref)
	leg.Add("unpruned", ref)
	for _, c := range curves {
		ps := inGrid(c, g)
		if len(ps) == 0 {
			continue
		}
		col, name := methodStyle(c.Method)
		mean := make(plotter.XYs, len(ps))
		for i, pt := range ps {
			mean[i] = plotter.XY{X: pt.Fraction, Y: metricOf(pt, metric).Mean}
		}
		if c.Method == MethodRandom && seeds > 1 {
			band := make(plotter.XYs, 0, 2*len(ps))
			for _, pt := range ps {
				band = append(band, plotter.XY{X: pt.Fraction, Y: metricOf(pt, metric).Min})
			}
			for i := len(ps) - 1; i >= 0; i-- {
				band = append(band, plotter.XY{X: ps[i].Fraction, Y: metricOf(ps[i], metric).Max})
			}
			poly, err := plotter.NewPolygon(band)
			if err != nil {
				return nil, leg, err
			}
			poly.Color = color.NRGBA{R: 0x55, G: 0x55, B: 0x55, A: 0x40}
			poly.LineStyle.Width = 0
			p.Add(poly)
			leg.Add(fmt.Sprintf("random, range of %d seeds", seeds), poly)
			name = fmt.Sprintf("random, mean of %d seeds", seeds)
		}
		l, s, err := plotter.NewLinePoints(mean)
		if err != nil {
			return nil, leg, err
		}
		l.Color, s.Color = col, col
		s.Radius = vg.Points(1.5)
		p.Add(l, s)
		leg.Add(name, l, s)
	}
	return p, leg, nil
}

// layerColors returns n distinguishable colours.
func layerColors(n int) []color.Color {
	return palette.Rainbow(max(n, 1), palette.Red, palette.Magenta, 0.75, 0.85, 1).Colors()
}

// prunedBars returns a stacked bar chart of where a method's pruning falls: for
// each fraction kept of grid g, one bar of height the fraction of prunable
// parameters removed, split into each layer's share (its parameters removed
// over all prunable parameters).
func prunedBars(c Curve, g Grid, layers []Layer, scope string) (*plot.Plot, plot.Legend, error) {
	ps := inGrid(c, g)
	p := plot.New()
	_, name := methodStyle(c.Method)
	p.Title.Text = fmt.Sprintf("Parameters pruned per layer, %s (%s scope)", name, scope)
	p.X.Label.Text = "fraction of prunable parameters kept"
	p.Y.Label.Text = "fraction of prunable parameters removed"
	p.X.Tick.Label.Rotation = 1.5708
	p.X.Tick.Label.XAlign = draw.XRight
	p.X.Tick.Label.YAlign = draw.YCenter
	leg := plot.NewLegend()
	leg.Top, leg.Left = true, true
	labels := make([]string, len(ps))
	for i, pt := range ps {
		labels[i] = strconv.FormatFloat(pt.Fraction, 'g', 4, 64)
	}
	total := float64(PrunableSize(layers))
	var prunable []int
	for l, ly := range layers {
		if ly.Prunable {
			prunable = append(prunable, l)
		}
	}
	colors := layerColors(len(prunable))
	width := vg.Points(max(2, 300/float64(max(len(ps), 1))))
	var below *plotter.BarChart
	for j, l := range prunable {
		vs := make(plotter.Values, len(ps))
		for i, pt := range ps {
			vs[i] = pt.PrunedPerLayer[l] * float64(layers[l].Size) / total
		}
		bc, err := plotter.NewBarChart(vs, width)
		if err != nil {
			return nil, leg, err
		}
		bc.Color = colors[j]
		bc.LineStyle.Width = 0
		if below != nil {
			bc.StackOn(below)
		}
		below = bc
		p.Add(bc)
		leg.Add(layers[l].Name, bc)
	}
	p.NominalX(labels...)
	p.Y.Min, p.Y.Max = 0, 1
	return p, leg, nil
}
