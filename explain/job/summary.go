package job

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/explaind/explaind/explain"
	"github.com/explaind/explaind/internal/localpath"
)

// summarize computes the validation statistics of the reference's script:
// the EPK prediction against the model.
func summarize(v explain.Validation, labels []int, X, C int) *Summary {
	s := &Summary{}
	var sum, sum2, agree, acc, macc, kl float64
	n := float64(X * C)
	for x := 0; x < X; x++ {
		e := make([]float64, C)
		mrow := v.Model[x*C : (x+1)*C]
		for c := 0; c < C; c++ {
			i := x*C + c
			e[c] = v.Start[i] + v.Data[i] + v.Reg[i] + v.Resid[i]
			d := e[c] - mrow[c]
			sum += math.Abs(d)
			sum2 += d * d
			s.MaxAbsDelta = math.Max(s.MaxAbsDelta, math.Abs(d))
			id := e[c] - v.Quad[i] - mrow[c]
			s.IdentityResidual = math.Max(s.IdentityResidual, math.Abs(id))
		}
		ae, am := argmax(e), argmax(mrow)
		if ae == am {
			agree++
		}
		if ae == labels[x] {
			acc++
		}
		if am == labels[x] {
			macc++
		}
		// KL(model ‖ softmax(epk)), both renormalized (float32 outputs
		// are normalized only to rounding).
		// A sample's KL is ≥ 0; rounding can leave it a hair below.
		lse, lsm := logSumExp(e), logSumExp(mrow)
		var kx float64
		for c := 0; c < C; c++ {
			lm := mrow[c] - lsm
			if p := math.Exp(lm); p > 0 {
				kx += p * (lm - (e[c] - lse))
			}
		}
		kl += math.Max(kx, 0)
	}
	s.ArgmaxAgreement, s.Accuracy, s.ModelAccuracy, s.KLDiv = agree/float64(X), acc/float64(X), macc/float64(X), kl/float64(X)
	s.MeanAbsDelta = sum / n
	mean := 0.0
	for i := range v.Model {
		mean += v.Start[i] + v.Data[i] + v.Reg[i] + v.Resid[i] - v.Model[i]
	}
	mean /= n
	s.StdDelta = math.Sqrt(math.Max(0, sum2/n-mean*mean))
	for _, c := range v.StepMaxCompleteness {
		s.MaxCompletenessResidual = math.Max(s.MaxCompletenessResidual, c)
	}
	s.MaxUpdateResidual = v.MaxResid
	return s
}

// listMisses returns the misses as the summary lists them: test samples
// by their split index idx, the largest residuals (NaN first) first, at
// most MaxListedMisses.
func listMisses(ms []explain.Miss, idx []int) []MissedStep {
	out := make([]MissedStep, 0, len(ms))
	for _, m := range ms {
		e := MissedStep{Step: m.Step, TestIndex: idx[m.Sample], Residual: m.Residual}
		if math.IsNaN(m.Residual) {
			e.Residual, e.NaN = 0, true
		}
		out = append(out, e)
	}
	slices.SortStableFunc(out, func(a, b MissedStep) int {
		switch {
		case a.NaN != b.NaN:
			if a.NaN {
				return -1
			}
			return 1
		case a.Residual > b.Residual:
			return -1
		case a.Residual < b.Residual:
			return 1
		}
		return 0
	})
	if len(out) > MaxListedMisses {
		out = out[:MaxListedMisses]
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func argmax(v []float64) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

func logSumExp(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = math.Max(m, x)
	}
	var s float64
	for _, x := range v {
		s += math.Exp(x - m)
	}
	return m + math.Log(s)
}

// PeakRSS returns the process's peak resident memory (VmHWM) in bytes, or 0
// where /proc is unavailable.
func PeakRSS() int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// ReadSummary reads DIR/summary.json, the summary of a finished job.
func ReadSummary(dir string) (*Summary, error) {
	raw, err := localpath.ReadFile(dir, "summary.json")
	if err != nil {
		return nil, err
	}
	var s Summary
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("%s: %v", filepath.Join(dir, "summary.json"), err)
	}
	return &s, nil
}
