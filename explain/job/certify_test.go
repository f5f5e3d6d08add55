package job_test

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/explaind/explaind/explain/job"
)

// TestCertifiedSummaryAndMerge: the summary of a job whose tolerance
// every step met is certified with no misses; one with a tolerance below
// float64's rounding lists every (step, sample) that missed it, largest
// residual first; and merging that job's shards gives the whole job's
// certification and misses.
func TestCertifiedSummaryAndMerge(t *testing.T) {
	run := tinyRun(t)
	root := t.TempDir()
	ok, err := job.Run(context.Background(), job.Options{Run: run, Out: filepath.Join(root, "ok"), TestSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	if !ok.Certified || ok.MissedCount != 0 || ok.Missed != nil || !(ok.MaxCompletenessResidual <= ok.Tol) {
		t.Errorf("Tol %g: certified %v, %d missed %v, max completeness residual %.3g", ok.Tol, ok.Certified, ok.MissedCount, ok.Missed, ok.MaxCompletenessResidual)
	}

	o := job.Options{Run: run, TestIndices: []int{6, 1, 3, 4}, Tol: 1e-300, Out: filepath.Join(root, "whole")}
	whole, err := job.Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if whole.Certified || whole.MissedCount < 1 || whole.MissedCount != len(whole.Missed) {
		t.Fatalf("Tol 1e-300: certified %v, %d missed, %d listed", whole.Certified, whole.MissedCount, len(whole.Missed))
	}
	for i, m := range whole.Missed {
		if !(m.Residual > 1e-300) || m.NaN || !slices.Contains(o.TestIndices, m.TestIndex) || m.Step < 0 || m.Step >= tinyS ||
			i > 0 && m.Residual > whole.Missed[i-1].Residual {
			t.Errorf("miss %d: %+v", i, m)
		}
	}
	shards := runShards(t, o, filepath.Join(root, "shards"), 3)
	merged, err := job.Merge(filepath.Join(root, "merged"), shards, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The same (step, sample) pairs; their residuals are rounding, which
	// the shards' batches round differently.
	type pair struct{ step, idx int }
	res := map[pair]float64{}
	for _, m := range whole.Missed {
		res[pair{m.Step, m.TestIndex}] = m.Residual
	}
	if merged.Certified || merged.MissedCount != whole.MissedCount || len(merged.Missed) != len(whole.Missed) {
		t.Errorf("merged: certified %v, %d missed %v;\nwhole: %d missed %v", merged.Certified, merged.MissedCount, merged.Missed, whole.MissedCount, whole.Missed)
	}
	for _, m := range merged.Missed {
		r, ok := res[pair{m.Step, m.TestIndex}]
		if !ok || !(math.Abs(r-m.Residual) <= 1e-13) {
			t.Errorf("merged miss %+v: the whole job's residual %.3g (listed %v)", m, r, ok)
		}
	}
	t.Logf("Tol 1e-300: %d of %d (step, sample) pairs missed, the worst by %.3g; merged from 3 shards alike", whole.MissedCount, 4*tinyS, whole.Missed[0].Residual)
}
