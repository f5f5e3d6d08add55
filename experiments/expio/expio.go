// Package expio holds what explaind's experiments (swap, retrain, and the
// others under experiments/) share: opening a recorded run with its data,
// and writing results, every file atomically (internal/atomicfile), so a
// reader sees the previous file or the complete new one, never half of one.
//
// Every experiment has the same shape: its package's
//
//	func Do(ctx context.Context, opts Options) (*Summary, error)
//
// runs it as its command does, from Options.Run (and an EPK output) into
// the directory Options.Out. Do checks the options and inputs first, so a
// mistaken command line fails before any work and before Out is created;
// it then takes Out's lock (LockOut), so that a second process writing the
// same Out is refused, computes, stopping soon after ctx is cancelled,
// and writes the
// outputs, each file atomically and summary.json last, so a directory with
// a summary.json holds every file that summary names. An interrupted Do
// returns an error made by Interrupted that says what it left: prune and
// components, whose results are only whole, write nothing; swap and
// retrain write the results so far, their summary saying "complete":
// false, and return that summary too. Writing, once begun, is not
// interrupted. An Out that Do created and left empty is removed again.
//
//   - ReadOutput reads a file of an output directory back, never one
//     outside it;
//   - WriteJSON and WriteCSV write a summary and a table;
//   - LinePlot draws lines over a common x axis, each with an optional
//     shaded band (say the minimum and maximum over seeds);
//   - SavePlots writes one or more plots, stacked vertically, as base.png
//     and base.svg, and SaveFigure does the same for a figure drawn by a
//     function (a plot with a legend or colour bar beside it, say);
//   - OpenEPK opens a run together with the `explaind epk` output that
//     explains it, for the experiments that read one (prune, components).
package expio

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"strconv"

	"github.com/explaind/explaind/internal/atomicfile"
	"github.com/explaind/explaind/internal/localpath"
	"github.com/explaind/explaind/internal/lock"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Interrupted returns the error of an experiment stopped because its
// context was cancelled (err is the context's error): its message is the
// formatted text, which should say what the experiment left behind, and
// errors.Is sees err through it.
func Interrupted(err error, format string, args ...any) error {
	return &interrupted{msg: fmt.Sprintf(format, args...), err: err}
}

type interrupted struct {
	msg string
	err error
}

func (e *interrupted) Error() string { return e.msg }
func (e *interrupted) Unwrap() error { return e.err }

// LockOut takes the lock of the output directory out (internal/lock) for
// the experiment named command, creating out; Release gives it up and
// removes out again if it made it and nothing was written.
func LockOut(command, out string) (*lock.Lock, error) {
	l, err := lock.Dir(out)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", command, err)
	}
	return l, nil
}

// ReadOutput reads the file name of an experiment's output directory dir
// (its summary.json, retrain's progress.json), refusing a name that leads
// out of dir (absolute, "..", or a symbolic link pointing elsewhere)
// before reading anything. A missing file's error wraps fs.ErrNotExist.
func ReadOutput(dir, name string) ([]byte, error) {
	return localpath.ReadFile(dir, name)
}

// WriteJSON writes v as indented JSON to path, atomically.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return atomicfile.WriteBytes(path, append(b, '\n'))
}

// WriteCSV writes a header line and the rows to path, atomically. Every
// row must have as many fields as the header.
func WriteCSV(path string, header []string, rows [][]string) error {
	for i, r := range rows {
		if len(r) != len(header) {
			return fmt.Errorf("writing %s: row %d has %d fields, the header %d", path, i, len(r), len(header))
		}
	}
	return atomicfile.Write(path, func(w io.Writer) error {
		cw := csv.NewWriter(w)
		if err := cw.Write(header); err != nil {
			return err
		}
		if err := cw.WriteAll(rows); err != nil {
			return err
		}
		return cw.Error()
	})
}

// Float formats v for a CSV field: the shortest representation that reads
// back to the same float64 ("NaN", "+Inf" and "-Inf" for the special
// values).
func Float(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// Series is one line of a LinePlot.
type Series struct {
	// Label names the line in the legend.
	Label string
	// X and Y are the line's points, in order of X.
	X, Y []float64
	// Lo and Hi, when set (both as long as X), bound a shaded band around
	// the line, for example the minimum and maximum over seeds.
	Lo, Hi []float64
}

// LinePlot returns a plot of the series over a common x axis, each in its
// own color with a legend entry, and its band, if any, shaded beneath it.
// Points whose Y is NaN or infinite are left out of the line.
func LinePlot(title, xLabel, yLabel string, series []Series) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xLabel
	p.Y.Label.Text = yLabel
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	for i, s := range series {
		if len(s.Y) != len(s.X) {
			return nil, fmt.Errorf("expio: series %q has %d x and %d y values", s.Label, len(s.X), len(s.Y))
		}
		col := plotutil.Color(i)
		if s.Lo != nil || s.Hi != nil {
			if len(s.Lo) != len(s.X) || len(s.Hi) != len(s.X) {
				return nil, fmt.Errorf("expio: series %q has %d x values but a band of %d and %d", s.Label, len(s.X), len(s.Lo), len(s.Hi))
			}
			var ring plotter.XYs
			for j := range s.X {
				if finite(s.Lo[j]) {
					ring = append(ring, plotter.XY{X: s.X[j], Y: s.Lo[j]})
				}
			}
			for j := len(s.X) - 1; j >= 0; j-- {
				if finite(s.Hi[j]) {
					ring = append(ring, plotter.XY{X: s.X[j], Y: s.Hi[j]})
				}
			}
			if len(ring) >= 3 {
				band, err := plotter.NewPolygon(ring)
				if err != nil {
					return nil, err
				}
				r, g, b, _ := col.RGBA()
				band.Color = color.NRGBA{R: uint8(r >> 8), G: uint8(g >> 8), B: uint8(b >> 8), A: 45}
				band.LineStyle.Width = 0
				p.Add(band)
			}
		}
		var xy plotter.XYs
		for j := range s.X {
			if finite(s.X[j]) && finite(s.Y[j]) {
				xy = append(xy, plotter.XY{X: s.X[j], Y: s.Y[j]})
			}
		}
		if len(xy) == 0 {
			continue
		}
		line, points, err := plotter.NewLinePoints(xy)
		if err != nil {
			return nil, err
		}
		line.Color = col
		line.Width = vg.Points(1.5)
		line.Dashes = plotutil.Dashes(i)
		points.Color = col
		points.Shape = plotutil.Shape(i)
		points.Radius = vg.Points(2)
		p.Add(line, points)
		p.Legend.Add(s.Label, line, points)
	}
	return p, nil
}

// SavePlots draws the plots stacked vertically, each w × h, and writes
// them as base+".png" (144 dpi) and base+".svg", atomically.
func SavePlots(base string, w, h vg.Length, plots ...*plot.Plot) error {
	if len(plots) == 0 {
		return fmt.Errorf("expio: no plots to write to %s", base)
	}
	grid := make([][]*plot.Plot, len(plots))
	for i, p := range plots {
		grid[i] = []*plot.Plot{p}
	}
	tiles := draw.Tiles{Rows: len(plots), Cols: 1, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2,
		PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2, PadY: vg.Millimeter * 4}
	_, err := saveFigure(base, w, h*vg.Length(len(plots)), 144, png.DefaultCompression, func(dc draw.Canvas) {
		canvases := plot.Align(grid, tiles, dc)
		for i, p := range plots {
			p.Draw(canvases[i][0])
		}
	})
	return err
}

// SaveFigure draws a w × h figure with paint, once for each format, and
// writes it as base+".png" (120 dpi, compressed for speed rather than
// size) and base+".svg", each atomically. It returns the two paths
// written, the PNG first. paint draws on a canvas of the whole figure;
// use draw.Crop to lay out several parts (a plot and its legend, say).
func SaveFigure(base string, w, h vg.Length, paint func(draw.Canvas)) ([]string, error) {
	return saveFigure(base, w, h, 120, png.BestSpeed, paint)
}

// saveFigure is SaveFigure with the PNG's resolution and compression.
func saveFigure(base string, w, h vg.Length, dpi int, level png.CompressionLevel, paint func(draw.Canvas)) ([]string, error) {
	files := make([]string, 0, 2)
	for _, format := range []string{"png", "svg"} {
		var wt io.WriterTo
		if format == "png" {
			c := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(dpi), vgimg.UseBackgroundColor(color.White))
			paint(draw.New(c))
			wt = pngWriter{img: c.Image(), level: level}
		} else {
			c := vgsvg.New(w, h)
			paint(draw.New(c))
			wt = c
		}
		path := base + "." + format
		if err := atomicfile.Write(path, func(out io.Writer) error {
			_, err := wt.WriteTo(out)
			return err
		}); err != nil {
			return nil, err
		}
		files = append(files, path)
	}
	return files, nil
}

// pngWriter encodes an image as PNG at the given compression level.
type pngWriter struct {
	img   image.Image
	level png.CompressionLevel
}

// WriteTo implements io.WriterTo.
func (p pngWriter) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	err := (&png.Encoder{CompressionLevel: p.level}).Encode(cw, p.img)
	return cw.n, err
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n int64
}

// Write implements io.Writer.
func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}
