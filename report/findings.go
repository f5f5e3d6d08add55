package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"strconv"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/experiments/components"
	"github.com/explaind/explaind/explain/job"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/train"
)

// findingsSection is the page's first section: the headline numbers of
// everything the report shows, each a link to its section. The training
// milestones (train.PhasesOf: memorized, validation rising, grokked), each
// EPK output's agreement with the model and its completeness residual
// against its tolerance, and the component table of a components
// experiment: the same-label against different-label similarity per
// layer group.
func findingsSection(run string, m *history.Manifest, ms []train.EpochMetrics, outs []*epkfile.Output, exps []*experiment) *section {
	s := &section{ID: "findings", Title: "Findings",
		Intro: "The headline numbers; the sections below hold the details and the figures."}
	rows := []field{{"steps recorded", strconv.Itoa(len(m.Steps))}}
	if n := len(ms); n > 0 {
		last := ms[n-1]
		rows = append(rows, field{"final accuracy", fmt.Sprintf("%s training, %s validation (step %d)", pct(last.TrainAcc), pct(last.ValAcc), last.Step)})
		target := 0.0
		if cfg, err := train.ManifestConfig(m); err == nil {
			target = cfg.StopAccuracy
		}
		ph := train.PhasesOf(ms, target)
		rows = append(rows,
			field{fmt.Sprintf("memorized (training accuracy ≥ %s)", pct(train.MemorizedAt)), milestone(ph.Memorized)},
			field{fmt.Sprintf("validation accuracy rising (≥ %s)", pct(train.RisingAt)), milestone(ph.Rising)},
			field{fmt.Sprintf("grokked (validation accuracy ≥ %s)", pct(train.AccuracyTarget(target))), milestone(ph.Grokked)})
	}
	s.Tables = append(s.Tables, &table{Title: "Training run " + run, Rows: rows})

	if len(outs) > 0 {
		t := &table{Title: "EPK outputs: agreement with the model and completeness"}
		for i, o := range outs {
			sum, err := job.ReadSummary(o.Dir)
			if err != nil {
				why := err.Error()
				if errors.Is(err, fs.ErrNotExist) {
					why = "the output has no summary.json; its section shows the statistics computed from its arrays"
				}
				t.Rows = append(t.Rows, field{fmt.Sprintf("EPK %d (%s)", i+1, o.Dir), why})
				continue
			}
			tol := "no tolerance: a fixed rule"
			if sum.Tol > 0 {
				tol = fmt.Sprintf("tol %.3g", sum.Tol)
			}
			t.Rows = append(t.Rows, field{fmt.Sprintf("EPK %d (%s)", i+1, o.Dir), fmt.Sprintf(
				"%d test samples, steps %d:%d, %s, %s: argmax agreement %s, max per-step completeness residual %.3g (%s), %s, %.1f nodes per sample and step",
				sum.TestSamples, sum.Steps[0], sum.Steps[1], sum.Precision, sum.Quadrature, pct(sum.ArgmaxAgreement),
				sum.MaxCompletenessResidual, tol, duration(sum.WallSeconds), sum.NodesPerSampleStep)})
			if sum.ArgmaxAgreement < 1 {
				s.Notes = append(s.Notes, fmt.Sprintf("EPK %d: the EPK prediction's argmax differs from the model's on %s of the test samples.", i+1, pct(1-sum.ArgmaxAgreement)))
			}
			if sum.Tol > 0 && !(sum.MaxCompletenessResidual <= sum.Tol) || math.IsNaN(sum.MaxCompletenessResidual) {
				s.Notes = append(s.Notes, fmt.Sprintf("EPK %d: the largest per-step completeness residual, %.3g, exceeds the tolerance %.3g.", i+1, sum.MaxCompletenessResidual, sum.Tol))
			}
		}
		s.Tables = append(s.Tables, t)
	}

	for i, e := range exps {
		var cs components.Summary
		if e.summary == nil || json.Unmarshal(e.summary, &cs) != nil || len(cs.Groups) == 0 {
			continue
		}
		t := &table{Title: fmt.Sprintf("Components (experiment %d, %s): %d samples", i+1, e.dir, cs.Samples),
			Note: "Cosine similarity of the samples' influence vectors per layer group: mean over same-label and different-label pairs, and the fraction of each sample's nearest samples that share its label (chance in brackets)."}
		for _, g := range cs.Groups {
			t.Rows = append(t.Rows, field{g.Name, fmt.Sprintf("same label %.3f, different label %.3f (difference %+.3f); %d nearest: %s share the label (chance %s)",
				g.SameLabel, g.DifferentLabel, g.SameMinusDiff, g.K, pct(g.NeighborLabelMatch), pct(g.ChanceLabelMatch))})
		}
		s.Tables = append(s.Tables, t)
	}
	return s
}

// pct formats a fraction as a percentage.
func pct(f float64) string { return strconv.FormatFloat(100*f, 'f', 2, 64) + " %" }

// milestone formats a step of train.Phases.
func milestone(step int) string {
	if step < 0 {
		return "not reached"
	}
	return "step " + strconv.Itoa(step)
}

// duration formats seconds of wall time.
func duration(sec float64) string {
	switch {
	case sec < 120:
		return fmt.Sprintf("%.1f s", sec)
	case sec < 7200:
		return fmt.Sprintf("%.1f min", sec/60)
	}
	return fmt.Sprintf("%.1f h", sec/3600)
}
