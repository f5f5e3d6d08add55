package job_test

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/explain/job"
)

// FuzzParseSteps parses arbitrary --steps values. No input may panic; a
// value that parses is FROM:TO whose sides are integers (or empty, read as
// 0), so writing the result back parses to the same range; a value that
// does not parse returns 0, 0. The seeds in testdata/fuzz/FuzzParseSteps
// are the documented forms and malformed ones.
func FuzzParseSteps(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		from, to, err := job.ParseSteps(s)
		if err != nil {
			if from != 0 || to != 0 {
				t.Errorf("ParseSteps(%q) = %d, %d with the error %v", s, from, to, err)
			}
			return
		}
		if s != "" && !strings.Contains(s, ":") {
			t.Errorf("ParseSteps(%q) = %d, %d: no colon, yet no error", s, from, to)
		}
		again := fmt.Sprintf("%d:%d", from, to)
		if f2, t2, err := job.ParseSteps(again); err != nil || f2 != from || t2 != to {
			t.Errorf("ParseSteps(%q) = %d, %d, but ParseSteps(%q) = %d, %d, %v", s, from, to, again, f2, t2, err)
		}
	})
}

// FuzzParseBytes parses arbitrary --memory values. No input may panic; a
// size that parses is ≥ 0 (a negative, NaN or overflowing size is an
// error, not a negative or wrapped-around limit), and a plain count of
// bytes or of KiB reads as that many. The seeds in
// testdata/fuzz/FuzzParseBytes are sizes with every unit and malformed
// ones.
func FuzzParseBytes(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		n, err := job.ParseBytes(s)
		if err != nil {
			if n != 0 {
				t.Errorf("ParseBytes(%q) = %d with the error %v", s, n, err)
			}
			return
		}
		if n < 0 {
			t.Errorf("ParseBytes(%q) = %d, a negative size", s, n)
		}
		digits := strings.TrimSpace(s)
		if v, err := strconv.ParseInt(digits, 10, 64); err == nil && v < 1<<53 && n != v {
			t.Errorf("ParseBytes(%q) = %d, want %d", s, n, v)
		}
		if v, err := strconv.ParseInt(strings.TrimSuffix(digits, "KiB"), 10, 64); err == nil && strings.HasSuffix(digits, "KiB") &&
			v < 1<<43 && n != v<<10 {
			t.Errorf("ParseBytes(%q) = %d, want %d", s, n, v<<10)
		}
	})
}

// FuzzParseQuadrature parses arbitrary --quadrature values, for models
// with and without ReLU switches. No input may panic; a rule that parses
// is one of epk's, with a point count that is 0 (epk's default) or the
// positive count written, and without switches it is never Exact. The
// seeds in testdata/fuzz/FuzzParseQuadrature are the documented forms and
// malformed ones.
func FuzzParseQuadrature(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		for _, switches := range []bool{false, true} {
			q, err := job.ParseQuadrature(s, 1e-6, switches)
			if err != nil {
				if q != (epk.Quadrature{}) {
					t.Errorf("ParseQuadrature(%q, %v) = %+v with the error %v", s, switches, q, err)
				}
				continue
			}
			switch q.Rule {
			case epk.Midpoint, epk.GaussLegendre, epk.Adaptive, epk.Exact:
			default:
				t.Errorf("ParseQuadrature(%q, %v): rule %d", s, switches, q.Rule)
			}
			if q.Rule == epk.Exact && !switches {
				t.Errorf("ParseQuadrature(%q, false): the Exact rule for a model without switches", s)
			}
			if _, arg, ok := strings.Cut(s, ":"); ok && arg != "" {
				if k, err := strconv.Atoi(arg); err != nil || k != q.Points || k <= 0 {
					t.Errorf("ParseQuadrature(%q, %v) = %d points", s, switches, q.Points)
				}
			} else if q.Points < 0 || q.Tol < 0 || math.IsNaN(q.Tol) {
				t.Errorf("ParseQuadrature(%q, %v) = %+v", s, switches, q)
			}
		}
	})
}
