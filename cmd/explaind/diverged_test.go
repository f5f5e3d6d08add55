package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/history"
)

// TestDivergedRunIsRefused trains a run whose loss diverges (a learning
// rate of 1e30) and checks that train reports it, and that verify and epk
// refuse the run, naming the step, even with a verification stamp.
func TestDivergedRunIsRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	args := append([]string{"train", "modulo", "--out", dir}, tiny...)
	args = append(args, "--lr", "1e30")
	out, err := run(args...)
	if err == nil || !strings.Contains(err.Error(), "diverged") {
		t.Fatalf("training at a learning rate of 1e30: %v\n%s", err, out)
	}
	m, err := history.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	step, ok := m.Diverged()
	if !ok {
		t.Fatalf("the manifest does not record the divergence: stop reason %q, %d steps, checkpoints %v", m.StopReason, len(m.Steps), m.Checkpoints)
	}
	want := history.DivergedReason(step)
	if _, err := run("verify", "--quiet", dir); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("verify of the diverged run: %v, want an error saying %q", err, want)
	}
	if err := history.WriteStamp(dir, len(m.Steps), "replayed", buildInfo()); err != nil {
		t.Fatal(err)
	}
	out = filepath.Join(t.TempDir(), "epk")
	if _, err := run("epk", "--run", dir, "--out", out, "--quiet"); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("epk of the diverged run with a stamp: %v, want an error saying %q", err, want)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("epk of the diverged run created its output directory")
	}
	// Without the record in the manifest, the replay refuses the step.
	path := filepath.Join(dir, history.ManifestFile)
	b, _ := os.ReadFile(path)
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	raw["stop_reason"] = "interrupted"
	b, _ = json.Marshal(raw)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := run("verify", "--quiet", dir); err == nil || !strings.Contains(err.Error(), "makes parameter") {
		t.Errorf("verify of the diverged run without its stop reason: %v, want an error naming the step", err)
	}
}
