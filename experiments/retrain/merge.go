package retrain

import (
	"github.com/explaind/explaind/setting"

	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/explaind/explaind/experiments/expio"
)

// readProgress reads dir's ProgressFile.
func readProgress(dir string) (*Progress, error) {
	b, err := expio.ReadOutput(dir, ProgressFile)
	if err != nil {
		return nil, err
	}
	var p Progress
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%s is unreadable: %v", filepath.Join(dir, ProgressFile), err)
	}
	return &p, nil
}

// IsShard reports whether dir holds the output of one shard of a retrain
// job (Options.Shard), finished or not: its progress file (written when
// the shard starts) or its summary records a shard.
func IsShard(dir string) bool {
	if p, err := readProgress(dir); err == nil {
		return p.Command == Command && p.Shard != nil
	}
	s, err := ReadSummary(dir)
	return err == nil && s.Command == Command && s.Shard != nil
}

// A shardOut is one shard output given to Merge.
type shardOut struct {
	dir string
	p   *Progress
	s   *Summary
}

func (o *shardOut) name() string { return fmt.Sprintf("shard %s (%s)", o.p.Shard.Shard(), o.dir) }

// readShard reads and checks the finished shard output in dir.
func readShard(dir string) (*shardOut, error) {
	p, err := readProgress(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: merge: %s holds no retrain output (no %s): not a shard, or its task has not started", Command, dir, ProgressFile)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: merge: %w", Command, err)
	}
	switch {
	case p.Command != Command:
		return nil, fmt.Errorf("%s: merge: %s holds the output of explaind %s, not of retrain", Command, dir, p.Command)
	case p.Shard == nil:
		return nil, fmt.Errorf("%s: merge: %s holds the output of a whole retrain job, not of one shard", Command, dir)
	case p.Shard.Order != ShardOrder:
		return nil, fmt.Errorf("%s: merge: %s is a shard split in the order %q; this explaind splits in the order %q", Command, dir, p.Shard.Order, ShardOrder)
	case !p.Complete:
		return nil, fmt.Errorf("%s: merge: shard %s (%s) is unfinished: %d of its %d retrainings done; rerun its task (the same command) to finish it",
			Command, p.Shard.Shard(), dir, len(p.Rows), len(p.Shard.Rows))
	case len(p.Rows) != len(p.Shard.Rows):
		return nil, fmt.Errorf("%s: merge: shard %s (%s) holds %d rows for its %d retrainings; rerun its task to finish it, or delete %s and rerun it",
			Command, p.Shard.Shard(), dir, len(p.Rows), len(p.Shard.Rows), dir)
	}
	o := &shardOut{dir: dir, p: p}
	s, err := ReadSummary(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s: merge: %s is unfinished: its rows are done but %s was not written; rerun its task (the same command) to finish it", Command, o.name(), SummaryFile)
	case err != nil:
		return nil, fmt.Errorf("%s: merge: %s: %w", Command, o.name(), err)
	case !s.Complete:
		return nil, fmt.Errorf("%s: merge: %s is unfinished: its %s says \"complete\": false; rerun its task (the same command) to finish it", Command, o.name(), SummaryFile)
	case !sameShard(s.Shard, p.Shard) || s.RunFingerprint != p.RunFingerprint:
		return nil, fmt.Errorf("%s: merge: %s: its %s and %s are of different jobs; rerun its task to rewrite them", Command, o.name(), SummaryFile, ProgressFile)
	}
	o.s = s
	return o, nil
}

// threadsSuffix is the part of the software record (cmd/explaind's build
// information) that names the threads of the machine a job ran on.
var threadsSuffix = regexp.MustCompile(`, \d+ threads$`)

// build returns the software record without the threads: the build.
func build(software string) string { return threadsSuffix.ReplaceAllString(software, "") }

// compatible checks that shard o is of the job of shard first, as far as
// the shard's record: the same run, settings, build and shard count.
func compatible(first, o *shardOut, log io.Writer) error {
	if o.p.RunFingerprint != first.p.RunFingerprint {
		return fmt.Errorf("%s: merge: %s is of another run (%s, fingerprint %s) than %s (%s, fingerprint %s)",
			Command, o.name(), o.p.Run, o.p.RunFingerprint, first.name(), first.p.Run, first.p.RunFingerprint)
	}
	a, b := first.p.Key, o.p.Key
	a.Shard, b.Shard = nil, nil
	if d, args := b.normalized().settingsDiff(a.normalized()); d != "" {
		args = append([]any{Command, o.name(), first.name()}, args...)
		return setting.Errorf("%s: merge: %s is of this run with other settings than %s ("+strings.NewReplacer(" there,", " in it,", " here", " in shard "+first.p.Shard.Shard().String()).Replace(d)+")", args...)
	}
	if build(o.s.Software) != build(first.s.Software) {
		return fmt.Errorf("%s: merge: %s was computed by another build (%s) than %s (%s); rerun it with the same explaind",
			Command, o.name(), o.s.Software, first.name(), first.s.Software)
	}
	if o.p.Shard.Count != first.p.Shard.Count || o.p.Shard.Of != first.p.Shard.Of {
		return fmt.Errorf("%s: merge: %s is one of %d shards of %d retrainings, %s one of %d of %d: the shards of two splits overlap; merge the shards of one split",
			Command, o.name(), o.p.Shard.Count, o.p.Shard.Of, first.name(), first.p.Shard.Count, first.p.Shard.Of)
	}
	if fmt.Sprint(o.p.Checkpoints) != fmt.Sprint(first.p.Checkpoints) || o.p.Total != first.p.Total {
		return fmt.Errorf("%s: merge: %s and %s record different checkpoints or numbers of retrainings of the same job; rerun them with the same explaind", Command, o.name(), first.name())
	}
	if log != nil {
		if o.s.Software != first.s.Software {
			fmt.Fprintf(log, "%s: merge: note: %s ran with other threads (%s) than %s (%s); the merged summary records %s's\n",
				Command, o.name(), o.s.Software, first.name(), first.s.Software, first.name())
		}
		if o.p.Run != first.p.Run {
			fmt.Fprintf(log, "%s: merge: note: %s names the run %s, %s %s (the same run by its fingerprint); the merged output records %s\n",
				Command, o.name(), o.p.Run, first.name(), first.p.Run, first.p.Run)
		}
	}
	return nil
}

// Merge joins the outputs of the shards of one retrain job (Options.Shard
// i/n for every i of one n, each finished) into out: the rows of all
// shards, put back into Plan order, and the progress file, CSV, summary
// and figures Do writes for the whole job, written by the same code, into
// out (created if missing, held with its lock while written). The result
// is byte for byte the unsharded job's (the job has no wall-clock fields;
// the summary's software and eval_chunk, which the rows do not depend on,
// are those of the first shard given, and so is the run's directory as
// recorded; log gets a note when the shards differ in these).
//
// Merge refuses, naming the shard and the problem, before writing
// anything: a directory that holds no shard output, a shard unfinished
// (its rows or its summary), shards of another run, of other settings, of
// another build (the software record apart from its threads) or of another
// shard count (overlapping splits), a shard given twice, shards missing
// (naming their indices), rows that are not the shard's retrainings, an out
// that is one of the shards or holds another result than this job's.
// Rerunning Merge into an out that holds this job's merged result rewrites
// it. log, if set, gets the notes and a line on what was merged.
func Merge(out string, shards []string, log io.Writer) (*Summary, error) {
	if out == "" {
		return nil, setting.Errorf("%s: merge: name the output directory (%v)", Command, outSetting)
	}
	if len(shards) == 0 {
		return nil, fmt.Errorf("%s: merge: no shard outputs given", Command)
	}
	outs := make([]*shardOut, len(shards))
	for i, dir := range shards {
		if same, err := sameDir(dir, out); err != nil {
			return nil, fmt.Errorf("%s: merge: %w", Command, err)
		} else if same {
			return nil, setting.Errorf("%s: merge: %v %s is the shard output %s: merge into another directory", Command, outSetting, out, dir)
		}
		o, err := readShard(dir)
		if err != nil {
			return nil, err
		}
		outs[i] = o
	}
	first := outs[0]
	for _, o := range outs[1:] {
		if err := compatible(first, o, log); err != nil {
			return nil, err
		}
	}
	count := first.p.Shard.Count
	byIndex := make([]*shardOut, count)
	for _, o := range outs {
		i := o.p.Shard.Index
		if i < 0 || i >= count {
			return nil, fmt.Errorf("%s: merge: %s: index %d is not a shard of %d", Command, o.dir, i, count)
		}
		if d := byIndex[i]; d != nil {
			return nil, fmt.Errorf("%s: merge: %s and %s are both shard %s: give each shard once", Command, d.dir, o.dir, o.p.Shard.Shard())
		}
		byIndex[i] = o
	}
	var missing []string
	for i, o := range byIndex {
		if o == nil {
			missing = append(missing, fmt.Sprint(i))
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s: merge: missing %s %s of %d (%d given): a merge needs every shard of the job",
			Command, plural(len(missing), "shard", "shards"), strings.Join(missing, ", "), count, len(outs))
	}

	plan := Plan(first.p.Checkpoints, first.p.Parts, first.p.Seeds)
	if len(plan) != first.p.Total || first.p.Shard.Of != len(plan) {
		return nil, fmt.Errorf("%s: merge: %s records %d retrainings (of %d), its settings make %d", Command, first.name(), first.p.Total, first.p.Shard.Of, len(plan))
	}
	rows := make([]Row, len(plan))
	for _, o := range outs {
		want, err := ShardRows(len(plan), o.p.Shard.Shard())
		if err != nil {
			return nil, fmt.Errorf("%s: merge: %s: %w", Command, o.name(), err)
		}
		if fmt.Sprint(want) != fmt.Sprint(o.p.Shard.Rows) {
			return nil, fmt.Errorf("%s: merge: %s covers other retrainings than shard %s of %d", Command, o.name(), o.p.Shard.Shard(), len(plan))
		}
		for j, k := range want {
			r, id := o.p.Rows[j], plan[k]
			if r.Checkpoint != id.Checkpoint || r.Part != id.Part || r.Seed != id.Seed {
				return nil, fmt.Errorf("%s: merge: %s: its row %d is checkpoint %d, part %s, seed %d; the shard's is checkpoint %d, part %s, seed %d",
					Command, o.name(), j, r.Checkpoint, r.Part, r.Seed, id.Checkpoint, id.Part, id.Seed)
			}
			rows[k] = r
		}
	}

	key := first.p.Key
	key.Shard = nil
	prog := &Progress{Command: Command, Run: first.p.Run, Key: key, Checkpoints: first.p.Checkpoints, Total: len(plan), Complete: true, Rows: rows}
	res := &Result{Checkpoints: first.p.Checkpoints, Parts: first.p.Parts, Rows: rows, Complete: true}
	sum := *first.s
	sum.Shard = nil
	if err := sum.tally(res); err != nil {
		return nil, err
	}

	l, err := expio.LockOut(Command, out)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	if err := checkMergeOut(out, prog); err != nil {
		return nil, err
	}
	if err := write(out, prog, res, &sum); err != nil {
		return nil, err
	}
	if log != nil {
		fmt.Fprintf(log, "%s: merged %d shards (%d retrainings) of run %s into %s\n", Command, count, len(rows), prog.Run, out)
	}
	return &sum, nil
}

// checkMergeOut refuses an output directory out that holds another result
// than the whole job's of prog (a rerun merge rewrites that one).
func checkMergeOut(out string, prog *Progress) error {
	had, err := readProgress(out)
	if errors.Is(err, fs.ErrNotExist) {
		if _, err := expio.ReadOutput(out, SummaryFile); !errors.Is(err, fs.ErrNotExist) {
			return setting.Errorf("%s: merge: %v %s holds a %s without a %s, not this job's result: choose another %v, or delete %s", Command, outSetting, out, SummaryFile, ProgressFile, outSetting, out)
		}
		return nil
	}
	if err != nil {
		return setting.Errorf("%s: merge: %v %s: %w; choose another %v, or delete %s", Command, outSetting, out, err, outSetting, out)
	}
	if had.Command != Command {
		return setting.Errorf("%s: merge: %v %s holds the output of explaind %s; choose another %v", Command, outSetting, out, had.Command, outSetting)
	}
	return mismatch(out, had.Run, had.Key.normalized(), prog.Key.normalized(), prog.Run)
}

// sameDir reports whether a and b name the same existing directory (b
// may not exist yet).
func sameDir(a, b string) (bool, error) {
	fb, err := os.Stat(b)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	fa, err := os.Stat(a)
	if err != nil {
		return false, nil // readShard names a missing shard
	}
	return os.SameFile(fa, fb), nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
