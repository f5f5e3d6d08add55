package explain

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/gemm"
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
	// Chunk is the number of test samples evaluated together (default
	// 256); the memory of the feature pass grows with it.
	Chunk int
	// MaxBytes is a memory ceiling for the accumulators and buffers the
	// job allocates (0: no ceiling); a job that cannot fit is refused
	// before any work starts.
	MaxBytes int64
	// Progress, if set, is called after each step with the number of steps
	// done and the total.
	Progress func(done, total int)
	// Checkpoint, if set, receives the job's state every CheckpointEvery
	// (default 60 s) and on cancellation, so that Resume can continue it.
	Checkpoint      func(st *State) error
	CheckpointEvery time.Duration
	// Resume, if set, continues from a saved state.
	Resume *State
	// Preflight, if set, runs after every check of the spec and before
	// any work (explaind epk verifies the run's replay there).
	Preflight func() error
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
}

// Validation compares the kernel machine with the real model over the
// steps [From, To) (DESIGN.md §1): every array is [test, C].
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

// cotangent kinds of the feature pass.
const (
	cotIdentity = iota // one per class
	cotOnes            // the class sum
	cotLabel           // the true class
	nCot
)

type qstate struct {
	q    Query
	kind Kind
	cot  int // cotangent kind (Feature, Sweep)
	kw   int // cotangents of that kind: C or 1
	// Forward: acc is the result array. Feature: acc[j] per tensor with
	// rows [xs × ks] before abs/reduction. Sweep: acc is [rows, (tensor), N].
	acc     []float64
	facc    [][]float64
	xs, ks  int // Feature accumulator rows: samples (X or 1) × cotangents
	buckets int
	nj      int      // entries of the tensor/group axis (1 if none)
	jmap    [][]int  // tensor index → entries of the tensor/group axis
	labels  []string // tensor/group names
	rows    int      // Sweep: rows R
	// viaFeatures marks a Forward query keeping tensors or groups whose
	// cotangent is one row (the true class or the class sum): its per-tensor
	// values are the dot products of the feature pass's φ with each
	// tensor's update, at the forward pass's own nodes, instead of one
	// forward tangent per tensor.
	viaFeatures bool
}

type job[T, E tensor.Float] struct {
	src    Source[T]
	model  nn.Layer[E]
	ev     *epk.Evaluator[E]
	params []*nn.Param[E]
	spec   Spec[E]
	X, C   int
	S      int
	names  []string
	shapes [][]int
	sizes  []int
	qs     []*qstate
	need   [nCot]bool
	cotOff [nCot]int
	ktot   int
	sweep  bool
	tensor bool
	split  func(in epk.StepInput[E]) (*epk.Update[E], error)
	sgd    *epk.SGDSplitter[E]
	sgdReg map[int]map[string][]float64 // SGD reverse sweep: reg state before step s
	q      [][][]E                      // Sweep: per query, per tensor, [rows × size]
	val    Validation
	nodes  int
	done   int // steps done
	kres   float64
	fwdDat [][]float64 // Sweep: forward data contributions per query row
}

func newJob[T, E tensor.Float](src Source[T], model nn.Layer[E], path epk.PathModel[E], spec Spec[E]) (*job[T, E], error) {
	if src.Replay == nil || src.GradModel == nil || src.Batch == nil || src.Optimizer == nil {
		return nil, errors.New("explain: the source needs a replay, a gradient model, a batch function and the optimizer")
	}
	n := src.Replay.Steps()
	if spec.To == 0 {
		spec.To = n
	}
	if spec.From < 0 || spec.To > n || spec.From >= spec.To {
		return nil, fmt.Errorf("explain: steps %d:%d are outside the run's %d steps (want 0 ≤ FROM < TO ≤ %d)", spec.From, spec.To, n, n)
	}
	if spec.Test.X == nil || spec.Test.X.Shape[0] == 0 {
		return nil, errors.New("explain: no test samples")
	}
	if len(spec.Test.Labels) != spec.Test.X.Shape[0] {
		return nil, fmt.Errorf("explain: %d test labels for %d samples", len(spec.Test.Labels), spec.Test.X.Shape[0])
	}
	if spec.Chunk < 0 {
		return nil, fmt.Errorf("explain: test chunk %d must be positive", spec.Chunk)
	}
	if spec.Chunk == 0 {
		spec.Chunk = 256
	}
	if path == nil {
		if pm, ok := model.(epk.PathModel[E]); ok {
			path = pm
		} else {
			path = epk.LayerPath(model)
		}
	}
	j := &job[T, E]{src: src, model: model, params: model.Params(), spec: spec, X: spec.Test.X.Shape[0], S: spec.To - spec.From}
	// The number of classes, from the model itself.
	y, _, err := model.Forward(tensor.GatherRows(spec.Test.X, []int{0}, 1))
	if err != nil {
		return nil, fmt.Errorf("explain: the model does not accept the test samples: %w", err)
	}
	j.C = y.Shape[len(y.Shape)-1]
	for _, l := range spec.Test.Labels {
		if l < 0 || l >= j.C {
			return nil, fmt.Errorf("explain: test label %d outside the model's %d classes", l, j.C)
		}
	}
	for _, p := range j.params {
		j.names = append(j.names, p.Name)
		j.shapes = append(j.shapes, append([]int(nil), p.Value.Shape...))
		j.sizes = append(j.sizes, len(p.Value.Data))
	}
	if err := j.plan(); err != nil {
		return nil, err
	}
	sp, err := epk.NewSplitter[E](src.Optimizer)
	if err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	j.split = sp.Split
	j.sgd, _ = sp.(*epk.SGDSplitter[E])
	if j.sweep && src.BatchIndices == nil {
		return nil, errors.New("explain: data attribution needs the source's BatchIndices")
	}
	if j.sweep && spec.From != 0 {
		return nil, fmt.Errorf("explain: data attribution over steps %d:%d would leave the momentum carried in from steps before %d unattributed; start at step 0", spec.From, spec.To, spec.From)
	}
	if need := j.bytes(); spec.MaxBytes > 0 && need > spec.MaxBytes {
		return nil, fmt.Errorf("explain: this job needs about %s, over the memory ceiling of %s; lower the test chunk, the test samples, or drop the per-element presets", fmtBytes(need), fmtBytes(spec.MaxBytes))
	}
	ev, err := epk.NewEvaluator[E](path, epk.Options{Quadrature: spec.Quadrature, PerTensor: j.tensor})
	if err != nil {
		return nil, err
	}
	j.ev = ev
	return j, nil
}

// plan classifies the queries and allocates their accumulators.
func (j *job[T, E]) plan() error {
	groupOf := make([][]int, len(j.names)) // tensor → group indices
	var groupNames []string
	idx := map[string]int{}
	for i, n := range j.names {
		idx[n] = i
	}
	for g, gr := range j.spec.Groups {
		groupNames = append(groupNames, gr.Name)
		if len(gr.Tensors) == 0 {
			return fmt.Errorf("explain: group %q names no tensors", gr.Name)
		}
		for _, t := range gr.Tensors {
			i, ok := idx[t]
			if !ok {
				return fmt.Errorf("explain: group %q names an unknown tensor %q (the model has %v)", gr.Name, t, j.names)
			}
			groupOf[i] = append(groupOf[i], g)
		}
	}
	names := map[string]bool{}
	for _, q := range j.spec.Queries {
		if names[q.Name] {
			return fmt.Errorf("explain: two queries are named %q", q.Name)
		}
		names[q.Name] = true
		kind, err := q.kind()
		if err != nil {
			return err
		}
		if q.Keep&Group != 0 && len(j.spec.Groups) == 0 {
			return fmt.Errorf("explain: query %q keeps groups, but no groups are defined", q.Name)
		}
		st := &qstate{q: q, kind: kind, nj: 1, buckets: 1}
		switch {
		case q.Keep&Tensor != 0:
			st.nj, st.labels = len(j.names), j.names
			for i := range j.names {
				st.jmap = append(st.jmap, []int{i})
			}
		case q.Keep&Group != 0:
			st.nj, st.labels, st.jmap = len(groupNames), groupNames, groupOf
		default:
			for range j.names {
				st.jmap = append(st.jmap, []int{0})
			}
		}
		if q.Keep&Step != 0 {
			b := max(q.Bucket, 1)
			st.buckets = (j.S + b - 1) / b
		}
		// Cotangents of the feature pass.
		switch {
		case q.Classes == TrueClass:
			st.cot, st.kw = cotLabel, 1
		case q.Keep&Class != 0 || q.Abs:
			st.cot, st.kw = cotIdentity, j.C
		default:
			st.cot, st.kw = cotOnes, 1
		}
		switch kind {
		case Forward:
			if q.Keep&(Tensor|Group) != 0 {
				if st.cot == cotIdentity {
					j.tensor = true
				} else {
					st.viaFeatures = true
					j.need[st.cot] = true
				}
			}
			st.acc = make([]float64, st.size(j))
		case Feature:
			j.need[st.cot] = true
			st.xs, st.ks = 1, 1
			if q.Keep&Test != 0 || q.Abs {
				st.xs = j.X
			}
			if q.Keep&Class != 0 || q.Abs {
				st.ks = st.kw
			}
		case Sweep:
			j.need[st.cot] = true
			j.sweep = true
			st.rows = st.kw
			if q.Keep&Class == 0 {
				st.rows = 1
			}
			if q.Keep&Test != 0 {
				st.rows *= j.X
			}
			st.acc = make([]float64, st.rows*st.nj*j.src.TrainSize)
		}
		j.qs = append(j.qs, st)
	}
	for k := 0; k < nCot; k++ {
		if j.need[k] {
			j.cotOff[k] = j.ktot
			if k == cotIdentity {
				j.ktot += j.C
			} else {
				j.ktot++
			}
		}
	}
	return nil
}

// size is the number of values of a Forward result.
func (st *qstate) size(j interface{ dims() (int, int) }) int {
	X, C := j.dims()
	n := st.buckets * st.nj
	if st.q.Keep&Test != 0 {
		n *= X
	}
	if st.q.Keep&Class != 0 {
		n *= C
	}
	return n
}

func (j *job[T, E]) dims() (int, int) { return j.X, j.C }

// bytes estimates the memory the job allocates.
func (j *job[T, E]) bytes() int64 {
	P := int64(0)
	for _, s := range j.sizes {
		P += int64(s)
	}
	var e int64 = 8
	var zero E
	if _, ok := any(zero).(float32); ok {
		e = 4
	}
	n := int64(len(j.params)) * P * e * 12 // a step's update, its parts and views
	for _, st := range j.qs {
		switch st.kind {
		case Forward:
			n += int64(len(st.acc)) * 8
		case Feature:
			n += int64(st.xs*st.ks) * P * 8
		case Sweep:
			n += int64(len(st.acc))*8 + int64(st.rows)*P*e
		}
	}
	chunk := int64(min(j.spec.Chunk, j.X))
	if j.ktot > 0 {
		n += chunk * int64(j.ktot) * P * e // features of one chunk
		n += 1 << 24 * e                   // per-row gradients (epk's MaxGradValues)
	}
	if j.sweep {
		n += 256 * P * e // per-sample training gradients of one chunk
	}
	n += int64(j.X*j.C*8) * 8 // validation arrays
	return n
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d B", n)
}

// convertParams converts parameters to precision E.
func convertParams[E, T tensor.Float](ps []*nn.Param[T]) []*nn.Param[E] {
	out := make([]*nn.Param[E], len(ps))
	for i, p := range ps {
		out[i] = &nn.Param[E]{Name: p.Name, Value: tensor.Convert[E](p.Value)}
	}
	return out
}

// input builds the split's input in precision E. The step's mean loss
// gradient is the one the replay's step applied, or, when the view does not
// carry it, recomputed in the training precision at θ_s, as training did.
func (j *job[T, E]) input(v *history.StepView[T]) (epk.StepInput[E], error) {
	g, err := j.gradient(v)
	if err != nil {
		return epk.StepInput[E]{}, err
	}
	in := epk.StepInput[E]{Step: v.Step, LR: v.Record.LR, Before: convertParams[E](v.Before), After: convertParams[E](v.After),
		OptBefore: map[string]*tensor.Dense[E]{}, Grad: map[string]*tensor.Dense[E]{}}
	for k, t := range v.OptBefore {
		in.OptBefore[k] = tensor.Convert[E](t)
	}
	for k, t := range g {
		in.Grad[k] = tensor.Convert[E](t)
	}
	return in, nil
}

// gradient returns the step's mean loss gradient: the one the replay's
// step applied, or, when the view does not carry it, the one recomputed at
// θ_s with the source's gradient model.
func (j *job[T, E]) gradient(v *history.StepView[T]) (map[string]*tensor.Dense[T], error) {
	if v.Grad != nil {
		return v.Grad, nil
	}
	gp := j.src.GradModel.Params()
	if len(gp) != len(v.Before) {
		return nil, fmt.Errorf("explain: the gradient model has %d parameters, the run %d", len(gp), len(v.Before))
	}
	for i, p := range gp {
		copy(p.Value.Data, v.Before[i].Value.Data)
	}
	x, y, err := j.src.Batch(v.Record)
	if err != nil {
		return nil, err
	}
	return epk.MeanGradient(j.src.GradModel, x, y)
}

func (j *job[T, E]) run(ctx context.Context) (*Output, error) {
	start := time.Now()
	j.val = Validation{Start: make([]float64, j.X*j.C), Model: make([]float64, j.X*j.C), Data: make([]float64, j.X*j.C),
		Reg: make([]float64, j.X*j.C), Resid: make([]float64, j.X*j.C), Quad: make([]float64, j.X*j.C),
		StepMaxCompleteness: make([]float64, j.S), StepMaxChange: make([]float64, j.S), StepChange: make([]float64, j.S*j.X)}
	for _, st := range j.qs {
		if st.kind == Feature {
			st.facc = make([][]float64, len(j.sizes))
			for t, size := range j.sizes {
				st.facc[t] = make([]float64, st.xs*st.ks*size)
			}
		}
	}
	if j.sweep {
		j.q = make([][][]E, len(j.qs))
		j.fwdDat = make([][]float64, len(j.qs))
		for i, st := range j.qs {
			if st.kind != Sweep {
				continue
			}
			j.fwdDat[i] = make([]float64, st.rows)
			j.q[i] = make([][]E, len(j.sizes))
			for t, size := range j.sizes {
				j.q[i][t] = make([]E, st.rows*size)
			}
		}
	}
	if j.spec.Resume != nil {
		if err := j.restore(j.spec.Resume); err != nil {
			return nil, err
		}
	}
	lastSave := time.Now()
	every := j.spec.CheckpointEvery
	if every <= 0 {
		every = time.Minute
	}
	visit := func(v *history.StepView[T]) error {
		if err := j.step(v); err != nil {
			return fmt.Errorf("step %d: %w", v.Step, err)
		}
		j.done++
		if j.spec.Progress != nil {
			j.spec.Progress(j.done, j.S)
		}
		if j.spec.Checkpoint != nil && (time.Since(lastSave) > every || ctx.Err() != nil) && j.done < j.S {
			if err := j.spec.Checkpoint(j.save()); err != nil {
				return err
			}
			lastSave = time.Now()
		}
		if ctx.Err() != nil {
			return ErrInterrupted
		}
		return nil
	}
	var err error
	if j.sweep {
		if j.sgd != nil {
			if err := j.sgdStates(); err != nil {
				return nil, err
			}
		}
		err = j.src.Replay.Backward(j.spec.From, j.spec.To-j.done, visit)
	} else {
		from := j.spec.From + j.done
		if j.sgd != nil && j.spec.Resume == nil && from > 0 {
			if err := j.sgdWarmup(from); err != nil {
				return nil, err
			}
		}
		err = j.src.Replay.Forward(from, j.spec.To, visit)
	}
	if err != nil {
		return nil, err
	}
	out := j.finish()
	out.Wall = time.Since(start)
	if j.spec.Resume != nil {
		out.Wall += j.spec.Resume.Wall
	}
	return out, nil
}

// regTracker returns an SGD splitter in the training precision that
// carries the weight-decay part of the momentum buffers over the replayed
// steps (SGDSplitter.AdvanceReg), as the job's own splitter does when it
// splits them.
func (j *job[T, E]) regTracker() (*epk.SGDSplitter[T], error) {
	sp, err := epk.NewSplitter[T](j.src.Optimizer)
	if err != nil {
		return nil, err
	}
	return sp.(*epk.SGDSplitter[T]), nil
}

// advanceReg carries tr's state over the replayed step v, with the step's
// gradient as the split of the step would have it.
func (j *job[T, E]) advanceReg(tr *epk.SGDSplitter[T], v *history.StepView[T]) error {
	g, err := j.gradient(v)
	if err != nil {
		return err
	}
	return tr.AdvanceReg(epk.InputFromView(v, g))
}

// sgdWarmup brings the SGD splitter's carried state to step from.
func (j *job[T, E]) sgdWarmup(from int) error {
	tr, err := j.regTracker()
	if err != nil {
		return err
	}
	err = j.src.Replay.Forward(0, from, func(v *history.StepView[T]) error { return j.advanceReg(tr, v) })
	j.sgd.LoadRegState(tr.RegState())
	return err
}

// sgdStates records, for a reverse sweep, the carried state before every
// step of the range.
func (j *job[T, E]) sgdStates() error {
	tr, err := j.regTracker()
	if err != nil {
		return err
	}
	j.sgdReg = map[int]map[string][]float64{}
	return j.src.Replay.Forward(0, j.spec.To, func(v *history.StepView[T]) error {
		if v.Step >= j.spec.From {
			_, j.sgdReg[v.Step] = tr.RegState()
		}
		return j.advanceReg(tr, v)
	})
}

// step evaluates one step for every query.
func (j *job[T, E]) step(v *history.StepView[T]) error {
	in, err := j.input(v)
	if err != nil {
		return err
	}
	if j.sgd != nil && j.sweep {
		j.sgd.LoadRegState(v.Step, j.sgdReg[v.Step])
		delete(j.sgdReg, v.Step)
	}
	u, err := j.split(in)
	if err != nil {
		return err
	}
	j.val.MaxResid = math.Max(j.val.MaxResid, u.MaxResid)
	si := v.Step - j.spec.From
	if j.sweep {
		for i, st := range j.qs {
			if st.kind == Sweep {
				for t := range j.q[i] {
					scaleE(j.q[i][t], u.Kernel.Beta)
				}
			}
		}
	}
	for lo := 0; lo < j.X; lo += j.spec.Chunk {
		hi := min(lo+j.spec.Chunk, j.X)
		idx := make([]int, hi-lo)
		for i := range idx {
			idx[i] = lo + i
		}
		x := tensor.GatherRows(j.spec.Test.X, idx, 1)
		res, err := j.ev.Contributions(u, x, nil)
		if err != nil {
			return err
		}
		j.addForward(si, lo, res)
		if j.ktot > 0 {
			f, _, err := j.ev.Features(u, x, res.Plan, j.cotangents(lo, hi))
			if err != nil {
				return err
			}
			j.addFeatures(si, lo, hi, f, u)
		}
	}
	if j.sweep {
		if err := j.addTraining(v, u); err != nil {
			return err
		}
	}
	return nil
}

func scaleE[E tensor.Float](v []E, b float64) {
	bb := E(b)
	for i := range v {
		v[i] *= bb
	}
}

// cotangents returns the feature pass's cotangents [B, ktot, C].
func (j *job[T, E]) cotangents(lo, hi int) *tensor.Dense[E] {
	C, K := j.C, j.ktot
	cot := tensor.New[E](hi-lo, K, C)
	for b := 0; b < hi-lo; b++ {
		row := cot.Data[b*K*C : (b+1)*K*C]
		if j.need[cotIdentity] {
			o := j.cotOff[cotIdentity]
			for c := 0; c < C; c++ {
				row[(o+c)*C+c] = 1
			}
		}
		if j.need[cotOnes] {
			o := j.cotOff[cotOnes]
			for c := 0; c < C; c++ {
				row[o*C+c] = 1
			}
		}
		if j.need[cotLabel] {
			row[j.cotOff[cotLabel]*C+j.spec.Test.Labels[lo+b]] = 1
		}
	}
	return cot
}

// addForward accumulates a chunk's forward-mode results.
func (j *job[T, E]) addForward(si, lo int, res *epk.StepResult[E]) {
	C := j.C
	B := res.Change.Shape[0]
	if si == 0 {
		copy(j.val.Start[lo*C:], res.Before.Data)
	}
	if si == j.S-1 {
		copy(j.val.Model[lo*C:], res.After.Data)
	}
	for i := 0; i < B*C; i++ {
		g := lo*C + i
		j.val.Data[g] += res.Data.Data[i]
		j.val.Reg[g] += res.Reg.Data[i]
		j.val.Resid[g] += res.Resid.Data[i]
		j.val.Quad[g] += res.Completeness.Data[i]
	}
	j.val.StepMaxCompleteness[si] = math.Max(j.val.StepMaxCompleteness[si], res.MaxCompleteness)
	j.val.StepMaxChange[si] = math.Max(j.val.StepMaxChange[si], res.MaxChange)
	for b := 0; b < B; b++ {
		y := j.spec.Test.Labels[lo+b]
		j.val.StepChange[si*j.X+lo+b] = res.Change.Data[b*C+y]
	}
	for _, n := range res.Plan.NodesPerSample() {
		j.nodes += n
	}
	for qi, st := range j.qs {
		if st.kind == Sweep {
			// The forward data contributions of the sweep's rows, to
			// check the kernel against.
			for b := 0; b < B; b++ {
				x := lo + b
				for k := 0; k < st.kw; k++ {
					var v float64
					if st.cot == cotLabel {
						v = res.Data.Data[b*C+j.spec.Test.Labels[x]]
					} else if st.q.Keep&Class != 0 {
						v = res.Data.Data[b*C+k]
					} else {
						for c := 0; c < C; c++ {
							v += res.Data.Data[b*C+c]
						}
					}
					j.fwdDat[qi][st.sweepRow(x, k)] += v
				}
			}
			continue
		}
		if st.kind != Forward || st.viaFeatures {
			continue
		}
		q := st.q
		bucket := 0
		if q.Keep&Step != 0 {
			bucket = si / max(q.Bucket, 1)
		}
		var part *tensor.Dense[float64]
		switch q.Part {
		case Data:
			part = res.Data
		case Reg:
			part = res.Reg
		case Resid:
			part = res.Resid
		}
		for b := 0; b < B; b++ {
			x := lo + b
			for c := 0; c < C; c++ {
				if q.Classes == TrueClass && c != j.spec.Test.Labels[x] {
					continue
				}
				if q.Keep&(Tensor|Group) != 0 {
					for t, tc := range res.Tensor {
						v := tc.Data[b*C+c]
						for _, e := range st.jmap[t] {
							st.acc[st.forwardIndex(j.X, C, bucket, x, c, e)] += v
						}
					}
					continue
				}
				var v float64
				switch q.Part {
				case Update:
					v = res.Data.Data[b*C+c] + res.Reg.Data[b*C+c] + res.Resid.Data[b*C+c]
				case Model:
					v = res.Data.Data[b*C+c] + res.Reg.Data[b*C+c]
				default:
					v = part.Data[b*C+c]
				}
				st.acc[st.forwardIndex(j.X, C, bucket, x, c, 0)] += v
			}
		}
	}
}

// forwardIndex is the position of (bucket, x, c, tensor entry e) in a
// Forward result, in the axis order step, test, class, tensor/group.
func (st *qstate) forwardIndex(X, C, bucket, x, c, e int) int {
	i := 0
	if st.q.Keep&Step != 0 {
		i = bucket
	}
	if st.q.Keep&Test != 0 {
		i = i*X + x
	}
	if st.q.Keep&Class != 0 {
		i = i*C + c
	}
	return i*st.nj + e
}

// sweepRow is the row of test sample x and cotangent k of a Sweep query.
func (st *qstate) sweepRow(x, k int) int {
	r := 0
	if st.q.Keep&Test != 0 {
		r = x
	}
	if st.q.Keep&Class != 0 {
		r = r*st.kw + k
	}
	return r
}

// partOf returns the update part a query attributes, for tensor t.
func partOf[E tensor.Float](u *epk.Update[E], p Part, t int, buf []float64) []float64 {
	d, r, s := u.Data[t].Data, u.Reg[t].Data, u.Resid[t].Data
	for i := range buf {
		switch p {
		case Update:
			buf[i] = float64(d[i]) + float64(r[i]) + float64(s[i])
		case Data:
			buf[i] = float64(d[i])
		case Reg:
			buf[i] = float64(r[i])
		case Resid:
			buf[i] = float64(s[i])
		case Model:
			buf[i] = float64(d[i]) + float64(r[i])
		}
	}
	return buf
}

// addFeatures accumulates a chunk's features of step index si into the
// Feature and Sweep queries and the Forward queries evaluated through them.
func (j *job[T, E]) addFeatures(si, lo, hi int, f *epk.Features[E], u *epk.Update[E]) {
	K := j.ktot
	for qi, st := range j.qs {
		if st.kind == Forward && st.viaFeatures {
			j.addTensorDots(st, si, lo, hi, f, u)
			continue
		}
		if st.kind != Feature && st.kind != Sweep {
			continue
		}
		o := j.cotOff[st.cot]
		for t, size := range j.sizes {
			phi := f.Phi[t].Data
			if st.kind == Feature {
				part := partOf(u, st.q.Part, t, make([]float64, size))
				acc := st.facc[t]
				for b := 0; b < hi-lo; b++ {
					xr := 0
					if st.xs > 1 {
						xr = lo + b
					}
					for k := 0; k < st.kw; k++ {
						kr := 0
						if st.ks > 1 {
							kr = k
						}
						src := phi[(b*K+o+k)*size : (b*K+o+k+1)*size]
						dst := acc[(xr*st.ks+kr)*size : (xr*st.ks+kr+1)*size]
						for e, pv := range src {
							dst[e] += float64(pv) * part[e]
						}
					}
				}
				continue
			}
			// Sweep: Q_s += A_s ⊙ φ_s (Q was scaled by β for this step).
			a := u.Kernel.A[t]
			if a == nil {
				continue
			}
			q := j.q[qi][t]
			for b := 0; b < hi-lo; b++ {
				for k := 0; k < st.kw; k++ {
					r := st.sweepRow(lo+b, k)
					src := phi[(b*K+o+k)*size : (b*K+o+k+1)*size]
					dst := q[r*size : (r+1)*size]
					for e, pv := range src {
						dst[e] += a.Data[e] * pv
					}
				}
			}
		}
	}
}

// addTensorDots adds ⟨φ_s(x), part of Δθ_t⟩ for every tensor t to a
// Forward query kept per tensor or group: the contribution of tensor t to
// the true class (or the class sum) at the nodes of the forward pass.
func (j *job[T, E]) addTensorDots(st *qstate, si, lo, hi int, f *epk.Features[E], u *epk.Update[E]) {
	K, C := j.ktot, j.C
	o := j.cotOff[st.cot]
	bucket := 0
	if st.q.Keep&Step != 0 {
		bucket = si / max(st.q.Bucket, 1)
	}
	for t, size := range j.sizes {
		part := partOf(u, st.q.Part, t, make([]float64, size))
		phi := f.Phi[t].Data
		for b := 0; b < hi-lo; b++ {
			x := lo + b
			var v float64
			for e, pv := range phi[(b*K+o)*size : (b*K+o+1)*size] {
				v += float64(pv) * part[e]
			}
			c := 0
			if st.cot == cotLabel {
				c = j.spec.Test.Labels[x]
			}
			for _, e := range st.jmap[t] {
				st.acc[st.forwardIndex(j.X, C, bucket, x, c, e)] += v
			}
		}
	}
}

// addTraining adds E_s/|B_s| ⟨Q_s, ∇θ f_{y_k}(θ_s; x_k)⟩ to every training
// sample k of the step's batch, for every Sweep query. The training
// samples' gradients are recomputed in the run's own precision T with the
// gradient model, and the products with Q run in T too: for a float32 run
// evaluated in float64 the quadrature keeps float64 accuracy while the
// kernel's matrix products, the bulk of the work, run at float32 speed
// (the kernel's relative rounding is then about 1e-7, which
// Output.KernelResidual reports).
func (j *job[T, E]) addTraining(v *history.StepView[T], u *epk.Update[E]) error {
	xb, yb, err := j.src.Batch(v.Record)
	if err != nil {
		return err
	}
	idx := j.src.BatchIndices(v.Record)
	if len(idx) != len(yb) {
		return fmt.Errorf("the batch has %d samples and %d indices", len(yb), len(idx))
	}
	model := j.src.GradModel
	params := model.Params()
	for t, p := range params {
		copy(p.Value.Data, v.Before[t].Value.Data)
	}
	// Q in the training precision.
	qT := make([][][]T, len(j.qs))
	for qi, st := range j.qs {
		if st.kind != Sweep {
			continue
		}
		qT[qi] = make([][]T, len(j.sizes))
		for t := range j.sizes {
			if same, ok := any(j.q[qi][t]).([]T); ok {
				qT[qi][t] = same
				continue
			}
			c := make([]T, len(j.q[qi][t]))
			for i, x := range j.q[qi][t] {
				c[i] = T(x)
			}
			qT[qi][t] = c
		}
	}
	n := len(yb)
	const chunk = 256
	var g *nn.Grads[T]
	N := j.src.TrainSize
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		rows := make([]int, hi-lo)
		for i := range rows {
			rows[i] = lo + i
		}
		y, state, err := model.Forward(tensor.GatherRows(xb, rows, 1))
		if err != nil {
			return err
		}
		dy := tensor.New[T](y.Shape...)
		C := y.Shape[len(y.Shape)-1]
		for i := range rows {
			dy.Data[i*C+yb[lo+i]] = 1
		}
		if g == nil || len(g.Of[params[0]].Data) != (hi-lo)*j.sizes[0] {
			g = nn.NewGrads(nn.PerRow, params, hi-lo)
		} else {
			for _, buf := range g.Of {
				clear(buf.Data)
			}
		}
		if _, err := model.Backward(state, dy, g, false); err != nil {
			return err
		}
		m := hi - lo
		for qi, st := range j.qs {
			if st.kind != Sweep {
				continue
			}
			R := st.rows
			out := make([]T, R*m)
			flush := func(t int) {
				for r := 0; r < R; r++ {
					for i := 0; i < m; i++ {
						val := float64(out[r*m+i])
						for _, e := range st.jmap[t] {
							st.acc[(r*st.nj+e)*N+idx[lo+i]] += val
						}
					}
				}
				clear(out)
			}
			for t, p := range params {
				w := u.Kernel.E[t] / float64(n)
				if w == 0 {
					continue
				}
				size := j.sizes[t]
				// out[R × m] += w · Q_t[R × size] · G_t[m × size]ᵀ; with
				// the parameter axis summed, every tensor adds into one out.
				gemm.Gemm(false, true, R, m, size, T(w), qT[qi][t], size, g.Of[p].Data, size, T(1), out, m)
				if st.nj > 1 {
					flush(t)
				}
			}
			if st.nj == 1 {
				flush(0)
			}
		}
	}
	return nil
}

// finish assembles the results.
func (j *job[T, E]) finish() *Output {
	out := &Output{Samples: j.X, Classes: j.C, From: j.spec.From, To: j.spec.To, TensorNames: j.names, TensorShapes: j.shapes, Validation: j.val}
	out.Validation.Nodes = float64(j.nodes) / float64(j.X*j.S)
	for qi, st := range j.qs {
		q := st.q
		r := &Result{Query: q}
		if q.Keep&Step != 0 {
			r.Axes, r.Shape = append(r.Axes, "step"), append(r.Shape, st.buckets)
		}
		if q.Keep&Test != 0 {
			r.Axes, r.Shape = append(r.Axes, "test"), append(r.Shape, j.X)
		}
		if q.Keep&Class != 0 {
			r.Axes, r.Shape = append(r.Axes, "class"), append(r.Shape, j.C)
		}
		switch st.kind {
		case Forward:
			if q.Keep&(Tensor|Group) != 0 {
				r.Axes, r.Shape, r.Labels = append(r.Axes, (q.Keep&(Tensor|Group)).String()), append(r.Shape, st.nj), st.labels
			}
			r.Data = st.acc
		case Sweep:
			if q.Keep&(Tensor|Group) != 0 {
				r.Axes, r.Shape, r.Labels = append(r.Axes, (q.Keep&(Tensor|Group)).String()), append(r.Shape, st.nj), st.labels
			}
			r.Axes, r.Shape = append(r.Axes, "train"), append(r.Shape, j.src.TrainSize)
			r.Data = st.acc
			N := j.src.TrainSize
			scale := 1e-300
			for _, v := range j.fwdDat[qi] {
				scale = math.Max(scale, math.Abs(v))
			}
			for row := 0; row < st.rows && q.Keep&Group == 0; row++ {
				var s float64
				for k := 0; k < st.nj*N; k++ {
					s += st.acc[row*st.nj*N+k]
				}
				out.KernelResidual = math.Max(out.KernelResidual, math.Abs(s-j.fwdDat[qi][row])/scale)
			}
		case Feature:
			// Reduce the accumulator rows [xs × ks] to the kept axes, with
			// the absolute value first when asked.
			lead := 1
			for _, d := range r.Shape {
				lead *= d
			}
			keepX, keepK := q.Keep&Test != 0, q.Keep&Class != 0
			reduce := func(t int) []float64 {
				size := j.sizes[t]
				if !q.Abs && (st.xs == 1 || keepX) && (st.ks == 1 || keepK) {
					return st.facc[t] // already at the kept resolution
				}
				dst := make([]float64, lead*size)
				acc := st.facc[t]
				for xr := 0; xr < st.xs; xr++ {
					for kr := 0; kr < st.ks; kr++ {
						li := 0
						if keepX {
							li = xr
						}
						if keepK {
							li = li*st.ks + kr
						}
						src := acc[(xr*st.ks+kr)*size : (xr*st.ks+kr+1)*size]
						d := dst[li*size : (li+1)*size]
						for e, v := range src {
							if q.Abs {
								v = math.Abs(v)
							}
							d[e] += v
						}
					}
				}
				return dst
			}
			switch {
			case q.Keep&Param != 0:
				r.TensorNames = j.names
				for t := range j.sizes {
					r.Tensors = append(r.Tensors, &tensor.Dense[float64]{Shape: append(append([]int(nil), r.Shape...), j.shapes[t]...), Data: reduce(t)})
				}
			default:
				if q.Keep&(Tensor|Group) != 0 {
					r.Axes, r.Shape, r.Labels = append(r.Axes, (q.Keep&(Tensor|Group)).String()), append(r.Shape, st.nj), st.labels
				}
				r.Data = make([]float64, lead*st.nj)
				for t, size := range j.sizes {
					d := reduce(t)
					for li := 0; li < lead; li++ {
						var s float64
						for _, v := range d[li*size : (li+1)*size] {
							s += v
						}
						for _, e := range st.jmap[t] {
							r.Data[li*st.nj+e] += s
						}
					}
				}
			}
		}
		out.Results = append(out.Results, r)
	}
	return out
}
