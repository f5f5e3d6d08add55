package job

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/explain"
	"github.com/explaind/explaind/internal/atomicfile"
	"github.com/explaind/explaind/shard"
)

// logProb is the units of every EPK array.
const logProb = "log-probability"

// output is one query of a preset and the arrays its result is written as.
//
// A query that keeps the test axis has a result per test sample: Merge
// concatenates the shards' results along that axis. A query that does not
// keep it sums over the test samples (the absolute value of the pruning
// preset is taken per sample, before that sum): Merge adds the shards'
// results, which shard outputs store in float64 (arrays.partial).
type output struct {
	preset string
	query  explain.Query
	format
}

// A format stores the result of one of a preset's queries as arrays and
// reads it back from an output directory: write's inverse, which gives
// the result's values as stored (float32 arrays to float32 rounding), in
// explain's layout with the Axes, Shape, Tensors and TensorNames write
// uses.
type format struct {
	write func(a *arrays, preset string, r *explain.Result) error
	read  func(o *epkfile.Output, q explain.Query) (*explain.Result, error)
}

// outputs lists the presets' queries (validation needs none: every job
// reports its Validation), in the order of epkfile.Presets.
var outputs = []output{
	{epkfile.Grokking, explain.Query{Name: "step_tensor", Keep: explain.Step | explain.Test | explain.Tensor,
		Classes: explain.TrueClass, Part: explain.Model}, stepTensor},
	{epkfile.Grokking, explain.Query{Name: "step_data", Keep: explain.Step | explain.Test,
		Classes: explain.TrueClass, Part: explain.Data}, stepPart},
	{epkfile.Grokking, explain.Query{Name: "step_reg", Keep: explain.Step | explain.Test,
		Classes: explain.TrueClass, Part: explain.Reg}, stepPart},
	{epkfile.Grokking, explain.Query{Name: "step_resid", Keep: explain.Step | explain.Test,
		Classes: explain.TrueClass, Part: explain.Resid}, stepPart},
	{epkfile.Components, explain.Query{Name: "scores", Keep: explain.Param | explain.Test, Part: explain.Update},
		perTensor([]string{"test"}, "each test sample's class-summed per-parameter score Σ_s Σ_c φ_s(x)[c, :] ⊙ Δθ_s.")},
	{epkfile.History, explain.Query{Name: "history", Keep: explain.Test | explain.Group, Part: explain.Update,
		Gram: DefaultSnapshotEvery}, snapshots},
	{epkfile.Pruning, explain.Query{Name: "importance", Keep: explain.Param, Abs: true, Part: explain.Update},
		perTensor(nil, "per-parameter importance Σ_{x,c} |Σ_s φ_s(x)[c, :] ⊙ Δθ_s| over the test samples.")},
	{epkfile.Kernel, explain.Query{Name: "kernel", Keep: explain.Train | explain.Class, Part: explain.Data}, kernel},
	{epkfile.Reference, explain.Query{Name: "scores_class", Keep: explain.Param | explain.Test | explain.Class,
		Part: explain.Update},
		perTensor([]string{"test", "class"}, "per-parameter scores per test sample and class Σ_s φ_s(x)[c, :] ⊙ Δθ_s "+
			"(the reference's per-parameter kernel).")},
	{epkfile.Reference, explain.Query{Name: "kernel_full", Keep: explain.Train | explain.Test | explain.Class,
		Part: explain.Data},
		whole("the data kernel per test sample, class and training sample, summed over steps (the reference's data kernel).")},
}

// queries returns the explain queries of the presets.
func queries(presets []string) []explain.Query {
	var qs []explain.Query
	for _, p := range presets {
		for _, o := range outputs {
			if o.preset == p {
				qs = append(qs, o.query)
			}
		}
	}
	return qs
}

// arrays writes the arrays of an output directory.
type arrays struct {
	w   *epkfile.Writer
	out *explain.Output
	// partial is set while a shard output's sums over test samples are
	// written: put32 then stores float64 (see epkfile.Shard).
	partial bool
	// gram is the history preset's history_gram.npy, written while the
	// job ran (nil: none).
	gram *gramFile
}

// put stores float64 values (log-probabilities) of a preset.
func (a *arrays) put(name, preset string, data []float64, shape []int, axes []string, desc string) error {
	return epkfile.Write(a.w, name, data, epkfile.ArrayInfo{Shape: shape, Axes: axes, Units: logProb, Preset: preset,
		Description: desc})
}

// put32 stores values like put, as float32; a shard's partial sums as
// float64.
func (a *arrays) put32(name, preset string, data []float64, shape []int, axes []string, desc string) error {
	if a.partial {
		return epkfile.Write(a.w, name, data, epkfile.ArrayInfo{Shape: shape, Axes: axes, Units: logProb, Preset: preset,
			Description: desc + " Stored as float64: this shard's partial sum, which a merge of the shards adds up " +
				"and stores as float32."})
	}
	return epkfile.WriteFloat32(a.w, name, data, epkfile.ArrayInfo{Shape: shape, Axes: axes, Units: logProb, Preset: preset,
		Description: desc + " Stored as float32."})
}

// steps is S, the number of steps of the output.
func (a *arrays) steps() int { return a.out.To - a.out.From }

// outputOf returns the output of the query named name.
func outputOf(name string) (output, bool) {
	for _, o := range outputs {
		if o.query.Name == name {
			return o, true
		}
	}
	return output{}, false
}

// writeTestSet stores the test samples' indices and labels.
func (a *arrays) writeTestSet(split string, idx, labels []int) error {
	X := a.out.Samples
	shape, axes := []int{X}, []string{"test"}
	if err := epkfile.Write(a.w, "test_indices", toInt64(idx), epkfile.ArrayInfo{Shape: shape, Axes: axes, Units: "index",
		Description: "indices of the test samples in the run's " + split + " split"}); err != nil {
		return err
	}
	return epkfile.Write(a.w, "test_labels", toInt64(labels), epkfile.ArrayInfo{Shape: shape, Axes: axes, Units: "class",
		Description: "labels of the test samples"})
}

// validationArrays are the validation preset's [X, C] arrays: the
// fields of explain.Validation, and the prediction epk (field nil) made
// of them.
var validationArrays = []struct {
	name  string
	field func(v *explain.Validation) *[]float64
	desc  string
}{
	{"f0", func(v *explain.Validation) *[]float64 { return &v.Start }, "the model's output f(θ_FROM; x)"},
	{"model", func(v *explain.Validation) *[]float64 { return &v.Model }, "the model's output f(θ_TO; x)"},
	{"epk", nil, "the kernel machine's prediction f0 + data + reg + resid"},
	{"data", func(v *explain.Validation) *[]float64 { return &v.Data }, "the summed contributions of the updates' data (gradient) parts"},
	{"reg", func(v *explain.Validation) *[]float64 { return &v.Reg }, "the summed contributions of the updates' weight-decay parts"},
	{"resid", func(v *explain.Validation) *[]float64 { return &v.Resid }, "the summed contributions of the update-reconstruction residuals"},
	{"quad_residual", func(v *explain.Validation) *[]float64 { return &v.Quad }, "the summed quadrature (completeness) residuals: epk − model"},
}

// The validation preset's per-step arrays: step_max_completeness [S] is a
// maximum over test samples, step_change [S, X] per test sample.
const (
	stepMaxCompleteness = "step_max_completeness"
	stepChange          = "step_change"
)

// writeValidation stores the validation preset's arrays.
func (a *arrays) writeValidation() error {
	v, X, C, S := a.out.Validation, a.out.Samples, a.out.Classes, a.steps()
	xc, axc := []int{X, C}, []string{"test", "class"}
	for _, r := range validationArrays {
		var data []float64
		if r.field != nil {
			data = *r.field(&v)
		} else {
			data = make([]float64, X*C)
			for i := range data {
				data[i] = v.Start[i] + v.Data[i] + v.Reg[i] + v.Resid[i]
			}
		}
		if err := a.put(r.name, epkfile.Validation, data, xc, axc, r.desc); err != nil {
			return err
		}
	}
	if err := a.put(stepMaxCompleteness, epkfile.Validation, v.StepMaxCompleteness, []int{S}, []string{"step"},
		"each step's max |Σ contributions − (f(θ_{s+1}) − f(θ_s))| over test samples and classes"); err != nil {
		return err
	}
	return a.put(stepChange, epkfile.Validation, v.StepChange, []int{S, X}, []string{"step", "test"},
		"f_y(θ_{s+1}) − f_y(θ_s) of each sample's true class")
}

// readValidation reads the arrays writeValidation stores back into a
// Validation (all but StepMaxChange, which no array holds, and MaxResid and
// Nodes, which the summary holds).
func readValidation(o *epkfile.Output) (explain.Validation, error) {
	var v explain.Validation
	X, C, S := o.Manifest.Test.Count, o.Manifest.Classes, o.Manifest.Steps[1]-o.Manifest.Steps[0]
	read := func(name string, shape ...int) ([]float64, error) {
		a, err := o.Array(name)
		if err != nil {
			return nil, err
		}
		if !slices.Equal(a.Shape, shape) {
			return nil, fmt.Errorf("%s: array %s has shape %v, want %v", o.Dir, name, a.Shape, shape)
		}
		return a.Data, nil
	}
	var err error
	for _, r := range validationArrays {
		if r.field != nil {
			if *r.field(&v), err = read(r.name, X, C); err != nil {
				return v, err
			}
		}
	}
	if v.StepMaxCompleteness, err = read(stepMaxCompleteness, S); err != nil {
		return v, err
	}
	v.StepChange, err = read(stepChange, S, X)
	return v, err
}

// stepTensor stores step_tensor [S, X, T] as [S, T, X].
var stepTensor = format{writeStepTensor, readStepTensor}

func writeStepTensor(a *arrays, preset string, r *explain.Result) error {
	S, X, T := a.steps(), a.out.Samples, len(a.out.TensorNames)
	d := make([]float64, len(r.Data))
	for s := 0; s < S; s++ {
		for x := 0; x < X; x++ {
			for t := 0; t < T; t++ {
				d[(s*T+t)*X+x] = r.Data[(s*X+x)*T+t]
			}
		}
	}
	return a.put32(r.Query.Name, preset, d, []int{S, T, X}, []string{"step", "tensor", "test"},
		"each parameter tensor's contribution (data + reg) to the true class's log-probability per step; "+
			"tensor names in the manifest's tensors.")
}

// readStepTensor reads step_tensor [S, T, X] back as [S, X, T].
func readStepTensor(o *epkfile.Output, q explain.Query) (*explain.Result, error) {
	a, err := o.Array(q.Name)
	if err != nil {
		return nil, err
	}
	if len(a.Shape) != 3 {
		return nil, fmt.Errorf("%s: array %s has shape %v, want [step, tensor, test]", o.Dir, q.Name, a.Shape)
	}
	S, T, X := a.Shape[0], a.Shape[1], a.Shape[2]
	d := make([]float64, len(a.Data))
	for s := 0; s < S; s++ {
		for x := 0; x < X; x++ {
			for t := 0; t < T; t++ {
				d[(s*X+x)*T+t] = a.Data[(s*T+t)*X+x]
			}
		}
	}
	return &explain.Result{Query: q, Axes: []string{"step", "test", "tensor"}, Shape: []int{S, X, T}, Data: d}, nil
}

// stepPart stores a part's contributions per step [S, X].
var stepPart = format{writeStepPart, readWhole}

func writeStepPart(a *arrays, preset string, r *explain.Result) error {
	return a.put(r.Query.Name, preset, r.Data, []int{a.steps(), a.out.Samples}, []string{"step", "test"},
		"the "+r.Query.Part.String()+" part's contribution to the true class's log-probability per step")
}

// perTensor stores a per-parameter result as one array per tensor,
// NAME/<tensor>, whose leading axes are lead.
func perTensor(lead []string, desc string) format {
	return format{writePerTensor(lead, desc), readPerTensor(lead)}
}

func writePerTensor(lead []string, desc string) func(a *arrays, preset string, r *explain.Result) error {
	return func(a *arrays, preset string, r *explain.Result) error {
		for t, arr := range r.Tensors {
			axes := append(append([]string(nil), lead...), paramAxes(arr.Shape[len(lead):])...)
			if err := a.put32(r.Query.Name+"/"+r.TensorNames[t], preset, arr.Data, arr.Shape, axes, desc); err != nil {
				return err
			}
		}
		return nil
	}
}

// readPerTensor reads the arrays NAME/<tensor> of every tensor of the
// output, whose leading axes are lead.
func readPerTensor(lead []string) func(o *epkfile.Output, q explain.Query) (*explain.Result, error) {
	return func(o *epkfile.Output, q explain.Query) (*explain.Result, error) {
		r := &explain.Result{Query: q, Axes: slices.Clone(lead), TensorNames: o.Manifest.Tensors}
		for t, name := range o.Manifest.Tensors {
			a, err := o.Array(q.Name + "/" + name)
			if err != nil {
				return nil, err
			}
			if len(a.Shape) < len(lead) || !slices.Equal(a.Shape[len(lead):], o.Manifest.TensorShapes[t]) ||
				t > 0 && !slices.Equal(a.Shape[:len(lead)], r.Shape) {
				return nil, fmt.Errorf("%s: array %s/%s has shape %v, want %v followed by the tensor's shape %v",
					o.Dir, q.Name, name, a.Shape, lead, o.Manifest.TensorShapes[t])
			}
			r.Shape = a.Shape[:len(lead)]
			r.Tensors = append(r.Tensors, a)
		}
		return r, nil
	}
}

// whole stores a result as one array with its own axes.
func whole(desc string) format {
	return format{writeWhole(desc), readWhole}
}

func writeWhole(desc string) func(a *arrays, preset string, r *explain.Result) error {
	return func(a *arrays, preset string, r *explain.Result) error {
		return a.put32(r.Query.Name, preset, r.Data, r.Shape, r.Axes, desc)
	}
}

// readWhole reads a result stored as one array with its own axes.
func readWhole(o *epkfile.Output, q explain.Query) (*explain.Result, error) {
	a, err := o.Array(q.Name)
	if err != nil {
		return nil, err
	}
	return &explain.Result{Query: q, Axes: slices.Clone(o.Manifest.Arrays[q.Name].Axes), Shape: a.Shape, Data: a.Data}, nil
}

// kernel stores the data kernel; kernel_reg, which it writes from the
// validation's reg, is no result of its own to read.
var kernel = format{writeKernel, readWhole}

// snapshots stores the Gram snapshots. They pair every two test samples,
// so shards cannot hold them and a merge cannot rebuild them: the job
// refuses the preset with a shard (see run), and reading it for a merge is
// an error.
var snapshots = format{writeHistory, func(o *epkfile.Output, q explain.Query) (*explain.Result, error) {
	return nil, fmt.Errorf("%s: the %s preset's Gram matrices pair test samples of different shards; they cannot be merged", o.Dir, epkfile.History)
}}

// writeHistory stores the snapshot steps history_steps [K] and the Gram
// matrices history_gram [K, G, X, X]: the file the job streamed them into
// (a.gram), or those of the result.
func writeHistory(a *arrays, preset string, r *explain.Result) error {
	K := len(r.Steps)
	steps := make([]int64, K)
	for k, s := range r.Steps {
		steps[k] = int64(s)
	}
	if err := epkfile.Write(a.w, "history_steps", steps, epkfile.ArrayInfo{Shape: []int{K}, Axes: []string{"snapshot"},
		Units: "step", Preset: preset, Description: fmt.Sprintf("the snapshot steps s_k (every %dth step after FROM, and TO): "+
			"snapshot k holds the scores of the steps [FROM, s_k)", r.Query.Gram)}); err != nil {
		return err
	}
	info := epkfile.ArrayInfo{Shape: r.Shape, Axes: r.Axes,
		Units: "log-probability²", Preset: preset, Labels: map[string][]string{"group": r.Labels},
		Description: "per snapshot and layer group g, the Gram matrix G_g[x, x'] = <e_g(x), e_g(x')> of the test samples' " +
			"class-summed per-parameter scores e(x) = Σ_{s<s_k} Σ_c φ_s(x)[c, :] ⊙ Δθ_s (the components preset's scores " +
			"over [FROM, s_k)) restricted to the group's tensors; the diagonal holds the squared norms, so the cosine " +
			"similarity is G[x, x'] / sqrt(G[x, x] G[x', x']). Groups (labels): models.GroupOf of each tensor, then \"all\", " +
			"every tensor."}
	if r.Data32 == nil && a.gram != nil {
		return a.gram.finish(a.w, info)
	}
	return epkfile.Write(a.w, historyGram, r.Data32, info)
}

// writeKernel stores the data kernel [C, N] and the weight-decay term per
// class that completes it, kernel_reg [C].
func writeKernel(a *arrays, preset string, r *explain.Result) error {
	err := writeWhole("the data kernel: each training sample's contribution to each class's log-probability, "+
		"summed over test samples and steps.")(a, preset, r)
	if err != nil {
		return err
	}
	X, C := a.out.Samples, a.out.Classes
	reg := make([]float64, C)
	for x := 0; x < X; x++ {
		for c := 0; c < C; c++ {
			reg[c] += a.out.Validation.Reg[x*C+c]
		}
	}
	return a.put("kernel_reg", preset, reg, []int{C}, []string{"class"},
		"the weight-decay term per class, summed over test samples")
}

// target is what an output records besides the job's options and
// results.
type target struct {
	// key is the output's Job, fp the run's fingerprint.
	key, fp string
	// split, idx and labels are the test samples: their split, their
	// indices in it and their labels.
	split       string
	idx, labels []int
	// tol is the quadrature's tolerance.
	tol float64
	// shard is the shard record of a shard output (nil: none).
	shard *epkfile.Shard
	// peakRSS is the peak memory the summary reports (0: this
	// process's).
	peakRSS int64
	// gram is the history preset's partial history_gram.npy (nil: none).
	gram *gramFile
}

// write stores the output directory and its summary. If a file cannot be
// written (a full disk, say), it removes the files it wrote before and
// returns the error: the directory is left as the job found it (empty, or
// holding the job's last saved state), so rerunning the job resumes it.
func write(o Options, t target, out *explain.Output) (_ *Summary, err error) {
	X, C := out.Samples, out.Classes
	w, err := epkfile.NewWriter(o.Out, epkfile.Manifest{
		Software: o.Software, Created: time.Now().UTC().Format(time.RFC3339),
		Run: o.Run, RunFingerprint: t.fp, Presets: o.Presets, Steps: [2]int{out.From, out.To},
		Precision: o.Precision, Quadrature: o.Quadrature, Tol: t.tol,
		Test: epkfile.TestSet{Split: t.split, Count: X}, Classes: C,
		Tensors: out.TensorNames, TensorShapes: out.TensorShapes, Job: t.key, Shard: t.shard,
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if t.gram != nil {
				t.gram.unplace() // the rerun's snapshots, before removePartial removes the file
			}
			removePartial(o.Out, w)
			err = fmt.Errorf("%w; the output's files written so far were removed: rerun the same job to write it (it resumes from its saved state, if any)", err)
		}
	}()
	a := &arrays{w: w, out: out, gram: t.gram}
	if err := a.writeTestSet(t.split, t.idx, t.labels); err != nil {
		return nil, err
	}
	if err := a.writeValidation(); err != nil {
		return nil, err
	}
	for _, r := range out.Results {
		if op, ok := outputOf(r.Query.Name); ok {
			a.partial = t.shard != nil && op.query.Keep&explain.Test == 0
			if err := op.write(a, op.preset, r); err != nil {
				return nil, err
			}
		}
	}
	s := summarize(out.Validation, t.labels, X, C)
	s.Run, s.Presets, s.Steps, s.TestSamples, s.Classes = o.Run, o.Presets, [2]int{out.From, out.To}, X, C
	s.TestSplit = t.split
	s.Quadrature, s.Tol, s.Precision, s.Software = o.Quadrature, t.tol, o.Precision, o.Software
	s.KernelResidual, s.NodesPerSampleStep = out.KernelResidual, out.Validation.Nodes
	s.Certified, s.MissedCount, s.Missed = out.Validation.Certified, out.Validation.MissedCount, listMisses(out.Validation.Missed, t.idx)
	s.WallSeconds = out.Wall.Seconds()
	s.PeakRSSBytes = t.peakRSS
	if s.PeakRSSBytes == 0 {
		s.PeakRSSBytes = PeakRSS()
	}
	if t.shard != nil {
		s.Shard = shard.Shard{Index: t.shard.Index, Count: t.shard.Count}.String()
	}
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

// removePartial removes the files of an output that write did not finish:
// its arrays, its summary and the folders they made, when empty.
func removePartial(dir string, w *epkfile.Writer) {
	var folders []string
	for _, info := range w.Manifest.Arrays {
		os.Remove(filepath.Join(dir, info.File))
		for f := filepath.Dir(info.File); f != "."; f = filepath.Dir(f) {
			folders = append(folders, f)
		}
	}
	os.Remove(filepath.Join(dir, "summary.json"))
	// Deeper folders first; a folder that still holds something stays.
	slices.SortFunc(folders, func(a, b string) int { return len(b) - len(a) })
	for _, f := range folders {
		os.Remove(filepath.Join(dir, f))
	}
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
