package report

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/atomicfile"
	"github.com/explaind/explaind/internal/lock"
	"github.com/explaind/explaind/setting"
	"github.com/explaind/explaind/train"
)

// SummaryFormat identifies a report's summary file (Summary.Format).
const SummaryFormat = "explaind report 1"

// Options say what goes into a report and where it goes.
type Options struct {
	// Run is the training run directory.
	Run string
	// EPK lists `explaind epk` output directories of that run.
	EPK []string
	// Experiments lists experiment output directories (each with a
	// summary.json and PNG figures).
	Experiments []string
	// Out is the HTML file to write (FILE.html); its figures go to
	// FILE_figures/ and its summary to FILE.json.
	Out string
}

// Summary says what a report holds. It is written to FILE.json beside
// FILE.html, after the page and its figures.
type Summary struct {
	// Format is SummaryFormat.
	Format string `json:"format"`
	// Report is the HTML file, FiguresDir the folder of its figures and
	// Figures how many figures the report drew (each a PNG and an SVG).
	Report     string `json:"report"`
	FiguresDir string `json:"figures_dir"`
	Figures    int    `json:"figures"`
	// Bytes is the size of the HTML file.
	Bytes int64 `json:"bytes"`
	// Run and RunFingerprint identify the training run.
	Run            string `json:"run"`
	RunFingerprint string `json:"run_fingerprint"`
	// Sections lists the parts of the page in order.
	Sections    []SectionSummary `json:"sections"`
	Created     string           `json:"created"`
	WallSeconds float64          `json:"wall_seconds"`
}

// SectionSummary describes one part of the page.
type SectionSummary struct {
	// Kind is "run", "epk" or "experiment"; Dir the directory shown.
	Kind string `json:"kind"`
	Dir  string `json:"dir"`
	// Presets lists an EPK output's presets.
	Presets []string `json:"presets,omitempty"`
	// Tables names the tables shown.
	Tables []string `json:"tables"`
	// Figures lists the figures shown: for the run and EPK outputs the
	// names of the files in FiguresDir (without extension), for an
	// experiment its PNG files.
	Figures []string `json:"figures"`
	// Notes says what was left out and why.
	Notes []string `json:"notes,omitempty"`
}

// Paths returns the files a report written to out consists of: the page,
// its figures folder and its summary.
func Paths(out string) (html, figures, summary string) {
	stem := strings.TrimSuffix(out, filepath.Ext(out))
	return out, stem + "_figures", stem + ".json"
}

// Build reads the run, the EPK outputs and the experiment directories of
// opts, checks them all (an EPK output must explain this run) and then
// writes the report: the figures, the page and last the summary, each file
// atomically, holding the page's lock (internal/lock's File) throughout,
// so that a second report to the same --out is refused.
func Build(opts Options) (*Summary, error) {
	start := time.Now()
	if opts.Run == "" {
		return nil, fmt.Errorf("report: %w", setting.Invalid("Run", nil, "no run directory given"))
	}
	if opts.Out == "" || filepath.Ext(opts.Out) != ".html" {
		return nil, fmt.Errorf("report: %w", setting.Invalid("Out", strconv.Quote(opts.Out), "must name an .html file"))
	}
	htmlPath, figDir, sumPath := Paths(opts.Out)
	l, err := lock.File(htmlPath)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	defer l.Release()
	if err := checkOldSummary(sumPath); err != nil {
		return nil, err
	}
	m, err := history.ReadManifest(opts.Run)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	var outs []*epkfile.Output
	for _, dir := range opts.EPK {
		o, err := epkfile.Open(dir)
		if err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
		if err := o.CheckRun(m); err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
		outs = append(outs, o)
	}
	var exps []*experiment
	for _, dir := range opts.Experiments {
		e, err := readExperiment(dir)
		if err != nil {
			return nil, err
		}
		exps = append(exps, e)
	}

	sum := &Summary{Format: SummaryFormat, Report: htmlPath, FiguresDir: figDir, Run: opts.Run,
		RunFingerprint: epkfile.RunFingerprint(m), Created: start.UTC().Format(time.RFC3339)}
	pg := &page{Title: "ExPLAIND report: " + opts.Run, Created: sum.Created}
	var figs []*Figure
	// add appends a section with its figures to the page and the summary.
	add := func(kind, dir string, presets []string, s *section, fs []*Figure) {
		ss := SectionSummary{Kind: kind, Dir: dir, Presets: presets, Tables: []string{}, Figures: []string{}, Notes: s.Notes}
		for _, t := range s.Tables {
			ss.Tables = append(ss.Tables, t.Title)
		}
		for _, p := range s.Pre {
			ss.Tables = append(ss.Tables, p.Title)
		}
		rel := url.PathEscape(filepath.Base(figDir))
		for _, f := range fs {
			s.Figures = append(s.Figures, &pageFigure{ID: f.Name, Title: f.Title, Caption: f.Caption, Src: dataURL(f.PNG),
				PNGHref: rel + "/" + url.PathEscape(f.Name+".png"), SVGHref: rel + "/" + url.PathEscape(f.Name+".svg")})
			ss.Figures = append(ss.Figures, f.Name)
		}
		if kind == "experiment" {
			for _, f := range s.Figures {
				ss.Figures = append(ss.Figures, f.Title)
			}
		}
		pg.Sections = append(pg.Sections, s)
		sum.Sections = append(sum.Sections, ss)
		figs = append(figs, fs...)
	}

	ms, err := train.ReadMetrics(opts.Run)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	add("findings", "", nil, findingsSection(opts.Run, m, ms, outs, exps), nil)
	s, fs, err := runSection(opts.Run, m, ms)
	if err != nil {
		return nil, err
	}
	add("run", opts.Run, nil, s, fs)
	for i, o := range outs {
		s, fs, err := epkSection(i+1, o)
		if err != nil {
			return nil, err
		}
		add("epk", o.Dir, o.Manifest.Presets, s, fs)
	}
	var expSections []*section
	for i, e := range exps {
		es := experimentSection(i+1, e)
		expSections = append(expSections, es)
		add("experiment", e.dir, nil, es, nil)
	}

	if err := os.MkdirAll(figDir, 0o755); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	for _, f := range figs {
		if err := f.WriteFiles(figDir); err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
	}
	// The experiments' PNGs are copied beside the report's figures, so
	// that a click on a small figure opens it at full size.
	for i, e := range exps {
		for j, im := range e.pngs {
			name := expFigureFile(i+1, im.name)
			if err := atomicfile.WriteBytes(filepath.Join(figDir, name), im.data); err != nil {
				return nil, fmt.Errorf("report: %w", err)
			}
			expSections[i].Figures[j].PNGHref = url.PathEscape(filepath.Base(figDir)) + "/" + url.PathEscape(name)
		}
	}
	html, err := renderPage(pg)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if err := atomicfile.WriteBytes(htmlPath, html); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	sum.Figures = len(figs)
	sum.Bytes = int64(len(html))
	sum.WallSeconds = time.Since(start).Seconds()
	raw, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if err := atomicfile.WriteBytes(sumPath, append(raw, '\n')); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	return sum, nil
}

// checkOldSummary refuses to replace a file at the summary's path that is
// not a report summary (FILE.json might be someone's data).
func checkOldSummary(path string) error {
	raw, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	var s Summary
	if json.Unmarshal(raw, &s) != nil || s.Format != SummaryFormat {
		return setting.Errorf("report: %s exists and is not a report summary; choose another %v", path, setting.Name("Out"))
	}
	return nil
}
