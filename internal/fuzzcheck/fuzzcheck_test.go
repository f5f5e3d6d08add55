package fuzzcheck

import (
	"errors"
	"testing"
)

// recorder is a testing.TB that records failures instead of failing.
type recorder struct {
	testing.TB
	failed bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Errorf(string, ...any) { r.failed = true }

var sink []byte

func TestBounded(t *testing.T) {
	r := &recorder{TB: t}
	Bounded(r, 1000, 8, func() { sink = make([]byte, 100) })
	if r.failed {
		t.Error("a small allocation was reported")
	}
	Bounded(r, 1000, 8, func() { sink = make([]byte, Slack+8*1000+1) })
	if !r.failed {
		t.Error("an allocation beyond perByte·n + Slack was not reported")
	}
}

func TestNamesFile(t *testing.T) {
	r := &recorder{TB: t}
	NamesFile(r, nil, "a.npy")
	NamesFile(r, errors.New("a.npy: truncated"), "a.npy")
	if r.failed {
		t.Error("an error naming the file, or no error, was reported")
	}
	NamesFile(r, errors.New("truncated"), "a.npy")
	if !r.failed {
		t.Error("an error without the file name was not reported")
	}
}

func TestNumel(t *testing.T) {
	for _, c := range []struct {
		shape []int
		n     int
		ok    bool
	}{
		{nil, 1, true},
		{[]int{2, 3}, 6, true},
		{[]int{0, 1 << 62}, 0, true},
		{[]int{2, -1}, 0, false},
		{[]int{1 << 32, 1 << 32, 4}, 0, false},
	} {
		if n, ok := Numel(c.shape); n != c.n || ok != c.ok {
			t.Errorf("Numel(%v) = %d, %v; want %d, %v", c.shape, n, ok, c.n, c.ok)
		}
	}
}
