package epk

import (
	"fmt"
	"math"
	"sort"

	"github.com/explaind/explaind/tensor"
)

// maxProbeDepth bounds how often Exact subdivides a grid interval of one
// unit whose Hermite interpolant dips towards zero without a sign change.
const maxProbeDepth = 4

// hermiteDip is the fraction of the smaller end value below which a
// predicted interior minimum (of |switch value|, on the side of its sign)
// triggers a probe.
const hermiteDip = 0.25

// maxRootIters bounds the bracketing iterations of one switch.
const maxRootIters = 200

// seg is one unit's switch value on [t0, t1] of one sample, with values
// and t-derivatives at both ends.
type seg struct {
	b, j           int
	t0, t1         float64
	f0, f1, d0, d1 float64
	depth          int
}

// bracket is a sign change of unit j of sample b, refined by Brent's
// method (zeroin): the root lies between b and c; a is the previous
// iterate, d and e the last two steps.
type bracket struct {
	b, j int
	zr   brent
}

// brent is the state of Brent's root finder, advanced one evaluation at a
// time so that many brackets share each batched model call.
type brent struct {
	a, b, c, fa, fb, fc, d, e float64
}

func newBrent(lo, hi, flo, fhi float64) brent {
	return brent{a: lo, b: hi, c: hi, fa: flo, fb: fhi, fc: fhi}
}

// propose returns the next point to evaluate, or the root (done) once
// the bracket between b and c is narrower than about tol. The sign test
// is the switch predicate f > 0, so f = 0 counts as negative. The root
// returned is the final secant point (see root), not an end of the
// bracket.
func (s *brent) propose(tol float64) (t float64, done bool) {
	if (s.fb > 0) == (s.fc > 0) {
		s.c, s.fc = s.a, s.fa
		s.d = s.b - s.a
		s.e = s.d
	}
	if math.Abs(s.fc) < math.Abs(s.fb) {
		s.a, s.b, s.c = s.b, s.c, s.b
		s.fa, s.fb, s.fc = s.fb, s.fc, s.fb
	}
	tol1 := 2*0x1p-52*math.Abs(s.b) + 0.5*tol
	xm := 0.5 * (s.c - s.b)
	if math.Abs(xm) <= tol1 || s.fb == 0 {
		return s.root(), true
	}
	if math.Abs(s.e) >= tol1 && math.Abs(s.fa) > math.Abs(s.fb) {
		// Secant or inverse quadratic interpolation.
		sv := s.fb / s.fa
		var p, q float64
		if s.a == s.c {
			p, q = 2*xm*sv, 1-sv
		} else {
			q = s.fa / s.fc
			r := s.fb / s.fc
			p = sv * (2*xm*q*(q-r) - (s.b-s.a)*(r-1))
			q = (q - 1) * (r - 1) * (sv - 1)
		}
		if p > 0 {
			q = -q
		}
		p = math.Abs(p)
		if 2*p < math.Min(3*xm*q-math.Abs(tol1*q), math.Abs(s.e*q)) {
			s.e, s.d = s.d, p/q
		} else {
			s.d, s.e = xm, xm
		}
	} else {
		s.d, s.e = xm, xm // bisection
	}
	s.a, s.fa = s.b, s.fb
	if math.Abs(s.d) > tol1 {
		s.b += s.d
	} else {
		s.b += math.Copysign(tol1, xm)
	}
	return s.b, false
}

// root is the final refinement of a converged bracket, at no extra
// evaluation: the zero of the secant through (b, f_b) and (c, f_c),
//
//	t = b − f_b (c − b) / (f_c − f_b),
//
// kept inside the bracket. Brent's b is only the end with the smaller
// |f|, up to the bracket's width (about RootTol) from the root; the switch
// values are smooth across the bracket, so the secant point is within
// (c − b)² times a curvature term, or the rounding of f over the slope, of
// it. Where a switch's crossing is shallow, the Jacobian's jump along Δθ is
// small but its jumps along the data and regularization parts need not be,
// so their split is what a loose location spoils. With f_b = 0 (or no
// sign change left) b itself is returned.
func (s *brent) root() float64 {
	if s.fb == 0 || (s.fb > 0) == (s.fc > 0) || s.fc == s.fb {
		return s.b
	}
	t := s.b - s.fb*(s.c-s.b)/(s.fc-s.fb)
	lo, hi := math.Min(s.b, s.c), math.Max(s.b, s.c)
	if !(t >= lo && t <= hi) {
		return s.b
	}
	return t
}

// probeAt returns where to probe seg s when its cubic Hermite interpolant
// has an interior extremum that comes close to (or crosses) zero without
// the end values changing sign; ok is false when no probe is needed.
func probeAt(s seg) (t float64, ok bool) {
	h := s.t1 - s.t0
	sigma := 1.0
	if !(s.f0 > 0) {
		sigma = -1
	}
	g0, g1 := sigma*s.f0, sigma*s.f1
	e0, e1 := sigma*s.d0*h, sigma*s.d1*h
	// H'(u) = a u² + b u + c on u ∈ [0, 1].
	a := 6*g0 + 3*e0 - 6*g1 + 3*e1
	b := -6*g0 - 4*e0 + 6*g1 - 2*e1
	c := e0
	H := func(u float64) float64 {
		u2, u3 := u*u, u*u*u
		return (2*u3-3*u2+1)*g0 + (u3-2*u2+u)*e0 + (-2*u3+3*u2)*g1 + (u3-u2)*e1
	}
	var roots []float64
	if math.Abs(a) < 1e-300 {
		if b != 0 {
			roots = append(roots, -c/b)
		}
	} else if disc := b*b - 4*a*c; disc >= 0 {
		sq := math.Sqrt(disc)
		// Numerically stable roots of the quadratic.
		qq := -0.5 * (b + math.Copysign(sq, b))
		if qq != 0 {
			roots = append(roots, qq/a, c/qq)
		} else {
			roots = append(roots, 0)
		}
	}
	best, bestU := math.Inf(1), -1.0
	for _, u := range roots {
		if u > 0 && u < 1 {
			if v := H(u); v < best {
				best, bestU = v, u
			}
		}
	}
	if bestU < 0 || !(best < hermiteDip*math.Min(g0, g1)) {
		return 0, false
	}
	return s.t0 + bestU*h, true
}

// locate returns, for each sample, the increasing interior points of [0,
// 1] where some switch value changes sign along the step, located to
// RootTol. It works on blocks of samples to bound memory.
func (e *Evaluator[T]) locate(c *stepCtx[T], st *Stats) ([][]float64, error) {
	if e.sw == nil {
		return nil, fmt.Errorf("epk: the Exact rule needs a model with switch values (SwitchModel); use Adaptive")
	}
	g := e.opt.Quadrature.Grid
	block := max(1, e.opt.MaxRows/(g+1))
	breaks := make([][]float64, c.B)
	for lo := 0; lo < c.B; lo += block {
		hi := min(lo+block, c.B)
		br, err := e.locateBlock(c, lo, hi, st)
		if err != nil {
			return nil, err
		}
		copy(breaks[lo:hi], br)
	}
	return breaks, nil
}

// locateBlock is locate for the samples lo..hi−1.
func (e *Evaluator[T]) locateBlock(c *stepCtx[T], lo, hi int, st *Stats) ([][]float64, error) {
	q := e.opt.Quadrature
	g := q.Grid
	nb := hi - lo
	samples := make([]int, 0, nb*(g+1))
	ts := make([]float64, 0, nb*(g+1))
	for b := lo; b < hi; b++ {
		for k := 0; k <= g; k++ {
			samples = append(samples, b)
			ts = append(ts, float64(k)/float64(g))
		}
	}
	sw, dsw, S, err := e.switchRows(c, samples, ts, true)
	if err != nil {
		return nil, err
	}
	st.DerivRows += len(samples)

	var brackets []bracket
	var probes []seg
	classify := func(s seg) {
		if (s.f0 > 0) != (s.f1 > 0) {
			brackets = append(brackets, bracket{b: s.b, j: s.j, zr: newBrent(s.t0, s.t1, s.f0, s.f1)})
			return
		}
		if s.depth < maxProbeDepth {
			if _, ok := probeAt(s); ok {
				probes = append(probes, s)
			}
		}
	}
	for b := lo; b < hi; b++ {
		base := (b - lo) * (g + 1)
		for j := 0; j < S; j++ {
			for k := 0; k < g; k++ {
				r0, r1 := (base+k)*S+j, (base+k+1)*S+j
				classify(seg{b: b, j: j, t0: ts[base+k], t1: ts[base+k+1], f0: sw[r0], f1: sw[r1], d0: dsw[r0], d1: dsw[r1]})
			}
		}
	}
	for len(probes) > 0 {
		ps := probes
		probes = nil
		samples, ts = samples[:0], ts[:0]
		for _, s := range ps {
			t, _ := probeAt(s)
			samples = append(samples, s.b)
			ts = append(ts, t)
		}
		sw, dsw, _, err := e.switchRows(c, samples, ts, true)
		if err != nil {
			return nil, err
		}
		st.DerivRows += len(samples)
		for i, s := range ps {
			f, d := sw[i*S+s.j], dsw[i*S+s.j]
			classify(seg{b: s.b, j: s.j, t0: s.t0, t1: ts[i], f0: s.f0, f1: f, d0: s.d0, d1: d, depth: s.depth + 1})
			classify(seg{b: s.b, j: s.j, t0: ts[i], t1: s.t1, f0: f, f1: s.f1, d0: d, d1: s.d1, depth: s.depth + 1})
		}
	}

	if err := e.refine(c, brackets, S, st); err != nil {
		return nil, err
	}
	out := make([][]float64, hi-lo)
	for _, br := range brackets {
		out[br.b-lo] = append(out[br.b-lo], br.zr.root())
	}
	tol := q.RootTol
	for i, r := range out {
		sort.Float64s(r)
		var keep []float64
		for _, t := range r {
			if t <= 0 || t >= 1 {
				continue
			}
			if len(keep) > 0 && t-keep[len(keep)-1] <= 2*tol {
				continue // the same point, found through two units
			}
			keep = append(keep, t)
		}
		out[i] = keep
	}
	return out, nil
}

// refine runs Brent's method on every bracket until each is narrower
// than about RootTol; all brackets advance together, one batched
// evaluation per round.
func (e *Evaluator[T]) refine(c *stepCtx[T], brs []bracket, S int, st *Stats) error {
	tol := e.opt.Quadrature.RootTol
	active := make([]int, len(brs))
	for i := range active {
		active[i] = i
	}
	picker, _ := e.sw.(SwitchPicker[T])
	var samples, units []int
	var ts []float64
	for iter := 0; ; iter++ {
		samples, ts, units = samples[:0], ts[:0], units[:0]
		next := active[:0]
		for _, i := range active {
			t, done := brs[i].zr.propose(tol)
			if !done {
				next = append(next, i)
				samples = append(samples, brs[i].b)
				units = append(units, brs[i].j)
				ts = append(ts, t)
			}
		}
		active = next
		if len(active) == 0 {
			return nil
		}
		if iter >= maxRootIters {
			return fmt.Errorf("epk: %d switch points did not converge in %d iterations", len(active), maxRootIters)
		}
		st.RootIters++
		st.ForwardRows += len(samples)
		if picker != nil {
			err := chunks(len(samples), e.opt.MaxRows, func(lo, hi int) error {
				v, err := picker.PathSwitchesAt(tensor.GatherRows(c.x, samples[lo:hi], 1), c.path(ts[lo:hi]), units[lo:hi])
				if err != nil {
					return err
				}
				if len(v) != hi-lo {
					return fmt.Errorf("epk: PathSwitchesAt returned %d values for %d rows", len(v), hi-lo)
				}
				for n, i := range active[lo:hi] {
					brs[i].zr.fb = float64(v[n])
				}
				return nil
			})
			if err != nil {
				return err
			}
			continue
		}
		sw, _, _, err := e.switchRows(c, samples, ts, false)
		if err != nil {
			return err
		}
		for n, i := range active {
			brs[i].zr.fb = sw[n*S+brs[i].j]
		}
	}
}
