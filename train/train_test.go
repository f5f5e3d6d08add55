package train_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/testrun"
	"github.com/explaind/explaind/train"
)

func TestMain(m *testing.M) { testrun.Main(m) }

// tinyModulo is a modulo run that trains in well under a second.
func tinyModulo() train.Config {
	c := testrun.Modulo(13, 5)
	c.Optimizer.LR = 1e-2
	c.Optimizer.WeightDecay = 1
	return c
}

func TestModuloRunReplaysBitForBit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	s, err := train.Train[float32](context.Background(), dir, tinyModulo(), train.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Done || s.Steps != 13 || s.Epochs != 13 || s.BytesOnDisk == 0 {
		t.Fatalf("summary %+v: want a finished 13-step run with its size", s)
	}
	for _, f := range []string{"manifest.json", "metrics.jsonl", "summary.json", "splits/train.csv", "splits/val.csv"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("run lacks %s", f)
		}
	}
	o, err := train.Open[float32](dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Replay.Verify(nil); err != nil {
		t.Fatal(err)
	}
	// Backward replay gives each step's parameters, matching the hashes.
	var seen []int
	err = o.Replay.Backward(0, o.Replay.Steps(), func(v *history.StepView[float32]) error {
		if got := history.ParamHash(v.After); got != v.Record.Hash {
			t.Errorf("step %d: replayed hash %s, recorded %s", v.Step, got, v.Record.Hash)
		}
		seen = append(seen, v.Step)
		return nil
	})
	if err != nil || len(seen) != 13 || seen[0] != 12 || seen[12] != 0 {
		t.Fatalf("backward replay visited %v (%v)", seen, err)
	}
}

func finalHash(t *testing.T, dir string) string {
	m, err := history.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	return m.Hash(len(m.Steps))
}

func TestInterruptedRunResumes(t *testing.T) {
	whole := testrun.Train[float32](t, tinyModulo())
	// A cancelled context (Ctrl-C) stops after the first step.
	dir := filepath.Join(t.TempDir(), "cut")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s, err := train.Train[float32](ctx, dir, tinyModulo(), train.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Done || s.Steps != 1 || !strings.Contains(s.StopReason, "--resume") {
		t.Fatalf("interrupted summary %+v: want 1 step, not done, and how to resume", s)
	}
	s, err = train.Resume[float32](context.Background(), dir, train.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Done || s.Steps != 13 {
		t.Fatalf("resumed summary %+v", s)
	}
	if a, b := finalHash(t, whole), finalHash(t, dir); a != b {
		t.Fatalf("resumed run ends at %s, uninterrupted at %s", b, a)
	}
	if _, err := train.Train[float32](context.Background(), dir, tinyModulo(), train.Options{}); err == nil || !strings.Contains(err.Error(), "set Overwrite") {
		t.Errorf("existing run: got %v", err)
	}
}

// TestKilledStartRestarts leaves a run directory as kill -9 leaves it at
// two moments of a start: before the first manifest (checkpoint 0 and a
// temporary file of the manifest only), which a plain rerun of train
// starts afresh, and before the splits, which a resume writes.
func TestKilledStartRestarts(t *testing.T) {
	whole := testrun.Train[float32](t, tinyModulo())
	dir := filepath.Join(t.TempDir(), "run")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := train.Train[float32](ctx, dir, tinyModulo(), train.Options{}); err != nil {
		t.Fatal(err)
	}
	// Before the first manifest: keep checkpoint 0, a manifest temporary.
	for _, f := range []string{history.ManifestFile, "splits", "metrics.jsonl", "summary.json", history.CheckpointName(1)} {
		os.RemoveAll(filepath.Join(dir, f))
	}
	if err := os.WriteFile(filepath.Join(dir, "."+history.ManifestFile+".tmp-123"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := train.Train[float32](context.Background(), dir, tinyModulo(), train.Options{}); err != nil {
		t.Fatalf("rerun after a start killed before its manifest: %v", err)
	}
	if a, b := finalHash(t, whole), finalHash(t, dir); a != b {
		t.Fatalf("restarted run ends at %s, uninterrupted at %s", b, a)
	}
	// Before the splits: a resume writes them, equal to an uninterrupted run's.
	want, err := os.ReadFile(filepath.Join(dir, "splits", "val.csv"))
	if err != nil {
		t.Fatal(err)
	}
	dir2 := filepath.Join(t.TempDir(), "run")
	if _, err := train.Train[float32](ctx, dir2, tinyModulo(), train.Options{}); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir2, "splits"))
	if _, err := train.Resume[float32](context.Background(), dir2, train.Options{}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir2, "splits", "val.csv"))
	if err != nil || string(got) != string(want) {
		t.Fatalf("resume wrote splits/val.csv %q (%v), want %q", got, err, want)
	}
}

// TestFailedWriteLeavesAConsistentRun makes a checkpoint impossible to write
// (its name is taken by a directory, as a full disk fails a write): training
// fails, but the manifest still names only complete checkpoints, and the
// run resumes from the last one once the problem is gone.
func TestFailedWriteLeavesAConsistentRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := train.Train[float32](ctx, dir, tinyModulo(), train.Options{}); err != nil {
		t.Fatal(err)
	}
	blocker := filepath.Join(dir, history.CheckpointName(5))
	if err := os.MkdirAll(filepath.Join(blocker, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := train.Resume[float32](context.Background(), dir, train.Options{}); err == nil {
		t.Fatal("a checkpoint that cannot be written went unnoticed")
	}
	m, err := history.ReadManifest(dir)
	if err != nil {
		t.Fatalf("after a failed write the manifest is unusable: %v", err)
	}
	if last := m.Checkpoints[len(m.Checkpoints)-1]; last.Step != 1 {
		t.Fatalf("manifest names checkpoint %d, want the last complete one, 1", last.Step)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "checkpoints"))
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("a temporary file was left behind: %s", e.Name())
		}
	}
	os.RemoveAll(blocker)
	s, err := train.Resume[float32](context.Background(), dir, train.Options{})
	if err != nil || !s.Done || s.Steps != 13 {
		t.Fatalf("resume after the failure: %+v, %v", s, err)
	}
}

func TestInvalidConfigs(t *testing.T) {
	cases := []struct {
		edit func(c *train.Config)
		want string
	}{
		{func(c *train.Config) { c.Modulo.P = 2 }, "invalid Modulo.P"},
		{func(c *train.Config) { c.Modulo.TrainSize = -1 }, "invalid Modulo.TrainSize"},
		{func(c *train.Config) { c.Modulo.TrainSize = 30 }, "exceed the 28 pairs"},
		{func(c *train.Config) { c.Epochs = 0 }, "invalid Epochs"},
		{func(c *train.Config) { c.Optimizer.LR = -1 }, "invalid Optimizer.LR"},
		{func(c *train.Config) { c.BatchSize = -4 }, "invalid BatchSize"},
		{func(c *train.Config) { c.CheckpointEvery = 0 }, "invalid CheckpointEvery"},
		{func(c *train.Config) { c.StopAccuracy = 1.5 }, "invalid StopAccuracy"},
		{func(c *train.Config) { c.Task = "cnn"; c.CNN = &train.CNNTask{Dataset: "mnist", WidthDiv: 8} }, "invalid CNN.Dataset"},
		{func(c *train.Config) { c.Task = "cnn"; c.CNN = &train.CNNTask{Dataset: "fashion2", WidthDiv: 3} }, "invalid CNN.WidthDiv"},
	}
	for _, tc := range cases {
		c := tinyModulo()
		tc.edit(&c)
		_, err := train.Train[float32](context.Background(), filepath.Join(t.TempDir(), "r"), c, train.Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error mentioning %q, got %v", tc.want, err)
		}
	}
}

func TestCIFAR2RunOnSmallFile(t *testing.T) {
	root := t.TempDir()
	cifar := filepath.Join(root, "cifar-10-batches-bin")
	if err := testrun.WriteCIFAR(cifar, 12); err != nil { // 8 cats and dogs per file: 40 training, 8 test images
		t.Fatal(err)
	}
	c := train.CNNDefaults("cifar2")
	c.CNN.DataDir = root
	c.CNN.WidthDiv = 16
	c.Optimizer.LR = 0.05
	c.BatchSize = 8
	c.Epochs = 8
	c.PeakEpoch = 2
	c.CheckpointEvery = 4
	dir := filepath.Join(root, "run")
	s, err := train.Train[float32](context.Background(), dir, c, train.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Steps != 40 || !s.Done {
		t.Fatalf("summary %+v: want 8 epochs of 5 steps", s)
	}
	if s.ValAcc < 0.99 {
		t.Errorf("a trivially separable task reached only %.2f test accuracy", s.ValAcc)
	}
	m, err := history.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.Steps[0].LR != 0 || m.Steps[0].Flips == "" || len(m.Steps[0].Batch) != 8 {
		t.Errorf("first step %+v: want lr 0, recorded flips and a batch of 8", m.Steps[0])
	}
	o, err := train.Open[float32](dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Replay.Verify(nil); err != nil {
		t.Fatal(err)
	}
	// Replaying on other data is refused, naming the data.
	if err := testrun.WriteCIFAR(cifar, 15); err != nil {
		t.Fatal(err)
	}
	if _, err := train.Open[float32](dir); err == nil || !strings.Contains(err.Error(), "differs") {
		t.Errorf("replay on changed data: got %v", err)
	}
}

func TestMetricsAreJSONLines(t *testing.T) {
	dir := testrun.Train[float32](t, tinyModulo())
	b, err := os.ReadFile(filepath.Join(dir, train.MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 13 {
		t.Fatalf("%d metrics lines, want one per epoch (13)", len(lines))
	}
	var m train.EpochMetrics
	if err := json.Unmarshal([]byte(lines[12]), &m); err != nil || m.Epoch != 12 || m.Step != 13 || m.TrainEval != "full" {
		t.Errorf("last line %q: %+v %v", lines[12], m, err)
	}
	if errors.Is(err, os.ErrNotExist) {
		t.Fatal("unreachable")
	}
}

func TestStopAtAccuracy(t *testing.T) {
	c := tinyModulo()
	c.StopAtPerfect, c.StopAccuracy = true, 1e-9 // met after the first epoch
	s, err := train.Train[float32](context.Background(), filepath.Join(t.TempDir(), "r"), c, train.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Done || s.Steps != 1 || !strings.Contains(s.StopReason, "reached") {
		t.Errorf("summary %+v: want a finished run stopped after one step", s)
	}
}
