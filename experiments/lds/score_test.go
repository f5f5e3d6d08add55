package lds_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/explaind/explaind/experiments/lds"
)

// TestSubsets: the subsets are reproducible from the seed, distinct,
// sorted, of the asked size, within range, and differ with the seed; a
// job asking for more subsets than exist is refused, and asking for all
// of them gets all of them.
func TestSubsets(t *testing.T) {
	a, err := lds.Subsets(20, 10, 50, 7)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := lds.Subsets(20, 10, 50, 7)
	c, _ := lds.Subsets(20, 10, 50, 8)
	seen := map[string]bool{}
	for j, s := range a {
		if len(s) != 10 || !slices.IsSorted(s) || s[0] < 0 || s[9] >= 20 || !slices.Equal(s, b[j]) {
			t.Fatalf("subset %d: %v (again: %v)", j, s, b[j])
		}
		for i := 1; i < len(s); i++ {
			if s[i] == s[i-1] {
				t.Fatalf("subset %d repeats %d", j, s[i])
			}
		}
		if seen[fmt.Sprint(s)] {
			t.Fatalf("subset %d drawn twice", j)
		}
		seen[fmt.Sprint(s)] = true
	}
	if slices.EqualFunc(a, c, func(x, y []int) bool { return slices.Equal(x, y) }) {
		t.Error("seeds 7 and 8 drew the same subsets")
	}
	all, err := lds.Subsets(5, 2, 10, 1) // C(5, 2) = 10
	if err != nil || len(all) != 10 {
		t.Fatalf("all 10 subsets of 2 of 5: %d, %v", len(all), err)
	}
	if _, err := lds.Subsets(5, 2, 11, 1); err == nil || err.Error() != "lds: invalid Subsets 11: only 10 distinct subsets of 2 of the 5 training samples exist" {
		t.Errorf("11 subsets of 2 of 5: %v", err)
	}
	for _, f := range []float64{0.01, 0.99} {
		if _, err := lds.SubsetSize(20, f); err == nil {
			t.Errorf("fraction %g of 20 samples: no error", f)
		}
	}
	if k, err := lds.SubsetSize(1400, 0.5); k != 700 || err != nil {
		t.Errorf("half of 1400: %d, %v", k, err)
	}
}

// TestSpearman: the rank correlation of known cases, ties averaged as
// scipy.stats.spearmanr does.
func TestSpearman(t *testing.T) {
	if r := lds.Ranks([]float64{10, 20, 20, 5}); !slices.Equal(r, []float64{2, 3.5, 3.5, 1}) {
		t.Errorf("ranks: %v", r)
	}
	for _, c := range []struct {
		a, b []float64
		want float64
	}{
		{[]float64{1, 2, 3, 4}, []float64{10, 20, 30, 400}, 1},
		{[]float64{1, 2, 3, 4}, []float64{4, 3, 2, 1}, -1},
		// scipy.stats.spearmanr([1,2,3,4,5],[2,1,4,3,5]) = 0.8
		{[]float64{1, 2, 3, 4, 5}, []float64{2, 1, 4, 3, 5}, 0.8},
		// scipy.stats.spearmanr([1,2,2,3],[1,2,3,4]) = 0.9486832980505138
		{[]float64{1, 2, 2, 3}, []float64{1, 2, 3, 4}, 0.9486832980505138},
	} {
		if got := lds.Spearman(c.a, c.b); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("Spearman(%v, %v) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
	if !math.IsNaN(lds.Spearman([]float64{1, 1, 1}, []float64{1, 2, 3})) || !math.IsNaN(lds.Spearman([]float64{1}, []float64{1})) {
		t.Error("a constant or one-point correlation is not NaN")
	}
}

// linearProblem returns M subsets of k of N samples and the outputs of the
// exact linear datamodel f_j(x) = b[x] + Σ_{i∈S_j} w[x, i] for X test
// samples, with w and b drawn from seed.
func linearProblem(t *testing.T, X, N, k, M int, seed uint64) (*lds.Attribution, [][]int, [][]float64) {
	t.Helper()
	subsets, err := lds.Subsets(N, k, M, seed)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	w := &lds.Attribution{Method: "linear", Target: lds.LogProb, X: X, N: N, A: make([]float64, X*N)}
	for i := range w.A {
		w.A[i] = rng.NormFloat64()
	}
	actual := make([][]float64, M)
	for j, s := range subsets {
		actual[j] = make([]float64, X)
		for x := range X {
			actual[j][x] = 3 * float64(x)
			for _, i := range s {
				actual[j][x] += w.At(x, i)
			}
		}
	}
	return w, subsets, actual
}

// TestLDSOfTheLinearDatamodel: the attribution that is the exact linear
// datamodel of a linear problem has LDS 1 for every test sample, and its
// negation −1.
func TestLDSOfTheLinearDatamodel(t *testing.T) {
	w, subsets, actual := linearProblem(t, 8, 60, 30, 40, 3)
	for x, v := range lds.LDS(w, subsets, actual) {
		if v != 1 {
			t.Errorf("test sample %d: LDS %v, want 1", x, v)
		}
	}
	neg := &lds.Attribution{X: w.X, N: w.N, A: make([]float64, len(w.A))}
	for i, v := range w.A {
		neg.A[i] = -v
	}
	for x, v := range lds.LDS(neg, subsets, actual) {
		if math.Abs(v+1) > 1e-12 {
			t.Errorf("test sample %d: LDS of the negated datamodel %v, want -1", x, v)
		}
	}
	// A subset whose retrainings all diverged (NaN) is left out.
	actual[0][0] = math.NaN()
	if v := lds.LDS(w, subsets, actual)[0]; v != 1 {
		t.Errorf("LDS without the diverged subset: %v, want 1", v)
	}
}

// TestRandomBaselineNearZero: the random baseline's mean LDS over X = 400
// test samples of the linear problem (N = 80 training samples, M = 100
// subsets of 40) is within 0.04 of 0. Each test sample's correlation is
// that of two random linear functions of the subset: about the cosine of
// the two weight vectors (variance 1/N) plus the sampling error over the
// subsets (variance 1/(M−1)), so its standard deviation is √(1/80 + 1/99)
// ≈ 0.150 and that of the mean over 400 is 0.0075: 0.04 is 5.3 of them.
// The bootstrap interval of that mean must contain 0 and be about
// 2·1.96·0.0075 ≈ 0.029 wide.
func TestRandomBaselineNearZero(t *testing.T) {
	const X, M = 400, 100
	_, subsets, actual := linearProblem(t, X, 80, 40, M, 5)
	r := lds.RandomAttributions(X, 80, 11)[0]
	v := lds.LDS(r, subsets, actual)
	iv := lds.Bootstrap(v, 2000, 0.95, 1)
	if math.Abs(float64(iv.Mean)) > 0.04 || iv.N != X {
		t.Errorf("random baseline: mean LDS %v over %d test samples, want |mean| ≤ 0.04 over %d", iv.Mean, iv.N, X)
	}
	if !(iv.Lo < 0 && 0 < iv.Hi) || iv.Hi-iv.Lo > 0.04 || iv.Hi-iv.Lo < 0.02 {
		t.Errorf("random baseline: interval [%v, %v], want one around 0 about 0.029 wide", iv.Lo, iv.Hi)
	}
}

// TestBootstrap: the interval brackets the mean, is seeded, ignores NaN,
// and collapses on constant values.
func TestBootstrap(t *testing.T) {
	v := []float64{0.1, 0.5, 0.3, math.NaN(), 0.9, 0.2}
	a, b := lds.Bootstrap(v, 500, 0.9, 3), lds.Bootstrap(v, 500, 0.9, 3)
	if a != b || a.N != 5 || math.Abs(float64(a.Mean)-0.4) > 1e-15 || !(a.Lo < a.Mean && a.Mean < a.Hi) || a.Lo < 0.1 || a.Hi > 0.9 {
		t.Errorf("bootstrap: %+v and again %+v", a, b)
	}
	if c := lds.Bootstrap([]float64{0.5, 0.5, 0.5}, 100, 0.95, 1); c.Lo != 0.5 || c.Hi != 0.5 || c.Mean != 0.5 {
		t.Errorf("bootstrap of constants: %+v", c)
	}
	if n := lds.Bootstrap([]float64{math.NaN()}, 100, 0.95, 1); n.N != 0 || !math.IsNaN(float64(n.Mean)) {
		t.Errorf("bootstrap of no value: %+v", n)
	}
}

// TestNoiseCeiling: the ceiling is 1 for noise-free retrainings, 0 for
// pure noise, √ρ against one seed, and the Spearman–Brown value for more;
// and simulated targets of signal plus seed noise reach it: the
// correlation of the signal with the mean of K noisy copies is close to
// NoiseCeiling of the copies' mutual correlation.
func TestNoiseCeiling(t *testing.T) {
	for _, c := range []struct {
		rho  float64
		K    int
		want float64
	}{{1, 2, 1}, {0, 2, 0}, {-0.3, 2, 0}, {0.25, 1, 0.5}, {0.036, 2, math.Sqrt(0.072 / 1.036)}, {0.5, 3, math.Sqrt(1.5 / 2)}} {
		if got := lds.NoiseCeiling(c.rho, c.K); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("NoiseCeiling(%v, %d) = %v, want %v", c.rho, c.K, got, c.want)
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	const M, K, noise = 20000, 2, 2.0
	signal, copies := make([]float64, M), make([][]float64, K)
	for k := range copies {
		copies[k] = make([]float64, M)
	}
	avg := make([]float64, M)
	for m := range M {
		signal[m] = rng.NormFloat64()
		for k := range K {
			copies[k][m] = signal[m] + noise*rng.NormFloat64()
			avg[m] += copies[k][m] / K
		}
	}
	rho := pearson(copies[0], copies[1])
	got, want := pearson(signal, avg), lds.NoiseCeiling(rho, K)
	t.Logf("ρ = %.4f: the signal correlates with the mean of %d by %.4f; ceiling %.4f", rho, K, got, want)
	if math.Abs(got-want) > 0.02 {
		t.Errorf("the signal correlates with the mean of %d copies by %v; NoiseCeiling(%v) = %v", K, got, rho, want)
	}
}

func pearson(a, b []float64) float64 {
	var ma, mb float64
	for i := range a {
		ma += a[i] / float64(len(a))
		mb += b[i] / float64(len(b))
	}
	var sab, saa, sbb float64
	for i := range a {
		sab += (a[i] - ma) * (b[i] - mb)
		saa += (a[i] - ma) * (a[i] - ma)
		sbb += (b[i] - mb) * (b[i] - mb)
	}
	return sab / math.Sqrt(saa*sbb)
}
