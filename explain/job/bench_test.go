package job_test

import (
	"context"
	"path/filepath"
	"runtime/debug"
	"testing"

	"github.com/explaind/explaind/explain/job"
	"github.com/explaind/explaind/internal/heapfloor"
	"github.com/explaind/explaind/internal/testrun"
	"github.com/explaind/explaind/train"
)

// BenchmarkLikeForLike is the reference's workload (docs/method.md §6): 20 steps
// of the paper's modulo run from initialization, 4 validation samples, the
// 10-point midpoint rule, and all of prediction, per-parameter scores per
// test sample and class, the data kernel per test sample, class and
// training sample, and the regularization term (preset reference), in
// float32 like the reference. The reference takes 296–306 s on this
// machine with 7.6 GB peak memory. Each iteration writes a fresh output;
// the run is trained once for both rules (20 steps, a few seconds).
//
//	go test -tags openblas -run XXX -bench LikeForLike -benchtime 1x ./explain/job
func BenchmarkLikeForLike(b *testing.B) {
	heapfloor.Set()                                  // as explaind does
	defer debug.SetGCPercent(debug.SetGCPercent(25)) // as explaind epk does
	for _, q := range []string{"midpoint:10", "adaptive"} {
		b.Run(q, func(b *testing.B) {
			c := train.ModuloDefaults()
			c.Epochs = 20
			c.StopAtPerfect = false
			run := testrun.Train[float32](b, c)
			dir := b.TempDir()
			var s *job.Summary
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				var err error
				s, err = job.Run(context.Background(), job.Options{Run: run, Out: filepath.Join(dir, "epk", string(rune('a'+i))),
					Presets: []string{"reference"}, TestSize: 4, Quadrature: q, Tol: 1e-5, Precision: "float32"})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(s.MaxAbsDelta, "max|EPK-model|")
			b.ReportMetric(s.MaxCompletenessResidual, "max-completeness")
			b.ReportMetric(float64(s.PeakRSSBytes)/(1<<20), "peak-RSS-MiB")
		})
	}
}
