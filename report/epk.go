package report

import (
	"errors"
	"fmt"
	"github.com/explaind/explaind/internal/localpath"
	"image/color"
	"io/fs"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// groups maps tensors to layer groups: the group names in model order and
// each tensor's group index. The groups are the models' (models.ModuleOf):
// for the modulo transformer its modules embedding, attention, linear1,
// linear2 and decoder, for ResNet-9 its top-level layers, and for tensors
// of other models their modules.
func groups(tensors []string) (names []string, of []int) {
	of = make([]int, len(tensors))
	for t, name := range tensors {
		g := models.ModuleOf(name)
		i := slices.Index(names, g)
		if i < 0 {
			i = len(names)
			names = append(names, g)
		}
		of[t] = i
	}
	return names, of
}

// epkData reads the arrays of one output, checking their ranks.
type epkData struct {
	o *epkfile.Output
}

// has reports whether the output holds every named array.
func (e epkData) has(names ...string) bool {
	for _, n := range names {
		if _, ok := e.o.Manifest.Arrays[n]; !ok {
			return false
		}
	}
	return true
}

// array reads the named array and checks that it has the given rank.
func (e epkData) array(name string, rank int) (*tensor.Dense[float64], error) {
	a, err := e.o.Array(name)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if len(a.Shape) != rank {
		return nil, fmt.Errorf("report: %s: array %s has shape %v, want %d axes", e.o.Dir, name, a.Shape, rank)
	}
	return a, nil
}

// optional reads the named array like array, or returns nil when the
// output lacks it.
func (e epkData) optional(name string, rank int) (*tensor.Dense[float64], error) {
	if !e.has(name) {
		return nil, nil
	}
	return e.array(name, rank)
}

// present returns those of the named arrays that the output holds, in the
// order given.
func (e epkData) present(names ...string) []string {
	var out []string
	for _, n := range names {
		if e.has(n) {
			out = append(out, n)
		}
	}
	return out
}

// epkSection describes one EPK output: what it covers, its validation
// table and the figures of the presets it holds. n numbers the output
// (from 1) in the page and in its figures' names.
func epkSection(n int, o *epkfile.Output) (*section, []*Figure, error) {
	mf := o.Manifest
	e := epkData{o}
	s := &section{ID: fmt.Sprintf("epk%d", n), Title: fmt.Sprintf("EPK output %s", o.Dir)}
	s.Intro = fmt.Sprintf("The exact path kernel of steps %d to %d of the run, on %d %s samples and %d classes, in %s with quadrature %s (tolerance %g). Presets: %s.",
		mf.Steps[0], mf.Steps[1], mf.Test.Count, mf.Test.Split, mf.Classes, mf.Precision, mf.Quadrature, mf.Tol, strings.Join(mf.Presets, ", "))
	s.Tables = append(s.Tables, &table{Title: "Output (manifest.json)", Rows: []field{
		{"directory", o.Dir},
		{"run", mf.Run},
		{"run fingerprint", mf.RunFingerprint},
		{"created", mf.Created},
		{"software", mf.Software},
		{"presets", strings.Join(mf.Presets, ", ")},
		{"steps", fmt.Sprintf("[%d, %d)", mf.Steps[0], mf.Steps[1])},
		{"precision", mf.Precision},
		{"quadrature", mf.Quadrature},
		{"tolerance", strconv.FormatFloat(mf.Tol, 'g', -1, 64)},
		{"test samples", fmt.Sprintf("%d from %q", mf.Test.Count, mf.Test.Split)},
		{"classes", strconv.Itoa(mf.Classes)},
		{"parameter tensors", strconv.Itoa(len(mf.Tensors))},
		{"arrays", strconv.Itoa(len(mf.Arrays))},
	}})
	t, err := validationTable(e)
	if err != nil {
		return nil, nil, err
	}
	if t != nil {
		s.Tables = append(s.Tables, t)
	} else {
		s.Notes = append(s.Notes, "No validation table: the output has no summary.json and no validation arrays.")
	}
	pre := fmt.Sprintf("epk%d_", n)
	var figs []*Figure
	for _, draw := range []func(string, epkData) ([]*Figure, error){
		stepFigures, groupFigures, balanceFigures, validationFigures, componentFigures, pruningFigures, kernelFigures,
	} {
		f, err := draw(pre, e)
		if err != nil {
			return nil, nil, err
		}
		figs = append(figs, f...)
	}
	if len(figs) == 0 {
		s.Notes = append(s.Notes, "The output holds no array this report can plot.")
	}
	return s, figs, nil
}

// validationTable is DIR/summary.json as a table, or, without one, the
// agreement of the EPK prediction with the model computed from the
// validation arrays. It is nil when there is neither.
func validationTable(e epkData) (*table, error) {
	path := filepath.Join(e.o.Dir, "summary.json")
	raw, err := localpath.ReadFile(e.o.Dir, "summary.json")
	if err == nil {
		fs, err := flatFields(raw)
		if err != nil {
			return nil, fmt.Errorf("report: %s: %v", path, err)
		}
		// The known rows first, in this order; any others follow in file
		// order.
		order := []string{"argmax_agreement", "accuracy", "mean_abs_delta", "max_abs_delta", "std_delta",
			"kl_div", "max_completeness_residual", "wall_seconds", "peak_rss_bytes"}
		return &table{Title: "Validation (summary.json)", Rows: reorder(fs, order)}, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("report: %w", err)
	}
	if !e.has("model", "epk", "test_labels") {
		return nil, nil
	}
	a, labels, err := labelled(e, "model", "epk")
	if err != nil {
		return nil, err
	}
	model, epk := a[0], a[1]
	X, C := model.Shape[0], model.Shape[1]
	agree, correct := 0, 0
	var sum, sum2, maxAbs float64
	for x := range X {
		m, p := model.Data[x*C:(x+1)*C], epk.Data[x*C:(x+1)*C]
		am, ap := nn.Argmax(m), nn.Argmax(p)
		if am == ap {
			agree++
		}
		if ap == labels[x] {
			correct++
		}
		for c := range C {
			d := p[c] - m[c]
			sum += math.Abs(d)
			sum2 += d * d
			maxAbs = math.Max(maxAbs, math.Abs(d))
		}
	}
	k := float64(X * C)
	mean := sum / k
	rows := []field{
		{"argmax_agreement", fmtFloat(float64(agree) / float64(X))},
		{"accuracy", fmtFloat(float64(correct) / float64(X))},
		{"mean_abs_delta", fmtFloat(mean)},
		{"max_abs_delta", fmtFloat(maxAbs)},
		{"rms_delta", fmtFloat(math.Sqrt(sum2 / k))},
	}
	for _, r := range []struct {
		array, row string
		rank       int
	}{
		{"step_max_completeness", "max_completeness_residual", 1},
		{"quad_residual", "max_abs_quad_residual", 2},
	} {
		a, err := e.optional(r.array, r.rank)
		if err != nil {
			return nil, err
		}
		if a != nil {
			rows = append(rows, field{r.row, fmtFloat(maxAbsOf(a.Data))})
		}
	}
	return &table{Title: "Validation (computed from the arrays)", Rows: rows,
		Note: "This output has no summary.json; the report computed these from model, epk and test_labels (delta = EPK − model over all test samples and classes)."}, nil
}

func maxAbsOf(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = math.Max(m, math.Abs(x))
	}
	return m
}

// sumOf returns the sum of v, added in order.
func sumOf(v []float64) float64 {
	sum := 0.0
	for _, x := range v {
		sum += x
	}
	return sum
}

// meanOf returns the mean of v (0 when v is empty).
func meanOf(v []float64) float64 { return sumOf(v) / float64(max(len(v), 1)) }

func fmtFloat(x float64) string { return strconv.FormatFloat(x, 'g', 6, 64) }

// stepAxis returns the run's step numbers of an output's S steps.
func stepAxis(e epkData, S int) []float64 {
	x := make([]float64, S)
	for s := range x {
		x[s] = float64(e.o.Manifest.Steps[0] + s)
	}
	return x
}

// rowMeans returns the mean of each row of a [S, X] array.
func rowMeans(a *tensor.Dense[float64]) []float64 {
	S, X := a.Shape[0], a.Shape[1]
	out := make([]float64, S)
	for s := range S {
		out[s] = meanOf(a.Data[s*X : (s+1)*X])
	}
	return out
}

func cumsum(v []float64) []float64 {
	out := make([]float64, len(v))
	acc := 0.0
	for i, x := range v {
		acc += x
		out[i] = acc
	}
	return out
}

// readSame reads arrays that must all have the same shape of the given
// rank.
func readSame(e epkData, rank int, names ...string) ([]*tensor.Dense[float64], error) {
	out := make([]*tensor.Dense[float64], len(names))
	for i, n := range names {
		a, err := e.array(n, rank)
		if err != nil {
			return nil, err
		}
		if i > 0 && !slices.Equal(a.Shape, out[0].Shape) {
			return nil, fmt.Errorf("report: %s: %s has shape %v but %s has %v", e.o.Dir, n, a.Shape, names[0], out[0].Shape)
		}
		out[i] = a
	}
	return out, nil
}

// labelled reads [X, C] arrays of one shape (see readSame) and the test
// labels, checking that there is a label per row and that each is one of
// the C classes.
func labelled(e epkData, names ...string) ([]*tensor.Dense[float64], []int, error) {
	a, err := readSame(e, 2, names...)
	if err != nil {
		return nil, nil, err
	}
	labels, err := e.o.Ints("test_labels")
	if err != nil {
		return nil, nil, fmt.Errorf("report: %w", err)
	}
	X, C := a[0].Shape[0], a[0].Shape[1]
	if len(labels) != X {
		return nil, nil, fmt.Errorf("report: %s: test_labels has %d entries, %s %d rows", e.o.Dir, len(labels), names[0], X)
	}
	for _, y := range labels {
		if y < 0 || y >= C {
			return nil, nil, fmt.Errorf("report: %s: test label %d is outside [0, %d)", e.o.Dir, y, C)
		}
	}
	return a, labels, nil
}

// trueClass returns each row's entry of the true class: a[x, labels[x]]
// of a [X, C] array.
func trueClass(a *tensor.Dense[float64], labels []int) []float64 {
	C := a.Shape[1]
	out := make([]float64, len(labels))
	for x, y := range labels {
		out[x] = a.Data[x*C+y]
	}
	return out
}

// stepFigures draws the per-step change the EPK predicts
// (step_data + step_reg + step_resid) against the real change
// (step_change), and the completeness residual per step.
func stepFigures(pre string, e epkData) ([]*Figure, error) {
	var figs []*Figure
	var resid, steps []float64
	if e.has("step_change", "step_data", "step_reg", "step_resid") {
		a, err := readSame(e, 2, "step_change", "step_data", "step_reg", "step_resid")
		if err != nil {
			return nil, err
		}
		S, X := a[0].Shape[0], a[0].Shape[1]
		steps = stepAxis(e, S)
		pred := tensor.New[float64](S, X)
		resid = make([]float64, S)
		for i := range pred.Data {
			pred.Data[i] = a[1].Data[i] + a[2].Data[i] + a[3].Data[i]
			s := i / max(X, 1)
			resid[s] = math.Max(resid[s], math.Abs(pred.Data[i]-a[0].Data[i]))
		}
		p, err := linePlot("Per-step change of the true class's log-probability", "step", "mean over test samples", false, 0, []series{
			{name: "model's change", x: steps, y: rowMeans(a[0]), color: 0},
			{name: "EPK: data + reg + resid", x: steps, y: rowMeans(pred), dash: true, color: 1},
		})
		figs, err = addChart(figs, p, err, pre+"step_change", "Per-step change: EPK against the model",
			fmt.Sprintf("For each step, the mean over the %d test samples of the change of the true class's log-probability: the model's real change (solid) and the sum of the step's EPK terms (dashed). The two lines should coincide.", X),
			figHeight)
		if err != nil {
			return nil, err
		}
	}
	var comp []float64
	a, err := e.optional("step_max_completeness", 1)
	if err != nil {
		return nil, err
	}
	if a != nil {
		comp = a.Data
		if steps == nil || len(steps) != len(comp) {
			steps = stepAxis(e, len(comp))
			if resid != nil && len(resid) != len(comp) {
				resid = nil
			}
		}
	}
	if resid == nil && comp == nil {
		return figs, nil
	}
	const floor = 1e-18
	var ss []series
	if resid != nil {
		ss = append(ss, series{name: "|EPK − model|, true class, max over samples", x: steps, y: resid, color: 0})
	}
	if comp != nil {
		ss = append(ss, series{name: "step_max_completeness (all classes)", x: steps, y: comp, dash: true, color: 2})
	}
	p, err := linePlot("Completeness residual per step", "step", "absolute residual (log scale)", true, floor, ss)
	return addChart(figs, p, err, pre+"completeness", "Completeness residual per step",
		"How far each step's EPK terms are from the step's real change (the step identity: the contributions of step s add up to f(θ after step s) − f(θ before it)): a free error estimate of the quadrature. Values below 1e-18 are drawn at 1e-18.",
		figHeight)
}

// groupFigures draws each layer group's contribution per step and summed
// over training, from step_tensor [S, T, X].
func groupFigures(pre string, e epkData) ([]*Figure, error) {
	a, err := e.optional("step_tensor", 3)
	if err != nil || a == nil {
		return nil, err
	}
	S, T, X := a.Shape[0], a.Shape[1], a.Shape[2]
	tensors := e.o.Manifest.Tensors
	if len(tensors) != T {
		tensors = make([]string, T)
		for t := range tensors {
			tensors[t] = fmt.Sprintf("tensor %d", t)
		}
	}
	names, of := groups(tensors)
	per := make([][]float64, len(names))
	for g := range per {
		per[g] = make([]float64, S)
	}
	for s := range S {
		for t := range T {
			per[of[t]][s] += meanOf(a.Data[(s*T+t)*X : (s*T+t+1)*X])
		}
	}
	steps := stepAxis(e, S)
	var step, cum []series
	for g, name := range names {
		step = append(step, series{name: name, x: steps, y: per[g], color: -1})
		cum = append(cum, series{name: name, x: steps, y: cumsum(per[g]), color: -1})
	}
	p, err := linePlot("Contribution of each layer group per step", "step", "mean over test samples", false, 0, step)
	figs, err := addChart(nil, p, err, pre+"groups_step", "Layer groups: contribution per step",
		fmt.Sprintf("For each step, the mean over the %d test samples of the step's contribution to the true class's log-probability through each layer group's parameters (step_tensor summed over the group's tensors).", X),
		figHeight*1.15)
	if err != nil {
		return nil, err
	}
	p, err = linePlot("Cumulative contribution of each layer group", "step", "mean over test samples", false, 0, cum)
	return addChart(figs, p, err, pre+"groups_cumulative", "Layer groups: contribution summed over training",
		"The running sum over steps of the figure above: how much each layer group has moved the true class's log-probability up to each step. Changes of slope mark the phases of training (memorization, circuit formation, cleanup in a grokking run).",
		figHeight*1.15)
}

// balanceFigures draws the balance of the data and regularization terms:
// over training, from the per-step arrays, and in total per test sample
// class, from the validation arrays.
func balanceFigures(pre string, e epkData) ([]*Figure, error) {
	var figs []*Figure
	if e.has("step_data", "step_reg") {
		names := append([]string{"step_data", "step_reg"}, e.present("step_resid", "step_change")...)
		a, err := readSame(e, 2, names...)
		if err != nil {
			return nil, err
		}
		steps := stepAxis(e, a[0].Shape[0])
		labels := map[string]string{"step_data": "data (training gradients)", "step_reg": "regularization (weight decay)",
			"step_resid": "residual", "step_change": "model's change"}
		var ss []series
		for i, n := range names {
			ss = append(ss, series{name: labels[n], x: steps, y: cumsum(rowMeans(a[i])), dash: n == "step_change", color: i})
		}
		p, err := linePlot("Data against regularization, summed over steps", "step", "mean over test samples", false, 0, ss)
		figs, err = addChart(figs, p, err, pre+"balance_steps", "Balance of data and regularization over training",
			"The running sum over steps of the mean over test samples of each EPK term of the true class's log-probability: the part carried by the training data's gradients, the part carried by weight decay, and the residual, against the model's own change.",
			figHeight)
		if err != nil {
			return nil, err
		}
	}
	if e.has("f0", "model", "data", "reg", "test_labels") {
		names := append([]string{"f0", "model", "data", "reg"}, e.present("resid", "epk")...)
		a, labels, err := labelled(e, names...)
		if err != nil {
			return nil, err
		}
		mean := map[string]float64{}
		for i, n := range names {
			mean[n] = meanOf(trueClass(a[i], labels))
		}
		bars := []string{"model − f0", "data", "reg"}
		vals := []float64{mean["model"] - mean["f0"], mean["data"], mean["reg"]}
		if _, ok := mean["resid"]; ok {
			bars, vals = append(bars, "resid"), append(vals, mean["resid"])
		}
		if _, ok := mean["epk"]; ok {
			bars, vals = append(bars, "EPK − f0"), append(vals, mean["epk"]-mean["f0"])
		}
		p, err := barPlot("Terms of the EPK prediction (true class, mean over test samples)", "log-probability", bars, vals)
		figs, err = addChart(figs, p, err, pre+"balance_terms", "Balance of data and regularization in the prediction",
			fmt.Sprintf("The model's change from its initial output (model − f0) and the EPK terms that add up to it: the data term, the regularization term and the residual, each the mean over the %d test samples of the true class's log-probability.", len(labels)),
			figHeight)
		if err != nil {
			return nil, err
		}
	}
	return figs, nil
}

// validationFigures draws the EPK prediction against the model's output
// of the true class, one point per test sample.
func validationFigures(pre string, e epkData) ([]*Figure, error) {
	if !e.has("model", "epk", "test_labels") {
		return nil, nil
	}
	a, labels, err := labelled(e, "model", "epk")
	if err != nil {
		return nil, err
	}
	model, epk := trueClass(a[0], labels), trueClass(a[1], labels)
	var xy plotter.XYs
	lo, hi := math.Inf(1), math.Inf(-1)
	for x, m := range model {
		p := epk[x]
		if math.IsNaN(m) || math.IsInf(m, 0) || math.IsNaN(p) || math.IsInf(p, 0) {
			continue
		}
		xy = append(xy, plotter.XY{X: m, Y: p})
		lo, hi = math.Min(lo, math.Min(m, p)), math.Max(hi, math.Max(m, p))
	}
	if len(xy) == 0 {
		return nil, nil
	}
	if lo == hi {
		lo, hi = lo-1, hi+1
	}
	p, err := linePlot("EPK prediction against the model (true class)", "model's log-probability", "EPK's log-probability", false, 0,
		[]series{{name: "y = x", x: []float64{lo, hi}, y: []float64{lo, hi}, dash: true, rgb: color.Gray{Y: 110}}})
	if err != nil {
		return nil, err
	}
	sc, err := plotter.NewScatter(xy)
	if err != nil {
		return nil, err
	}
	sc.Color = plotutil.Color(0)
	sc.Radius = vg.Points(2)
	p.p.Add(sc)
	p.add("test samples", sc)
	return addChart(nil, p, nil, pre+"validation", "EPK prediction against the model",
		fmt.Sprintf("Each of the %d test samples' true-class log-probability: the trained model's output against the EPK's reconstruction of it (f0 + data + reg + resid). Points on the diagonal are exact.", len(labels)),
		figHeight*1.2)
}

// tensorGroupSums sums, over each layer group, a value computed per
// tensor from the arrays named prefix+tensor. It returns nil names when
// the manifest lists no tensors or the output lacks any of the arrays.
func tensorGroupSums(e epkData, prefix string, per func(a *tensor.Dense[float64]) float64) (names []string, sums []float64, counts []int, err error) {
	tensors := e.o.Manifest.Tensors
	if len(tensors) == 0 {
		return nil, nil, nil, nil
	}
	for _, t := range tensors {
		if !e.has(prefix + t) {
			return nil, nil, nil, nil
		}
	}
	names, of := groups(tensors)
	sums = make([]float64, len(names))
	counts = make([]int, len(names))
	for t, name := range tensors {
		a, err := e.o.Array(prefix + name)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("report: %w", err)
		}
		sums[of[t]] += per(a)
		counts[of[t]] += a.Numel()
	}
	return names, sums, counts, nil
}

// componentFigures draws each layer group's share of the component scores
// (scores/<tensor> [X, shape...]).
func componentFigures(pre string, e epkData) ([]*Figure, error) {
	names, sums, counts, err := tensorGroupSums(e, "scores/", func(a *tensor.Dense[float64]) float64 {
		sum := 0.0
		for _, v := range a.Data {
			sum += math.Abs(v)
		}
		return sum / float64(max(a.Dim(0), 1))
	})
	if err != nil || names == nil {
		return nil, err
	}
	p, err := barPlot("Component scores per layer group", "mean over test samples of Σ |score|", names, sums)
	return addChart(nil, p, err, pre+"components", "Component attribution per layer group",
		"For each layer group, the mean over test samples of the sum of its parameters' absolute scores (each parameter's contribution summed over steps and classes): how much the group's parameters move the output. Parameters per group: "+groupCounts(names, counts, e.o.Manifest.Test.Count)+".",
		figHeight)
}

// pruningFigures draws each layer group's share of the pruning importance
// (importance/<tensor>).
func pruningFigures(pre string, e epkData) ([]*Figure, error) {
	names, sums, counts, err := tensorGroupSums(e, "importance/", func(a *tensor.Dense[float64]) float64 {
		return sumOf(a.Data)
	})
	if err != nil || names == nil {
		return nil, err
	}
	if total := sumOf(sums); total != 0 {
		for i := range sums {
			sums[i] /= total
		}
	}
	p, err := barPlot("Pruning importance per layer group", "share of the total importance", names, sums)
	return addChart(nil, p, err, pre+"pruning", "Pruning importance per layer group",
		"Each layer group's share of the summed pruning importance of its parameters (per parameter, the sum over test samples and classes of the absolute value of its contribution summed over steps). Parameters per group: "+groupCounts(names, counts, 0)+".",
		figHeight)
}

// groupCounts lists the number of parameters per group ("embedding 7360,
// ..."); perSample divides array sizes that include a test-sample axis.
func groupCounts(names []string, counts []int, perSample int) string {
	parts := make([]string, len(names))
	for i, n := range names {
		c := counts[i]
		if perSample > 0 {
			c /= perSample
		}
		parts[i] = fmt.Sprintf("%s %d", n, c)
	}
	return strings.Join(parts, ", ")
}

// kernelFigures draws the data kernel kernel [C, N] as a heat map.
func kernelFigures(pre string, e epkData) ([]*Figure, error) {
	k, err := e.optional("kernel", 2)
	if err != nil || k == nil {
		return nil, err
	}
	C, N := k.Shape[0], k.Shape[1]
	caption := fmt.Sprintf("Each training sample's contribution (columns, %d samples) to each class's log-probability (rows, %d classes), summed over the test samples and over steps. Red raises the class, blue lowers it; the colour scale is symmetric about zero.", N, C)
	caption += fmt.Sprintf(" Σ kernel = %s", fmtFloat(sumOf(k.Data)))
	for _, n := range []string{"kernel_reg", "kernel_carried"} {
		a, err := e.optional(n, 1)
		if err != nil {
			return nil, err
		}
		if a != nil {
			caption += fmt.Sprintf(", Σ %s = %s", n, fmtFloat(sumOf(a.Data)))
		}
	}
	caption += "."
	f, err := heatmap(pre+"kernel", "Data kernel: training samples against classes", caption,
		"training sample", "class", grid{rows: C, cols: N, v: k.Data})
	if err != nil || f == nil {
		return nil, err
	}
	return []*Figure{f}, nil
}
