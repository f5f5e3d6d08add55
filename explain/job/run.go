package job

import (
	"fmt"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/explain"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
	"github.com/explaind/explaind/train"
)

// A TrainRun is a run recorded by package train, opened for explanation: the
// replay source in the training precision T, and a model instance and the
// data in the evaluation precision E.
type TrainRun[T, E tensor.Float] struct {
	Source   explain.Source[T]
	Manifest *history.Manifest
	Config   *train.Config
	// Model is the evaluation model, Path its path form (nil: generic).
	Model nn.Layer[E]
	Path  epk.PathModel[E]
	// NewModel builds another instance of the evaluation model and its
	// path form, for a parallel worker (explain.Spec.NewModel).
	NewModel func() (nn.Layer[E], epk.PathModel[E], error)
	// Data holds the training and evaluation sets in precision E.
	Data *train.Data[E]
}

// OpenRun opens the run in dir, whose manifest must say it was trained in
// precision T. The datasets are read once, and once more only when E is
// not T (each precision builds its inputs from the raw data itself, as
// training did).
func OpenRun[T, E tensor.Float](dir string) (*TrainRun[T, E], error) {
	o, err := train.Open[T](dir)
	if err != nil {
		return nil, err
	}
	gm, err := train.BuildModel[T](o.Config, o.Data)
	if err != nil {
		return nil, err
	}
	d, ok := any(o.Data).(*train.Data[E])
	if !ok {
		if d, err = train.LoadData[E](o.Config); err != nil {
			return nil, err
		}
	}
	m, err := train.BuildModel[E](o.Config, d)
	if err != nil {
		return nil, err
	}
	if got, want := len(m.Params()), len(o.Session.Params()); got != want {
		return nil, fmt.Errorf("job: the evaluation model has %d parameters, the run %d", got, want)
	}
	n := o.Data.Train.Len()
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	r := &TrainRun[T, E]{
		Source: explain.Source[T]{
			Replay:    o.Replay,
			GradModel: gm,
			NewGradModel: func() (nn.Layer[T], error) {
				return train.BuildModel[T](o.Config, o.Data)
			},
			Batch: o.Session.Batch,
			BatchIndices: func(rec history.StepRecord) []int {
				if rec.Batch == nil {
					return all
				}
				return rec.Batch
			},
			Optimizer: o.Session.Opt,
			TrainSize: n,
		},
		Manifest: o.Replay.Manifest(),
		Config:   o.Config,
		Model:    m,
		Data:     d,
	}
	if pm, ok := any(m).(epk.PathModel[E]); ok {
		r.Path = pm
	}
	r.NewModel = func() (nn.Layer[E], epk.PathModel[E], error) {
		m, err := train.BuildModel[E](o.Config, d)
		if err != nil {
			return nil, nil, err
		}
		pm, _ := any(m).(epk.PathModel[E])
		return m, pm, nil
	}
	return r, nil
}
