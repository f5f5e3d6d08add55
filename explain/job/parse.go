package job

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/setting"
)

// ParseQuadrature parses "adaptive", "exact:K", "midpoint:K" or "gauss:K".
// Adaptive is one rule, certified to tol per step and per (test sample,
// class) (see epk.Quadrature.Tol), that starts from the located switching
// points for models that expose their ReLU switches (epk.Exact, 2
// Gauss–Legendre points per piece) and from one interval per sample otherwise
// (epk.Adaptive with Simpson's rule on each interval, whose nodes
// bisection keeps, for CNNs, where bisection needs fewer nodes than their
// many switches: see package epk).
func ParseQuadrature(s string, tol float64, switches bool) (epk.Quadrature, error) {
	name, arg, _ := strings.Cut(s, ":")
	k := 0
	if arg != "" {
		v, err := strconv.Atoi(arg)
		if err != nil || v <= 0 {
			return epk.Quadrature{}, setting.Invalid("Quadrature", strconv.Quote(s), "the number of points must be a positive integer")
		}
		k = v
	}
	switch name {
	case "", "adaptive":
		if arg != "" {
			return epk.Quadrature{}, setting.Invalid("Quadrature", strconv.Quote(s), "adaptive takes no point count")
		}
		if switches {
			return epk.Quadrature{Rule: epk.Exact, Points: 2, Grid: 4, Tol: tol}, nil
		}
		return epk.Quadrature{Rule: epk.Adaptive, Points: 3, Ends: true, Tol: tol}, nil
	case "exact":
		if !switches {
			return epk.Quadrature{}, setting.Errorf("%v exact needs a model that exposes its ReLU switches "+
				"(the modulo transformer); use adaptive", setting.Name("Quadrature"))
		}
		return epk.Quadrature{Rule: epk.Exact, Points: k, Tol: tol}, nil
	case "midpoint":
		return epk.Quadrature{Rule: epk.Midpoint, Points: k}, nil
	case "gauss":
		return epk.Quadrature{Rule: epk.GaussLegendre, Points: k}, nil
	}
	return epk.Quadrature{}, setting.Invalid("Quadrature", strconv.Quote(s), "want adaptive, exact:K, midpoint:K or gauss:K")
}

// ParseBytes parses a size such as 512MiB, 8GiB, 2GB or 1000000: a
// number ≥ 0 of bytes, below 2⁶³ once multiplied by its unit.
func ParseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return 0, nil
	}
	units := []struct {
		suffix string
		mul    float64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
	}
	mul := 1.0
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mul = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mul
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	// !(v*mul < 2⁶³) rejects NaN and sizes beyond int64 as well, which the
	// conversion would turn into a negative limit.
	if err != nil || v < 0 || !(v*mul < math.MaxInt64) {
		return 0, fmt.Errorf("invalid size %q (for example 512MiB or 8GiB)", s)
	}
	return int64(v * mul), nil
}

// ParseSteps parses FROM:TO (either side may be empty) into Options.From
// and To; its errors name the setting "From:To".
func ParseSteps(s string) (from, to int, err error) {
	if s == "" {
		return 0, 0, nil
	}
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, setting.Invalid("From:To", strconv.Quote(s), "want FROM:TO, for example 0:20")
	}
	if a != "" {
		if from, err = strconv.Atoi(a); err != nil {
			return 0, 0, setting.Invalid("From:To", strconv.Quote(s), "want FROM:TO, for example 0:20")
		}
	}
	if b != "" {
		if to, err = strconv.Atoi(b); err != nil {
			return 0, 0, setting.Invalid("From:To", strconv.Quote(s), "want FROM:TO, for example 0:20")
		}
	}
	return from, to, nil
}
