package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/experiments/expio/expiotest"
	"github.com/explaind/explaind/history"
)

// swapTestRun returns the tiny modulo run of main_test.go (6 steps,
// checkpoints every 4), shared by the tests (trainTestRun).
func swapTestRun(t *testing.T) string {
	t.Helper()
	return trainTestRun(t, "modulo", tiny...)
}

// swapTestSummary reads DIR/summary.json and checks that it names the run
// by its fingerprint and is complete.
func swapTestSummary(t *testing.T, out, runDir string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(out, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	var sum map[string]any
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	m, err := history.ReadManifest(runDir)
	if err != nil {
		t.Fatal(err)
	}
	if sum["run_fingerprint"] != epkfile.RunFingerprint(m) || sum["run"] != runDir || sum["complete"] != true {
		t.Errorf("summary names run %v (fingerprint %v, complete %v); want %s, %s, complete", sum["run"], sum["run_fingerprint"], sum["complete"], runDir, epkfile.RunFingerprint(m))
	}
	return sum
}

func TestSwapCommand(t *testing.T) {
	root := t.TempDir()
	dir := swapTestRun(t)
	out := filepath.Join(root, "swap")
	msg, err := run("swap", "--run", dir, "--out", out, "--every", "4", "--quiet")
	if err != nil || !strings.Contains(msg, "results written to "+out) {
		t.Fatalf("swap: %v\n%s", err, msg)
	}
	recs := expiotest.ReadCSV(t, filepath.Join(out, "swap.csv"))
	if len(recs) != 1+3*5 || !slices.Equal(recs[0], []string{"step", "kept", "swapped_val_acc", "step_val_acc", "acc_diff", "kl_final_swapped"}) {
		t.Fatalf("swap.csv: %d records, header %v; want 3 steps (0, 4, 6) × 5 kept sets", len(recs), recs[0])
	}
	for _, r := range recs[1:] {
		if r[0] == "6" && (r[4] != "0" || r[5] != "0") {
			t.Errorf("final step %v: want difference 0 and KL 0", r)
		}
	}
	if recs[1][0] != "0" || recs[15][0] != "6" || recs[15][1] != "all-but-attention" {
		t.Errorf("rows out of order: first %v, last %v", recs[1], recs[15])
	}
	sum := swapTestSummary(t, out, dir)
	if sum["final_step"] != 6.0 || sum["sampled_steps"] != 3.0 {
		t.Errorf("summary: final step %v, %v sampled steps", sum["final_step"], sum["sampled_steps"])
	}
	for _, f := range []string{"swap.png", "swap.svg"} {
		if fi, err := os.Stat(filepath.Join(out, f)); err != nil || fi.Size() == 0 {
			t.Errorf("no figure %s (%v)", f, err)
		}
	}
	// A custom kept set.
	msg, err = run("swap", "--run", dir, "--out", out, "--every", "10", "--kept", "all-but-linear1+linear2", "--quiet")
	if err != nil {
		t.Fatalf("swap --kept: %v\n%s", err, msg)
	}
	if recs := expiotest.ReadCSV(t, filepath.Join(out, "swap.csv")); len(recs) != 1+2 || recs[1][1] != "all-but-linear1+linear2" {
		t.Errorf("swap --kept: %v", recs)
	}
}

func TestRetrainCommand(t *testing.T) {
	root := t.TempDir()
	dir := swapTestRun(t)
	out := filepath.Join(root, "retrain")
	msg, err := run("retrain", "--run", dir, "--out", out, "--stride", "3", "--max-epochs", "2", "--seeds", "2", "--parts", "outer,attention", "--quiet")
	if err != nil || !strings.Contains(msg, "results written to "+out) {
		t.Fatalf("retrain: %v\n%s", err, msg)
	}
	recs := expiotest.ReadCSV(t, filepath.Join(out, "retrain.csv"))
	if len(recs) != 1+3*2*2 || recs[0][0] != "checkpoint" || recs[0][3] != "epochs" {
		t.Fatalf("retrain.csv: %d records; want 3 checkpoints (6, 3, 0) × 2 parts × 2 seeds", len(recs))
	}
	var got []string
	for _, r := range recs[1:] {
		got = append(got, r[0]+"/"+r[1]+"/"+r[2])
		if r[3] != "-1" || r[7] != "2" { // 6 steps at lr 0.01 learn nothing: never 100%
			t.Errorf("row %v: want epochs -1 after 2 epochs run", r)
		}
	}
	want := []string{"6/outer/0", "6/outer/1", "6/attention/0", "6/attention/1", "3/outer/0", "3/outer/1", "3/attention/0", "3/attention/1",
		"0/outer/0", "0/outer/1", "0/attention/0", "0/attention/1"}
	if !slices.Equal(got, want) {
		t.Errorf("rows %v, want %v", got, want)
	}
	sum := swapTestSummary(t, out, dir)
	if st, _ := sum["settings"].(map[string]any); st["max_epochs"] != 2.0 || st["seeds"] != 2.0 || st["target_accuracy"] != 1.0 {
		t.Errorf("settings %v", sum["settings"])
	}
	for _, f := range []string{"retrain.png", "retrain.svg"} {
		if fi, err := os.Stat(filepath.Join(out, f)); err != nil || fi.Size() == 0 {
			t.Errorf("no figure %s (%v)", f, err)
		}
	}
}

// TestSwapRetrainBadInput: every bad input is refused with an error naming
// the flag or the problem, before any output is written.
func TestSwapRetrainBadInput(t *testing.T) {
	root := t.TempDir()
	dir := swapTestRun(t)
	cnn := pruneTestRun(t) // any CNN run: the modulo experiments refuse it
	out := filepath.Join(root, "out")
	missing := filepath.Join(root, "nothing")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"swap", "--run", cnn, "--out", out}, `is a "cnn" run; explaind swap works on modulo runs only`},
		{[]string{"retrain", "--run", cnn, "--out", out}, `is a "cnn" run; explaind retrain works on modulo runs only`},
		{[]string{"swap", "--run", missing, "--out", out}, "--run " + missing},
		{[]string{"retrain", "--run", missing, "--out", out}, "not a run directory"},
		{[]string{"swap", "--run", dir, "--out", out, "--every", "0"}, "--every 0"},
		{[]string{"swap", "--run", dir, "--out", out, "--kept", "decoder+mlp"}, `--kept: kept set "decoder+mlp": unknown group "mlp"`},
		{[]string{"swap", "--out", out}, `"run" not set`},
		{[]string{"swap", "--run", dir}, `"out" not set`},
		{[]string{"retrain", "--run", dir, "--out", out, "--parts", "outer,mlp"}, `--parts: unknown part "mlp"`},
		{[]string{"retrain", "--run", dir, "--out", out, "--stride", "0"}, "--stride"},
		{[]string{"retrain", "--run", dir, "--out", out, "--max-epochs", "0"}, "--max-epochs"},
		{[]string{"retrain", "--run", dir, "--out", out, "--seeds", "0"}, "--seeds"},
		{[]string{"retrain", "--run", dir, "--out", out, "--target", "2"}, "--target"},
	}
	for _, c := range cases {
		msg, err := run(append(c.args, "--quiet")...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want an error mentioning %q\n%s", c.args, err, c.want, msg)
		}
		if _, err := os.Stat(out); err == nil {
			t.Fatalf("%v: a refused command created its output directory", c.args)
		}
	}
}
