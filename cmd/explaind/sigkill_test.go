package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/lock"
	"github.com/explaind/explaind/internal/testrun"
)

// sigkillChildEnv, when set in a process's environment, makes the test
// binary the explaind binary: init runs the command line of its
// arguments as main does and exits, before any test runs.
// TestSIGKILLResume starts it so, to kill it.
const sigkillChildEnv = "EXPLAIND_SIGKILL_CHILD"

func init() {
	if _, ok := os.LookupEnv(sigkillChildEnv); !ok {
		return
	}
	if err := execute(newRootCmd()); err != nil {
		fmt.Fprintln(os.Stderr, "explaind:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// sigkillCommand starts the test binary as `explaind ARGS` (see
// sigkillChildEnv) in the directory dir.
func sigkillCommand(t *testing.T, dir string, args []string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Dir = dir
	// A killed child leaves what it made under TMPDIR (none of the
	// commands tested writes there): keep that in the test's directory.
	cmd.Env = append(os.Environ(), sigkillChildEnv+"=1", "TMPDIR="+t.TempDir())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	return cmd, &out
}

// sigkillRun runs `explaind ARGS` to its end and returns how long it took;
// it fails the test if the command fails.
func sigkillRun(t *testing.T, dir string, args []string) time.Duration {
	t.Helper()
	cmd, out := sigkillCommand(t, dir, args)
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return time.Since(start)
}

// A sigkillCase is one command killed and resumed.
type sigkillCase struct {
	name string
	// args returns the command line writing into out; resume, if set,
	// the one that continues what a killed args left in out.
	args, resume func(out string) []string
	// volatile names, per file (a path relative to out, / separated), the
	// top-level keys of a JSON file (or of every line of a JSON Lines
	// file) that legitimately differ between two runs of the command;
	// ignore names the files that legitimately exist or differ (a cache).
	volatile map[string][]string
	ignore   []string
}

// TestSIGKILLResume: each command killed with SIGKILL three times at
// random moments within the duration of an uninterrupted run, then
// rerun (the same command; for train, train --resume once the run's
// manifest exists) until it finishes, leaves outputs byte-identical to
// the uninterrupted run's, except the wall times, peak memory and
// creation times named by the cases' volatile keys (and train's
// verified.json, a cache that only an uninterrupted training writes).
// The lock file a killed process leaves does not block the rerun.
// EXPLAIND_SIGKILL_SEED=N replays the delays of a logged seed.
func TestSIGKILLResume(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills explaind processes (about 30 s)")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("EXPLAIND_SIGKILL_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (EXPLAIND_SIGKILL_SEED=%d replays it)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	modulo := []string{"--p", "7", "--train-size", "20", "--val-size", "8", "--d-model", "8", "--heads", "2", "--mlp", "12", "--lr", "0.01", "--quiet"}
	epkRun := trainTestRun(t, "modulo", append(slices.Clone(modulo), "--epochs", "40", "--checkpoint-every", "10")...)
	retrainRun := swapTestRun(t)
	pruneRun := pruneTestRun(t)
	root := t.TempDir()
	pruneEPK := filepath.Join(root, "prune-epk")
	mags := finalMagnitudes(t, pruneRun)
	fakeEPK(t, pruneRun, pruneEPK, "", []string{epkfile.Validation, epkfile.Pruning}, []int{0, 2, 3, 5, 7, 8, 11, 12, 13, 17, 18, 19},
		func(name string, n int) []float64 { return mags[name] }, nil)

	epkVolatile := map[string][]string{"summary.json": {"wall_seconds", "peak_rss_bytes"}, "manifest.json": {"created"}}
	// A sharded job: shard 1 of 4 is killed and rerun, then merged with
	// the other three (killed and rerun too) into the unsharded job's
	// output, which the test checks after the cases.
	shardArgs := func(i int, out string) []string {
		return []string{"epk", "--quiet", "--run", epkRun, "--out", out, "--preset", "validation,grokking,components,kernel,pruning",
			"--quadrature", "midpoint:2", "--save-every", "1ns", "--shard", fmt.Sprintf("%d/4", i)}
	}
	unsharded := filepath.Join(root, "unsharded")
	args := shardArgs(0, unsharded)
	if msg, err := run(args[:len(args)-2]...); err != nil { // without --shard
		t.Fatalf("the unsharded job: %v\n%s", err, msg)
	}
	shards := []string{"", filepath.Join(root, "epk-shard", "got"), "", ""}
	for _, i := range []int{0, 2, 3} {
		shards[i] = filepath.Join(root, fmt.Sprint("shard-", i))
		if msg, err := run(shardArgs(i, shards[i])...); err != nil {
			t.Fatalf("shard %d: %v\n%s", i, err, msg)
		}
	}
	cases := []sigkillCase{{
		name: "train",
		args: func(out string) []string {
			return append([]string{"train", "modulo", "--out", out, "--epochs", "200", "--checkpoint-every", "10"}, modulo...)
		},
		resume: func(out string) []string { return []string{"train", "--resume", out, "--quiet"} },
		volatile: map[string][]string{"summary.json": {"wall_seconds", "bytes_on_disk"}, history.ManifestFile: {"created"},
			"metrics.jsonl": {"seconds"}},
		ignore: []string{history.StampFile},
	}, {
		name: "epk-forward",
		args: func(out string) []string {
			return []string{"epk", "--quiet", "--run", epkRun, "--out", out, "--preset", "validation,grokking,components,history", "--snapshot-every", "7", "--save-every", "1ns"}
		},
		volatile: epkVolatile,
	}, {
		name: "epk-kernel",
		args: func(out string) []string {
			return []string{"epk", "--quiet", "--run", epkRun, "--out", out, "--preset", "kernel", "--quadrature", "midpoint:2", "--save-every", "1ns"}
		},
		volatile: epkVolatile,
	}, {
		name:     "epk-shard",
		args:     func(out string) []string { return shardArgs(1, out) },
		volatile: epkVolatile,
	}, {
		name:     "merge",
		args:     func(out string) []string { return append([]string{"merge", "--out", out}, shards...) },
		volatile: map[string][]string{"summary.json": {"peak_rss_bytes"}, "manifest.json": {"created"}},
	}, {
		name: "retrain",
		args: func(out string) []string {
			return []string{"retrain", "--run", retrainRun, "--out", out, "--stride", "1", "--max-epochs", "20", "--seeds", "2", "--parts", "outer,attention", "--quiet"}
		},
	}, {
		name: "prune",
		args: func(out string) []string {
			return []string{"prune", "--run", pruneRun, "--epk", pruneEPK, "--out", out, "--fractions", "0,0.05,0.1,0.2,0.5,1", "--seeds", "3", "--quiet"}
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(root, c.name)
			want, got := filepath.Join(dir, "want"), filepath.Join(dir, "got")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			d := sigkillRun(t, dir, c.args(want))
			t.Logf("uninterrupted: %v", d.Round(time.Millisecond))
			args := c.args(got)
			finished := false
			for i := 0; i < 3 && !finished; i++ {
				delay := time.Duration(rng.Int64N(int64(d)))
				cmd, out := sigkillCommand(t, dir, args)
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				exited := make(chan error, 1)
				go func() { exited <- cmd.Wait() }()
				select {
				case err := <-exited:
					if err != nil {
						t.Fatalf("%v (before the kill after %v): %v\n%s", args, delay, err, out)
					}
					finished = true
					t.Logf("kill %d: %v after the start: %v had already finished", i+1, delay, args[:2])
				case <-time.After(delay):
					cmd.Process.Signal(syscall.SIGKILL)
					err := <-exited
					t.Logf("kill %d: %v after the start of %v: %v", i+1, delay, args[:2], err)
					var ee *exec.ExitError
					if errors.As(err, &ee) && ee.Success() {
						finished = true // it finished just before the signal
					}
				}
				if c.resume != nil {
					if _, err := os.Stat(filepath.Join(got, history.ManifestFile)); err == nil {
						args = c.resume(got)
					}
				}
			}
			if !finished {
				sigkillRun(t, dir, args)
			}
			sigkillCompare(t, want, got, c)
		})
	}
	testrun.SameMerged(t, unsharded, filepath.Join(root, "merge", "got"), testrun.Float32KernelBound)
}

// sigkillCompare checks that the directories want and got hold the same
// files, byte for byte, except c's volatile keys and ignored files, and
// the lock file; temporary files a killed write left behind are logged.
func sigkillCompare(t *testing.T, want, got string, c sigkillCase) {
	t.Helper()
	files := func(dir string) []string {
		var out []string
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(dir, path)
			rel = filepath.ToSlash(rel)
			switch {
			case rel == lock.Name || slices.Contains(c.ignore, rel):
			case strings.Contains(d.Name(), ".tmp"):
				t.Logf("%s: a temporary file left by a killed write: %s", dir, rel)
			default:
				out = append(out, rel)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	w, g := files(want), files(got)
	if !slices.Equal(w, g) {
		t.Fatalf("files after the kills %v,\nuninterrupted %v", g, w)
	}
	for _, f := range w {
		a, err := os.ReadFile(filepath.Join(want, f))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(got, f))
		if err != nil {
			t.Fatal(err)
		}
		keys, ok := c.volatile[f]
		if !ok {
			if !bytes.Equal(a, b) {
				t.Errorf("%s differs from the uninterrupted run's", f)
			}
			continue
		}
		if !reflect.DeepEqual(sigkillStable(t, f, a, keys), sigkillStable(t, f, b, keys)) {
			t.Errorf("%s differs from the uninterrupted run's beyond the keys %v:\n%s\nwant\n%s", f, keys, b, a)
		}
	}
}

// sigkillStable decodes the JSON (or, for .jsonl, JSON Lines) file f
// with the top-level keys removed.
func sigkillStable(t *testing.T, f string, b []byte, keys []string) []map[string]any {
	t.Helper()
	lines := [][]byte{b}
	if strings.HasSuffix(f, ".jsonl") {
		lines = bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	}
	var out []map[string]any
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, k := range keys {
			if _, ok := m[k]; !ok {
				t.Errorf("%s has no key %q", f, k)
			}
			delete(m, k)
		}
		out = append(out, m)
	}
	return out
}
