package testrun

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/npy"
)

// OpenEPK opens the finished EPK output dir and checks it: the manifest
// is complete and of this format, the job state is gone, and every array
// of the manifest is a .npy file of its name with the manifest's shape,
// as many axes as dimensions, and finite values. Failing to open it fails
// the test at once; the checks fail it without stopping it.
func OpenEPK(t testing.TB, dir string) *epkfile.Output {
	t.Helper()
	o, err := epkfile.Open(dir)
	if err != nil {
		t.Fatalf("epkfile.Open(%s): %v", dir, err)
	}
	if !o.Manifest.Complete || o.Manifest.Format != epkfile.Format {
		t.Errorf("manifest: complete %v, format %d", o.Manifest.Complete, o.Manifest.Format)
	}
	if _, err := os.Stat(filepath.Join(dir, ".epk-state.gob")); err == nil {
		t.Error("a finished output still holds the job state .epk-state.gob")
	}
	for name, info := range o.Manifest.Arrays {
		if info.File != epkfile.FileName(name) {
			t.Errorf("array %s is stored in %q, want %q", name, info.File, epkfile.FileName(name))
		}
		if len(info.Axes) != len(info.Shape) {
			t.Errorf("array %s: %d axes %v for shape %v", name, len(info.Axes), info.Axes, info.Shape)
		}
		path := filepath.Join(dir, info.File)
		if info.Dtype == "int64" {
			v, shape, err := npy.ReadInts(path)
			if err != nil {
				t.Errorf("array %s: %v", name, err)
				continue
			}
			if !slices.Equal(shape, info.Shape) || len(v) != prod(shape) {
				t.Errorf("array %s: file shape %v (%d values), manifest %v", name, shape, len(v), info.Shape)
			}
			continue
		}
		a, err := npy.Read(path)
		if err != nil {
			t.Errorf("array %s: %v", name, err)
			continue
		}
		if !slices.Equal(a.Shape, info.Shape) || len(a.Data) != prod(info.Shape) {
			t.Errorf("array %s: file shape %v (%d values), manifest %v", name, a.Shape, len(a.Data), info.Shape)
		}
		for i, v := range a.Data {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Errorf("array %s[%d] = %v", name, i, v)
				break
			}
		}
	}
	return o
}

func prod(shape []int) int {
	n := 1
	for _, s := range shape {
		n *= s
	}
	return n
}

// EPKSummary reads the summary.json of the EPK output dir as generic JSON
// and checks that it holds every statistic as a non-negative number, a
// wall time above 0 and the process's peak memory (at least 1 MiB).
func EPKSummary(t testing.TB, dir string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"argmax_agreement", "accuracy", "mean_abs_delta", "max_abs_delta", "std_delta", "kl_div",
		"max_completeness_residual", "wall_seconds", "peak_rss_bytes"} {
		v, ok := s[k].(float64)
		if !ok {
			t.Errorf("summary.json: %s is %v, want a number", k, s[k])
			continue
		}
		if math.IsNaN(v) || v < 0 {
			t.Errorf("summary.json: %s = %v, want a non-negative number", k, v)
		}
	}
	if s["wall_seconds"] == 0.0 {
		t.Error("summary.json: wall_seconds is 0")
	}
	if rss, _ := s["peak_rss_bytes"].(float64); rss < 1<<20 {
		t.Errorf("summary.json: peak_rss_bytes %v, want the process's peak (≥ 1 MiB)", s["peak_rss_bytes"])
	}
	return s
}
