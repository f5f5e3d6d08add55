package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/internal/testrun"
)

// TestEPKCertification: the adaptive rule's summary says whether every
// step met --tol (certified, with its misses listed when not), the CLI
// warns when a run is not certified, and tolerances the rule cannot serve
// are refused before any work.
func TestEPKCertification(t *testing.T) {
	root := t.TempDir()
	runDir := swapTestRun(t)

	// The default: certified, no warning.
	msg, err := epkTestRun(t, "--run", runDir, "--out", filepath.Join(root, "ok"), "--test-size", "3")
	if err != nil {
		t.Fatalf("%v\n%s", err, msg)
	}
	s := testrun.EPKSummary(t, filepath.Join(root, "ok"))
	if s["certified"] != true || s["missed_count"] != 0.0 || s["missed"] != nil || strings.Contains(msg, "NOT certified") {
		t.Errorf("default tolerance: certified %v, missed_count %v, missed %v; output:\n%s", s["certified"], s["missed_count"], s["missed"], msg)
	}
	if c := epkTestNum(t, s, "max_completeness_residual"); !(c <= 1e-6) {
		t.Errorf("certified at --tol 1e-6 with a completeness residual of %.3g", c)
	}

	// A tolerance below float64's rounding: every (step, sample) misses,
	// and the summary and the warning say so.
	out := filepath.Join(root, "tiny-tol")
	msg, err = epkTestRun(t, "--run", runDir, "--out", out, "--test-size", "3", "--tol", "1e-300")
	if err != nil {
		t.Fatalf("%v\n%s", err, msg)
	}
	s = testrun.EPKSummary(t, out)
	missed, _ := s["missed"].([]any)
	n := epkTestNum(t, s, "missed_count")
	if s["certified"] != false || n < 1 || int(n) != len(missed) || !strings.Contains(msg, "warning: NOT certified") {
		t.Errorf("--tol 1e-300: certified %v, missed_count %v, %d listed; output:\n%s", s["certified"], n, len(missed), msg)
	}
	prev := 1e300
	for _, m := range missed {
		e := m.(map[string]any)
		r, step, idx := e["residual"].(float64), e["step"].(float64), e["test_index"].(float64)
		if !(r > 1e-300) || r > prev || step < 0 || step >= 6 || idx < 0 || idx >= 3 {
			t.Errorf("listed miss %v: want a residual above --tol, sorted largest first, of a step in 0…5 and a test index in 0…2", e)
		}
		prev = r
	}
	if !strings.Contains(msg, out+"/summary.json lists them") {
		t.Errorf("the warning does not point to the summary:\n%s", msg)
	}

	// A rule without tolerance is not certified either.
	msg, err = epkTestRun(t, "--run", runDir, "--out", filepath.Join(root, "mid"), "--test-size", "2", "--quadrature", "midpoint:3")
	if err != nil {
		t.Fatalf("%v\n%s", err, msg)
	}
	if s = testrun.EPKSummary(t, filepath.Join(root, "mid")); s["certified"] != false || !strings.Contains(msg, "the midpoint:3 rule has no tolerance") {
		t.Errorf("midpoint:3: certified %v; output:\n%s", s["certified"], msg)
	}

	// Bad tolerances, refused before any work.
	bad := filepath.Join(root, "bad")
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--precision", "float32", "--tol", "1e-6"}, []string{"invalid --tol 1e-06: --precision float32 cannot certify a completeness residual below 1e-05",
			"use a --tol of at least 1e-05, or --precision float64"}},
		{[]string{"--tol", "NaN"}, []string{"invalid --tol NaN"}},
	} {
		msg, err := epkTestRun(t, append([]string{"--run", runDir, "--out", bad}, c.args...)...)
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("epk %v: got %v, want an error mentioning %q\n%s", c.args, err, w, msg)
			}
		}
		if _, err := os.Stat(bad); err == nil {
			t.Errorf("epk %v: a refused job created its output directory", c.args)
			os.RemoveAll(bad)
		}
	}
	// float32 at its smallest certifiable tolerance is accepted (midpoint
	// ignores --tol, so the check is the adaptive rule's only).
	if msg, err := epkTestRun(t, "--run", runDir, "--out", filepath.Join(root, "mid32"), "--test-size", "1", "--precision", "float32",
		"--tol", "1e-6", "--quadrature", "midpoint:2"); err != nil {
		t.Errorf("midpoint in float32 with --tol 1e-6: %v\n%s", err, msg)
	}

	// exact on a CNN names the model and the rules that serve it.
	cnn := epkTestCNNRun(t)
	_, err = epkTestRun(t, "--run", cnn, "--out", bad, "--quadrature", "exact:3")
	for _, w := range []string{"the resnet9_nobn model does not", "use --quadrature adaptive", "midpoint:K or gauss:K"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("exact:3 on a CNN run: %v, want an error mentioning %q", err, w)
		}
	}
}
