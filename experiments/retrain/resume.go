package retrain

import (
	"github.com/explaind/explaind/setting"

	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/train"
)

// ProgressFile is the file of the output directory that holds the rows
// done so far (Progress). Run rewrites it, atomically, after every
// retraining when Options.Out is set, and Write with the final result.
const ProgressFile = "progress.json"

// Settings are the options a job's rows depend on: all of Options but
// Run, Software, EvalChunk, Progress, Out and Log (the seed fixes each retraining's
// random draws; how many samples a forward pass takes does not matter).
type Settings struct {
	Parts          []string `json:"parts"`
	Stride         int      `json:"stride"`
	MaxCheckpoints int      `json:"max_checkpoints"`
	MaxEpochs      int      `json:"max_epochs"`
	Target         float64  `json:"target_accuracy"`
	Seeds          int      `json:"seeds"`
}

// Key identifies the rows of a job: the run, by its fingerprint, the
// settings and, for a shard output, the shard.
type Key struct {
	RunFingerprint string `json:"run_fingerprint"`
	Settings
	Shard *ShardRecord `json:"shard,omitempty"`
}

// KeyOf returns the key of the job opt describes on run, with opt's
// defaults filled in (an empty Parts is every part, a Target of 0 is 1).
func KeyOf(run *expio.Run, opt Options) Key {
	k := Key{RunFingerprint: run.Fingerprint, Settings: Settings{Parts: opt.Parts, Stride: opt.Stride,
		MaxCheckpoints: opt.MaxCheckpoints, MaxEpochs: opt.MaxEpochs, Target: opt.Target, Seeds: opt.Seeds}}
	k = k.normalized()
	if !opt.Shard.IsZero() {
		total := len(Checkpoints(run.Steps(), opt.Stride, opt.MaxCheckpoints)) * len(k.Parts) * opt.Seeds
		rows, _ := ShardRows(total, opt.Shard) // Run refuses a shard without rows first
		k.Shard = shardRecord(opt.Shard, total, rows)
	}
	return k
}

func (k Key) normalized() Key {
	if len(k.Parts) == 0 {
		k.Parts = Parts()
	}
	k.Target = train.AccuracyTarget(k.Target)
	return k
}

// settingsDiff lists the options in which k (what a directory holds)
// differs from want (what is asked for), each as "FIELD THERE there, HERE
// here" with FIELD the Options field (a setting.Name), joined by "; ", as
// a format and its arguments; the run's fingerprint is not compared.
func (k Key) settingsDiff(want Key) (format string, args []any) {
	var d []string
	add := func(field string, there, here any) {
		if fmt.Sprint(there) != fmt.Sprint(here) {
			d = append(d, "%v %v there, %v here")
			args = append(args, setting.Name(field), there, here)
		}
	}
	add("Parts", strings.Join(k.Parts, ","), strings.Join(want.Parts, ","))
	add("Stride", k.Stride, want.Stride)
	add("MaxCheckpoints", k.MaxCheckpoints, want.MaxCheckpoints)
	add("MaxEpochs", k.MaxEpochs, want.MaxEpochs)
	if k.Target != want.Target { // compared as numbers, printed in full
		d = append(d, "%v %s there, %s here")
		args = append(args, setting.Name("Target"), expio.Float(k.Target), expio.Float(want.Target))
	}
	add("Seeds", k.Seeds, want.Seeds)
	if !sameShard(k.Shard, want.Shard) {
		d = append(d, "%v %s there, %s here")
		args = append(args, setting.Name("Shard"), shardName(k.Shard), shardName(want.Shard))
	}
	return strings.Join(d, "; "), args
}

// Progress is DIR/progress.json: the rows of one job done so far, in the
// order Run does them (Plan), and whether that is all of them.
type Progress struct {
	Command string `json:"command"`
	// Run is the run directory as it was given (the key names the run by
	// its fingerprint).
	Run string `json:"run"`
	Key
	// Checkpoints lists the sampled checkpoint steps; Total is the number
	// of retrainings of the job (of the whole job when Shard is set; Rows
	// then are the shard's, in Plan order, and Complete says that all of
	// the shard's are done).
	Checkpoints []int `json:"checkpoints"`
	Total       int   `json:"total"`
	Complete    bool  `json:"complete"`
	Rows        []Row `json:"rows"`
}

// Plan returns the retrainings of a job in the order Run does them, as
// rows without outcomes: by checkpoint (as given, from the end), part,
// then seed 0..seeds−1.
func Plan(checkpoints []int, parts []string, seeds int) []Row {
	out := make([]Row, 0, len(checkpoints)*len(parts)*max(seeds, 0))
	for _, s := range checkpoints {
		for _, part := range parts {
			for seed := range uint64(max(seeds, 0)) {
				out = append(out, Row{Checkpoint: s, Part: part, Seed: seed})
			}
		}
	}
	return out
}

// SaveProgress writes res as dir's ProgressFile, atomically: a reader, or
// a later Resume after a crash, sees the previous file or the new one.
func SaveProgress(dir string, run *expio.Run, opt Options, res *Result) error {
	return saveProgress(dir, progressOf(run, opt, res))
}

// progressOf returns the progress record of res, a result of the job opt
// describes on run.
func progressOf(run *expio.Run, opt Options, res *Result) *Progress {
	k := KeyOf(run, opt)
	k.Parts, k.Shard = res.Parts, res.Shard
	return &Progress{Command: Command, Run: run.Dir, Key: k, Checkpoints: res.Checkpoints,
		Total: len(res.Checkpoints) * len(res.Parts) * opt.Seeds, Complete: res.Complete, Rows: res.Rows}
}

func saveProgress(dir string, p *Progress) error {
	if p.Rows == nil {
		q := *p
		q.Rows = []Row{}
		p = &q
	}
	return expio.WriteJSON(filepath.Join(dir, ProgressFile), p)
}

// ReadSummary reads dir's SummaryFile. Its Settings.Optimizer holds the
// run's optimizer settings as they were written (a *json.RawMessage), so
// that the summary writes back to the same JSON.
func ReadSummary(dir string) (*Summary, error) {
	path := filepath.Join(dir, SummaryFile)
	b, err := expio.ReadOutput(dir, SummaryFile)
	if err != nil {
		return nil, err
	}
	var s Summary
	s.Settings.Optimizer = new(json.RawMessage)
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s is not a %s summary: %v", path, Command, err)
	}
	return &s, nil
}

// Resume returns the rows of the job opt describes on run that dir holds
// already (from its ProgressFile), checked to be the first rows of Plan
// (of the shard's rows of Plan, ShardRows, when Options.Shard is set);
// none when dir, or its ProgressFile, does not exist. When dir holds the
// result of another run or of other settings (in its ProgressFile or,
// lacking one, its SummaryFile) it returns an error that names the
// difference and the ways out: the same settings, another directory, or
// deleting this one. opt must be checked (Options.Check).
func Resume(dir string, run *expio.Run, opt Options) ([]Row, error) {
	want := KeyOf(run, opt)
	path := filepath.Join(dir, ProgressFile)
	b, err := expio.ReadOutput(dir, ProgressFile)
	if errors.Is(err, fs.ErrNotExist) {
		s, err := ReadSummary(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, setting.Errorf("%s: %v %s: %w; choose another %v, or delete %s", Command, outSetting, dir, err, outSetting, dir)
		}
		if s.Command != "" && s.Command != Command {
			return nil, setting.Errorf("%s: %v %s holds the results of explaind %s; choose another %v", Command, outSetting, dir, s.Command, outSetting)
		}
		had := Key{RunFingerprint: s.RunFingerprint, Settings: s.Settings.Settings, Shard: s.Shard}
		// Without a progress file (a result of an older explaind) nothing
		// can be reused, but the result is no less worth keeping.
		return nil, mismatch(dir, s.Run, had.normalized(), want, run.Dir)
	}
	if err != nil {
		return nil, setting.Errorf("%s: %v %s: %w", Command, outSetting, dir, err)
	}
	var p Progress
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, setting.Errorf("%s: %v %s: %s is unreadable (%v); delete it to start over", Command, outSetting, dir, path, err)
	}
	if p.Command != Command {
		return nil, setting.Errorf("%s: %v %s: %s is not the progress of explaind %s (command %q); choose another %v", Command, outSetting, dir, path, Command, p.Command, outSetting)
	}
	if err := mismatch(dir, p.Run, p.Key.normalized(), want, run.Dir); err != nil {
		return nil, err
	}
	plan := (&Result{Checkpoints: Checkpoints(run.Steps(), opt.Stride, opt.MaxCheckpoints), Parts: want.Parts, Shard: want.Shard}).todo(opt.Seeds)
	if len(p.Rows) > len(plan) {
		return nil, setting.Errorf("%s: %v %s: %s holds %d rows, the job has %d; delete it to start over", Command, outSetting, dir, path, len(p.Rows), len(plan))
	}
	for i, r := range p.Rows {
		if id := plan[i]; r.Checkpoint != id.Checkpoint || r.Part != id.Part || r.Seed != id.Seed {
			return nil, setting.Errorf("%s: %v %s: row %d of %s is checkpoint %d, part %s, seed %d; the job's is checkpoint %d, part %s, seed %d; delete it to start over",
				Command, outSetting, dir, i, path, r.Checkpoint, r.Part, r.Seed, id.Checkpoint, id.Part, id.Seed)
		}
	}
	return p.Rows, nil
}

// outSetting is the setting that names the results' directory.
const outSetting = setting.Name("Out")

// mismatch returns nil when had (found in dir, of the run in runDir) is
// want, else an error naming what differs and the ways out.
func mismatch(dir, hadRun string, had, want Key, wantRun string) error {
	if had.RunFingerprint != want.RunFingerprint {
		return setting.Errorf("%s: %v %s holds the %s result of another run (%s, fingerprint %s; %v %s is %s): choose another %v, or delete %s to start over",
			Command, outSetting, dir, Command, hadRun, had.RunFingerprint, setting.Name("Run"), wantRun, want.RunFingerprint, outSetting, dir)
	}
	if d, args := had.settingsDiff(want); d != "" {
		args = append(append([]any{Command, outSetting, dir, Command}, args...), outSetting, dir)
		return setting.Errorf("%s: %v %s holds a %s result of this run with other settings ("+d+"): "+
			"rerun with its settings to resume or keep it, choose another %v, or delete %s to start over", args...)
	}
	return nil
}
