package epk

import (
	"fmt"
	"math"
	"time"

	"github.com/explaind/explaind/internal/parallel"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// Options configures an Evaluator. Zero fields take the defaults named.
type Options struct {
	// Quadrature is the rule (default Exact with 3 points per piece).
	Quadrature Quadrature
	// PerTensor adds one tangent per parameter tensor, so that results
	// hold each tensor's contribution (Data+Reg restricted to it).
	PerTensor bool
	// MaxRows bounds rows × tangents of one model call (default 8192).
	MaxRows int
	// MaxGradValues bounds the values of one per-row gradient buffer of
	// the feature pass (default 1<<24).
	MaxGradValues int
	// MaxHeldGrads bounds the gradient values an evaluation holds of its
	// planning nodes, when the contributions are derived from the
	// features with Gauss–Lobatto intervals of 2 or 3 points (default
	// 1<<25, 128 MiB in float32; negative: hold none, and evaluate the
	// planning by JVP and the features in a pass of their own).
	MaxHeldGrads int
}

// Evaluator integrates a model's Jacobian along optimizer steps. It writes
// each step's θ_s into the model's parameters (and leaves them there), so
// give it a model instance of its own, not the one a training loop or a
// replay is stepping. It is not safe for concurrent use.
type Evaluator[T tensor.Float] struct {
	model  PathModel[T]
	sw     SwitchModel[T] // nil when the model has no switch values
	params []*nn.Param[T]
	byName map[string]*nn.Param[T]
	opt    Options
	// flatShare accepts every interval whose own error is within the
	// sample's target, whatever they add up to (the rule before the
	// errors were summed): tests use it to check that the measured
	// completeness check catches what the interval checks let through.
	flatShare bool
}

// NewEvaluator returns an evaluator for model. The Exact rule needs a
// SwitchModel.
func NewEvaluator[T tensor.Float](model PathModel[T], opt Options) (*Evaluator[T], error) {
	if model == nil {
		return nil, fmt.Errorf("epk: nil model")
	}
	q, err := Filled[T](opt.Quadrature)
	if err != nil {
		return nil, err
	}
	opt.Quadrature = q
	if opt.MaxRows <= 0 {
		opt.MaxRows = 8192
	}
	if opt.MaxGradValues <= 0 {
		opt.MaxGradValues = 1 << 24
	}
	if opt.MaxHeldGrads == 0 {
		opt.MaxHeldGrads = 1 << 25
	}
	e := &Evaluator[T]{model: model, params: model.Params(), byName: map[string]*nn.Param[T]{}, opt: opt}
	e.sw, _ = model.(SwitchModel[T])
	if q.Rule == Exact && e.sw == nil {
		return nil, fmt.Errorf("epk: the Exact rule needs a model with switch values (SwitchModel); use Adaptive")
	}
	for _, p := range e.params {
		if _, dup := e.byName[p.Name]; dup {
			return nil, fmt.Errorf("epk: two parameters are named %s", p.Name)
		}
		e.byName[p.Name] = p
	}
	return e, nil
}

// Options returns the options with their defaults filled in.
func (e *Evaluator[T]) Options() Options { return e.opt }

// stepCtx is one step's data for the model: the path directions by
// parameter and the test batch.
type stepCtx[T tensor.Float] struct {
	u     *Update[T]
	x     *tensor.Dense[T]
	B     int
	delta map[*nn.Param[T]]*tensor.Dense[T]
	pos   []int // pos[i] is the index in u of the model's parameter i
	// held, when set, holds the planning nodes' gradients (heldGrads).
	held *heldGrads[T]
	// before and after, when set, are f(θ_s) and f(θ_s + Δθ_s) [B, C]
	// from a measured plan's cache (refinePlan), which endPoints reuses.
	before, after *tensor.Dense[float64]
}

// prepare checks u against the model, writes θ_s into the model's
// parameters and returns the step's context.
func (e *Evaluator[T]) prepare(u *Update[T], x *tensor.Dense[T]) (*stepCtx[T], error) {
	if u == nil {
		return nil, fmt.Errorf("epk: nil update")
	}
	if x == nil || len(x.Shape) == 0 || x.Shape[0] == 0 || len(x.Data) != tensor.Numel(x.Shape) {
		return nil, fmt.Errorf("epk: empty or inconsistent test batch")
	}
	idx := make(map[string]int, len(u.Names))
	for i, n := range u.Names {
		idx[n] = i
	}
	c := &stepCtx[T]{u: u, x: x, B: x.Shape[0], delta: map[*nn.Param[T]]*tensor.Dense[T]{}, pos: make([]int, len(e.params))}
	for i, p := range e.params {
		k, ok := idx[p.Name]
		if !ok {
			return nil, fmt.Errorf("epk: step %d has no update for parameter %s", u.Step, p.Name)
		}
		for _, part := range [][]*tensor.Dense[T]{u.Before, u.Delta, u.Data, u.Reg, u.Resid} {
			if k >= len(part) || part[k] == nil || len(part[k].Data) != len(p.Value.Data) {
				return nil, fmt.Errorf("epk: step %d: the update of %s does not have its shape %v", u.Step, p.Name, p.Value.Shape)
			}
		}
		c.pos[i] = k
		c.delta[p] = u.Delta[k]
	}
	if len(u.Names) != len(e.params) {
		return nil, fmt.Errorf("epk: step %d updates %d parameters, the model has %d", u.Step, len(u.Names), len(e.params))
	}
	for i, p := range e.params {
		copy(p.Value.Data, u.Before[c.pos[i]].Data)
	}
	return c, nil
}

// path returns the path of rows at positions ts.
func (c *stepCtx[T]) path(ts []float64) *nn.Path[T] {
	return &nn.Path[T]{Delta: c.delta, T: ts}
}

// chunks calls fn on consecutive ranges of n rows of at most size rows.
func chunks(n, size int, fn func(lo, hi int) error) error {
	size = max(1, size)
	for lo := 0; lo < n; lo += size {
		if err := fn(lo, min(lo+size, n)); err != nil {
			return err
		}
	}
	return nil
}

// forwardRows returns the outputs (float64, [rows, C] flattened) of test
// samples at path positions ts.
func (e *Evaluator[T]) forwardRows(c *stepCtx[T], samples []int, ts []float64) ([]float64, error) {
	var out []float64
	err := chunks(len(samples), e.opt.MaxRows, func(lo, hi int) error {
		y, _, err := e.model.PathForward(tensor.GatherRows(c.x, samples[lo:hi], 1), c.path(ts[lo:hi]))
		if err != nil {
			return err
		}
		if out == nil {
			out = make([]float64, 0, len(samples)*len(y.Data)/(hi-lo))
		}
		for _, v := range y.Data {
			out = append(out, float64(v))
		}
		return nil
	})
	return out, err
}

// switchRows returns the switch values (and, with deriv, their
// t-derivatives) of test samples at positions ts, [rows, S] flattened, and S.
func (e *Evaluator[T]) switchRows(c *stepCtx[T], samples []int, ts []float64, deriv bool) (sw, dsw []float64, S int, err error) {
	err = chunks(len(samples), e.opt.MaxRows, func(lo, hi int) error {
		s, d, err := e.sw.PathSwitches(tensor.GatherRows(c.x, samples[lo:hi], 1), c.path(ts[lo:hi]), deriv)
		if err != nil {
			return err
		}
		if len(s.Shape) != 2 || s.Shape[0] != hi-lo || (deriv && (d == nil || len(d.Data) != len(s.Data))) {
			return fmt.Errorf("epk: PathSwitches returned switch values of shape %v for %d rows", s.Shape, hi-lo)
		}
		if S = s.Shape[1]; sw == nil {
			// One allocation of the whole result: growing it chunk by
			// chunk copied and cleared the rows again and again (3.1
			// of 25 CPU-seconds in a profile of the validation preset
			// on 256 samples of the paper run).
			sw = make([]float64, 0, len(samples)*S)
			if deriv {
				dsw = make([]float64, 0, len(samples)*S)
			}
		}
		for _, v := range s.Data {
			sw = append(sw, float64(v))
		}
		if deriv {
			for _, v := range d.Data {
				dsw = append(dsw, float64(v))
			}
		}
		return nil
	})
	return sw, dsw, S, err
}

// Plan builds the quadrature nodes of step u for the test batch x (and
// writes θ_s into the model's parameters). For Exact, every located piece
// is checked along Δθ (one single-tangent JVP per node) unless SkipCheck
// is set. Evaluate, and Contributions given a nil plan, fuse that check
// into the contributions pass instead, which is cheaper: pass a plan only
// to share it between Contributions and Features calls.
func (e *Evaluator[T]) Plan(u *Update[T], x *tensor.Dense[T]) (*Plan, error) {
	c, err := e.prepare(u, x)
	if err != nil {
		return nil, err
	}
	return e.plan(c, true, false)
}

// plan builds the plan; check asks for Exact's piece check now (it is
// otherwise left to the contributions pass, and the plan is marked
// unchecked), measure (which implies check) for the measured completeness
// check along Δθ too (refinePlan), for contributions derived from the
// plan's features.
func (e *Evaluator[T]) plan(c *stepCtx[T], check, measure bool) (*Plan, error) {
	start := time.Now()
	q := e.opt.Quadrature
	var p *Plan
	var st Stats
	switch q.Rule {
	case Midpoint, GaussLegendre:
		p = fixedPlan(q.Rule, q.Points, c.B)
	case Exact:
		br, err := e.locate(c, &st)
		if err != nil {
			return nil, err
		}
		pieces := make([]int, c.B)
		for b := range pieces {
			pieces[b] = len(br[b]) + 1
		}
		switches := br
		checked := q.SkipCheck
		if (check || measure) && !q.SkipCheck {
			if br, err = e.refinePlan(c, breaksToIntervals(br), measure, &st); err != nil {
				return nil, err
			}
			checked = true
		}
		p = piecewisePlan(Exact, q, br)
		p.Pieces, p.Switches, p.Checked = pieces, switches, checked
	case Adaptive:
		br, err := e.refinePlan(c, startIntervals(c.B, q.Start), measure, &st)
		if err != nil {
			return nil, err
		}
		p = piecewisePlan(Adaptive, q, br)
	}
	st.Plan = time.Since(start)
	p.Stats = st
	return p, nil
}

// StepResult is the forward-mode evaluation of one step on a test batch:
// every array is [test, C] in float64.
type StepResult[T tensor.Float] struct {
	// Step is the step index s.
	Step int
	// Before and After are f(θ_s) and f(θ_s + Δθ_s); Change is their
	// difference, the exact step change.
	Before, After, Change *tensor.Dense[float64]
	// Data, Reg and Resid are the contributions ∫ J dt · part of the data
	// part, the regularization part and the update-reconstruction residual.
	Data, Reg, Resid *tensor.Dense[float64]
	// TensorNames and Tensor hold each parameter tensor's contribution
	// ∫ J dt · (Data+Reg restricted to it), when PerTensor is set; they sum
	// to Data + Reg.
	TensorNames []string
	Tensor      []*tensor.Dense[float64]
	// Completeness is Data + Reg + Resid − Change: the quadrature error
	// (plus rounding). MaxCompleteness is its max abs value and MaxChange
	// that of Change.
	Completeness               *tensor.Dense[float64]
	MaxCompleteness, MaxChange float64
	// Certified reports that the rule has a tolerance (Exact, Adaptive)
	// and that every sample's measured completeness residual, max over
	// classes, is at most Quadrature.Tol. Missed lists the samples whose
	// residual is not (the node budget ran out first, or it is NaN); the
	// fixed rules certify nothing and list nothing.
	Certified bool
	Missed    []Miss
	// Plan is the quadrature plan used (pieces, nodes and the work of
	// locating them).
	Plan *Plan
	// Stats is the work of the whole evaluation.
	Stats Stats
	// Features is the reverse-mode result, when requested.
	Features *Features[T]
}

// Contributions evaluates the step's contributions at the plan's nodes
// (plan nil: build it), with M = 3 (+ one per tensor) tangents per node.
func (e *Evaluator[T]) Contributions(u *Update[T], x *tensor.Dense[T], plan *Plan) (*StepResult[T], error) {
	c, err := e.prepare(u, x)
	if err != nil {
		return nil, err
	}
	if plan == nil {
		if plan, err = e.plan(c, false, false); err != nil {
			return nil, err
		}
		return e.contributions(c, plan, true)
	}
	return e.contributions(c, plan, false)
}

// contributions evaluates the step at the plan's nodes. With own set (the
// plan was built for this call), Exact and Adaptive certify the step:
// the intervals are checked and refined until the measured completeness
// residual of every sample meets Tol or the budget is spent (certify),
// and the final plan is returned in the result. A plan the caller passes
// is evaluated as it is (its nodes must stay those of the caller's
// Features), and its misses are only reported.
func (e *Evaluator[T]) contributions(c *stepCtx[T], plan *Plan, own bool) (*StepResult[T], error) {
	if plan.Samples != c.B {
		return nil, fmt.Errorf("epk: the plan is for %d samples, the batch has %d", plan.Samples, c.B)
	}
	res := &StepResult[T]{Step: c.u.Step, Plan: plan, Stats: plan.Stats}
	if err := e.endPoints(c, res); err != nil {
		return nil, err
	}
	mk := func() *tensor.Dense[float64] { return tensor.New[float64](res.Change.Shape...) }

	// Tangents: data, reg, resid, then data+reg per tensor.
	np := len(e.params)
	m := 3
	if e.opt.PerTensor {
		m += np
	}
	tan := &nn.Tangents[T]{M: m, Of: make(map[*nn.Param[T]]*tensor.Dense[T], np)}
	for i, p := range e.params {
		k := c.pos[i]
		n := len(p.Value.Data)
		v := tensor.New[T](append([]int{m}, p.Value.Shape...)...)
		copy(v.Data[0:n], c.u.Data[k].Data)
		copy(v.Data[n:2*n], c.u.Reg[k].Data)
		copy(v.Data[2*n:3*n], c.u.Resid[k].Data)
		if e.opt.PerTensor {
			dst := v.Data[(3+i)*n : (4+i)*n]
			for j := range dst {
				dst[j] = c.u.Data[k].Data[j] + c.u.Reg[k].Data[j]
			}
		}
		tan.Of[p] = v
	}
	acc := make([]*tensor.Dense[float64], m)
	for i := range acc {
		acc[i] = mk()
	}
	start := time.Now()
	piecewise := plan.Rule == Exact || plan.Rule == Adaptive
	var err error
	if !piecewise || (plan.Rule == Exact && e.opt.Quadrature.SkipCheck) || (!own && plan.Checked) {
		err = e.accumulateNodes(c, plan.Nodes, tan, acc, &res.Stats)
	} else {
		var final []interval
		if final, err = e.certify(c, plan, tan, acc, res.Change, &res.Stats); err == nil {
			p := piecewisePlan(plan.Rule, e.opt.Quadrature, intervalsToBreaks(c.B, final))
			p.Pieces, p.Switches, p.Checked, p.Stats = plan.Pieces, plan.Switches, true, plan.Stats
			res.Plan = p
		}
	}
	if err != nil {
		return nil, err
	}
	res.Stats.JVP = time.Since(start)
	res.Stats.Tangents = m
	e.complete(res, acc, piecewise)
	return res, nil
}

// endPoints sets res's Before, After, Change and MaxChange: f(θ_s) and
// f(θ_s + Δθ_s), 2B forward rows, or none when a measured plan has
// evaluated them (c.before, c.after): then the completeness is measured
// against the change the plan was certified on.
func (e *Evaluator[T]) endPoints(c *stepCtx[T], res *StepResult[T]) error {
	res.Before, res.After = c.before, c.after
	if c.before == nil {
		samples := make([]int, 2*c.B)
		ts := make([]float64, 2*c.B)
		for b := 0; b < c.B; b++ {
			samples[b], samples[c.B+b] = b, b
			ts[c.B+b] = 1
		}
		ends, err := e.forwardRows(c, samples, ts)
		if err != nil {
			return err
		}
		res.Stats.ForwardRows += 2 * c.B
		C := len(ends) / (2 * c.B)
		res.Before, res.After = tensor.New[float64](c.B, C), tensor.New[float64](c.B, C)
		copy(res.Before.Data, ends[:c.B*C])
		copy(res.After.Data, ends[c.B*C:])
	}
	res.Change = tensor.New[float64](res.Before.Shape...)
	for i := range res.Change.Data {
		res.Change.Data[i] = res.After.Data[i] - res.Before.Data[i]
		res.MaxChange = math.Max(res.MaxChange, math.Abs(res.Change.Data[i]))
	}
	return nil
}

// complete sets res's contributions from acc (data, reg, resid, then one
// per tensor when PerTensor is set), their completeness residual and, for
// a piecewise rule, the samples that miss Tol.
func (e *Evaluator[T]) complete(res *StepResult[T], acc []*tensor.Dense[float64], piecewise bool) {
	res.Data, res.Reg, res.Resid = acc[0], acc[1], acc[2]
	if e.opt.PerTensor {
		for i, p := range e.params {
			res.TensorNames = append(res.TensorNames, p.Name)
			res.Tensor = append(res.Tensor, acc[3+i])
		}
	}
	res.Completeness = tensor.New[float64](res.Change.Shape...)
	for i := range res.Completeness.Data {
		v := res.Data.Data[i] + res.Reg.Data[i] + res.Resid.Data[i] - res.Change.Data[i]
		res.Completeness.Data[i] = v
		res.MaxCompleteness = math.Max(res.MaxCompleteness, math.Abs(v))
	}
	if piecewise {
		for b, r := range sampleResiduals(acc[:3], res.Change) {
			if !(r <= e.opt.Quadrature.Tol) {
				res.Missed = append(res.Missed, Miss{Sample: b, Residual: r})
			}
		}
		res.Certified = len(res.Missed) == 0
	}
}

// accumulateNodes adds Σ_nodes W·(output tangents) to acc[m] per sample.
func (e *Evaluator[T]) accumulateNodes(c *stepCtx[T], nodes []Node, tan *nn.Tangents[T], acc []*tensor.Dense[float64], st *Stats) error {
	m := tan.Count()
	C := acc[0].Shape[1]
	return chunks(len(nodes), e.opt.MaxRows/m, func(lo, hi int) error {
		ns := make([]int, hi-lo)
		nt := make([]float64, hi-lo)
		for i, nd := range nodes[lo:hi] {
			ns[i], nt[i] = nd.Sample, nd.T
		}
		_, dy, err := e.model.PathJVP(tensor.GatherRows(c.x, ns, 1), c.path(nt), tan)
		if err != nil {
			return err
		}
		if len(dy.Data) != (hi-lo)*m*C {
			return fmt.Errorf("epk: PathJVP returned %d values for %d rows, %d tangents and %d classes", len(dy.Data), hi-lo, m, C)
		}
		st.JVPRows += hi - lo
		for i, nd := range nodes[lo:hi] {
			for mm := 0; mm < m; mm++ {
				src := dy.Data[(i*m+mm)*C : (i*m+mm+1)*C]
				dst := acc[mm].Data[nd.Sample*C : (nd.Sample+1)*C]
				for cc, v := range src {
					dst[cc] += nd.W * float64(v)
				}
			}
		}
		return nil
	})
}

// Features is the reverse-mode result of one step on a test batch: for
// test sample b and cotangent k, Phi[j][b*K+k] = ∫_0^1 J_j(θ_s(t); x_b)ᵀ
// c_{b,k} dt, the path-integrated gradient of ⟨c_{b,k}, f⟩ with respect to
// parameter j (φ_s(x)ᵀc in docs/method.md). With the identity
// cotangents (K = C), row b*C+c is φ_s(x_b)[c, :].
type Features[T tensor.Float] struct {
	// Samples is the number of test samples and K the cotangents per sample.
	Samples, K int
	// Names are the parameter names, in model order.
	Names []string
	// Phi[j] has shape [Samples*K, shape of parameter j...].
	Phi []*tensor.Dense[T]
}

// Request says what Evaluate computes besides the contributions.
type Request[T tensor.Float] struct {
	// Features asks for the reverse-mode features.
	Features bool
	// Cotangents are [K, C] (shared by every sample) or [B, K, C] (per
	// sample); nil means the identity, one cotangent per class (K = C).
	Cotangents *tensor.Dense[T]
}

// Features evaluates the step's reverse-mode features at the plan's nodes
// (plan nil: build it): one PathBackward with K cotangents per node row,
// weighted by the node's weight, summed per sample. Memory is Samples·K·P
// values for the result plus a chunk of per-row gradients bounded by
// MaxGradValues.
func (e *Evaluator[T]) Features(u *Update[T], x *tensor.Dense[T], plan *Plan, cot *tensor.Dense[T]) (*Features[T], Stats, error) {
	return e.FeaturesInto(nil, u, x, plan, cot)
}

// FeaturesInto is Features that reuses dst's arrays (zeroed) when they
// have the shapes of the result, and allocates new ones otherwise (dst
// nil: always). The result is dst itself, or a new Features. A job that
// evaluates step after step with the same batch size so writes every
// step's features into the same Samples·K·P values instead of allocating
// (and faulting in) that many fresh ones per step.
func (e *Evaluator[T]) FeaturesInto(dst *Features[T], u *Update[T], x *tensor.Dense[T], plan *Plan, cot *tensor.Dense[T]) (*Features[T], Stats, error) {
	c, err := e.prepare(u, x)
	if err != nil {
		return nil, Stats{}, err
	}
	if plan == nil {
		if plan, err = e.plan(c, true, false); err != nil {
			return nil, Stats{}, err
		}
	}
	return e.features(c, plan, cot, dst)
}

// reuse returns dst when it holds arrays of the shapes of the features of
// samples·k rows of the evaluator's parameters, with the arrays zeroed,
// and nil otherwise.
func (e *Evaluator[T]) reuse(dst *Features[T], samples, k int) *Features[T] {
	if dst == nil || dst.Samples != samples || dst.K != k || len(dst.Phi) != len(e.params) || len(dst.Names) != len(e.params) {
		return nil
	}
	for j, p := range e.params {
		phi := dst.Phi[j]
		if dst.Names[j] != p.Name || phi == nil || len(phi.Data) != samples*k*len(p.Value.Data) ||
			len(phi.Shape) != len(p.Value.Shape)+1 || phi.Shape[0] != samples*k || !tensor.SameShape(phi.Shape[1:], p.Value.Shape) {
			return nil
		}
	}
	for _, phi := range dst.Phi {
		clear(phi.Data)
	}
	return dst
}

func (e *Evaluator[T]) features(c *stepCtx[T], plan *Plan, cot *tensor.Dense[T], dst *Features[T]) (*Features[T], Stats, error) {
	var st Stats
	if plan.Samples != c.B {
		return nil, st, fmt.Errorf("epk: the plan is for %d samples, the batch has %d", plan.Samples, c.B)
	}
	start := time.Now()
	fc, err := e.cotangents(c, cot)
	if err != nil {
		return nil, st, err
	}
	st.ForwardRows++
	f := e.newFeatures(dst, c.B, fc.K)
	if err := e.backwardNodes(c, plan.Nodes, fc, f); err != nil {
		return nil, st, err
	}
	st.BackwardRows = len(plan.Nodes)
	st.Backward = time.Since(start)
	return f, st, nil
}

// featureCot are the feature pass's cotangents resolved for the model's C
// classes: Data holds [K, C] (the same for every sample) or, with
// PerSample, [B, K, C].
type featureCot[T tensor.Float] struct {
	Data      []T
	K, C      int
	PerSample bool
}

// row returns the K cotangents of sample b, [K·C].
func (fc *featureCot[T]) row(b int) []T {
	if fc.PerSample {
		return fc.Data[b*fc.K*fc.C : (b+1)*fc.K*fc.C]
	}
	return fc.Data[:fc.K*fc.C]
}

// cotangents resolves cot (nil: the identity) for the model's classes,
// which one forward row of c's batch counts.
func (e *Evaluator[T]) cotangents(c *stepCtx[T], cot *tensor.Dense[T]) (*featureCot[T], error) {
	y0, err := e.forwardRows(c, []int{0}, []float64{0})
	if err != nil {
		return nil, err
	}
	C := len(y0)
	switch {
	case cot == nil:
		fc := &featureCot[T]{Data: make([]T, C*C), K: C, C: C}
		for i := 0; i < C; i++ {
			fc.Data[i*C+i] = 1
		}
		return fc, nil
	case len(cot.Shape) == 2 && cot.Shape[1] == C && cot.Shape[0] > 0:
		return &featureCot[T]{Data: cot.Data, K: cot.Shape[0], C: C}, nil
	case len(cot.Shape) == 3 && cot.Shape[0] == c.B && cot.Shape[2] == C && cot.Shape[1] > 0:
		return &featureCot[T]{Data: cot.Data, K: cot.Shape[1], C: C, PerSample: true}, nil
	}
	return nil, fmt.Errorf("epk: cotangents of shape %v, want [K, %d] or [%d, K, %d]", cot.Shape, C, c.B, C)
}

// newFeatures returns dst zeroed when it has the shapes of the features of
// samples·k rows (reuse), and new zero features otherwise.
func (e *Evaluator[T]) newFeatures(dst *Features[T], samples, k int) *Features[T] {
	if f := e.reuse(dst, samples, k); f != nil {
		return f
	}
	f := &Features[T]{Samples: samples, K: k}
	for _, p := range e.params {
		f.Names = append(f.Names, p.Name)
		f.Phi = append(f.Phi, tensor.New[T](append([]int{samples * k}, p.Value.Shape...)...))
	}
	return f
}

// backwardRowsPer is the number of rows of one backward call with k
// cotangents per row: MaxRows bounds rows × cotangents, MaxGradValues the
// per-row gradient buffers (none when the model sums groups itself).
func (e *Evaluator[T]) backwardRowsPer(k int) int {
	perRow := 0
	for _, p := range e.params {
		perRow += len(p.Value.Data)
	}
	if gm, ok := e.model.(GroupedPathModel[T]); ok {
		perRow = gm.PerRowValues()
	}
	return max(1, min(e.opt.MaxGradValues/max(1, k*perRow), e.opt.MaxRows/k))
}

// backwardNodes adds to f the features of the nodes: per node, the
// backward of its weighted cotangents w·fc.row(sample), summed per sample.
func (e *Evaluator[T]) backwardNodes(c *stepCtx[T], nodes []Node, fc *featureCot[T], f *Features[T]) error {
	K := fc.K
	gm, grouped := e.model.(GroupedPathModel[T])
	return chunks(len(nodes), e.backwardRowsPer(K), func(lo, hi int) error {
		n := hi - lo
		ns := make([]int, n)
		nt := make([]float64, n)
		ws := make([]float64, n)
		for i, nd := range nodes[lo:hi] {
			ns[i], nt[i], ws[i] = nd.Sample, nd.T, nd.W
		}
		_, state, err := e.model.PathForward(tensor.GatherRows(c.x, ns, 1), c.path(nt))
		if err != nil {
			return err
		}
		dy := fc.rows(ns, ws)
		if grouped {
			// Sum the nodes of each sample straight into its features.
			g := &nn.Grads[T]{Mode: nn.PerRow, Of: make(map[*nn.Param[T]]*tensor.Dense[T], len(e.params))}
			for j, p := range e.params {
				g.Of[p] = f.Phi[j]
			}
			return gm.PathBackwardGrouped(state, dy, g, ns, c.B)
		}
		g := nn.NewGrads(nn.PerRow, e.params, n*K)
		if _, err := e.model.PathBackward(state, dy, g, false); err != nil {
			return err
		}
		for j, p := range e.params {
			size := len(p.Value.Data)
			buf, phi := g.Of[p].Data, f.Phi[j].Data
			for i, b := range ns {
				tensor.AddScaled(phi[b*K*size:(b+1)*K*size], 1, buf[i*K*size:(i+1)*K*size])
			}
		}
		return nil
	})
}

// rows returns the cotangent rows of samples ns weighted by ws,
// [len(ns)·K, C]: row i·K + k is ws[i]·(cotangent k of sample ns[i]).
func (fc *featureCot[T]) rows(ns []int, ws []float64) *tensor.Dense[T] {
	K, C := fc.K, fc.C
	dy := tensor.New[T](len(ns)*K, C)
	for i, b := range ns {
		w := T(ws[i])
		dst := dy.Data[i*K*C : (i+1)*K*C]
		for j, v := range fc.row(b) {
			dst[j] = w * v
		}
	}
	return dy
}

// GroupedPathModel is an optional method set of a PathModel: PathBackward
// with the per-row gradients summed per group of rows (the nodes of one
// test sample), into buffers [nGroups*K, shape...]. The feature pass uses
// it when present, instead of forming every row's gradient.
type GroupedPathModel[T tensor.Float] interface {
	PathBackwardGrouped(st nn.State, dy *tensor.Dense[T], g *nn.Grads[T], groups []int, nGroups int) error
	// PerRowValues is the number of gradient values PathBackwardGrouped
	// still forms per row (what bounds its rows per call).
	PerRowValues() int
}

// Evaluate plans step u for the test batch x and evaluates its
// contributions and, if requested, its features at the same nodes. When
// the features are requested with cotangents that include the identity
// (nil, or a row e_c for every class c, the same row for every sample),
// the contributions are derived from them instead of a forward-mode pass:
// for a part v of the update (data, reg, resid, and data+reg per tensor),
//
//	∫_0^1 J_c(θ_s(t); x_b) dt · v = Σ_j ⟨φ_j[b, c], v_j⟩,
//
// the same quadrature at the same nodes, at the cost of 3·C·P
// multiply-adds per sample instead of an M-tangent JVP per node. The plan
// is then certified along Δθ alone (one tangent per node, refinePlan),
// and the completeness residual is measured again on the derived
// contributions: Missed and Certified are theirs. The Stats count no JVP
// rows then.
func (e *Evaluator[T]) Evaluate(u *Update[T], x *tensor.Dense[T], req Request[T]) (*StepResult[T], error) {
	return e.EvaluateInto(nil, u, x, req)
}

// EvaluateInto is Evaluate whose features reuse dst's arrays, as
// FeaturesInto does.
func (e *Evaluator[T]) EvaluateInto(dst *Features[T], u *Update[T], x *tensor.Dense[T], req Request[T]) (*StepResult[T], error) {
	c, err := e.prepare(u, x)
	if err != nil {
		return nil, err
	}
	if req.Features {
		if id := identityRows(req.Cotangents, c.B); id != nil {
			return e.fromFeatures(c, req.Cotangents, id, dst)
		}
	}
	plan, err := e.plan(c, false, false)
	if err != nil {
		return nil, err
	}
	res, err := e.contributions(c, plan, true)
	if err != nil {
		return nil, err
	}
	if req.Features {
		if err := e.addFeatures(c, res, req.Cotangents, dst); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// addFeatures evaluates the features at res's plan into res (reusing
// dst's arrays) and adds their work to res.Stats.
func (e *Evaluator[T]) addFeatures(c *stepCtx[T], res *StepResult[T], cot *tensor.Dense[T], dst *Features[T]) error {
	f, st, err := e.features(c, res.Plan, cot, dst)
	if err != nil {
		return err
	}
	res.Features = f
	res.Stats.ForwardRows += st.ForwardRows
	res.Stats.BackwardRows = st.BackwardRows
	res.Stats.Backward = st.Backward
	return nil
}

// identityRows returns, for cotangents cot ([K, C] or [B, K, C]; nil is
// the identity), the row id[c] of each class's unit cotangent e_c, the
// same for all B samples, or nil when some class has none.
func identityRows[T tensor.Float](cot *tensor.Dense[T], B int) []int {
	if cot == nil {
		return []int{} // the identity: id[c] = c, once C is known
	}
	var K, C, samples int
	switch len(cot.Shape) {
	case 2:
		K, C, samples = cot.Shape[0], cot.Shape[1], 1
	case 3:
		if cot.Shape[0] != B {
			return nil
		}
		K, C, samples = cot.Shape[1], cot.Shape[2], B
	default:
		return nil
	}
	if K == 0 || C == 0 || len(cot.Data) != samples*K*C {
		return nil
	}
	id := make([]int, C)
	for cc := range id {
		id[cc] = -1
		for k := 0; k < K && id[cc] < 0; k++ {
			unit := true
			for b := 0; b < samples && unit; b++ {
				row := cot.Data[(b*K+k)*C : (b*K+k+1)*C]
				for j, v := range row {
					if (j == cc && v != 1) || (j != cc && v != 0) {
						unit = false
						break
					}
				}
			}
			if unit {
				id[cc] = k
			}
		}
		if id[cc] < 0 {
			return nil
		}
	}
	return id
}

// fromFeatures is Evaluate by reverse mode alone, for cotangents whose
// identity rows are id (empty: the identity itself): a plan certified
// along Δθ, the features at its nodes, and the contributions derived from
// them (derive).
func (e *Evaluator[T]) fromFeatures(c *stepCtx[T], cot *tensor.Dense[T], id []int, dst *Features[T]) (*StepResult[T], error) {
	fc, err := e.cotangents(c, cot)
	if err != nil {
		return nil, err
	}
	C := fc.C
	if len(id) != 0 && len(id) != C {
		return nil, fmt.Errorf("epk: cotangents of %d classes, the model has %d", len(id), C)
	}
	if q := e.opt.Quadrature; q.Ends && q.Points <= 3 {
		// Every planning node is final: hold their gradients.
		c.held = newHeldGrads(c.B, fc, id, e.params, e.opt.MaxHeldGrads, pairOf(e.model, C))
	}
	plan, err := e.plan(c, true, true)
	if err != nil {
		return nil, err
	}
	res := &StepResult[T]{Step: c.u.Step, Plan: plan, Stats: plan.Stats}
	res.Stats.ForwardRows++ // the class count (cotangents)
	if err := e.endPoints(c, res); err != nil {
		return nil, err
	}
	if len(id) == 0 {
		id = make([]int, C)
		for cc := range id {
			id[cc] = cc
		}
	}
	// The features: the held nodes' gradients summed, the backward for
	// the others.
	start := time.Now()
	f := e.newFeatures(dst, c.B, fc.K)
	var rest []Node
	for _, nd := range plan.Nodes {
		if !c.held.add(f, nd) {
			rest = append(rest, nd)
		}
	}
	if err := e.backwardNodes(c, rest, fc, f); err != nil {
		return nil, err
	}
	c.held = nil
	res.Features = f
	res.Stats.BackwardRows += len(rest)
	res.Stats.Backward = time.Since(start)
	m := 3
	if e.opt.PerTensor {
		m += len(e.params)
	}
	acc := make([]*tensor.Dense[float64], m)
	for i := range acc {
		acc[i] = tensor.New[float64](c.B, C)
	}
	e.derive(c, res.Features, id, acc)
	e.complete(res, acc, plan.Rule == Exact || plan.Rule == Adaptive)
	return res, nil
}

// derive sets acc[0..2][b, c] to Σ_j ⟨φ_j[b·K + id[c]], v_j⟩ for the
// update's data, reg and resid parts v, and with PerTensor acc[3+j][b, c]
// to tensor j's term of data + reg, all in float64.
func (e *Evaluator[T]) derive(c *stepCtx[T], f *Features[T], id []int, acc []*tensor.Dense[float64]) {
	C, P := len(id), 0
	for _, p := range e.params {
		P += len(p.Value.Data)
	}
	parallel.ForCost(c.B, 3*C*P, func(lo, hi int) {
		for j, p := range e.params {
			k := c.pos[j]
			data, reg, resid := c.u.Data[k].Data, c.u.Reg[k].Data, c.u.Resid[k].Data
			n := len(p.Value.Data)
			for b := lo; b < hi; b++ {
				for cc, r := range id {
					phi := f.Phi[j].Data[(b*f.K+r)*n : (b*f.K+r+1)*n]
					var d, g, s float64
					for i, v := range phi {
						w := float64(v)
						d += w * float64(data[i])
						g += w * float64(reg[i])
						s += w * float64(resid[i])
					}
					i := b*C + cc
					acc[0].Data[i] += d
					acc[1].Data[i] += g
					acc[2].Data[i] += s
					if e.opt.PerTensor {
						acc[3+j].Data[i] = d + g
					}
				}
			}
		}
	})
}
