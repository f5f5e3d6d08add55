package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"time"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/experiments/components"
	"github.com/explaind/explaind/experiments/swap"
	"github.com/explaind/explaind/explain/job"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/lock"
	"github.com/explaind/explaind/internal/progress"
	"github.com/explaind/explaind/report"
	"github.com/explaind/explaind/train"
	"github.com/spf13/cobra"
)

// demoPlan is what the demo computes: the training run, the default number
// of validation samples the EPK explains, its presets and the stride of
// the swap experiment.
type demoPlan struct {
	Train     train.Config
	TestSize  int
	Presets   []string
	SwapEvery int
	// Weights are the stages' shares of the demo's time (training, EPK,
	// components, swap, report), for the progress bar over the whole:
	// their wall times measured here.
	Weights [5]float64
}

// demoPresets are the EPK presets the demo computes: the report's
// validation and grokking figures and the components experiment's input.
// The paper's scale adds the history preset, the components experiment's
// similarities over training.
var demoPresets = []string{epkfile.Validation, epkfile.Grokking, epkfile.Components}

// demoDefaults returns the demo's plan. It is a variable so that the tests
// can run the whole pipeline on a tiny model.
//
// The run is a smaller modulo task than the paper's: p = 59 with 1400 of
// the 1770 unordered pairs for training (79%, the paper trains on 62% of
// p = 113's pairs) and the other 370 for validation, the paper's model and
// AdamW settings, stopped once training and validation accuracy both reach
// 99% (at most 3000 epochs). Measured here with seed 0: training reaches
// 100% at step 750 with 32% validation accuracy and the run groks, reaching
// 99% at step 979; seed 1 groks at step 1600. With 62% of the pairs p = 59
// and p = 97 had not generalized after 2300 and 1300 steps, and the paper's
// p = 113 run needs 1680 steps of 4000 samples, four times the demo's work
// per step. The swap experiment samples every 10th step, as in the paper.
var demoDefaults = func() demoPlan {
	c := train.ModuloDefaults()
	c.Modulo.P, c.Modulo.TrainSize, c.Modulo.ValSize = 59, 1400, 370
	c.Epochs = 3000
	c.StopAccuracy = 0.99
	// Weights: make demo on this machine, idle (README): 30, 65, 2, 19 and
	// 0.4 s.
	return demoPlan{Train: c, TestSize: 32, Presets: demoPresets, SwapEvery: 10, Weights: [5]float64{30, 65, 2, 19, 0.4}}
}

// paperPlan returns the demo's plan at the paper's scale (demo --paper):
// the run of `explaind train modulo` with its defaults (p = 113, 4000
// training and 2000 validation pairs) trained until it groks, training and
// validation accuracy both at 99 % (at 100 %, the default, a run here that
// grokked at step ~1700 hovered at 99.3–99.6 % until its 4000th epoch),
// the EPK of all 2000 validation samples over every step with the Gram
// snapshots of the history preset (every 50th step), and the swap
// experiment on every 10th step.
func paperPlan() demoPlan {
	c := train.ModuloDefaults()
	c.StopAccuracy = 0.99
	// Weights: training 243 s, EPK 3426 s, components 146 s, swap 110 s,
	// report 9 s, measured here (README).
	return demoPlan{Train: c, TestSize: c.Modulo.ValSize, Presets: append(slices.Clone(demoPresets), epkfile.History), SwapEvery: 10,
		Weights: [5]float64{243, 3426, 146, 110, 9}}
}

func newDemoCmd() *cobra.Command {
	plan := demoDefaults()
	var out string
	var quiet, paper bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "End-to-end demo: train a modulo model until it groks, explain it with the EPK, run the experiments, write the report",
		Long: `The end-to-end demo on a built-in default, in five stages, every output
under --out DIR:

  1. DIR/run             train the paper's modulo-addition transformer on
                         a smaller task (p = 59, 1400 training and 370
                         validation pairs) until it groks (99% training
                         and validation accuracy), recording its history
  2. DIR/epk             the exact path kernel over the whole training path
                         on --test-size validation samples, 8 of each of
                         the first labels in the split (so that samples of
                         the same label can be compared), with the presets
                         validation, grokking and components; every step
                         is replayed and checked against its recorded
                         parameter hash
  3. DIR/components      similarity of those samples by their per-layer EPK
                         component embeddings
  4. DIR/swap            the parameter-swap experiment on steps 0, N, 2N, …
                         (N = --swap-every) and the final step
  5. DIR/report.html     the HTML report of all of it (figures in
                         DIR/report_figures, summary in DIR/report.json)

With --paper, the same stages run at the paper's scale: the run of
'explaind train modulo' with its defaults (p = 113, 4000 training and 2000
validation pairs) until it groks (99% training and validation accuracy,
as 'explaind train modulo --stop-accuracy 0.99') and the EPK
of all 2000 validation samples over every step; see the README for the
time and memory this takes.

Rerunning the demo on the same DIR reuses the stages that finished and
resumes an interrupted training run or EPK job (Ctrl-C stops after the
current step and saves the state).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if paper {
				// The paper's scale, but the flags given explicitly win.
				p := paperPlan()
				f := cmd.Flags()
				if !f.Changed("test-size") {
					plan.TestSize = p.TestSize
				}
				if !f.Changed("swap-every") {
					plan.SwapEvery = p.SwapEvery
				}
				plan.Train, plan.Presets, plan.Weights = p.Train, p.Presets, p.Weights
				if !f.Changed("out") {
					out = "out/paper"
				}
			}
			if plan.TestSize < 2 {
				return fmt.Errorf("invalid --test-size %d: the components stage compares at least 2 samples", plan.TestSize)
			}
			if plan.SwapEvery < 1 {
				return fmt.Errorf("invalid --swap-every %d: want a positive stride", plan.SwapEvery)
			}
			ctx, cancel := interruptible(cmd)
			defer cancel()
			return runDemo(ctx, cmd, out, plan, quiet)
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "out/demo", "directory for the demo's outputs")
	f.IntVar(&plan.TestSize, "test-size", plan.TestSize, "validation samples the EPK explains (8 per label, in split order)")
	f.IntVar(&plan.SwapEvery, "swap-every", plan.SwapEvery, "stride of the swap experiment's steps")
	f.BoolVar(&quiet, "quiet", false, "no progress bar")
	f.BoolVar(&paper, "paper", false, "the paper's whole modulo analysis instead: the p = 113 run until it groks and the EPK of all 2000 validation samples (default --out out/paper)")
	return cmd
}

// demoStage is one line of the demo's closing table.
type demoStage struct {
	name, out string
	reused    bool
	wall      time.Duration
}

func runDemo(ctx context.Context, cmd *cobra.Command, out string, plan demoPlan, quiet bool) error {
	w := cmd.OutOrStdout()
	start := time.Now()
	fmt.Fprintln(w, buildInfo())
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("demo: --out: %w", err)
	}
	l, err := lock.Dir(out)
	if err != nil {
		return fmt.Errorf("demo: --out: %w", err)
	}
	defer l.Release()
	dirs := struct{ run, epk, comp, swap, report string }{
		filepath.Join(out, "run"), filepath.Join(out, "epk"), filepath.Join(out, "components"),
		filepath.Join(out, "swap"), filepath.Join(out, "report.html"),
	}
	// The test samples follow from the configuration alone: a --test-size
	// the split cannot serve is refused before any work.
	idx, err := demoTestIndices(plan.Train, plan.TestSize, demoPerLabel)
	if err != nil {
		return err
	}
	// One progress bar over the whole demo, each stage moving it across its
	// share (plan.Weights).
	bar := progress.NewStages(progressTo(cmd, quiet), "demo", plan.Weights[:])
	// Whatever the stages print clears the bar first (on a terminal).
	cmd.SetOut(bar.Writer(cmd.OutOrStdout()))
	cmd.SetErr(bar.Writer(cmd.ErrOrStderr()))
	w = cmd.OutOrStdout()
	var stages []demoStage
	stage := func(i int, name, dir, what string) func(reused bool) {
		fmt.Fprintf(w, "%d/5 %s, into %s\n", i, what, dir)
		t := time.Now()
		return func(reused bool) {
			d := time.Since(t)
			stages = append(stages, demoStage{name, dir, reused, d})
			if reused {
				fmt.Fprintf(w, "    reused the finished output (%.1f s)\n", d.Seconds())
			} else {
				fmt.Fprintf(w, "    done in %.1f s\n", d.Seconds())
			}
			bar.Done(i - 1)
		}
	}

	// 1. Training.
	p := plan.Train.Modulo.P
	done := stage(1, "train", dirs.run, fmt.Sprintf("training the modulo transformer (p = %d) until it groks (%g%% training and validation accuracy)", p, 100*train.AccuracyTarget(plan.Train.StopAccuracy)))
	s, reused, err := demoTrain(ctx, cmd, dirs.run, plan.Train, bar.Stage(0, "training steps"))
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "    %d steps, training accuracy %.2f%%, validation accuracy %.2f%% (%s)\n", s.Steps, 100*s.TrainAcc, 100*s.ValAcc, s.StopReason)
	done(reused)
	m, err := history.ReadManifest(dirs.run)
	if err != nil {
		return err
	}
	fp := epkfile.RunFingerprint(m)

	// 2. The EPK.
	which := fmt.Sprintf("%d validation samples, %d per label", plan.TestSize, demoPerLabel)
	if plan.TestSize == plan.Train.Modulo.ValSize {
		which = fmt.Sprintf("all %d validation samples", plan.TestSize)
	}
	done = stage(2, "epk", dirs.epk, fmt.Sprintf("the exact path kernel over all %d steps on %s (presets %v)", s.Steps, which, plan.Presets))
	es, reused, err := demoEPK(ctx, cmd, dirs.run, dirs.epk, m, idx, plan.Presets, bar.Stage(1, "EPK steps"))
	if err != nil {
		return err
	}
	if !reused {
		fmt.Fprintf(w, "    every step of the pass matched its recorded parameter hash\n")
	}
	fmt.Fprintf(w, "    validation: argmax agreement %.4f (EPK accuracy %.4f, model %.4f), max |EPK − model| %.3g, max completeness residual %.3g, %.1f quadrature nodes per sample and step\n",
		es.ArgmaxAgreement, es.Accuracy, es.ModelAccuracy, es.MaxAbsDelta, es.MaxCompletenessResidual, es.NodesPerSampleStep)
	done(reused)

	// 3. Components.
	done = stage(3, "components", dirs.comp, "similarity of the samples by their per-layer EPK component embeddings")
	cs, reused, err := demoComponents(ctx, cmd, dirs.run, dirs.epk, dirs.comp, fp, es.TestSamples, bar.Stage(2, "components"))
	if err != nil {
		return err
	}
	for _, g := range cs.Groups {
		if g.Name == components.GroupAll {
			fmt.Fprintf(w, "    whole model: mean cosine similarity %.3f for the same label, %.3f for different labels (%d same-label pairs); %.0f%% of the %d nearest neighbours share the label (chance %.0f%%)\n",
				g.SameLabel, g.DifferentLabel, g.SameLabelPairs, 100*g.NeighborLabelMatch, g.K, 100*g.ChanceLabelMatch)
		}
	}
	fmt.Fprintf(w, "    %d layer groups, %d files\n", len(cs.Groups), len(cs.Files))
	done(reused)

	// 4. Swap.
	done = stage(4, "swap", dirs.swap, fmt.Sprintf("the parameter-swap experiment on steps 0, %d, %d, … and the final step", plan.SwapEvery, 2*plan.SwapEvery))
	ss, reused, err := demoSwap(ctx, cmd, dirs.run, dirs.swap, fp, plan.SwapEvery, bar.Stage(3, "swap steps"))
	if err != nil {
		return err
	}
	for _, h := range ss.Headline {
		first := "never"
		if h.FirstStepBelow >= 0 {
			first = fmt.Sprintf("from step %d", h.FirstStepBelow)
		}
		fmt.Fprintf(w, "    keep %-26s mean accuracy gain %+.3f, KL to the final model below %g %s\n", h.Kept, h.MeanAccDiff, swap.KLThreshold, first)
	}
	fmt.Fprintf(w, "    %d sampled steps of %d\n", ss.Steps, ss.FinalStep)
	done(reused)

	// 5. The report, always rebuilt: it is quick and shows what is there now.
	done = stage(5, "report", dirs.report, "the HTML report")
	rs, err := report.Build(report.Options{Run: dirs.run, EPK: []string{dirs.epk}, Experiments: []string{dirs.comp, dirs.swap}, Out: dirs.report})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "    %.1f MB, %d figures (PNG and SVG in %s)\n", float64(rs.Bytes)/1e6, rs.Figures, rs.FiguresDir)
	for _, sec := range rs.Sections {
		for _, n := range sec.Notes {
			fmt.Fprintf(w, "    note (%s %s): %s\n", sec.Kind, sec.Dir, n)
		}
	}
	done(false)

	fmt.Fprintf(w, "done in %.0f s:\n", time.Since(start).Seconds())
	for _, st := range stages {
		how := fmt.Sprintf("%6.1f s", st.wall.Seconds())
		if st.reused {
			how = "   reused"
		}
		fmt.Fprintf(w, "  %-10s %s  %s\n", st.name, how, st.out)
	}
	fmt.Fprintf(w, "open the report: %s\n", rs.Report)
	return nil
}

// demoTrain trains the run, continues an interrupted one, or returns the
// summary of a finished one (reused true).
func demoTrain(ctx context.Context, cmd *cobra.Command, dir string, cfg train.Config, prog func(done, total int)) (*train.Summary, bool, error) {
	opt := trainOptions(cmd, true, true)
	opt.Steps = prog
	m, err := history.ReadManifest(dir)
	if err != nil {
		// No run yet (or a directory that is not one, which the demo owns).
		return checkTrained(train.Train[float32](ctx, dir, cfg, opt))
	}
	if !sameConfig(m, cfg) {
		return nil, false, fmt.Errorf("demo: %s holds a run of another configuration; remove it or choose another --out", dir)
	}
	if m.Done {
		var s train.Summary
		if err := readJSON(filepath.Join(dir, train.SummaryFile), &s); err == nil && s.Done {
			return &s, true, nil
		}
		// Training closed the manifest but stopped before its summary.
		s = train.Summary{Task: cfg.Task, Done: true, StopReason: m.StopReason, Steps: len(m.Steps)}
		if ms, err := train.ReadMetrics(dir); err == nil && len(ms) > 0 {
			e := ms[len(ms)-1]
			s.Epochs, s.TrainLoss, s.TrainAcc, s.ValLoss, s.ValAcc = e.Epoch+1, e.TrainLoss, e.TrainAcc, e.ValLoss, e.ValAcc
		}
		return &s, true, nil
	}
	fmt.Fprintf(cmd.OutOrStdout(), "    continuing the interrupted run after %d steps\n", len(m.Steps))
	opt.Overwrite = false
	return checkTrained(train.Resume[float32](ctx, dir, opt))
}

func checkTrained(s *train.Summary, err error) (*train.Summary, bool, error) {
	if err != nil {
		return nil, false, err
	}
	if !s.Done {
		return nil, false, fmt.Errorf("the demo was interrupted during training (%s); rerun the demo with the same --out to continue", s.StopReason)
	}
	return s, false, nil
}

// sameConfig reports whether a run's recorded configuration is cfg.
func sameConfig(m *history.Manifest, cfg train.Config) bool {
	c, err := train.ManifestConfig(m)
	return err == nil && bytes.Equal(c.Marshal(), cfg.Marshal())
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// demoEPK runs the EPK job, resumes it, or returns the summary of a
// finished output of the same job (reused true).
func demoEPK(ctx context.Context, cmd *cobra.Command, run, dir string, m *history.Manifest, idx []int, presets []string, prog func(done, total int)) (*job.Summary, bool, error) {
	if o, err := epkfile.Open(dir); err == nil {
		om := o.Manifest
		if err := o.CheckRun(m); err != nil {
			return nil, false, fmt.Errorf("demo: %w; remove %s to recompute it", err, dir)
		}
		var missing []string
		for _, p := range presets {
			if !slices.Contains(om.Presets, p) {
				missing = append(missing, p)
			}
		}
		got, _ := o.Ints("test_indices")
		if !slices.Equal(got, idx) || om.Steps != [2]int{0, len(m.Steps)} || len(missing) > 0 {
			return nil, false, fmt.Errorf("demo: %s holds a finished EPK output of other settings (%d test samples, steps %d:%d, presets %v; this demo wants %d samples of the run's %d steps); rerun with --test-size %d, or remove it to recompute",
				dir, om.Test.Count, om.Steps[0], om.Steps[1], om.Presets, len(idx), len(m.Steps), om.Test.Count)
		}
		s, err := job.ReadSummary(dir)
		if err != nil {
			return nil, false, fmt.Errorf("demo: the finished EPK output %s has no readable summary.json (%v); remove it to recompute", dir, err)
		}
		return s, true, nil
	}
	// No finished output: job.Run starts the job, resumes an unfinished one
	// of the same settings, or refuses anything else in dir.
	o := job.Options{Run: run, Out: dir, Presets: presets, TestIndices: idx,
		Software: buildInfo(), CheckpointEvery: 2 * time.Minute, CheckpointCost: job.DefaultCheckpointCost, Log: cmd.ErrOrStderr()}
	o.Progress = prog
	// As explaind epk: the accumulators are long-lived and large, so the
	// collector runs sooner than Go's default to keep the peak near them;
	// afterwards their memory goes back to the system before the next
	// stage allocates its own (measured on the paper demo: RSS 4.9 GB at
	// the start of the components stage without it, 3.6 GB in the EPK).
	defer debug.FreeOSMemory()
	defer debug.SetGCPercent(debug.SetGCPercent(25))
	s, err := job.Run(ctx, o)
	if err != nil && ctx.Err() != nil {
		// job.Run reports a Ctrl-C during its pre-flight replay as a run
		// that does not replay.
		return nil, false, fmt.Errorf("demo: interrupted in the EPK stage; rerun the demo with the same --out to continue")
	}
	if err != nil {
		return nil, false, fmt.Errorf("demo: %w", err)
	}
	return s, false, nil
}

// demoPerLabel is the number of samples of each label the EPK explains,
// so that the components experiment compares samples of the same label.
const demoPerLabel = 8

// demoTestIndices returns n validation samples of the run configured by
// cfg, per of each label: in split order, the samples of the first
// ⌈n/per⌉ labels to appear that have at least per samples, per of each; if
// the split has too few, the first other samples make up the number. The
// indices are in split order.
func demoTestIndices(cfg train.Config, n, per int) ([]int, error) {
	d, err := train.LoadData[float32](&cfg)
	if err != nil {
		return nil, err
	}
	val := d.ModuloVal
	if n > val.Len() {
		return nil, fmt.Errorf("invalid --test-size %d: the validation split has %d samples", n, val.Len())
	}
	labels := (n + per - 1) / per
	total := map[int]int{}
	for _, pr := range val.Pairs {
		total[pr.Label]++
	}
	count := map[int]int{}
	picked := make([]bool, val.Len())
	k := 0
	for i, pr := range val.Pairs {
		if k == n {
			break
		}
		c, seen := count[pr.Label]
		if (seen || (len(count) < labels && total[pr.Label] >= per)) && c < per {
			count[pr.Label] = c + 1
			picked[i] = true
			k++
		}
	}
	for i := range picked {
		if k == n {
			break
		}
		if !picked[i] {
			picked[i] = true
			k++
		}
	}
	var idx []int
	for i, ok := range picked {
		if ok {
			idx = append(idx, i)
		}
	}
	return idx, nil
}

// upToDate reports whether the file at path was written no earlier than
// the file at input.
func upToDate(path, input string) bool {
	a, err := os.Stat(path)
	if err != nil {
		return false
	}
	b, err := os.Stat(input)
	return err == nil && !a.ModTime().Before(b.ModTime())
}

// demoComponents runs the components experiment, or returns the summary
// of its output when it is newer than the EPK output and made from it.
func demoComponents(ctx context.Context, cmd *cobra.Command, run, epk, dir, fp string, samples int, prog func(done, total int)) (*components.Summary, bool, error) {
	sum := filepath.Join(dir, "summary.json")
	var s components.Summary
	if upToDate(sum, filepath.Join(epk, "manifest.json")) && readJSON(sum, &s) == nil &&
		s.RunFingerprint == fp && s.Samples == samples && s.EPK == epk {
		return &s, true, nil
	}
	o := components.Options{Run: run, EPK: epk, Out: dir} // the default Top, HistK and Examples
	o.Progress = prog
	r, err := components.Do(ctx, o)
	if err != nil && ctx.Err() != nil {
		return nil, false, fmt.Errorf("demo: interrupted in the components stage; rerun the demo with the same --out to continue")
	}
	return r, false, err
}

// demoSwap runs the swap experiment, or returns the summary of a complete
// output of the same run and stride.
func demoSwap(ctx context.Context, cmd *cobra.Command, run, dir, fp string, every int, prog func(done, total int)) (*swap.Summary, bool, error) {
	var s swap.Summary
	if readJSON(filepath.Join(dir, swap.SummaryFile), &s) == nil && s.Complete && s.RunFingerprint == fp &&
		s.Settings.Every == every && slices.Equal(keptNames(s.Settings.Kept), swap.DefaultKeptSetNames()) {
		return &s, true, nil
	}
	opt := swap.Options{Run: run, Out: dir, Software: buildInfo(), Every: every, EvalChunk: 2048,
		Progress: prog}
	sum, err := swap.Do(ctx, opt)
	if sum != nil && err != nil {
		return nil, false, fmt.Errorf("demo: the swap experiment was interrupted; the results so far are in %s; rerun the demo with the same --out to redo it", dir)
	}
	return sum, false, err
}

func keptNames(ks []swap.KeptSet) []string {
	var names []string
	for _, k := range ks {
		names = append(names, k.Name)
	}
	return names
}
