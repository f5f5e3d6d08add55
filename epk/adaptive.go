package epk

import (
	"math"
	"sort"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// adaptiveStart is the number of equal intervals Adaptive starts from: a
// single interval could pass the test by a chance cancellation of two
// jumps.
const adaptiveStart = 4

// maxIntervals caps the intervals of one sample: beyond it, refinement
// stops (and the completeness residual reports what is left).
const maxIntervals = 1 << 12

// noiseFactor scales the rounding floor of the interval test: an error
// below noiseFactor·ε·(|f(lo)| + |f(hi)| + |estimate terms|), with ε the
// machine epsilon of the element type, is rounding, and bisecting cannot
// reduce it.
const noiseFactor = 32

// interval is one integration interval of one sample.
type interval struct {
	b      int
	lo, hi float64
	depth  int
}

// dyadicStart returns adaptiveStart equal intervals per sample.
func dyadicStart(samples int) []interval {
	var ivs []interval
	for b := 0; b < samples; b++ {
		for k := 0; k < adaptiveStart; k++ {
			ivs = append(ivs, interval{b: b, lo: float64(k) / adaptiveStart, hi: float64(k+1) / adaptiveStart, depth: 2})
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

// integrate evaluates the M tangents at each pending interval's
// Gauss–Legendre nodes and passes the interval's integrals (sums, [M·C]:
// tangent m, class c at m·C+c) to accept. With check set, an interval is
// accepted only when the sum of its first nsum tangents' integrals (which
// must add up to Δθ) matches f(hi) − f(lo) to Tol (max over classes; errors
// at the rounding level of the outputs pass, and so does an interval at
// MaxDepth or of a sample at maxIntervals); otherwise it is bisected and
// its halves are evaluated in turn. rows counts the node rows evaluated.
func (e *Evaluator[T]) integrate(c *stepCtx[T], pending []interval, tan *nn.Tangents[T], nsum int, check bool, rows *int, st *Stats, accept func(iv interval, sums []float64)) error {
	q := e.opt.Quadrature
	ts, ws := GaussLegendreRule(q.Points)
	m := tan.Count()
	eps := 0x1p-52
	if isFloat32[T]() {
		eps = 0x1p-23
	}
	// f(t) per sample, cached by position.
	cache := make([]map[float64][]float64, c.B)
	for b := range cache {
		cache[b] = map[float64][]float64{}
	}
	count := make([]int, c.B)
	for _, iv := range pending {
		count[iv.b]++
	}
	perCall := max(1, e.opt.MaxRows/(m*len(ts)))
	for len(pending) > 0 {
		if check {
			var es []int
			var et []float64
			for _, iv := range pending {
				for _, t := range []float64{iv.lo, iv.hi} {
					if _, ok := cache[iv.b][t]; !ok {
						cache[iv.b][t] = nil // queued
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
				st.ForwardRows += len(es)
				cls := len(y) / len(es)
				for i := range es {
					cache[es[i]][et[i]] = y[i*cls : (i+1)*cls]
				}
			}
		}
		var next []interval
		err := chunks(len(pending), perCall, func(lo, hi int) error {
			ivs := pending[lo:hi]
			ns := make([]int, 0, len(ivs)*len(ts))
			nt := make([]float64, 0, len(ivs)*len(ts))
			for _, iv := range ivs {
				for _, u := range ts {
					ns = append(ns, iv.b)
					nt = append(nt, iv.lo+(iv.hi-iv.lo)*u)
				}
			}
			_, dy, err := e.model.PathJVP(tensor.GatherRows(c.x, ns, 1), c.path(nt), tan)
			if err != nil {
				return err
			}
			*rows += len(ns)
			cls := len(dy.Data) / (len(ns) * m)
			sums := make([]float64, m*cls)
			for i, iv := range ivs {
				clear(sums)
				w := iv.hi - iv.lo
				for k := range ts {
					row := dy.Data[(i*len(ts)+k)*m*cls : (i*len(ts)+k+1)*m*cls]
					wk := w * ws[k]
					for j, v := range row {
						sums[j] += wk * float64(v)
					}
				}
				if check && iv.depth < q.MaxDepth && count[iv.b] < maxIntervals {
					f0, f1 := cache[iv.b][iv.lo], cache[iv.b][iv.hi]
					worst, floor := 0.0, 0.0
					for cc := 0; cc < cls; cc++ {
						est, mag := 0.0, 0.0
						for mm := 0; mm < nsum; mm++ {
							est += sums[mm*cls+cc]
							mag += math.Abs(sums[mm*cls+cc])
						}
						worst = math.Max(worst, math.Abs(est-(f1[cc]-f0[cc])))
						floor = math.Max(floor, noiseFactor*eps*(math.Abs(f0[cc])+math.Abs(f1[cc])+mag))
					}
					if worst > math.Max(q.Tol, floor) { // NaN is accepted, and shows in the result
						mid := iv.lo + 0.5*w
						next = append(next, interval{b: iv.b, lo: iv.lo, hi: mid, depth: iv.depth + 1},
							interval{b: iv.b, lo: mid, hi: iv.hi, depth: iv.depth + 1})
						count[iv.b]++
						continue
					}
				}
				accept(iv, sums)
			}
			return nil
		})
		if err != nil {
			return err
		}
		pending = next
	}
	return nil
}

// refinePlan checks intervals along Δθ alone (one tangent) and returns the
// accepted ones as breaks: Adaptive's planning, and Exact's piece check
// when a plan is asked for before the contributions.
func (e *Evaluator[T]) refinePlan(c *stepCtx[T], ivs []interval, st *Stats) ([][]float64, error) {
	var accepted []interval
	err := e.integrate(c, ivs, deltaTangent(c), 1, true, &st.DerivRows, st, func(iv interval, _ []float64) {
		accepted = append(accepted, iv)
	})
	if err != nil {
		return nil, err
	}
	return intervalsToBreaks(c.B, accepted), nil
}
