package job_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/explain/job"
	"github.com/explaind/explaind/gemm"
	"github.com/explaind/explaind/internal/testrun"
	"github.com/explaind/explaind/shard"
	"github.com/explaind/explaind/tensor"
)

// mergePresets are the presets the sharding tests compute.
var mergePresets = []string{epkfile.Validation, epkfile.Grokking, epkfile.Components, epkfile.Kernel, epkfile.Pruning}

// runShards runs the n shards of the job o into root/shard-i and returns
// their directories.
func runShards(t *testing.T, o job.Options, root string, n int) []string {
	t.Helper()
	var dirs []string
	for i := range n {
		so := o
		so.Shard = shard.Shard{Index: i, Count: n}
		so.Out = filepath.Join(root, fmt.Sprintf("shard-%d", i))
		s, err := job.Run(context.Background(), so)
		if err != nil {
			t.Fatalf("shard %d/%d: %v", i, n, err)
		}
		if s.Shard != so.Shard.String() {
			t.Errorf("shard %d/%d: summary's shard %q", i, n, s.Shard)
		}
		dirs = append(dirs, so.Out)
	}
	return dirs
}

// summedBound is the bound this file holds the arrays summed over test
// samples of a merge to, relative to the largest magnitude of the array:
// float64 sums that differ in the order of their additions. A float32 run's
// data kernel multiplies in float32, so that its shards' partial kernels
// are rounded to float32 before the merge adds them: it is held to
// float32KernelBound.
const (
	summedBound        = 1e-12
	float32KernelBound = 1e-6
)

// bitwise reports whether the arrays per test sample of a merge are to
// equal the unsharded job's bit for bit: with a matrix-product backend
// whose rows of a product do not depend on the number of rows (gonum).
// OpenBLAS picks its kernels by the size of a product, so that a test
// sample evaluated in a shard's smaller batch may differ in its last bits;
// those arrays are then held to summedBound (float64) or 2⁻²³ (float32),
// relative to their largest magnitude.
var bitwise = gemm.Default().Name() != "openblas"

// compareMerged compares the merged output got with the unsharded job's
// output want: the same manifest but for its creation time, arrays per test
// sample bit for bit, arrays summed over test samples within bound
// (relative to their largest magnitude; the kernel within kernelBound), and
// the same summary statistics within bound. It returns the largest
// relative differences of the summed arrays and of the arrays per sample.
func compareMerged(t *testing.T, want, got string, kernelBound float64) (worst, perSample float64) {
	t.Helper()
	a, b := testrun.OpenEPK(t, want), testrun.OpenEPK(t, got)
	ma, mb := a.Manifest, b.Manifest
	mb.Created = ma.Created
	if !reflect.DeepEqual(ma, mb) {
		ja, _ := json.MarshalIndent(ma, "", " ")
		jb, _ := json.MarshalIndent(mb, "", " ")
		t.Errorf("merged manifest differs from the unsharded one:\n%s\nwant\n%s", jb, ja)
	}
	for name, info := range ma.Arrays {
		if info.Dtype == "int64" {
			x, err1 := a.Ints(name)
			y, err2 := b.Ints(name)
			if err1 != nil || err2 != nil || !slices.Equal(x, y) {
				t.Errorf("%s: merged %v (%v), unsharded %v (%v)", name, y, err2, x, err1)
			}
			continue
		}
		x, y := array(t, a, name), array(t, b, name)
		if len(x) != len(y) {
			t.Errorf("%s: merged %d values, unsharded %d", name, len(y), len(x))
			continue
		}
		d, n := tensor.MaxAbsDiff(y, x)
		rel := d / math.Max(n, 1e-300)
		if slices.Contains(info.Axes, "test") {
			if bitwise {
				for i := range x {
					if math.Float64bits(x[i]) != math.Float64bits(y[i]) {
						t.Errorf("%s[%d]: merged %v, unsharded %v: per-sample arrays differ", name, i, y[i], x[i])
						break
					}
				}
				continue
			}
			bound := summedBound
			if info.Dtype == "float32" {
				bound = 0x1p-23
			}
			if !(rel <= bound) {
				t.Errorf("%s: merged differs from unsharded by %.3g relative (max |.| %.3g), bound %g", name, rel, n, bound)
			}
			perSample = math.Max(perSample, rel)
			continue
		}
		bound := summedBound
		if name == "kernel" {
			bound = kernelBound
		} else {
			worst = math.Max(worst, rel)
		}
		if !(rel <= bound) {
			t.Errorf("%s: merged differs from unsharded by %.3g relative (max |.| %.3g), bound %g", name, rel, n, bound)
		}
		if rel > 0 {
			t.Logf("%s (%s, summed over test samples): max relative difference %.3g", name, info.Dtype, rel)
		}
	}
	sa, sb := testrun.EPKSummary(t, want), testrun.EPKSummary(t, got)
	for k, va := range sa {
		switch k {
		case "wall_seconds", "peak_rss_bytes":
			continue
		}
		vb := sb[k]
		if x, ok := va.(float64); ok {
			y, _ := vb.(float64)
			bound := summedBound * math.Max(1, math.Abs(x))
			if k == "kernel_residual" {
				bound = kernelBound
			}
			if !(math.Abs(x-y) <= bound) {
				t.Errorf("summary %s: merged %v, unsharded %v", k, vb, va)
			}
			continue
		}
		if !reflect.DeepEqual(va, vb) {
			t.Errorf("summary %s: merged %v, unsharded %v", k, vb, va)
		}
	}
	if len(sa) != len(sb) {
		t.Errorf("summary keys: merged %d, unsharded %d", len(sb), len(sa))
	}
	t.Logf("kernel residual: merged %v, unsharded %v", sb["kernel_residual"], sa["kernel_residual"])
	return worst, perSample
}

// TestMergeEqualsWhole: a job split into 4 shards (8 test samples, two
// per shard) and merged equals the unsharded job; so does one split into
// 3 (blocks of 2, 3 and 3), merged in another order: for the float32 tiny
// run and for the same run trained in float64, whose data kernel is
// computed in float64 and so held to summedBound.
func TestMergeEqualsWhole(t *testing.T) {
	c := testrun.Modulo(tinyS, 4)
	c.Optimizer.LR = 0.01
	for _, r := range []struct {
		name        string
		run         string
		kernelBound float64
	}{
		{"float32", tinyRun(t), float32KernelBound},
		{"float64", testrun.Train[float64](t, c), summedBound},
	} {
		t.Run(r.name, func(t *testing.T) { testMergeEqualsWhole(t, r.run, r.kernelBound) })
	}
}

func testMergeEqualsWhole(t *testing.T, run string, kernelBound float64) {
	root := t.TempDir()
	o := job.Options{Run: run, Presets: mergePresets, Quadrature: "midpoint:3"}
	o.Out = filepath.Join(root, "whole")
	if _, err := job.Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{4, 3} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			dir := filepath.Join(root, fmt.Sprint(n))
			shards := runShards(t, o, dir, n)
			for _, s := range shards {
				testrun.OpenEPK(t, s)
			}
			slices.Reverse(shards)
			merged := filepath.Join(dir, "merged")
			var log bytes.Buffer
			s, err := job.Merge(merged, shards, &log)
			if err != nil {
				t.Fatal(err)
			}
			if s.TestSamples != tinyX || s.Shard != "" {
				t.Errorf("merged summary: %d test samples, shard %q", s.TestSamples, s.Shard)
			}
			worst, perSample := compareMerged(t, o.Out, merged, kernelBound)
			t.Logf("%d shards: largest relative difference of the summed arrays but the kernel %.3g, of the arrays per sample %.3g (bitwise: %v)",
				n, worst, perSample, bitwise)
		})
	}
}
