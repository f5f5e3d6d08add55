package job_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/explain/job"
	"github.com/explaind/explaind/internal/testrun"
	"github.com/explaind/explaind/shard"
)

// mergePresets are the presets the sharding tests compute.
var mergePresets = []string{epkfile.Validation, epkfile.Grokking, epkfile.Components, epkfile.Kernel, epkfile.Pruning}

// runShards runs the n shards of the job o into root/shard-i and returns
// their directories.
func runShards(t *testing.T, o job.Options, root string, n int) []string {
	t.Helper()
	var dirs []string
	for i := range n {
		so := o
		so.Shard = shard.Shard{Index: i, Count: n}
		so.Out = filepath.Join(root, fmt.Sprintf("shard-%d", i))
		s, err := job.Run(context.Background(), so)
		if err != nil {
			t.Fatalf("shard %d/%d: %v", i, n, err)
		}
		if s.Shard != so.Shard.String() {
			t.Errorf("shard %d/%d: summary's shard %q", i, n, s.Shard)
		}
		dirs = append(dirs, so.Out)
	}
	return dirs
}

// TestMergeEqualsWhole: a job split into 4 shards (8 test samples, two
// per shard) and merged equals the unsharded job; so does one split into
// 3 (blocks of 2, 3 and 3), merged in another order: for the float32 tiny
// run and for the same run trained in float64, whose data kernel is
// computed in float64 and so held to testrun.MergeBound; and with the
// reference preset's arrays per test sample and class (on the float64
// run, whose merged kernel_residual is the shards' largest: see Merge).
func TestMergeEqualsWhole(t *testing.T) {
	c := testrun.Modulo(tinyS, 4)
	c.Optimizer.LR = 0.01
	run64 := testrun.Train[float64](t, c)
	for _, r := range []struct {
		name        string
		run         string
		presets     []string
		kernelBound float64
	}{
		{"float32", tinyRun(t), mergePresets, testrun.Float32KernelBound},
		{"float64", run64, mergePresets, testrun.MergeBound},
		{"reference", run64, []string{epkfile.Reference}, testrun.MergeBound},
	} {
		t.Run(r.name, func(t *testing.T) { testMergeEqualsWhole(t, r.run, r.presets, r.kernelBound) })
	}
}

func testMergeEqualsWhole(t *testing.T, run string, presets []string, kernelBound float64) {
	root := t.TempDir()
	o := job.Options{Run: run, Presets: presets, Quadrature: "midpoint:3"}
	o.Out = filepath.Join(root, "whole")
	if _, err := job.Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{4, 3} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			dir := filepath.Join(root, fmt.Sprint(n))
			shards := runShards(t, o, dir, n)
			for _, s := range shards {
				testrun.OpenEPK(t, s)
			}
			slices.Reverse(shards)
			merged := filepath.Join(dir, "merged")
			var log bytes.Buffer
			s, err := job.Merge(merged, shards, &log)
			if err != nil {
				t.Fatal(err)
			}
			if s.TestSamples != tinyX || s.Shard != "" {
				t.Errorf("merged summary: %d test samples, shard %q", s.TestSamples, s.Shard)
			}
			worst, perSample := testrun.SameMerged(t, o.Out, merged, kernelBound)
			t.Logf("%d shards: largest relative difference of the summed arrays but the kernel %.3g, of the arrays per sample %.3g (bitwise: %v)",
				n, worst, perSample, testrun.Bitwise)
		})
	}
}

// TestShardRecord: a shard output records its shard, its block of the
// job's test samples, their indices and the whole job's key, and keeps
// the sums over test samples in float64; the key of the whole job is the
// Job of its unsharded output, and a shard's own key is its own.
func TestShardRecord(t *testing.T) {
	run := tinyRun(t)
	root := t.TempDir()
	o := job.Options{Run: run, Presets: []string{epkfile.Kernel, epkfile.Pruning, epkfile.Components}, Quadrature: "midpoint:2",
		TestIndices: []int{7, 1, 4, 2, 6}}
	o.Out = filepath.Join(root, "whole")
	if _, err := job.Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	shards := runShards(t, o, root, 2)
	whole := testrun.OpenEPK(t, o.Out).Manifest
	if whole.Shard != nil {
		t.Errorf("the unsharded output records a shard %+v", whole.Shard)
	}
	blocks := [][2]int{{0, 2}, {2, 5}}
	keys := map[string]bool{whole.Job: true}
	for i, dir := range shards {
		m := testrun.OpenEPK(t, dir).Manifest
		want := &epkfile.Shard{Index: i, Count: 2, Samples: blocks[i], Of: 5, TestIndices: o.TestIndices[blocks[i][0]:blocks[i][1]],
			WholeJob: whole.Job}
		if !reflect.DeepEqual(m.Shard, want) {
			t.Errorf("shard %d records %+v, want %+v", i, m.Shard, want)
		}
		if m.Test.Count != blocks[i][1]-blocks[i][0] || keys[m.Job] {
			t.Errorf("shard %d: %d test samples, key %s (seen: %v)", i, m.Test.Count, m.Job, keys[m.Job])
		}
		keys[m.Job] = true
		for name, info := range m.Arrays {
			summed := !slices.Contains(info.Axes, "test") && info.Dtype != "int64" && name != "step_max_completeness"
			if wd := whole.Arrays[name].Dtype; summed && (info.Dtype != "float64" || wd != "float32" && name != "kernel_reg") {
				t.Errorf("%s of shard %d: %s (unsharded %s), want float64 partial sums", name, i, info.Dtype, wd)
			}
			if !summed && info.Dtype != whole.Arrays[name].Dtype {
				t.Errorf("%s of shard %d: %s, unsharded %s", name, i, info.Dtype, whole.Arrays[name].Dtype)
			}
		}
	}
}

// TestMergeRefuses: a merge of shards that are not all of one finished
// job, or that do not cover it exactly once, is refused before it writes,
// naming the shard and the problem.
func TestMergeRefuses(t *testing.T) {
	run := tinyRun(t)
	c := testrun.Modulo(tinyS, 4)
	c.Optimizer.LR = 0.01
	run64 := testrun.Train[float64](t, c)
	root := t.TempDir()
	o := job.Options{Run: run, Quadrature: "midpoint:2"}
	four := runShards(t, o, filepath.Join(root, "four"), 4)
	two := runShards(t, o, filepath.Join(root, "two"), 2)
	shardOf := func(name string, edit func(o *job.Options)) string {
		so := o
		edit(&so)
		so.Out = filepath.Join(root, name)
		if _, err := job.Run(context.Background(), so); err != nil {
			t.Fatal(err)
		}
		return so.Out
	}
	set := func(s shard.Shard) func(o *job.Options) { return func(o *job.Options) { o.Shard = s } }
	otherRun := shardOf("other-run", func(o *job.Options) { o.Run, o.Shard = run64, shard.Shard{Index: 1, Count: 4} })
	otherRule := shardOf("other-rule", func(o *job.Options) { o.Quadrature, o.Shard = "midpoint:3", shard.Shard{Index: 1, Count: 4} })
	otherSamples := shardOf("other-samples", func(o *job.Options) {
		o.TestIndices, o.Shard = []int{0, 1, 2, 3, 4, 5, 7, 6}, shard.Shard{Index: 1, Count: 4}
	})
	whole := shardOf("whole", set(shard.Shard{}))
	// Another build: the same shard, its manifest saying so.
	otherBuild := testrun.Copy(t, four[1])
	editRunManifest(t, otherBuild, func(m map[string]any) { m["software"] = "explaind v9" })
	// An interrupted shard.
	interrupted := filepath.Join(root, "interrupted")
	ctx, cancel := context.WithCancel(context.Background())
	io := o
	io.Out, io.Shard, io.CheckpointEvery = interrupted, shard.Shard{Index: 1, Count: 4}, time.Nanosecond
	io.Progress = func(done, _ int) {
		if done == 2 {
			cancel()
		}
	}
	if _, err := job.Run(ctx, io); err == nil {
		t.Fatal("the interrupted shard finished")
	}
	stranger := filepath.Join(root, "stranger")
	if err := os.MkdirAll(stranger, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(root, "merged")
	for _, c := range []struct {
		name   string
		shards []string
		want   string
	}{
		{"another run", []string{four[0], otherRun, four[2], four[3]}, "shard " + otherRun + " explains another run than shard " + four[0]},
		{"another build", []string{four[0], otherBuild, four[2], four[3]}, "shard " + otherBuild + ` was computed by another build than shard ` + four[0] + ` ("explaind v9", not "")`},
		{"other settings", []string{four[0], otherRule, four[2], four[3]}, "shard " + otherRule + " has other settings than shard " + four[0] + ": quadrature midpoint:3, not midpoint:2"},
		{"another job", []string{four[0], otherSamples, four[2], four[3]}, "shard " + otherSamples + " belongs to another job than shard " + four[0]},
		{"duplicate", []string{four[0], four[1], four[2], four[1], four[3]}, "shard " + four[1] + " duplicates shard " + four[1] + " (both are shard 1/4)"},
		{"overlap", []string{two[0], four[1], four[2], four[3]}, "shard " + four[1] + " (shard 1/4, test samples 2:4) overlaps shard " + two[0] + " (shard 0/2, test samples 0:4)"},
		{"missing", []string{four[2], four[0]}, "missing shards: 1, 3 of 4 (test samples 2:4, 6:8 of 8)"},
		{"uncovered", []string{two[0], four[3]}, "the shards leave test samples 4:6 of 8 uncovered"},
		{"interrupted", []string{four[0], interrupted, four[2], four[3]}, "shard " + interrupted + ": the EPK job that writes this output has not finished: it holds the saved state of an interrupted job"},
		{"not an output", []string{four[0], stranger}, "shard " + stranger + ": " + stranger + " is not an EPK output"},
		{"whole job", []string{whole}, whole + " is the output of a whole EPK job, not of a shard"},
		{"none", nil, "name the shard outputs to merge"},
	} {
		s, err := job.Merge(out, c.shards, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error mentioning %q", c.name, err, c.want)
		}
		if c.name == "interrupted" && !errors.Is(err, epkfile.ErrIncomplete) {
			t.Errorf("%s: %v is not epkfile.ErrIncomplete", c.name, err)
		}
		if s != nil {
			t.Errorf("%s: a summary with the error", c.name)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: a refused merge created its output directory", c.name)
			os.RemoveAll(out)
		}
	}
	if _, err := job.Merge(four[0], four, nil); err == nil || !strings.Contains(err.Error(), "the shard "+four[0]+" is the output directory: choose another Out") {
		t.Errorf("merging into a shard: %v", err)
	}
	if err := os.WriteFile(filepath.Join(stranger, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := job.Merge(stranger, four, nil); err == nil || !strings.Contains(err.Error(), stranger+" exists and is not an output of this merge; choose another Out") {
		t.Errorf("merging into a directory that holds something else: %v", err)
	}
}

// TestMergeRerun: a merge that failed midway (its manifest not written,
// as a kill would leave it) is rerun by the same call; a rerun of a
// finished merge returns its summary; a merge of other shards into it is
// refused. A shard interrupted and resumed merges like one that was not.
func TestMergeRerun(t *testing.T) {
	run := tinyRun(t)
	root := t.TempDir()
	o := job.Options{Run: run, Presets: []string{epkfile.Grokking, epkfile.Kernel}, Quadrature: "midpoint:2", TestSize: 6}
	o.Out = filepath.Join(root, "whole")
	if _, err := job.Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	// Shard 1 of 3, interrupted after two steps, then resumed; a rerun of
	// the finished shard returns its summary.
	so := o
	so.Shard, so.Out, so.CheckpointEvery = shard.Shard{Index: 1, Count: 3}, filepath.Join(root, "shard-1"), time.Nanosecond
	ctx, cancel := context.WithCancel(context.Background())
	so.Progress = func(done, _ int) {
		if done == 2 {
			cancel()
		}
	}
	if _, err := job.Run(ctx, so); err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("interrupted shard: %v", err)
	}
	so.Progress = nil
	var log bytes.Buffer
	so.Log = &log
	first, err := job.Run(context.Background(), so)
	if err != nil || !strings.Contains(log.String(), "resuming the job in "+so.Out+" after 2 of 6 steps") {
		t.Fatalf("resumed shard: %v; log %q", err, log.String())
	}
	log.Reset()
	again, err := job.Run(context.Background(), so)
	if err != nil || !reflect.DeepEqual(again, first) || !strings.Contains(log.String(), "nothing to do") {
		t.Errorf("rerun of the finished shard: %+v, %v, log %q; want its summary %+v", again, err, log.String(), first)
	}
	shards := runShards(t, o, root, 3)
	shards[1] = so.Out

	merged := filepath.Join(root, "merged")
	restore := failNth(filepath.Join(merged, "manifest.json"), 1)
	_, err = job.Merge(merged, shards, nil)
	restore()
	if err == nil {
		t.Fatal("the merge whose manifest failed to be written succeeded")
	}
	if _, err := epkfile.Open(merged); err == nil {
		t.Fatal("the failed merge left an output that opens")
	}
	if _, err := job.Merge(merged, shards[:2], nil); err == nil {
		t.Error("merging too few shards into the failed merge's directory succeeded")
	}
	log.Reset()
	s, err := job.Merge(merged, shards, &log)
	if err != nil || !strings.Contains(log.String(), "holds an unfinished merge of these shards") {
		t.Fatalf("rerun of the failed merge: %v; log %q", err, log.String())
	}
	testrun.SameMerged(t, o.Out, merged, testrun.Float32KernelBound)
	if entries, _ := os.ReadDir(merged); slices.ContainsFunc(entries, func(e os.DirEntry) bool { return strings.HasPrefix(e.Name(), ".epk-") }) {
		t.Errorf("the finished merge left its marks: %v", entries)
	}
	log.Reset()
	reversed := slices.Clone(shards)
	slices.Reverse(reversed)
	again, err = job.Merge(merged, reversed, &log)
	if err != nil || !reflect.DeepEqual(again, s) || !strings.Contains(log.String(), "nothing to do") {
		t.Errorf("rerun of the finished merge: %+v, %v, log %q; want its summary %+v", again, err, log.String(), s)
	}
	other := runShards(t, job.Options{Run: run, Quadrature: "midpoint:2"}, filepath.Join(root, "other"), 2)
	if _, err := job.Merge(merged, other, nil); err == nil || !strings.Contains(err.Error(), merged+" already holds a finished EPK output; choose another Out") {
		t.Errorf("merging other shards into a finished merge: %v", err)
	}
}

// TestShardEnvNote: a job without a shard run as a task of a Slurm job
// array or of a Kubernetes Indexed Job says so in its log and computes
// the whole job; with a shard it says nothing.
func TestShardEnvNote(t *testing.T) {
	run := tinyRun(t)
	root := t.TempDir()
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, "this is task 2 of a Slurm job array of 4, but no shard is set, so it computes the whole job"},
		{map[string]string{"JOB_COMPLETION_INDEX": "1"}, "this is index 1 of a Kubernetes Indexed Job, but no shard is set, so it computes the whole job"},
	} {
		for _, k := range []string{"SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "JOB_COMPLETION_INDEX"} {
			t.Setenv(k, c.env[k])
		}
		for _, sh := range []shard.Shard{{}, {Index: 1, Count: 2}} {
			var log bytes.Buffer
			out := filepath.Join(root, fmt.Sprintf("%d-%s", len(c.env), strings.ReplaceAll(sh.String(), "/", "of")))
			s, err := job.Run(context.Background(), job.Options{Run: run, Out: out, TestSize: 4, Quadrature: "midpoint:1", Shard: sh, Log: &log})
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(log.String(), c.want); got != sh.IsZero() {
				t.Errorf("shard %q: log %q, want the note %v", sh, log.String(), sh.IsZero())
			}
			if want := 4 / max(sh.Count, 1); s.TestSamples != want {
				t.Errorf("shard %q: %d test samples, want %d", sh, s.TestSamples, want)
			}
		}
	}
}
