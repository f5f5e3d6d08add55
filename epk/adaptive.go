package epk

import (
	"fmt"
	"math"
	"math/bits"
	"sort"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// deriveMargin is the share of Tol a plan for contributions derived from
// the features (refinePlan with measure) leaves for the derivation's
// rounding: it is certified along Δθ in float64 sums of the nodes'
// gradients, while the contributions are the float32 features' dot
// products with the update's parts, which add up to Δθ only to float32's
// rounding. On the width/8 Fashion-2 run (512 images, Tol 1e-4) the two
// residuals differed by up to 1.2e-8, and 2 of 282,624 (step, image) pairs
// certified along Δθ missed Tol by that much; with this margin (about 8
// times that) both steps certify at 0.35–0.5 % more nodes.
const deriveMargin = 1.0 / 1024

// maxRounds bounds the rounds of the measured completeness check
// (certify): each round refines the intervals of the samples that still
// miss Tol against a target at least halved.
const maxRounds = 12

// noiseFactor scales the rounding floor of the interval test: an error
// below noiseFactor·ε·(|f(lo)| + |f(hi)| + |estimate terms|), with ε the
// machine epsilon of the element type, is rounding, and bisecting cannot
// reduce it (see minFloorScale). A variable for tests.
var noiseFactor = 32.0

// minFloorScale is how far certify lowers the rounding floor of a sample
// whose measured residual still misses Tol once its errors add up to its
// target (halving it per round): the floor of noiseFactor·ε guards the
// planning against chasing rounding, but it is conservative, and in
// float32 the pieces it leaves unrefined can add up to more than Tol. On
// steps 300:304 of the width/8 Fashion-2 run (16 images, tol 1e-4) a floor
// of 32ε left 6 (step, image) pairs at up to 1.9e-4; 4ε everywhere met
// Tol at twice the nodes, 1ε chased rounding at ten times.
const minFloorScale = 1.0 / 8

// interval is one integration interval of one sample.
type interval struct {
	b      int
	lo, hi float64
	depth  int
}

// piece is an evaluated interval: its integrals sums ([M·C]: tangent m,
// class c at m·C+c) and, when checked, its completeness error err (max over
// classes of |Σ estimate − (f(hi) − f(lo))|, the estimate the sum of the
// first nsum tangents) and the rounding floor of that error.
type piece struct {
	interval
	sums       []float64
	err, floor float64
}

// startIntervals returns n equal intervals per sample, at the bisection
// depth ⌈log2 n⌉.
func startIntervals(samples, n int) []interval {
	depth := bits.Len(uint(n - 1))
	var ivs []interval
	for b := 0; b < samples; b++ {
		for k := 0; k < n; k++ {
			ivs = append(ivs, interval{b: b, lo: float64(k) / float64(n), hi: float64(k+1) / float64(n), depth: depth})
		}
	}
	return ivs
}

// breaksToIntervals returns the intervals between consecutive breaks of
// each sample.
func breaksToIntervals(breaks [][]float64) []interval {
	var ivs []interval
	for b, br := range breaks {
		ends := append(append([]float64{0}, br...), 1)
		for k := 0; k+1 < len(ends); k++ {
			if ends[k+1] > ends[k] {
				ivs = append(ivs, interval{b: b, lo: ends[k], hi: ends[k+1]})
			}
		}
	}
	return ivs
}

// intervalsToBreaks returns the interior ends of the intervals per sample.
func intervalsToBreaks(samples int, ivs []interval) [][]float64 {
	breaks := make([][]float64, samples)
	for _, iv := range ivs {
		if iv.lo > 0 {
			breaks[iv.b] = append(breaks[iv.b], iv.lo)
		}
	}
	for _, br := range breaks {
		sort.Float64s(br)
	}
	return breaks
}

// deltaTangent returns Δθ as a single tangent.
func deltaTangent[T tensor.Float](c *stepCtx[T]) *nn.Tangents[T] {
	tan := &nn.Tangents[T]{M: 1, Of: map[*nn.Param[T]]*tensor.Dense[T]{}}
	for prm, d := range c.delta {
		tan.Of[prm] = &tensor.Dense[T]{Shape: append([]int{1}, d.Shape...), Data: d.Data}
	}
	return tan
}

// maxIntervals is the number of intervals a sample may hold in one step:
// the node budget MaxNodes over the points per interval.
func (e *Evaluator[T]) maxIntervals() int {
	q := e.opt.Quadrature
	return max(1, q.MaxNodes/q.Points)
}

// quad is the state of one step's error-controlled integration: every
// sample's evaluated pieces and the outputs f(t) at their ends.
type quad[T tensor.Float] struct {
	c      *stepCtx[T]
	tan    *nn.Tangents[T]
	nsum   int
	check  bool
	rows   *int
	st     *Stats
	pieces [][]piece
	// cache holds the outputs f(t) at the pieces' ends; with Ends, jvp
	// holds the tangents' output rows [M·C] at every evaluated node too.
	cache, jvp []map[float64][]float64
	// held, when set (planning along Δθ with Ends, for contributions
	// derived from the features), evaluates nodes in reverse mode and
	// holds their gradients (see heldGrads).
	held *heldGrads[T]
	// target is each sample's error budget (Tol unless the measured check
	// lowered it); floorScale scales its pieces' rounding floors (1 unless
	// the measured check lowered it, down to minFloorScale).
	target, floorScale []float64
}

func (e *Evaluator[T]) newQuad(c *stepCtx[T], tan *nn.Tangents[T], nsum int, check bool, rows *int, st *Stats) *quad[T] {
	g := &quad[T]{c: c, tan: tan, nsum: nsum, check: check, rows: rows, st: st,
		pieces: make([][]piece, c.B), cache: make([]map[float64][]float64, c.B), target: make([]float64, c.B),
		floorScale: make([]float64, c.B)}
	if e.opt.Quadrature.Ends {
		g.jvp = make([]map[float64][]float64, c.B)
	}
	for b := range g.cache {
		g.cache[b] = map[float64][]float64{}
		if g.jvp != nil {
			g.jvp[b] = map[float64][]float64{}
		}
		g.target[b] = e.opt.Quadrature.Tol
		g.floorScale[b] = 1
	}
	return g
}

// run evaluates the pending intervals and then, with check set, refines:
// a sample whose pieces' errors add up to more than its target bisects its
// pieces of largest error (of those above their rounding floor, below
// MaxDepth and within the node budget) until the rest add up to at most
// half the target, and the halves are evaluated in turn, all samples
// together, until every sample's errors add up to at most its target or
// nothing of it can be refined. The errors are measured, not estimated
// (f(hi) − f(lo) is the exact integral along Δθ), so their sum bounds the
// sample's completeness residual per class up to rounding.
func (e *Evaluator[T]) run(g *quad[T], pending []interval) error {
	for {
		if len(pending) > 0 {
			if err := e.evaluate(g, pending); err != nil {
				return err
			}
		}
		if !g.check {
			return nil
		}
		if pending = e.split(g); len(pending) == 0 {
			return nil
		}
	}
}

// split picks the pieces to bisect (see run), removes them and returns
// their halves.
func (e *Evaluator[T]) split(g *quad[T]) []interval {
	q := e.opt.Quadrature
	limit := e.maxIntervals()
	var next []interval
	for b, ps := range g.pieces {
		total := 0.0
		for _, p := range ps {
			total += p.err
		}
		if !(total > g.target[b]) { // met, or NaN: nothing to refine
			continue
		}
		var cand []int
		for i, p := range ps {
			if p.err > p.floor*g.floorScale[b] && (p.depth < q.MaxDepth) && (!e.flatShare || p.err > g.target[b]) {
				cand = append(cand, i)
			}
		}
		sort.Slice(cand, func(i, j int) bool { return ps[cand[i]].err > ps[cand[j]].err })
		pick := map[int]bool{}
		count := len(ps)
		for _, i := range cand {
			if count >= limit || (!e.flatShare && total <= g.target[b]/2) {
				break
			}
			pick[i] = true
			total -= ps[i].err
			count++
		}
		if len(pick) == 0 {
			continue
		}
		keep := ps[:0]
		for i, p := range ps {
			if !pick[i] {
				keep = append(keep, p)
				continue
			}
			mid := p.lo + 0.5*(p.hi-p.lo)
			next = append(next, interval{b: b, lo: p.lo, hi: mid, depth: p.depth + 1}, interval{b: b, lo: mid, hi: p.hi, depth: p.depth + 1})
		}
		g.pieces[b] = keep
	}
	return next
}

// evaluate integrates the tangents over the pending intervals (n-point
// Gauss–Legendre) and adds them to the pieces, with their errors when
// check is set.
func (e *Evaluator[T]) evaluate(g *quad[T], pending []interval) error {
	q := e.opt.Quadrature
	if q.Ends {
		return e.evaluateEnds(g, pending)
	}
	c := g.c
	ts, ws := GaussLegendreRule(q.Points)
	m := g.tan.Count()
	if g.check {
		var es []int
		var et []float64
		for _, iv := range pending {
			for _, t := range []float64{iv.lo, iv.hi} {
				if _, ok := g.cache[iv.b][t]; !ok {
					g.cache[iv.b][t] = nil // queued
					es = append(es, iv.b)
					et = append(et, t)
				}
			}
		}
		if len(es) > 0 {
			y, err := e.forwardRows(c, es, et)
			if err != nil {
				return err
			}
			g.st.ForwardRows += len(es)
			cls := len(y) / len(es)
			for i := range es {
				g.cache[es[i]][et[i]] = y[i*cls : (i+1)*cls]
			}
		}
	}
	perCall := max(1, e.opt.MaxRows/(m*len(ts)))
	return chunks(len(pending), perCall, func(lo, hi int) error {
		ivs := pending[lo:hi]
		ns := make([]int, 0, len(ivs)*len(ts))
		nt := make([]float64, 0, len(ivs)*len(ts))
		for _, iv := range ivs {
			for _, u := range ts {
				ns = append(ns, iv.b)
				nt = append(nt, iv.lo+(iv.hi-iv.lo)*u)
			}
		}
		_, dy, err := e.model.PathJVP(tensor.GatherRows(c.x, ns, 1), c.path(nt), g.tan)
		if err != nil {
			return err
		}
		*g.rows += len(ns)
		cls := len(dy.Data) / (len(ns) * m)
		for i, iv := range ivs {
			p := piece{interval: iv, sums: make([]float64, m*cls)}
			w := iv.hi - iv.lo
			for k := range ts {
				row := dy.Data[(i*len(ts)+k)*m*cls : (i*len(ts)+k+1)*m*cls]
				wk := w * ws[k]
				for j, v := range row {
					p.sums[j] += wk * float64(v)
				}
			}
			if g.check {
				g.measure(&p)
			}
			g.pieces[iv.b] = append(g.pieces[iv.b], p)
		}
		return nil
	})
}

// measure sets p's error, max over classes of |Σ_{m<nsum} ∫ tangent m −
// (f(hi) − f(lo))|, and its rounding floor, noiseFactor·ε·(|f(lo)| +
// |f(hi)| + Σ_m |∫ tangent m|), from the cached end outputs.
func (g *quad[T]) measure(p *piece) {
	eps := 0x1p-52
	if isFloat32[T]() {
		eps = 0x1p-23
	}
	f0, f1 := g.cache[p.b][p.lo], g.cache[p.b][p.hi]
	cls := len(f0)
	for cc := 0; cc < cls; cc++ {
		est, mag := 0.0, 0.0
		for mm := 0; mm < g.nsum; mm++ {
			est += p.sums[mm*cls+cc]
			mag += math.Abs(p.sums[mm*cls+cc])
		}
		d := math.Abs(est - (f1[cc] - f0[cc]))
		if !(d <= p.err) { // NaN sticks
			p.err = d
		}
		p.floor = math.Max(p.floor, noiseFactor*eps*(math.Abs(f0[cc])+math.Abs(f1[cc])+mag))
	}
}

// evaluateEnds is evaluate for Gauss–Lobatto intervals (Ends): the nodes
// not evaluated yet, ends included, are evaluated once each (one JVP row,
// which gives f(t) too), and every pending interval is integrated from
// the cached rows.
func (e *Evaluator[T]) evaluateEnds(g *quad[T], pending []interval) error {
	q := e.opt.Quadrature
	c := g.c
	ts, ws := LobattoRule(q.Points)
	m := g.tan.Count()
	var ns []int
	var nt []float64
	for _, iv := range pending {
		for i := range ts {
			t := nodeAt(q, iv.lo, iv.hi, ts, i)
			if _, ok := g.jvp[iv.b][t]; !ok {
				g.jvp[iv.b][t] = nil // queued
				ns = append(ns, iv.b)
				nt = append(nt, t)
			}
		}
	}
	if g.held != nil {
		done, err := e.gradRows(g, ns, nt)
		if err != nil {
			return err
		}
		ns, nt = ns[done:], nt[done:]
	}
	err := chunks(len(ns), max(1, e.opt.MaxRows/m), func(lo, hi int) error {
		y, dy, err := e.model.PathJVP(tensor.GatherRows(c.x, ns[lo:hi], 1), c.path(nt[lo:hi]), g.tan)
		if err != nil {
			return err
		}
		*g.rows += hi - lo
		cls := len(y.Data) / (hi - lo)
		if len(dy.Data) != (hi-lo)*m*cls {
			return fmt.Errorf("epk: PathJVP returned %d values for %d rows, %d tangents and %d classes", len(dy.Data), hi-lo, m, cls)
		}
		for i := lo; i < hi; i++ {
			f := make([]float64, cls)
			for cc := range f {
				f[cc] = float64(y.Data[(i-lo)*cls+cc])
			}
			d := make([]float64, m*cls)
			for j := range d {
				d[j] = float64(dy.Data[(i-lo)*m*cls+j])
			}
			g.cache[ns[i]][nt[i]], g.jvp[ns[i]][nt[i]] = f, d
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, iv := range pending {
		rows := make([][]float64, len(ts))
		for i := range ts {
			rows[i] = g.jvp[iv.b][nodeAt(q, iv.lo, iv.hi, ts, i)]
		}
		p := piece{interval: iv, sums: make([]float64, len(rows[0]))}
		w := iv.hi - iv.lo
		for i, row := range rows {
			wk := w * ws[i]
			for j, v := range row {
				p.sums[j] += wk * v
			}
		}
		if g.check {
			g.measure(&p)
		}
		g.pieces[iv.b] = append(g.pieces[iv.b], p)
	}
	return nil
}

// intervals returns the pieces' intervals.
func (g *quad[T]) intervals() []interval {
	var out []interval
	for _, ps := range g.pieces {
		for _, p := range ps {
			out = append(out, p.interval)
		}
	}
	return out
}

// refinePlan checks intervals along Δθ alone (one tangent) and returns the
// final ones as breaks: Adaptive's planning, and Exact's piece check when
// a plan is asked for before the contributions. With measure set, it also
// measures every sample's completeness residual along Δθ (the pieces'
// integrals against f(1) − f(0)) and refines until it meets Tol (meetTol),
// which certifies the plan for contributions derived from it.
func (e *Evaluator[T]) refinePlan(c *stepCtx[T], ivs []interval, measure bool, st *Stats) ([][]float64, error) {
	g := e.newQuad(c, deltaTangent(c), 1, true, &st.DerivRows, st)
	if e.opt.Quadrature.Ends {
		g.held = c.held
	}
	if err := e.run(g, ivs); err != nil {
		return nil, err
	}
	if measure {
		if err := e.meetTol(g, g.change(), e.opt.Quadrature.Tol*(1-deriveMargin)); err != nil {
			return nil, err
		}
		c.before, c.after = g.ends()
	}
	return intervalsToBreaks(c.B, g.intervals()), nil
}

// Miss is a test sample whose measured completeness residual of a step
// stayed above Tol: the node budget (MaxNodes), MaxDepth or the rounding
// floor left nothing to refine, or the residual is NaN.
type Miss struct {
	// Sample is the row of the test batch.
	Sample int
	// Residual is the sample's max over classes of |completeness
	// residual| (NaN when one is NaN).
	Residual float64
}

// sampleResiduals returns, per sample, max over classes of
// |Σ_m acc[m] − change| (acc holding parts that add up to Δθ's: data, reg
// and resid, or Δθ's alone); a NaN stays NaN.
func sampleResiduals(acc []*tensor.Dense[float64], change *tensor.Dense[float64]) []float64 {
	B, C := change.Shape[0], change.Shape[1]
	r := make([]float64, B)
	for b := 0; b < B; b++ {
		for i := b * C; i < (b+1)*C; i++ {
			v := 0.0
			for _, a := range acc {
				v += a.Data[i]
			}
			if d := math.Abs(v - change.Data[i]); !(d <= r[b]) {
				r[b] = d
			}
		}
	}
	return r
}

// certify integrates the tangents over the plan's intervals with error
// control (run; the first three tangents, data, reg and resid, add up to
// Δθ), makes every sample meet Tol (meetTol) and adds the final pieces'
// integrals into acc. It returns the final intervals.
func (e *Evaluator[T]) certify(c *stepCtx[T], plan *Plan, tan *nn.Tangents[T], acc []*tensor.Dense[float64], change *tensor.Dense[float64], st *Stats) ([]interval, error) {
	g := e.newQuad(c, tan, 3, true, &st.JVPRows, st)
	if err := e.run(g, breaksToIntervals(plan.Breaks)); err != nil {
		return nil, err
	}
	if err := e.meetTol(g, change, e.opt.Quadrature.Tol); err != nil {
		return nil, err
	}
	g.sum(acc)
	return g.intervals(), nil
}

// meetTol measures each sample's completeness residual (g.residuals)
// against change and, for the samples that still miss tol (Tol, or less
// for a plan certified for derived contributions) (the sum of the
// pieces' errors bounds the residual only up to the rounding of the end
// values), lowers their target (at least halved per round) and rounding
// floor (halved per round, down to minFloorScale) and refines again,
// until every sample meets Tol, nothing of the samples that miss can be
// refined (node budget, MaxDepth, the floor at minFloorScale, NaN), or
// maxRounds rounds have passed. A round that refines nothing ends the
// check only once the floor cannot be lowered further: a floor halved
// once may still lie above every piece's error.
func (e *Evaluator[T]) meetTol(g *quad[T], change *tensor.Dense[float64], tol float64) error {
	for round := 0; round < maxRounds; round++ {
		missing, lowered := false, false
		before := 0
		for b, r := range g.residuals(change) {
			if r > tol { // a NaN residual cannot be refined away
				lowered = lowered || g.floorScale[b] > minFloorScale
				missing = true
				g.target[b] *= math.Min(0.5, 0.5*tol/r)
				g.floorScale[b] = math.Max(g.floorScale[b]/2, minFloorScale)
			}
			before += len(g.pieces[b])
		}
		if !missing {
			return nil
		}
		if err := e.run(g, nil); err != nil {
			return err
		}
		after := 0
		for _, ps := range g.pieces {
			after += len(ps)
		}
		if after == before && !lowered {
			return nil // nothing left to refine
		}
		g.st.Refined += after - before
	}
	return nil
}

// sum sets acc[m] to the sum over the pieces of tangent m's integrals, per
// sample and class.
func (g *quad[T]) sum(acc []*tensor.Dense[float64]) {
	for _, a := range acc {
		clear(a.Data)
	}
	C := acc[0].Shape[1]
	for b, ps := range g.pieces {
		for _, p := range ps {
			for mm := range acc {
				dst := acc[mm].Data[b*C : (b+1)*C]
				for cc := range dst {
					dst[cc] += p.sums[mm*C+cc]
				}
			}
		}
	}
}

// residuals returns sampleResiduals of the first nsum tangents' integrals,
// summed over the pieces.
func (g *quad[T]) residuals(change *tensor.Dense[float64]) []float64 {
	acc := make([]*tensor.Dense[float64], g.nsum)
	for m := range acc {
		acc[m] = tensor.New[float64](change.Shape...)
	}
	g.sum(acc)
	return sampleResiduals(acc, change)
}

// change returns f(1) − f(0) per sample and class from the outputs cached
// at the ends of the pieces (every sample's first piece starts at 0 and
// its last ends at 1).
func (g *quad[T]) change() *tensor.Dense[float64] {
	f0, f1 := g.ends()
	for i, v := range f0.Data {
		f1.Data[i] -= v
	}
	return f1
}

// ends returns f(0) and f(1) per sample and class, from the outputs cached
// at the ends of the pieces.
func (g *quad[T]) ends() (f0, f1 *tensor.Dense[float64]) {
	C := len(g.cache[0][0])
	f0, f1 = tensor.New[float64](g.c.B, C), tensor.New[float64](g.c.B, C)
	for b := range g.cache {
		copy(f0.Data[b*C:(b+1)*C], g.cache[b][0])
		copy(f1.Data[b*C:(b+1)*C], g.cache[b][1])
	}
	return f0, f1
}
