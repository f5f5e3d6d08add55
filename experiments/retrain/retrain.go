// Package retrain runs the re-initialization experiment of the ExPLAIND
// paper on the modulo-addition transformer (the grokking model): how long
// does it take to learn the task again when one part of a checkpoint is
// replaced by fresh random values?
//
// The parts, as modules of the model (models.ModuloModules):
//
//	outer      the outer layers: embedding (input_emb) and decoder
//	pipeline   the MLP between them: linear1 and linear2
//	attention  the attention heads: head{1..H}_encoder, head{1..H}_decoder
//
// For every sampled checkpoint step s (N, N−Stride, N−2·Stride, … ≥ 0,
// from the end backwards), every part and every seed, a fresh model is
// drawn with PyTorch's default initialization from a generator seeded by
// the seed (the same draw for every checkpoint, so checkpoints are compared
// on common random numbers), the parameters outside the part are loaded
// from θ_s (the state before step s, recomputed by replay and checked
// against the run's hashes), and the model is trained again:
//
//   - with the run's optimizer and its settings (train.BuildOptimizer), from
//     a fresh optimizer state: moments or momentum start at zero;
//   - full batch (one step per epoch, as the paper's modulo run), with the
//     run's learning-rate schedule restarted at step 0 (constant for the
//     paper's run) and its weight decay;
//   - for at most MaxEpochs epochs, evaluating training and validation
//     accuracy before the first epoch and after every epoch, and stopping as
//     soon as both are 100% (or another target accuracy: the paper's run
//     in this repository ends at 99.2% validation accuracy, for instance).
//
// The outcome counts epochs: 0 when the model is already at the target
// before any training, −1 when it does not get there within MaxEpochs.
//
// A job's retrainings can be spread over the tasks of a cluster's job
// array: Options.Shard i/n runs the retrainings ShardRows assigns to shard
// i (n contiguous blocks of the job's rows in bit-reversed order, so that
// every shard gets early and late checkpoints alike), into an output of
// its own that records the shard and resumes like the whole job's; Merge
// joins the finished shards' outputs into the files the unsharded job
// writes, byte for byte.
package retrain

import (
	"github.com/explaind/explaind/setting"

	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/explaind/explaind/data"
	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/train"
)

// Command is the experiment's name in errors and outputs.
const Command = "retrain"

// The parts that can be re-initialized.
const (
	Outer     = "outer"
	Pipeline  = "pipeline"
	Attention = "attention"
)

// Parts returns the part names in the model's order.
func Parts() []string { return []string{Outer, Pipeline, Attention} }

// PartGroups returns the modules (models.ModuloModules) of a part.
func PartGroups(part string) ([]string, error) {
	switch part {
	case Outer:
		return []string{models.ModuloEmbedding, models.ModuloDecoder}, nil
	case Pipeline:
		return []string{models.ModuloLinear1, models.ModuloLinear2}, nil
	case Attention:
		return []string{models.ModuloAttention}, nil
	}
	return nil, fmt.Errorf("unknown part %q; the parts are %s (outer: embedding and decoder; pipeline: linear1 and linear2; attention: the heads)", part, strings.Join(Parts(), ", "))
}

// InPart reports whether a modulo transformer parameter belongs to part.
func InPart(part, param string) (bool, error) {
	groups, err := PartGroups(part)
	if err != nil {
		return false, err
	}
	g, err := models.ModuloModules().Lookup(param)
	if err != nil {
		return false, err
	}
	return slices.Contains(groups, g), nil
}

// Checkpoints returns the sampled checkpoint steps of a run of n steps:
// n, n−stride, n−2·stride, … down to 0, at most limit of them (0: all).
func Checkpoints(n, stride, limit int) []int {
	var out []int
	for s := n; s >= 0 && (limit <= 0 || len(out) < limit); s -= stride {
		out = append(out, s)
	}
	return out
}

// seedStream is the PCG stream of the re-initialization draws ("retrain"),
// distinct from the run's own initialization stream.
const seedStream = 0x7265747261696e

// Job is one retraining: a checkpoint's parameters with one part drawn
// afresh.
type Job struct {
	// Config is the run's configuration (model, optimizer, schedule).
	Config *train.Config
	// Data holds the sets trained on (Train) and checked (Train and Val).
	Data *train.Data[float32]
	// State holds the checkpoint's parameters (copied, never modified).
	State []*nn.Param[float32]
	// Part is the part to re-initialize.
	Part string
	// Seed seeds the re-initialization.
	Seed uint64
	// MaxEpochs bounds the training.
	MaxEpochs int
	// Target is the accuracy (a fraction) training and validation
	// accuracy must both reach; 0 means 1 (100%).
	Target float64
	// EvalChunk bounds the samples per forward pass (0: all at once).
	EvalChunk int
}

// Build returns a training session whose model holds the job's state with
// its part re-initialized, and a fresh optimizer of the run's settings.
func Build(j Job) (*train.Session[float32], error) {
	if j.Config.Task != "modulo" {
		return nil, fmt.Errorf("%s works on modulo runs only, not %q", Command, j.Config.Task)
	}
	m, err := train.BuildModel[float32](j.Config, j.Data)
	if err != nil {
		return nil, err
	}
	if _, ok := m.(*models.Modulo[float32]); !ok {
		return nil, fmt.Errorf("%s: the run's model is a %T, not the modulo transformer", Command, m)
	}
	m.Init(rand.New(rand.NewPCG(j.Seed, seedStream)))
	params := m.Params()
	kept := 0
	fresh := make([]*nn.Param[float32], len(params))
	for i, p := range params {
		in, err := InPart(j.Part, p.Name)
		if err != nil {
			return nil, err
		}
		fresh[i] = p
		if !in {
			fresh[i] = findParam(j.State, p.Name)
			if fresh[i] == nil {
				return nil, fmt.Errorf("%s: the checkpoint has no parameter %s", Command, p.Name)
			}
			kept++
		}
	}
	if kept == len(params) {
		return nil, fmt.Errorf("%s: part %q holds none of the model's parameters", Command, j.Part)
	}
	values := expio.CopyParams(fresh) // loading from the model's own arrays needs copies
	if err := expio.LoadParams(params, values); err != nil {
		return nil, err
	}
	opt, err := train.BuildOptimizer[float32](j.Config)
	if err != nil {
		return nil, err
	}
	return train.NewSession[float32](m, opt, j.Data.Train)
}

func findParam(ps []*nn.Param[float32], name string) *nn.Param[float32] {
	for _, p := range ps {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Outcome is the result of one retraining.
type Outcome struct {
	// Epochs is the number of epochs after which training and validation
	// accuracy were first both at the target (0: already before training;
	// −1: not within MaxEpochs).
	Epochs int `json:"epochs"`
	// TrainEpochs and ValEpochs are the first epochs at which each
	// accuracy alone was at the target (−1: never within the epochs run).
	TrainEpochs int `json:"train_epochs"`
	ValEpochs   int `json:"val_epochs"`
	// EpochsRun is the number of epochs trained.
	EpochsRun int `json:"epochs_run"`
	// InitTrainAcc and InitValAcc are the accuracies before training;
	// TrainAcc and ValAcc those at the end.
	InitTrainAcc float64 `json:"init_train_acc"`
	InitValAcc   float64 `json:"init_val_acc"`
	TrainAcc     float64 `json:"train_acc"`
	ValAcc       float64 `json:"val_acc"`
	// Diverged is set when the loss stopped being finite.
	Diverged bool `json:"diverged"`
}

// UntilPerfect trains the session full batch for at most maxEpochs epochs
// with the run's schedule (restarted at step 0) and stops once training
// and validation accuracy, on sess.Train and val, both reach target (0
// means 1: 100%). Accuracy is measured before the first epoch and after
// each. When ctx is cancelled it returns ctx's error after the current
// epoch.
func UntilPerfect(ctx context.Context, sess *train.Session[float32], val data.Dataset[float32], cfg *train.Config, maxEpochs int, target float64, chunk int) (Outcome, error) {
	o := Outcome{Epochs: -1, TrainEpochs: -1, ValEpochs: -1}
	target = train.AccuracyTarget(target)
	if !(target > 0 && target <= 1) {
		return o, fmt.Errorf("%s: %w", Command, setting.Invalid("Target", target, "want an accuracy in (0, 1]"))
	}
	if val.Len() == 0 {
		return o, fmt.Errorf("%s: the run has no validation samples", Command)
	}
	sched, err := cfg.BuildSchedule(sess.Train.Len())
	if err != nil {
		return o, err
	}
	evaluate := func(epoch int) (bool, error) {
		_, tr, err := train.Evaluate(sess.Model, sess.Train, chunk)
		if err != nil {
			return false, err
		}
		_, va, err := train.Evaluate(sess.Model, val, chunk)
		if err != nil {
			return false, err
		}
		if epoch == 0 {
			o.InitTrainAcc, o.InitValAcc = tr, va
		}
		o.TrainAcc, o.ValAcc = tr, va
		if tr >= target && o.TrainEpochs < 0 {
			o.TrainEpochs = epoch
		}
		if va >= target && o.ValEpochs < 0 {
			o.ValEpochs = epoch
		}
		if tr >= target && va >= target {
			o.Epochs = epoch
			return true, nil
		}
		return false, nil
	}
	if done, err := evaluate(0); done || err != nil {
		return o, err
	}
	for e := 0; e < maxEpochs; e++ {
		if err := ctx.Err(); err != nil {
			return o, err
		}
		rec := history.StepRecord{Epoch: e, LR: sched.LR(e), WeightDecay: cfg.Optimizer.WeightDecay}
		if err := sess.Step(rec); err != nil {
			return o, err
		}
		o.EpochsRun = e + 1
		if l := sess.LastLoss; math.IsNaN(l) || math.IsInf(l, 0) {
			o.Diverged = true
			return o, nil
		}
		if done, err := evaluate(e + 1); done || err != nil {
			return o, err
		}
	}
	return o, nil
}

// Retrain builds the job's model (Build) and trains it until both
// accuracies reach the target (UntilPerfect).
func Retrain(ctx context.Context, j Job) (Outcome, error) {
	if j.MaxEpochs < 1 {
		return Outcome{}, fmt.Errorf("%s: %w", Command, setting.Invalid("MaxEpochs", j.MaxEpochs, "want ≥ 1"))
	}
	sess, err := Build(j)
	if err != nil {
		return Outcome{}, err
	}
	return UntilPerfect(ctx, sess, j.Data.Val, j.Config, j.MaxEpochs, j.Target, j.EvalChunk)
}
