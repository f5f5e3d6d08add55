// Package train trains explaind's models while recording their history in
// a run store (package history), and rebuilds recorded runs for replay.
//
// Session is the training step shared by training and replay: mean NLL
// loss on a batch, one backward pass, one optimizer step. Because replay
// runs exactly the same code, every recorded step can be recomputed and
// verified bit for bit.
package train

import (
	"encoding/hex"
	"fmt"

	"github.com/explaind/explaind/data"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/optim"
	"github.com/explaind/explaind/tensor"
)

// Session trains a classifier (a layer producing log-probabilities) on a
// dataset with an optimizer. It implements history.Stepper, so a training
// loop of the user's own can be recorded with history.Create and replayed.
type Session[T tensor.Float] struct {
	Model nn.Layer[T]
	Opt   optim.Optimizer[T]
	Train data.Dataset[T]

	// LastLoss and LastAccuracy describe the batch of the last Step,
	// evaluated before its update.
	LastLoss, LastAccuracy float64
	params                 []*nn.Param[T]
	lastGrad               map[string]*tensor.Dense[T]
}

// NewSession returns a session, checking that the model accepts the data.
func NewSession[T tensor.Float](model nn.Layer[T], opt optim.Optimizer[T], train data.Dataset[T]) (*Session[T], error) {
	if err := train.Validate(); err != nil {
		return nil, err
	}
	shape, err := model.OutShape(train.Inputs.Shape)
	if err != nil {
		return nil, fmt.Errorf("train: the model does not accept %s: %w", train.Name, err)
	}
	if len(shape) != 2 || shape[1] < train.Classes {
		return nil, fmt.Errorf("train: the model outputs shape %v, want [N, C] with C ≥ %d classes", shape, train.Classes)
	}
	return &Session[T]{Model: model, Opt: opt, Train: train, params: model.Params()}, nil
}

// Params returns the model's parameters.
func (s *Session[T]) Params() []*nn.Param[T] { return s.params }

// Optimizer returns the session's optimizer.
func (s *Session[T]) Optimizer() optim.Optimizer[T] { return s.Opt }

// EncodeFlips packs flip draws into the hex bitmap a StepRecord stores.
func EncodeFlips(flips []bool) string {
	if len(flips) == 0 {
		return ""
	}
	b := make([]byte, (len(flips)+7)/8)
	for i, f := range flips {
		if f {
			b[i/8] |= 1 << (i % 8)
		}
	}
	return hex.EncodeToString(b)
}

// DecodeFlips unpacks n flip draws from a StepRecord's bitmap.
func DecodeFlips(s string, n int) ([]bool, error) {
	if s == "" {
		return nil, nil
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != (n+7)/8 {
		return nil, fmt.Errorf("train: flip bitmap %q does not encode %d draws", s, n)
	}
	out := make([]bool, n)
	for i := range out {
		out[i] = b[i/8]&(1<<(i%8)) != 0
	}
	return out, nil
}

// Batch returns the inputs and labels of a step's batch, augmented as the
// record says.
func (s *Session[T]) Batch(rec history.StepRecord) (*tensor.Dense[T], []int, error) {
	if rec.Batch == nil {
		if rec.Flips != "" {
			return nil, nil, fmt.Errorf("train: a full-batch step cannot have flips")
		}
		return s.Train.Inputs, s.Train.Labels, nil
	}
	x, y, err := s.Train.Batch(rec.Batch)
	if err != nil {
		return nil, nil, err
	}
	flips, err := DecodeFlips(rec.Flips, len(rec.Batch))
	if err != nil {
		return nil, nil, err
	}
	if flips != nil {
		if x, err = data.ApplyFlips(x, flips); err != nil {
			return nil, nil, err
		}
	}
	return x, y, nil
}

// Step performs one optimizer step on the record's batch with its
// learning rate.
func (s *Session[T]) Step(rec history.StepRecord) error {
	x, y, err := s.Batch(rec)
	if err != nil {
		return err
	}
	logp, st, err := s.Model.Forward(x)
	if err != nil {
		return err
	}
	loss, dy, err := nn.NLLLoss(logp, y)
	if err != nil {
		return err
	}
	g := nn.NewGrads(nn.Summed, s.params, 0)
	if _, err := s.Model.Backward(st, dy, g, false); err != nil {
		return err
	}
	if err := s.Opt.Step(s.params, g, rec.LR); err != nil {
		return err
	}
	s.LastLoss, s.LastAccuracy = loss, nn.Accuracy(logp, y)
	s.lastGrad = make(map[string]*tensor.Dense[T], len(s.params))
	for _, p := range s.params {
		s.lastGrad[p.Name] = g.Of[p]
	}
	return nil
}

// LastGradient returns the mean loss gradient the last Step applied,
// computed at the parameters before it, by parameter name; nil before the
// first step. It implements history.GradientStepper. Each Step allocates
// new arrays, so the caller may keep them.
func (s *Session[T]) LastGradient() map[string]*tensor.Dense[T] { return s.lastGrad }

// Evaluate returns the mean NLL loss and the accuracy of the model on a
// dataset, in chunks of at most chunk samples (0: all at once).
func Evaluate[T tensor.Float](model nn.Layer[T], d data.Dataset[T], chunk int) (loss, acc float64, err error) {
	n := d.Len()
	if n == 0 {
		return 0, 0, nil
	}
	if chunk <= 0 {
		chunk = n
	}
	var sumLoss float64
	var hits int
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		per := len(d.Inputs.Data) / n
		x := &tensor.Dense[T]{Shape: append([]int{hi - lo}, d.Inputs.Shape[1:]...), Data: d.Inputs.Data[lo*per : hi*per]}
		logp, _, err := model.Forward(x)
		if err != nil {
			return 0, 0, err
		}
		l, _, err := nn.NLLLoss(logp, d.Labels[lo:hi])
		if err != nil {
			return 0, 0, err
		}
		sumLoss += l * float64(hi-lo)
		hits += int(nn.Accuracy(logp, d.Labels[lo:hi])*float64(hi-lo) + 0.5)
	}
	return sumLoss / float64(n), float64(hits) / float64(n), nil
}
