package explain_test

import (
	"context"
	"math"
	"testing"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/explain"
	"github.com/explaind/explaind/explain/job"
	"github.com/explaind/explaind/internal/testrun"
	"github.com/explaind/explaind/tensor"
)

// kernelQueries are the data kernel's queries: summed, per class, per test
// sample and class, per tensor and per group of tensors.
var kernelQueries = []explain.Query{
	{Name: "kernel-sum", Keep: explain.Train, Part: explain.Data},
	{Name: "kernel-class", Keep: explain.Train | explain.Class, Part: explain.Data},
	{Name: "kernel-full", Keep: explain.Train | explain.Test | explain.Class, Part: explain.Data},
	{Name: "kernel-tensor-true", Keep: explain.Train | explain.Test | explain.Tensor, Classes: explain.TrueClass, Part: explain.Data},
	{Name: "kernel-group", Keep: explain.Train | explain.Group, Part: explain.Data},
}

// runKernel evaluates kernelQueries on the run in dir, in the run's
// precision T and the evaluation precision E, with the data kernel's fast
// paths or without, chunk training samples at a time and the given
// workers (1, or more to have the training chunks formed side by side).
func runKernel[T, E tensor.Float](t *testing.T, dir string, fast bool, chunk, workers int) *explain.Output {
	t.Helper()
	defer explain.SetKernelPath(fast, chunk)()
	tr, err := job.OpenRun[T, E](dir)
	if err != nil {
		t.Fatal(err)
	}
	groups := []explain.TensorGroup{{Name: "mlp", Tensors: []string{"linear1.weight", "linear1.bias", "linear2.weight"}},
		{Name: "out", Tensors: []string{"decoder.weight", "linear2.weight"}}}
	spec := explain.Spec[E]{Queries: kernelQueries, Test: explain.TestSet[E]{X: tr.Data.Val.Inputs, Labels: tr.Data.Val.Labels},
		Quadrature: epk.Quadrature{Rule: epk.Exact, Points: 3}, Groups: groups, Chunk: 3, Workers: workers, NewModel: tr.NewModel}
	factored, runChunks, helped := explain.FactoredProducts(), explain.RunFeatureChunks(), explain.HelperChunks()
	out, err := explain.Run(context.Background(), tr.Source, tr.Model, tr.Path, spec)
	if err != nil {
		t.Fatal(err)
	}
	if n := explain.FactoredProducts() - factored; fast != (n > 0) {
		t.Fatalf("fast paths %v: %d factored products formed", fast, n)
	}
	if n := explain.HelperChunks() - helped; (workers > 1 && chunk < tr.Source.TrainSize) != (n > 0) {
		t.Fatalf("%d workers, %d of %d training samples per chunk: %d chunks formed by a second worker", workers, chunk, tr.Source.TrainSize, n)
	}
	_, t32 := any(T(0)).(float32)
	_, e64 := any(E(0)).(float64)
	if n := explain.RunFeatureChunks() - runChunks; (fast && t32 && e64) != (n > 0) {
		t.Fatalf("fast paths %v, %T run evaluated in %T: %d chunks of features in the run's precision", fast, T(0), E(0), n)
	}
	return out
}

// TestKernelFastPathsEqualPerRow checks that the sweeps' kernel formed
// with the linear weights' gradients in factored form (and, for a float32
// run evaluated in float64, with the features in float32) equals, to
// rounding, the one formed from every training sample's per-row gradient
// and float64 features, for runs in float64 and float32 evaluated in
// float64 and float32, with training samples in several chunks (the last
// one partial) and in one.
func TestKernelFastPathsEqualPerRow(t *testing.T) {
	c := testrun.Modulo(4, 2)
	c.Optimizer.LR, c.Optimizer.WeightDecay = 1e-2, 1
	run64, run32 := testrun.Train[float64](t, c), testrun.Train[float32](t, c)
	cases := []struct {
		name string
		run  func(factored bool, chunk, workers int) *explain.Output
		tol  float64
	}{
		{"float64", func(f bool, ch, w int) *explain.Output { return runKernel[float64, float64](t, run64, f, ch, w) }, 1e-12},
		{"float32 run, float64 evaluation", func(f bool, ch, w int) *explain.Output { return runKernel[float32, float64](t, run32, f, ch, w) }, 1e-5},
		{"float32", func(f bool, ch, w int) *explain.Output { return runKernel[float32, float32](t, run32, f, ch, w) }, 1e-5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.run(false, 256, 1)
			for _, c := range []struct{ chunk, workers int }{{7, 1}, {7, 3}, {256, 1}} {
				chunk := c.chunk
				got := tc.run(true, chunk, c.workers)
				for i, r := range got.Results {
					w := want.Results[i].Data
					if len(r.Data) != len(w) || len(w) == 0 {
						t.Fatalf("%s: %d values, per-row %d", r.Query.Name, len(r.Data), len(w))
					}
					e := tensor.RelErr(r.Data, w)
					t.Logf("chunk %3d, %d workers, %-18s: relative difference %.2g from the plain path", chunk, c.workers, r.Query.Name, e)
					if !(e <= tc.tol) {
						t.Errorf("chunk %d, %d workers, %s: relative difference %.3g from the plain path, want ≤ %g", chunk, c.workers, r.Query.Name, e, tc.tol)
					}
				}
				if !(got.KernelResidual <= math.Max(10*want.KernelResidual, 1e-10)) {
					t.Errorf("chunk %d: kernel residual %.3g, per-row %.3g", chunk, got.KernelResidual, want.KernelResidual)
				}
			}
		})
	}
}
