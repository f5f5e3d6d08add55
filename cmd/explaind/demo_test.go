package main

import (
	"encoding/json"
	"github.com/explaind/explaind/epkfile"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/explaind/explaind/internal/testrun"
	"github.com/explaind/explaind/train"
)

// tinyDemo swaps the demo's plan for a tiny modulo run (p = 7, 8 steps at
// most, a low accuracy target) for the duration of the test.
func tinyDemo(t *testing.T) {
	t.Helper()
	old := demoDefaults
	t.Cleanup(func() { demoDefaults = old })
	demoDefaults = func() demoPlan {
		c := testrun.Modulo(8, 4)
		c.Optimizer.LR = 0.01
		c.StopAtPerfect, c.StopAccuracy = true, 0.5
		return demoPlan{Train: c, TestSize: 6, Presets: demoPresets, SwapEvery: 2}
	}
}

// demoStages splits the demo's output into its five stages and says for
// each whether it reused a finished output.
func demoStages(t *testing.T, out string) []bool {
	t.Helper()
	parts := regexp.MustCompile(`(?m)^[1-5]/5 `).Split(out, -1)
	if len(parts) != 6 {
		t.Fatalf("want 5 numbered stages, got %d:\n%s", len(parts)-1, out)
	}
	var reused []bool
	for _, p := range parts[1:] {
		reused = append(reused, strings.Contains(p, "reused the finished output"))
	}
	return reused
}

func TestDemo(t *testing.T) {
	tinyDemo(t)
	dir := filepath.Join(t.TempDir(), "demo")
	out, err := run("demo", "--out", dir, "--quiet")
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	t.Logf("first run:\n%s", out)
	if got := demoStages(t, out); slices.Contains(got, true) {
		t.Errorf("a fresh demo reused stages %v", got)
	}
	for _, want := range []string{"argmax agreement", "max |EPK − model|", "max completeness residual", "open the report: " + filepath.Join(dir, "report.html")} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q", want)
		}
	}

	var rs train.Summary
	readTestJSON(t, filepath.Join(dir, "run", "summary.json"), &rs)
	if !rs.Done || rs.Steps == 0 {
		t.Errorf("run summary: %+v", rs)
	}
	var es map[string]any
	readTestJSON(t, filepath.Join(dir, "epk", "summary.json"), &es)
	if a, ok := es["argmax_agreement"].(float64); !ok || a < 0 || a > 1 {
		t.Errorf("epk/summary.json: argmax_agreement %v", es["argmax_agreement"])
	}
	if n, _ := es["test_samples"].(float64); n != 6 {
		t.Errorf("epk/summary.json: test_samples %v, want 6", es["test_samples"])
	}
	var cs map[string]any
	readTestJSON(t, filepath.Join(dir, "components", "summary.json"), &cs)
	if g, _ := cs["groups"].([]any); len(g) == 0 {
		t.Errorf("components/summary.json has no groups: %v", cs)
	}
	var ss map[string]any
	readTestJSON(t, filepath.Join(dir, "swap", "summary.json"), &ss)
	if ss["complete"] != true || ss["final_step"] != float64(rs.Steps) {
		t.Errorf("swap/summary.json: complete %v, final step %v (run: %d steps)", ss["complete"], ss["final_step"], rs.Steps)
	}
	html, err := os.ReadFile(filepath.Join(dir, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(html), "data:image/png;base64,"); n < 5 {
		t.Errorf("report.html inlines %d figures", n)
	}
	for _, sub := range []string{"components", "swap"} {
		if !strings.Contains(string(html), filepath.Join(dir, sub)) {
			t.Errorf("report.html does not show %s", sub)
		}
	}
	figs, _ := filepath.Glob(filepath.Join(dir, "report_figures", "*.png"))
	if len(figs) == 0 {
		t.Error("no figures in report_figures")
	}
	runInfo, err := os.Stat(filepath.Join(dir, "run", "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}

	// A rerun reuses every finished stage and rebuilds the report.
	out, err = run("demo", "--out", dir, "--quiet")
	if err != nil {
		t.Fatalf("rerun: %v\n%s", err, out)
	}
	if got := demoStages(t, out); !slices.Equal(got, []bool{true, true, true, true, false}) {
		t.Errorf("rerun: reused %v, want the first four stages\n%s", got, out)
	}
	if info, err := os.Stat(filepath.Join(dir, "run", "manifest.json")); err != nil || !info.ModTime().Equal(runInfo.ModTime()) {
		t.Error("the rerun rewrote the training run")
	}

	// Without the EPK output the rerun recomputes it and the components
	// made from it; the swap experiment does not depend on it.
	if err := os.RemoveAll(filepath.Join(dir, "epk")); err != nil {
		t.Fatal(err)
	}
	out, err = run("demo", "--out", dir, "--quiet")
	if err != nil {
		t.Fatalf("rerun without epk: %v\n%s", err, out)
	}
	if got := demoStages(t, out); !slices.Equal(got, []bool{true, false, false, true, false}) {
		t.Errorf("rerun without epk: reused %v\n%s", got, out)
	}

	// Other EPK settings are refused, naming the ones that would reuse it.
	if out, err := run("demo", "--out", dir, "--quiet", "--test-size", "5"); err == nil || !strings.Contains(err.Error(), "--test-size 6") {
		t.Errorf("another --test-size: %v\n%s", err, out)
	}
	if _, err := run("demo", "--out", dir, "--quiet", "--test-size", "1"); err == nil || !strings.Contains(err.Error(), "--test-size") {
		t.Errorf("--test-size 1: %v", err)
	}
}

func readTestJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestDemoTestIndices checks the demo's choice of validation samples on
// its own run: 8 of each of 4 labels, in split order, so that the
// components stage has 4 × 28 same-label pairs.
func TestDemoTestIndices(t *testing.T) {
	plan := demoDefaults()
	idx, err := demoTestIndices(plan.Train, plan.TestSize, demoPerLabel)
	if err != nil {
		t.Fatal(err)
	}
	d, err := train.LoadData[float32](&plan.Train)
	if err != nil {
		t.Fatal(err)
	}
	if len(idx) != plan.TestSize || !slices.IsSorted(idx) {
		t.Fatalf("got %d indices (sorted %v), want %d in split order", len(idx), slices.IsSorted(idx), plan.TestSize)
	}
	count := map[int]int{}
	for _, i := range idx {
		count[d.ModuloVal.Pairs[i].Label]++
	}
	pairs := 0
	for l, c := range count {
		if c != demoPerLabel {
			t.Errorf("label %d has %d samples, want %d", l, c, demoPerLabel)
		}
		pairs += c * (c - 1) / 2
	}
	if want := plan.TestSize / demoPerLabel * demoPerLabel * (demoPerLabel - 1) / 2; pairs != want {
		t.Errorf("%d same-label pairs, want %d", pairs, want)
	}
	t.Logf("labels %v, %d same-label pairs", count, pairs)
}

// TestDemoPaperPlan checks that --paper takes the paper's settings (the
// 2000-sample validation split of p = 113) and that a test size the split
// cannot serve is refused before any work.
func TestDemoPaperPlan(t *testing.T) {
	p := paperPlan()
	if p.Train.Modulo.P != 113 || p.Train.Modulo.ValSize != 2000 || p.TestSize != 2000 || train.AccuracyTarget(p.Train.StopAccuracy) != 0.99 {
		t.Errorf("paper plan %+v (modulo %+v)", p, p.Train.Modulo)
	}
	if !slices.Contains(p.Presets, epkfile.History) || !slices.Contains(p.Presets, epkfile.Components) {
		t.Errorf("paper plan presets %v, want the demo's and the history", p.Presets)
	}
	dir := filepath.Join(t.TempDir(), "paper")
	out, err := run("demo", "--paper", "--out", dir, "--test-size", "2001", "--quiet")
	if err == nil || !strings.Contains(err.Error(), "the validation split has 2000 samples") {
		t.Fatalf("demo --paper --test-size 2001: %v, want the split's size in the error\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "run")); err == nil {
		t.Error("the refused demo started training")
	}
}
