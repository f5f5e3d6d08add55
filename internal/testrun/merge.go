package testrun

import (
	"encoding/json"
	"math"
	"reflect"
	"slices"
	"testing"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/gemm"
	"github.com/explaind/explaind/tensor"
)

// MergeBound is the bound SameMerged holds a merge's arrays to, as
// max |merged − unsharded| ≤ MergeBound · max(1, max |unsharded|): the
// arrays summed over test samples are float64 sums that differ in the
// order of their additions (float32 ones round once, from float64 partial
// sums); with OpenBLAS (see Bitwise) the arrays per test sample differ in
// their last bits, and so does step_max_completeness, their maximum. A
// float32 run's data kernel multiplies in float32, so that the shards'
// partial kernels carry float32 rounding before the merge adds them: it is
// held to Float32KernelBound relative to its largest magnitude, and the
// summary's kernel_residual to Float32KernelBound.
const (
	MergeBound         = 1e-12
	Float32KernelBound = 1e-6
)

// Bitwise reports whether the arrays per test sample of a merge are to
// equal the unsharded job's bit for bit: with a matrix-product backend
// whose rows of a product do not depend on the number of rows (gonum).
// OpenBLAS picks its kernels by the size of a product, so that a test
// sample evaluated in a shard's smaller batch may differ in its last bits;
// those arrays are then held to MergeBound (float64) or 2⁻²³ (float32),
// as max |merged − unsharded| ≤ bound · max(1, max |unsharded|).
var Bitwise = gemm.Default().Name() != "openblas"

// SameMerged compares the merged output got of an EPK job's shards with
// the unsharded job's output want: the same manifest but for its creation
// time, arrays per test sample bit for bit (or, see Bitwise, within
// MergeBound), arrays summed over test samples within MergeBound (the
// kernel within kernelBound, relative to its largest magnitude), and the
// same summary statistics within MergeBound but for the wall time and the
// peak memory. It returns the largest differences of the arrays without a
// test axis (but the kernel) and of those per sample, relative to their
// largest magnitudes.
func SameMerged(t testing.TB, want, got string, kernelBound float64) (worst, perSample float64) {
	t.Helper()
	a, b := OpenEPK(t, want), OpenEPK(t, got)
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
		x, y := arrayOf(t, a, name), arrayOf(t, b, name)
		if len(x) != len(y) {
			t.Errorf("%s: merged %d values, unsharded %d", name, len(y), len(x))
			continue
		}
		d, n := tensor.MaxAbsDiff(y, x)
		rel := d / math.Max(n, 1e-300)
		if slices.Contains(info.Axes, "test") {
			if Bitwise {
				for i := range x {
					if math.Float64bits(x[i]) != math.Float64bits(y[i]) {
						t.Errorf("%s[%d]: merged %v, unsharded %v: per-sample arrays differ", name, i, y[i], x[i])
						break
					}
				}
				continue
			}
			bound := MergeBound
			if info.Dtype == "float32" {
				bound = 0x1p-23
			}
			if !(d <= bound*math.Max(1, n)) {
				t.Errorf("%s: merged differs from unsharded by %.3g relative (max |.| %.3g), bound %g", name, rel, n, bound)
			}
			perSample = math.Max(perSample, rel)
			continue
		}
		if name == "kernel" {
			if !(rel <= kernelBound) {
				t.Errorf("kernel: merged differs from unsharded by %.3g relative (max |.| %.3g), bound %g", rel, n, kernelBound)
			}
		} else {
			worst = math.Max(worst, rel)
			if !(d <= MergeBound*math.Max(1, n)) {
				t.Errorf("%s: merged differs from unsharded by %.3g relative (max |.| %.3g), bound %g", name, rel, n, MergeBound)
			}
		}
		if rel > 0 {
			t.Logf("%s (%s, no test axis): max relative difference %.3g", name, info.Dtype, rel)
		}
	}
	sa, sb := EPKSummary(t, want), EPKSummary(t, got)
	for k, va := range sa {
		switch k {
		case "wall_seconds", "peak_rss_bytes":
			continue
		}
		vb := sb[k]
		if x, ok := va.(float64); ok {
			y, _ := vb.(float64)
			bound := MergeBound * math.Max(1, math.Abs(x))
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

func arrayOf(t testing.TB, o *epkfile.Output, name string) []float64 {
	t.Helper()
	a, err := o.Array(name)
	if err != nil {
		t.Fatal(err)
	}
	return a.Data
}
