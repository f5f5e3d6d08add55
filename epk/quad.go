package epk

import (
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/explaind/explaind/tensor"
)

// Rule is a quadrature rule for the path integral of a step.
type Rule int

const (
	// Midpoint is the n-point midpoint rule, the reference's (parity runs).
	Midpoint Rule = iota + 1
	// GaussLegendre is the n-point Gauss–Legendre rule on [0, 1]. The
	// integrand jumps where ReLU patterns change, so it gains little over
	// Midpoint; it is here for probes.
	GaussLegendre
	// Exact locates, per test sample, every t where a switch value (a ReLU
	// input) changes sign along the step, splits [0, 1] there and
	// integrates each smooth piece with an n-point Gauss–Legendre rule:
	// machine precision at a few nodes per piece. It needs a SwitchModel.
	// Its pieces are then certified like Adaptive's intervals (see Tol).
	Exact
	// Adaptive bisects [0, 1] per test sample, starting from Start equal
	// intervals (default 1), until the errors of its intervals' n-point
	// estimates along Δθ (Gauss–Legendre, or Gauss–Lobatto with Ends)
	// against f(end) − f(start) add up to at most Tol, then certifies the
	// step (see Tol). It needs only PathModel, so it fits models whose
	// switching points are too many to locate (CNNs with max-pools).
	Adaptive
)

// String names the rule.
func (r Rule) String() string {
	switch r {
	case Midpoint:
		return "midpoint"
	case GaussLegendre:
		return "gauss-legendre"
	case Exact:
		return "exact"
	case Adaptive:
		return "adaptive"
	}
	return fmt.Sprintf("Rule(%d)", int(r))
}

// Quadrature configures a rule. Zero fields take the defaults named.
type Quadrature struct {
	// Rule is the rule (default Exact).
	Rule Rule
	// Points is the number of nodes: of the whole rule for Midpoint
	// (default 100) and GaussLegendre (default 8), per piece for Exact
	// (default 3) and per interval for Adaptive (default 4).
	Points int
	// Grid is the number of uniform intervals on which Exact samples the
	// switch values (and their t-derivatives) to find sign changes
	// (default 16). A sign change brackets a switch; an interval whose
	// cubic Hermite interpolant dips towards zero is probed further, so two
	// switches of one unit inside one interval are found too.
	Grid int
	// RootTol is the width in t to which Exact brackets each switch
	// (default 1e-13 in float64, 1e-7 in float32); a final secant step
	// inside the bracket, at no extra evaluation, then places the switch
	// to about the rounding of the switch value over its slope.
	RootTol float64
	// Tol is the completeness residual |Σ contributions − (f(θ_{s+1}) −
	// f(θ_s))| per step and per (sample, class) that Exact and Adaptive
	// certify (default 1e-13 in float64, 1e-5 in float32). Every interval
	// [lo, hi] of a sample has a measured error along Δθ, |∫_lo^hi J·Δθ dt
	// − (f(hi) − f(lo))| (max over classes); while a sample's errors add
	// up to more than Tol, its intervals of largest error are bisected
	// (until the rest add up to Tol/2), all samples in one batch per
	// round. A jump of the integrand inside an interval of length h leaves
	// an error of order jump·h, so this needs about log2(jump/Tol) rounds
	// per jump. The contributions pass then measures each sample's
	// residual and refines the samples that still miss Tol (rounding of
	// the end values, errors left below the rounding floor) against a
	// smaller target and a floor lowered down to an eighth. Errors at the rounding
	// level of the outputs are not refined: a Tol below the rounding of f
	// is reported as missed (StepResult.Missed), not met.
	Tol float64
	// MaxNodes is the node budget of one sample in one step: Exact and
	// Adaptive split a sample into at most MaxNodes/Points intervals
	// (default 4096·Points). A sample that reaches it with its residual
	// above Tol is reported in StepResult.Missed.
	MaxNodes int
	// MaxDepth bounds Adaptive's bisection depth (default 44), and that of
	// Exact's piece check.
	MaxDepth int
	// Start is the number of equal intervals Adaptive starts every sample
	// and step from (default 1). More intervals only buy accuracy beyond
	// the certified completeness (that of the parts and per-parameter
	// scores, which the check does not measure) at Start times the nodes:
	// on the last steps of a Fashion-2 ResNet-9 (width/16, 64 images, tol
	// 1e-4) the pruning importance of Start 1 and of Start 4 differed from
	// a 24-node Gauss–Legendre reference by 1.2e-4 and 3.4e-5 (relative
	// L1) with the same top 1 % of parameters, at 3 and 12 nodes.
	Start int
	// SkipCheck turns off Exact's piece check and the certification of
	// its steps (misses are still reported): by default every located
	// piece's Gauss–Legendre estimate along Δθ is compared with
	// f(end) − f(start) and the pieces of largest error are bisected
	// while their errors add up to more than Tol (a
	// long smooth piece can need more than Points nodes). In the
	// contributions pass the check reuses the contributions (data, reg and
	// residual add up to Δθ) and costs a forward row per piece end plus
	// the re-evaluation of the pieces that fail; Evaluator.Plan runs it
	// separately, with one single-tangent JVP per node.
	SkipCheck bool
	// Ends makes Adaptive integrate each interval with the n-point
	// Gauss–Lobatto rule, whose points include the interval's ends (2:
	// the trapezoid rule, 3: Simpson's; Points 2 to 4), instead of
	// Gauss–Legendre's. Neighbouring intervals then share their end
	// nodes and a bisected interval's nodes stay nodes of its halves, so
	// no evaluation is spent on an interval that is later split, and the
	// outputs f(t) the check needs come with the JVP rows at the ends: a
	// sample of L intervals costs L(n−1)+1 nodes, where Gauss–Legendre's
	// takes nL for the final intervals plus about as many for the
	// intervals bisected on the way and L+1 forward rows. The rule is of
	// lower order (exact for degree 2n−3, not 2n−1), which matters on
	// smooth pieces only; an interval holding a jump of the integrand has
	// an error of order jump × length under either.
	Ends bool
}

// MinTol32 is the smallest Tol that evaluation in float32 can certify.
// The rounding floor of an interval's check is 32·2⁻²³ (about 3.8e-6)
// times |f(lo)| + |f(hi)| + the magnitudes of the estimate's terms, so
// about 8e-6 already for log-probabilities of order 1, and the measured
// residual f(θ_{s+1}) − f(θ_s) − Σ contributions carries the rounding of
// the outputs themselves: below 1e-5 a float32 step would be reported as
// missed however many nodes it gets. Use float64 for smaller tolerances.
const MinTol32 = 1e-5

// Filled returns q with the defaults of an Evaluator of element type T
// filled in (those named in Quadrature's fields), or an error naming the
// field out of range. Two quadratures that evaluate alike in T fill to the
// same value, whatever defaults a later build may choose.
func Filled[T tensor.Float](q Quadrature) (Quadrature, error) {
	f32 := isFloat32[T]()
	if q.Rule == 0 {
		q.Rule = Exact
	}
	if q.Points == 0 {
		switch q.Rule {
		case Midpoint:
			q.Points = 100
		case GaussLegendre:
			q.Points = 8
		case Exact:
			q.Points = 3
		default:
			q.Points = 4
		}
	}
	if q.Grid == 0 {
		q.Grid = 16
	}
	if q.RootTol == 0 {
		q.RootTol = 1e-13
		if f32 {
			q.RootTol = 1e-7
		}
	}
	if q.Tol == 0 {
		q.Tol = 1e-13
		if f32 {
			q.Tol = 1e-5
		}
	}
	if q.MaxDepth == 0 {
		q.MaxDepth = 44
	}
	if q.MaxNodes == 0 {
		q.MaxNodes = 4096 * q.Points
	}
	if q.Start == 0 {
		q.Start = 1
	}
	switch {
	case q.Rule < Midpoint || q.Rule > Adaptive:
		return q, fmt.Errorf("epk: unknown quadrature rule %d", int(q.Rule))
	case q.Points < 1 || q.Points > 256:
		return q, fmt.Errorf("epk: %d quadrature points, want 1..256", q.Points)
	case q.Grid < 1:
		return q, fmt.Errorf("epk: switch grid of %d intervals, want at least 1", q.Grid)
	case !(q.RootTol > 0) || !(q.Tol > 0):
		return q, fmt.Errorf("epk: tolerances must be positive (root %v, completeness %v)", q.RootTol, q.Tol)
	case q.MaxDepth < 1 || q.MaxDepth > 60:
		return q, fmt.Errorf("epk: adaptive depth %d, want 1..60", q.MaxDepth)
	case q.MaxNodes < q.Points:
		return q, fmt.Errorf("epk: a node budget of %d per sample and step, want at least the %d points of one interval", q.MaxNodes, q.Points)
	case q.Ends && (q.Rule != Adaptive || q.Points < 2 || q.Points > 4):
		return q, fmt.Errorf("epk: Gauss–Lobatto intervals (Ends) need the Adaptive rule and 2..4 points, not %v with %d", q.Rule, q.Points)
	case q.Start < 1 || q.Start*q.Points > q.MaxNodes:
		return q, fmt.Errorf("epk: adaptive start of %d intervals, want 1..%d (the node budget %d over %d points per interval)", q.Start, q.MaxNodes/q.Points, q.MaxNodes, q.Points)
	}
	return q, nil
}

func isFloat32[T tensor.Float]() bool {
	var z T
	_, ok := any(z).(float32)
	return ok
}

var (
	glMu    sync.Mutex
	glCache = map[int][2][]float64{}
)

// GaussLegendreRule returns the nodes (increasing) and weights of the
// n-point Gauss–Legendre rule on [0, 1], exact for polynomials of degree
// 2n−1. The slices are shared: do not modify them.
func GaussLegendreRule(n int) (nodes, weights []float64) {
	glMu.Lock()
	defer glMu.Unlock()
	if r, ok := glCache[n]; ok {
		return r[0], r[1]
	}
	nodes, weights = make([]float64, n), make([]float64, n)
	for i := 0; i < (n+1)/2; i++ {
		// Newton's method on P_n from Tricomi's initial guess.
		x := math.Cos(math.Pi * (float64(i) + 0.75) / (float64(n) + 0.5))
		var dp float64
		for it := 0; it < 100; it++ {
			p0, p1 := 1.0, x
			for k := 2; k <= n; k++ {
				p0, p1 = p1, ((2*float64(k)-1)*x*p1-(float64(k)-1)*p0)/float64(k)
			}
			dp = float64(n) * (x*p1 - p0) / (x*x - 1)
			dx := p1 / dp
			x -= dx
			if math.Abs(dx) < 1e-16 {
				break
			}
		}
		// Recompute the derivative at the converged node.
		p0, p1 := 1.0, x
		for k := 2; k <= n; k++ {
			p0, p1 = p1, ((2*float64(k)-1)*x*p1-(float64(k)-1)*p0)/float64(k)
		}
		dp = float64(n) * (x*p1 - p0) / (x*x - 1)
		w := 2 / ((1 - x*x) * dp * dp)
		// x is the i-th largest root on [−1, 1]; map to [0, 1].
		nodes[n-1-i], weights[n-1-i] = (1+x)/2, w/2
		nodes[i], weights[i] = (1-x)/2, w/2
	}
	glCache[n] = [2][]float64{nodes, weights}
	return nodes, weights
}

// LobattoRule returns the nodes (increasing, the first 0 and the last 1)
// and weights of the n-point Gauss–Lobatto rule on [0, 1], n = 2, 3 or 4,
// exact for polynomials of degree 2n−3. The slices are shared: do not
// modify them.
func LobattoRule(n int) (nodes, weights []float64) {
	switch n {
	case 2:
		return lobatto2[0], lobatto2[1]
	case 3:
		return lobatto3[0], lobatto3[1]
	case 4:
		return lobatto4[0], lobatto4[1]
	}
	panic(fmt.Sprintf("epk: no %d-point Gauss–Lobatto rule (2..4)", n))
}

var (
	lobatto2 = [2][]float64{{0, 1}, {0.5, 0.5}}
	lobatto3 = [2][]float64{{0, 0.5, 1}, {1.0 / 6, 4.0 / 6, 1.0 / 6}}
	lobatto4 = [2][]float64{{0, (1 - 1/math.Sqrt(5)) / 2, (1 + 1/math.Sqrt(5)) / 2, 1}, {1.0 / 12, 5.0 / 12, 5.0 / 12, 1.0 / 12}}
)

// intervalRule returns the nodes and weights on [0, 1] of the rule q
// applies to each interval: Gauss–Lobatto with Ends, else Gauss–Legendre.
func intervalRule(q Quadrature) (nodes, weights []float64) {
	if q.Ends {
		return LobattoRule(q.Points)
	}
	return GaussLegendreRule(q.Points)
}

// Node is one quadrature node of one test sample: the integrand is
// evaluated at θ_s + T·Δθ_s and weighted by W.
type Node struct {
	Sample int
	T, W   float64
}

// Stats counts the work of a plan or an evaluation, in rows (one test
// sample at one path position).
type Stats struct {
	// ForwardRows are rows evaluated without tangents (locating switches,
	// interval ends, the step's end points).
	ForwardRows int
	// DerivRows are rows evaluated with one tangent (switch derivatives,
	// adaptive refinement along Δθ).
	DerivRows int
	// JVPRows are rows evaluated with all Tangents tangents.
	JVPRows int
	// Tangents is the number of tangents of the contribution pass.
	Tangents int
	// BackwardRows are backward rows (each with K cotangents, or one in
	// the two-class form of heldGrads): the feature pass's, and the
	// planning's when it holds its nodes' gradients (Options.MaxHeldGrads).
	BackwardRows int
	// RootIters is the number of root-refinement rounds (Exact).
	RootIters int
	// Refined is the number of intervals the measured completeness check
	// added after the pieces' errors had met the tolerance.
	Refined int
	// Plan, JVP and Backward are the wall times of the phases.
	Plan, JVP, Backward time.Duration
}

// Plan is the set of quadrature nodes of one step for one test batch.
// It depends on the step and the batch; Evaluator.Plan builds it once for
// both Contributions and Features.
type Plan struct {
	// Rule is the rule that built the plan.
	Rule Rule
	// Samples is the number of test samples.
	Samples int
	// Nodes holds every sample's nodes, sample by sample.
	Nodes []Node
	// Pieces is the number of smooth pieces located (Exact), of intervals
	// (Adaptive) or 1 (fixed rules), per sample.
	Pieces []int
	// Intervals is the number of integration intervals per sample: Pieces,
	// or more where Exact's piece check split a piece.
	Intervals []int
	// Breaks are the interior interval ends per sample, increasing.
	Breaks [][]float64
	// Switches are the located switching points per sample, increasing
	// (Exact only): the interior ends of the smooth pieces, before the
	// piece check splits any of them.
	Switches [][]float64
	// Checked reports that the intervals are final: Exact's piece check has
	// run (or was skipped by SkipCheck), or the rule has none. The
	// contributions pass checks an unchecked plan itself and returns the
	// final one in StepResult.Plan; use that one for Features.
	Checked bool
	// Stats is the work of building the plan.
	Stats Stats
}

// NodesPerSample returns the number of nodes of each sample.
func (p *Plan) NodesPerSample() []int {
	n := make([]int, p.Samples)
	for _, nd := range p.Nodes {
		n[nd.Sample]++
	}
	return n
}

// fixedPlan returns a plan with the same rule on [0, 1] for every sample.
func fixedPlan(rule Rule, points, samples int) *Plan {
	var ts, ws []float64
	if rule == Midpoint {
		for i := 0; i < points; i++ {
			ts = append(ts, (float64(i)+0.5)/float64(points))
			ws = append(ws, 1/float64(points))
		}
	} else {
		ts, ws = GaussLegendreRule(points)
	}
	p := &Plan{Rule: rule, Samples: samples, Pieces: make([]int, samples), Intervals: make([]int, samples), Breaks: make([][]float64, samples), Checked: true}
	for b := 0; b < samples; b++ {
		p.Pieces[b], p.Intervals[b] = 1, 1
		for i := range ts {
			p.Nodes = append(p.Nodes, Node{Sample: b, T: ts[i], W: ws[i]})
		}
	}
	return p
}

// piecewisePlan returns a plan with q's interval rule (intervalRule) on
// every interval between consecutive breaks of each sample, a node that
// two neighbouring intervals share (Ends) once with the sum of their
// weights; Pieces is set to Intervals (the caller may overwrite it).
func piecewisePlan(rule Rule, q Quadrature, breaks [][]float64) *Plan {
	ts, ws := intervalRule(q)
	p := &Plan{Rule: rule, Samples: len(breaks), Pieces: make([]int, len(breaks)), Intervals: make([]int, len(breaks)), Breaks: breaks, Checked: true}
	for b, br := range breaks {
		sort.Float64s(br)
		ends := append(append([]float64{0}, br...), 1)
		first := len(p.Nodes)
		for k := 0; k+1 < len(ends); k++ {
			lo, hi := ends[k], ends[k+1]
			if !(hi > lo) {
				continue
			}
			p.Intervals[b]++
			for i := range ts {
				t, w := nodeAt(q, lo, hi, ts, i), (hi-lo)*ws[i]
				if i == 0 && q.Ends && len(p.Nodes) > first {
					p.Nodes[len(p.Nodes)-1].W += w // the previous interval's end
					continue
				}
				p.Nodes = append(p.Nodes, Node{Sample: b, T: t, W: w})
			}
		}
	}
	copy(p.Pieces, p.Intervals)
	return p
}

// nodeAt returns the position of point i of the rule ts on [lo, hi]:
// lo + (hi−lo)·ts[i], and with Ends the ends themselves for the first and
// last point, so that neighbours and halves meet at equal positions.
func nodeAt(q Quadrature, lo, hi float64, ts []float64, i int) float64 {
	switch {
	case q.Ends && i == 0:
		return lo
	case q.Ends && i == len(ts)-1:
		return hi
	}
	return lo + (hi-lo)*ts[i]
}
