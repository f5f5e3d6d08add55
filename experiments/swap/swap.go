// Package swap runs the parameter-swap experiment of the ExPLAIND paper on
// the modulo-addition transformer (the grokking model): which parts of the
// final model carry what it learned late in training?
//
// For every sampled step s (0, Every, 2·Every, …, and the final step N)
// the final model θ_N is taken, and every parameter outside a kept set of
// groups (see Groups and KeptSet) is replaced by its value at θ_s, the
// state before step s. Each swapped model is compared on the validation
// set with
//
//   - the step's own model θ_s: AccDiff = acc(swapped) − acc(θ_s), what
//     the kept final parameters add to the step's model;
//   - the final model: KL = mean over validation samples of
//     KL(p_N ‖ p_swapped) = Σ_c p_N(c)·(log p_N(c) − log p_swapped(c)),
//     computed in float64 from the models' float32 log-probabilities.
//
// At s = N every swapped model is the final model (AccDiff = acc(θ_N) −
// acc(θ_N) = 0, KL = 0), which the tests check bit for bit.
//
// The states are recomputed by replaying the run (history.Replay) and
// checked against its recorded hashes; the swapped models are evaluated on
// a second model of the same configuration, so replay never sees them.
package swap

import (
	"github.com/explaind/explaind/setting"

	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/explaind/explaind/data"
	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
	"github.com/explaind/explaind/train"
	"gonum.org/v1/plot/vg"
)

// Command is the experiment's name in errors and outputs.
const Command = "swap"

// The files Write puts into the output directory.
const (
	SummaryFile = "summary.json"
	CSVFile     = "swap.csv"
	FigureBase  = "swap" // swap.png and swap.svg
)

// Options configure the experiment.
type Options struct {
	// Run is the modulo training run and Out the output directory (Do
	// only: Run and Write take them as arguments); Software is recorded
	// in the summary Do writes.
	Run, Out, Software string
	// Every is the stride of the sampled steps (the paper's 10).
	Every int
	// Kept lists the kept sets (DefaultKeptSets when empty).
	Kept []KeptSet
	// EvalChunk bounds the samples per forward pass (0: all at once).
	EvalChunk int
	// Progress, if set, is called after each sampled step with the number
	// done and the total.
	Progress func(done, total int)
}

// Check validates the options, naming the first bad value's field (a
// *setting.Error), and fills in the default kept sets.
func (o *Options) Check() error {
	if o.Every < 1 {
		return fmt.Errorf("%s: %w", Command, setting.Invalid("Every", o.Every, "want a stride of at least 1 step"))
	}
	if o.EvalChunk < 0 {
		return fmt.Errorf("%s: %w", Command, setting.Invalid("EvalChunk", o.EvalChunk, "want ≥ 0 (0: all samples at once)"))
	}
	if len(o.Kept) == 0 {
		o.Kept = DefaultKeptSets()
	}
	seen := map[string]bool{}
	for _, k := range o.Kept {
		if seen[k.Name] {
			return fmt.Errorf("%s: %w", Command, setting.Invalid("Kept", nil, "%q named twice", k.Name))
		}
		seen[k.Name] = true
	}
	return nil
}

// Row is the comparison of one swapped model.
type Row struct {
	// Step is s: the swapped-in parameters are those before step s.
	Step int `json:"step"`
	// Kept names the kept set.
	Kept string `json:"kept"`
	// SwappedAcc and StepAcc are the validation accuracies of the swapped
	// model and of θ_s; AccDiff is SwappedAcc − StepAcc.
	SwappedAcc float64 `json:"swapped_acc"`
	StepAcc    float64 `json:"step_acc"`
	AccDiff    float64 `json:"acc_diff"`
	// KL is the mean over validation samples of KL(final ‖ swapped), in nats.
	KL float64 `json:"kl"`
}

// Result is the outcome of Run.
type Result struct {
	// FinalStep is N; FinalAcc the final model's validation accuracy.
	FinalStep int     `json:"final_step"`
	FinalAcc  float64 `json:"final_val_acc"`
	// Steps lists the sampled steps; Rows holds one row per (step, kept
	// set) done, in order of step, then kept set.
	Steps []int `json:"steps"`
	Rows  []Row `json:"-"`
	// Kept lists the kept sets compared (the defaults filled in).
	Kept []KeptSet `json:"kept_sets"`
	// Complete is false when Run was interrupted before the last step.
	Complete bool `json:"complete"`
}

// Steps returns the sampled steps of a run of n steps: 0, every, 2·every,
// … up to n, and n itself.
func Steps(n, every int) []int {
	var out []int
	for s := 0; s <= n; s += every {
		out = append(out, s)
	}
	if out[len(out)-1] != n {
		out = append(out, n)
	}
	return out
}

// Swapped returns the parameters of the swapped model: final's for every
// parameter the kept set keeps, step's for the others. The result shares
// the arrays of final and step; both must list the same parameters.
func Swapped(final, step []*nn.Param[float32], kept KeptSet) ([]*nn.Param[float32], error) {
	if len(final) != len(step) {
		return nil, fmt.Errorf("the final model has %d parameters, the step's %d", len(final), len(step))
	}
	out := make([]*nn.Param[float32], len(final))
	for i, f := range final {
		if step[i].Name != f.Name {
			return nil, fmt.Errorf("parameter %d is %s in the final model, %s in the step's", i, f.Name, step[i].Name)
		}
		keep, err := kept.Keeps(f.Name)
		if err != nil {
			return nil, err
		}
		if keep {
			out[i] = f
		} else {
			out[i] = step[i]
		}
	}
	return out, nil
}

// LogProbs returns the model's log-probabilities [N, C] on the dataset, in
// chunks of at most chunk samples (0: all at once).
func LogProbs(model nn.Layer[float32], d data.Dataset[float32], chunk int) (*tensor.Dense[float32], error) {
	n := d.Len()
	if n == 0 {
		return nil, fmt.Errorf("no samples to evaluate")
	}
	if chunk <= 0 {
		chunk = n
	}
	per := len(d.Inputs.Data) / n
	var out *tensor.Dense[float32]
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		x := &tensor.Dense[float32]{Shape: append([]int{hi - lo}, d.Inputs.Shape[1:]...), Data: d.Inputs.Data[lo*per : hi*per]}
		logp, _, err := model.Forward(x)
		if err != nil {
			return nil, err
		}
		if out == nil {
			out = tensor.New[float32](n, logp.Shape[1])
		}
		copy(out.Data[lo*logp.Shape[1]:], logp.Data)
	}
	return out, nil
}

// Accuracy returns the fraction of rows of logp [N, C] whose largest entry
// is at the label.
func Accuracy(logp *tensor.Dense[float32], labels []int) float64 {
	return nn.Accuracy(logp, labels)
}

// MeanKL returns the mean over rows of KL(p ‖ q) = Σ_c p_c (log p_c −
// log q_c) for log-probabilities logp and logq of equal shape [N, C],
// computed in float64. Identical inputs give exactly 0.
func MeanKL(logp, logq *tensor.Dense[float32]) (float64, error) {
	if len(logp.Shape) != 2 || !slices.Equal(logp.Shape, logq.Shape) {
		return 0, fmt.Errorf("KL of log-probabilities of shapes %v and %v", logp.Shape, logq.Shape)
	}
	n, c := logp.Shape[0], logp.Shape[1]
	var sum float64
	for i := range n {
		var kl float64
		for j := range c {
			lp, lq := float64(logp.Data[i*c+j]), float64(logq.Data[i*c+j])
			if p := math.Exp(lp); p > 0 {
				kl += p * (lp - lq)
			}
		}
		sum += kl
	}
	return sum / float64(n), nil
}

// evaluator evaluates parameter sets on the validation data with a model
// of its own, so the replaying session is never touched.
type evaluator struct {
	model *models.Modulo[float32]
	val   data.Dataset[float32]
	chunk int
}

func (e *evaluator) logProbs(ps []*nn.Param[float32]) (*tensor.Dense[float32], error) {
	if err := expio.LoadParams(e.model.Params(), ps); err != nil {
		return nil, err
	}
	return LogProbs(e.model, e.val, e.chunk)
}

// Run performs the experiment on an opened modulo run. When ctx is
// cancelled it stops after the current step and returns what it has
// (Complete false) with ctx's error.
func Run(ctx context.Context, run *expio.Run, opt Options) (*Result, error) {
	if err := opt.Check(); err != nil {
		return nil, err
	}
	if _, err := run.Modulo(Command); err != nil {
		return nil, err
	}
	val := run.Data.Val
	if val.Len() == 0 {
		return nil, fmt.Errorf("%s: %w", Command, setting.Invalid("Run", run.Dir, "the run has no validation samples to compare on"))
	}
	m, err := train.BuildModel[float32](run.Config, run.Data)
	if err != nil {
		return nil, err
	}
	ev := &evaluator{model: m.(*models.Modulo[float32]), val: val, chunk: opt.EvalChunk}
	for _, k := range opt.Kept { // every kept set must name this model's parameters
		if _, err := Swapped(run.Session.Params(), run.Session.Params(), k); err != nil {
			return nil, fmt.Errorf("%s: %w", Command, err)
		}
	}

	n := run.Steps()
	res := &Result{FinalStep: n, Steps: Steps(n, opt.Every), Kept: opt.Kept}
	final, err := run.State(n)
	if err != nil {
		return nil, err
	}
	finalLogp, err := ev.logProbs(final)
	if err != nil {
		return nil, err
	}
	res.FinalAcc = Accuracy(finalLogp, val.Labels)
	for i, s := range res.Steps {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		state, err := run.State(s)
		if err != nil {
			return nil, err
		}
		own, err := ev.logProbs(state)
		if err != nil {
			return nil, err
		}
		stepAcc := Accuracy(own, val.Labels)
		for _, k := range opt.Kept {
			ps, err := Swapped(final, state, k)
			if err != nil {
				return nil, err
			}
			logp, err := ev.logProbs(ps)
			if err != nil {
				return nil, err
			}
			kl, err := MeanKL(finalLogp, logp)
			if err != nil {
				return nil, err
			}
			acc := Accuracy(logp, val.Labels)
			res.Rows = append(res.Rows, Row{Step: s, Kept: k.Name, SwappedAcc: acc, StepAcc: stepAcc, AccDiff: acc - stepAcc, KL: kl})
		}
		if opt.Progress != nil {
			opt.Progress(i+1, len(res.Steps))
		}
	}
	res.Complete = true
	return res, nil
}

// KeptSummary is the headline of one kept set over the sampled steps.
type KeptSummary struct {
	Kept   string   `json:"kept"`
	Groups []string `json:"groups"`
	// MeanAccDiff is the mean of AccDiff over the steps; MinAccDiff and
	// MaxAccDiff its extremes, at the steps given.
	MeanAccDiff float64 `json:"mean_acc_diff"`
	MinAccDiff  float64 `json:"min_acc_diff"`
	MinStep     int     `json:"min_acc_diff_step"`
	MaxAccDiff  float64 `json:"max_acc_diff"`
	MaxStep     int     `json:"max_acc_diff_step"`
	// MeanKL and MaxKL summarize the KL to the final model.
	MeanKL float64 `json:"mean_kl"`
	MaxKL  float64 `json:"max_kl"`
	// FirstStepBelow is the first sampled step from which the KL stays
	// below KLThreshold up to the final step (the final step's KL is 0);
	// -1 when the result is incomplete.
	FirstStepBelow int `json:"first_step_kl_below_threshold"`
}

// KLThreshold is the KL (nats) below which a swapped model counts as
// agreeing with the final model in KeptSummary.FirstStepBelow.
const KLThreshold = 0.01

// Summary is DIR/summary.json.
type Summary struct {
	Command        string `json:"command"`
	Run            string `json:"run"`
	RunFingerprint string `json:"run_fingerprint"`
	Software       string `json:"software"`
	Complete       bool   `json:"complete"`
	Settings       struct {
		Every     int       `json:"every"`
		Kept      []KeptSet `json:"kept_sets"`
		EvalChunk int       `json:"eval_chunk"`
		// Groups maps each group to the run's parameters in it.
		Groups map[string][]string `json:"groups"`
	} `json:"settings"`
	ValSamples int           `json:"val_samples"`
	FinalStep  int           `json:"final_step"`
	FinalAcc   float64       `json:"final_val_acc"`
	Steps      int           `json:"sampled_steps"`
	Headline   []KeptSummary `json:"headline"`
	Files      []string      `json:"files"`
	Definition string        `json:"definition"`
}

// Summarize returns the summary of a result.
func Summarize(run *expio.Run, opt Options, res *Result, software string) (*Summary, error) {
	s := &Summary{Command: Command, Run: run.Dir, RunFingerprint: run.Fingerprint, Software: software,
		Complete: res.Complete, ValSamples: run.Data.Val.Len(), FinalStep: res.FinalStep, FinalAcc: res.FinalAcc,
		Files: []string{SummaryFile, CSVFile, FigureBase + ".png", FigureBase + ".svg"},
		Definition: "for each sampled step s, the final model with every parameter outside the kept set replaced by its value before step s; " +
			"acc_diff = validation accuracy of that model minus that of the model before step s; kl = mean over validation samples of KL(final || swapped) in nats"}
	s.Settings.Every, s.Settings.Kept, s.Settings.EvalChunk = opt.Every, res.Kept, opt.EvalChunk
	s.Settings.Groups = map[string][]string{}
	for _, p := range run.Session.Params() {
		g, err := models.ModuloModules().Lookup(p.Name)
		if err != nil {
			return nil, err
		}
		s.Settings.Groups[g] = append(s.Settings.Groups[g], p.Name)
	}
	steps := map[int]bool{}
	for _, k := range res.Kept {
		h := KeptSummary{Kept: k.Name, Groups: k.Groups, MinAccDiff: math.Inf(1), MaxAccDiff: math.Inf(-1), FirstStepBelow: -1}
		var rows []Row
		for _, r := range res.Rows {
			if r.Kept == k.Name {
				rows = append(rows, r)
				steps[r.Step] = true
			}
		}
		if len(rows) == 0 {
			h.MinAccDiff, h.MaxAccDiff, h.MinStep, h.MaxStep = 0, 0, -1, -1
		}
		sort.Slice(rows, func(i, j int) bool { return rows[i].Step < rows[j].Step })
		for _, r := range rows {
			h.MeanAccDiff += r.AccDiff / float64(len(rows))
			h.MeanKL += r.KL / float64(len(rows))
			h.MaxKL = max(h.MaxKL, r.KL)
			if r.AccDiff < h.MinAccDiff {
				h.MinAccDiff, h.MinStep = r.AccDiff, r.Step
			}
			if r.AccDiff > h.MaxAccDiff {
				h.MaxAccDiff, h.MaxStep = r.AccDiff, r.Step
			}
		}
		if res.Complete { // the last row is the final step
			for i := len(rows) - 1; i >= 0 && rows[i].KL < KLThreshold; i-- {
				h.FirstStepBelow = rows[i].Step
			}
		}
		s.Headline = append(s.Headline, h)
	}
	s.Steps = len(steps)
	return s, nil
}

// Do runs `explaind swap`: it opens the modulo run opts.Run, compares the
// swapped models (Run) and writes the results into opts.Out, which it
// creates if missing (Write). When ctx is cancelled it writes the results
// so far and returns their summary (Complete false) with an error saying
// so.
func Do(ctx context.Context, opts Options) (*Summary, error) {
	r, l, err := expio.Start(Command, "modulo", opts.Run, opts.Out, opts.Check)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	res, runErr := Run(ctx, r, opts)
	if res == nil {
		return nil, runErr
	}
	sum, err := Summarize(r, opts, res, opts.Software)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", Command, setting.Invalid("Out", nil, "%w", err))
	}
	if err := write(opts.Out, res, sum); err != nil {
		return nil, err
	}
	if runErr != nil {
		return sum, expio.Interrupted(runErr, "%s: interrupted; the results so far are in %s (summary.json says \"complete\": false)", Command, opts.Out)
	}
	return sum, nil
}

// Write writes summary.json, swap.csv (one row per step and kept set) and
// the figure swap.png / swap.svg (accuracy difference and KL over steps,
// a line per kept set) into dir, which must exist. The summary is written
// last, so a directory with a summary.json has all the files it names.
func Write(dir string, run *expio.Run, opt Options, res *Result, software string) error {
	sum, err := Summarize(run, opt, res, software)
	if err != nil {
		return err
	}
	return write(dir, res, sum)
}

// write is Write with the summary made.
func write(dir string, res *Result, sum *Summary) error {
	rows := make([][]string, len(res.Rows))
	for i, r := range res.Rows {
		rows[i] = []string{fmt.Sprint(r.Step), r.Kept, expio.Float(r.SwappedAcc), expio.Float(r.StepAcc), expio.Float(r.AccDiff), expio.Float(r.KL)}
	}
	if err := expio.WriteCSV(filepath.Join(dir, CSVFile), []string{"step", "kept", "swapped_val_acc", "step_val_acc", "acc_diff", "kl_final_swapped"}, rows); err != nil {
		return err
	}
	var acc, kl []expio.Series
	for _, k := range res.Kept {
		a, b := expio.Series{Label: k.Name}, expio.Series{Label: k.Name}
		for _, r := range res.Rows {
			if r.Kept == k.Name {
				a.X, a.Y = append(a.X, float64(r.Step)), append(a.Y, r.AccDiff)
				b.X, b.Y = append(b.X, float64(r.Step)), append(b.Y, r.KL)
			}
		}
		acc, kl = append(acc, a), append(kl, b)
	}
	pa, err := expio.LinePlot("Swap: validation accuracy, swapped − step's own model", "step s (parameters outside the kept set from before step s)", "accuracy difference", acc)
	if err != nil {
		return err
	}
	pa.Legend.Top, pa.Legend.Left = false, true // early steps sit near 0: the lower left is free
	pk, err := expio.LinePlot("Swap: KL(final ‖ swapped), mean over validation samples", "step s", "KL (nats)", kl)
	if err != nil {
		return err
	}
	if err := expio.SavePlots(filepath.Join(dir, FigureBase), 20*vg.Centimeter, 11*vg.Centimeter, pa, pk); err != nil {
		return err
	}
	return expio.WriteJSON(filepath.Join(dir, SummaryFile), sum)
}
