package models_test

import (
	"github.com/explaind/explaind/internal/fixtures"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/nn/nncheck"
	"github.com/explaind/explaind/tensor"
	"github.com/explaind/explaind/weights"
)

// Tolerances against the PyTorch fixtures, in float32: relative error is the
// max-abs error over the max-abs reference of each tensor.
const (
	resnet9TolOutput = 1e-5
	resnet9TolDeriv  = 1e-4
)

// resnet9MetaInt reads an integer from a fixture's metadata.
func resnet9MetaInt(t *testing.T, f *weights.File, key string) int {
	t.Helper()
	s, ok := f.Metadata()[key]
	if !ok {
		t.Fatalf("%s: metadata has no %q", f.Path(), key)
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%s: metadata %q = %q: %v", f.Path(), key, s, err)
	}
	return v
}

// loadResNet9Fixture builds the float32 ResNet-9 a fixture describes and
// loads its param/ weights.
func loadResNet9Fixture(t *testing.T, path string) (*weights.File, *models.ResNet9[float32]) {
	t.Helper()
	f, err := weights.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if arch := f.Metadata()["arch"]; arch != "resnet9_nobn" {
		t.Fatalf("%s: arch %q, want resnet9_nobn", path, arch)
	}
	cfg := models.ResNet9Config{
		WidthDiv:   resnet9MetaInt(t, f, "width_div"),
		InChannels: resnet9MetaInt(t, f, "in_channels"),
		Classes:    resnet9MetaInt(t, f, "classes"),
		Height:     resnet9MetaInt(t, f, "height"),
		Width:      resnet9MetaInt(t, f, "width"),
	}
	m, err := models.NewResNet9[float32](cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := weights.LoadParams(f, "param/", m.Params()); err != nil {
		t.Fatal(err)
	}
	return f, m
}

// resnet9Get reads a float tensor from a fixture.
func resnet9Get(t *testing.T, f *weights.File, name string) *tensor.Dense[float32] {
	t.Helper()
	v, err := weights.Get[float32](f, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// resnet9Compare fails when got is off the reference by more than tol and returns
// the relative error.
func resnet9Compare(t *testing.T, what string, got *tensor.Dense[float32], want *tensor.Dense[float32], tol float64) float64 {
	t.Helper()
	if len(got.Data) != len(want.Data) {
		t.Errorf("%s: %d values (shape %v), reference has %d (shape %v)", what, len(got.Data), got.Shape, len(want.Data), want.Shape)
		return 0
	}
	e := tensor.RelErr(got.Data, want.Data)
	if !(e <= tol) {
		t.Errorf("%s: relative error %.3g exceeds %.3g", what, e, tol)
	}
	return e
}

// checkResNet9Fixture checks one PyTorch fixture in float32: the outputs,
// the mean-NLL gradient, per-sample gradients (where the file has them),
// the JVP along jvp_dir and the VJP of vjp_cot.
func checkResNet9Fixture(t *testing.T, path string) {
	f, m := loadResNet9Fixture(t, path)
	params := m.Params()
	x := resnet9Get(t, f, "input")
	target, _, err := f.Ints("target")
	if err != nil {
		t.Fatal(err)
	}
	b := x.Shape[0]

	logp, st, err := m.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("logprobs: relative error %.3g", resnet9Compare(t, "logprobs", logp, resnet9Get(t, f, "logprobs"), resnet9TolOutput))

	// Gradient of the mean NLL loss.
	_, dy, err := nn.NLLLoss(logp, target)
	if err != nil {
		t.Fatal(err)
	}
	g := nn.NewGrads(nn.Summed, params, 0)
	if _, err := m.Backward(st, dy, g, false); err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for _, p := range params {
		worst = max(worst, resnet9Compare(t, "grad/"+p.Name, g.Of[p], resnet9Get(t, f, "grad/"+p.Name), resnet9TolDeriv))
	}
	t.Logf("grad: max relative error %.3g", worst)

	// Per-sample gradients: per-row VJP of the per-sample NLL cotangent.
	if f.Has("persample_grad/" + params[0].Name) {
		cot, err := nn.NLLCotangent(logp, target, 1)
		if err != nil {
			t.Fatal(err)
		}
		pr := nn.NewGrads(nn.PerRow, params, b)
		if _, err := m.Backward(st, cot, pr, false); err != nil {
			t.Fatal(err)
		}
		worst = 0
		for _, p := range params {
			worst = max(worst, resnet9Compare(t, "persample_grad/"+p.Name, pr.Of[p], resnet9Get(t, f, "persample_grad/"+p.Name), resnet9TolDeriv))
		}
		t.Logf("persample_grad: max relative error %.3g", worst)
	}

	// JVP along one parameter direction.
	tan := &nn.Tangents[float32]{M: 1, Of: map[*nn.Param[float32]]*tensor.Dense[float32]{}}
	for _, p := range params {
		d := resnet9Get(t, f, "jvp_dir/"+p.Name)
		tan.Of[p] = &tensor.Dense[float32]{Shape: append([]int{1}, d.Shape...), Data: d.Data}
	}
	yj, dyj, err := m.JVP(x, nil, tan)
	if err != nil {
		t.Fatal(err)
	}
	resnet9Compare(t, "JVP primal", yj, resnet9Get(t, f, "logprobs"), resnet9TolOutput)
	t.Logf("jvp: relative error %.3g", resnet9Compare(t, "jvp", dyj, resnet9Get(t, f, "jvp"), resnet9TolDeriv))

	// VJP of an arbitrary cotangent, summed over the batch.
	g = nn.NewGrads(nn.Summed, params, 0)
	if _, err := m.Backward(st, resnet9Get(t, f, "vjp_cot"), g, false); err != nil {
		t.Fatal(err)
	}
	worst = 0
	for _, p := range params {
		worst = max(worst, resnet9Compare(t, "vjp/"+p.Name, g.Of[p], resnet9Get(t, f, "vjp/"+p.Name), resnet9TolDeriv))
	}
	t.Logf("vjp: max relative error %.3g", worst)
}

// TestResNet9EPKOracleOutputs checks the float64 forward pass against the
// outputs of the initial and final models of the EPK oracle fixture.
func TestResNet9EPKOracleOutputs(t *testing.T) {
	fixtures.EachOracle(t, models.ResNet9Arch, checkResNet9OracleOutputs)
}

func checkResNet9OracleOutputs(t *testing.T, path string) {
	f, err := weights.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := models.NewResNet9[float64](models.ResNet9Config{
		WidthDiv: resnet9MetaInt(t, f, "width_div"), InChannels: resnet9MetaInt(t, f, "in_channels"),
		Classes: resnet9MetaInt(t, f, "classes"), Height: resnet9MetaInt(t, f, "height"), Width: resnet9MetaInt(t, f, "width"),
	})
	if err != nil {
		t.Fatal(err)
	}
	x, err := weights.Get[float64](f, "test/input")
	if err != nil {
		t.Fatal(err)
	}
	steps := resnet9MetaInt(t, f, "steps")
	for _, c := range []struct {
		params, out string
	}{{"params/step0/", "f0"}, {"params/step" + strconv.Itoa(steps) + "/", "fN"}} {
		if err := weights.LoadParams(f, c.params, m.Params()); err != nil {
			t.Fatal(err)
		}
		y, _, err := m.Forward(x)
		if err != nil {
			t.Fatal(err)
		}
		want, err := weights.Get[float64](f, c.out)
		if err != nil {
			t.Fatal(err)
		}
		if e := tensor.RelErr(y.Data, want.Data); !(e <= 1e-12) {
			t.Errorf("%s: relative error %.3g", c.out, e)
		}
	}
}

func TestResNet9AgainstFiniteDifferences(t *testing.T) {
	m, err := models.NewResNet9[float64](models.ResNet9Config{WidthDiv: 16, InChannels: 1, Classes: 2, Height: 12, Width: 12})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(42, 43))
	m.Init(rng)
	x := tensor.New[float64](2, 1, 12, 12)
	for i := range x.Data {
		x.Data[i] = rng.NormFloat64()
	}
	for _, err := range nncheck.Layer(m, x, nncheck.Options{K: 2, M: 2, Seed: 1}) {
		t.Error(err)
	}
}

func TestResNet9Structure(t *testing.T) {
	m, err := models.NewResNet9[float32](models.ResNet9Config{WidthDiv: 8, InChannels: 3, Classes: 10, Height: 32, Width: 32})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name  string
		shape []int
	}{
		{"0.0.weight", []int{8, 3, 3, 3}},
		{"1.0.weight", []int{16, 8, 5, 5}},
		{"2.module.0.0.weight", []int{16, 16, 3, 3}},
		{"2.module.1.0.weight", []int{16, 16, 3, 3}},
		{"3.0.weight", []int{32, 16, 3, 3}},
		{"5.module.0.0.weight", []int{32, 32, 3, 3}},
		{"5.module.1.0.weight", []int{32, 32, 3, 3}},
		{"6.0.weight", []int{16, 32, 3, 3}},
		{"9.weight", []int{10, 16}},
	}
	ps := m.Params()
	if len(ps) != len(want) {
		t.Fatalf("%d parameters, want %d", len(ps), len(want))
	}
	for i, p := range ps {
		if p.Name != want[i].name || !tensor.SameShape(p.Value.Shape, want[i].shape) {
			t.Errorf("parameter %d: %s %v, want %s %v", i, p.Name, p.Value.Shape, want[i].name, want[i].shape)
		}
	}
	if m.Arch() != "resnet9_nobn" || m.Classes() != 10 || !tensor.SameShape(m.SampleShape(), []int{3, 32, 32}) {
		t.Errorf("Arch %q, Classes %d, SampleShape %v", m.Arch(), m.Classes(), m.SampleShape())
	}
	m.Init(rand.New(rand.NewPCG(1, 2)))
	for _, p := range ps {
		fanIn := tensor.Numel(p.Value.Shape[1:])
		bound := 1 / math.Sqrt(float64(fanIn))
		var mx float64
		for _, v := range p.Value.Data {
			mx = max(mx, math.Abs(float64(v)))
		}
		if !(mx <= bound) || mx < 0.5*bound {
			t.Errorf("%s: max |w| = %g, want uniform in ±%g", p.Name, mx, bound)
		}
	}
	x := tensor.New[float32](2, 3, 32, 32)
	y, _, err := m.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	if !tensor.SameShape(y.Shape, []int{2, 10}) {
		t.Errorf("output shape %v", y.Shape)
	}
	if _, _, err := m.Forward(tensor.New[float32](2, 1, 32, 32)); err == nil || !strings.Contains(err.Error(), "ResNet-9") {
		t.Errorf("wrong channel count: got %v", err)
	}
	if _, _, err := m.Forward(tensor.New[float32](2, 3, 28, 28)); err == nil {
		t.Error("wrong image size: want an error")
	}
	if _, _, err := m.JVP(tensor.New[float32](3, 32, 32), nil, nil); err == nil {
		t.Error("no batch axis: want an error")
	}
}

func TestResNet9ConfigErrors(t *testing.T) {
	ok := models.ResNet9Config{WidthDiv: 4, InChannels: 3, Classes: 2, Height: 32, Width: 32}
	for _, c := range []struct {
		name string
		edit func(*models.ResNet9Config)
		want string
	}{
		{"width_div 3", func(c *models.ResNet9Config) { c.WidthDiv = 3 }, "width_div"},
		{"width_div 0", func(c *models.ResNet9Config) { c.WidthDiv = 0 }, "width_div"},
		{"width_div 128", func(c *models.ResNet9Config) { c.WidthDiv = 128 }, "width_div"},
		{"no channels", func(c *models.ResNet9Config) { c.InChannels = 0 }, "channel"},
		{"no classes", func(c *models.ResNet9Config) { c.Classes = 0 }, "class"},
		{"too short", func(c *models.ResNet9Config) { c.Height = 10 }, "too small"},
		{"too narrow", func(c *models.ResNet9Config) { c.Width = 4 }, "too small"},
	} {
		cfg := ok
		c.edit(&cfg)
		if _, err := models.NewResNet9[float32](cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", c.name, err, c.want)
		}
	}
	for _, side := range []int{models.ResNet9MinSize, 12, 13, 28, 32} {
		cfg := ok
		cfg.Height, cfg.Width = side, models.ResNet9MinSize
		if _, err := models.NewResNet9[float32](cfg); err != nil {
			t.Errorf("%d×%d: %v", side, models.ResNet9MinSize, err)
		}
	}
}

// TestResNet9Deterministic: the convolutions spread chunks over goroutines;
// a training step must still give the same bits every time (the run store
// verifies replays bit for bit).
func TestResNet9Deterministic(t *testing.T) {
	m, err := models.NewResNet9[float32](models.ResNet9Config{WidthDiv: 8, InChannels: 3, Classes: 2, Height: 32, Width: 32})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	m.Init(rng)
	x := tensor.New[float32](16, 3, 32, 32)
	for i := range x.Data {
		x.Data[i] = float32(rng.NormFloat64())
	}
	target := make([]int, 16)
	for i := range target {
		target[i] = i % 2
	}
	step := func() *nn.Grads[float32] {
		logp, st, err := m.Forward(x)
		if err != nil {
			t.Fatal(err)
		}
		_, dy, err := nn.NLLLoss(logp, target)
		if err != nil {
			t.Fatal(err)
		}
		g := nn.NewGrads(nn.Summed, m.Params(), 0)
		if _, err := m.Backward(st, dy, g, false); err != nil {
			t.Fatal(err)
		}
		return g
	}
	a := step()
	for rep := 0; rep < 3; rep++ {
		b := step()
		for _, p := range m.Params() {
			for i, v := range a.Of[p].Data {
				if math.Float32bits(v) != math.Float32bits(b.Of[p].Data[i]) {
					t.Fatalf("repeat %d: gradient of %s differs at %d: %g vs %g", rep, p.Name, i, v, b.Of[p].Data[i])
				}
			}
		}
	}
}
