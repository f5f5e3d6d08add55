package lds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/setting"
	"github.com/explaind/explaind/shard"
)

// The files Do writes into the output directory (besides the
// attributions, AttributionDir/<method>_<target>.npy).
const (
	SummaryFile    = "summary.json"
	ProgressFile   = "progress.json"
	CSVFile        = "lds.csv"
	SubsetsFile    = "subsets.npy"
	SubsetsCSV     = "subsets.csv"
	RetrainCSV     = "retrainings.csv"
	FigureBase     = "lds"     // lds.png, lds.svg
	ScatterBase    = "scatter" // scatter.png, scatter.svg
	AttributionDir = "attributions"
)

// TargetsFile returns the file of a target's actual values [M, K, X].
func TargetsFile(target string) string { return "targets_" + target + ".npy" }

// AttributionFile returns the file of a method's attributions [X, N] for
// a target, relative to the output directory.
func AttributionFile(method, target string) string {
	return filepath.Join(AttributionDir, method+"_"+target+".npy")
}

// Key identifies the retrainings of a job: the run, by its fingerprint,
// and what each retraining depends on.
type Key struct {
	RunFingerprint string  `json:"run_fingerprint"`
	Subsets        int     `json:"subsets"`
	Fraction       float64 `json:"fraction"`
	Seeds          int     `json:"seeds"`
	SubsetSeed     uint64  `json:"subset_seed"`
	TestIndices    []int   `json:"test_indices"`
	// Shard is the shard ("i/n") whose retrainings a directory holds, ""
	// for the whole job.
	Shard string `json:"shard,omitempty"`
}

// Row is one retraining: subset j, seed k.
type Row struct {
	Subset int    `json:"subset"`
	Seed   uint64 `json:"seed"`
	Outcome
	// Seconds is the retraining's wall time.
	Seconds float64 `json:"seconds"`
}

// Progress is DIR/progress.json: the rows done so far, subset by subset,
// seeds 0 … K−1 within each.
type Progress struct {
	Command string `json:"command"`
	Run     string `json:"run"`
	EPK     string `json:"epk,omitempty"`
	Key
	// Scoring holds the job's settings of the scoring, which a merge of
	// its shards uses unless told otherwise.
	Scoring Scoring `json:"scoring"`
	Total   int     `json:"total"`
	Rows    []Row   `json:"rows"`
}

// Scoring is the settings of a job's scoring (not of its retrainings):
// whether it computes the EPK kernel, and the bootstrap interval's
// resamples and level.
type Scoring struct {
	ComputeEPK bool    `json:"compute_epk"`
	Bootstrap  int     `json:"bootstrap"`
	Confidence float64 `json:"confidence"`
}

// Job is an opened, checked experiment, ready to retrain: what Open
// returns.
type Job struct {
	Opt     Options
	Run     *expio.Run
	EPK     *epkfile.Output
	Key     Key
	Tests   *Tests
	Subsets [][]int
}

// Open checks the options, opens the run (and the EPK output) and draws
// the subsets, so that every mistake in the input is reported before any
// retraining: a fraction outside (0, 1), more subsets than exist, a test
// index out of range, an EPK output of another run or without the
// reference preset or of only some of the run's steps.
func Open(opt Options) (*Job, error) {
	if opt.Out == "" {
		return nil, setting.Errorf("%s: name the output directory (%v)", Command, setting.Name("Out"))
	}
	if err := opt.Check(); err != nil {
		return nil, err
	}
	run, err := expio.OpenRun(Command, opt.Run, "")
	if err != nil {
		return nil, err
	}
	j := &Job{Opt: opt, Run: run}
	val := run.Data.Val
	split := "validation"
	if run.Config.Task == "cnn" {
		split = "test"
	}
	var idx []int
	if opt.EPK != "" {
		if j.EPK, err = epkfile.Open(opt.EPK); err != nil {
			return nil, err
		}
		if err := j.EPK.CheckRun(run.Manifest); err != nil {
			return nil, fmt.Errorf("%s: %w", Command, err)
		}
		if err := j.EPK.Require(epkfile.Reference); err != nil {
			return nil, fmt.Errorf("%s: %w", Command, err)
		}
		if s := j.EPK.Manifest.Steps; s != [2]int{0, run.Steps()} {
			return nil, fmt.Errorf("%s: %w", Command, setting.Invalid("EPK", opt.EPK, "covers steps %d to %d; the LDS needs the kernel over the whole run, steps 0 to %d", s[0], s[1], run.Steps()))
		}
		all, err := j.EPK.Ints("test_indices")
		if err != nil {
			return nil, err
		}
		n := opt.TestSize
		if n == 0 {
			n = len(all)
		}
		if n > len(all) {
			return nil, fmt.Errorf("%s: %w", Command, setting.Invalid("TestSize", n, "the EPK output %s has %d test samples", opt.EPK, len(all)))
		}
		idx = all[:n]
	} else {
		n := opt.TestSize
		if n == 0 {
			n = min(DefaultTestSize, val.Len())
		}
		if n > val.Len() {
			return nil, fmt.Errorf("%s: %w", Command, setting.Invalid("TestSize", n, "the run's %s split has %d samples", split, val.Len()))
		}
		for i := range n {
			idx = append(idx, i)
		}
	}
	for _, i := range idx {
		if i < 0 || i >= val.Len() {
			return nil, fmt.Errorf("%s: test index %d is out of range: the run's %s split has %d samples", Command, i, split, val.Len())
		}
	}
	N := run.Data.Train.Len()
	k, err := SubsetSize(N, opt.Fraction)
	if err != nil {
		return nil, err
	}
	if b := run.Config.BatchSize; b > k {
		return nil, fmt.Errorf("%s: %w", Command, setting.Invalid("Fraction", opt.Fraction, "subsets of %d samples are smaller than the run's batch size %d", k, b))
	}
	if j.Subsets, err = Subsets(N, k, opt.Subsets, opt.SubsetSeed); err != nil {
		return nil, err
	}
	if err := run.Replay.Seek(run.Steps()); err != nil {
		return nil, err
	}
	if j.Tests, err = NewTests(run.Session.Model, val, idx); err != nil {
		return nil, err
	}
	if j.EPK != nil {
		labels, err := j.EPK.Ints("test_labels")
		if err != nil {
			return nil, err
		}
		for i, y := range j.Tests.Labels {
			if labels[i] != y {
				return nil, fmt.Errorf("%s: the EPK output %s gives test sample %d label %d, the run's data %d", Command, opt.EPK, idx[i], labels[i], y)
			}
		}
	}
	j.Key = Key{RunFingerprint: run.Fingerprint, Subsets: opt.Subsets, Fraction: opt.Fraction, Seeds: opt.Seeds,
		SubsetSeed: opt.SubsetSeed, TestIndices: idx, Shard: opt.Shard.String()}
	return j, nil
}

// Total returns the number of retrainings, M·K.
func (j *Job) Total() int { return len(j.Subsets) * j.Opt.Seeds }

// span returns the retrainings [lo, hi) of the plan (subset-major, seeds
// within) that this job does: all of them, or its shard's block.
func (j *Job) span() (lo, hi int, err error) {
	lo, hi, err = j.Opt.Shard.Range(j.Total())
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", Command, setting.Invalid("Shard", j.Opt.Shard, "%w", err))
	}
	return lo, hi, nil
}

// readProgress reads dir's progress file (nil, nil when there is none).
func readProgress(dir string) (*Progress, error) {
	b, err := expio.ReadOutput(dir, ProgressFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, setting.Errorf("%s: %v %s: %w", Command, setting.Name("Out"), dir, err)
	}
	var p Progress
	if err := json.Unmarshal(b, &p); err != nil || p.Command != Command {
		return nil, setting.Errorf("%s: %v %s: %s is not the progress of explaind %s; choose another %v, or delete it",
			Command, setting.Name("Out"), dir, filepath.Join(dir, ProgressFile), Command, setting.Name("Out"))
	}
	return &p, nil
}

// checkRows returns an error unless rows are the plan's retrainings from
// lo on, in order, and no more than hi − lo of them.
func (j *Job) checkRows(dir string, rows []Row, lo, hi int) error {
	if len(rows) > hi-lo {
		return setting.Errorf("%s: %v %s: %s holds %d rows, the job has %d; delete it to start over", Command, setting.Name("Out"), dir, ProgressFile, len(rows), hi-lo)
	}
	K := j.Opt.Seeds
	for i, r := range rows {
		if n := lo + i; r.Subset != n/K || r.Seed != uint64(n%K) {
			return setting.Errorf("%s: %v %s: row %d of %s is subset %d seed %d, not the job's; delete it to start over", Command, setting.Name("Out"), dir, i, ProgressFile, r.Subset, r.Seed)
		}
	}
	return nil
}

// resume returns the rows of this job that Out holds already.
func (j *Job) resume(lo, hi int) ([]Row, error) {
	dir := j.Opt.Out
	p, err := readProgress(dir)
	if p == nil || err != nil {
		return nil, err
	}
	had, want := fmt.Sprintf("%+v", p.Key), fmt.Sprintf("%+v", j.Key)
	if had != want {
		return nil, setting.Errorf("%s: %v %s holds the retrainings of another run or other settings (%s there, %s here): "+
			"rerun with its settings to resume, choose another %v, or delete %s to start over",
			Command, setting.Name("Out"), dir, had, want, setting.Name("Out"), dir)
	}
	if err := j.checkRows(dir, p.Rows, lo, hi); err != nil {
		return nil, err
	}
	return p.Rows, nil
}

// progress returns the progress file of rows.
func (j *Job) progress(rows []Row) Progress {
	return Progress{Command: Command, Run: j.Run.Dir, EPK: j.Opt.EPK, Key: j.Key, Total: j.Total(), Rows: rows,
		Scoring: Scoring{ComputeEPK: j.Opt.ComputeEPK, Bootstrap: j.Opt.Bootstrap, Confidence: j.Opt.Confidence}}
}

// Retrain does the retrainings of the job (or of its shard) not yet in
// Out, subset by subset, saving the progress file atomically after each,
// and returns every row. When ctx is cancelled it returns the rows done
// with ctx's error.
func (j *Job) Retrain(ctx context.Context) ([]Row, error) {
	lo, hi, err := j.span()
	if err != nil {
		return nil, err
	}
	rows, err := j.resume(lo, hi)
	if err != nil {
		return nil, err
	}
	reused := len(rows)
	if err := os.MkdirAll(j.Opt.Out, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", Command, setting.Invalid("Out", nil, "%w", err))
	}
	total := hi - lo
	if j.Opt.Log != nil && reused > 0 {
		fmt.Fprintf(j.Opt.Log, "%s: resuming: %d of %d retrainings already done (%s)\n", Command, reused, total, filepath.Join(j.Opt.Out, ProgressFile))
	}
	if j.Opt.Progress != nil && reused > 0 {
		j.Opt.Progress(reused, total)
	}
	for n := lo + len(rows); n < hi; n++ {
		sub, seed := n/j.Opt.Seeds, uint64(n%j.Opt.Seeds)
		t0 := time.Now()
		o, err := Retrain(ctx, RetrainJob{Config: j.Run.Config, Data: j.Run.Data, Subset: j.Subsets[sub], Seed: seed,
			Steps: j.Run.Steps(), Tests: j.Tests, EvalChunk: j.Opt.EvalChunk})
		if ctx.Err() != nil {
			return rows, ctx.Err()
		}
		if err != nil {
			return nil, err
		}
		rows = append(rows, Row{Subset: sub, Seed: seed, Outcome: o, Seconds: time.Since(t0).Seconds()})
		if err := expio.WriteJSON(filepath.Join(j.Opt.Out, ProgressFile), j.progress(rows)); err != nil {
			return nil, err
		}
		if j.Opt.Progress != nil {
			j.Opt.Progress(len(rows), total)
		}
	}
	return rows, nil
}

// Do runs `explaind lds`: it checks everything (Open), takes Out's lock,
// retrains (resuming what Out holds), computes the attributions and
// writes the scores. Rerun on a finished Out it rewrites nothing and
// returns the summary there, Reused set. When ctx is cancelled it returns
// an error saying how to resume; the retrainings done are kept in Out.
//
// With Options.Shard set it does only that shard's block of the
// retrainings and writes them (progress.json) with a summary.json that
// says which shard it holds and has no scores; Merge joins the shards'
// directories into the result of the whole job.
func Do(ctx context.Context, opt Options) (*Summary, error) {
	j, err := Open(opt)
	if err != nil {
		return nil, err
	}
	if _, _, err := j.span(); err != nil {
		return nil, err
	}
	l, err := expio.LockOut(Command, opt.Out)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	if s, err := ReadSummary(opt.Out); err == nil && s.Complete && fmt.Sprintf("%+v", s.Key) == fmt.Sprintf("%+v", j.Key) && s.EPK == opt.EPK &&
		(s.Shard != "" || s.scores(opt.EPK != "" || opt.ComputeEPK)) {
		s.Reused = true
		return s, nil
	}
	rows, err := j.Retrain(ctx)
	if err != nil {
		if ctx.Err() != nil {
			lo, hi, _ := j.span()
			return nil, expio.Interrupted(err, "%s: interrupted after %d of %d retrainings, kept in %s: rerun the same command to resume",
				Command, len(rows), hi-lo, filepath.Join(opt.Out, ProgressFile))
		}
		return nil, err
	}
	if !opt.Shard.IsZero() {
		s := j.shardSummary(rows)
		return s, expio.WriteJSON(filepath.Join(opt.Out, SummaryFile), s)
	}
	return j.finish(ctx, rows)
}

// shardSummary is the summary of a shard's retrainings.
func (j *Job) shardSummary(rows []Row) *Summary {
	s := &Summary{Command: Command, Run: j.Run.Dir, EPK: j.Opt.EPK, Software: j.Opt.Software, Complete: true, Key: j.Key,
		Files:      []string{SummaryFile, ProgressFile},
		Definition: "the retrainings of shard " + j.Opt.Shard.String() + " of the job (progress.json); merge the shards' directories for the scores"}
	s.Retrained.Count = len(rows)
	for _, r := range rows {
		s.WallSeconds.Retraining += r.Seconds
		if r.Diverged {
			s.Retrained.Diverged++
		}
	}
	return s
}

// finish computes the attributions and scores of the job's rows and
// writes every output into Out (held).
func (j *Job) finish(ctx context.Context, rows []Row) (*Summary, error) {
	t0 := time.Now()
	attrs, err := j.Attributions(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, expio.Interrupted(err, "%s: interrupted while computing the attributions; the retrainings are kept in %s: rerun the same command to finish",
				Command, filepath.Join(j.Opt.Out, ProgressFile))
		}
		return nil, err
	}
	s := j.Score(rows, attrs)
	s.Settings.TracInCheckpoints = j.tracinCheckpoints()
	s.WallSeconds.Scoring = time.Since(t0).Seconds()
	if err := j.Write(rows, attrs, s); err != nil {
		return nil, err
	}
	return s, nil
}

// Merge joins the directories of the shards 0/n … n−1/n of one job
// (each finished: `explaind lds --shard i/n`) into out, which then holds
// what the unsharded job writes: the retrainings of every shard in order
// (progress.json), the attributions and the scores. The job's settings
// come from the shards (they must agree); opt supplies Out, Software,
// EvalChunk and Progress, and may override the settings of the scoring
// the shards record (ComputeEPK if set, Bootstrap and Confidence if not
// zero). Every shard is checked before out is touched.
func Merge(ctx context.Context, opt Options, shards []string) (*Summary, error) {
	if len(shards) == 0 {
		return nil, setting.Errorf("%s: name the shards' directories to merge", Command)
	}
	var rows []Row
	var first *Progress
	seen := make([]bool, len(shards))
	type part struct {
		index int
		rows  []Row
	}
	parts := make([]part, 0, len(shards))
	for _, dir := range shards {
		s, err := ReadSummary(dir)
		if err != nil {
			return nil, fmt.Errorf("%s: shard %s: %w", Command, dir, err)
		}
		sh, err := shard.Parse(s.Shard)
		if err != nil || sh.IsZero() || !s.Complete {
			return nil, fmt.Errorf("%s: %s holds no finished shard of explaind lds (shard %q, complete %v)", Command, dir, s.Shard, s.Complete)
		}
		if sh.Count != len(shards) {
			return nil, fmt.Errorf("%s: %s holds shard %s, but %d shards are given; give all %d", Command, dir, sh, len(shards), sh.Count)
		}
		if seen[sh.Index] {
			return nil, fmt.Errorf("%s: shard %s is given twice (%s)", Command, sh, dir)
		}
		seen[sh.Index] = true
		p, err := readProgress(dir)
		if err != nil {
			return nil, err
		}
		if p == nil {
			return nil, fmt.Errorf("%s: shard %s has no %s", Command, dir, ProgressFile)
		}
		if first == nil {
			first = p
		}
		a, b := p.Key, first.Key
		a.Shard, b.Shard = "", ""
		if fmt.Sprintf("%+v", a) != fmt.Sprintf("%+v", b) || p.Run != first.Run || p.EPK != first.EPK || p.Scoring != first.Scoring {
			return nil, fmt.Errorf("%s: the shards %s and %s are of different jobs (%+v, run %s, EPK %q, scoring %+v; and %+v, run %s, EPK %q, scoring %+v)",
				Command, shards[0], dir, b, first.Run, first.EPK, first.Scoring, a, p.Run, p.EPK, p.Scoring)
		}
		parts = append(parts, part{sh.Index, p.Rows})
	}
	slices.SortFunc(parts, func(a, b part) int { return a.index - b.index })
	for _, p := range parts {
		rows = append(rows, p.rows...)
	}
	k := first.Key
	opt.ComputeEPK = opt.ComputeEPK || first.Scoring.ComputeEPK
	if opt.Bootstrap == 0 {
		opt.Bootstrap = first.Scoring.Bootstrap
	}
	if opt.Confidence == 0 {
		opt.Confidence = first.Scoring.Confidence
	}
	opt.Run, opt.EPK, opt.Subsets, opt.Fraction, opt.Seeds, opt.SubsetSeed = first.Run, first.EPK, k.Subsets, k.Fraction, k.Seeds, k.SubsetSeed
	opt.TestSize, opt.Shard = len(k.TestIndices), shard.Shard{}
	j, err := Open(opt)
	if err != nil {
		return nil, err
	}
	if fmt.Sprintf("%+v", j.Key.TestIndices) != fmt.Sprintf("%+v", k.TestIndices) || j.Key.RunFingerprint != k.RunFingerprint {
		return nil, fmt.Errorf("%s: the shards' run or test samples are no longer those of %s", Command, first.Run)
	}
	if len(rows) != j.Total() {
		return nil, fmt.Errorf("%s: the shards hold %d retrainings, the job has %d: a shard is unfinished", Command, len(rows), j.Total())
	}
	if err := j.checkRows(shards[0], rows, 0, j.Total()); err != nil {
		return nil, err
	}
	l, err := expio.LockOut(Command, opt.Out)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	if err := expio.WriteJSON(filepath.Join(opt.Out, ProgressFile), j.progress(rows)); err != nil {
		return nil, err
	}
	return j.finish(ctx, rows)
}
