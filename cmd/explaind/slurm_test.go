package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/experiments/retrain"
	"github.com/explaind/explaind/internal/testrun"
	"github.com/explaind/explaind/npy"
)

// The scripts of deploy/slurm and the cluster of scripts/slurm-cluster.sh,
// relative to this package's directory (where go test runs its tests).
const (
	slurmSubmit  = "../../deploy/slurm/submit"
	slurmCluster = "../../scripts/slurm-cluster.sh"
)

// slurmStart starts the one-node Slurm cluster of scripts/slurm-cluster.sh
// (in $EXPLAIND_SLURM_DIR, else TMPDIR/explaind-slurm), or finds it running,
// and returns the environment that runs Slurm's commands against it. A
// cluster it started is stopped when the test ends. When the cluster cannot
// start, the test fails if CI is set and skips, with the reason, otherwise.
func slurmStart(t *testing.T) []string {
	t.Helper()
	script, err := filepath.Abs(slurmCluster)
	if err != nil {
		t.Fatal(err)
	}
	dir := os.Getenv("EXPLAIND_SLURM_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "explaind-slurm")
	}
	env := append(os.Environ(), "SLURM_CONF="+filepath.Join(dir, "slurm.conf"), "EXPLAIND_SLURM_POLL=0.5",
		"EXPLAIND_THREADS=", "OPENBLAS_NUM_THREADS=") // empty is unset for the job scripts
	if err := exec.Command(script, "status", dir).Run(); err == nil {
		t.Logf("using the Slurm cluster already running from %s", dir)
		return env
	}
	start := time.Now()
	out, err := exec.Command(script, "start", dir).CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("cannot start a one-node Slurm cluster (%s start %s): %v\n%s", script, dir, err, out)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Logf("started a one-node Slurm cluster in %v: %s", time.Since(start).Round(time.Millisecond), bytes.TrimSpace(out))
	t.Cleanup(func() {
		if out, err := exec.Command(script, "stop", dir).CombinedOutput(); err != nil {
			t.Errorf("%s stop %s: %v\n%s", script, dir, err, out)
		}
	})
	return env
}

// slurmSubmitWait runs deploy/slurm/submit --wait with args in the Slurm
// environment env and returns its error; the jobs it submitted are
// cancelled if it does not end within ten minutes. On failure the error
// carries submit's output and the jobs' logs in OUT.shards/logs.
func slurmSubmitWait(t *testing.T, env []string, out string, args ...string) error {
	t.Helper()
	submit, err := filepath.Abs(slurmSubmit)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, submit, append([]string{"--wait"}, args...)...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	ids := strings.Fields(stdout.String())
	t.Logf("submit %s: jobs %v, %v (%v)", strings.Join(args, " "), ids, time.Since(start).Round(time.Millisecond), err)
	if ctx.Err() != nil && len(ids) > 0 {
		c := exec.Command("scancel", ids...)
		c.Env = env
		c.Run()
	}
	if err == nil {
		return nil
	}
	var logs strings.Builder
	files, _ := filepath.Glob(filepath.Join(out+".shards", "logs", "*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		fmt.Fprintf(&logs, "--- %s:\n%s", f, b)
	}
	return fmt.Errorf("%v\n%s%s", err, stderr.Bytes(), logs.String())
}

// slurmExplaind writes an executable script that runs this test binary as
// the explaind binary (sigkillChildEnv), for the jobs of the cluster.
func slurmExplaind(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "explaind")
	script := fmt.Sprintf("#!/bin/sh\n%s=1 exec %s \"$@\"\n", sigkillChildEnv, strconv.Quote(exe))
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// slurmShim is a stand-in for explaind that does what the job scripts need
// of it: a shard (`epk|retrain --run R --out D --shard I/N FLAGS…`)
// records its arguments and thread settings in D and marks D done, or
// fails if the file $SHIM_FAIL.I exists; a rerun of a done shard changes
// nothing. `merge --out O D…` refuses a shard that is not done and writes
// the shards' records, in the order given, to O/merged.
const slurmShim = `#!/usr/bin/env bash
set -eu
kind=$1; shift
case $kind in
epk|retrain)
  all="$kind $*" out= sh=
  while [ $# -gt 0 ]; do case $1 in --out) out=$2; shift 2;; --shard) sh=$2; shift 2;; *) shift;; esac; done
  [ ! -e "$out/done" ] || exit 0
  mkdir -p "$out"
  if [ -e "$SHIM_FAIL.${sh%/*}" ]; then echo "shim: shard $sh fails" >&2; exit 3; fi
  echo "$all | GOMAXPROCS=$GOMAXPROCS OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS" >"$out/args"
  touch "$out/done" ;;
merge)
  out=$2; shift 2
  for d in "$@"; do [ -e "$d/done" ] || { echo "shim: $d is not done" >&2; exit 4; }; cat "$d/args"; done >"$out.tmp"
  mkdir -p "$out" && mv "$out.tmp" "$out/merged" ;;
*) exit 5 ;;
esac
`

// TestSlurm runs the job scripts of deploy/slurm on a one-node Slurm
// cluster of this machine (scripts/slurm-cluster.sh): the shards as a job
// array, the merge as a job that depends on it.
//
// scripts: with a stand-in for explaind (slurmShim), each shard task gets
// its shard, output directory, flags and thread settings; the merge gets
// the shards in order, and only once all succeeded; a failing shard makes
// submit --wait fail without a merge; resubmitting that shard alone (--only)
// completes the job.
//
// epk, retrain: the real commands (this test binary as explaind): a
// 4-shard EPK job (presets validation, grokking, components, kernel) and a
// 3-shard retrain job, merged, equal the unsharded commands' outputs run
// with the same thread count (1): EPK's per-test-sample arrays (those with
// a "test" axis) byte for byte, the others (summed over test samples:
// kernel, …) within 1e-6 of the largest magnitude of the array, its
// summary.json within 1e-9 relative but for wall time, peak memory,
// creation time and shard records, and kernel_residual, a rounding error,
// within 1e-6 (slurmRounding); retrain's CSV and figures byte for byte and
// its summary.json equal.
func TestSlurm(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Slurm cluster and runs jobs on it (about a minute)")
	}
	env := slurmStart(t)

	t.Run("scripts", func(t *testing.T) {
		root := t.TempDir()
		shim := filepath.Join(root, "shim")
		if err := os.WriteFile(shim, []byte(slurmShim), 0o755); err != nil {
			t.Fatal(err)
		}
		run := filepath.Join(root, "run")
		os.Mkdir(run, 0o755)
		out := filepath.Join(root, "out", "epk")
		fail := filepath.Join(root, "fail")
		env := append(slices.Clone(env), "SHIM_FAIL="+fail)
		os.WriteFile(fail+".2", nil, 0o644)
		args := []string{"-n", "4", "-c", "2", "--explaind", shim, "epk", run, out, "--preset", "validation,kernel", "--quiet"}
		if err := slurmSubmitWait(t, env, out, args...); err == nil {
			t.Error("submit --wait succeeded although shard 2 failed")
		}
		if _, err := os.Stat(filepath.Join(out, "merged")); err == nil {
			t.Error("the merge ran although shard 2 failed")
		}
		for i := range 4 {
			_, err := os.Stat(filepath.Join(fmt.Sprintf("%s.shards/%03d", out, i), "done"))
			if (err == nil) != (i != 2) {
				t.Errorf("shard %d: done %v, want %v", i, err == nil, i != 2)
			}
		}
		os.Remove(fail + ".2")
		if err := slurmSubmitWait(t, env, out, append([]string{"--only", "2"}, args...)...); err != nil {
			t.Fatalf("resubmitting shard 2: %v", err)
		}
		got, err := os.ReadFile(filepath.Join(out, "merged"))
		if err != nil {
			t.Fatal(err)
		}
		var want strings.Builder
		for i := range 4 {
			fmt.Fprintf(&want, "epk --run %s --out %s.shards/%03d --shard %d/4 --preset validation,kernel --quiet | GOMAXPROCS=2 OPENBLAS_NUM_THREADS=1\n",
				run, out, i, i)
		}
		if string(got) != want.String() {
			t.Errorf("the merge saw\n%s\nwant\n%s", got, want.String())
		}
		// Bad parameters are refused before anything is submitted.
		for _, bad := range [][]string{
			{"-n", "0", "--explaind", shim, "epk", run, out},
			{"-n", "2", "--explaind", shim, "train", run, out},
			{"-n", "2", "--explaind", shim, "epk", run, out, "--shard", "0/2"},
			{"-n", "2", "--explaind", filepath.Join(root, "none"), "epk", run, out},
			{"-n", "2", "--explaind", shim, "epk", filepath.Join(root, "none"), out},
		} {
			cmd := exec.Command(slurmSubmit, bad...)
			cmd.Env = env
			msg, err := cmd.CombinedOutput()
			if err == nil || !strings.HasPrefix(string(msg), "submit: ") || strings.Contains(string(msg), "job array") {
				t.Errorf("submit %v: %v\n%s; want a refusal before submitting", bad, err, msg)
			}
		}
	})

	t.Run("epk", func(t *testing.T) {
		modulo := []string{"--p", "7", "--train-size", "20", "--val-size", "8", "--d-model", "8", "--heads", "2", "--mlp", "12", "--lr", "0.01", "--quiet"}
		// A copy: a job may stamp the run it replays.
		runDir := testrun.Copy(t, trainTestRun(t, "modulo", append(modulo, "--epochs", "40", "--checkpoint-every", "10")...))
		root := t.TempDir()
		exe := slurmExplaind(t)
		flags := []string{"--preset", "validation,grokking,components,kernel", "--quadrature", "midpoint:2", "--quiet"}
		want, got := filepath.Join(root, "whole"), filepath.Join(root, "sharded")
		slurmReference(t, exe, append([]string{"epk", "--run", runDir, "--out", want}, flags...))
		if err := slurmSubmitWait(t, env, got, append([]string{"-n", "4", "--explaind", exe, "epk", runDir, got}, flags...)...); err != nil {
			t.Fatal(err)
		}
		slurmCompareEPK(t, want, got)
	})

	t.Run("retrain", func(t *testing.T) {
		runDir := testrun.Copy(t, swapTestRun(t))
		root := t.TempDir()
		exe := slurmExplaind(t)
		flags := []string{"--stride", "3", "--max-epochs", "2", "--seeds", "2", "--parts", "outer,attention", "--quiet"}
		want, got := filepath.Join(root, "whole"), filepath.Join(root, "sharded")
		slurmReference(t, exe, append([]string{"retrain", "--run", runDir, "--out", want}, flags...))
		if err := slurmSubmitWait(t, env, got, append([]string{"-n", "3", "--explaind", exe, "retrain", runDir, got}, flags...)...); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{retrain.CSVFile, retrain.FigureBase + ".svg", retrain.FigureBase + ".png"} {
			a, err1 := os.ReadFile(filepath.Join(want, f))
			b, err2 := os.ReadFile(filepath.Join(got, f))
			if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
				t.Errorf("%s of the merge differs from the unsharded job's (%v, %v)", f, err1, err2)
			}
		}
		slurmCompareJSON(t, filepath.Join(want, retrain.SummaryFile), filepath.Join(got, retrain.SummaryFile), 0)
	})
}

// slurmReference runs `explaind ARGS` unsharded with exe, with the thread
// settings of the shards (one thread each).
func slurmReference(t *testing.T, exe string, args []string) {
	t.Helper()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1", "OPENBLAS_NUM_THREADS=1")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	t.Logf("unsharded %s: %v", args[0], time.Since(start).Round(time.Millisecond))
}

// slurmCompareEPK fails the test where the merged EPK output got differs
// from the unsharded want (slurmDiffEPK).
func slurmCompareEPK(t *testing.T, want, got string) {
	t.Helper()
	testrun.OpenEPK(t, want)
	testrun.OpenEPK(t, got)
	diffs, err := slurmDiffEPK(want, got)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Error(d)
	}
}

// slurmDiffEPK lists the differences between the EPK outputs want and got
// beyond what a merge of shards may change: the same arrays, those per
// test sample (with a "test" axis) and the int64 ones byte for byte, the
// others (summed over test samples) within 1e-6 of their largest
// magnitude, |got − want| ≤ 1e-6·max|want|; summary.json as slurmDiffJSON
// with 1e-9.
func slurmDiffEPK(want, got string) ([]string, error) {
	w, err := epkfile.Open(want)
	if err != nil {
		return nil, err
	}
	g, err := epkfile.Open(got)
	if err != nil {
		return nil, err
	}
	names := func(o *epkfile.Output) []string {
		var s []string
		for n := range o.Manifest.Arrays {
			s = append(s, n)
		}
		slices.Sort(s)
		return s
	}
	if !slices.Equal(names(w), names(g)) {
		return []string{fmt.Sprintf("arrays of %s %v, of %s %v", got, names(g), want, names(w))}, nil
	}
	var diffs []string
	for _, name := range names(w) {
		info := w.Manifest.Arrays[name]
		wf, gf := filepath.Join(want, info.File), filepath.Join(got, g.Manifest.Arrays[name].File)
		if slices.Contains(info.Axes, "test") || info.Dtype == "int64" {
			a, err1 := os.ReadFile(wf)
			b, err2 := os.ReadFile(gf)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("array %s: %v, %v", name, err1, err2)
			}
			if !bytes.Equal(a, b) {
				diffs = append(diffs, fmt.Sprintf("array %s (axes %v): %s differs from %s", name, info.Axes, gf, wf))
			}
			continue
		}
		x, err := npy.Read(wf)
		if err != nil {
			return nil, err
		}
		y, err := npy.Read(gf)
		if err != nil {
			return nil, err
		}
		if !slices.Equal(x.Shape, y.Shape) {
			diffs = append(diffs, fmt.Sprintf("array %s: shape %v in %s, %v in %s", name, y.Shape, got, x.Shape, want))
			continue
		}
		scale := 0.0
		for _, v := range x.Data {
			scale = math.Max(scale, math.Abs(v))
		}
		worst, at := 0.0, -1
		for i := range x.Data {
			if d := math.Abs(x.Data[i] - y.Data[i]); d > worst || math.IsNaN(d) {
				worst, at = d, i
				if math.IsNaN(d) {
					break
				}
			}
		}
		if !(worst <= 1e-6*scale) {
			diffs = append(diffs, fmt.Sprintf("array %s: [%d] is %v in %s, %v in %s: they differ by %v > 1e-6 × %v",
				name, at, y.Data[at], got, x.Data[at], want, worst, scale))
		}
	}
	return append(diffs, slurmDiffJSON(filepath.Join(want, "summary.json"), filepath.Join(got, "summary.json"), 1e-9)...), nil
}

// slurmRounding holds the summary statistics that are rounding errors by
// definition, with the absolute bound within which a merge may change
// them: kernel_residual, the relative gap between the data kernel summed
// over training samples and the forward data contributions, is recomputed
// from the merged kernel, whose sums run in another order (7.6e-8 merged
// against 6.8e-8 unsharded on the tiny run of TestSlurm).
var slurmRounding = map[string]float64{"kernel_residual": 1e-6}

// slurmVolatile reports whether a top-level key of a summary may differ
// between a merged and an unsharded output: wall times, peak memory,
// creation times, and the record of the shards.
func slurmVolatile(key string) bool {
	return key == "wall_seconds" || key == "peak_rss_bytes" || key == "created" || strings.HasPrefix(key, "shard")
}

// slurmCompareJSON fails the test where the JSON files differ
// (slurmDiffJSON).
func slurmCompareJSON(t *testing.T, want, got string, tol float64) {
	t.Helper()
	for _, d := range slurmDiffJSON(want, got, tol) {
		t.Error(d)
	}
}

// slurmDiffJSON lists the differences between the JSON files want and got:
// the same keys (but the volatile ones at the top level), strings and
// booleans equal, numbers within tol relative, |a − b| ≤ tol·max(|a|, |b|),
// but the top-level rounding statistics of slurmRounding within theirs.
func slurmDiffJSON(want, got string, tol float64) []string {
	var w, g map[string]any
	for _, f := range []struct {
		path string
		v    *map[string]any
	}{{want, &w}, {got, &g}} {
		b, err := os.ReadFile(f.path)
		if err != nil {
			return []string{err.Error()}
		}
		if err := json.Unmarshal(b, f.v); err != nil {
			return []string{fmt.Sprintf("%s: %v", f.path, err)}
		}
	}
	for _, m := range []map[string]any{w, g} {
		for k := range m {
			if slurmVolatile(k) {
				delete(m, k)
			}
		}
	}
	var diffs []string
	differ := func(path string, a, b any) {
		diffs = append(diffs, fmt.Sprintf("%s: %s is %v, %v in %s (tolerance %g relative)", got, path, b, a, want, tol))
	}
	var diff func(path string, a, b any)
	diff = func(path string, a, b any) {
		switch a := a.(type) {
		case map[string]any:
			b, ok := b.(map[string]any)
			if !ok {
				differ(path, a, b)
				return
			}
			for k := range a {
				if _, ok := b[k]; !ok {
					differ(path+"."+k, a[k], nil)
				}
			}
			for k, v := range b {
				if _, ok := a[k]; !ok {
					differ(path+"."+k, nil, v)
					continue
				}
				diff(path+"."+k, a[k], v)
			}
		case []any:
			b, ok := b.([]any)
			if !ok || len(a) != len(b) {
				differ(path, a, b)
				return
			}
			for i := range a {
				diff(fmt.Sprintf("%s[%d]", path, i), a[i], b[i])
			}
		case float64:
			bf, ok := b.(float64)
			bound := tol * math.Max(math.Abs(a), math.Abs(bf))
			if r, isRounding := slurmRounding[strings.TrimPrefix(path, "summary.")]; isRounding {
				bound = r
			}
			if !ok || !(math.Abs(a-bf) <= bound) {
				differ(path, a, b)
			}
		default:
			if a != b {
				differ(path, a, b)
			}
		}
	}
	diff("summary", w, g)
	return diffs
}

// TestSlurmDiff: the comparisons of TestSlurm find nothing between two
// copies of one EPK output, nor where only wall time and peak memory
// differ, nor a summed array off by 1e-9 relative; they find a byte
// changed in a per-test-sample array, a summed array off by 1e-3 of its
// largest magnitude or NaN, a summary statistic off by 1e-6 relative, and
// kernel_residual off by more than its bound of 1e-6.
func TestSlurmDiff(t *testing.T) {
	modulo := []string{"--p", "7", "--train-size", "20", "--val-size", "8", "--d-model", "8", "--heads", "2", "--mlp", "12", "--lr", "0.01", "--quiet"}
	runDir := testrun.Copy(t, trainTestRun(t, "modulo", append(modulo, "--epochs", "40", "--checkpoint-every", "10")...))
	want := filepath.Join(t.TempDir(), "epk")
	if out, err := run("epk", "--run", runDir, "--out", want, "--preset", "validation,grokking,components,kernel", "--quadrature", "midpoint:2", "--quiet"); err != nil {
		t.Fatalf("epk: %v\n%s", err, out)
	}
	o := testrun.OpenEPK(t, want)
	var perSample, summed string
	for name, info := range o.Manifest.Arrays {
		switch {
		case slices.Contains(info.Axes, "test") && (perSample == "" || name < perSample):
			perSample = name
		case !slices.Contains(info.Axes, "test") && info.Dtype != "int64" && (summed == "" || name < summed):
			summed = name
		}
	}
	if perSample == "" || summed == "" {
		t.Fatalf("the output holds no per-sample (%q) or no summed (%q) float array", perSample, summed)
	}
	var sum map[string]any
	if b, err := os.ReadFile(filepath.Join(want, "summary.json")); err != nil || json.Unmarshal(b, &sum) != nil {
		t.Fatalf("summary.json: %v", err)
	}
	kr, _ := sum["kernel_residual"].(float64)
	if !(kr > 0 && kr < 1e-6) {
		t.Fatalf("kernel_residual %v: want a rounding error in (0, 1e-6)", sum["kernel_residual"])
	}
	// edit returns a copy of want changed by f.
	edit := func(f func(dir string)) string {
		dir := testrun.Copy(t, want)
		f(dir)
		return dir
	}
	editJSON := func(dir, key string, scale float64) {
		path := filepath.Join(dir, "summary.json")
		var m map[string]any
		b, _ := os.ReadFile(path)
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		v, ok := m[key].(float64)
		if !ok || v == 0 {
			t.Fatalf("summary.json: %s is %v, want a non-zero number", key, m[key])
		}
		m[key] = v * scale
		b, _ = json.Marshal(m)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	editSummed := func(dir string, f func(v, max float64) float64) {
		info := o.Manifest.Arrays[summed]
		a, err := npy.Read(filepath.Join(dir, info.File))
		if err != nil {
			t.Fatal(err)
		}
		big, at := 0.0, 0
		for i, v := range a.Data {
			if math.Abs(v) > big {
				big, at = math.Abs(v), i
			}
		}
		a.Data[at] = f(a.Data[at], big)
		write := npy.WriteFile[float64]
		if info.Dtype == "float32" {
			write = npy.WriteFloat32
		}
		if err := write(filepath.Join(dir, info.File), a.Shape, a.Data); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name string
		dir  string
		want string // "" for no difference, else a word of the one difference
	}{
		{"a copy", edit(func(string) {}), ""},
		{"wall time and memory", edit(func(d string) { editJSON(d, "wall_seconds", 3); editJSON(d, "peak_rss_bytes", 2) }), ""},
		{"summed array within 1e-9", edit(func(d string) { editSummed(d, func(v, _ float64) float64 { return v * (1 + 1e-9) }) }), ""},
		{"summed array off by 1e-3", edit(func(d string) { editSummed(d, func(v, m float64) float64 { return v + 1e-3*m }) }), summed},
		{"summed array NaN", edit(func(d string) { editSummed(d, func(float64, float64) float64 { return math.NaN() }) }), summed},
		{"a statistic off by 1e-6", edit(func(d string) { editJSON(d, "mean_abs_delta", 1+1e-6) }), "mean_abs_delta"},
		{"a rounding statistic within its bound", edit(func(d string) { editJSON(d, "kernel_residual", 1.5) }), ""},
		{"a rounding statistic off by 2e-6", edit(func(d string) { editJSON(d, "kernel_residual", 2e-6/kr+1) }), "kernel_residual"},
		{"a per-sample byte", edit(func(d string) {
			path := filepath.Join(d, o.Manifest.Arrays[perSample].File)
			b, _ := os.ReadFile(path)
			b[len(b)-1] ^= 1
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}), perSample},
	}
	for _, c := range cases {
		diffs, err := slurmDiffEPK(want, c.dir)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		switch {
		case c.want == "" && len(diffs) > 0:
			t.Errorf("%s: differences %q, want none", c.name, diffs)
		case c.want != "" && (len(diffs) != 1 || !strings.Contains(diffs[0], c.want)):
			t.Errorf("%s: differences %q, want one naming %s", c.name, diffs, c.want)
		}
	}
}

// TestKubernetesJobs runs the pods of deploy/k8s's Indexed Job and merge
// Job as their manifests say, here, without Kubernetes or the image: the
// container's command and args (with /data a temporary directory and the
// stand-in slurmShim as explaind), JOB_COMPLETION_INDEX 0 … completions−1
// and the thread count from the CPU limit. Each pod runs its shard into
// OUT.shards/III; the merge gets them all, in order. The manifests agree
// on the output and the shard count with each other, and on the scripts'
// path with the Dockerfile. Without an index the shard script refuses.
func TestKubernetesJobs(t *testing.T) {
	read := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	shards, merge, docker := read("../../deploy/k8s/epk-shards.yaml"), read("../../deploy/k8s/merge.yaml"), read("../../Dockerfile")
	// field returns the submatches of re in the manifest text s.
	field := func(s, re string) []string {
		m := regexp.MustCompile(re).FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("no match of %s", re)
		}
		return m[1:]
	}
	n, err := strconv.Atoi(field(shards, `(?m)^\s+completions: (\d+)`)[0])
	if err != nil || n < 1 {
		t.Fatalf("completions %d (%v)", n, err)
	}
	if !strings.Contains(shards, "completionMode: Indexed") {
		t.Error("the shards' Job is not an Indexed Job")
	}
	yamlList := func(s string) []string { // a flow sequence of plain and "quoted" scalars
		var out []string
		for _, f := range strings.Split(s, ", ") {
			out = append(out, strings.Trim(f, `"`))
		}
		return out
	}
	cmd := field(shards, `(?m)^\s+command: \[(\S+)\]`)[0]
	args := yamlList(field(shards, `(?m)^\s+args: \[(.*)\]`)[0])
	mcmd := field(merge, `(?m)^\s+command: \[(\S+)\]`)[0]
	margs := yamlList(field(merge, `(?m)^\s+args: \[(.*)\]`)[0])
	if len(args) < 4 || args[3] != strconv.Itoa(n) {
		t.Fatalf("the shards' args %q: want KIND RUN OUT N FLAGS… with N = completions = %d", args, n)
	}
	if !slices.Equal(margs, []string{args[2], args[3]}) {
		t.Errorf("the merge's args %q, want OUT N = %q", margs, args[2:4])
	}
	dest := field(docker, `(?m)^COPY deploy/slurm/shard.sbatch deploy/slurm/merge.sbatch (\S+)/$`)[0]
	if cmd != dest+"/shard.sbatch" || mcmd != dest+"/merge.sbatch" {
		t.Errorf("the Jobs run %s and %s; the Dockerfile puts the scripts in %s", cmd, mcmd, dest)
	}

	root := t.TempDir()
	shim := filepath.Join(root, "shim")
	if err := os.WriteFile(shim, []byte(slurmShim), 0o755); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(root, "data")
	local := func(a []string) []string {
		var out []string
		for _, s := range a {
			out = append(out, strings.Replace(s, "/data/", data+"/", 1))
		}
		return out
	}
	pod := func(script string, args []string, env ...string) ([]byte, error) {
		c := exec.Command(filepath.Join("../../deploy/slurm", filepath.Base(script)), local(args)...)
		// Empty is unset for the scripts: no index, thread settings or
		// explaind of the test's environment leaks into the pods.
		c.Env = append(os.Environ(), "SLURM_ARRAY_TASK_ID=", "JOB_COMPLETION_INDEX=", "EXPLAIND_THREADS=", "OPENBLAS_NUM_THREADS=",
			"EXPLAIND="+shim, "SHIM_FAIL="+filepath.Join(root, "never"))
		c.Env = append(c.Env, env...)
		return c.CombinedOutput()
	}
	if msg, err := pod(cmd, args); err == nil || !strings.Contains(string(msg), "JOB_COMPLETION_INDEX") {
		t.Errorf("a shard without an index: %v\n%s", err, msg)
	}
	for i := range n {
		if msg, err := pod(cmd, args, "JOB_COMPLETION_INDEX="+strconv.Itoa(i), "EXPLAIND_THREADS=2"); err != nil {
			t.Fatalf("pod %d: %v\n%s", i, err, msg)
		}
	}
	if msg, err := pod(mcmd, margs); err != nil {
		t.Fatalf("merge: %v\n%s", err, msg)
	}
	got, err := os.ReadFile(filepath.Join(local(args[2:3])[0], "merged"))
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	l := local(args)
	for i := range n {
		fmt.Fprintf(&want, "%s --run %s --out %s.shards/%03d --shard %d/%d %s | GOMAXPROCS=2 OPENBLAS_NUM_THREADS=1\n",
			l[0], l[1], l[2], i, i, n, strings.Join(l[4:], " "))
	}
	if string(got) != want.String() {
		t.Errorf("the merge saw\n%s\nwant\n%s", got, want.String())
	}
}
