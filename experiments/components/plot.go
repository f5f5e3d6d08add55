package components

import (
	"fmt"
	"image"
	"image/color"
	"math"
	"strconv"

	"github.com/explaind/explaind/experiments/expio"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/palette"
	"gonum.org/v1/plot/palette/moreland"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// maxPixels bounds a heatmap's side in cells: larger matrices are shown as
// block means.
const maxPixels = 600

// withColorBar writes p with a vertical colour bar of cm on its right.
func withColorBar(p *plot.Plot, cm palette.ColorMap, label string, w, h vg.Length, base string) ([]string, error) {
	bar := plot.New()
	bar.HideX()
	bar.Y.Padding = 0
	bar.Y.Label.Text = label
	bar.Add(&plotter.ColorBar{ColorMap: cm, Vertical: true, Colors: 64})
	barW := vg.Points(70)
	return expio.SaveFigure(base, w, h, func(dc draw.Canvas) {
		p.Draw(draw.Crop(dc, 0, -barW, 0, 0))
		bar.Draw(draw.Crop(dc, w-barW, -vg.Points(8), vg.Points(40), -vg.Points(30)))
	})
}

// colorAt returns cm's colour at v, clamped to its range.
func colorAt(cm palette.ColorMap, v float64) color.Color {
	v = math.Max(cm.Min(), math.Min(cm.Max(), v))
	c, err := cm.At(v)
	if err != nil {
		return color.Black
	}
	return c
}

// keyTicks labels an axis of samples sorted by an integer key: about six
// ticks, each at the first sample whose key reaches a round value and
// labelled with that sample's key. Where the keys jump past several round
// values, one tick stands for them, and ticks closer than a twelfth of the
// axis to the previous one are dropped, so that labels never overlap.
type keyTicks []int

// Ticks implements plot.Ticker.
func (k keyTicks) Ticks(lo, hi float64) []plot.Tick {
	if len(k) == 0 {
		return nil
	}
	first, last := k[0], k[len(k)-1]
	step := max(1, niceStep(float64(last-first)/6))
	gap := max(1, len(k)/12)
	var ts []plot.Tick
	pos, prev := 0, -gap
	for v := (first + step - 1) / step * step; v <= last; v += step {
		for pos < len(k) && k[pos] < v {
			pos++
		}
		if pos < len(k) && pos-prev >= gap && float64(pos) >= lo && float64(pos) <= hi {
			ts = append(ts, plot.Tick{Value: float64(pos) + 0.5, Label: strconv.Itoa(k[pos])})
			prev = pos
		}
	}
	return ts
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) int {
	if x <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return int(m * p)
		}
	}
	return int(10 * p)
}

// heatmap draws the n×n similarity matrix sim with rows and columns in the
// order o (sample o.Perm[0] at the origin), as block means when n exceeds
// maxPixels.
func heatmap(sim []float64, n int, o Order, title, base string) ([]string, error) {
	p, cm := heatmapPlot(sim, n, o, o, title, maxPixels)
	return withColorBar(p, cm, "cosine similarity", 6.5*vg.Inch, 5.5*vg.Inch, base)
}

// heatmapPlot returns the plot of the matrix sim (len(rows.Perm) ×
// len(cols.Perm), row-major with ld values a row) with its rows and
// columns in the orders rows and cols, as block means beyond side cells
// on an axis, and its colour map (cosine similarity, −1 … 1).
func heatmapPlot(sim []float64, ld int, rows, cols Order, title string, side int) (*plot.Plot, palette.ColorMap) {
	cm := moreland.SmoothBlueRed()
	cm.SetMin(-1)
	cm.SetMax(1)
	ny, nx := len(rows.Perm), len(cols.Perm)
	my, mx := min(ny, side), min(nx, side)
	// Small matrices get f×f pixels per cell, so that scaling the image
	// does not blur the cells.
	f := max(1, (side*4/5+max(mx, my)-1)/max(mx, my))
	img := image.NewRGBA(image.Rect(0, 0, mx*f, my*f))
	block := func(p, n, m int) (int, int) { return p * n / m, (p + 1) * n / m }
	for py := range my {
		ylo, yhi := block(py, ny, my)
		for px := range mx {
			xlo, xhi := block(px, nx, mx)
			s := 0.0
			for y := ylo; y < yhi; y++ {
				row := rows.Perm[y] * ld
				for x := xlo; x < xhi; x++ {
					s += sim[row+cols.Perm[x]]
				}
			}
			s /= float64((yhi - ylo) * (xhi - xlo))
			col := colorAt(cm, s)
			for dy := range f {
				for dx := range f {
					img.Set(px*f+dx, (my-1-py)*f+dy, col)
				}
			}
		}
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "samples sorted by " + cols.Title
	p.Y.Label.Text = "samples sorted by " + rows.Title
	p.Add(plotter.NewImage(img, 0, 0, float64(nx), float64(ny)))
	p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = 0, float64(nx), 0, float64(ny)
	p.X.Padding, p.Y.Padding = 0, 0
	p.X.Tick.Marker, p.Y.Tick.Marker = keyTicks(cols.Keys), keyTicks(rows.Keys)
	return p, cm
}

// cyclicMap colours a value by its hue, so that a modulus' 0 and p−1 are
// neighbours.
type cyclicMap struct{ lo, hi, alpha float64 }

// At implements palette.ColorMap.
func (c *cyclicMap) At(v float64) (color.Color, error) {
	if v < c.lo || v > c.hi || c.hi <= c.lo {
		return nil, fmt.Errorf("components: value %v outside [%v, %v]", v, c.lo, c.hi)
	}
	return palette.HSVA{H: 0.95 * (v - c.lo) / (c.hi - c.lo), S: 0.8, V: 0.9, A: c.alpha}, nil
}

// Max implements palette.ColorMap.
func (c *cyclicMap) Max() float64 { return c.hi }

// SetMax implements palette.ColorMap.
func (c *cyclicMap) SetMax(v float64) { c.hi = v }

// Min implements palette.ColorMap.
func (c *cyclicMap) Min() float64 { return c.lo }

// SetMin implements palette.ColorMap.
func (c *cyclicMap) SetMin(v float64) { c.lo = v }

// Alpha implements palette.ColorMap.
func (c *cyclicMap) Alpha() float64 { return c.alpha }

// SetAlpha implements palette.ColorMap.
func (c *cyclicMap) SetAlpha(a float64) { c.alpha = a }

// Palette implements palette.ColorMap.
func (c *cyclicMap) Palette(n int) palette.Palette {
	cs := make(colors, n)
	for i := range cs {
		cs[i] = colorAt(c, c.lo+(c.hi-c.lo)*float64(i)/float64(max(n-1, 1)))
	}
	return cs
}

// colors is a fixed palette.
type colors []color.Color

// Colors implements palette.Palette.
func (c colors) Colors() []color.Color { return c }

// scatter draws the PCA projection with each sample coloured by value[i]
// under cm.
func scatter(pca *PCA, value []int, cm palette.ColorMap, by, title, base string) ([]string, error) {
	xys := make(plotter.XYs, len(pca.Scores))
	for i, s := range pca.Scores {
		xys[i] = plotter.XY{X: s[0], Y: s[1]}
	}
	sc, err := plotter.NewScatter(xys)
	if err != nil {
		return nil, err
	}
	sc.GlyphStyleFunc = func(i int) draw.GlyphStyle {
		return draw.GlyphStyle{Color: colorAt(cm, float64(value[i])), Radius: vg.Points(2.2), Shape: draw.CircleGlyph{}}
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = fmt.Sprintf("PC1 (%.1f%% of variance)", 100*pca.Explained[0])
	p.Y.Label.Text = fmt.Sprintf("PC2 (%.1f%% of variance)", 100*pca.Explained[1])
	p.Add(plotter.NewGrid(), sc)
	return withColorBar(p, cm, by, 6.5*vg.Inch, 5.5*vg.Inch, base)
}

// histPanel is one neighbour histogram: counts[v] neighbours have value v,
// and the example's own value is mark.
type histPanel struct {
	title  string
	counts []float64
	mark   int
}

// histograms draws one row of panels per example.
func histograms(rows [][]histPanel, title, base string) ([]string, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	plots := make([][]*plot.Plot, len(rows))
	for r, row := range rows {
		for _, h := range row {
			p := plot.New()
			p.Title.Text = h.title
			p.Title.TextStyle.Font.Size = vg.Points(9)
			p.X.Tick.Label.Font.Size = vg.Points(7)
			p.Y.Tick.Label.Font.Size = vg.Points(7)
			bc, err := plotter.NewBarChart(plotter.Values(h.counts), vg.Points(max(1, 140/float64(max(len(h.counts), 1)))))
			if err != nil {
				return nil, err
			}
			bc.Color = color.RGBA{R: 0x44, G: 0x66, B: 0xaa, A: 0xff}
			bc.LineStyle.Width = 0
			mark, err := plotter.NewLine(plotter.XYs{{X: float64(h.mark), Y: 0}, {X: float64(h.mark), Y: maxOf(h.counts)}})
			if err != nil {
				return nil, err
			}
			mark.Color = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
			mark.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
			p.Add(bc, mark)
			p.X.Min, p.X.Max = -1, float64(len(h.counts))
			plots[r] = append(plots[r], p)
		}
	}
	w, h := 9*vg.Inch, vg.Length(len(rows))*1.8*vg.Inch+0.4*vg.Inch
	head := plot.New()
	head.HideAxes()
	head.Title.Text = title
	return expio.SaveFigure(base, w, h, func(dc draw.Canvas) {
		head.Draw(draw.Crop(dc, 0, 0, h-0.4*vg.Inch, 0))
		body := draw.Crop(dc, 0, 0, 0, -0.4*vg.Inch)
		t := draw.Tiles{Rows: len(rows), Cols: len(rows[0]), PadX: vg.Points(12), PadY: vg.Points(10), PadTop: vg.Points(4), PadBottom: vg.Points(4), PadLeft: vg.Points(4), PadRight: vg.Points(8)}
		canvases := plot.Align(plots, t, body)
		for r := range plots {
			for c := range plots[r] {
				plots[r][c].Draw(canvases[r][c])
			}
		}
	})
}

func maxOf(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = math.Max(m, x)
	}
	return math.Max(m, 1)
}
