package main

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/explaind/explaind/experiments/lds"
)

// TestLDS: explaind lds on the tiny run prints every method's LDS for
// both targets and writes its outputs; rerun, it says the job is done.
func TestLDS(t *testing.T) {
	out := filepath.Join(t.TempDir(), "lds")
	args := []string{"lds", "--run", swapTestRun(t), "--out", out, "--subsets", "5", "--seeds", "2", "--test-size", "3", "--bootstrap", "100", "--quiet"}
	msg, err := run(args...)
	if err != nil || !strings.Contains(msg, "lds: results written to "+out) {
		t.Fatalf("lds: %v\n%s", err, msg)
	}
	for _, m := range []string{"tracin", "grad_dot", "grad_cos", "trak", "random"} {
		if !strings.Contains(msg, "lds: "+m) {
			t.Errorf("the output names no LDS of %s:\n%s", m, msg)
		}
	}
	if !strings.Contains(msg, "lds: ceiling") {
		t.Errorf("the output of a job with 2 seeds names no noise ceiling:\n%s", msg)
	}
	if strings.Contains(msg, "lds: epk") {
		t.Errorf("epk scored without an EPK output:\n%s", msg)
	}
	var s lds.Summary
	b, err := os.ReadFile(filepath.Join(out, lds.SummaryFile))
	if err != nil || json.Unmarshal(b, &s) != nil || !s.Complete || s.Retrained.Count != 10 {
		t.Fatalf("summary.json: %v\n%s", err, b)
	}
	if msg, err := run(args...); err != nil || !strings.Contains(msg, "lds: already done: "+out) {
		t.Errorf("rerun: %v\n%s", err, msg)
	}
}

// TestLDSBadInput: mistakes are named by their flags, before any
// retraining (no output directory is made).
func TestLDSBadInput(t *testing.T) {
	dir := swapTestRun(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--fraction", "1.5"}, "invalid --fraction 1.5: want a fraction of the training set in (0, 1)"},
		{[]string{"--fraction", "0"}, "invalid --fraction 0: want a fraction of the training set in (0, 1)"},
		{[]string{"--fraction", "0.05", "--subsets", "100"}, "invalid --subsets 100: only 20 distinct subsets of 1 of the 20 training samples exist"},
		{[]string{"--test-size", "9"}, "invalid --test-size 9: the run's validation split has 8 samples"},
		{[]string{"--seeds", "0"}, "invalid --seeds 0: want ≥ 1"},
	} {
		out := filepath.Join(t.TempDir(), "lds")
		msg, err := run(append([]string{"lds", "--run", dir, "--out", out, "--quiet"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v\n%s; want %q", c.args, err, msg, c.want)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%v: the output directory was made (%v)", c.args, err)
		}
	}
}

// TestLDSSIGKILL: explaind lds killed with SIGKILL three times at random
// moments, then rerun to its end, leaves the outputs of an uninterrupted
// job: every file byte for byte but those holding wall times, which are
// equal without them (summary.json's wall_seconds, the rows' seconds in
// progress.json and retrainings.csv).
func TestLDSSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills explaind processes")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	root := t.TempDir()
	args := func(out string) []string {
		return []string{"lds", "--run", swapTestRun(t), "--out", out, "--subsets", "12", "--seeds", "2", "--test-size", "4", "--quiet"}
	}
	want, got := filepath.Join(root, "want"), filepath.Join(root, "got")
	d := sigkillRun(t, root, args(want))
	for i := range 3 {
		delay := time.Duration(rng.Int64N(int64(d)))
		cmd, out := sigkillCommand(t, root, args(got))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("before the kill: %v\n%s", err, out)
			}
		case <-time.After(delay):
			cmd.Process.Signal(syscall.SIGKILL)
			t.Logf("kill %d after %v: %v", i+1, delay, <-exited)
		}
	}
	sigkillRun(t, root, args(got))
	files := []string{lds.CSVFile, lds.SubsetsFile, lds.SubsetsCSV, lds.TargetsFile(lds.LogProb), lds.TargetsFile(lds.Margin),
		lds.AttributionFile(lds.TracIn, lds.LogProb), lds.AttributionFile(lds.GradCos, lds.Margin), lds.AttributionFile(lds.TRAK, lds.Margin),
		lds.AttributionFile(lds.Random, lds.Margin)}
	for _, f := range files {
		a, _ := os.ReadFile(filepath.Join(want, f))
		b, _ := os.ReadFile(filepath.Join(got, f))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("%s differs from the uninterrupted job's (%d and %d bytes)", f, len(b), len(a))
		}
	}
	stable := func(dir, f string) any {
		var v map[string]any
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil || json.Unmarshal(b, &v) != nil {
			t.Fatalf("%s: %v", f, err)
		}
		delete(v, "wall_seconds")
		if rows, ok := v["rows"].([]any); ok {
			for _, r := range rows {
				delete(r.(map[string]any), "seconds")
			}
		}
		return v
	}
	for _, f := range []string{lds.SummaryFile, lds.ProgressFile} {
		if a, b := stable(want, f), stable(got, f); !reflect.DeepEqual(a, b) {
			t.Errorf("%s differs from the uninterrupted job's beyond the wall times:\n%v\nwant\n%v", f, b, a)
		}
	}
}

// TestLDSShards: two shards (--shard) merged (--merge) score as the
// unsharded job does, and --merge with --run is refused.
func TestLDSShards(t *testing.T) {
	root := t.TempDir()
	dir := swapTestRun(t)
	common := []string{"--run", dir, "--subsets", "4", "--test-size", "3", "--bootstrap", "50", "--quiet"}
	if msg, err := run(append([]string{"lds", "--out", filepath.Join(root, "whole")}, common...)...); err != nil {
		t.Fatalf("%v\n%s", err, msg)
	}
	for _, i := range []string{"0", "1"} {
		msg, err := run(append([]string{"lds", "--out", filepath.Join(root, "s"+i), "--shard", i + "/2"}, common...)...)
		if err != nil || !strings.Contains(msg, "lds: shard "+i+"/2: 2 retrainings written") {
			t.Fatalf("shard %s: %v\n%s", i, err, msg)
		}
	}
	msg, err := run("lds", "--out", filepath.Join(root, "merged"), "--merge", filepath.Join(root, "s1")+","+filepath.Join(root, "s0"), "--bootstrap", "50", "--quiet")
	if err != nil {
		t.Fatalf("merge: %v\n%s", err, msg)
	}
	a, _ := os.ReadFile(filepath.Join(root, "whole", lds.CSVFile))
	b, _ := os.ReadFile(filepath.Join(root, "merged", lds.CSVFile))
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Errorf("lds.csv of the merged shards:\n%s\nof the whole job:\n%s", b, a)
	}
	// explaind merge, the one command for every sharded output, scores
	// with the settings the shards record (--bootstrap 50).
	msg, err = run("merge", "--out", filepath.Join(root, "merged2"), filepath.Join(root, "s0"), filepath.Join(root, "s1"))
	if err != nil || !strings.Contains(msg, "lds: epk") && !strings.Contains(msg, "lds: tracin") {
		t.Fatalf("explaind merge: %v\n%s", err, msg)
	}
	for _, f := range []string{lds.CSVFile, lds.ProgressFile} {
		a, _ := os.ReadFile(filepath.Join(root, "merged", f))
		b, _ := os.ReadFile(filepath.Join(root, "merged2", f))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("%s of explaind merge:\n%s\nof explaind lds --merge:\n%s", f, b, a)
		}
	}
	if _, err := run("lds", "--out", filepath.Join(root, "x"), "--merge", filepath.Join(root, "s0"), "--run", dir); err == nil {
		t.Error("--merge with --run: no error")
	}
}
