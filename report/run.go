package report

import (
	"errors"
	"fmt"
	"github.com/explaind/explaind/internal/localpath"
	"io/fs"
	"strconv"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/train"
)

// runSection describes the run: its manifest, configuration, summary and
// training curves (from its metrics ms).
func runSection(dir string, m *history.Manifest, ms []train.EpochMetrics) (*section, []*Figure, error) {
	s := &section{ID: "run", Title: "Training run " + dir}
	info := []field{
		{"directory", dir},
		{"run fingerprint", epkfile.RunFingerprint(m)},
		{"created", m.Created},
		{"software", m.Software},
		{"steps recorded", strconv.Itoa(len(m.Steps))},
		{"done", strconv.FormatBool(m.Done)},
		{"stop reason", m.StopReason},
		{"dtype", m.Dtype},
		{"gemm backend", m.GemmBackend},
		{"threads", strconv.Itoa(m.Threads)},
		{"checkpoint every", strconv.Itoa(m.CheckpointEvery)},
		{"checkpoints", strconv.Itoa(len(m.Checkpoints))},
	}
	params := 0
	for _, p := range m.Params {
		n := 1
		for _, d := range p.Shape {
			n *= d
		}
		params += n
	}
	info = append(info, field{"parameters", fmt.Sprintf("%d in %d tensors", params, len(m.Params))})
	for _, role := range []string{"train", "val", "test"} {
		if d, ok := m.Datasets[role]; ok {
			info = append(info, field{"dataset " + role, fmt.Sprintf("%s: %d samples, %d classes, fingerprint %s", d.Name, d.Samples, d.Classes, d.Fingerprint)})
		}
	}
	s.Tables = append(s.Tables, &table{Title: "Run (manifest.json)", Rows: info})
	if len(m.Config) > 0 {
		cfg, err := flatFields(m.Config)
		if err != nil {
			return nil, nil, fmt.Errorf("report: %s/manifest.json config: %v", dir, err)
		}
		s.Tables = append(s.Tables, &table{Title: "Configuration", Rows: cfg})
	}
	raw, err := localpath.ReadFile(dir, train.SummaryFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.Notes = append(s.Notes, "The run has no summary.json (training has not finished).")
	case err != nil:
		return nil, nil, fmt.Errorf("report: %w", err)
	default:
		sum, err := flatFields(raw)
		if err != nil {
			return nil, nil, fmt.Errorf("report: %s/%s: %v", dir, train.SummaryFile, err)
		}
		s.Tables = append(s.Tables, &table{Title: "Summary (summary.json)", Rows: sum})
	}
	if len(ms) == 0 {
		s.Notes = append(s.Notes, "The run has no training metrics (metrics.jsonl is missing or empty).")
		return s, nil, nil
	}
	figs, err := runFigures(ms)
	return s, figs, err
}

// runFigures draws the training curves: loss, accuracy and, when it
// varies, the learning rate, all over steps.
func runFigures(ms []train.EpochMetrics) ([]*Figure, error) {
	n := len(ms)
	step := make([]float64, n)
	tl, vl, ta, va, lr := make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
	lrVaries := false
	for i, m := range ms {
		step[i] = float64(m.Step)
		tl[i], vl[i], ta[i], va[i], lr[i] = m.TrainLoss, m.ValLoss, m.TrainAcc, m.ValAcc, m.LR
		if m.LR != ms[0].LR {
			lrVaries = true
		}
	}
	trainName := "training"
	if ms[n-1].TrainEval == "batches" {
		trainName = "training (mean over the epoch's batches)"
	}
	loss, err := linePlot("Loss", "step", "mean NLL loss (log scale)", true, 0, []series{
		{name: trainName, x: step, y: tl, color: 0},
		{name: "validation", x: step, y: vl, color: 1},
	})
	figs, err := addChart(nil, loss, err, "run_loss", "Training and validation loss",
		"Mean NLL loss at the end of each epoch, over the number of optimizer steps done.", figHeight)
	if err != nil {
		return nil, err
	}
	acc, err := linePlot("Accuracy", "step", "accuracy", false, 0, []series{
		{name: trainName, x: step, y: ta, color: 0},
		{name: "validation", x: step, y: va, color: 1},
	})
	if acc != nil {
		acc.p.Y.Min, acc.p.Y.Max = 0, 1
	}
	figs, err = addChart(figs, acc, err, "run_accuracy", "Training and validation accuracy",
		"Accuracy at the end of each epoch, over the number of optimizer steps done. A late rise of the validation curve after training accuracy saturates is grokking.", figHeight)
	if err != nil {
		return nil, err
	}
	if lrVaries {
		p, err := linePlot("Learning rate", "step", "learning rate", false, 0, []series{{x: step, y: lr, color: 2}})
		return addChart(figs, p, err, "run_lr", "Learning rate", "The learning rate of the last step of each epoch.", figHeight*0.8)
	}
	return figs, nil
}
