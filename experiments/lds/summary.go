package lds

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"slices"

	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/train"
)

// Spread is the mean, minimum and maximum of a quantity over retrainings.
type Spread struct {
	Mean float64 `json:"mean"`
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
}

func spreadOf(v []float64) Spread {
	if len(v) == 0 {
		return Spread{}
	}
	s := Spread{Min: slices.Min(v), Max: slices.Max(v)}
	for _, e := range v {
		s.Mean += e / float64(len(v))
	}
	return s
}

// Noise describes, for one target, how much the target varies over the
// seeds of one subset (needs K ≥ 2) against how much it varies over
// subsets: the part of the outcome no attribution can predict.
type Noise struct {
	// SeedSD is the mean over test samples and subsets of the standard
	// deviation over seeds; SubsetSD the mean over test samples of the
	// standard deviation over subsets of the seed mean.
	SeedSD   Num `json:"seed_sd"`
	SubsetSD Num `json:"subset_sd"`
	// SeedLDS is the mean over test samples of Spearman's correlation over
	// subsets between seed 0's and seed 1's outcome: how well one
	// retraining predicts another of the same subsets, the noise ceiling
	// of an attribution scored against a single seed.
	SeedLDS Num `json:"seed_vs_seed_lds"`
	// Ceiling is the mean over test samples of NoiseCeiling(ρ_x, K), ρ_x
	// the sample's seed-vs-seed correlation: about the largest LDS any
	// attribution can reach against the mean of the K seeds that the LDS
	// scores.
	Ceiling Num `json:"ceiling"`
}

// NoiseCeiling returns √(Kρ/(1 + (K−1)ρ)) for ρ > 0 (0 otherwise): the
// correlation with the mean of K retrainings that a perfect predictor of
// their seed-free part can expect, when any two retrainings correlate by
// ρ (the square root of the Spearman–Brown reliability of a mean of K).
// It treats rank correlations as linear ones, so it is an estimate.
func NoiseCeiling(rho float64, K int) float64 {
	if !(rho > 0) {
		return 0
	}
	rho = min(rho, 1)
	k := float64(K)
	return math.Sqrt(k * rho / (1 + (k-1)*rho))
}

// Summary is DIR/summary.json.
type Summary struct {
	Command  string `json:"command"`
	Run      string `json:"run"`
	EPK      string `json:"epk,omitempty"`
	Software string `json:"software"`
	Complete bool   `json:"complete"`
	Key
	Settings struct {
		SubsetSize        int     `json:"subset_size"`
		TrainSize         int     `json:"train_size"`
		Steps             int     `json:"steps"`
		Optimizer         any     `json:"optimizer"`
		Schedule          string  `json:"schedule"`
		BatchSize         int     `json:"batch_size"`
		Bootstrap         int     `json:"bootstrap"`
		Confidence        float64 `json:"confidence"`
		TracInCheckpoints []int   `json:"tracin_checkpoints"`
	} `json:"settings"`
	// Methods maps a method to its LDS per target: the mean over the test
	// samples and its bootstrap interval.
	Methods map[string]map[string]Interval `json:"methods"`
	// Retrained describes the retrained models: their number, how many
	// diverged, their accuracies (training on the subset, validation on
	// the run's whole split) and, for comparison, the run's.
	Retrained struct {
		Count       int     `json:"count"`
		Diverged    int     `json:"diverged"`
		TrainAcc    Spread  `json:"train_acc"`
		ValAcc      Spread  `json:"val_acc"`
		RunTrainAcc float64 `json:"run_train_acc"`
		RunValAcc   float64 `json:"run_val_acc"`
	} `json:"retrained"`
	// Noise maps a target to its spread over seeds (only with K ≥ 2).
	Noise       map[string]Noise `json:"noise,omitempty"`
	WallSeconds struct {
		Retraining float64 `json:"retraining"`
		Scoring    float64 `json:"scoring"`
	} `json:"wall_seconds"`
	Files      []string `json:"files"`
	Definition string   `json:"definition"`
	// Reused is set by Do when Out held this complete result already.
	Reused bool `json:"-"`
	// LDS holds the per-test-sample scores, by method and target (also in
	// lds.csv).
	LDS map[string]map[string][]float64 `json:"-"`
	// Actual is the seed mean per target, subset and test sample.
	Actual map[string][][]float64 `json:"-"`
}

// ReadSummary reads dir's SummaryFile.
func ReadSummary(dir string) (*Summary, error) {
	b, err := expio.ReadOutput(dir, SummaryFile)
	if err != nil {
		return nil, err
	}
	var s Summary
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s is not an %s summary: %v", filepath.Join(dir, SummaryFile), Command, err)
	}
	return &s, nil
}

// IsShard reports whether dir holds a shard of an `explaind lds` job
// (Options.Shard), finished or not, which Merge joins.
func IsShard(dir string) bool {
	s, err := ReadSummary(dir)
	if err == nil && s.Command == Command && s.Shard != "" {
		return true
	}
	p, err := readProgress(dir)
	return err == nil && p != nil && p.Command == Command && p.Shard != ""
}

// scores reports whether s scores exactly the methods this build scores:
// every one of Methods(), epk only if withEPK. A finished job whose summary
// does not (written by a build with fewer methods) is scored again from
// its retrainings.
func (s *Summary) scores(withEPK bool) bool {
	for _, m := range Methods() {
		if want := m != EPK || withEPK; (s.Methods[m] != nil) != want {
			return false
		}
	}
	return true
}

// tracinCheckpoints returns the checkpoint steps TracIn-CP sums over.
func (j *Job) tracinCheckpoints() []int {
	var out []int
	for _, c := range j.Run.Manifest.Checkpoints {
		if c.Step < j.Run.Steps() {
			out = append(out, c.Step)
		}
	}
	return out
}

// Attributions computes every method's attributions for the job's test
// samples: epk (when an EPK output is given), tracin, grad_dot, grad_cos,
// trak and random.
func (j *Job) Attributions(ctx context.Context) ([]*Attribution, error) {
	var out []*Attribution
	N := j.Run.Data.Train.Len()
	if j.EPK != nil {
		a, err := EPKAttributions(j.EPK, j.Tests.Labels, j.Tests.Rival, N)
		if err != nil {
			return nil, err
		}
		out = append(out, a...)
	} else if j.Opt.ComputeEPK {
		a, err := ComputeEPKAttributions(ctx, j.Run.Dir, j.Key.TestIndices, j.Tests.Labels, j.Tests.Rival, j.stage("EPK steps"))
		if err != nil {
			return nil, err
		}
		out = append(out, a...)
	}
	g, err := GradientAttributions(ctx, j.Run, j.Tests, j.stage("gradient states (TracIn-CP checkpoints, final)"))
	if err != nil {
		return nil, err
	}
	out = append(out, g...)
	// GradientAttributions leaves the run at its final state.
	t, _, err := TRAKAttributions(ctx, j.Run.Session.Model, j.Run.Session.Params(), j.Tests, j.Run.Data.Train, j.Opt.SubsetSeed)
	if err != nil {
		return nil, err
	}
	out = append(out, t...)
	out = append(out, RandomAttributions(len(j.Tests.Labels), N, j.Opt.SubsetSeed)...)
	return out, nil
}

// stage returns the progress callback of a scoring stage (nil: none).
func (j *Job) stage(what string) func(done, total int) {
	if j.Opt.Stage == nil {
		return nil
	}
	return j.Opt.Stage(what)
}

// Actual returns, per target, the mean over the seeds that did not
// diverge of each subset's target per test sample, [M][X] (NaN where
// every seed diverged).
func (j *Job) Actual(rows []Row) map[string][][]float64 {
	X := len(j.Tests.Labels)
	out := map[string][][]float64{}
	for _, target := range Targets() {
		a := make([][]float64, len(j.Subsets))
		count := make([]int, len(j.Subsets))
		for m := range a {
			a[m] = make([]float64, X)
		}
		for _, r := range rows {
			if r.Diverged {
				continue
			}
			v := r.LogProb
			if target == Margin {
				v = r.Margin
			}
			count[r.Subset]++
			for x := range X {
				a[r.Subset][x] += v[x]
			}
		}
		for m := range a {
			for x := range X {
				if count[m] == 0 {
					a[m][x] = math.NaN()
				} else {
					a[m][x] /= float64(count[m])
				}
			}
		}
		out[target] = a
	}
	return out
}

// Score returns the summary of the rows and attributions.
func (j *Job) Score(rows []Row, attrs []*Attribution) *Summary {
	o := j.Opt
	s := &Summary{Command: Command, Run: j.Run.Dir, EPK: o.EPK, Software: o.Software, Complete: true, Key: j.Key,
		Methods: map[string]map[string]Interval{}, LDS: map[string]map[string][]float64{}, Actual: j.Actual(rows)}
	st := &s.Settings
	st.SubsetSize, st.TrainSize, st.Steps = len(j.Subsets[0]), j.Run.Data.Train.Len(), j.Run.Steps()
	st.Optimizer, st.Schedule, st.BatchSize = j.Run.Config.Optimizer, j.Run.Config.Schedule, j.Run.Config.BatchSize
	st.Bootstrap, st.Confidence = o.Bootstrap, o.Confidence
	for _, a := range attrs {
		v := LDS(a, j.Subsets, s.Actual[a.Target])
		if s.LDS[a.Method] == nil {
			s.LDS[a.Method], s.Methods[a.Method] = map[string][]float64{}, map[string]Interval{}
		}
		s.LDS[a.Method][a.Target] = v
		s.Methods[a.Method][a.Target] = Bootstrap(v, o.Bootstrap, o.Confidence, o.SubsetSeed)
	}
	var tr, va []float64
	for _, r := range rows {
		s.WallSeconds.Retraining += r.Seconds
		if r.Diverged {
			s.Retrained.Diverged++
			continue
		}
		tr, va = append(tr, r.TrainAcc), append(va, r.ValAcc)
	}
	s.Retrained.Count = len(rows)
	s.Retrained.TrainAcc, s.Retrained.ValAcc = spreadOf(tr), spreadOf(va)
	if m, err := metricsLast(j.Run.Dir); err == nil {
		s.Retrained.RunTrainAcc, s.Retrained.RunValAcc = m[0], m[1]
	}
	if o.Seeds >= 2 {
		s.Noise = noise(j, rows)
	}
	s.Files = []string{SummaryFile, CSVFile, SubsetsFile, SubsetsCSV, RetrainCSV, TargetsFile(LogProb), TargetsFile(Margin),
		FigureBase + ".png", FigureBase + ".svg", ScatterBase + ".png", ScatterBase + ".svg", ProgressFile}
	for _, a := range attrs {
		s.Files = append(s.Files, AttributionFile(a.Method, a.Target))
	}
	s.Definition = "for each of the subsets S_j (subset_size of the train_size training samples, distinct, seeded) and seed k: the run's model trained afresh on S_j " +
		"(initialization and batch order of the run's seed + k, the run's optimizer, learning rate per step and number of steps); " +
		"the actual output of test sample x is the mean over seeds of log p_y(x) (logprob) or log p_y(x) − log p_c*(x) (margin; c* the run's final runner-up class); " +
		"LDS(x) = Spearman over j of Σ_{i∈S_j} a[x, i] and the actual output; methods: mean LDS over test samples with a percentile bootstrap interval over them"
	return s
}

// metricsLast returns the run's last training and validation accuracy.
func metricsLast(dir string) ([2]float64, error) {
	ms, err := train.ReadMetrics(dir)
	if err != nil || len(ms) == 0 {
		return [2]float64{}, fmt.Errorf("no metrics")
	}
	m := ms[len(ms)-1]
	return [2]float64{m.TrainAcc, m.ValAcc}, nil
}

// noise returns the spread over seeds per target.
func noise(j *Job, rows []Row) map[string]Noise {
	K, M, X := j.Opt.Seeds, len(j.Subsets), len(j.Tests.Labels)
	out := map[string]Noise{}
	actual := j.Actual(rows)
	for _, target := range Targets() {
		v := func(r Row) []float64 {
			if target == Margin {
				return r.Margin
			}
			return r.LogProb
		}
		var n Noise
		var seedSD []float64
		for m := range M {
			group := rows[m*K : (m+1)*K]
			for x := range X {
				var vals []float64
				for _, r := range group {
					if !r.Diverged {
						vals = append(vals, v(r)[x])
					}
				}
				if len(vals) >= 2 {
					seedSD = append(seedSD, sd(vals))
				}
			}
		}
		n.SeedSD = Num(mean(seedSD))
		var subSD, seedLDS, ceiling []float64
		for x := range X {
			var col, s0, s1 []float64
			for m := range M {
				if a := actual[target][m][x]; finite(a) {
					col = append(col, a)
				}
				r0, r1 := rows[m*K], rows[m*K+1]
				if !r0.Diverged && !r1.Diverged {
					s0, s1 = append(s0, v(r0)[x]), append(s1, v(r1)[x])
				}
			}
			subSD = append(subSD, sd(col))
			if c := Spearman(s0, s1); finite(c) {
				seedLDS = append(seedLDS, c)
				ceiling = append(ceiling, NoiseCeiling(c, K))
			}
		}
		n.SubsetSD, n.SeedLDS, n.Ceiling = Num(mean(subSD)), Num(mean(seedLDS)), Num(mean(ceiling))
		out[target] = n
	}
	return out
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	var m float64
	for _, e := range v {
		m += e
	}
	return m / float64(len(v))
}

// sd returns the sample standard deviation (n − 1), NaN for fewer than 2.
func sd(v []float64) float64 {
	if len(v) < 2 {
		return math.NaN()
	}
	m := mean(v)
	var s float64
	for _, e := range v {
		s += (e - m) * (e - m)
	}
	return math.Sqrt(s / float64(len(v)-1))
}

// Num is a float64 that JSON holds as a number, or as null when it is not
// finite (NaN: too few values to say).
type Num float64

// MarshalJSON implements json.Marshaler.
func (n Num) MarshalJSON() ([]byte, error) {
	if !finite(float64(n)) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(n))
}

// UnmarshalJSON implements json.Unmarshaler: null reads as NaN.
func (n *Num) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*n = Num(math.NaN())
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*n = Num(f)
	return nil
}
