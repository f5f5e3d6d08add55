package explain

import (
	"fmt"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
	"github.com/explaind/explaind/train"
)

// TrainRun is a run recorded by explaind's train package, opened for
// explanation: the replay source in the training precision T and a model
// instance and the data in the evaluation precision E.
type TrainRun[T, E tensor.Float] struct {
	Source   Source[T]
	Manifest *history.Manifest
	Config   *train.Config
	// Model is the evaluation model, Path its path form (nil: generic).
	Model nn.Layer[E]
	Path  epk.PathModel[E]
	// Data holds the training and evaluation sets in precision E.
	Data *train.Data[E]
}

// OpenRun opens the run in dir, whose manifest must say it was trained in
// precision T.
func OpenRun[T, E tensor.Float](dir string) (*TrainRun[T, E], error) {
	r, sess, cfg, err := train.Open[T](dir)
	if err != nil {
		return nil, err
	}
	dT, err := train.LoadData[T](cfg)
	if err != nil {
		return nil, err
	}
	gm, err := train.BuildModel[T](cfg, dT)
	if err != nil {
		return nil, err
	}
	d, err := train.LoadData[E](cfg)
	if err != nil {
		return nil, err
	}
	m, err := train.BuildModel[E](cfg, d)
	if err != nil {
		return nil, err
	}
	if got, want := len(m.Params()), len(sess.Params()); got != want {
		return nil, fmt.Errorf("explain: the evaluation model has %d parameters, the run %d", got, want)
	}
	n := dT.Train.Len()
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	tr := &TrainRun[T, E]{
		Source: Source[T]{
			Replay:    r,
			GradModel: gm,
			Batch:     sess.Batch,
			BatchIndices: func(rec history.StepRecord) []int {
				if rec.Batch == nil {
					return all
				}
				return rec.Batch
			},
			Optimizer: sess.Opt,
			TrainSize: n,
		},
		Manifest: r.Manifest(),
		Config:   cfg,
		Model:    m,
		Data:     d,
	}
	if pm, ok := any(m).(epk.PathModel[E]); ok {
		tr.Path = pm
	}
	return tr, nil
}

// DefaultGroups returns the layer groups of the tensors names, in the
// order of their first tensors: the groups their models define
// (models.GroupOf: for the modulo transformer embedding, attention
// encoders and decoders, linear1, linear2 and decoder; for ResNet-9 each
// top-level layer), and for tensors of other models their modules.
func DefaultGroups(names []string) []TensorGroup {
	var out []TensorGroup
	add := func(group, name string) {
		for i := range out {
			if out[i].Name == group {
				out[i].Tensors = append(out[i].Tensors, name)
				return
			}
		}
		out = append(out, TensorGroup{Name: group, Tensors: []string{name}})
	}
	for _, n := range names {
		add(models.GroupOf(n), n)
	}
	return out
}
