package shard

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Shard
		err  string
	}{
		{"", Shard{}, ""},
		{"0/1", Shard{0, 1}, ""},
		{"3/4", Shard{3, 4}, ""},
		{"4/4", Shard{}, "the index must be 0 … 3"},
		{"0/0", Shard{}, "the count must be 1"},
		{"a/b", Shard{}, "whole numbers"},
		{"-1/4", Shard{}, "the index must be"},
		{"1", Shard{}, "want I/N"},
		{"1/2/3", Shard{}, "whole numbers"},
		{"0/2000000", Shard{}, "the count must be"},
	} {
		got, err := Parse(c.in)
		if c.err == "" {
			if err != nil || got != c.want {
				t.Errorf("Parse(%q) = %v, %v; want %v", c.in, got, err, c.want)
			}
			if got.String() != c.in {
				t.Errorf("Parse(%q).String() = %q", c.in, got.String())
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("Parse(%q) = %v, %v; want an error mentioning %q", c.in, got, err, c.err)
		}
	}
}

// TestRangeCoversEveryItemOnce checks that the shards of every count tile
// the items in order, with sizes differing by at most one.
func TestRangeCoversEveryItemOnce(t *testing.T) {
	for n := 1; n <= 40; n++ {
		for count := 1; count <= n; count++ {
			next, min, max := 0, n, 0
			for i := 0; i < count; i++ {
				lo, hi, err := Shard{i, count}.Range(n)
				if err != nil {
					t.Fatal(err)
				}
				if lo != next || hi <= lo {
					t.Fatalf("shard %d/%d of %d: [%d, %d), want it to start at %d and be non-empty", i, count, n, lo, hi, next)
				}
				next = hi
				min, max = minInt(min, hi-lo), maxInt(max, hi-lo)
			}
			if next != n || max-min > 1 {
				t.Fatalf("%d shards of %d: end at %d, sizes %d … %d", count, n, next, min, max)
			}
		}
		if _, _, err := (Shard{0, n + 1}).Range(n); err == nil {
			t.Errorf("%d shards of %d items: no error", n+1, n)
		}
	}
	if lo, hi, err := (Shard{}).Range(7); lo != 0 || hi != 7 || err != nil {
		t.Errorf("zero shard: [%d, %d), %v", lo, hi, err)
	}
}

func TestEnv(t *testing.T) {
	t.Setenv("SLURM_ARRAY_TASK_ID", "")
	t.Setenv("JOB_COMPLETION_INDEX", "")
	if s := Env(); s != "" {
		t.Errorf("no array: %q", s)
	}
	t.Setenv("SLURM_ARRAY_TASK_ID", "2")
	t.Setenv("SLURM_ARRAY_TASK_COUNT", "8")
	if s := Env(); !strings.Contains(s, "task 2 of a Slurm job array of 8") || !strings.Contains(s, "--array=0-7") {
		t.Errorf("Slurm: %q", s)
	}
	t.Setenv("SLURM_ARRAY_TASK_ID", "")
	t.Setenv("JOB_COMPLETION_INDEX", "3")
	if s := Env(); !strings.Contains(s, "index 3 of a Kubernetes Indexed Job") {
		t.Errorf("Kubernetes: %q", s)
	}
}

// FuzzParse parses arbitrary shard values: no panic, a parsed shard is
// valid and prints back to itself, and its range of any item count is
// inside the items.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "0/1", "3/4", "4/4", "0/0", "a/b", "-1/4", "1/2/3", "99999999999999999999/1"} {
		f.Add(s, 10)
	}
	f.Fuzz(func(t *testing.T, s string, n int) {
		sh, err := Parse(s)
		if err != nil {
			if !sh.IsZero() {
				t.Errorf("Parse(%q) = %v with the error %v", s, sh, err)
			}
			return
		}
		if err := sh.Check(); err != nil {
			t.Errorf("Parse(%q) = %v, invalid: %v", s, sh, err)
		}
		if again, err := Parse(sh.String()); err != nil || again != sh {
			t.Errorf("Parse(%q) = %v but Parse(%q) = %v, %v", s, sh, sh.String(), again, err)
		}
		if n < 0 || n > 1<<30 {
			return
		}
		lo, hi, err := sh.Range(n)
		if err == nil && (lo < 0 || hi > n || lo > hi) {
			t.Errorf("%v.Range(%d) = [%d, %d)", sh, n, lo, hi)
		}
	})
}

func minInt(a, b int) int {
	if a < b {
		return a
	}
	return b
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}
