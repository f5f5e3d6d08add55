package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/explaind/explaind/experiments/retrain"
)

// retrainTestFiles reads the outputs of explaind retrain in dir, by name.
func retrainTestFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, f := range []string{retrain.SummaryFile, retrain.CSVFile, retrain.ProgressFile, "retrain.png", "retrain.svg"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		out[f] = b
	}
	return out
}

// TestRetrainResume: rerunning a finished retrain job reports it done and
// rewrites nothing; after a kill (the progress file cut to its first 5
// rows, the other outputs gone) the same command resumes after those 5
// and writes the files of the uninterrupted job; other settings or another
// run in the same --out are refused, changing nothing.
func TestRetrainResume(t *testing.T) {
	root := t.TempDir()
	dir := swapTestRun(t)
	out := filepath.Join(root, "retrain")
	args := []string{"retrain", "--run", dir, "--out", out, "--stride", "3", "--max-epochs", "2", "--seeds", "2", "--parts", "outer,attention", "--quiet"}
	if msg, err := run(args...); err != nil || !strings.Contains(msg, "results written to "+out) {
		t.Fatalf("retrain: %v\n%s", err, msg)
	}
	want := retrainTestFiles(t, out)
	summary := filepath.Join(out, retrain.SummaryFile)
	old := time.Unix(1e9, 0)
	if err := os.Chtimes(summary, old, old); err != nil {
		t.Fatal(err)
	}

	msg, err := run(append(args, "--eval-chunk", "5")...)
	if err != nil || !strings.Contains(msg, "retrain: already done: "+out) {
		t.Fatalf("rerun of a complete job: %v\n%s", err, msg)
	}
	if fi, err := os.Stat(summary); err != nil || !fi.ModTime().Equal(old) {
		t.Errorf("rerun of a complete job rewrote %s (%v)", summary, err)
	}

	// As after kill -9 after 5 retrainings: only the progress file, with 5 rows.
	var p retrain.Progress
	if err := json.Unmarshal(want[retrain.ProgressFile], &p); err != nil || len(p.Rows) != 12 {
		t.Fatalf("progress: %v, %d rows", err, len(p.Rows))
	}
	p.Rows, p.Complete = p.Rows[:5], false
	b, _ := json.Marshal(p)
	if err := os.WriteFile(filepath.Join(out, retrain.ProgressFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{retrain.SummaryFile, retrain.CSVFile, "retrain.png", "retrain.svg"} {
		if err := os.Remove(filepath.Join(out, f)); err != nil {
			t.Fatal(err)
		}
	}
	msg, err = run(args...)
	if err != nil || !strings.Contains(msg, "retrain: resuming: 5 of 12 retrainings already done") || !strings.Contains(msg, "results written to "+out) {
		t.Fatalf("resume: %v\n%s", err, msg)
	}
	got := retrainTestFiles(t, out)
	for f, w := range want {
		if !bytes.Equal(got[f], w) {
			t.Errorf("%s after resuming differs from the uninterrupted job's:\n%s\nwant\n%s", f, got[f], w)
		}
	}

	other := trainTestRun(t, "modulo", append(tiny, "--epochs", "7")...)
	noParts := slices.DeleteFunc(slices.Clone(args), func(a string) bool { return a == "--parts" || a == "outer,attention" })
	for _, c := range []struct {
		args []string
		want string
	}{
		{append(args, "--seeds", "3"), "holds a retrain result of this run with other settings (--seeds 2 there, 3 here)"},
		{append(noParts, "--parts", "outer"), "--parts outer,attention there, outer here"},
		{append(args, "--run", other), "holds the retrain result of another run (" + dir},
	} {
		msg, err := run(c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "choose another --out, or delete "+out) {
			t.Errorf("%v: got %v, want an error mentioning %q and the ways out\n%s", c.args[len(c.args)-2:], err, c.want, msg)
		}
		for f, w := range retrainTestFiles(t, out) {
			if !bytes.Equal(w, want[f]) {
				t.Errorf("%v: %s changed", c.args[len(c.args)-2:], f)
			}
		}
	}
}

// TestRetrainShards: `explaind retrain --shard I/3` for I = 0, 1, 2, shard
// 1 killed with SIGKILL after some but not all of its retrainings and
// rerun, merged by `explaind merge` (given the shards in reverse order)
// equals the unsharded job's output byte for byte; bad --shard
// values and more shards than retrainings are refused before any work; a
// task of a job array without --shard says so and computes the whole job.
func TestRetrainShards(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills an explaind process")
	}
	root := t.TempDir()
	dir := swapTestRun(t)
	args := func(out string, more ...string) []string {
		return append([]string{"retrain", "--run", dir, "--out", out, "--stride", "1", "--max-epochs", "20", "--seeds", "2", "--parts", "outer,attention", "--quiet"}, more...)
	}
	want := filepath.Join(root, "whole")
	if msg, err := run(args(want)...); err != nil {
		t.Fatalf("unsharded: %v\n%s", err, msg)
	}
	var whole retrain.Progress
	if b, err := os.ReadFile(filepath.Join(want, retrain.ProgressFile)); err != nil || json.Unmarshal(b, &whole) != nil || whole.Total != 28 {
		t.Fatalf("unsharded progress: %v, total %d; want 7 checkpoints × 2 parts × 2 seeds", err, whole.Total)
	}

	// Job-array tasks without --shard: a note, and the whole job.
	t.Setenv("SLURM_ARRAY_TASK_ID", "2")
	t.Setenv("SLURM_ARRAY_TASK_COUNT", "4")
	if msg, err := run(args(want)...); err != nil || !strings.Contains(msg, "task 2 of a Slurm job array of 4, but no shard is set") || !strings.Contains(msg, "(--shard I/N)") || !strings.Contains(msg, "already done") {
		t.Errorf("Slurm array task without --shard: %v\n%s", err, msg)
	}
	os.Unsetenv("SLURM_ARRAY_TASK_ID")
	os.Unsetenv("SLURM_ARRAY_TASK_COUNT")

	for _, c := range []struct{ shard, want string }{
		{"4/4", "the index must be 0 … 3"},
		{"0/0", "the count must be 1"},
		{"a/b", "want I/N with whole numbers"},
		{"3", "want I/N"},
		{"-1/3", "the index must be 0 … 2"},
		{"28/29", "the job has 28 retrainings (7 checkpoints × 2 parts × 2 seeds): invalid --shard 28/29: 29 shards of 28 items: each shard needs at least one; use at most 28 shards"},
	} {
		out := filepath.Join(root, "bad")
		msg, err := run(args(out, "--shard", c.shard)...)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "--shard") {
			t.Errorf("--shard %s: %v, want an error mentioning --shard and %q\n%s", c.shard, err, c.want, msg)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("--shard %s: %s was created", c.shard, out)
		}
	}

	shards := []string{filepath.Join(root, "s0"), filepath.Join(root, "s1"), filepath.Join(root, "s2")}
	for i, out := range shards {
		if i == 1 {
			killMidway(t, root, args(out, "--shard", "1/3"), out)
		}
		msg, err := run(args(out, "--shard", fmt.Sprintf("%d/3", i))...)
		if err != nil || !strings.Contains(msg, fmt.Sprintf("shard %d/3 (", i)) || !strings.Contains(msg, "of 28 retrainings) written to "+out) {
			t.Fatalf("shard %d/3: %v\n%s", i, err, msg)
		}
		if i == 1 && !strings.Contains(msg, "retrain: resuming: ") {
			t.Errorf("shard 1/3 after the kill did not resume:\n%s", msg)
		}
	}
	merged := filepath.Join(root, "merged")
	// The shards in reverse order: merge puts the rows back in the job's.
	margs := []string{"merge", "--out", merged}
	for i := len(shards) - 1; i >= 0; i-- {
		margs = append(margs, shards[i])
	}
	if msg, err := run(margs...); err != nil || !strings.Contains(msg, "3 shards merged into "+merged) {
		t.Fatalf("explaind merge: %v\n%s", err, msg)
	}
	got, wantFiles := retrainTestFiles(t, merged), retrainTestFiles(t, want)
	for f, w := range wantFiles {
		if !bytes.Equal(got[f], w) {
			t.Errorf("%s merged from the shards differs from the unsharded job's:\n%s\nwant\n%s", f, got[f], w)
		}
	}
}

// killMidway starts `explaind ARGS` (a retrain shard writing into out)
// and kills it with SIGKILL as soon as its progress file holds some but
// not all of its rows; it fails the test if five tries finish first.
func killMidway(t *testing.T, dir string, args []string, out string) {
	t.Helper()
	for try := 0; try < 5; try++ {
		if err := os.RemoveAll(out); err != nil {
			t.Fatal(err)
		}
		cmd, log := sigkillCommand(t, dir, args)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		for {
			select {
			case err := <-exited:
				t.Logf("try %d: %v finished before the kill (%v)\n%s", try+1, args, err, log)
			case <-time.After(500 * time.Microsecond):
				var p retrain.Progress
				b, err := os.ReadFile(filepath.Join(out, retrain.ProgressFile))
				if err != nil || json.Unmarshal(b, &p) != nil || p.Shard == nil || p.Complete || len(p.Rows) == 0 {
					continue
				}
				cmd.Process.Signal(syscall.SIGKILL)
				err = <-exited
				t.Logf("killed %v after %d of %d rows: %v", args, len(p.Rows), len(p.Shard.Rows), err)
				return
			}
			break
		}
	}
	t.Fatalf("%v finished five times before it could be killed midway", args)
}
