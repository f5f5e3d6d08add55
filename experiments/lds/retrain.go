package lds

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/explaind/explaind/data"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
	"github.com/explaind/explaind/train"
)

func newRand(seed, stream uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, stream)) }

// Tests are the test samples whose targets a retraining records.
type Tests struct {
	// X holds their inputs, Labels their labels y.
	X      *tensor.Dense[float32]
	Labels []int
	// Rival holds c*, the class other than y that the run's final model
	// gives the largest log-probability, per test sample.
	Rival []int
}

// NewTests returns the test samples idx of d (the run's validation or
// test split) with their rival classes under model (the run's final
// model).
func NewTests(model nn.Layer[float32], d data.Dataset[float32], idx []int) (*Tests, error) {
	x, y, err := d.Batch(idx)
	if err != nil {
		return nil, err
	}
	logp, _, err := model.Forward(x)
	if err != nil {
		return nil, err
	}
	C := logp.Shape[1]
	t := &Tests{X: x, Labels: y, Rival: make([]int, len(y))}
	for i, l := range y {
		best := -1
		for c := range C {
			if c != l && (best < 0 || logp.Data[i*C+c] > logp.Data[i*C+best]) {
				best = c
			}
		}
		t.Rival[i] = best
	}
	return t, nil
}

// Targets returns, per test sample, log p_y(x) and the margin log p_y(x)
// − log p_c*(x) under model.
func (t *Tests) Targets(model nn.Layer[float32]) (logprob, margin []float64, err error) {
	logp, _, err := model.Forward(t.X)
	if err != nil {
		return nil, nil, err
	}
	C := logp.Shape[1]
	logprob, margin = make([]float64, len(t.Labels)), make([]float64, len(t.Labels))
	for i, y := range t.Labels {
		logprob[i] = float64(logp.Data[i*C+y])
		margin[i] = logprob[i] - float64(logp.Data[i*C+t.Rival[i]])
	}
	return logprob, margin, nil
}

// Outcome is the result of one retraining.
type Outcome struct {
	// LogProb and Margin are the targets per test sample (nil when the
	// retraining diverged).
	LogProb []float64 `json:"logprob"`
	Margin  []float64 `json:"margin"`
	// TrainAcc is the accuracy on the subset trained on, ValAcc on the
	// run's whole validation (modulo) or test (CNN) split.
	TrainAcc float64 `json:"train_acc"`
	ValAcc   float64 `json:"val_acc"`
	// Diverged is set when the loss, or a target, stopped being finite.
	Diverged bool `json:"diverged"`
}

// The PCG streams of the run's batch order and flips (train's).
const (
	batchStream = 0x6261746368000000 // "batch" + epoch
	flipStream  = 0x666c697000000000 // "flip" + step
)

// RetrainJob is one retraining.
type RetrainJob struct {
	// Config is the run's configuration and Data its data.
	Config *train.Config
	Data   *train.Data[float32]
	// Subset lists the training samples trained on (indices into
	// Data.Train), Seed the retraining's seed and Steps the number of
	// optimizer steps (the run's).
	Subset []int
	Seed   uint64
	Steps  int
	// Tests are the test samples whose targets are recorded.
	Tests *Tests
	// EvalChunk bounds the samples per forward pass (0: all at once).
	EvalChunk int
}

// Retrain trains the run's model afresh on the job's subset and returns
// the targets and accuracies of the result. Seed k trains as the run does
// with its seed raised by k: the model is initialized as train.BuildModel
// does from seed+k (seed 0: the run's own initial parameters), the batches
// of each epoch over the subset are a permutation drawn as train draws the
// run's (from seed+k and the epoch), so are the flips, and the learning
// rate of step s is the run's at step s (its schedule over its own number
// of steps, whatever the subset's size), for exactly Steps steps (no stop
// at an accuracy). Retraining on the whole training set with seed 0
// therefore gives the run's final model, bit for bit. When ctx is
// cancelled it returns ctx's error within a step.
func Retrain(ctx context.Context, j RetrainJob) (Outcome, error) {
	cfg := *j.Config
	cfg.Seed += j.Seed
	sub, err := j.Data.Train.Subset(j.Subset)
	if err != nil {
		return Outcome{}, err
	}
	if cfg.BatchSize > sub.Len() {
		return Outcome{}, fmt.Errorf("%s: the run's batch size %d exceeds the subset's %d samples", Command, cfg.BatchSize, sub.Len())
	}
	model, err := train.BuildModel[float32](&cfg, j.Data)
	if err != nil {
		return Outcome{}, err
	}
	opt, err := train.BuildOptimizer[float32](&cfg)
	if err != nil {
		return Outcome{}, err
	}
	sess, err := train.NewSession[float32](model, opt, sub)
	if err != nil {
		return Outcome{}, err
	}
	sched, err := cfg.BuildSchedule(j.Data.Train.Len())
	if err != nil {
		return Outcome{}, err
	}
	spe := cfg.StepsPerEpoch(sub.Len())
	flip := cfg.CNN != nil && cfg.CNN.Flip
	var batches [][]int
	for s := 0; s < j.Steps; s++ {
		if err := ctx.Err(); err != nil {
			return Outcome{}, err
		}
		epoch, i := s/spe, s%spe
		if i == 0 {
			batches = [][]int{nil}
			if cfg.BatchSize > 0 {
				if batches, err = data.EpochBatches(newRand(cfg.Seed, batchStream+uint64(epoch)), sub.Len(), cfg.BatchSize); err != nil {
					return Outcome{}, err
				}
			}
		}
		rec := history.StepRecord{Epoch: epoch, LR: sched.LR(s), WeightDecay: cfg.Optimizer.WeightDecay, Batch: batches[i]}
		if flip {
			rec.Flips = train.EncodeFlips(data.FlipDraws(newRand(cfg.Seed, flipStream+uint64(s)), len(batches[i])))
		}
		if err := sess.Step(rec); err != nil {
			return Outcome{}, err
		}
		if l := sess.LastLoss; math.IsNaN(l) || math.IsInf(l, 0) {
			return Outcome{Diverged: true}, nil
		}
	}
	return outcome(model, sub, j)
}

// outcome evaluates a retrained model.
func outcome(model nn.Layer[float32], sub data.Dataset[float32], j RetrainJob) (Outcome, error) {
	var o Outcome
	var err error
	if _, o.TrainAcc, err = train.Evaluate(model, sub, j.EvalChunk); err != nil {
		return o, err
	}
	if _, o.ValAcc, err = train.Evaluate(model, j.Data.Val, j.EvalChunk); err != nil {
		return o, err
	}
	if o.LogProb, o.Margin, err = j.Tests.Targets(model); err != nil {
		return o, err
	}
	for i := range o.LogProb {
		if !finite(o.LogProb[i]) || !finite(o.Margin[i]) {
			return Outcome{TrainAcc: o.TrainAcc, ValAcc: o.ValAcc, Diverged: true}, nil
		}
	}
	return o, nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
