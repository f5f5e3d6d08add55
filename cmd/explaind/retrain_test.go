package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
