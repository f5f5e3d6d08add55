package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/lock"
	"github.com/explaind/explaind/internal/testrun"
)

func TestMain(m *testing.M) { testrun.Main(m) }

// run executes the command line and returns its output and error.
func run(args ...string) (string, error) {
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := execute(cmd)
	return out.String(), err
}

var tiny = []string{"--p", "7", "--train-size", "20", "--val-size", "8", "--d-model", "8", "--heads", "2", "--mlp", "12", "--epochs", "6", "--checkpoint-every", "4", "--lr", "0.01", "--quiet"}

// trainTestRun returns the run that `explaind train TASK ARGS` makes,
// trained once for all the tests of the binary (testrun.Dir): a test must
// not modify it, and takes a testrun.Copy when it must. A CNN run reads
// the fabricated CIFAR-2 data of testrun.WriteCIFAR beside it (30 records
// per file: 20 test images), given as its --data-dir.
func trainTestRun(t *testing.T, task string, args ...string) string {
	t.Helper()
	return testrun.Dir(t, task+" "+strings.Join(args, " "), func(dir string) error {
		cmd := append([]string{"train", task, "--out", dir}, args...)
		if task == "cnn" {
			root := filepath.Dir(dir)
			if err := testrun.WriteCIFAR(filepath.Join(root, "cifar-10-batches-bin"), 30); err != nil {
				return err
			}
			cmd = append(cmd, "--dataset", "cifar2", "--data-dir", root)
		}
		if out, err := run(cmd...); err != nil {
			return fmt.Errorf("train %s: %w\n%s", task, err, out)
		}
		return nil
	})
}

func TestTrainVerifyAndTamper(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	out, err := run(append([]string{"train", "modulo", "--out", dir}, tiny...)...)
	if err != nil {
		t.Fatalf("train: %v\n%s", err, out)
	}
	if !strings.Contains(out, `"steps": 6`) {
		t.Errorf("train output lacks the summary: %s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "summary.json")); err != nil {
		t.Error("no summary.json")
	}
	out, err = run("verify", "--quiet", dir)
	if err != nil || !strings.Contains(out, "all 6 steps") {
		t.Fatalf("verify of an untouched run: %v\n%s", err, out)
	}
	// Tamper with a recorded learning rate: verify must fail, naming the step.
	path := filepath.Join(dir, "manifest.json")
	b, _ := os.ReadFile(path)
	i := bytes.Index(b, []byte(`"steps"`))
	j := i + bytes.Index(b[i:], []byte(`"lr": 0.01`))
	b = append(b[:j:j], append([]byte(`"lr": 0.02`), b[j+len(`"lr": 0.01`):]...)...)
	os.WriteFile(path, b, 0o644)
	if _, err := run("verify", "--quiet", dir); err == nil || !strings.Contains(err.Error(), "step 0 does not reproduce") {
		t.Errorf("verify of a tampered run: %v", err)
	}
	// The run directory exists now.
	if _, err := run(append([]string{"train", "modulo", "--out", dir}, tiny...)...); err == nil || !strings.Contains(err.Error(), "--overwrite") {
		t.Errorf("existing run: %v", err)
	}
}

func TestBadFlags(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "r")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"train", "modulo", "--out", dir, "--p", "2"}, "--p"},
		{[]string{"train", "modulo", "--out", dir, "--train-size", "-5"}, "--train-size"},
		{[]string{"train", "modulo", "--out", dir, "--epochs", "0"}, "--epochs"},
		{[]string{"train", "cnn", "--out", dir, "--dataset", "imagenet"}, "--dataset"},
		{[]string{"train", "cnn", "--out", dir, "--dataset", "cifar2"}, "--data-dir"},
		{[]string{"train", "modulo"}, "out"},
		{[]string{"verify", dir}, "not a run directory"},
		{[]string{"train"}, "--resume"},
	}
	for _, c := range cases {
		_, err := run(c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want an error mentioning %q", c.args, err, c.want)
		}
	}
	if _, err := os.Stat(dir); err == nil {
		t.Error("a refused command left a run directory behind")
	}
}

// TestOneWriterPerRun: while another process writes a run, resuming it is
// refused with that process's PID, and verify checks the run but leaves
// its stamp alone; a demo into a directory being written is refused.
func TestOneWriterPerRun(t *testing.T) {
	dir := testrun.Copy(t, trainTestRun(t, "modulo", tiny...))
	stamp := filepath.Join(dir, history.StampFile)
	os.Remove(stamp)
	held, err := lock.Dir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("another explaind process (PID %d) is writing to %s; wait for it to finish or stop it", os.Getpid(), dir)
	if _, err := run("train", "--resume", dir, "--quiet"); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("train --resume of a locked run: %v; want %q", err, want)
	}
	out, err := run("verify", "--quiet", dir)
	if err != nil || !strings.Contains(out, "all 6 steps") || !strings.Contains(out, "not stamped: "+want) {
		t.Errorf("verify of a run being written: %v\n%s", err, out)
	}
	if _, err := os.Stat(stamp); !os.IsNotExist(err) {
		t.Errorf("verify stamped a run being written: %v", err)
	}
	held.Release()
	if out, err := run("verify", "--quiet", dir); err != nil || strings.Contains(out, "not stamped") {
		t.Errorf("verify of a free run: %v\n%s", err, out)
	}
	if _, err := os.Stat(stamp); err != nil {
		t.Errorf("verify did not stamp a free run: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, lock.Name)); !os.IsNotExist(err) {
		t.Errorf("verify left its lock file: %v", err)
	}

	demo := t.TempDir()
	held, err = lock.Dir(demo)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	if _, err := run("demo", "--quiet", "--out", demo); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("demo: --out: another explaind process (PID %d) is writing to %s", os.Getpid(), demo)) {
		t.Errorf("demo into a locked --out: %v", err)
	}
}
