package explain

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// An evaluation accumulates one query over the steps. Each kind of
// evaluation (Kind) has its type: forwardEval (forward.go), featureEval
// (feature.go), sweepEval (sweep.go) and gramEval (snapshot.go).
type evaluation[E tensor.Float] interface {
	query() Query
	// bytes estimates the memory of the accumulators, for P parameter
	// elements of elem bytes each in the evaluation precision.
	bytes(p, elem int64) int64
	// allocate makes the accumulators.
	allocate()
	// add accumulates one chunk of test samples of a step; an error (a
	// GramSink's) stops the job.
	add(c *chunk[E]) error
	// perSample reports whether add writes only the accumulator rows of
	// the chunk's own test samples (no sum over samples): the chunks of a
	// step then add at once, each on its worker, and every accumulator
	// element still receives its steps' values in step order.
	perSample() bool
	// result assembles the query's answer once every step is done.
	result() *Result
	// save and restore copy the accumulators to and from a State.
	save() queryState
	restore(queryState) error
}

// chunk is one step's evaluation of a chunk of test samples, which every
// evaluation reads.
type chunk[E tensor.Float] struct {
	// step is the step's index in the job (0 for Spec.From); the chunk
	// holds the test samples lo … hi−1.
	step, lo, hi int
	// update is the step's update split into its parts.
	update *epk.Update[E]
	// forward holds the forward-mode results [hi−lo, C]; features the
	// feature pass, with featureRows' cotangents (nil when no query reads
	// it).
	forward  *epk.StepResult[E]
	features *epk.Features[E]
	// features32 holds the feature pass instead of features when it ran
	// in a float32 run's precision (job.useRunFeatures): only sweeps read
	// it.
	features32 *epk.Features[float32]
}

// worker evaluates chunks of test samples: the evaluator of its own model
// instance, and the feature pass's last result, whose arrays its next chunk
// reuses (epk.Evaluator.EvaluateInto): no evaluation keeps a chunk's
// features beyond its add.
type worker[E tensor.Float] struct {
	id       int
	paths    *epk.Evaluator[E]
	features *epk.Features[E]
}

// job is one Run: its queries' evaluations and the pass over the history
// that feeds them.
type job[T, E tensor.Float] struct {
	src  Source[T]
	spec Spec[E]
	dims
	// workers evaluate the chunks of test samples along each step
	// (quadrature, JVPs and the feature pass), each with its own model
	// instance; there is one unless Spec.NewModel gives more.
	workers []*worker[E]
	// sampleValues is the model's forward working set per test sample
	// (nn.ForwardValues; 0 when it cannot say), which bounds the default
	// test chunk.
	sampleValues int

	// queries are the evaluations of spec.Queries, in their order; sweeps
	// the Sweep ones among them.
	queries []evaluation[E]
	sweeps  []*sweepEval[E]
	// rows are the cotangents of the feature pass (rows.total 0: the job
	// has none); perTensor asks the forward pass for one tangent per
	// tensor.
	rows      featureRows
	perTensor bool
	// snapshots is set when a query takes Gram snapshots, which need the
	// steps in forward order.
	snapshots bool
	// trainSide forms the training side of the sweeps' kernel
	// (addTraining), its buffers kept from step to step.
	trainSide *trainKernel[T, E]
	// runFeatures, when set, evaluates the feature pass in the run's
	// precision T instead of E, one evaluator per worker (the first on
	// the gradient model, the others on Source.NewGradModel's), each into
	// its featuresT (chunk.features32): see useRunFeatures.
	runFeatures []*epk.Evaluator[T]
	featuresT   []*epk.Features[T]

	// split splits a step's update into its parts. sgd is the splitter of
	// an SGD run, whose weight-decay state the job carries from step to
	// step; for a reverse sweep sgdBefore holds that state before each
	// step.
	split     func(in epk.StepInput[E]) (*epk.Update[E], error)
	sgd       *epk.SGDSplitter[E]
	sgdBefore map[int]map[string][]float64

	val  validation[E]
	done int // steps done
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
	if spec.Workers < 0 {
		return nil, fmt.Errorf("explain: %d workers; want at least 1 (0: one per processor)", spec.Workers)
	}
	if spec.Workers > 1 && spec.NewModel == nil {
		return nil, fmt.Errorf("explain: %d workers need Spec.NewModel to build their model instances", spec.Workers)
	}
	if path == nil {
		path = pathOf(model)
	}
	j := &job[T, E]{src: src, spec: spec, dims: dims{samples: spec.Test.X.Shape[0], steps: spec.To - spec.From,
		train: src.TrainSize, labels: spec.Test.Labels}}
	// The number of classes, from the model itself.
	y, _, err := model.Forward(tensor.GatherRows(spec.Test.X, []int{0}, 1))
	if err != nil {
		return nil, fmt.Errorf("explain: the model does not accept the test samples: %w", err)
	}
	j.classes = y.Shape[len(y.Shape)-1]
	for _, l := range spec.Test.Labels {
		if l < 0 || l >= j.classes {
			return nil, fmt.Errorf("explain: test label %d outside the model's %d classes", l, j.classes)
		}
	}
	for _, p := range model.Params() {
		j.tensorNames = append(j.tensorNames, p.Name)
		j.tensorShapes = append(j.tensorShapes, append([]int(nil), p.Value.Shape...))
		j.tensorSizes = append(j.tensorSizes, len(p.Value.Data))
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
	if len(j.sweeps) > 0 && src.BatchIndices == nil {
		return nil, errors.New("explain: data attribution needs the source's BatchIndices")
	}
	if len(j.sweeps) > 0 && j.snapshots {
		return nil, errors.New("explain: Gram snapshots are taken going forward over the steps and data attribution " +
			"sweeps them backward: evaluate them in two jobs")
	}
	if len(j.sweeps) > 0 && spec.From != 0 {
		return nil, fmt.Errorf("explain: data attribution over steps %d:%d would leave the momentum carried in "+
			"from steps before %d unattributed; start at step 0", spec.From, spec.To, spec.From)
	}
	j.useRunFeatures()
	if v, err := nn.ForwardValues(model, append([]int{1}, spec.Test.X.Shape[1:]...)); err == nil {
		j.sampleValues = v
	}
	workers := j.chunking()
	if need := j.bytes(workers); spec.MaxBytes > 0 && need > spec.MaxBytes {
		return nil, fmt.Errorf("explain: this job needs about %s, over the memory ceiling of %s; "+
			"lower the test chunk, the test samples, or drop the per-element presets", fmtBytes(need), fmtBytes(spec.MaxBytes))
	}
	opt := epk.Options{Quadrature: spec.Quadrature, PerTensor: j.perTensor}
	for w := range workers {
		if w > 0 {
			if model, path, err = spec.NewModel(); err != nil {
				return nil, fmt.Errorf("explain: worker %d's model: %w", w, err)
			}
			if path == nil {
				path = pathOf(model)
			}
		}
		ev, err := epk.NewEvaluator[E](path, opt)
		if err != nil {
			return nil, err
		}
		j.workers = append(j.workers, &worker[E]{id: w, paths: ev})
		if w > 0 && j.runFeatures != nil {
			gm, err := src.NewGradModel()
			if err != nil {
				return nil, fmt.Errorf("explain: worker %d's gradient model: %w", w, err)
			}
			rf, err := epk.NewEvaluator[T](pathOf(gm), epk.Options{Quadrature: spec.Quadrature})
			if err != nil {
				return nil, err
			}
			j.runFeatures = append(j.runFeatures, rf)
		}
	}
	j.featuresT = make([]*epk.Features[T], len(j.runFeatures))
	return j, nil
}

// pathOf is the path form of model: its own, or the generic one.
func pathOf[E tensor.Float](model nn.Layer[E]) epk.PathModel[E] {
	if pm, ok := model.(epk.PathModel[E]); ok {
		return pm
	}
	return epk.LayerPath(model)
}

// ChunkValues bounds the default test chunk by the model's forward
// working set: a chunk holds at most ChunkValues values of
// nn.ForwardValues at one quadrature node (at least one sample). A CNN's
// path rules hold every image's activations and unfolded columns at every
// node of the chunk, so large chunks spill out of the caches: on the
// Fashion-2 ResNet-9 (width/8, 198,148 values per image), 64 test images
// over steps 0:4, tol 1e-4, float32, validation, the steps' evaluation
// took 7.7/5.1/4.4/5.6/6.5 s with chunks of 32/8/4/2/1 images; with the
// pruning preset too, 12.6 s at 32 and 7.5 s at 4 (peak RSS 633 and 342
// MB). Those were 12 nodes per image and step; at 3 (one starting
// interval, 128 images, whole jobs) chunks of 4/16/64 took
// 5.9–6.3/5.7–6.8/6.8 s, within the machine's noise. The bound is set to
// give that model the 4 images measured best; the full-width model (2.0
// million values per CIFAR image) gets 1 (47.7 s at 1 and 49.1 s at 4 for
// 8 images over 3 steps). The modulo transformer is neither a Sequential
// nor a ValueCounter, so nn.ForwardValues counts only its output and it
// keeps 256 shared by the workers (its chunk measured within noise from 8
// to 128); a model of the user's own that is neither is likewise counted
// short.
const ChunkValues = 800_000

// chunking settles the number of workers and the test chunk: Spec.Workers
// (0: one per processor when Spec.NewModel can build their models; one
// when the feature pass runs in the run's precision, on the one gradient
// model) and Spec.Chunk (0: 256 shared by the workers, so that their
// chunks' feature arrays together take what one chunk of 256 did, fewer
// when the samples do not give every worker a chunk, and at most
// ChunkValues over the model's values per sample), with no more workers
// than chunks.
func (j *job[T, E]) chunking() int {
	w := j.spec.Workers
	if w == 0 {
		w = 1
		if j.spec.NewModel != nil {
			w = runtime.GOMAXPROCS(0)
		}
	}
	if j.runFeatures != nil && j.src.NewGradModel == nil {
		w = 1
	}
	if j.spec.Chunk == 0 {
		c := min(256/w, (j.samples+w-1)/w)
		if j.sampleValues > 0 {
			c = min(c, ChunkValues/j.sampleValues)
		}
		j.spec.Chunk = max(1, c)
	}
	return max(1, min(w, (j.samples+j.spec.Chunk-1)/j.spec.Chunk))
}

// runPrecisionFeatures lets a job whose only readers of the feature pass
// are data-attribution sweeps evaluate it in the run's precision; tests
// turn it off to compare, and read runFeatureChunks, the number of chunks
// whose features were so evaluated.
var (
	runPrecisionFeatures = true
	runFeatureChunks     atomic.Int64
)

// useRunFeatures sets up the feature pass in the run's precision T when T
// is float32 and E float64 and every query that reads the features is a Sweep:
// the sweep's kernel meets them only in its products with the training
// samples' gradients, which run in T anyway (addTraining), so features in
// T leave its accuracy at T's rounding (about 1e-7 relative in float32,
// which Output.KernelResidual reports) at half the cost of the feature
// pass in float64. The quadrature, its plan and the forward evaluation
// (validation and every other query) stay in E. The first worker's feature
// pass uses the gradient model, which every other user sets to the same
// θ_s, and the others (when Source.NewGradModel lets the job have more
// than one worker) models of their own.
func (j *job[T, E]) useRunFeatures() {
	_, t32 := any(T(0)).(float32)
	_, e64 := any(E(0)).(float64)
	if !runPrecisionFeatures || j.rows.total == 0 || len(j.sweeps) == 0 || !t32 || !e64 {
		return
	}
	for _, q := range j.queries {
		switch q := q.(type) {
		case *sweepEval[E]:
		case *forwardEval[E]:
			if q.viaFeatures {
				return
			}
		default:
			return
		}
	}
	ev, err := epk.NewEvaluator[T](pathOf(j.src.GradModel), epk.Options{Quadrature: j.spec.Quadrature})
	if err != nil {
		return // the E feature pass does without (an Exact rule without switches, say)
	}
	j.runFeatures = []*epk.Evaluator[T]{ev}
}

// runFeaturePass evaluates the feature pass of a chunk's test samples x
// (labels labels) at the nodes of the chunk's plan into c, in the run's
// precision T (useRunFeatures; T is then float32), into the worker's
// reused arrays. uT is the step's update in T, made on first use.
func (j *job[T, E]) runFeaturePass(w *worker[E], c *chunk[E], uT **epk.Update[T], x *tensor.Dense[E], labels []int) error {
	if *uT == nil {
		*uT = convertUpdate[T](c.update)
	}
	f, _, err := j.runFeatures[w.id].FeaturesInto(j.featuresT[w.id], *uT, tensor.Convert[T](x), c.forward.Plan, cotangents[T](&j.rows, j.classes, labels))
	if err != nil {
		return err
	}
	j.featuresT[w.id] = f
	c.features32 = any(f).(*epk.Features[float32])
	runFeatureChunks.Add(1)
	return nil
}

// convertUpdate returns the parts of u that the feature pass reads (θ_s,
// Δθ and its parts) in precision T.
func convertUpdate[T, E tensor.Float](u *epk.Update[E]) *epk.Update[T] {
	conv := func(ts []*tensor.Dense[E]) []*tensor.Dense[T] {
		out := make([]*tensor.Dense[T], len(ts))
		for i, t := range ts {
			out[i] = tensor.Convert[T](t)
		}
		return out
	}
	return &epk.Update[T]{Step: u.Step, LR: u.LR, Names: u.Names, Before: conv(u.Before), Delta: conv(u.Delta),
		Data: conv(u.Data), Reg: conv(u.Reg), Resid: conv(u.Resid)}
}

// plan checks the queries and makes their evaluations, each of the kind it
// needs (Query.kind), and lays out the feature pass's cotangents.
func (j *job[T, E]) plan() error {
	groupsOf := make([][]int, len(j.tensorNames)) // tensor → group indices
	var groups []string
	idx := map[string]int{}
	for i, n := range j.tensorNames {
		idx[n] = i
	}
	for g, gr := range j.spec.Groups {
		groups = append(groups, gr.Name)
		if len(gr.Tensors) == 0 {
			return fmt.Errorf("explain: group %q names no tensors", gr.Name)
		}
		for _, t := range gr.Tensors {
			i, ok := idx[t]
			if !ok {
				return fmt.Errorf("explain: group %q names an unknown tensor %q (the model has %v)", gr.Name, t, j.tensorNames)
			}
			groupsOf[i] = append(groupsOf[i], g)
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
		params := newParamAxis(q, &j.dims, groups, groupsOf)
		cot, width := cotangentOf(q, j.classes)
		switch kind {
		case Forward:
			e := &forwardEval[E]{q: q, dims: &j.dims, params: params, buckets: 1, cot: cot, rows: &j.rows}
			if q.Keep&Step != 0 {
				b := max(q.Bucket, 1)
				e.buckets = (j.steps + b - 1) / b
			}
			if q.Keep&(Tensor|Group) != 0 {
				if cot == cotIdentity {
					j.perTensor = true
				} else {
					e.viaFeatures = true
					j.rows.need[cot] = true
				}
			}
			j.queries = append(j.queries, e)
		case Feature:
			e := &featureEval[E]{q: q, dims: &j.dims, params: params, cot: cot, width: width, rows: &j.rows,
				sampleRows: 1, cotRows: 1}
			if q.Keep&Test != 0 || q.Abs {
				e.sampleRows = j.samples
			}
			if q.Keep&Class != 0 || q.Abs {
				e.cotRows = width
			}
			j.rows.need[cot] = true
			j.queries = append(j.queries, e)
		case Sweep:
			e := &sweepEval[E]{q: q, dims: &j.dims, params: params, cot: cot, width: width, rows: &j.rows, nrows: 1}
			if q.Keep&Class != 0 {
				e.nrows = width
			}
			if q.Keep&Test != 0 {
				e.nrows *= j.samples
			}
			j.rows.need[cot] = true
			j.queries = append(j.queries, e)
			j.sweeps = append(j.sweeps, e)
		case Snapshots:
			e := &gramEval[E]{feature: &featureEval[E]{q: q, dims: &j.dims, params: params, cot: cot, width: width,
				rows: &j.rows, sampleRows: j.samples, cotRows: 1}, q: q, params: params, from: j.spec.From, to: j.spec.To,
				sink: j.spec.Snapshots}
			// An earlier query that accumulates the same per-element scores
			// (the components preset's) lends them: they are held once.
			for _, o := range j.queries {
				if f, ok := o.(*featureEval[E]); ok && f.q.Keep == Param|Test && !f.q.Abs && f.q.Part == q.Part && f.cot == cot {
					e.feature, e.shared = f, true
					break
				}
			}
			j.rows.need[cot] = true
			j.queries = append(j.queries, e)
			j.snapshots = true
		}
	}
	j.rows.layout(j.classes)
	return nil
}

// bytes estimates the memory the job allocates with its workers.
func (j *job[T, E]) bytes(workers int) int64 {
	P := j.paramCount()
	var elem int64 = 8
	var zero E
	if _, ok := any(zero).(float32); ok {
		elem = 4
	}
	n := int64(len(j.tensorSizes)) * P * elem * 12 // a step's update, its parts and views
	for _, q := range j.queries {
		n += q.bytes(P, elem)
	}
	chunk := int64(min(j.spec.Chunk, j.samples))
	if j.rows.total > 0 {
		featElem := elem
		if j.runFeatures != nil {
			featElem = 4 // in the run's float32 (useRunFeatures)
		}
		n += int64(workers) * chunk * int64(j.rows.total) * P * featElem // features of a chunk per worker
		n += int64(workers) << 24 * elem                                 // per-row gradients (epk's MaxGradValues)
		n += int64(workers) << 25 * elem                                 // the planning nodes' gradients (epk's MaxHeldGrads)
	}
	if len(j.sweeps) > 0 {
		n += int64(j.trainWorkers()) * 256 * P * elem // per-sample training gradients of a chunk per training worker
	}
	n += int64(j.samples*j.classes*8) * 8 // validation arrays
	return n
}

// run makes the accumulators (or restores them from Spec.Resume) and
// evaluates the steps: forwards, or backwards for a reverse sweep.
func (j *job[T, E]) run(ctx context.Context) (*Output, error) {
	start := time.Now()
	j.val = newValidation[E](&j.dims)
	for _, q := range j.queries {
		q.allocate()
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
	wait := every
	visit := func(v *history.StepView[T]) error {
		if err := j.step(v); err != nil {
			return fmt.Errorf("step %d: %w", v.Step, err)
		}
		j.done++
		if j.spec.Progress != nil {
			j.spec.Progress(j.done, j.steps)
		}
		if j.spec.Checkpoint != nil && (time.Since(lastSave) > wait || ctx.Err() != nil) && j.done < j.steps {
			t := time.Now()
			if err := j.spec.Checkpoint(j.save()); err != nil {
				return err
			}
			lastSave = time.Now()
			wait = max(every, time.Duration(j.spec.CheckpointCost*float64(lastSave.Sub(t))))
		}
		if ctx.Err() != nil {
			return ErrInterrupted
		}
		return nil
	}
	var err error
	if len(j.sweeps) > 0 {
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

// step evaluates one step for every query.
func (j *job[T, E]) step(v *history.StepView[T]) error {
	in, err := j.input(v)
	if err != nil {
		return err
	}
	if j.sgd != nil && len(j.sweeps) > 0 {
		j.sgd.LoadRegState(v.Step, j.sgdBefore[v.Step])
		delete(j.sgdBefore, v.Step)
	}
	u, err := j.split(in)
	if err != nil {
		return err
	}
	j.val.MaxResid = math.Max(j.val.MaxResid, u.MaxResid)
	for _, s := range j.sweeps {
		s.decay(u.Kernel.Beta)
	}
	if err := j.chunks(v.Step-j.spec.From, u); err != nil {
		return err
	}
	if len(j.sweeps) > 0 {
		return j.addTraining(v, u)
	}
	return nil
}

// chunks evaluates the step's chunks of test samples on the workers, chunk
// i on worker i mod W. Each worker adds its chunk to the per-sample
// accumulators (the validation's rows and the perSample queries), which no
// other chunk touches; the rest (sums over samples, snapshots) is added in
// chunk order as soon as a chunk and those before it are done, so the sums
// are the same to the bit whatever the number of workers. A worker's next
// chunk waits for the add of its last, whose feature arrays it reuses.
func (j *job[T, E]) chunks(step int, u *epk.Update[E]) error {
	n := (j.samples + j.spec.Chunk - 1) / j.spec.Chunk
	W := len(j.workers)
	cs := make([]*chunk[E], n)
	errs := make([]error, n)
	ready := make([]chan struct{}, n)
	for i := range ready {
		ready[i] = make(chan struct{})
	}
	free := make([]chan struct{}, W)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w, wk := range j.workers {
		free[w] = make(chan struct{}, 1)
		free[w] <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var uT *epk.Update[T]
			for i := w; i < n; i += W {
				select {
				case <-free[w]:
				case <-stop:
					return
				}
				cs[i], errs[i] = j.evalChunk(wk, step, u, i, &uT)
				if errs[i] == nil {
					errs[i] = j.addRows(cs[i])
				}
				close(ready[i])
			}
		}()
	}
	var err error
	for i := range n {
		<-ready[i]
		if err = errs[i]; err != nil {
			break
		}
		j.val.addTotals(cs[i])
		for _, q := range j.queries {
			if q.perSample() {
				continue
			}
			if err = q.add(cs[i]); err != nil {
				break
			}
		}
		if err != nil {
			break
		}
		cs[i] = nil
		free[i%W] <- struct{}{}
	}
	close(stop)
	wg.Wait()
	return err
}

// addRows adds chunk c to the per-sample accumulators: the validation's
// rows and the perSample queries.
func (j *job[T, E]) addRows(c *chunk[E]) error {
	j.val.addRows(c, &j.dims)
	for _, q := range j.queries {
		if !q.perSample() {
			continue
		}
		if err := q.add(c); err != nil {
			return err
		}
	}
	return nil
}

// evalChunk evaluates chunk i of the step's test samples on worker w: the
// forward contributions and, when a query reads them, the features.
func (j *job[T, E]) evalChunk(w *worker[E], step int, u *epk.Update[E], i int, uT **epk.Update[T]) (*chunk[E], error) {
	lo := i * j.spec.Chunk
	hi := min(lo+j.spec.Chunk, j.samples)
	idx := make([]int, hi-lo)
	for k := range idx {
		idx[k] = lo + k
	}
	x := tensor.GatherRows(j.spec.Test.X, idx, 1)
	c := &chunk[E]{step: step, lo: lo, hi: hi, update: u}
	if j.rows.total > 0 && j.runFeatures == nil {
		// One evaluation at the same nodes; when the feature pass has
		// every class's features, the contributions follow from them
		// without a forward-mode pass (epk.Evaluator.Evaluate).
		res, err := w.paths.EvaluateInto(w.features, u, x, epk.Request[E]{Features: true, Cotangents: cotangents[E](&j.rows, j.classes, j.labels[lo:hi])})
		if err != nil {
			return nil, err
		}
		c.forward, c.features, w.features = res, res.Features, res.Features
		return c, nil
	}
	var err error
	if c.forward, err = w.paths.Contributions(u, x, nil); err != nil {
		return nil, err
	}
	if j.rows.total > 0 {
		if err := j.runFeaturePass(w, c, uT, x, j.labels[lo:hi]); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// finish assembles the results.
func (j *job[T, E]) finish() *Output {
	out := &Output{Samples: j.samples, Classes: j.classes, From: j.spec.From, To: j.spec.To,
		TensorNames: j.tensorNames, TensorShapes: j.tensorShapes, Validation: j.val.output(&j.dims)}
	for _, q := range j.queries {
		out.Results = append(out.Results, q.result())
	}
	for _, s := range j.sweeps {
		out.KernelResidual = math.Max(out.KernelResidual, s.residual())
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

// convertParams converts parameters to precision E.
func convertParams[E, T tensor.Float](ps []*nn.Param[T]) []*nn.Param[E] {
	out := make([]*nn.Param[E], len(ps))
	for i, p := range ps {
		out[i] = &nn.Param[E]{Name: p.Name, Value: tensor.Convert[E](p.Value)}
	}
	return out
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
	return tr.AdvanceReg(StepInputOf(v, g))
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
	j.sgdBefore = map[int]map[string][]float64{}
	return j.src.Replay.Forward(0, j.spec.To, func(v *history.StepView[T]) error {
		if v.Step >= j.spec.From {
			_, j.sgdBefore[v.Step] = tr.RegState()
		}
		return j.advanceReg(tr, v)
	})
}
