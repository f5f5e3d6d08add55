// Package epkjob runs `explaind epk`: it opens a recorded run, turns the
// presets into explain queries, evaluates them in one pass over the
// history and writes an epkout directory with summary.json. A job saves
// its state while it runs, and rerunning the same job resumes it.
package epkjob

import (
	"context"
	"crypto/sha256"
	"encoding/gob"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/epkout"
	"github.com/explaind/explaind/explain"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/atomicfile"
	"github.com/explaind/explaind/tensor"
)

// Options describe a job.
type Options struct {
	// Run and Out are the run directory and the output directory.
	Run, Out string
	// Presets are among epkout.Presets (default: validation).
	Presets []string
	// TestSize is the number of test samples, the first of the split
	// (0: all); TestIndices, if set, name them instead.
	TestSize    int
	TestIndices []int
	// Quadrature is "adaptive" (default), "exact:K", "midpoint:K" or
	// "gauss:K"; Tol the tolerance of adaptive and exact (0: 1e-6 in
	// float64, 1e-4 in float32).
	Quadrature string
	Tol        float64
	// Precision is "float64" (default) or "float32".
	Precision string
	// From and To are the steps [From, To) (To 0: all).
	From, To int
	// MaxBytes is the memory ceiling (0: none); Chunk the test samples
	// evaluated together (0: 256).
	MaxBytes int64
	Chunk    int
	// Software is recorded in the manifest.
	Software string
	// Progress, if set, is called after each step with the steps done and
	// the total.
	Progress func(done, total int)
	// CheckpointEvery is how often the job's state is saved (0: 10 min).
	CheckpointEvery time.Duration
	// Log receives notes (nil: none).
	Log io.Writer
}

// Summary is DIR/summary.json.
type Summary struct {
	Run             string   `json:"run"`
	Presets         []string `json:"presets"`
	Steps           [2]int   `json:"steps"`
	TestSamples     int      `json:"test_samples"`
	Classes         int      `json:"classes"`
	Quadrature      string   `json:"quadrature"`
	Tol             float64  `json:"tol"`
	Precision       string   `json:"precision"`
	ArgmaxAgreement float64  `json:"argmax_agreement"`
	Accuracy        float64  `json:"accuracy"`
	ModelAccuracy   float64  `json:"model_accuracy"`
	MeanAbsDelta    float64  `json:"mean_abs_delta"`
	MaxAbsDelta     float64  `json:"max_abs_delta"`
	StdDelta        float64  `json:"std_delta"`
	KLDiv           float64  `json:"kl_div"`
	// MaxCompletenessResidual is the largest per-step completeness
	// residual |Σ contributions of step s − (f(θ_{s+1}) − f(θ_s))| over
	// steps, test samples and classes.
	MaxCompletenessResidual float64 `json:"max_completeness_residual"`
	// MaxUpdateResidual is the largest update-reconstruction residual of a
	// parameter element; IdentityResidual is max |f0 + data + reg + resid
	// − quadrature residual − model|, which is rounding only.
	MaxUpdateResidual float64 `json:"max_update_residual"`
	IdentityResidual  float64 `json:"identity_residual"`
	// KernelResidual is the relative gap between the data kernel summed
	// over training samples and the forward data contributions.
	KernelResidual     float64 `json:"kernel_residual,omitempty"`
	NodesPerSampleStep float64 `json:"nodes_per_sample_step"`
	WallSeconds        float64 `json:"wall_seconds"`
	PeakRSSBytes       int64   `json:"peak_rss_bytes"`
	Software           string  `json:"software"`
}

// Run executes the job (or resumes it) and returns its summary.
func Run(ctx context.Context, o Options) (*Summary, error) {
	if o.Run == "" || o.Out == "" {
		return nil, errors.New("name the run (--run RUN) and the output directory (--out DIR)")
	}
	m, err := history.ReadManifest(o.Run)
	if err != nil {
		return nil, err
	}
	if o.Precision == "" {
		o.Precision = "float64"
	}
	switch {
	case m.Dtype == "float32" && o.Precision == "float64":
		return run[float32, float64](ctx, o, m)
	case m.Dtype == "float32" && o.Precision == "float32":
		return run[float32, float32](ctx, o, m)
	case m.Dtype == "float64" && o.Precision == "float64":
		return run[float64, float64](ctx, o, m)
	case m.Dtype == "float64" && o.Precision == "float32":
		return run[float64, float32](ctx, o, m)
	}
	return nil, fmt.Errorf("invalid --precision %q (want float32 or float64)", o.Precision)
}

// ParseQuadrature parses "adaptive", "exact:K", "midpoint:K" or "gauss:K".
// Adaptive is the Exact rule (switching points located, 2 Gauss–Legendre
// points per piece, pieces refined until the tolerance holds) for models
// that expose their ReLU switches, and bisection otherwise.
func ParseQuadrature(s string, tol float64, switches bool) (epk.Quadrature, error) {
	name, arg, _ := strings.Cut(s, ":")
	k := 0
	if arg != "" {
		v, err := strconv.Atoi(arg)
		if err != nil || v <= 0 {
			return epk.Quadrature{}, fmt.Errorf("invalid --quadrature %q: the number of points must be a positive integer", s)
		}
		k = v
	}
	switch name {
	case "", "adaptive":
		if arg != "" {
			return epk.Quadrature{}, fmt.Errorf("invalid --quadrature %q: adaptive takes no point count", s)
		}
		if switches {
			return epk.Quadrature{Rule: epk.Exact, Points: 2, Grid: 4, Tol: tol}, nil
		}
		return epk.Quadrature{Rule: epk.Adaptive, Points: 3, Tol: tol}, nil
	case "exact":
		if !switches {
			return epk.Quadrature{}, errors.New("--quadrature exact needs a model that exposes its ReLU switches (the modulo transformer); use adaptive")
		}
		return epk.Quadrature{Rule: epk.Exact, Points: k, Tol: tol}, nil
	case "midpoint":
		return epk.Quadrature{Rule: epk.Midpoint, Points: k}, nil
	case "gauss":
		return epk.Quadrature{Rule: epk.GaussLegendre, Points: k}, nil
	}
	return epk.Quadrature{}, fmt.Errorf("invalid --quadrature %q (want adaptive, exact:K, midpoint:K or gauss:K)", s)
}

// ParseBytes parses a size such as 512MiB, 8GiB, 2GB or 1000000.
func ParseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return 0, nil
	}
	units := []struct {
		suffix string
		mul    float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}}
	mul := 1.0
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mul = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mul
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) {
		return 0, fmt.Errorf("invalid size %q (for example 512MiB or 8GiB)", s)
	}
	return int64(v * mul), nil
}

// ParseSteps parses FROM:TO (either side may be empty).
func ParseSteps(s string) (from, to int, err error) {
	if s == "" {
		return 0, 0, nil
	}
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("invalid --steps %q (want FROM:TO, for example 0:20)", s)
	}
	if a != "" {
		if from, err = strconv.Atoi(a); err != nil {
			return 0, 0, fmt.Errorf("invalid --steps %q (want FROM:TO, for example 0:20)", s)
		}
	}
	if b != "" {
		if to, err = strconv.Atoi(b); err != nil {
			return 0, 0, fmt.Errorf("invalid --steps %q (want FROM:TO, for example 0:20)", s)
		}
	}
	return from, to, nil
}

// queries returns the explain queries of the presets.
func queries(presets []string) []explain.Query {
	var qs []explain.Query
	for _, p := range presets {
		switch p {
		case epkout.Grokking:
			qs = append(qs,
				explain.Query{Name: "step_tensor", Keep: explain.Step | explain.Test | explain.Tensor, Classes: explain.TrueClass, Part: explain.Model},
				explain.Query{Name: "step_data", Keep: explain.Step | explain.Test, Classes: explain.TrueClass, Part: explain.Data},
				explain.Query{Name: "step_reg", Keep: explain.Step | explain.Test, Classes: explain.TrueClass, Part: explain.Reg},
				explain.Query{Name: "step_resid", Keep: explain.Step | explain.Test, Classes: explain.TrueClass, Part: explain.Resid})
		case epkout.Components:
			qs = append(qs, explain.Query{Name: "scores", Keep: explain.Param | explain.Test, Part: explain.Update})
		case epkout.Pruning:
			qs = append(qs, explain.Query{Name: "importance", Keep: explain.Param, Abs: true, Part: explain.Update})
		case epkout.Kernel:
			qs = append(qs, explain.Query{Name: "kernel", Keep: explain.Train | explain.Class, Part: explain.Data})
		case epkout.Reference:
			qs = append(qs,
				explain.Query{Name: "scores_class", Keep: explain.Param | explain.Test | explain.Class, Part: explain.Update},
				explain.Query{Name: "kernel_full", Keep: explain.Train | explain.Test | explain.Class, Part: explain.Data})
		}
	}
	return qs
}

// jobKey identifies a job for resuming: the same run, presets, test set,
// steps, rule and precision.
func jobKey(o Options, fp string, idx []int, q epk.Quadrature) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s|%v|%v|%d:%d|%+v|%s", fp, o.Presets, idx, o.From, o.To, q, o.Precision)
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// saved is the job state file DIR/.epk-state.gob.
type saved struct {
	Key   string
	State *explain.State
}

func statePath(out string) string { return filepath.Join(out, ".epk-state.gob") }

func run[T, E tensor.Float](ctx context.Context, o Options, m *history.Manifest) (*Summary, error) {
	start := time.Now()
	if len(o.Presets) == 0 {
		o.Presets = []string{epkout.Validation}
	}
	var presets []string
	for _, p := range epkout.Presets { // canonical order, validation always
		if p == epkout.Validation || slices.Contains(o.Presets, p) {
			presets = append(presets, p)
		}
	}
	for _, p := range o.Presets {
		if !slices.Contains(epkout.Presets, p) {
			return nil, fmt.Errorf("unknown preset %q (want %s)", p, strings.Join(epkout.Presets, ", "))
		}
	}
	o.Presets = presets
	if m.Dtype == "" {
		return nil, fmt.Errorf("%s: the manifest names no dtype", o.Run)
	}
	tr, err := explain.OpenRun[T, E](o.Run)
	if err != nil {
		return nil, err
	}
	val := tr.Data.Val
	split := "val"
	if tr.Config.Task == "cnn" {
		split = "test"
	}
	idx := o.TestIndices
	if idx == nil {
		n := val.Len()
		if o.TestSize < 0 || o.TestSize > n {
			return nil, fmt.Errorf("invalid --test-size %d: the %s split has %d samples", o.TestSize, split, n)
		}
		if o.TestSize > 0 {
			n = o.TestSize
		}
		for i := 0; i < n; i++ {
			idx = append(idx, i)
		}
	}
	for _, i := range idx {
		if i < 0 || i >= val.Len() {
			return nil, fmt.Errorf("test index %d is out of range: the %s split has %d samples (0 … %d)", i, split, val.Len(), val.Len()-1)
		}
	}
	test, err := val.Subset(idx)
	if err != nil {
		return nil, err
	}
	steps := tr.Source.Replay.Steps()
	to := o.To
	if to == 0 {
		to = steps
	}
	if o.From < 0 || to > steps || o.From >= to {
		return nil, fmt.Errorf("invalid --steps %d:%d: the run has %d steps (want 0 ≤ FROM < TO ≤ %d)", o.From, to, steps, steps)
	}
	o.To = to
	_, switches := any(tr.Path).(epk.SwitchModel[E])
	tol := o.Tol
	if tol == 0 {
		tol = 1e-6
		if o.Precision == "float32" {
			tol = 1e-4
		}
	}
	q, err := ParseQuadrature(o.Quadrature, tol, switches)
	if err != nil {
		return nil, err
	}
	if o.Quadrature == "" {
		o.Quadrature = "adaptive"
	}
	fp := epkout.RunFingerprint(m)
	key := jobKey(o, fp, idx, q)

	// The output directory: a finished output is not overwritten; an
	// unfinished one of the same job resumes.
	var resume *explain.State
	if old, err := os.ReadFile(filepath.Join(o.Out, "manifest.json")); err == nil {
		var om epkout.Manifest
		if json.Unmarshal(old, &om) == nil && om.Complete {
			return nil, fmt.Errorf("%s already holds a finished EPK output; choose another --out or remove it", o.Out)
		}
	}
	if f, err := os.Open(statePath(o.Out)); err == nil {
		var s saved
		derr := gob.NewDecoder(f).Decode(&s)
		f.Close()
		switch {
		case derr != nil:
			return nil, fmt.Errorf("%s: the saved job state is unreadable (%v); remove it to start afresh", statePath(o.Out), derr)
		case s.Key != key:
			return nil, fmt.Errorf("%s holds an unfinished EPK job with other settings; rerun that command to resume it, or choose another --out", o.Out)
		}
		resume = s.State
		if o.Log != nil {
			fmt.Fprintf(o.Log, "resuming the job in %s after %d of %d steps\n", o.Out, resume.Done, to-o.From)
		}
	} else if entries, err := os.ReadDir(o.Out); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("%s exists and is not an EPK output of this job; choose another --out", o.Out)
	}

	spec := explain.Spec[E]{
		Queries:    queries(presets),
		Test:       explain.TestSet[E]{X: test.Inputs, Labels: test.Labels},
		From:       o.From,
		To:         to,
		Quadrature: q,
		Chunk:      o.Chunk,
		MaxBytes:   o.MaxBytes,
		Progress:   o.Progress,
		Resume:     resume,
	}
	every := o.CheckpointEvery
	if every <= 0 {
		every = 10 * time.Minute
	}
	spec.CheckpointEvery = every
	spec.Checkpoint = func(st *explain.State) error {
		if err := os.MkdirAll(o.Out, 0o755); err != nil {
			return err
		}
		st.Wall = time.Since(start)
		if resume != nil {
			st.Wall += resume.Wall
		}
		return atomicfile.Write(statePath(o.Out), func(w io.Writer) error {
			return gob.NewEncoder(w).Encode(saved{Key: key, State: st})
		})
	}
	// The range is replayed and checked against its recorded hashes
	// before any work, so a run that fails verification is refused early.
	// A run stamped as reproducing under this executable (it trained the
	// run, or replayed it before) skips that replay; the pass still checks
	// every step's hash.
	if resume == nil {
		spec.Preflight = func() error {
			covered, why, err := history.StampCovers(o.Run, to, o.Software)
			if err != nil {
				return err
			}
			if covered {
				if o.Log != nil {
					fmt.Fprintf(o.Log, "%s: skipping the pre-flight replay\n", why)
				}
				return nil
			}
			if o.Log != nil {
				fmt.Fprintf(o.Log, "replaying steps 0:%d to check them against their recorded hashes first (%s)\n", to, why)
			}
			if err := tr.Source.Replay.Forward(0, to, func(*history.StepView[T]) error { return ctx.Err() }); err != nil {
				return fmt.Errorf("the run %s does not replay (run `explaind verify %s`): %w", o.Run, o.Run, err)
			}
			if err := history.WriteStamp(o.Run, to, "replayed", o.Software); err != nil && o.Log != nil {
				fmt.Fprintf(o.Log, "note: the run replayed but its stamp was not written: %v\n", err)
			}
			return nil
		}
	}
	out, err := explain.Run(ctx, tr.Source, tr.Model, tr.Path, spec)
	if err != nil {
		if errors.Is(err, explain.ErrInterrupted) {
			return nil, fmt.Errorf("interrupted; the job's state is saved in %s: rerun the same command to resume", o.Out)
		}
		return nil, err
	}
	return write(o, split, fp, idx, test.Labels, q, out)
}

// write stores the output directory and its summary.
func write(o Options, split string, fp string, idx, labels []int, q epk.Quadrature, out *explain.Output) (*Summary, error) {
	X, C, S := out.Samples, out.Classes, out.To-out.From
	w, err := epkout.NewWriter(o.Out, epkout.Manifest{
		Software: o.Software, Created: time.Now().UTC().Format(time.RFC3339),
		Run: o.Run, RunFingerprint: fp, Presets: o.Presets, Steps: [2]int{out.From, out.To},
		Precision: o.Precision, Quadrature: o.Quadrature, Tol: q.Tol,
		Test: epkout.TestSet{Split: split, Count: X}, Classes: C,
		Tensors: out.TensorNames, TensorShapes: out.TensorShapes,
	})
	if err != nil {
		return nil, err
	}
	put := func(name string, data []float64, shape []int, axes []string, units, preset, desc string) error {
		return epkout.Write(w, name, data, epkout.ArrayInfo{Shape: shape, Axes: axes, Units: units, Preset: preset, Description: desc})
	}
	put32 := func(name string, data []float64, shape []int, axes []string, units, preset, desc string) error {
		return epkout.WriteFloat32(w, name, data, epkout.ArrayInfo{Shape: shape, Axes: axes, Units: units, Preset: preset, Description: desc + " Stored as float32."})
	}
	if err := epkout.Write(w, "test_indices", toInt64(idx), epkout.ArrayInfo{Shape: []int{X}, Axes: []string{"test"}, Units: "index", Description: "indices of the test samples in the run's " + split + " split"}); err != nil {
		return nil, err
	}
	if err := epkout.Write(w, "test_labels", toInt64(labels), epkout.ArrayInfo{Shape: []int{X}, Axes: []string{"test"}, Units: "class", Description: "labels of the test samples"}); err != nil {
		return nil, err
	}
	v := out.Validation
	xc, axc := []int{X, C}, []string{"test", "class"}
	lp := "log-probability"
	epkPred := make([]float64, X*C)
	for i := range epkPred {
		epkPred[i] = v.Start[i] + v.Data[i] + v.Reg[i] + v.Resid[i]
	}
	for _, a := range []struct {
		name string
		data []float64
		desc string
	}{
		{"f0", v.Start, "the model's output f(θ_FROM; x)"},
		{"model", v.Model, "the model's output f(θ_TO; x)"},
		{"epk", epkPred, "the kernel machine's prediction f0 + data + reg + resid"},
		{"data", v.Data, "the summed contributions of the updates' data (gradient) parts"},
		{"reg", v.Reg, "the summed contributions of the updates' weight-decay parts"},
		{"resid", v.Resid, "the summed contributions of the update-reconstruction residuals"},
		{"quad_residual", v.Quad, "the summed quadrature (completeness) residuals: epk − model"},
	} {
		if err := put(a.name, a.data, xc, axc, lp, epkout.Validation, a.desc); err != nil {
			return nil, err
		}
	}
	if err := put("step_max_completeness", v.StepMaxCompleteness, []int{S}, []string{"step"}, lp, epkout.Validation, "each step's max |Σ contributions − (f(θ_{s+1}) − f(θ_s))| over test samples and classes"); err != nil {
		return nil, err
	}
	if err := put("step_change", v.StepChange, []int{S, X}, []string{"step", "test"}, lp, epkout.Validation, "f_y(θ_{s+1}) − f_y(θ_s) of each sample's true class y"); err != nil {
		return nil, err
	}
	T := len(out.TensorNames)
	for _, r := range out.Results {
		switch r.Query.Name {
		case "step_tensor": // [S, X, T] → [S, T, X]
			d := make([]float64, len(r.Data))
			for s := 0; s < S; s++ {
				for x := 0; x < X; x++ {
					for t := 0; t < T; t++ {
						d[(s*T+t)*X+x] = r.Data[(s*X+x)*T+t]
					}
				}
			}
			if err := put32("step_tensor", d, []int{S, T, X}, []string{"step", "tensor", "test"}, lp, epkout.Grokking, "each parameter tensor's contribution (data + reg) to the true class's log-probability per step; tensor names in the manifest's tensors."); err != nil {
				return nil, err
			}
		case "step_data", "step_reg", "step_resid":
			if err := put(r.Query.Name, r.Data, []int{S, X}, []string{"step", "test"}, lp, epkout.Grokking, "the "+r.Query.Part.String()+" part's contribution to the true class's log-probability per step"); err != nil {
				return nil, err
			}
		case "scores":
			for t, a := range r.Tensors {
				if err := put32("scores/"+r.TensorNames[t], a.Data, a.Shape, append([]string{"test"}, paramAxes(a.Shape[1:])...), lp, epkout.Components, "each test sample's class-summed per-parameter score Σ_s Σ_c φ_s(x)[c, :] ⊙ Δθ_s."); err != nil {
					return nil, err
				}
			}
		case "importance":
			for t, a := range r.Tensors {
				if err := put32("importance/"+r.TensorNames[t], a.Data, a.Shape, paramAxes(a.Shape), lp, epkout.Pruning, "per-parameter importance Σ_{x,c} |Σ_s φ_s(x)[c, :] ⊙ Δθ_s| over the test samples."); err != nil {
					return nil, err
				}
			}
		case "scores_class":
			for t, a := range r.Tensors {
				if err := put32("scores_class/"+r.TensorNames[t], a.Data, a.Shape, append([]string{"test", "class"}, paramAxes(a.Shape[2:])...), lp, epkout.Reference, "per-parameter scores per test sample and class Σ_s φ_s(x)[c, :] ⊙ Δθ_s (the reference's per-parameter kernel)."); err != nil {
					return nil, err
				}
			}
		case "kernel_full":
			if err := put32("kernel_full", r.Data, r.Shape, r.Axes, lp, epkout.Reference, "the data kernel per test sample, class and training sample, summed over steps (the reference's data kernel)."); err != nil {
				return nil, err
			}
		case "kernel":
			if err := put32("kernel", r.Data, r.Shape, r.Axes, lp, epkout.Kernel, "the data kernel: each training sample's contribution to each class's log-probability, summed over test samples and steps."); err != nil {
				return nil, err
			}
			reg := make([]float64, C)
			for x := 0; x < X; x++ {
				for c := 0; c < C; c++ {
					reg[c] += v.Reg[x*C+c]
				}
			}
			if err := put("kernel_reg", reg, []int{C}, []string{"class"}, lp, epkout.Kernel, "the weight-decay term per class, summed over test samples"); err != nil {
				return nil, err
			}
		}
	}
	s := summarize(v, labels, X, C)
	s.Run, s.Presets, s.Steps, s.TestSamples, s.Classes = o.Run, o.Presets, [2]int{out.From, out.To}, X, C
	s.Quadrature, s.Tol, s.Precision, s.Software = o.Quadrature, q.Tol, o.Precision, o.Software
	s.KernelResidual, s.NodesPerSampleStep = out.KernelResidual, v.Nodes
	s.WallSeconds = out.Wall.Seconds()
	s.PeakRSSBytes = PeakRSS()
	raw, _ := json.MarshalIndent(s, "", "  ")
	if err := atomicfile.WriteBytes(filepath.Join(o.Out, "summary.json"), append(raw, '\n')); err != nil {
		return nil, err
	}
	if err := w.WriteManifest(true); err != nil {
		return nil, err
	}
	os.Remove(statePath(o.Out))
	return s, nil
}

func paramAxes(shape []int) []string {
	out := make([]string, len(shape))
	for i := range out {
		out[i] = fmt.Sprintf("param_dim%d", i)
	}
	return out
}

func toInt64(v []int) []int64 {
	out := make([]int64, len(v))
	for i, x := range v {
		out[i] = int64(x)
	}
	return out
}

// summarize computes the validation statistics of the reference's script:
// the EPK prediction against the model.
func summarize(v explain.Validation, labels []int, X, C int) *Summary {
	s := &Summary{}
	var sum, sum2, agree, acc, macc, kl float64
	n := float64(X * C)
	for x := 0; x < X; x++ {
		e := make([]float64, C)
		mrow := v.Model[x*C : (x+1)*C]
		for c := 0; c < C; c++ {
			i := x*C + c
			e[c] = v.Start[i] + v.Data[i] + v.Reg[i] + v.Resid[i]
			d := e[c] - mrow[c]
			sum += math.Abs(d)
			sum2 += d * d
			s.MaxAbsDelta = math.Max(s.MaxAbsDelta, math.Abs(d))
			id := e[c] - v.Quad[i] - mrow[c]
			s.IdentityResidual = math.Max(s.IdentityResidual, math.Abs(id))
		}
		ae, am := argmax(e), argmax(mrow)
		if ae == am {
			agree++
		}
		if ae == labels[x] {
			acc++
		}
		if am == labels[x] {
			macc++
		}
		// KL(model ‖ softmax(epk)), both renormalized (float32 outputs
		// are normalized only to rounding).
		// A sample's KL is ≥ 0; rounding can leave it a hair below.
		lse, lsm := logSumExp(e), logSumExp(mrow)
		var kx float64
		for c := 0; c < C; c++ {
			lm := mrow[c] - lsm
			if p := math.Exp(lm); p > 0 {
				kx += p * (lm - (e[c] - lse))
			}
		}
		kl += math.Max(kx, 0)
	}
	s.ArgmaxAgreement, s.Accuracy, s.ModelAccuracy, s.KLDiv = agree/float64(X), acc/float64(X), macc/float64(X), kl/float64(X)
	s.MeanAbsDelta = sum / n
	mean := 0.0
	for i := range v.Model {
		mean += v.Start[i] + v.Data[i] + v.Reg[i] + v.Resid[i] - v.Model[i]
	}
	mean /= n
	s.StdDelta = math.Sqrt(math.Max(0, sum2/n-mean*mean))
	for _, c := range v.StepMaxCompleteness {
		s.MaxCompletenessResidual = math.Max(s.MaxCompletenessResidual, c)
	}
	s.MaxUpdateResidual = v.MaxResid
	return s
}

func argmax(v []float64) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

func logSumExp(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = math.Max(m, x)
	}
	var s float64
	for _, x := range v {
		s += math.Exp(x - m)
	}
	return m + math.Log(s)
}

// PeakRSS returns the process's peak resident memory (VmHWM) in bytes, or 0
// where /proc is unavailable.
func PeakRSS() int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}
