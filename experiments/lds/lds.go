// Package lds measures how well data attributions predict retraining: the
// linear datamodeling score (LDS) of TRAK, dattri and Kronfluence, for the
// exact path kernel (EPK) and the baselines people compare against.
//
// For M random subsets S_1 … S_M of the training set (each of ⌊F·N⌉ of
// the N samples, drawn from a seeded generator, distinct), the run's model
// is trained again from scratch on each subset, K times (seeds 0 … K−1),
// with the run's optimizer, learning-rate schedule and number of steps
// (Retrain). For each chosen test sample x and target f (the true class's
// log-probability log p_y(x), and the margin log p_y(x) − log p_c*(x),
// which equals the logit margin since the normalizer cancels) the actual
// output is the mean over seeds of f(x) after retraining on S_j. An
// attribution a[x, i] (x test, i training sample) predicts it as
//
//	g_j(x) = Σ_{i ∈ S_j} a[x, i],
//
// and the LDS of x is Spearman's rank correlation over j of g_j(x) and the
// actual outputs. The score of a method is the mean LDS over the test
// samples, with a percentile bootstrap confidence interval over them.
//
// The attributions (Attributions) are, for a target f and training sample
// i with log-probability ℓ_i = log p_{y_i}(z_i):
//
//	epk       the EPK data kernel summed over every step of the run, read
//	          from an `explaind epk` output with the reference preset:
//	          kernel_full[x, y, i] for log p_y, kernel_full[x, y, i] −
//	          kernel_full[x, c*, i] for the margin (exact: the EPK of a
//	          difference of outputs is the difference of their EPKs). The
//	          weight-decay part (kernel_reg) belongs to no sample; shared
//	          out equally it adds |S|·r/N to every subset's prediction, the
//	          same for all subsets of one size, so it cannot change a rank
//	          correlation and is left out.
//	tracin    TracIn-CP: Σ_c η_c ⟨∇f(x; θ_c), ∇ℓ_i(θ_c)⟩ over the run's
//	          stored checkpoints θ_c (steps 0, E, 2E, … < the run's steps,
//	          E its checkpoint interval) with the learning rate η_c of
//	          step c: the first-order change of f that a gradient step on
//	          sample i would cause.
//	grad_dot  ⟨∇f(x; θ_T), ∇ℓ_i(θ_T)⟩ at the final model θ_T.
//	grad_cos  the same divided by both gradients' norms (0 when one is 0).
//	trak      TRAK with the final model alone (TRAKAttributions): the
//	          gradients at θ_T projected to k = min(512, N/2) dimensions
//	          by a seeded Rademacher matrix R, a[x, i] = φ(x)ᵀ(Φ̃ᵀΦ̃)⁻¹Rᵀ∇ℓ_i
//	          with φ(x) = Rᵀ∇f(x) and Φ̃'s rows Rᵀ∇ℓ_i/(1 − p_i), the
//	          projected gradients of log(p_i/(1 − p_i)). Published TRAK
//	          averages this over an ensemble of independently trained
//	          models (TRAK-50: 50); the run has one.
//	random    independent standard normal values, seeded.
//
// c* is the class other than y with the largest log-probability under the
// run's final model; it stays fixed for the margin of every retrained
// model, so that the margin is one smooth function of the parameters that
// every attribution explains. Positive attributions mean that training on
// the sample raises f.
//
// The retrained models' training accuracy (on their subset) and
// validation accuracy (on the run's whole validation or test split) are
// reported too, and with K ≥ 2 seeds the spread of the target over seeds
// of one subset: the noise ceiling of the LDS (no attribution can predict
// the seed's part).
//
// Do runs the whole job, resumably (progress.json holds the retrainings
// done); with Options.Shard it does one block of the retrainings, and
// Merge joins the finished shards' directories into the whole job's
// result.
package lds

import (
	"fmt"
	"io"
	"math"
	"math/big"
	"slices"

	"github.com/explaind/explaind/setting"
	"github.com/explaind/explaind/shard"
)

// Command is the experiment's name in errors and outputs.
const Command = "lds"

// The targets.
const (
	LogProb = "logprob"
	Margin  = "margin"
)

// Targets returns the target names in the order of the outputs.
func Targets() []string { return []string{LogProb, Margin} }

// The attribution methods.
const (
	EPK     = "epk"
	TracIn  = "tracin"
	GradDot = "grad_dot"
	GradCos = "grad_cos"
	TRAK    = "trak"
	Random  = "random"
)

// Methods returns every method in the order of the outputs; epk is
// scored only when an EPK output is given.
func Methods() []string { return []string{EPK, TracIn, GradDot, GradCos, TRAK, Random} }

// Options configure the experiment.
type Options struct {
	// Run is the training run and Out the output directory; Software is
	// recorded in the summary.
	Run, Out, Software string
	// EPK is an `explaind epk` output of the run with the reference
	// preset; its test samples are the ones scored. Empty: no epk method,
	// the first TestSize samples of the run's validation (modulo) or test
	// (CNN) split.
	EPK string
	// ComputeEPK, without an EPK output, computes the epk method's kernel
	// in-process (ComputeEPKAttributions) for the first TestSize samples.
	ComputeEPK bool
	// Subsets is M, Fraction the fraction F of the training set in each
	// subset, Seeds K, the retrainings per subset. SubsetSeed seeds the
	// subsets' draws and the random baseline.
	Subsets    int
	Fraction   float64
	Seeds      int
	SubsetSeed uint64
	// TestSize is the number of test samples (0: all of the EPK output's,
	// or 16 without one).
	TestSize int
	// Bootstrap is the number of bootstrap resamples of the confidence
	// interval (0: 1000); Confidence its level (0: 0.95).
	Bootstrap  int
	Confidence float64
	// EvalChunk bounds the samples per forward pass (0: all at once).
	EvalChunk int
	// Shard, when set, makes Do retrain only that shard's block of the
	// retrainings (subset-major, seeds within: shard.Shard.Range of M·K)
	// for Merge to join.
	Shard shard.Shard
	// Progress, if set, is called after each retraining with the number
	// done (those resumed from Out included) and the total.
	Progress func(done, total int)
	// Stage, if set, returns the progress callback of a stage of the
	// scoring ("EPK steps", "gradient states"), called after each step or
	// state with the number done and the total.
	Stage func(what string) func(done, total int)
	// Log, if set, receives a line saying how many retrainings were
	// resumed from Out.
	Log io.Writer
}

// DefaultTestSize is the number of test samples without an EPK output.
const DefaultTestSize = 16

// Check validates the options that need no run, naming the first bad
// value's field (a *setting.Error), and fills in the defaults.
func (o *Options) Check() error {
	if o.Bootstrap == 0 {
		o.Bootstrap = 1000
	}
	if o.Confidence == 0 {
		o.Confidence = 0.95
	}
	bad := func(name string, v any, format string, args ...any) error {
		return fmt.Errorf("%s: %w", Command, setting.Invalid(name, v, format, args...))
	}
	switch {
	case o.Subsets < 2:
		return bad("Subsets", o.Subsets, "want at least 2 subsets (a rank correlation needs two points)")
	case !(o.Fraction > 0 && o.Fraction < 1): // NaN too
		return bad("Fraction", o.Fraction, "want a fraction of the training set in (0, 1)")
	case o.Seeds < 1:
		return bad("Seeds", o.Seeds, "want ≥ 1")
	case o.TestSize < 0:
		return bad("TestSize", o.TestSize, "want ≥ 0")
	case o.Bootstrap < 1:
		return bad("Bootstrap", o.Bootstrap, "want ≥ 1 resamples")
	case !(o.Confidence > 0 && o.Confidence < 1):
		return bad("Confidence", o.Confidence, "want a level in (0, 1)")
	case o.EvalChunk < 0:
		return bad("EvalChunk", o.EvalChunk, "want ≥ 0 (0: all samples at once)")
	case o.EPK != "" && o.ComputeEPK:
		return fmt.Errorf("%s: %w", Command, setting.Errorf("give an EPK output (%v) or compute the kernel (%v), not both", setting.Name("EPK"), setting.Name("ComputeEPK")))
	}
	return nil
}

// SubsetSize returns the size k of every subset of an n-sample training
// set at fraction f: f·n rounded to the nearest whole number. It is an
// error for k to be 0 or n (the subsets would not differ).
func SubsetSize(n int, f float64) (int, error) {
	k := int(math.Round(f * float64(n)))
	if k < 1 || k > n-1 {
		return 0, fmt.Errorf("%s: %w", Command, setting.Invalid("Fraction", f,
			"%d of the %d training samples; want between 1 and %d", k, n, n-1))
	}
	return k, nil
}

// subsetStream is the PCG stream of the subset draws ("subsets").
const subsetStream = 0x73756273657473

// Subsets returns m distinct subsets of k of the indices 0 … n−1, each
// sorted, drawn from a generator seeded by seed: subset j is the first k
// of a uniform permutation, redrawn (from the same generator) while it
// equals an earlier one. It is an error for m to exceed the number of
// distinct subsets, C(n, k).
func Subsets(n, k, m int, seed uint64) ([][]int, error) {
	if k < 1 || k > n-1 {
		return nil, fmt.Errorf("%s: subsets of %d of %d samples", Command, k, n)
	}
	if c := new(big.Int).Binomial(int64(n), int64(k)); c.Cmp(big.NewInt(int64(m))) < 0 {
		return nil, fmt.Errorf("%s: %w", Command, setting.Invalid("Subsets", m,
			"only %s distinct subsets of %d of the %d training samples exist", c, k, n))
	}
	rng := newRand(seed, subsetStream)
	out := make([][]int, 0, m)
	seen := make(map[string]bool, m)
	for len(out) < m {
		s := rng.Perm(n)[:k]
		slices.Sort(s)
		key := fmt.Sprint(s)
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, s)
	}
	return out, nil
}
