package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/explaind/explaind/internal/localpath"
	"image/png"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// experiment is an experiment directory read in full: its summary.json
// and its PNG figures.
type experiment struct {
	dir        string
	summary    []byte // pretty-printed summary.json (nil if there is none)
	incomplete bool   // summary.json says "complete": false
	pngs       []expImage
}

// expImage is one PNG of an experiment directory.
type expImage struct {
	name string // file name
	data []byte
	svg  bool // a .svg of the same name lies beside it
}

// readExperiment reads an experiment directory (prune, components, swap,
// retrain outputs): its summary.json and every *.png in it. A directory
// with neither is an error.
func readExperiment(dir string) (*experiment, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("report: experiment directory: %w", err)
	}
	e := &experiment{dir: dir}
	raw, err := localpath.ReadFile(dir, "summary.json")
	switch {
	case err == nil:
		var b bytes.Buffer
		if err := json.Indent(&b, raw, "", "  "); err != nil {
			return nil, fmt.Errorf("report: %s/summary.json: %v", dir, err)
		}
		e.summary = b.Bytes()
		var c struct {
			Complete *bool `json:"complete"`
		}
		if json.Unmarshal(raw, &c) == nil && c.Complete != nil && !*c.Complete {
			e.incomplete = true
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("report: %w", err)
	}
	var names []string
	for _, en := range entries {
		if en.Type().IsRegular() {
			names = append(names, en.Name())
		}
	}
	slices.Sort(names)
	for _, n := range names {
		if !strings.EqualFold(filepath.Ext(n), ".png") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
		if _, err := png.DecodeConfig(bytes.NewReader(data)); err != nil {
			return nil, fmt.Errorf("report: %s/%s is not a PNG image: %v", dir, n, err)
		}
		svg := strings.TrimSuffix(n, filepath.Ext(n)) + ".svg"
		e.pngs = append(e.pngs, expImage{name: n, data: data, svg: slices.Contains(names, svg)})
	}
	if e.summary == nil && len(e.pngs) == 0 {
		return nil, fmt.Errorf("report: %s is not an experiment output: it has no summary.json and no PNG figure", dir)
	}
	return e, nil
}

// expFigureFile is the name under which the report copies the PNG name
// of experiment n (from 1) into its figures folder.
func expFigureFile(n int, name string) string { return fmt.Sprintf("exp%d_%s", n, name) }

// experimentSection shows an experiment directory: its summary.json
// pretty-printed and each of its PNG figures. n numbers the experiment
// (from 1) in the page.
func experimentSection(n int, e *experiment) *section {
	s := &section{ID: fmt.Sprintf("exp%d", n), Title: "Experiment " + e.dir}
	if e.summary != nil {
		s.Pre = append(s.Pre, preBlock{Title: "Summary (summary.json)", Text: string(e.summary)})
	} else {
		s.Notes = append(s.Notes, "This directory has no summary.json.")
	}
	if e.incomplete {
		s.Notes = append(s.Notes, "This experiment has not finished (its summary.json says \"complete\": false); it shows the results so far.")
	}
	if len(e.pngs) == 0 {
		s.Notes = append(s.Notes, "This directory has no PNG figure.")
	}
	for i, im := range e.pngs {
		caption := fmt.Sprintf("%s from %s.", im.name, e.dir)
		if im.svg {
			caption += " An SVG version lies beside it."
		}
		s.Figures = append(s.Figures, &pageFigure{ID: fmt.Sprintf("%s_fig%d", s.ID, i+1), Title: im.name, Caption: caption, Src: dataURL(im.data)})
	}
	return s
}
