package progress

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

// fake makes the writers terminals or not, and gives a clock the test
// moves, for the duration of the test.
func fake(t *testing.T, terminal bool) *time.Time {
	clock := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	oldTerm, oldNow := isTerminal, now
	isTerminal = func(io.Writer) bool { return terminal }
	now = func() time.Time { return clock }
	t.Cleanup(func() { isTerminal, now = oldTerm, oldNow })
	return &clock
}

func TestFuncDrawsOnceTheTotalIsKnown(t *testing.T) {
	fake(t, true)
	if f := Func(nil, "nothing"); f != nil {
		t.Error("Func(nil, …) must return a nil callback")
	}
	var w bytes.Buffer
	f := Func(&w, "counting")
	if w.Len() != 0 {
		t.Fatalf("a bar was drawn before the first call: %q", w.String())
	}
	f(1, 4)
	if s := w.String(); !strings.Contains(s, "counting") || !strings.Contains(s, "1/4") {
		t.Errorf("after 1 of 4: %q; want the description and the count", s)
	}
}

// TestTerminalKeepsTheBar: on a terminal the bar is redrawn in place.
func TestTerminalKeepsTheBar(t *testing.T) {
	fake(t, true)
	var w bytes.Buffer
	bar := New(&w, 10, 0, "training", "steps")
	bar.Set(3)
	if s := w.String(); !strings.Contains(s, "\r") || !strings.Contains(s, "training") || !strings.Contains(s, "3/10") || !strings.Contains(s, "steps/s") {
		t.Errorf("after 3 of 10: %q; want a bar redrawn with \\r", s)
	}
}

// TestPlainLinesWithoutATerminal: a job of 1000 items at 10 a second
// (100 s) writes a line at each tenth, one more after every 30 s without
// one, and a last line: no carriage return, a bounded number of lines,
// each with the count, the rate and the time left.
func TestPlainLinesWithoutATerminal(t *testing.T) {
	clock := fake(t, false)
	var w bytes.Buffer
	bar := New(&w, 1000, 0, "training", "steps")
	for range 1000 {
		*clock = clock.Add(100 * time.Millisecond)
		bar.Add(1)
	}
	bar.Finish()
	bar.Finish()
	s := w.String()
	if strings.Contains(s, "\r") {
		t.Fatalf("a carriage return in the plain lines: %q", s)
	}
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if len(lines) != 10 {
		t.Fatalf("%d lines, want 9 tenths and the last:\n%s", len(lines), s)
	}
	if want := "training: 100/1000 steps (10%), 10 steps/s, ETA 1m30s"; lines[0] != want {
		t.Errorf("first line %q, want %q", lines[0], want)
	}
	if want := "training: 1000/1000 steps (100%) in 1m40s, 10 steps/s"; lines[9] != want {
		t.Errorf("last line %q, want %q", lines[9], want)
	}
}

// TestPlainLinesOfASlowJob: when a tenth takes longer than Every, a line
// comes every Every; a resumed job counts its rate from where it resumed.
func TestPlainLinesOfASlowJob(t *testing.T) {
	clock := fake(t, false)
	var w bytes.Buffer
	bar := New(&w, 100, 50, "epk steps", "")
	for i := 51; i <= 55; i++ {
		*clock = clock.Add(20 * time.Second)
		bar.Set(i)
	}
	lines := strings.Split(strings.TrimSuffix(w.String(), "\n"), "\n")
	want := []string{
		"epk steps: 52/100 (52%), 0.05/s, ETA 16m0s",
		"epk steps: 54/100 (54%), 0.05/s, ETA 15m20s",
	}
	if len(lines) != len(want) || lines[0] != want[0] || lines[1] != want[1] {
		t.Errorf("lines %q, want %q", lines, want)
	}
	w.Reset()
	bar.Describe("epoch 3")
	*clock = clock.Add(time.Second)
	bar.Set(60)
	if got, want := w.String(), "epoch 3: 60/100 (60%), 0.099/s, ETA 6m44s\n"; got != want {
		t.Errorf("at the next tenth %q, want %q", got, want)
	}
}

func TestFuncWritesPlainLinesWithoutATerminal(t *testing.T) {
	clock := fake(t, false)
	var w bytes.Buffer
	f := Func(&w, "pruning")
	for i := 1; i <= 4; i++ {
		*clock = clock.Add(time.Second)
		f(i, 4)
	}
	want := "pruning: 2/4 (50%), 1/s, ETA 2s\npruning: 3/4 (75%), 1/s, ETA 1s\npruning: 4/4 (100%) in 3s, 1/s\n"
	if got := w.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// TestStages: a bar over stages of weights 1, 2 and 1 of which the first
// is skipped: it starts within the second stage's share (its first count,
// 1/10, is 300 ‰: (1 + 2 · 0.1)/4), moves by the
// stage's own count across its share, names the stage and its count, and
// ends at 1000 ‰ with a last line; a nil writer shows nothing, and
// stages that all were skipped write nothing.
func TestStages(t *testing.T) {
	clock := fake(t, false)
	if s := NewStages(nil, "demo", []float64{1, 2, 1}); s.Stage(0, "x") != nil {
		t.Error("NewStages(nil, …) must give nil callbacks")
	}
	var w bytes.Buffer
	s := NewStages(&w, "demo", []float64{1, 2, 1})
	s.Done(0)
	f := s.Stage(1, "epk steps")
	for i := 1; i <= 10; i++ {
		*clock = clock.Add(time.Second)
		f(i, 10)
	}
	s.Done(1)
	g := s.Stage(2, "swap")
	*clock = clock.Add(time.Second)
	g(1, 2)
	s.Done(2)
	lines := strings.Split(strings.TrimSuffix(w.String(), "\n"), "\n")
	if want := "demo, stage 2/3 epk steps 3/10: 400/1000 (40%), 50/s, ETA 12s"; lines[0] != want {
		t.Errorf("first line %q, want %q", lines[0], want)
	}
	if want := "demo, stage 3/3 swap 1/2: 875/1000 (87%), 57.5/s, ETA 2s"; len(lines) < 2 || lines[len(lines)-2] != want {
		t.Errorf("line before the last %q, want %q", lines[len(lines)-2], want)
	}
	if want := "demo: 1000/1000 (100%) in 10s, 70/s"; lines[len(lines)-1] != want {
		t.Errorf("last line %q, want %q", lines[len(lines)-1], want)
	}
	w.Reset()
	s = NewStages(&w, "demo", []float64{1, 1})
	s.Done(0)
	s.Done(1)
	if w.Len() != 0 {
		t.Errorf("stages all skipped wrote %q", w.String())
	}
}
