// Package fuzzcheck holds what explaind's fuzz targets check of its parsers
// beyond "does not panic": that an error names the file it is about, and
// that parsing allocates in proportion to the input rather than to what the
// input's header claims.
package fuzzcheck

import (
	"math"
	"os"
	"runtime"
	"strings"
	"testing"
)

// WriteFile writes data to path for a parser that takes a file name,
// failing t if it cannot.
func WriteFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// NamesFile fails t if err is not nil and does not mention path.
func NamesFile(t testing.TB, err error, path string) {
	t.Helper()
	if err != nil && !strings.Contains(err.Error(), path) {
		t.Errorf("the error does not name the file %s: %v", path, err)
	}
}

// Numel returns the number of values shape declares, and false if a
// dimension is negative or the product overflows an int: a parser that
// returns such a shape has not checked it.
func Numel(shape []int) (int, bool) {
	n := 1
	for _, d := range shape {
		if d < 0 || (d > 0 && n > math.MaxInt/d) {
			return 0, false
		}
		n *= d
	}
	return n, true
}

// Slack is what a parse may allocate whatever its input's size: buffers,
// error strings, the runtime's own bookkeeping.
const Slack = 4 << 20

// Bounded runs parse and fails t if it allocated more than
// perByte·n + Slack bytes for an input of n bytes: a parser must check the
// sizes a header claims against the input it has before allocating for
// them.
func Bounded(t testing.TB, n, perByte int, parse func()) {
	t.Helper()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	parse()
	runtime.ReadMemStats(&after)
	if got, limit := after.TotalAlloc-before.TotalAlloc, uint64(perByte)*uint64(n)+Slack; got > limit {
		t.Errorf("parsing %d bytes allocated %d bytes, more than %d·%d + %d", n, got, perByte, n, Slack)
	}
}
