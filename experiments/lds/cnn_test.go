package lds_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/experiments/lds"
	"github.com/explaind/explaind/internal/testrun"
	"github.com/explaind/explaind/train"
)

// cnnRun is a tiny CIFAR-2 ResNet-9 run (fabricated images, 16 training
// samples, batches of 8 with random flips, the triangle schedule, 4 steps).
func cnnRun(t *testing.T) string {
	return testrun.Dir(t, "lds cnn", func(dir string) error {
		root := filepath.Dir(dir)
		if err := testrun.WriteCIFAR(filepath.Join(root, "cifar-10-batches-bin"), 30); err != nil {
			return err
		}
		c := train.CNNDefaults("cifar2")
		c.CNN.DataDir, c.CNN.WidthDiv, c.CNN.TrainSize = root, 16, 16
		c.BatchSize, c.Epochs, c.PeakEpoch, c.Optimizer.LR, c.CheckpointEvery = 8, 2, 1, 0.05, 2
		_, err := train.Train[float32](context.Background(), dir, c, train.Options{})
		return err
	})
}

// TestCNN: on a CNN run with batches, flips and a schedule, retraining on
// the whole training set with seed 0 is the run, bit for bit (the batch
// order, flips and learning rates of every step are the run's), and the
// whole job runs (subsets of 8 = one batch, so 4 epochs in the run's 4
// steps).
func TestCNN(t *testing.T) {
	dir := cnnRun(t)
	r, err := expio.OpenRun(lds.Command, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Replay.Seek(r.Steps()); err != nil {
		t.Fatal(err)
	}
	tests, err := lds.NewTests(r.Session.Model, r.Data.Val, []int{0, 1, 2})
	if err != nil {
		t.Fatal(err)
	}
	lp, mg, err := tests.Targets(r.Session.Model)
	if err != nil {
		t.Fatal(err)
	}
	all := make([]int, r.Data.Train.Len())
	for i := range all {
		all[i] = i
	}
	o, err := lds.Retrain(context.Background(), lds.RetrainJob{Config: r.Config, Data: r.Data, Subset: all, Steps: r.Steps(), Tests: tests})
	if err != nil || !slices.Equal(o.LogProb, lp) || !slices.Equal(o.Margin, mg) {
		t.Errorf("retraining the CNN run on everything with seed 0: %v %v, %v; the run's %v %v", o.LogProb, o.Margin, err, lp, mg)
	}
	s, err := lds.Do(context.Background(), lds.Options{Run: dir, Out: filepath.Join(t.TempDir(), "lds"), Subsets: 3, Fraction: 0.5, Seeds: 1, TestSize: 3, Bootstrap: 50})
	if err != nil {
		t.Fatal(err)
	}
	if s.Settings.SubsetSize != 8 || s.Retrained.Count != 3 || len(s.Methods) != 5 || !slices.Equal(s.Settings.TracInCheckpoints, []int{0, 2}) {
		t.Errorf("summary of the CNN job: %+v", s)
	}
}
