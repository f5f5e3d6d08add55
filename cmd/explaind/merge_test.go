package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/internal/testrun"
)

// mergeTestPresets are the presets the sharding tests of the command
// compute.
const mergeTestPresets = "validation,grokking,components,kernel,pruning"

// TestEPKShardAndMerge: `explaind epk --shard i/4` for i = 0 … 3, merged
// by `explaind merge` in another order, equals `explaind epk` without
// --shard (testrun.SameMerged); a second merge prints the same summary.
func TestEPKShardAndMerge(t *testing.T) {
	runDir := swapTestRun(t)
	root := t.TempDir()
	whole := filepath.Join(root, "whole")
	epkTestOutput(t, runDir, whole, "--preset", mergeTestPresets)
	var shards []string
	for i := 3; i >= 0; i-- {
		out := filepath.Join(root, fmt.Sprint("shard-", i))
		_, s := epkTestOutput(t, runDir, out, "--preset", mergeTestPresets, "--shard", fmt.Sprintf("%d/4", i))
		if s["shard"] != fmt.Sprintf("%d/4", i) || s["test_samples"] != 2.0 {
			t.Errorf("shard %d/4: summary's shard %v, %v test samples", i, s["shard"], s["test_samples"])
		}
		shards = append(shards, out)
	}
	merged := filepath.Join(root, "merged")
	msg, err := run(append([]string{"merge", "--out", merged}, shards...)...)
	if err != nil {
		t.Fatalf("merge: %v\n%s", err, msg)
	}
	if !strings.Contains(msg, "merged 4 shards (8 test samples) into "+merged) || !strings.Contains(msg, `"test_samples": 8`) {
		t.Errorf("merge printed %s", msg)
	}
	worst, perSample := testrun.SameMerged(t, whole, merged, testrun.Float32KernelBound)
	t.Logf("summed arrays but the kernel within %.3g, arrays per sample within %.3g (bitwise: %v)", worst, perSample, testrun.Bitwise)
	again, err := run(append([]string{"merge", "--out", merged}, shards...)...)
	if err != nil || !strings.Contains(again, "already holds this job's finished output: nothing to do") {
		t.Errorf("a second merge: %v\n%s", err, again)
	}
}

// TestShardBadInput: a bad --shard is refused before any work, and a bad
// merge before it writes, in the command's terms.
func TestShardBadInput(t *testing.T) {
	runDir := swapTestRun(t)
	root := t.TempDir()
	out := filepath.Join(root, "out")
	for _, c := range []struct {
		shard, want string
	}{
		{"4/4", "invalid --shard: shard 4/4: the index must be 0 … 3 (shards count from 0)"},
		{"0/0", "invalid --shard: shard \"0/0\": the count must be 1 … "},
		{"a/b", "invalid --shard: shard \"a/b\": want I/N with whole numbers I and N, such as 0/4"},
		{"3", "invalid --shard: shard \"3\": want I/N"},
		{"0/9", "invalid --shard 0/9: the job has 8 test samples: 9 shards of 8 items: each shard needs at least one; use at most 8 shards"},
	} {
		msg, err := epkTestRun(t, "--run", runDir, "--out", out, "--shard", c.shard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("--shard %s: %v, want an error mentioning %q\n%s", c.shard, err, c.want, msg)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("--shard %s: a refused job created its output directory", c.shard)
			os.RemoveAll(out)
		}
	}
	var shards []string
	for i := range 2 {
		dir := filepath.Join(root, fmt.Sprint("shard-", i))
		epkTestOutput(t, runDir, dir, "--quadrature", "midpoint:1", "--shard", fmt.Sprintf("%d/2", i))
		shards = append(shards, dir)
	}
	stranger := filepath.Join(root, "stranger")
	if err := os.MkdirAll(stranger, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--out", out}, "name the shard outputs to merge"},
		{shards, `required flag(s) "out" not set`},
		{[]string{"--out", out, shards[1]}, "missing shards: 0 of 2 (test samples 0:4 of 8)"},
		{[]string{"--out", out, stranger, shards[0]}, stranger + " is not the output of a sharded job that explaind merges"},
		{[]string{"--out", out, shards[0], stranger}, "shard " + stranger + ": " + stranger + " is not an EPK output"},
		{append([]string{"--out", shards[0]}, shards...), "the shard " + shards[0] + " is the output directory: choose another --out"},
	} {
		msg, err := run(append([]string{"merge"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("merge %v: %v, want an error mentioning %q\n%s", c.args, err, c.want, msg)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("merge %v: a refused merge created its output directory", c.args)
			os.RemoveAll(out)
		}
	}
	if _, err := epkfile.Open(shards[0]); err != nil {
		t.Errorf("the refused merge into a shard broke it: %v", err)
	}
}

// TestEPKJobArrayNote: `explaind epk` without --shard in a task of a Slurm
// job array says so on its standard error and computes the whole job.
func TestEPKJobArrayNote(t *testing.T) {
	runDir := swapTestRun(t)
	t.Setenv("SLURM_ARRAY_TASK_ID", "3")
	t.Setenv("SLURM_ARRAY_TASK_COUNT", "8")
	out := filepath.Join(t.TempDir(), "out")
	msg, err := epkTestRun(t, "--run", runDir, "--out", out, "--quadrature", "midpoint:1")
	if err != nil {
		t.Fatal(err)
	}
	want := "note: this is task 3 of a Slurm job array of 8, but no shard is set, so it computes the whole job"
	if !strings.Contains(msg, want) {
		t.Errorf("epk in a job array task printed %s\nwant the note %q", msg, want)
	}
	if o := testrun.OpenEPK(t, out); o.Manifest.Shard != nil || o.Manifest.Test.Count != epkTestX {
		t.Errorf("the task computed shard %+v of %d test samples, want the whole job", o.Manifest.Shard, o.Manifest.Test.Count)
	}
}
