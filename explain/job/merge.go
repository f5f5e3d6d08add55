package job

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/explain"
	"github.com/explaind/explaind/internal/atomicfile"
	"github.com/explaind/explaind/internal/localpath"
	"github.com/explaind/explaind/internal/lock"
	"github.com/explaind/explaind/setting"
	"github.com/explaind/explaind/shard"
	"github.com/explaind/explaind/tensor"
)

// A part is one shard output opened for merging.
type part struct {
	dir string
	out *epkfile.Output
	rec *epkfile.Shard
	sum Summary
}

// Merge joins the outputs of shards of one EPK job (Options.Shard), in
// any order, into the whole job's output in out, and returns its
// summary. The shards must be of one run, one build and one job (the same
// settings and test samples), finished, and cover the job's test samples
// exactly once; Merge refuses anything else before it writes, naming the
// shard and the problem.
//
// Arrays per test sample are concatenated in test order: they equal the
// whole job's bit for bit. Arrays summed over test samples (the queries in
// outputs that do not keep the test axis, and kernel_reg, which the kernel
// preset writes from the validation's reg) are added up from the shards'
// float64 partial sums and stored as the whole job stores them, so that
// they round once: they differ from the whole job's by the order of the
// float64 additions only (for a kernel, whose products run in the run's
// precision, by that precision's rounding of the per-shard products). The
// manifest is the whole job's but for its creation time; summary.json is
// recomputed by the job's own summarize over all test samples, with the
// shards' summed wall time, the largest peak memory of the shards and of the
// merge itself (which holds the merged arrays), and KernelResidual
// recomputed from the merged kernel and the validation's data (for a
// kernel that keeps the test axis, the largest of the shards', each
// relative to its own shard's largest contribution).
//
// The merge holds out's lock while it writes; a merge killed midway is
// rerun by the same command, and a rerun of a finished merge returns its
// summary.
func Merge(out string, shards []string, log io.Writer) (*Summary, error) {
	if out == "" {
		return nil, setting.Errorf("name the output directory (%v)", setting.Name("Out"))
	}
	if len(shards) == 0 {
		return nil, errors.New("name the shard outputs to merge")
	}
	parts := make([]*part, len(shards))
	for i, dir := range shards {
		p, err := openShard(dir, out)
		if err != nil {
			return nil, err
		}
		parts[i] = p
	}
	if err := checkShards(parts); err != nil {
		return nil, err
	}
	merged, idx, labels, err := combine(parts)
	if err != nil {
		return nil, err
	}
	m := parts[0].out.Manifest
	whole := parts[0].rec.WholeJob
	l, err := lock.Dir(out)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	o := Options{Run: m.Run, Out: out, Presets: m.Presets, Quadrature: m.Quadrature, Precision: m.Precision,
		From: m.Steps[0], To: m.Steps[1], Software: m.Software, Log: log}
	switch err := mergeState(out, whole, len(parts), log); {
	case errors.Is(err, errFinished):
		s, err := finished(o)
		if err == nil {
			os.Remove(filepath.Join(out, mergeFile))
		}
		return s, err
	case err != nil:
		return nil, err
	}
	t := target{key: whole, fp: m.RunFingerprint, split: m.Test.Split, idx: idx, labels: labels, tol: m.Tol, peakRSS: PeakRSS()}
	for _, p := range parts {
		t.peakRSS = max(t.peakRSS, p.sum.PeakRSSBytes)
	}
	s, err := write(o, t, merged)
	if err != nil {
		return nil, err
	}
	os.Remove(filepath.Join(out, mergeFile))
	if log != nil {
		fmt.Fprintf(log, "merged %d shards (%d test samples) into %s\n", len(parts), merged.Samples, out)
	}
	return s, nil
}

// IsOutput reports whether dir holds an EPK output (complete or not) or
// the saved state of an unfinished EPK job: what Merge takes for a shard,
// or refuses as an unfinished one.
func IsOutput(dir string) bool {
	if _, err := os.Stat(statePath(dir)); err == nil {
		return true
	}
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	var m epkfile.Manifest
	return err == nil && json.Unmarshal(raw, &m) == nil && m.Format == epkfile.Format && m.RunFingerprint != "" && m.Arrays != nil
}

// openShard opens the finished shard output dir with its summary.
func openShard(dir, out string) (*part, error) {
	if a, b := filepath.Clean(dir), filepath.Clean(out); a == b || sameDir(a, b) {
		return nil, setting.Errorf("the shard %s is the output directory: choose another %v", dir, setting.Name("Out"))
	}
	if _, err := os.Stat(filepath.Join(dir, "manifest.json")); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(statePath(dir)); err == nil {
			return nil, fmt.Errorf("shard %s: %w: it holds the saved state of an interrupted job; rerun its `explaind epk` command to finish it",
				dir, epkfile.ErrIncomplete)
		}
	}
	eo, err := epkfile.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w", dir, err)
	}
	rec := eo.Manifest.Shard
	if rec == nil {
		return nil, fmt.Errorf("%s is the output of a whole EPK job, not of a shard (its manifest records no shard): there is nothing to merge", dir)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "summary.json"))
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w", dir, err)
	}
	p := &part{dir: dir, out: eo, rec: rec}
	if err := json.Unmarshal(raw, &p.sum); err != nil {
		return nil, fmt.Errorf("shard %s: summary.json: %w", dir, err)
	}
	return p, nil
}

// sameDir reports whether the directories a and b both exist and are one.
func sameDir(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// checkShards checks that the parts are shards of one job that cover its
// test samples exactly once, and sorts them by their blocks.
func checkShards(parts []*part) error {
	first := parts[0]
	fm := first.out.Manifest
	for _, p := range parts {
		m, r := p.out.Manifest, p.rec
		if m.RunFingerprint != fm.RunFingerprint {
			return fmt.Errorf("shard %s explains another run than shard %s (run fingerprint %s, not %s; it names run %s)",
				p.dir, first.dir, m.RunFingerprint, fm.RunFingerprint, m.Run)
		}
		if m.Software != fm.Software {
			return fmt.Errorf("shard %s was computed by another build than shard %s (%q, not %q): merge the shards of one build",
				p.dir, first.dir, m.Software, fm.Software)
		}
		if what, a, b := otherSetting(m, fm); what != "" {
			return fmt.Errorf("shard %s has other settings than shard %s: %s %v, not %v", p.dir, first.dir, what, a, b)
		}
		if r.WholeJob != first.rec.WholeJob {
			return fmt.Errorf("shard %s belongs to another job than shard %s (whole-job key %s, not %s): another selection of test samples",
				p.dir, first.dir, r.WholeJob, first.rec.WholeJob)
		}
		lo, hi, err := shard.Shard{Index: r.Index, Count: r.Count}.Range(r.Of)
		if err != nil || [2]int{lo, hi} != r.Samples || len(r.TestIndices) != hi-lo || m.Test.Count != hi-lo {
			return fmt.Errorf("shard %s: its shard record is inconsistent (shard %d/%d of %d test samples covering %d:%d with %d indices, %d samples in the output)",
				p.dir, r.Index, r.Count, r.Of, r.Samples[0], r.Samples[1], len(r.TestIndices), m.Test.Count)
		}
		if idx, err := p.out.Ints("test_indices"); err != nil || !slices.Equal(idx, r.TestIndices) {
			return fmt.Errorf("shard %s: its test_indices are not the test samples its shard record names (%v)", p.dir, err)
		}
	}
	slices.SortStableFunc(parts, func(a, b *part) int { return a.rec.Samples[0] - b.rec.Samples[0] })
	for i := 1; i < len(parts); i++ {
		a, b := parts[i-1], parts[i]
		if a.rec.Index == b.rec.Index && a.rec.Count == b.rec.Count {
			return fmt.Errorf("shard %s duplicates shard %s (both are shard %d/%d)", b.dir, a.dir, b.rec.Index, b.rec.Count)
		}
		if b.rec.Samples[0] < a.rec.Samples[1] {
			return fmt.Errorf("shard %s (shard %d/%d, test samples %d:%d) overlaps shard %s (shard %d/%d, test samples %d:%d)",
				b.dir, b.rec.Index, b.rec.Count, b.rec.Samples[0], b.rec.Samples[1],
				a.dir, a.rec.Index, a.rec.Count, a.rec.Samples[0], a.rec.Samples[1])
		}
	}
	return missing(parts)
}

// missing returns an error naming the shards (or, for shards of several
// counts, the test samples) that no part covers.
func missing(parts []*part) error {
	of := parts[0].rec.Of
	var gaps [][2]int
	at := 0
	for _, p := range parts {
		if p.rec.Samples[0] > at {
			gaps = append(gaps, [2]int{at, p.rec.Samples[0]})
		}
		at = p.rec.Samples[1]
	}
	if at < of {
		gaps = append(gaps, [2]int{at, of})
	}
	if len(gaps) == 0 {
		return nil
	}
	var samples []string
	for _, g := range gaps {
		samples = append(samples, fmt.Sprintf("%d:%d", g[0], g[1]))
	}
	n := parts[0].rec.Count
	for _, p := range parts {
		if p.rec.Count != n {
			return fmt.Errorf("the shards leave test samples %s of %d uncovered: merge them with the shards that cover them",
				strings.Join(samples, ", "), of)
		}
	}
	var miss []string
	for i := 0; i < n; i++ {
		if !slices.ContainsFunc(parts, func(p *part) bool { return p.rec.Index == i }) {
			miss = append(miss, fmt.Sprint(i))
		}
	}
	return fmt.Errorf("missing shards: %s of %d (test samples %s of %d); merge them too once they are computed",
		strings.Join(miss, ", "), n, strings.Join(samples, ", "), of)
}

// otherSetting returns the first setting in which the manifests a and b
// differ, with its two values, or "".
func otherSetting(a, b epkfile.Manifest) (string, any, any) {
	for _, s := range []struct {
		name string
		a, b any
	}{
		{"presets", a.Presets, b.Presets}, {"steps", a.Steps, b.Steps}, {"precision", a.Precision, b.Precision},
		{"quadrature", a.Quadrature, b.Quadrature}, {"tolerance", a.Tol, b.Tol}, {"test split", a.Test.Split, b.Test.Split},
		{"classes", a.Classes, b.Classes}, {"tensors", a.Tensors, b.Tensors}, {"tensor shapes", a.TensorShapes, b.TensorShapes},
		{"test samples of the whole job", a.Shard.Of, b.Shard.Of},
	} {
		if ja, _ := json.Marshal(s.a); string(ja) != string(mustJSON(s.b)) {
			return s.name, s.a, s.b
		}
	}
	return "", nil, nil
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// combine reads the parts (sorted by their blocks) and joins them into the
// whole job's explain.Output, test indices and labels.
func combine(parts []*part) (_ *explain.Output, idx, labels []int, err error) {
	m := parts[0].out.Manifest
	X, C, S := parts[0].rec.Of, m.Classes, m.Steps[1]-m.Steps[0]
	out := &explain.Output{Samples: X, Classes: C, From: m.Steps[0], To: m.Steps[1], TensorNames: m.Tensors,
		TensorShapes: m.TensorShapes}
	vals := make([]explain.Validation, len(parts))
	var nodes float64
	for i, p := range parts {
		v, err := readValidation(p.out)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("shard %s: %w", p.dir, err)
		}
		vals[i] = v
		l, err := p.out.Ints("test_labels")
		if err != nil {
			return nil, nil, nil, fmt.Errorf("shard %s: %w", p.dir, err)
		}
		idx, labels = append(idx, p.rec.TestIndices...), append(labels, l...)
		out.Wall += time.Duration(p.sum.WallSeconds * float64(time.Second))
		out.Validation.MaxResid = math.Max(out.Validation.MaxResid, p.sum.MaxUpdateResidual)
		// The shard's node count, which its summary holds per sample and
		// step.
		nodes += math.Round(p.sum.NodesPerSampleStep * float64(p.out.Manifest.Test.Count*S))
	}
	if len(labels) != X {
		return nil, nil, nil, fmt.Errorf("the shards hold %d test labels, want %d", len(labels), X)
	}
	v := &out.Validation
	v.Nodes = nodes / float64(X*S)
	// Certified when every shard is; the misses from the shards'
	// summaries (whose lists may be cut at MaxListedMisses), by position
	// in the merged test samples.
	v.Certified = true
	offset := 0
	for _, p := range parts {
		v.Certified = v.Certified && p.sum.Certified
		v.MissedCount += p.sum.MissedCount
		at := make(map[int]int, len(p.rec.TestIndices))
		for j, ti := range p.rec.TestIndices {
			at[ti] = j
		}
		for _, ms := range p.sum.Missed {
			j, ok := at[ms.TestIndex]
			if !ok {
				return nil, nil, nil, fmt.Errorf("shard %s: its summary lists a miss of test sample %d, which it does not hold", p.dir, ms.TestIndex)
			}
			r := ms.Residual
			if ms.NaN {
				r = math.NaN()
			}
			v.Missed = append(v.Missed, explain.Miss{Step: ms.Step, Sample: offset + j, Residual: r})
		}
		offset += len(p.rec.TestIndices)
	}
	xc := func(i int) []int { return []int{parts[i].out.Manifest.Test.Count, C} }
	for _, r := range validationArrays {
		if r.field != nil {
			*r.field(v) = concat(len(parts), func(i int) []float64 { return *r.field(&vals[i]) }, xc, 0)
		}
	}
	v.StepChange = concat(len(parts), func(i int) []float64 { return vals[i].StepChange },
		func(i int) []int { return []int{S, parts[i].out.Manifest.Test.Count} }, 1)
	v.StepMaxCompleteness = make([]float64, S)
	for _, pv := range vals {
		for s, c := range pv.StepMaxCompleteness {
			v.StepMaxCompleteness[s] = math.Max(v.StepMaxCompleteness[s], c)
		}
	}
	var shardResidual float64
	for _, p := range parts {
		shardResidual = math.Max(shardResidual, p.sum.KernelResidual)
	}
	for _, op := range outputs {
		if !slices.Contains(m.Presets, op.preset) {
			continue
		}
		rs := make([]*explain.Result, len(parts))
		for i, p := range parts {
			if rs[i], err = op.read(p.out, op.query); err != nil {
				return nil, nil, nil, fmt.Errorf("shard %s: %w", p.dir, err)
			}
		}
		r, err := join(rs)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("the shards' %s: %w", op.query.Name, err)
		}
		out.Results = append(out.Results, r)
		out.KernelResidual = math.Max(out.KernelResidual, kernelResidual(r, v.Data, labels, C, shardResidual))
	}
	return out, idx, labels, nil
}

// join joins the shards' results of a query: along the test axis when the
// query keeps it, by adding them up otherwise.
func join(rs []*explain.Result) (*explain.Result, error) {
	r0 := rs[0]
	ax := slices.Index(r0.Axes, "test")
	for _, r := range rs {
		if !slices.Equal(r.Axes, r0.Axes) || len(r.Shape) != len(r0.Shape) || len(r.Tensors) != len(r0.Tensors) {
			return nil, fmt.Errorf("axes %v (%d tensors), not %v (%d tensors)", r.Axes, len(r.Tensors), r0.Axes, len(r0.Tensors))
		}
		for d := range r.Shape {
			if d != ax && r.Shape[d] != r0.Shape[d] {
				return nil, fmt.Errorf("shape %v, not %v", r.Shape, r0.Shape)
			}
		}
		for t, a := range r.Tensors {
			if !slices.Equal(a.Shape[len(r.Shape):], r0.Tensors[t].Shape[len(r0.Shape):]) {
				return nil, fmt.Errorf("tensor %d has shape %v, not %v", t, a.Shape, r0.Tensors[t].Shape)
			}
		}
	}
	out := &explain.Result{Query: r0.Query, Axes: r0.Axes, Shape: slices.Clone(r0.Shape), Labels: r0.Labels,
		TensorNames: r0.TensorNames}
	data := func(i int) []float64 { return rs[i].Data }
	shape := func(i int) []int { return rs[i].Shape }
	if ax < 0 {
		out.Data = sum(len(rs), data)
		for t := range r0.Tensors {
			out.Tensors = append(out.Tensors, &tensor.Dense[float64]{Shape: r0.Tensors[t].Shape,
				Data: sum(len(rs), func(i int) []float64 { return rs[i].Tensors[t].Data })})
		}
		return out, nil
	}
	out.Shape[ax] = 0
	for _, r := range rs {
		out.Shape[ax] += r.Shape[ax]
	}
	if r0.Data != nil {
		out.Data = concat(len(rs), data, shape, ax)
	}
	for t := range r0.Tensors {
		sh := slices.Clone(r0.Tensors[t].Shape)
		sh[ax] = out.Shape[ax]
		out.Tensors = append(out.Tensors, &tensor.Dense[float64]{Shape: sh, Data: concat(len(rs),
			func(i int) []float64 { return rs[i].Tensors[t].Data }, func(i int) []int { return rs[i].Tensors[t].Shape }, ax)})
	}
	return out, nil
}

// sum returns the elementwise sum of n arrays data(i) of one length, added
// in order.
func sum(n int, data func(i int) []float64) []float64 {
	if data(0) == nil {
		return nil
	}
	out := slices.Clone(data(0))
	for i := 1; i < n; i++ {
		for j, x := range data(i) {
			out[j] += x
		}
	}
	return out
}

// concat joins n row-major arrays data(i) of shapes shape(i), which agree
// but on the axis ax, along that axis.
func concat(n int, data func(i int) []float64, shape func(i int) []int, ax int) []float64 {
	var out []float64
	outer := 1
	for _, d := range shape(0)[:ax] {
		outer *= d
	}
	for o := 0; o < outer; o++ {
		for i := 0; i < n; i++ {
			block := len(data(i)) / outer
			out = append(out, data(i)[o*block:(o+1)*block]...)
		}
	}
	return out
}

// kernelResidual is explain's Output.KernelResidual of a merged sweep
// (data kernel) result r: max over its rows |Σ kernel − the forward data
// contributions| relative to the largest of those, the forward data
// contributions computed from the validation's data [X, C] (the job sums
// them in another order, so that this differs from the whole job's by
// rounding). A kernel that keeps the test axis is stored in float32, too
// coarse to recompute it: for it (and for any kind of query this does not
// recompute) it returns the shards' largest, shards.
func kernelResidual(r *explain.Result, data []float64, labels []int, C int, shards float64) float64 {
	q := r.Query
	switch {
	case q.Keep&explain.Train == 0 || q.Keep&explain.Group != 0:
		return 0
	case q.Keep&explain.Test != 0 || q.Keep&explain.Param != 0 || q.Abs:
		return shards
	}
	rows := 1
	if q.Keep&explain.Class != 0 && q.Classes != explain.TrueClass {
		rows = C
	}
	fwd := make([]float64, rows)
	for x, y := range labels {
		for k := range rows {
			switch {
			case q.Classes == explain.TrueClass:
				fwd[k] += data[x*C+y]
			case rows == C:
				fwd[k] += data[x*C+k]
			default:
				for c := 0; c < C; c++ {
					fwd[k] += data[x*C+c]
				}
			}
		}
	}
	scale := 1e-300
	for _, v := range fwd {
		scale = math.Max(scale, math.Abs(v))
	}
	var worst float64
	n := len(r.Data) / rows
	for row := range rows {
		var s float64
		for _, v := range r.Data[row*n : (row+1)*n] {
			s += v
		}
		worst = math.Max(worst, math.Abs(s-fwd[row])/scale)
	}
	return worst
}

// mergeFile marks an output directory a merge is writing.
const mergeFile = ".epk-merge.json"

// mergeMark is the contents of mergeFile.
type mergeMark struct {
	WholeJob string `json:"whole_job"`
}

// mergeState checks the output directory of a merge of the job whole: it
// returns errFinished if it holds the job's finished output, nil (having
// marked it) if it is empty or holds a killed merge of the same job, and
// an error otherwise.
func mergeState(out, whole string, shards int, log io.Writer) error {
	for _, name := range []string{"manifest.json", mergeFile} {
		if err := localpath.Check(out, name); err != nil {
			return fmt.Errorf("the output directory's %s: %v", name, err)
		}
	}
	if raw, err := os.ReadFile(filepath.Join(out, "manifest.json")); err == nil {
		var om epkfile.Manifest
		if json.Unmarshal(raw, &om) == nil && om.Complete {
			if om.Job == whole && om.Shard == nil {
				return errFinished
			}
			return setting.Errorf("%s already holds a finished EPK output; choose another %v or remove it", out, setting.Name("Out"))
		}
	}
	mark := filepath.Join(out, mergeFile)
	if raw, err := os.ReadFile(mark); err == nil {
		var mm mergeMark
		if err := json.Unmarshal(raw, &mm); err != nil || mm.WholeJob != whole {
			return setting.Errorf("%s holds an unfinished merge of other shards; rerun that merge, or choose another %v",
				out, setting.Name("Out"))
		}
		if log != nil {
			fmt.Fprintf(log, "%s holds an unfinished merge of these shards: merging them again\n", out)
		}
		return nil
	}
	if entries, err := lock.ReadDir(out); err == nil && len(entries) > 0 {
		return setting.Errorf("%s exists and is not an output of this merge; choose another %v", out, setting.Name("Out"))
	}
	raw, _ := json.Marshal(mergeMark{WholeJob: whole})
	return atomicfile.WriteBytes(mark, append(raw, '\n'))
}
