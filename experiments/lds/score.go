package lds

import (
	"math"
	"slices"
	"sort"
)

// Ranks returns the ranks of v (1 … n), ties given the mean of the ranks
// they span.
func Ranks(v []float64) []float64 {
	n := len(v)
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return v[idx[a]] < v[idx[b]] })
	r := make([]float64, n)
	for i := 0; i < n; {
		j := i + 1
		for j < n && v[idx[j]] == v[idx[i]] {
			j++
		}
		mean := float64(i+j+1) / 2 // ranks i+1 … j
		for k := i; k < j; k++ {
			r[idx[k]] = mean
		}
		i = j
	}
	return r
}

// Spearman returns Spearman's rank correlation of a and b (the Pearson
// correlation of their ranks, ties averaged): NaN when they have fewer
// than two values or either is constant.
func Spearman(a, b []float64) float64 {
	if len(a) != len(b) || len(a) < 2 {
		return math.NaN()
	}
	return pearson(Ranks(a), Ranks(b))
}

func pearson(a, b []float64) float64 {
	n := float64(len(a))
	var ma, mb float64
	for i := range a {
		ma += a[i] / n
		mb += b[i] / n
	}
	var sab, saa, sbb float64
	for i := range a {
		da, db := a[i]-ma, b[i]-mb
		sab += da * db
		saa += da * da
		sbb += db * db
	}
	if saa == 0 || sbb == 0 {
		return math.NaN()
	}
	return sab / math.Sqrt(saa*sbb)
}

// Predict returns the predictions of attribution a for test sample x and
// each subset: Σ_{i ∈ S_j} a[x, i].
func Predict(a *Attribution, x int, subsets [][]int) []float64 {
	out := make([]float64, len(subsets))
	row := a.A[x*a.N : (x+1)*a.N]
	for j, s := range subsets {
		for _, i := range s {
			out[j] += row[i]
		}
	}
	return out
}

// LDS returns the LDS of attribution a for each test sample x: Spearman's
// correlation over the subsets of Predict and actual[j][x] (the subset's
// mean target over its seeds). Subsets whose actual value is not finite
// (every retraining of them diverged) are left out; a test sample with
// fewer than two subsets left, or constant values, gets NaN.
func LDS(a *Attribution, subsets [][]int, actual [][]float64) []float64 {
	out := make([]float64, a.X)
	for x := range a.X {
		pred := Predict(a, x, subsets)
		var p, q []float64
		for j := range subsets {
			if v := actual[j][x]; finite(v) {
				p, q = append(p, pred[j]), append(q, v)
			}
		}
		out[x] = Spearman(p, q)
	}
	return out
}

// bootstrapStream is the PCG stream of the bootstrap resamples
// ("bootstr").
const bootstrapStream = 0x626f6f74737472

// Interval is a mean with a confidence interval.
type Interval struct {
	// Mean is the mean over the finite values, N their number.
	Mean Num `json:"mean"`
	N    int `json:"n"`
	// Lo and Hi bound the percentile bootstrap interval of the mean at
	// the level of the summary.
	Lo Num `json:"ci_lo"`
	Hi Num `json:"ci_hi"`
}

// Bootstrap returns the mean of the finite values of v and its percentile
// bootstrap interval at level: the (1−level)/2 and (1+level)/2 quantiles
// of the means of B resamples (with replacement, as many as the values)
// drawn from a generator seeded by seed. With no finite value every field
// is NaN but N (0); with one, the interval is the value itself.
func Bootstrap(v []float64, B int, level float64, seed uint64) Interval {
	var f []float64
	for _, e := range v {
		if finite(e) {
			f = append(f, e)
		}
	}
	n := len(f)
	if n == 0 {
		return Interval{Mean: Num(math.NaN()), Lo: Num(math.NaN()), Hi: Num(math.NaN())}
	}
	iv := Interval{Mean: Num(mean(f)), N: n}
	rng := newRand(seed, bootstrapStream)
	means := make([]float64, B)
	for b := range B {
		var m float64
		for range n {
			m += f[rng.IntN(n)]
		}
		means[b] = m / float64(n)
	}
	slices.Sort(means)
	iv.Lo, iv.Hi = Num(quantile(means, (1-level)/2)), Num(quantile(means, (1+level)/2))
	return iv
}

// quantile returns the q-quantile of sorted s, interpolating linearly
// between order statistics (numpy's default).
func quantile(s []float64, q float64) float64 {
	h := q * float64(len(s)-1)
	lo := int(math.Floor(h))
	if lo >= len(s)-1 {
		return s[len(s)-1]
	}
	return s[lo] + (h-float64(lo))*(s[lo+1]-s[lo])
}
