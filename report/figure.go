package report

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"math"
	"path/filepath"
	"strconv"

	"github.com/explaind/explaind/internal/atomicfile"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/palette/moreland"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	vgdraw "gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Figure sizes and the PNG resolution.
const (
	figWidth  = 7 * vg.Inch
	figHeight = 3.6 * vg.Inch
	pngDPI    = 150
)

// Figure is one rendered plot, as PNG and SVG.
type Figure struct {
	// Name is the file name stem: the figure is stored as Name.png and
	// Name.svg.
	Name string
	// Title heads the figure on the page; Caption says what it shows.
	Title   string
	Caption string
	// PNG and SVG are the encoded images.
	PNG []byte
	SVG []byte
}

// Render draws p at w × h into a PNG (150 dpi) and an SVG.
func Render(name, title, caption string, p *plot.Plot, w, h vg.Length) (*Figure, error) {
	return render(name, title, caption, w, h, p.Draw)
}

// render draws with paint onto a PNG and an SVG canvas of w × h. gonum/plot
// panics on some degenerate input (an empty log axis, say); such a panic is
// returned as an error naming the figure.
func render(name, title, caption string, w, h vg.Length, paint func(vgdraw.Canvas)) (f *Figure, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, err = nil, fmt.Errorf("report: drawing figure %s: %v", name, r)
		}
	}()
	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(pngDPI))
	paint(vgdraw.New(img))
	var png bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(&png); err != nil {
		return nil, fmt.Errorf("report: encoding figure %s as PNG: %w", name, err)
	}
	svg := vgsvg.New(w, h)
	paint(vgdraw.New(svg))
	var sb bytes.Buffer
	if _, err := svg.WriteTo(&sb); err != nil {
		return nil, fmt.Errorf("report: encoding figure %s as SVG: %w", name, err)
	}
	return &Figure{Name: name, Title: title, Caption: caption, PNG: png.Bytes(), SVG: sb.Bytes()}, nil
}

// WriteFiles writes the figure to dir/Name.png and dir/Name.svg, each
// atomically.
func (f *Figure) WriteFiles(dir string) error {
	if err := atomicfile.WriteBytes(filepath.Join(dir, f.Name+".png"), f.PNG); err != nil {
		return err
	}
	return atomicfile.WriteBytes(filepath.Join(dir, f.Name+".svg"), f.SVG)
}

// series is one line of a line plot. Points whose x or y is not finite
// are left out when it is drawn.
type series struct {
	name  string
	x, y  []float64
	dash  bool        // dashed instead of solid
	color int         // index into plotutil's colors; -1 takes the series' own index
	rgb   color.Color // if set, the colour instead
}

// finitePoints returns the series' finite points (and, with a log axis,
// positive ones, clamped below at floor).
func finitePoints(s series, logY bool, floor float64) plotter.XYs {
	var xy plotter.XYs
	for i := range s.x {
		x, y := s.x[i], s.y[i]
		if math.IsNaN(x) || math.IsInf(x, 0) || math.IsNaN(y) || math.IsInf(y, 0) {
			continue
		}
		if logY {
			if floor <= 0 && y <= 0 {
				continue
			}
			y = math.Max(y, floor)
		}
		xy = append(xy, plotter.XY{X: x, Y: y})
	}
	return xy
}

// Fonts of the figures: Liberation Sans (gonum/plot carries it), in
// points.
const (
	titleSize  = 13
	labelSize  = 11
	tickSize   = 9.5
	legendSize = 10
)

// newPlot returns an empty plot in the report's style: sans-serif text
// and a grid.
func newPlot(title, xlabel, ylabel string) *plot.Plot {
	p := plot.New()
	sans := func(size vg.Length) font.Font { return font.Font{Typeface: "Liberation", Variant: "Sans", Size: size} }
	p.Title.Text = title
	p.Title.TextStyle.Font = sans(titleSize)
	p.X.Label.Text, p.Y.Label.Text = xlabel, ylabel
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font = sans(labelSize)
		a.Tick.Label.Font = sans(tickSize)
	}
	p.Legend.TextStyle.Font = sans(legendSize)
	p.Add(plotter.NewGrid())
	return p
}

// chart is a plot whose legend is drawn beside it (to the right, or below
// when its entries are long) instead of over the data.
type chart struct {
	p      *plot.Plot
	legend plot.Legend
	n      int // legend entries
}

func newChart(title, xlabel, ylabel string) *chart {
	p := newPlot(title, xlabel, ylabel)
	l := plot.NewLegend()
	l.TextStyle = p.Legend.TextStyle
	l.Left, l.Top = true, true
	return &chart{p: p, legend: l}
}

// add adds a legend entry.
func (ch *chart) add(name string, thumbs ...plot.Thumbnailer) {
	ch.legend.Add(name, thumbs...)
	ch.n++
}

// render draws the chart at w × h with its legend beside the plot.
func (ch *chart) render(name, title, caption string, w, h vg.Length) (*Figure, error) {
	return render(name, title, caption, w, h, func(c vgdraw.Canvas) {
		if ch.n == 0 {
			ch.p.Draw(c)
			return
		}
		pad := vg.Points(10)
		r := ch.legend.Rectangle(c)
		lw, lh := r.Max.X-r.Min.X+2*pad, r.Max.Y-r.Min.Y+pad
		if lw < w*0.38 {
			ch.p.Draw(vgdraw.Crop(c, 0, -lw, 0, 0))
			// Below the title, level with the top of the data.
			ch.legend.Draw(vgdraw.Crop(c, w-lw+pad, 0, 0, -vg.Points(2*titleSize)))
			return
		}
		ch.p.Draw(vgdraw.Crop(c, 0, 0, lh, 0))
		ch.legend.Draw(vgdraw.Crop(c, vg.Points(50), 0, 0, -(h - lh)))
	})
}

// addChart renders ch at figWidth × h as the figure name and appends it
// to figs. err is the error of building ch and is returned as it is; a nil
// chart (one with nothing to draw) adds nothing.
func addChart(figs []*Figure, ch *chart, err error, name, title, caption string, h vg.Length) ([]*Figure, error) {
	if err != nil {
		return nil, err
	}
	if ch == nil {
		return figs, nil
	}
	f, err := ch.render(name, title, caption, figWidth, h)
	if err != nil {
		return nil, err
	}
	return append(figs, f), nil
}

// linePlot builds a chart of the series. With logY the y axis is
// logarithmic; values below floor are drawn at floor (floor ≤ 0 drops
// non-positive values instead). It returns nil when no series has a point
// to draw.
func linePlot(title, xlabel, ylabel string, logY bool, floor float64, ss []series) (*chart, error) {
	ch := newChart(title, xlabel, ylabel)
	p := ch.p
	drawn := 0
	lo, hi := math.Inf(1), math.Inf(-1)
	for i, s := range ss {
		xy := finitePoints(s, logY, floor)
		if len(xy) == 0 {
			continue
		}
		for _, pt := range xy {
			lo, hi = math.Min(lo, pt.Y), math.Max(hi, pt.Y)
		}
		l, err := plotter.NewLine(xy)
		if err != nil {
			return nil, err
		}
		c := s.color
		if c < 0 {
			c = i
		}
		l.Color = plotutil.Color(c)
		if s.rgb != nil {
			l.Color = s.rgb
		}
		l.Width = vg.Points(1.4)
		if s.dash {
			l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		}
		if len(xy) == 1 {
			// A lone point draws no line; mark it.
			sc, err := plotter.NewScatter(xy)
			if err != nil {
				return nil, err
			}
			sc.Color = l.Color
			p.Add(sc)
		}
		p.Add(l)
		if s.name != "" {
			ch.add(s.name, l)
		}
		drawn++
	}
	if drawn == 0 {
		return nil, nil
	}
	if logY {
		// gonum widens an empty range by ±1, which a log axis cannot take.
		if lo == hi {
			p.Y.Min, p.Y.Max = lo/10, hi*10
		}
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = logTicks{}
	}
	return ch, nil
}

// barPlot builds a bar chart of one value per label.
func barPlot(title, ylabel string, labels []string, values []float64) (*chart, error) {
	ch := newChart(title, "", ylabel)
	p := ch.p
	v := make(plotter.Values, len(values))
	for i, x := range values {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			x = 0
		}
		v[i] = x
	}
	w := vg.Points(40)
	if n := len(values); n > 8 {
		w = vg.Points(math.Max(4, 320/float64(n)))
	}
	b, err := plotter.NewBarChart(v, w)
	if err != nil {
		return nil, err
	}
	b.Color = plotutil.Color(0)
	b.LineStyle.Width = 0
	p.Add(b)
	p.NominalX(labels...)
	p.X.Min, p.X.Max = -0.6, float64(len(values))-0.4
	lo, hi := 0.0, 0.0
	for _, x := range v {
		lo, hi = math.Min(lo, x), math.Max(hi, x)
	}
	span := hi - lo
	if span == 0 {
		span = 1
	}
	p.Y.Min, p.Y.Max = lo, hi+0.08*span
	if lo < 0 {
		p.Y.Min = lo - 0.08*span
		zero, err := plotter.NewLine(plotter.XYs{{X: p.X.Min, Y: 0}, {X: p.X.Max, Y: 0}})
		if err != nil {
			return nil, err
		}
		zero.Width = vg.Points(0.8)
		p.Add(zero)
	}
	if len(labels) > 6 {
		p.X.Tick.Label.Rotation = math.Pi / 5
		p.X.Tick.Label.XAlign = vgdraw.XRight
		p.X.Tick.Label.YAlign = vgdraw.YCenter
	}
	return ch, nil
}

// grid is a row-major matrix shown as a heat map: column c of the map is
// column c of the matrix and row r (bottom to top) is row r.
type grid struct {
	rows, cols int
	v          []float64
}

// Heat-map image limits: at most maxCols columns (wider matrices are
// averaged in bins of columns), each cell drawn as a block of pixels so that
// the image is about heatW × heatH and the cells stay sharp when scaled.
const (
	maxCols = 2000
	heatW   = 1000
	heatH   = 700
)

// heatmap draws the matrix with a diverging blue-red palette centred on
// zero and a colour bar on the right. It returns nil when the matrix has
// no finite non-zero value.
func heatmap(name, title, caption, xlabel, ylabel string, g grid) (*Figure, error) {
	m := 0.0
	for _, x := range g.v {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			m = math.Max(m, math.Abs(x))
		}
	}
	if m == 0 || g.rows < 1 || g.cols < 1 {
		return nil, nil
	}
	cm := moreland.SmoothBlueRed()
	cm.SetMin(-m)
	cm.SetMax(m)
	bin := (g.cols + maxCols - 1) / maxCols
	cols := (g.cols + bin - 1) / bin
	if bin > 1 {
		caption += fmt.Sprintf(" Each column of the map is the mean of %d neighbouring training samples.", bin)
	}
	kx, ky := max(1, heatW/cols), max(1, heatH/g.rows)
	img := image.NewRGBA(image.Rect(0, 0, cols*kx, g.rows*ky))
	for r := range g.rows {
		for c := range cols {
			row := g.v[r*g.cols : (r+1)*g.cols]
			cell := row[c*bin : min((c+1)*bin, g.cols)]
			v := 0.0
			for _, x := range cell {
				v += x
			}
			v /= float64(len(cell))
			var col color.Color = color.Gray{Y: 128}
			if !math.IsNaN(v) {
				if cc, err := cm.At(math.Max(-m, math.Min(m, v))); err == nil {
					col = cc
				}
			}
			y0 := (g.rows - 1 - r) * ky
			draw.Draw(img, image.Rect(c*kx, y0, (c+1)*kx, y0+ky), image.NewUniform(col), image.Point{}, draw.Src)
		}
	}
	p := newPlot(title, xlabel, ylabel)
	p.Add(plotter.NewImage(img, -0.5, -0.5, float64(cols*bin)-0.5, float64(g.rows)-0.5))
	p.X.Min, p.X.Max = -0.5, float64(cols*bin)-0.5
	p.Y.Min, p.Y.Max = -0.5, float64(g.rows)-0.5
	bar := newPlot(" ", "", "")
	bar.Add(&plotter.ColorBar{ColorMap: cm, Vertical: true})
	bar.HideX()
	bar.Y.Padding = 0
	h := figHeight * 1.3
	return render(name, title, caption, figWidth, h, func(c vgdraw.Canvas) {
		side := vg.Points(80)
		main := vgdraw.Crop(c, 0, -side, 0, 0)
		legend := vgdraw.Crop(c, c.Max.X-c.Min.X-side+vg.Points(10), -vg.Points(20), 0, 0)
		p.Draw(main)
		bar.Draw(legend)
	})
}

// logTicks are gonum's log-axis ticks with short labels: its powers of ten
// come out of math.Pow with rounding ("9.99999999999997e-07"), so the
// labelled ticks are written with one significant digit ("1e-06").
type logTicks struct{}

// Ticks returns the ticks between min and max.
func (logTicks) Ticks(min, max float64) []plot.Tick {
	ts := plot.LogTicks{Prec: -1}.Ticks(min, max)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = strconv.FormatFloat(ts[i].Value, 'g', 1, 64)
		}
	}
	return ts
}
