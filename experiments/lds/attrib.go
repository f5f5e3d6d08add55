package lds

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/explaind/explaind/data"
	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/explain"
	"github.com/explaind/explaind/explain/job"
	"github.com/explaind/explaind/gemm"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// Attribution is one method's attributions for one target: A[x·N + i]
// for test sample x and training sample i, X × N.
type Attribution struct {
	Method, Target string
	X, N           int
	A              []float64
}

// At returns a[x, i].
func (a *Attribution) At(x, i int) float64 { return a.A[x*a.N+i] }

// gradChunk is the number of training samples whose per-sample gradients
// are held at once.
const gradChunk = 128

// flatGrads returns the per-row gradients of Σ_rows ⟨dy_row, model(x)_row⟩,
// one row of P values (the parameters in order) per sample of x, and the
// model's outputs (log-probabilities [B, C]).
func flatGrads(model nn.Layer[float32], params []*nn.Param[float32], x, dy *tensor.Dense[float32]) ([]float32, int, *tensor.Dense[float32], error) {
	logp, st, err := model.Forward(x)
	if err != nil {
		return nil, 0, nil, err
	}
	if !slices.Equal(logp.Shape, dy.Shape) {
		return nil, 0, nil, fmt.Errorf("%s: cotangents %v for outputs %v", Command, dy.Shape, logp.Shape)
	}
	B := logp.Shape[0]
	g := nn.NewGrads(nn.PerRow, params, B)
	if _, err := model.Backward(st, dy, g, false); err != nil {
		return nil, 0, nil, err
	}
	P := 0
	for _, p := range params {
		P += len(p.Value.Data)
	}
	out := make([]float32, B*P)
	off := 0
	for _, p := range params {
		size := len(p.Value.Data)
		gp := g.Of[p].Data
		for r := range B {
			copy(out[r*P+off:r*P+off+size], gp[r*size:(r+1)*size])
		}
		off += size
	}
	return out, P, logp, nil
}

// cotangent returns dy [B, C] with +1 at each row's class pos and, when
// neg is set, −1 at its class neg.
func cotangent(B, C int, pos, neg []int) *tensor.Dense[float32] {
	dy := tensor.New[float32](B, C)
	for b := range B {
		dy.Data[b*C+pos[b]] = 1
		if neg != nil {
			dy.Data[b*C+neg[b]] = -1
		}
	}
	return dy
}

// dots holds the gradient inner products of one set of parameters: per
// target, ⟨∇f(x), ∇ℓ_i⟩ [X·N], and the norms ‖∇f(x)‖ and ‖∇ℓ_i‖.
type dots struct {
	dot       [2][]float64
	testNorm  [2][]float64
	trainNorm []float64
}

// gradDots returns the inner products of the test targets' gradients (log
// p_y and the margin against the rival class) and the training samples'
// log-probability gradients ∇ log p_{y_i}(z_i) at the model's current
// parameters.
func gradDots(ctx context.Context, model nn.Layer[float32], params []*nn.Param[float32], t *Tests, tr data.Dataset[float32]) (*dots, error) {
	X, N := len(t.Labels), tr.Len()
	C := tr.Classes
	out, err := model.OutShape(t.X.Shape)
	if err != nil {
		return nil, err
	}
	C = out[1]
	var test [2][]float32
	var P int
	for k, neg := range [][]int{nil, t.Rival} {
		if test[k], P, _, err = flatGrads(model, params, t.X, cotangent(X, C, t.Labels, neg)); err != nil {
			return nil, err
		}
	}
	d := &dots{trainNorm: make([]float64, N)}
	for k := range 2 {
		d.dot[k] = make([]float64, X*N)
		d.testNorm[k] = make([]float64, X)
		for x := range X {
			d.testNorm[k][x] = norm(test[k][x*P : (x+1)*P])
		}
	}
	prod := make([]float32, X*gradChunk)
	err = trainGrads(ctx, model, params, tr, C, func(lo int, g []float32, _ *tensor.Dense[float32]) error {
		n := len(g) / P
		for i := range n {
			d.trainNorm[lo+i] = norm(g[i*P : (i+1)*P])
		}
		for k := range 2 {
			gemm.Gemm[float32](false, true, X, n, P, 1, test[k], P, g, P, 0, prod, n)
			for xi := range X {
				for i := range n {
					d.dot[k][xi*N+lo+i] = float64(prod[xi*n+i])
				}
			}
		}
		return nil
	})
	return d, err
}

// trainGrads calls fn with the log-probability gradients ∇ log p_{y_i}(z_i)
// of the training samples in chunks of gradChunk at the model's current
// parameters: g holds one row of P values per sample lo, lo+1, …, and
// logp the model's outputs [n, C] on them.
func trainGrads(ctx context.Context, model nn.Layer[float32], params []*nn.Param[float32], tr data.Dataset[float32], C int,
	fn func(lo int, g []float32, logp *tensor.Dense[float32]) error) error {
	N := tr.Len()
	for lo := 0; lo < N; lo += gradChunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		hi := min(lo+gradChunk, N)
		idx := make([]int, hi-lo)
		for i := range idx {
			idx[i] = lo + i
		}
		x, y, err := tr.Batch(idx)
		if err != nil {
			return err
		}
		g, _, logp, err := flatGrads(model, params, x, cotangent(len(y), C, y, nil))
		if err != nil {
			return err
		}
		if err := fn(lo, g, logp); err != nil {
			return err
		}
	}
	return nil
}

func norm(v []float32) float64 {
	var s float64
	for _, e := range v {
		s += float64(e) * float64(e)
	}
	return math.Sqrt(s)
}

// GradientAttributions returns the tracin, grad_dot and grad_cos
// attributions (see the package comment) for both targets, replaying the
// run to each of its stored checkpoints before its last step (TracIn-CP,
// each weighted by the learning rate its step recorded) and to its final
// state (the gradient similarities). progress, if set, is called after
// each state with the states done and their number.
func GradientAttributions(ctx context.Context, run *expio.Run, t *Tests, progress func(done, total int)) ([]*Attribution, error) {
	m := run.Manifest
	steps := run.Steps()
	var cps []int
	for _, c := range m.Checkpoints {
		if c.Step < steps {
			cps = append(cps, c.Step)
		}
	}
	X, N := len(t.Labels), run.Data.Train.Len()
	var tracin [2][]float64
	for k := range 2 {
		tracin[k] = make([]float64, X*N)
	}
	for n, s := range cps {
		if err := run.Replay.Seek(s); err != nil {
			return nil, err
		}
		d, err := gradDots(ctx, run.Session.Model, run.Session.Params(), t, run.Data.Train)
		if err != nil {
			return nil, err
		}
		lr := m.Steps[s].LR
		for k := range 2 {
			for j, v := range d.dot[k] {
				tracin[k][j] += lr * v
			}
		}
		if progress != nil {
			progress(n+1, len(cps)+1)
		}
	}
	if err := run.Replay.Seek(steps); err != nil {
		return nil, err
	}
	d, err := gradDots(ctx, run.Session.Model, run.Session.Params(), t, run.Data.Train)
	if err != nil {
		return nil, err
	}
	if progress != nil {
		progress(len(cps)+1, len(cps)+1)
	}
	var out []*Attribution
	for k, target := range Targets() {
		cos := make([]float64, X*N)
		for x := range X {
			for i := range N {
				if den := d.testNorm[k][x] * d.trainNorm[i]; den > 0 {
					cos[x*N+i] = d.dot[k][x*N+i] / den
				}
			}
		}
		out = append(out,
			&Attribution{Method: TracIn, Target: target, X: X, N: N, A: tracin[k]},
			&Attribution{Method: GradDot, Target: target, X: X, N: N, A: d.dot[k]},
			&Attribution{Method: GradCos, Target: target, X: X, N: N, A: cos})
	}
	return out, nil
}

// randomStream is the PCG stream of the random baseline ("random").
const randomStream = 0x72616e646f6d

// RandomAttributions returns the random baseline for both targets: X × N
// independent standard normal values each, seeded by seed.
func RandomAttributions(X, N int, seed uint64) []*Attribution {
	rng := newRand(seed, randomStream)
	var out []*Attribution
	for _, target := range Targets() {
		a := make([]float64, X*N)
		for j := range a {
			a[j] = rng.NormFloat64()
		}
		out = append(out, &Attribution{Method: Random, Target: target, X: X, N: N, A: a})
	}
	return out
}

// EPKAttributions returns the epk attributions of both targets of the
// first X test samples of an EPK output from its kernel_full array
// [X', C, N] (see the package comment), rival[x] being c* of sample x.
func EPKAttributions(o *epkfile.Output, labels, rival []int, N int) ([]*Attribution, error) {
	k, err := o.Array("kernel_full")
	if err != nil {
		return nil, err
	}
	return kernelAttributions(k.Data, k.Shape, "the EPK output "+o.Dir, labels, rival, N)
}

// kernelAttributions returns the epk attributions from a data kernel k of
// shape [X', C, N] (X' ≥ the X test samples), named in errors by what.
func kernelAttributions(k []float64, shape []int, what string, labels, rival []int, N int) ([]*Attribution, error) {
	X := len(labels)
	if len(shape) != 3 || shape[0] < X || shape[2] != N {
		return nil, fmt.Errorf("%s: %s has kernel_full of shape %v; want [≥ %d test samples, classes, %d training samples]", Command, what, shape, X, N)
	}
	C := shape[1]
	lp, mg := make([]float64, X*N), make([]float64, X*N)
	for x := range X {
		y, r := labels[x], rival[x]
		if y >= C || r >= C {
			return nil, fmt.Errorf("%s: %s has kernel_full of %d classes; test sample %d needs class %d", Command, what, C, x, max(y, r))
		}
		for i := range N {
			lp[x*N+i] = k[(x*C+y)*N+i]
			mg[x*N+i] = lp[x*N+i] - k[(x*C+r)*N+i]
		}
	}
	return []*Attribution{{Method: EPK, Target: LogProb, X: X, N: N, A: lp}, {Method: EPK, Target: Margin, X: X, N: N, A: mg}}, nil
}

// ComputeEPKAttributions computes the data kernel of the test samples idx
// of the run in dir over all its steps, evaluated in float64 with the
// adaptive quadrature at tolerance 1e-6 as the reference preset of
// `explaind epk` does, and returns the epk attributions from it. It needs
// only two classes of each sample, so rather than the reference preset's
// kernel_full over every class it evaluates the true-class kernel of the
// samples twice over, labelled once with their labels and once with their
// rivals: k[x, i] and k[X+x, i] are kernel_full[x, labels[x], i] and
// kernel_full[x, rival[x], i] (C/2 times fewer feature rows: 30× on the
// demo's p = 59). progress, if set, is called after each step.
func ComputeEPKAttributions(ctx context.Context, dir string, idx, labels, rival []int, progress func(done, total int)) ([]*Attribution, error) {
	tr, err := job.OpenRun[float32, float64](dir)
	if err != nil {
		return nil, err
	}
	_, switches := any(tr.Path).(epk.SwitchModel[float64])
	q, err := job.ParseQuadrature("adaptive", 1e-6, switches)
	if err != nil {
		return nil, err
	}
	X := len(idx)
	if len(labels) != X || len(rival) != X {
		return nil, fmt.Errorf("%s: %d test samples with %d labels and %d rivals", Command, X, len(labels), len(rival))
	}
	x, y, err := tr.Data.Val.Batch(slices.Concat(idx, idx))
	if err != nil {
		return nil, err
	}
	if !slices.Equal(y[:X], labels) {
		return nil, fmt.Errorf("%s: the run's labels of the test samples %v are %v, not %v", Command, idx, y[:X], labels)
	}
	out, err := explain.Run(ctx, tr.Source, tr.Model, tr.Path, explain.Spec[float64]{
		Queries:    []explain.Query{{Name: "kernel_true", Keep: explain.Train | explain.Test, Classes: explain.TrueClass, Part: explain.Data}},
		Test:       explain.TestSet[float64]{X: x, Labels: slices.Concat(labels, rival)},
		Quadrature: q,
		Progress:   progress,
	})
	if err != nil {
		return nil, err
	}
	k, N := out.Results[0].Data, tr.Data.Train.Len()
	if len(k) != 2*X*N {
		return nil, fmt.Errorf("%s: the computed kernel has %d values; want %d test rows × %d training samples", Command, len(k), 2*X, N)
	}
	lp, mg := make([]float64, X*N), make([]float64, X*N)
	for j := range X * N {
		lp[j] = k[j]
		mg[j] = k[j] - k[X*N+j]
	}
	return []*Attribution{{Method: EPK, Target: LogProb, X: X, N: N, A: lp}, {Method: EPK, Target: Margin, X: X, N: N, A: mg}}, nil
}
