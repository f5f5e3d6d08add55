package train_test

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/explaind/explaind/data"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/fuzzcheck"
	"github.com/explaind/explaind/train"
)

// FuzzManifestConfig reads arbitrary bytes as the configuration a run's
// manifest records. No input may panic, and reading allocates in
// proportion to the input; a configuration that reads is valid (Validate),
// so that whoever rebuilds the run from it finds the task's settings
// there, a modulo split no larger than the pairs that exist, and an
// optimizer and schedule that build or fail with an error. The seeds in
// testdata/fuzz/FuzzManifestConfig are the modulo and CNN defaults and
// edited copies.
func FuzzManifestConfig(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var c *train.Config
		fuzzcheck.Bounded(t, len(b), 64, func() {
			c, _ = train.ManifestConfig(&history.Manifest{Config: json.RawMessage(b)})
		})
		if c == nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ManifestConfig accepted an invalid configuration: %v", err)
		}
		if c.Task == "modulo" && c.Modulo == nil {
			t.Fatal("a modulo configuration without its settings")
		}
		trainSize := 1
		switch c.Task {
		case "modulo":
			m := c.Modulo
			if n := data.NumModuloPairs(m.P); m.TrainSize > n || m.ValSize > n-m.TrainSize {
				t.Errorf("%d training and %d validation samples of the %d pairs for p = %d", m.TrainSize, m.ValSize, n, m.P)
			}
			trainSize = m.TrainSize
		case "cnn":
			if c.CNN == nil {
				t.Fatal("a cnn configuration without its settings")
			}
			trainSize = max(c.BatchSize, 1) // the images decide; newJob refuses fewer than a batch
		}
		if c.BatchSize <= trainSize && c.StepsPerEpoch(trainSize) < 1 {
			t.Errorf("%d steps per epoch", c.StepsPerEpoch(trainSize))
		}
		c.BuildSchedule(trainSize)
		train.BuildOptimizer[float32](c)
	})
}

// FuzzReadMetrics reads arbitrary bytes as a run's metrics.jsonl. No
// input may panic; every error names the file; reading allocates in
// proportion to the file. The seeds in testdata/fuzz/FuzzReadMetrics are
// lines a run wrote, blank lines, and damaged copies.
func FuzzReadMetrics(f *testing.F) {
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, train.MetricsFile)
		fuzzcheck.WriteFile(t, path, b)
		fuzzcheck.Bounded(t, len(b), 64, func() {
			ms, err := train.ReadMetrics(dir)
			fuzzcheck.NamesFile(t, err, path)
			if err != nil && ms != nil {
				t.Errorf("%d metrics with the error %v", len(ms), err)
			}
		})
	})
}
