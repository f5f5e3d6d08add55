package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/testrun"
)

// The tiny modulo run of main_test.go (swapTestRun): p = 7 (C = 9 classes),
// 20 training and 8 validation samples, AdamW in float32, 6 full-batch
// steps, 10 parameter tensors.
const (
	epkTestX = 8
	epkTestC = 9
	epkTestS = 6
	epkTestN = 20
	epkTestT = 10
)

// epkTestRun runs `explaind epk --quiet` with the given flags.
func epkTestRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return run(append([]string{"epk", "--quiet"}, args...)...)
}

// epkTestOutput runs `explaind epk` (which must succeed) and returns the
// opened output and its summary.json as generic JSON.
func epkTestOutput(t *testing.T, runDir, out string, args ...string) (*epkfile.Output, map[string]any) {
	t.Helper()
	msg, err := epkTestRun(t, append([]string{"--run", runDir, "--out", out}, args...)...)
	if err != nil {
		t.Fatalf("epk %v: %v\n%s", args, err, msg)
	}
	if !strings.Contains(msg, "EPK output written to "+out) {
		t.Errorf("epk %v: output lacks the closing line: %s", args, msg)
	}
	o := testrun.OpenEPK(t, out)
	return o, testrun.EPKSummary(t, out)
}

// epkTestArray reads an array and checks its shape.
func epkTestArray(t *testing.T, o *epkfile.Output, name string, shape ...int) []float64 {
	t.Helper()
	a, err := o.Array(name)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.Shape, shape) {
		t.Fatalf("%s: shape %v, want %v", name, a.Shape, shape)
	}
	return a.Data
}

func epkTestNum(t *testing.T, s map[string]any, k string) float64 {
	t.Helper()
	v, ok := s[k].(float64)
	if !ok {
		t.Fatalf("summary.json: %s is %v", k, s[k])
	}
	return v
}

// epkTestMaxAbs returns max |a − b| and max |b|.
func epkTestMaxAbs(a, b []float64) (diff, norm float64) {
	for i := range a {
		diff = math.Max(diff, math.Abs(a[i]-b[i]))
		norm = math.Max(norm, math.Abs(b[i]))
	}
	return diff, norm
}

// TestEPKModuloEndToEnd: `explaind epk` with every preset but reference on
// the tiny modulo run, float64 evaluation with the default adaptive rule;
// every array is checked against the others by the identities that tie
// them together.
func TestEPKModuloEndToEnd(t *testing.T) {
	root := t.TempDir()
	runDir := swapTestRun(t)
	out := filepath.Join(root, "epk")
	o, s := epkTestOutput(t, runDir, out, "--preset", "validation,grokking,components,pruning,kernel", "--precision", "float64")
	m := o.Manifest

	// The manifest.
	rm, err := history.ReadManifest(runDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.CheckRun(rm); err != nil {
		t.Error(err)
	}
	if !slices.Equal(m.Presets, []string{"validation", "grokking", "components", "pruning", "kernel"}) || m.Steps != [2]int{0, epkTestS} ||
		m.Precision != "float64" || m.Quadrature != "adaptive" || m.Tol != 1e-6 || m.Test != (epkfile.TestSet{Split: "val", Count: epkTestX}) ||
		m.Classes != epkTestC || len(m.Tensors) != epkTestT || len(m.TensorShapes) != epkTestT {
		t.Errorf("manifest: presets %v, steps %v, precision %s, quadrature %s, tol %g, test %+v, %d classes, %d tensors",
			m.Presets, m.Steps, m.Precision, m.Quadrature, m.Tol, m.Test, m.Classes, len(m.Tensors))
	}
	for i, p := range rm.Params {
		if i < len(m.Tensors) && (m.Tensors[i] != p.Name || !slices.Equal(m.TensorShapes[i], p.Shape)) {
			t.Errorf("tensor %d: %s %v, want the run's %s %v", i, m.Tensors[i], m.TensorShapes[i], p.Name, p.Shape)
		}
	}
	want := []string{"test_indices", "test_labels", "f0", "model", "epk", "data", "reg", "resid", "quad_residual",
		"step_max_completeness", "step_change", "step_tensor", "step_data", "step_reg", "step_resid", "kernel", "kernel_reg"}
	for _, name := range m.Tensors {
		want = append(want, "scores/"+name, "importance/"+name)
	}
	var got []string
	for name := range m.Arrays {
		got = append(got, name)
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("arrays %v,\nwant %v", got, want)
	}

	// The test set: the first 8 validation samples.
	idx, err := o.Ints("test_indices")
	if err != nil || !slices.Equal(idx, []int{0, 1, 2, 3, 4, 5, 6, 7}) {
		t.Errorf("test_indices %v (%v)", idx, err)
	}
	labels, err := o.Ints("test_labels")
	if err != nil || len(labels) != epkTestX {
		t.Fatalf("test_labels %v (%v)", labels, err)
	}
	for _, y := range labels {
		if y < 0 || y >= 7 { // sums mod 7
			t.Errorf("test label %d outside 0..6", y)
		}
	}

	X, C, S, N, T := epkTestX, epkTestC, epkTestS, epkTestN, epkTestT
	f0 := epkTestArray(t, o, "f0", X, C)
	model := epkTestArray(t, o, "model", X, C)
	pred := epkTestArray(t, o, "epk", X, C)
	dat := epkTestArray(t, o, "data", X, C)
	reg := epkTestArray(t, o, "reg", X, C)
	resid := epkTestArray(t, o, "resid", X, C)
	quad := epkTestArray(t, o, "quad_residual", X, C)

	// The summary's statistics, against the arrays.
	maxAbs := epkTestNum(t, s, "max_abs_delta")
	if epkTestNum(t, s, "argmax_agreement") != 1 || !(maxAbs <= 1e-5) {
		t.Errorf("float64, adaptive: argmax agreement %v, max |Δ| %.3g; want 1 and ≤ 1e-5", s["argmax_agreement"], maxAbs)
	}
	d, _ := epkTestMaxAbs(pred, model)
	if !(d <= 1e-5) || !(math.Abs(d-maxAbs) <= 1e-15) {
		t.Errorf("max |epk − model| from the arrays %.3g, summary %.3g; want equal and ≤ 1e-5", d, maxAbs)
	}
	var sum float64
	agree, acc := 0, 0
	for x := range X {
		for c := range C {
			sum += math.Abs(pred[x*C+c] - model[x*C+c])
		}
		am, ae := epkTestArgmax(model[x*C:(x+1)*C]), epkTestArgmax(pred[x*C:(x+1)*C])
		if am == ae {
			agree++
		}
		if ae == labels[x] {
			acc++
		}
	}
	if mean := epkTestNum(t, s, "mean_abs_delta"); !(math.Abs(mean-sum/float64(X*C)) <= 1e-15) || mean == 0 {
		t.Errorf("mean_abs_delta %.6g, from the arrays %.6g", mean, sum/float64(X*C))
	}
	if agree != X || epkTestNum(t, s, "accuracy") != float64(acc)/float64(X) {
		t.Errorf("from the arrays: %d of %d argmaxes agree, accuracy %d/%d; summary accuracy %v", agree, X, acc, X, s["accuracy"])
	}
	if kl := epkTestNum(t, s, "kl_div"); !(kl <= 1e-9) {
		t.Errorf("kl_div %.3g, want ≤ 1e-9 for |Δ| ≤ 1e-5", kl)
	}
	var ident, sumDiff float64
	for i := range model {
		ident = math.Max(ident, math.Abs(f0[i]+dat[i]+reg[i]+resid[i]-quad[i]-model[i]))
		sumDiff = math.Max(sumDiff, math.Abs(pred[i]-(f0[i]+dat[i]+reg[i]+resid[i])))
	}
	if !(ident <= 1e-9) || !(sumDiff <= 1e-12) {
		t.Errorf("f0 + data + reg + resid − quad_residual − model: %.3g (want ≤ 1e-9); epk − (f0 + data + reg + resid): %.3g", ident, sumDiff)
	}
	if dq, _ := epkTestMaxAbs(quad, epkTestSub(pred, model)); !(dq <= 1e-12) {
		t.Errorf("quad_residual differs from epk − model by %.3g", dq)
	}
	// The training moved the model: a test of nothing would pass too.
	if dm, _ := epkTestMaxAbs(model, f0); dm < 1e-3 {
		t.Errorf("the run barely moved the model (max |model − f0| %.3g)", dm)
	}
	if dr, _ := epkTestMaxAbs(reg, make([]float64, len(reg))); dr == 0 {
		t.Error("weight decay 4 left no regularization contribution")
	}

	// Per step: completeness and the change of the true class.
	stepMax := epkTestArray(t, o, "step_max_completeness", S)
	if mc := epkTestNum(t, s, "max_completeness_residual"); mc != slices.Max(stepMax) || !(mc <= 1e-5) {
		t.Errorf("max_completeness_residual %.3g, max of step_max_completeness %.3g", mc, slices.Max(stepMax))
	}
	change := epkTestArray(t, o, "step_change", S, X)
	for x := range X {
		var c float64
		for st := range S {
			c += change[st*X+x]
		}
		y := labels[x]
		if w := model[x*C+y] - f0[x*C+y]; !(math.Abs(c-w) <= 1e-9) {
			t.Errorf("sample %d: Σ_s step_change %.9g, model − f0 at the true class %.9g", x, c, w)
		}
	}

	// Grokking: the steps' parts add up to the validation arrays at the
	// true class, and the tensors to data + reg.
	sd := epkTestArray(t, o, "step_data", S, X)
	sr := epkTestArray(t, o, "step_reg", S, X)
	sres := epkTestArray(t, o, "step_resid", S, X)
	stens := epkTestArray(t, o, "step_tensor", S, T, X)
	var worstPart, worstTensor float64
	for x := range X {
		y := labels[x]
		var a, b, c float64
		for st := range S {
			a += sd[st*X+x]
			b += sr[st*X+x]
			c += sres[st*X+x]
		}
		for _, p := range []struct {
			name      string
			got, want float64
		}{{"data", a, dat[x*C+y]}, {"reg", b, reg[x*C+y]}, {"resid", c, resid[x*C+y]},
			{"data+reg+resid", a + b + c, dat[x*C+y] + reg[x*C+y] + resid[x*C+y]}} {
			e := math.Abs(p.got - p.want)
			worstPart = math.Max(worstPart, e)
			if !(e <= 1e-9*math.Max(1, math.Abs(p.want))) {
				t.Errorf("sample %d: Σ_s step_%s %.12g, %s at the true class %.12g", x, p.name, p.got, p.name, p.want)
			}
		}
		for st := range S {
			var tot, mag float64
			for k := range T {
				v := stens[(st*T+k)*X+x]
				tot += v
				mag += math.Abs(v)
			}
			w := sd[st*X+x] + sr[st*X+x]
			// step_tensor is stored as float32 (the manifest says so):
			// each value carries a relative rounding of 2^-24, so a
			// float64 bound such as 1e-9 cannot hold; allow T float32
			// roundings.
			e := math.Abs(tot - w)
			worstTensor = math.Max(worstTensor, e/math.Max(mag, 1e-300))
			if !(e <= float64(T)*0x1p-24*mag+1e-12) {
				t.Errorf("step %d, sample %d: Σ_tensor step_tensor %.9g, step_data + step_reg %.9g (Σ|.| %.3g)", st, x, tot, w, mag)
			}
		}
	}
	if !strings.Contains(m.Arrays["step_tensor"].Description, "float32") || m.Arrays["step_tensor"].Dtype != "float32" {
		t.Errorf("step_tensor: dtype %s, description %q", m.Arrays["step_tensor"].Dtype, m.Arrays["step_tensor"].Description)
	}

	// Components: each sample's per-parameter scores add up to its
	// class-summed contribution (data + reg + resid).
	scoreSum := make([]float64, X)
	scoreMag := make([]float64, X)
	scoreByElem := map[string][]float64{}
	for k, name := range m.Tensors {
		shape := append([]int{X}, m.TensorShapes[k]...)
		v := epkTestArray(t, o, "scores/"+name, shape...)
		n := len(v) / X
		el := make([]float64, n)
		for x := range X {
			for j := range n {
				scoreSum[x] += v[x*n+j]
				scoreMag[x] += math.Abs(v[x*n+j])
				el[j] += v[x*n+j]
			}
		}
		scoreByElem[name] = el
	}
	var worstScore float64
	for x := range X {
		var w float64
		for c := range C {
			w += dat[x*C+c] + reg[x*C+c] + resid[x*C+c]
		}
		e := math.Abs(scoreSum[x] - w)
		worstScore = math.Max(worstScore, e/scoreMag[x])
		if !(e <= 1e-6*scoreMag[x]) { // float32 storage
			t.Errorf("sample %d: Σ scores %.9g, Σ_c (data + reg + resid) %.9g (Σ|scores| %.3g)", x, scoreSum[x], w, scoreMag[x])
		}
	}

	// Pruning: Σ_{x,c} |Σ_s …| ≥ |Σ_x Σ_c Σ_s …| = |Σ_x scores| per element.
	for k, name := range m.Tensors {
		imp := epkTestArray(t, o, "importance/"+name, m.TensorShapes[k]...)
		var tot float64
		for j, v := range imp {
			tot += v
			if v < 0 || !(math.Abs(scoreByElem[name][j]) <= v*(1+1e-5)+1e-12) {
				t.Errorf("importance/%s[%d] = %.6g below |Σ_x scores| = %.6g", name, j, v, math.Abs(scoreByElem[name][j]))
				break
			}
		}
		if tot == 0 {
			t.Errorf("importance/%s is all zero", name)
		}
	}

	// Kernel: the data kernel summed over training samples is the data
	// part summed over test samples, per class; kernel_reg the reg part.
	kern := epkTestArray(t, o, "kernel", C, N)
	kreg := epkTestArray(t, o, "kernel_reg", C)
	var worstKernel, norm float64
	wantK := make([]float64, C)
	for c := range C {
		for x := range X {
			wantK[c] += dat[x*C+c]
		}
		norm = math.Max(norm, math.Abs(wantK[c]))
	}
	for c := range C {
		var k, r float64
		for n := range N {
			k += kern[c*N+n]
		}
		for x := range X {
			r += reg[x*C+c]
		}
		worstKernel = math.Max(worstKernel, math.Abs(k-wantK[c])/norm)
		if !(math.Abs(kreg[c]-r) <= 1e-12*math.Max(1, math.Abs(r))) {
			t.Errorf("class %d: kernel_reg %.12g, Σ_x reg %.12g", c, kreg[c], r)
		}
	}
	if !(worstKernel <= 1e-5) {
		t.Errorf("Σ_n kernel differs from Σ_x data by %.3g (relative to max |Σ_x data| %.3g), want ≤ 1e-5", worstKernel, norm)
	}
	if kr := epkTestNum(t, s, "kernel_residual"); !(kr <= 1e-5) {
		t.Errorf("kernel_residual %.3g", kr)
	}
	t.Logf("float64 adaptive: max |epk − model| %.3g, mean %.3g, max completeness residual %.3g, identity %.3g; Σ_s step parts vs validation %.3g; "+
		"step_tensor vs data+reg %.3g (relative, float32 storage); scores vs contributions %.3g (relative); kernel vs data %.3g (relative)",
		maxAbs, s["mean_abs_delta"], s["max_completeness_residual"], ident, worstPart, worstTensor, worstScore, worstKernel)

	// A fixed midpoint rule does not locate the ReLU switches: its
	// completeness residual is larger than the adaptive rule's.
	mid, ms := epkTestOutput(t, runDir, filepath.Join(root, "mid"), "--quadrature", "midpoint:10")
	if mid.Manifest.Quadrature != "midpoint:10" || !slices.Equal(mid.Manifest.Presets, []string{"validation"}) {
		t.Errorf("midpoint manifest: quadrature %q, presets %v", mid.Manifest.Quadrature, mid.Manifest.Presets)
	}
	adaptiveRes, midRes := epkTestNum(t, s, "max_completeness_residual"), epkTestNum(t, ms, "max_completeness_residual")
	if !(midRes > adaptiveRes) {
		t.Errorf("midpoint:10 completeness residual %.3g, not larger than adaptive's %.3g", midRes, adaptiveRes)
	}
	// The model's outputs do not depend on the rule, up to the rounding
	// of products whose shapes follow the rule's rows (OpenBLAS's Haswell
	// kernels on an AMD EPYC differed in the last bit, 4.4e-16).
	if dm, _ := epkTestMaxAbs(epkTestArray(t, mid, "model", X, C), model); !(dm <= 1e-12) {
		t.Errorf("model differs between the rules by %.3g", dm)
	}
	if nodes := epkTestNum(t, ms, "nodes_per_sample_step"); nodes != 10 {
		t.Errorf("midpoint:10: %v nodes per sample and step, want 10", nodes)
	}
	t.Logf("midpoint:10: max completeness residual %.3g (adaptive %.3g), max |Δ| %.3g", midRes, adaptiveRes, ms["max_abs_delta"])

	// Float32 evaluation.
	f32, fs := epkTestOutput(t, runDir, filepath.Join(root, "f32"), "--precision", "float32")
	if f32.Manifest.Precision != "float32" || f32.Manifest.Tol != 1e-4 {
		t.Errorf("float32 manifest: precision %s, tol %g; want float32, 1e-4", f32.Manifest.Precision, f32.Manifest.Tol)
	}
	if d := epkTestNum(t, fs, "max_abs_delta"); !(d <= 1e-3) || epkTestNum(t, fs, "argmax_agreement") != 1 {
		t.Errorf("float32: max |Δ| %.3g, argmax agreement %v; want ≤ 1e-3 and 1", d, fs["argmax_agreement"])
	}
	if dm, _ := epkTestMaxAbs(epkTestArray(t, f32, "model", X, C), model); !(dm <= 1e-5) {
		t.Errorf("float32 model outputs differ from float64's by %.3g", dm)
	}
	t.Logf("float32: max |Δ| %.3g, max completeness residual %.3g", fs["max_abs_delta"], fs["max_completeness_residual"])

	// A step range: 0:2 then 2:6 chain (f0 of the second is the model of
	// the first; the contributions add up).
	a, _ := epkTestOutput(t, runDir, filepath.Join(root, "s02"), "--steps", "0:2", "--preset", "validation,grokking")
	b, _ := epkTestOutput(t, runDir, filepath.Join(root, "s26"), "--steps", "2:", "--preset", "validation,grokking")
	if a.Manifest.Steps != [2]int{0, 2} || b.Manifest.Steps != [2]int{2, 6} {
		t.Errorf("step ranges %v, %v; want [0 2], [2 6]", a.Manifest.Steps, b.Manifest.Steps)
	}
	if dm, _ := epkTestMaxAbs(epkTestArray(t, a, "model", X, C), epkTestArray(t, b, "f0", X, C)); !(dm <= 1e-12) {
		t.Errorf("model after steps 0:2 differs from f0 of steps 2:6 by %.3g", dm)
	}
	if dm, _ := epkTestMaxAbs(epkTestArray(t, b, "model", X, C), model); !(dm <= 1e-12) {
		t.Errorf("model after steps 2:6 differs from the whole run's by %.3g", dm)
	}
	ad, bd := epkTestArray(t, a, "data", X, C), epkTestArray(t, b, "data", X, C)
	if dd, _ := epkTestMaxAbs(epkTestAdd(ad, bd), dat); !(dd <= 1e-9) {
		t.Errorf("data of 0:2 plus 2:6 differs from the whole run's by %.3g", dd)
	}
	bsd := epkTestArray(t, b, "step_data", 4, X)
	if dd, _ := epkTestMaxAbs(bsd, sd[2*X:]); !(dd <= 1e-9) {
		t.Errorf("step_data of steps 2:6 differs from the whole run's steps 2..5 by %.3g", dd)
	}

	// The test chunk does not change any result (8 samples in chunks of
	// 3, 3, 2).
	ch, _ := epkTestOutput(t, runDir, filepath.Join(root, "chunk3"), "--preset", "validation,grokking,components,pruning,kernel", "--chunk", "3")
	for name, info := range m.Arrays {
		if info.Dtype == "int64" {
			continue
		}
		x := epkTestArray(t, o, name, info.Shape...)
		y := epkTestArray(t, ch, name, info.Shape...)
		if d, n := epkTestMaxAbs(y, x); !(d <= 1e-12*math.Max(1, n)) {
			t.Errorf("--chunk 3: %s differs from the default chunk's by %.3g (max |.| %.3g)", name, d, n)
		}
	}
	// Chosen test samples, in any order and repeated, get the rows of the
	// whole validation set.
	sel, _ := epkTestOutput(t, runDir, filepath.Join(root, "sel"), "--test-indices", "5,1,1", "--preset", "validation,components")
	if idx, err := sel.Ints("test_indices"); err != nil || !slices.Equal(idx, []int{5, 1, 1}) {
		t.Errorf("test_indices %v (%v), want [5 1 1]", idx, err)
	}
	if l, err := sel.Ints("test_labels"); err != nil || !slices.Equal(l, []int{labels[5], labels[1], labels[1]}) {
		t.Errorf("test_labels %v (%v), want those of samples 5, 1, 1", l, err)
	}
	for name, full := range map[string][]float64{"f0": f0, "model": model, "epk": pred, "data": dat, "reg": reg, "resid": resid} {
		v := epkTestArray(t, sel, name, 3, C)
		for r, x := range []int{5, 1, 1} {
			if d, _ := epkTestMaxAbs(v[r*C:(r+1)*C], full[x*C:(x+1)*C]); !(d <= 1e-12) {
				t.Errorf("--test-indices 5,1,1: %s row %d differs from sample %d's by %.3g", name, r, x, d)
			}
		}
	}
}

func epkTestArgmax(v []float64) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

func epkTestSub(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] - b[i]
	}
	return out
}

func epkTestAdd(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] + b[i]
	}
	return out
}

// epkTestCNNRun returns a tiny CNN run on fabricated CIFAR-2 data (20 test
// images; trainTestRun): ResNet-9 at width/32, SGD with momentum 0.9 and
// weight decay 5e-3, the triangle schedule, random flips; 4 steps.
func epkTestCNNRun(t *testing.T) string {
	t.Helper()
	dir := trainTestRun(t, "cnn", "--width-div", "32", "--train-size", "16",
		"--batch-size", "8", "--epochs", "2", "--peak-epoch", "1", "--lr", "0.05", "--momentum", "0.9", "--weight-decay", "0.005",
		"--schedule", "triangle", "--flip=true", "--checkpoint-every", "4", "--quiet")
	m, err := history.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	flips, lrs := 0, []float64{}
	for _, s := range m.Steps {
		if strings.Trim(s.Flips, "0") != "" {
			flips++
		}
		lrs = append(lrs, s.LR)
	}
	if len(m.Steps) != 4 || flips == 0 || !slices.Equal(lrs, []float64{0, 0.025, 0.05, 0.025}) {
		t.Fatalf("CNN run: %d steps, %d with flips, learning rates %v; want 4 steps with flips on the triangle 0, 0.025, 0.05, 0.025", len(m.Steps), flips, lrs)
	}
	return dir
}

// TestEPKCNN: the adaptive (bisection) rule on a tiny CNN, with SGD's
// momentum carrying weight decay across steps.
func TestEPKCNN(t *testing.T) {
	root := t.TempDir()
	runDir := epkTestCNNRun(t)
	o, s := epkTestOutput(t, runDir, filepath.Join(root, "epk"), "--preset", "validation", "--test-size", "6")
	// A CNN's evaluation images are its test split.
	if o.Manifest.Test != (epkfile.TestSet{Split: "test", Count: 6}) || o.Manifest.Classes != 2 || o.Manifest.Steps != [2]int{0, 4} {
		t.Errorf("manifest: test %+v, %d classes, steps %v", o.Manifest.Test, o.Manifest.Classes, o.Manifest.Steps)
	}
	maxAbs := epkTestNum(t, s, "max_abs_delta")
	if epkTestNum(t, s, "argmax_agreement") != 1 || !(maxAbs <= 1e-4) {
		t.Errorf("CNN, float64 adaptive: argmax agreement %v, max |Δ| %.3g; want 1 and ≤ 1e-4", s["argmax_agreement"], maxAbs)
	}
	model := epkTestArray(t, o, "model", 6, 2)
	pred := epkTestArray(t, o, "epk", 6, 2)
	f0 := epkTestArray(t, o, "f0", 6, 2)
	reg := epkTestArray(t, o, "reg", 6, 2)
	if d, _ := epkTestMaxAbs(pred, model); !(d <= 1e-4) || !(math.Abs(d-maxAbs) <= 1e-15) {
		t.Errorf("max |epk − model| %.3g from the arrays, summary %.3g", d, maxAbs)
	}
	if dm, _ := epkTestMaxAbs(model, f0); dm < 1e-4 {
		t.Errorf("the CNN run barely moved the model (max |model − f0| %.3g)", dm)
	}
	if dr, _ := epkTestMaxAbs(reg, make([]float64, len(reg))); dr == 0 {
		t.Error("weight decay 5e-3 left no regularization contribution")
	}
	t.Logf("CNN (width/32, 4 SGD steps, 6 test images), float64 adaptive: max |Δ| %.3g, mean %.3g, max completeness residual %.3g, %v nodes per sample and step",
		maxAbs, s["mean_abs_delta"], s["max_completeness_residual"], s["nodes_per_sample_step"])

	// Steps 0:2 and 2:4 chain to the whole run: SGD's carried momentum
	// (and the weight decay inside it) is brought to step 2 before 2:4.
	a, _ := epkTestOutput(t, runDir, filepath.Join(root, "s02"), "--test-size", "6", "--steps", "0:2")
	b, _ := epkTestOutput(t, runDir, filepath.Join(root, "s24"), "--test-size", "6", "--steps", "2:4")
	if d, _ := epkTestMaxAbs(epkTestArray(t, a, "model", 6, 2), epkTestArray(t, b, "f0", 6, 2)); !(d <= 1e-12) {
		t.Errorf("model after steps 0:2 differs from f0 of 2:4 by %.3g", d)
	}
	if d, _ := epkTestMaxAbs(epkTestArray(t, b, "model", 6, 2), model); !(d <= 1e-12) {
		t.Errorf("model after steps 2:4 differs from the whole run's by %.3g", d)
	}
	for _, name := range []string{"data", "reg", "resid"} {
		whole := epkTestArray(t, o, name, 6, 2)
		sum := epkTestAdd(epkTestArray(t, a, name, 6, 2), epkTestArray(t, b, name, 6, 2))
		if d, n := epkTestMaxAbs(sum, whole); !(d <= 1e-9*math.Max(1, n)) {
			t.Errorf("%s of steps 0:2 plus 2:4 differs from the whole run's by %.3g (max |.| %.3g)", name, d, n)
		}
	}

	// Exact quadrature needs the model's ReLU switches, which ResNet-9
	// does not expose.
	bad := filepath.Join(root, "exact")
	if _, err := epkTestRun(t, "--run", runDir, "--out", bad, "--quadrature", "exact:3"); err == nil || !strings.Contains(err.Error(), "--quadrature exact needs a model that exposes its ReLU switches") {
		t.Errorf("exact:3 on a CNN run: %v", err)
	}
	if _, err := os.Stat(bad); err == nil {
		t.Error("the refused exact:3 job left an output directory")
	}
}

// TestEPKBadInput: every bad input is an error, with a message naming the
// problem, and leaves no finished output behind.
func TestEPKBadInput(t *testing.T) {
	root := t.TempDir()
	runDir := swapTestRun(t)
	finished := filepath.Join(root, "finished")
	if _, s := epkTestOutput(t, runDir, finished, "--test-size", "2"); s["test_samples"] != 2.0 {
		t.Fatalf("test_samples %v, want 2", s["test_samples"])
	}
	before, err := os.ReadFile(filepath.Join(finished, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	// A copy of the run with steps[1].lr edited in its manifest.
	tampered := testrun.Copy(t, runDir)
	mpath := filepath.Join(tampered, "manifest.json")
	b, err := os.ReadFile(mpath)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte(`"steps": [`))
	if i < 0 {
		t.Fatal("the manifest has no steps")
	}
	lr := []byte(`"lr": 0.01,`)
	j := i + bytes.Index(b[i:], lr)                  // steps[0]
	j = j + len(lr) + bytes.Index(b[j+len(lr):], lr) // steps[1]
	b = slices.Concat(b[:j], []byte(`"lr": 0.011,`), b[j+len(lr):])
	if err := os.WriteFile(mpath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if tm, err := history.ReadManifest(tampered); err != nil || tm.Steps[1].LR != 0.011 || tm.Steps[0].LR != 0.01 || tm.Steps[2].LR != 0.01 {
		t.Fatalf("tampering went wrong: %v", err)
	}
	// A directory that is not an EPK output.
	stranger := filepath.Join(root, "stranger")
	if err := os.MkdirAll(stranger, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stranger, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}

	out := filepath.Join(root, "out")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--run", tampered}, "does not replay (run `explaind verify " + tampered + "`)"},
		{[]string{"--test-indices", "0,99999"}, "test index 99999 is out of range: the val split has 8 samples (0 … 7)"},
		{[]string{"--test-indices", "-1"}, "test index -1 is out of range"},
		{[]string{"--test-indices", "0,x"}, "invalid --test-indices"},
		{[]string{"--test-indices", "0,1", "--test-size", "2"}, "not both"},
		{[]string{"--test-size", "-1"}, "invalid --test-size -1: the val split has 8 samples"},
		{[]string{"--test-size", "9"}, "invalid --test-size 9"},
		{[]string{"--memory", "1KiB"}, "over the memory ceiling of"},
		{[]string{"--memory", "lots"}, "invalid --memory"},
		{[]string{"--quadrature", "simpson"}, `invalid --quadrature "simpson"`},
		{[]string{"--quadrature", "midpoint:0"}, "positive integer"},
		{[]string{"--quadrature", "adaptive:3"}, "adaptive takes no point count"},
		{[]string{"--quadrature", "gauss:300"}, "300 quadrature points, want 1..256"},
		{[]string{"--precision", "float16"}, `invalid --precision "float16"`},
		{[]string{"--tol", "-1"}, "invalid --tol"},
		{[]string{"--steps", "5:2"}, "invalid --steps 5:2: the run has 6 steps"},
		{[]string{"--steps", "0:7"}, "invalid --steps 0:7"},
		{[]string{"--steps", "3"}, `invalid --steps "3"`},
		{[]string{"--steps", "2:6", "--preset", "kernel"}, "start at step 0"},
		{[]string{"--preset", "nope"}, `invalid --preset "nope"`},
		{[]string{"--preset", "validation,nope"}, `invalid --preset "nope"`},
		{[]string{"--preset", "history", "--snapshot-every", "0"}, "invalid --snapshot-every 0: want a snapshot interval of at least 1 step"},
		{[]string{"--snapshot-every", "10"}, "add --preset history"},
		{[]string{"--test-split", "bogus"}, `invalid --test-split "bogus": this run's splits are val and train`},
		{[]string{"--run", filepath.Join(root, "nothing")}, "nothing"},
	}
	for _, c := range cases {
		args := append([]string{"--run", runDir, "--out", out}, c.args...) // a later --run wins
		msg, err := epkTestRun(t, args...)
		t.Logf("epk %v: %v", c.args, err)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("epk %v: got %v, want an error mentioning %q\n%s", c.args, err, c.want, msg)
		}
		if _, err := epkfile.Open(out); err == nil {
			t.Errorf("epk %v: left a finished EPK output", c.args)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("epk %v: a refused job created its output directory", c.args)
			os.RemoveAll(out)
		}
	}
	// --memory sets the process's soft memory limit; give it back.
	debug.SetMemoryLimit(math.MaxInt64)

	// A finished output is not overwritten, nor a stranger's directory.
	for _, c := range []struct {
		dir, want string
	}{
		{finished, finished + " already holds a finished EPK output; choose another --out or remove it"},
		{stranger, stranger + " exists and is not an EPK output of this job"},
	} {
		if _, err := epkTestRun(t, "--run", runDir, "--out", c.dir); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("--out %s: %v, want an error mentioning %q", c.dir, err, c.want)
		}
	}
	after, err := os.ReadFile(filepath.Join(finished, "manifest.json"))
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("the refused job changed the finished output's manifest (%v)", err)
	}
	testrun.OpenEPK(t, finished)
	if entries, _ := os.ReadDir(stranger); len(entries) != 1 {
		t.Errorf("the refused job wrote into the stranger's directory: %d entries", len(entries))
	}
}

// TestEPKPreflightStamp checks when `explaind epk` skips its pre-flight
// replay: a run trained in one go by this executable carries a stamp and
// skips it; without the stamp the job replays the range first and then
// stamps the run, so the next job skips it. (TestEPKBadInput's tampered
// copy carries a stale stamp and must still be refused.)
func TestEPKPreflightStamp(t *testing.T) {
	root := t.TempDir()
	runDir := testrun.Copy(t, swapTestRun(t)) // the test removes its stamp
	stamp := filepath.Join(runDir, history.StampFile)
	if _, err := os.Stat(stamp); err != nil {
		t.Fatalf("training left no stamp: %v", err)
	}
	epk := func(out string) string {
		t.Helper()
		msg, err := epkTestRun(t, "--run", runDir, "--out", filepath.Join(root, out), "--test-size", "2", "--preset", "validation")
		if err != nil {
			t.Fatalf("epk: %v\n%s", err, msg)
		}
		return msg
	}
	if msg := epk("a"); !strings.Contains(msg, "trained by this executable") || !strings.Contains(msg, "skipping the pre-flight replay") {
		t.Errorf("a freshly trained run was not recognized by its stamp:\n%s", msg)
	}
	if err := os.Remove(stamp); err != nil {
		t.Fatal(err)
	}
	if msg := epk("b"); !strings.Contains(msg, "replaying steps 0:6") || !strings.Contains(msg, "no verification stamp") {
		t.Errorf("an unstamped run skipped its pre-flight replay:\n%s", msg)
	}
	if msg := epk("c"); !strings.Contains(msg, "replayed by this executable") {
		t.Errorf("the pre-flight replay did not stamp the run:\n%s", msg)
	}
}

// TestComponentsHistoryAndTrainSplit runs the component history and the
// training set's side from the command line: epk with the history preset,
// epk --test-split train, then components with --train-epk and
// --history-steps, which writes the new files and names them in its
// summary.
func TestComponentsHistoryAndTrainSplit(t *testing.T) {
	root := t.TempDir()
	runDir := swapTestRun(t)
	val, tr, out := filepath.Join(root, "val"), filepath.Join(root, "train"), filepath.Join(root, "components")
	o, _ := epkTestOutput(t, runDir, val, "--preset", "components,history", "--snapshot-every", "2")
	if info, ok := o.Manifest.Arrays["history_gram"]; !ok || info.Preset != "history" || o.Manifest.Arrays["history_steps"].Shape[0] != 3 {
		t.Fatalf("history arrays in the manifest: %+v", o.Manifest.Arrays["history_gram"])
	}
	o, s := epkTestOutput(t, runDir, tr, "--preset", "components", "--test-split", "train", "--test-size", "6")
	if o.Manifest.Test.Split != "train" || s["test_split"] != "train" || s["argmax_agreement"] != 1.0 {
		t.Errorf("training-split output: manifest split %q, summary %v", o.Manifest.Test.Split, s)
	}
	msg, err := run("components", "--quiet", "--run", runDir, "--epk", val, "--train-epk", tr, "--out", out, "--history-steps", "2,6", "--top", "2")
	if err != nil {
		t.Fatalf("components: %v\n%s", err, msg)
	}
	if !strings.Contains(msg, "component history: 3 snapshots (steps 2 … 6)") || !strings.Contains(msg, "validation against 6 training samples") {
		t.Errorf("components printed:\n%s", msg)
	}
	var cs struct {
		Files   []string `json:"files"`
		History struct {
			Heatmaps []int `json:"heatmaps"`
		} `json:"history"`
		Train []struct {
			Group string  `json:"group"`
			Match float64 `json:"neighbor_label_match"`
		} `json:"train"`
	}
	readTestJSON(t, filepath.Join(out, "summary.json"), &cs)
	if !slices.Equal(cs.History.Heatmaps, []int{2, 6}) || len(cs.Train) == 0 {
		t.Errorf("summary: %+v", cs)
	}
	for _, f := range []string{"history.csv", "history_similarity.png", "history_heatmaps.svg", "train_neighbors_all.csv", "train_heatmap_all_by_sum.png"} {
		if !slices.Contains(cs.Files, f) {
			t.Errorf("summary.json does not list %s", f)
		}
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
	if _, err := run("components", "--quiet", "--run", runDir, "--epk", val, "--out", filepath.Join(root, "bad"), "--history-steps", "2,x"); err == nil ||
		!strings.Contains(err.Error(), "invalid --history-steps") {
		t.Errorf("--history-steps 2,x: %v", err)
	}
}
