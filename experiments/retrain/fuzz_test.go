package retrain_test

import (
	"path/filepath"
	"testing"

	"github.com/explaind/explaind/experiments/retrain"
	"github.com/explaind/explaind/internal/fuzzcheck"
)

// FuzzResume reads arbitrary bytes as an output directory's progress.json
// and resumes the job of resumeJob from it. No input may panic; every
// error names the output directory; reading allocates in proportion to
// the file; the rows Resume returns are the first rows of the job's plan.
// The seeds in testdata/fuzz/FuzzResume are progress files of the job
// (after 0, 5 and 12 rows) and edited copies.
func FuzzResume(f *testing.F) {
	r, opt := resumeJob(f)
	plan := retrain.Plan(retrain.Checkpoints(r.Steps(), opt.Stride, opt.MaxCheckpoints), opt.Parts, opt.Seeds)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzcheck.WriteFile(t, filepath.Join(dir, retrain.ProgressFile), b)
		fuzzcheck.Bounded(t, len(b), 64, func() {
			rows, err := retrain.Resume(dir, r, opt)
			fuzzcheck.NamesFile(t, err, dir)
			if len(rows) > len(plan) {
				t.Fatalf("%d rows resumed of a job of %d", len(rows), len(plan))
			}
			for i, row := range rows {
				if p := plan[i]; row.Checkpoint != p.Checkpoint || row.Part != p.Part || row.Seed != p.Seed {
					t.Errorf("row %d resumed is %+v, the plan's %+v", i, row, p)
				}
			}
		})
	})
}

// FuzzReadSummary reads arbitrary bytes as an output directory's
// summary.json, both directly (ReadSummary) and as Resume does when the
// directory holds no progress.json. No input may panic; ReadSummary's
// errors name the file and Resume's the directory; reading allocates in
// proportion to the file; Resume never reuses rows from a summary (it has
// none). The seeds in testdata/fuzz/FuzzReadSummary are a summary of the
// job and edited copies.
func FuzzReadSummary(f *testing.F) {
	r, opt := resumeJob(f)
	dir := f.TempDir()
	path := filepath.Join(dir, retrain.SummaryFile)
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzcheck.WriteFile(t, path, b)
		fuzzcheck.Bounded(t, len(b), 64, func() {
			_, err := retrain.ReadSummary(dir)
			fuzzcheck.NamesFile(t, err, path)
			rows, err := retrain.Resume(dir, r, opt)
			if rows != nil {
				t.Errorf("Resume reused %d rows from a summary", len(rows))
			}
			fuzzcheck.NamesFile(t, err, dir)
		})
	})
}
