package retrain

import (
	"github.com/explaind/explaind/setting"
	"github.com/explaind/explaind/shard"

	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"

	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/train"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"
)

// The files Write puts into the output directory.
const (
	SummaryFile = "summary.json"
	CSVFile     = "retrain.csv"
	FigureBase  = "retrain" // retrain.png and retrain.svg
)

// Options configure the experiment.
type Options struct {
	// Run is the modulo training run (Do only: Run takes it as an
	// argument); Software is recorded in the summary Do writes.
	Run, Software string
	// Parts lists the parts to re-initialize (all of Parts when empty).
	Parts []string
	// Stride is the distance between sampled checkpoint steps (the
	// paper's 100); MaxCheckpoints bounds their number (0: all).
	Stride         int
	MaxCheckpoints int
	// MaxEpochs bounds each retraining (the paper's 500).
	MaxEpochs int
	// Target is the accuracy (a fraction) training and validation
	// accuracy must both reach (0: 1, the paper's 100%; see
	// train.AccuracyTarget).
	Target float64
	// Seeds is the number of re-initialization seeds, 0..Seeds−1.
	Seeds int
	// EvalChunk bounds the samples per forward pass (0: all at once).
	EvalChunk int
	// Progress, if set, is called after each retraining with the number
	// done (those resumed from Out included) and the total.
	Progress func(done, total int)
	// Out is the output directory (required by Do). When it is set, Run
	// creates it if missing, resumes from the rows its ProgressFile holds
	// of the same job (Resume: another run's or other settings' result
	// there is an error) and rewrites that file after every retraining, so
	// that an interrupted job, even one killed, loses at most the
	// retraining in progress.
	Out string
	// Log, if set, receives a line saying how many rows Run resumed.
	Log io.Writer
	// Shard, if set, restricts the job to one shard of its retrainings
	// for a cluster's job array (ShardRows says which): Out then holds a
	// shard output, which records the shard (ShardRecord) and resumes
	// like a whole job's, and Merge joins the outputs of all shards into
	// the output of the whole job. The zero Shard is the whole job.
	Shard shard.Shard
}

// Check validates the options, naming the first bad value's field (a
// *setting.Error), and fills in the default parts.
func (o *Options) Check() error {
	o.Target = train.AccuracyTarget(o.Target)
	if len(o.Parts) == 0 {
		o.Parts = Parts()
	}
	seen := map[string]bool{}
	for _, p := range o.Parts {
		if _, err := PartGroups(p); err != nil {
			return fmt.Errorf("%s: %w", Command, setting.Invalid("Parts", nil, "%w", err))
		}
		if seen[p] {
			return fmt.Errorf("%s: %w", Command, setting.Invalid("Parts", nil, "%q named twice", p))
		}
		seen[p] = true
	}
	switch {
	case o.Stride < 1:
		return fmt.Errorf("%s: %w", Command, setting.Invalid("Stride", o.Stride, "want at least 1 step"))
	case o.MaxCheckpoints < 0:
		return fmt.Errorf("%s: %w", Command, setting.Invalid("MaxCheckpoints", o.MaxCheckpoints, "want ≥ 0 (0: all)"))
	case !(o.Target > 0 && o.Target <= 1): // NaN too
		return fmt.Errorf("%s: %w", Command, setting.Invalid("Target", o.Target, "want an accuracy in (0, 1]"))
	case o.MaxEpochs < 1:
		return fmt.Errorf("%s: %w", Command, setting.Invalid("MaxEpochs", o.MaxEpochs, "want ≥ 1"))
	case o.Seeds < 1:
		return fmt.Errorf("%s: %w", Command, setting.Invalid("Seeds", o.Seeds, "want ≥ 1"))
	case o.EvalChunk < 0:
		return fmt.Errorf("%s: %w", Command, setting.Invalid("EvalChunk", o.EvalChunk, "want ≥ 0 (0: all samples at once)"))
	}
	if err := o.Shard.Check(); err != nil {
		return fmt.Errorf("%s: %w", Command, setting.Invalid("Shard", o.Shard.String(), "%w", err))
	}
	return nil
}

// Row is one retraining.
type Row struct {
	// Checkpoint is the step s whose state was loaded.
	Checkpoint int    `json:"checkpoint"`
	Part       string `json:"part"`
	Seed       uint64 `json:"seed"`
	Outcome
}

// Result is the outcome of Run.
type Result struct {
	// Checkpoints lists the sampled checkpoint steps, from the end.
	Checkpoints []int `json:"checkpoints"`
	// Parts lists the parts re-initialized (the defaults filled in).
	Parts []string `json:"parts"`
	// Rows holds one row per retraining done, by checkpoint (from the
	// end), part, then seed.
	Rows []Row `json:"-"`
	// Complete is false when Run was interrupted.
	Complete bool `json:"complete"`
	// Reused is the number of leading rows loaded from Options.Out
	// instead of retrained.
	Reused int `json:"-"`
	// Shard says which retrainings of the job a shard's result holds
	// (Options.Shard); nil for the whole job.
	Shard *ShardRecord `json:"-"`
}

// todo returns the retrainings of res's job that res is to hold: the
// whole Plan, or the shard's rows of it.
func (res *Result) todo(seeds int) []Row {
	plan := Plan(res.Checkpoints, res.Parts, seeds)
	if res.Shard == nil {
		return plan
	}
	out := make([]Row, len(res.Shard.Rows))
	for i, k := range res.Shard.Rows {
		out[i] = plan[k]
	}
	return out
}

// Run performs the experiment on an opened modulo run, in the order of
// Plan (only the retrainings of Options.Shard, if set). With Options.Out set it first resumes the rows done there (see
// Options.Out), and saves its progress there after every retraining. When
// ctx is cancelled it stops after the current epoch, drops the unfinished
// retraining and returns what it has (Complete false) with ctx's error.
// Each row depends on its checkpoint, part, seed and the options in Key
// only, so a resumed job's rows are those of an uninterrupted one.
func Run(ctx context.Context, run *expio.Run, opt Options) (*Result, error) {
	if err := opt.Check(); err != nil {
		return nil, err
	}
	if _, err := run.Modulo(Command); err != nil {
		return nil, err
	}
	if run.Data.Val.Len() == 0 {
		return nil, fmt.Errorf("%s: %w", Command, setting.Invalid("Run", run.Dir, "the run has no validation samples"))
	}
	res := &Result{Checkpoints: Checkpoints(run.Steps(), opt.Stride, opt.MaxCheckpoints), Parts: opt.Parts}
	total := len(res.Checkpoints) * len(res.Parts) * opt.Seeds
	rows, err := ShardRows(total, opt.Shard)
	if err != nil {
		return nil, fmt.Errorf("%s: the job has %d retrainings (%d checkpoints × %d parts × %d seeds): %w",
			Command, total, len(res.Checkpoints), len(res.Parts), opt.Seeds, err)
	}
	res.Shard = shardRecord(opt.Shard, total, rows)
	plan := res.todo(opt.Seeds)
	if opt.Out != "" {
		done, err := Resume(opt.Out, run, opt)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(opt.Out, 0o755); err != nil {
			return nil, fmt.Errorf("%s: %w", Command, setting.Invalid("Out", nil, "%w", err))
		}
		res.Rows, res.Reused = slices.Clone(done), len(done)
		if res.Shard != nil && len(done) == 0 {
			// A shard output says what it is from the start: Merge and
			// IsShard recognize a shard whose task has not finished a
			// retraining yet.
			if err := SaveProgress(opt.Out, run, opt, res); err != nil {
				return nil, err
			}
		}
		if opt.Log != nil && len(done) > 0 {
			what := fmt.Sprintf("resuming: %d of %d retrainings already done", len(done), len(plan))
			if len(done) == len(plan) {
				what = fmt.Sprintf("all %d retrainings already done", len(plan))
			}
			if res.Shard != nil {
				what += " of shard " + res.Shard.Shard().String()
			}
			fmt.Fprintf(opt.Log, "%s: %s (%s)\n", Command, what, filepath.Join(opt.Out, ProgressFile))
		}
	}
	var state []*nn.Param[float32]
	stateAt := -1
	for _, id := range plan[len(res.Rows):] {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if stateAt != id.Checkpoint {
			var err error
			if state, err = run.State(id.Checkpoint); err != nil {
				return nil, err
			}
			stateAt = id.Checkpoint
		}
		o, err := Retrain(ctx, Job{Config: run.Config, Data: run.Data, State: state, Part: id.Part, Seed: id.Seed,
			MaxEpochs: opt.MaxEpochs, Target: opt.Target, EvalChunk: opt.EvalChunk})
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		if err != nil {
			return nil, err
		}
		id.Outcome = o
		res.Rows = append(res.Rows, id)
		res.Complete = len(res.Rows) == len(plan)
		if opt.Out != "" {
			if err := SaveProgress(opt.Out, run, opt, res); err != nil {
				return nil, err
			}
		}
		if opt.Progress != nil {
			opt.Progress(len(res.Rows), len(plan))
		}
	}
	res.Complete = true
	return res, nil
}

// Point summarizes the seeds of one checkpoint and part.
type Point struct {
	Checkpoint int    `json:"checkpoint"`
	Part       string `json:"part"`
	// Seeds is the number of seeds done; Reached how many of them got to
	// the target training and validation accuracy within MaxEpochs.
	Seeds   int `json:"seeds"`
	Reached int `json:"reached"`
	// Mean, Min and Max are over the seeds of the epochs until both
	// accuracies were 100%, a seed that never got there counted as
	// MaxEpochs (so Mean is then a lower bound); accuracies at the target.
	Mean float64 `json:"mean_epochs"`
	Min  int     `json:"min_epochs"`
	Max  int     `json:"max_epochs"`
	// MeanTrain is the same for training accuracy alone.
	MeanTrain float64 `json:"mean_train_epochs"`
	// FinalTrainAcc and FinalValAcc are the mean over the seeds of the
	// accuracies when each retraining stopped (at the target, or after
	// MaxEpochs): what the retrainings that never got there reached.
	FinalTrainAcc float64 `json:"final_train_acc"`
	FinalValAcc   float64 `json:"final_val_acc"`
}

// Points summarizes the rows per checkpoint and part, in order of
// checkpoint step (ascending), then part.
func Points(res *Result, maxEpochs int) []Point {
	type key struct {
		s    int
		part string
	}
	byKey := map[key][]Row{}
	for _, r := range res.Rows {
		k := key{r.Checkpoint, r.Part}
		byKey[k] = append(byKey[k], r)
	}
	capped := func(e int) int {
		if e < 0 {
			return maxEpochs
		}
		return e
	}
	var out []Point
	for k, rows := range byKey {
		p := Point{Checkpoint: k.s, Part: k.part, Seeds: len(rows), Min: math.MaxInt, Max: -1}
		for _, r := range rows {
			e := capped(r.Epochs)
			if r.Epochs >= 0 {
				p.Reached++
			}
			p.Mean += float64(e) / float64(len(rows))
			p.MeanTrain += float64(capped(r.TrainEpochs)) / float64(len(rows))
			p.FinalTrainAcc += r.TrainAcc / float64(len(rows))
			p.FinalValAcc += r.ValAcc / float64(len(rows))
			p.Min, p.Max = min(p.Min, e), max(p.Max, e)
		}
		out = append(out, p)
	}
	order := map[string]int{}
	for i, p := range res.Parts {
		order[p] = i
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Checkpoint != out[j].Checkpoint {
			return out[i].Checkpoint < out[j].Checkpoint
		}
		return order[out[i].Part] < order[out[j].Part]
	})
	return out
}

// PartSummary is the headline of one part over all checkpoints.
type PartSummary struct {
	Part   string   `json:"part"`
	Groups []string `json:"groups"`
	// Runs is the number of retrainings; Reached how many got to the
	// target training and validation accuracy within MaxEpochs.
	Runs    int `json:"runs"`
	Reached int `json:"reached"`
	// MeanEpochs is the mean over the retrainings that reached the target of
	// their epochs (0 when none did).
	MeanEpochs float64 `json:"mean_epochs_of_reached"`
	// LatestUnreached is the latest checkpoint step from which some seed
	// did not reach the target (−1 when every seed of every checkpoint did).
	LatestUnreached int `json:"latest_checkpoint_not_reached"`
}

// Summary is DIR/summary.json.
type Summary struct {
	Command        string `json:"command"`
	Run            string `json:"run"`
	RunFingerprint string `json:"run_fingerprint"`
	Software       string `json:"software"`
	Complete       bool   `json:"complete"`
	// Shard is set in the summary of a shard output (Options.Shard).
	Shard    *ShardRecord `json:"shard,omitempty"`
	Settings struct {
		// Settings holds the options the rows depend on (parts,
		// stride, max_checkpoints, max_epochs, target_accuracy, seeds).
		Settings
		EvalChunk int `json:"eval_chunk"`
		// PartParams maps each part to the run's parameters in it.
		PartParams map[string][]string `json:"part_params"`
		Optimizer  any                 `json:"optimizer"`
		Schedule   string              `json:"schedule"`
	} `json:"settings"`
	FinalStep   int           `json:"final_step"`
	Checkpoints []int         `json:"checkpoints"`
	Headline    []PartSummary `json:"headline"`
	Points      []Point       `json:"points"`
	Files       []string      `json:"files"`
	Definition  string        `json:"definition"`
	// Reused is set by Do when the output directory already held this
	// complete result, which it then left as it was.
	Reused bool `json:"-"`
}

// Summarize returns the summary of a result.
func Summarize(run *expio.Run, opt Options, res *Result, software string) (*Summary, error) {
	s := &Summary{Command: Command, Run: run.Dir, RunFingerprint: run.Fingerprint, Software: software,
		FinalStep: run.Steps(), Checkpoints: res.Checkpoints,
		Files: []string{SummaryFile, CSVFile, FigureBase + ".png", FigureBase + ".svg", ProgressFile},
		Definition: "for each checkpoint step s, part and seed: the part drawn afresh (PyTorch's default initialization, seeded), the rest loaded from the state before step s, " +
			"then trained full batch with the run's optimizer settings from a fresh optimizer state; epochs = the first epoch after which training and validation accuracy both reach target_accuracy " +
			"(0: already before training, -1: not within max_epochs)"}
	st := &s.Settings
	st.Parts, st.Stride, st.MaxCheckpoints, st.MaxEpochs, st.Seeds, st.EvalChunk = res.Parts, opt.Stride, opt.MaxCheckpoints, opt.MaxEpochs, opt.Seeds, opt.EvalChunk
	st.Target = opt.Target
	st.Optimizer, st.Schedule = run.Config.Optimizer, run.Config.Schedule
	st.PartParams = map[string][]string{}
	for _, part := range res.Parts {
		for _, p := range run.Session.Params() {
			in, err := InPart(part, p.Name)
			if err != nil {
				return nil, err
			}
			if in {
				st.PartParams[part] = append(st.PartParams[part], p.Name)
			}
		}
	}
	s.Shard = res.Shard
	if err := s.tally(res); err != nil {
		return nil, err
	}
	return s, nil
}

// tally sets the summary's Points and Headline, those of its rows, from
// res (its rows, parts and completeness) and the summary's settings.
func (s *Summary) tally(res *Result) error {
	s.Complete, s.Points, s.Headline = res.Complete, Points(res, s.Settings.MaxEpochs), nil
	for _, part := range res.Parts {
		groups, err := PartGroups(part)
		if err != nil {
			return err
		}
		h := PartSummary{Part: part, Groups: groups, LatestUnreached: -1}
		var sum float64
		for _, r := range res.Rows {
			if r.Part != part {
				continue
			}
			h.Runs++
			if r.Epochs >= 0 {
				h.Reached++
				sum += float64(r.Epochs)
			} else {
				h.LatestUnreached = max(h.LatestUnreached, r.Checkpoint)
			}
		}
		if h.Reached > 0 {
			h.MeanEpochs = sum / float64(h.Reached)
		}
		s.Headline = append(s.Headline, h)
	}
	return nil
}

// Do runs `explaind retrain`: it opens the modulo run opts.Run, retrains
// (Run, resuming from and saving its progress in opts.Out) and writes the
// results into opts.Out (Write). When opts.Out already holds the complete
// result of this job it rewrites nothing and returns that summary, with
// Reused set. When ctx is cancelled it writes the results so far and
// returns their summary (Complete false) with an error saying how to
// resume.
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
	if res.Complete && res.Reused == len(res.Rows) {
		if s, err := ReadSummary(opts.Out); err == nil && s.Complete && s.RunFingerprint == r.Fingerprint && sameShard(s.Shard, res.Shard) {
			s.Reused = true
			return s, nil
		}
	}
	sum, err := Summarize(r, opts, res, opts.Software)
	if err != nil {
		return nil, err
	}
	if err := write(opts.Out, progressOf(r, opts, res), res, sum); err != nil {
		return nil, err
	}
	if runErr != nil {
		total := len(res.todo(opts.Seeds))
		return sum, expio.Interrupted(runErr, "%s: interrupted after %d of %d retrainings; the results so far are in %s (summary.json says \"complete\": false): rerun the same command to resume",
			Command, len(res.Rows), total, opts.Out)
	}
	return sum, nil
}

// Write writes summary.json, retrain.csv (one row per checkpoint, part
// and seed) and the figure retrain.png / retrain.svg (epochs until the
// target accuracy over the checkpoint step, a line per part with the mean
// over seeds and a band from their minimum to their maximum) into dir,
// which must exist, and the rows with the job's key as ProgressFile (from
// which Resume continues the job when res is not complete). The summary is
// written last.
func Write(dir string, run *expio.Run, opt Options, res *Result, software string) error {
	sum, err := Summarize(run, opt, res, software)
	if err != nil {
		return err
	}
	return write(dir, progressOf(run, opt, res), res, sum)
}

// write is Write with the progress record and the summary made; the
// settings come from the summary. Merge writes the whole job's result
// with it too.
func write(dir string, prog *Progress, res *Result, sum *Summary) error {
	if err := saveProgress(dir, prog); err != nil {
		return err
	}
	opt := &sum.Settings
	header := []string{"checkpoint", "part", "seed", "epochs", "reached", "train_epochs", "val_epochs", "epochs_run",
		"init_train_acc", "init_val_acc", "train_acc", "val_acc", "diverged"}
	rows := make([][]string, len(res.Rows))
	for i, r := range res.Rows {
		rows[i] = []string{fmt.Sprint(r.Checkpoint), r.Part, fmt.Sprint(r.Seed), fmt.Sprint(r.Epochs), fmt.Sprint(r.Epochs >= 0),
			fmt.Sprint(r.TrainEpochs), fmt.Sprint(r.ValEpochs), fmt.Sprint(r.EpochsRun),
			expio.Float(r.InitTrainAcc), expio.Float(r.InitValAcc), expio.Float(r.TrainAcc), expio.Float(r.ValAcc), fmt.Sprint(r.Diverged)}
	}
	if err := expio.WriteCSV(filepath.Join(dir, CSVFile), header, rows); err != nil {
		return err
	}
	var both, acc []expio.Series
	for _, part := range res.Parts {
		se := expio.Series{Label: "re-initialized " + part}
		tr := expio.Series{Label: part + ": training"}
		va := expio.Series{Label: part + ": validation"}
		for _, p := range sum.Points {
			if p.Part == part {
				x := float64(p.Checkpoint)
				se.X = append(se.X, x)
				se.Y = append(se.Y, p.Mean)
				se.Lo = append(se.Lo, float64(p.Min))
				se.Hi = append(se.Hi, float64(p.Max))
				tr.X, tr.Y = append(tr.X, x), append(tr.Y, p.FinalTrainAcc)
				va.X, va.Y = append(va.X, x), append(va.Y, p.FinalValAcc)
			}
		}
		both = append(both, se)
		acc = append(acc, tr, va)
	}
	title := fmt.Sprintf("Retrain: epochs until %g%% training and validation accuracy (mean, min–max over %d seeds; not reached: drawn at %d)", 100*opt.Target, opt.Seeds, opt.MaxEpochs)
	p, err := expio.LinePlot(title, "checkpoint step (the rest of the model loaded from before this step)", "epochs", both)
	if err != nil {
		return err
	}
	p.Title.TextStyle.Font.Size = vg.Points(10)
	p.Y.Min = 0
	p.Y.Max = float64(opt.MaxEpochs) // readable when every point is 0, or every point is capped
	p.Y.Tick.Marker = plot.TickerFunc(func(lo, hi float64) []plot.Tick {
		ts := plot.DefaultTicks{}.Ticks(lo, hi)
		for i := range ts {
			if ts[i].Label != "" { // whole epochs, not "250.00"
				ts[i].Label = strconv.FormatFloat(ts[i].Value, 'g', -1, 64)
			}
		}
		return ts
	})
	pa, err := expio.LinePlot(fmt.Sprintf("Retrain: accuracy when the retraining stopped (at %g%% or after %d epochs; mean over seeds)", 100*opt.Target, opt.MaxEpochs),
		"checkpoint step (the rest of the model loaded from before this step)", "accuracy", acc)
	if err != nil {
		return err
	}
	pa.Title.TextStyle.Font.Size = vg.Points(10)
	pa.Y.Min, pa.Y.Max = 0, 1
	// The legend stands in the right-hand corner the latest checkpoints'
	// lines leave free: at the bottom when they end high.
	high := false
	for _, se := range acc {
		if n := len(se.Y); n > 0 && se.Y[n-1] > 0.5 {
			high = true
		}
	}
	pa.Legend.Top = !high
	if err := expio.SavePlots(filepath.Join(dir, FigureBase), 20*vg.Centimeter, 12*vg.Centimeter, p, pa); err != nil {
		return err
	}
	return expio.WriteJSON(filepath.Join(dir, SummaryFile), sum)
}
