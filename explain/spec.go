package explain

import (
	"context"
	"errors"
	"time"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/optim"
	"github.com/explaind/explaind/tensor"
)

// Source is a recorded training run, replayed in its training precision T.
type Source[T tensor.Float] struct {
	// Replay recomputes and verifies the run's states.
	Replay *history.Replay[T]
	// GradModel is a model instance of the run's architecture used only to
	// recompute each step's mean loss gradient (not the replay's model).
	GradModel nn.Layer[T]
	// NewGradModel, if set, builds another instance of the gradient model,
	// so that data attribution can form the training samples' gradients
	// on several workers (Spec.Workers of them).
	NewGradModel func() (nn.Layer[T], error)
	// Batch returns a step's training inputs (augmented as recorded) and
	// labels.
	Batch func(rec history.StepRecord) (*tensor.Dense[T], []int, error)
	// BatchIndices returns the training-sample indices of a step (nil
	// record batch: the whole training set in order).
	BatchIndices func(rec history.StepRecord) []int
	// Optimizer supplies the optimizer's settings (SGD or AdamW).
	Optimizer optim.Optimizer[T]
	// TrainSize is the number of training samples.
	TrainSize int
}

// TestSet is the test batch, in the evaluation precision E.
type TestSet[E tensor.Float] struct {
	// X holds the inputs, Labels their classes.
	X      *tensor.Dense[E]
	Labels []int
}

// TensorGroup is a named set of parameter tensors.
type TensorGroup struct {
	Name    string
	Tensors []string
}

// Spec says what to compute.
type Spec[E tensor.Float] struct {
	// Queries are evaluated together in one pass over the history.
	Queries []Query
	// Test is the test batch.
	Test TestSet[E]
	// From and To are the range of steps [From, To) (To 0: every step).
	From, To int
	// Quadrature is the rule for φ_s.
	Quadrature epk.Quadrature
	// Groups names the groups Group queries sum over.
	Groups []TensorGroup
	// Chunk is the number of test samples a worker evaluates together
	// (default 256 divided among the workers, at most the samples' share
	// of one worker, and at most ChunkValues over the model's forward
	// values per sample, nn.ForwardValues); the memory of the feature pass
	// grows with it and the workers.
	Chunk int
	// Workers is the number of chunks evaluated at once, each by its own
	// model instance from NewModel (0: GOMAXPROCS when NewModel is set, 1
	// otherwise). Each chunk's results are added to the accumulators in
	// chunk order, so the outputs do not depend on the worker count.
	// Data attribution forms its training samples' gradients on as many
	// workers when Source.NewGradModel is set; their products then run
	// one per core instead of split across the cores, which rounds
	// differently (the kernel's float32 rounding, not its exactness).
	Workers int
	// NewModel, if set, builds another instance of the evaluation model
	// and its path form (nil: generic) for a parallel worker.
	NewModel func() (nn.Layer[E], epk.PathModel[E], error)
	// MaxBytes is a memory ceiling for the accumulators and buffers the
	// job allocates (0: no ceiling); a job that cannot fit is refused
	// before any work starts.
	MaxBytes int64
	// Progress, if set, is called after each step with the number of steps
	// done and the total.
	Progress func(done, total int)
	// Checkpoint, if set, receives the job's state every CheckpointEvery
	// (default 60 s) and on cancellation, so that Resume can continue it.
	// With CheckpointCost c > 0, a state that takes long to save is saved
	// less often, so that saving costs at most 1/c of the job's time: the
	// next checkpoint comes max(CheckpointEvery, c · d) after the end of
	// one that took d.
	Checkpoint      func(st *State) error
	CheckpointEvery time.Duration
	CheckpointCost  float64
	// Resume, if set, continues from a saved state.
	Resume *State
	// Preflight, if set, runs after every check of the spec and before
	// any work (explaind epk verifies the run's replay there).
	Preflight func() error
	// Snapshots, if set, receives the Gram snapshots of snapshot queries
	// (Query.Gram) as they are taken, and the job keeps none of them: their
	// Results carry the snapshot steps and shape but no matrices (Data32
	// nil), and a saved State counts the snapshots without holding them.
	// Without it the job keeps every snapshot in memory, in the Result and
	// in every State it saves.
	Snapshots GramSink
}

// GramSink stores the Gram snapshots of snapshot queries (Query.Gram) as
// a job takes them (Spec.Snapshots), so that the job holds one snapshot at
// a time instead of all of them: package explain/job streams them into the
// history_gram.npy it writes.
type GramSink interface {
	// Snapshot stores group g's Gram matrix [test, test] of snapshot k
	// (0 for the first) of query q, taken at step (snapshot k holds the
	// scores of the steps [From, step)), as float32; gram is valid only
	// during the call. The groups of a snapshot come in any order, each
	// once, before the next snapshot's. A job resumed from a State takes
	// the snapshots from the State's count on, so that the sink is asked
	// again for snapshots it may already hold, with the same values.
	Snapshot(q Query, k, step, g int, gram []float64) error
	// Holds returns nil if the sink holds the first k snapshots of q, and
	// otherwise an error saying what it lacks: a job resumed from a State
	// that counts k snapshots asks before any work.
	Holds(q Query, k int) error
}

// Result is the answer to one query.
type Result struct {
	Query Query
	// Axes names the dimensions of Shape (among step, test, class, train,
	// tensor, group); Labels names the entries of a tensor or group axis.
	Axes   []string
	Shape  []int
	Data   []float64
	Labels []string
	// For queries keeping Param: one array per parameter tensor, of shape
	// Shape followed by the tensor's shape, named by TensorNames.
	TensorNames []string
	Tensors     []*tensor.Dense[float64]
	// Steps are, for snapshot queries (Query.Gram), the step at which
	// each snapshot was taken: snapshot k holds the scores of the steps
	// [From, Steps[k]). Their Gram matrices are in Data32, in float32
	// (Data is nil), to halve what the snapshots hold in memory; with a
	// Spec.Snapshots sink, they are in the sink only (Data32 is nil too).
	Steps  []int
	Data32 []float32
}

// Validation compares the kernel machine with the real model over the
// steps [From, To) (docs/method.md §1): every array is [test, C].
type Validation struct {
	// Start is f(θ_From; x), Model the real f(θ_To; x).
	Start, Model []float64
	// Data, Reg and Resid are the summed contributions of the updates'
	// parts; Quad is the summed quadrature (completeness) residual, so
	// that Start + Data + Reg + Resid − Quad = Model up to rounding.
	Data, Reg, Resid, Quad []float64
	// StepMaxCompleteness is each step's max |completeness residual|;
	// StepMaxChange its max |f(θ_{s+1}) − f(θ_s)|.
	StepMaxCompleteness, StepMaxChange []float64
	// StepChange is f_y(θ_{s+1}) − f_y(θ_s) of each sample's true class
	// [S, test].
	StepChange []float64
	// MaxResid is the largest update-reconstruction residual |Resid| of
	// any parameter element over the steps.
	MaxResid float64
	// Nodes is the mean number of quadrature nodes per sample and step.
	Nodes float64
	// Certified reports that the quadrature rule has a tolerance (Exact,
	// Adaptive) and that every step's measured completeness residual was
	// at most that tolerance for every test sample and class
	// (epk.StepResult.Certified). Missed lists the (step, test sample)
	// pairs whose residual was not, and MissedCount counts them (a merged
	// output's list may hold fewer).
	Certified   bool
	Missed      []Miss
	MissedCount int
}

// Miss is a step at which a test sample's completeness residual, max over
// classes, missed the quadrature's tolerance (or was NaN).
type Miss struct {
	// Step is the training step s; Sample the test sample (its position
	// in Spec.Test).
	Step, Sample int
	Residual     float64
}

// Output is everything a job computed.
type Output struct {
	Samples, Classes int
	From, To         int
	TensorNames      []string
	TensorShapes     [][]int
	Validation       Validation
	Results          []*Result
	// KernelResidual is, for Sweep queries, max |Σ_k kernel − the forward
	// data contributions| over their rows, relative to the largest forward
	// data contribution: the agreement of the sweep with
	// the forward evaluation (nonzero only through rounding and the
	// training precision of the recorded gradients).
	KernelResidual float64
	Wall           time.Duration
}

// ErrInterrupted is returned when the context is cancelled; the state was
// handed to Spec.Checkpoint first.
var ErrInterrupted = errors.New("explain: interrupted")

// Run evaluates spec's queries on the run src with model, the evaluation
// model in precision E (given its own instance). path, if non-nil, is
// model's path form (models.Modulo has one); otherwise epk.LayerPath(model).
func Run[T, E tensor.Float](ctx context.Context, src Source[T], model nn.Layer[E], path epk.PathModel[E], spec Spec[E]) (*Output, error) {
	j, err := newJob(src, model, path, spec)
	if err != nil {
		return nil, err
	}
	if spec.Preflight != nil {
		if err := spec.Preflight(); err != nil {
			return nil, err
		}
	}
	return j.run(ctx)
}

// StepInputOf is the epk.StepInput of a replayed step whose mean loss
// gradient at θ_s is grad.
func StepInputOf[T tensor.Float](v *history.StepView[T], grad map[string]*tensor.Dense[T]) epk.StepInput[T] {
	return epk.StepInput[T]{Step: v.Step, LR: v.Record.LR, Before: v.Before, After: v.After, OptBefore: v.OptBefore, Grad: grad}
}
