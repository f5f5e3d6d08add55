package optim

import (
	"math"
	"testing"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// refAdam is one parameter's state in the float64 reference.
type refAdam struct {
	step int
	m, v []float64
}

// refAdamW is a direct float64 transcription of torch.optim.AdamW's
// single-tensor step for one parameter with a gradient.
func refAdamW(theta, grad []float64, st *refAdam, lr, beta1, beta2, eps, wd float64) {
	if st.m == nil {
		st.m = make([]float64, len(theta))
		st.v = make([]float64, len(theta))
	}
	st.step++
	for i := range theta {
		theta[i] *= 1 - lr*wd
		st.m[i] = st.m[i] + (1-beta1)*(grad[i]-st.m[i])
		st.v[i] = beta2*st.v[i] + (1-beta2)*grad[i]*grad[i]
	}
	bc1 := 1 - math.Pow(beta1, float64(st.step))
	bc2 := 1 - math.Pow(beta2, float64(st.step))
	stepSize := lr / bc1
	for i := range theta {
		denom := math.Sqrt(st.v[i])/math.Sqrt(bc2) + eps
		theta[i] -= stepSize * st.m[i] / denom
	}
}

var adamConfigs = []struct {
	name                  string
	beta1, beta2, eps, wd float64
}{
	{"defaults", 0.9, 0.999, 1e-8, 1e-2},
	{"no weight decay", 0.9, 0.999, 1e-8, 0},
	{"small beta1 (large lerp weight)", 0.3, 0.9, 1e-6, 0.1},
	{"zero betas", 0, 0, 1e-3, 0.5},
}

func testAdamWAgainstReference[T tensor.Float](t *testing.T, tol float64) {
	const steps = 8
	sched := testSchedule(t)
	for _, c := range adamConfigs {
		f := newFixture(steps, 4, roundTo[T])
		params := makeParams[T](f)
		opt, err := NewAdamW[T](c.beta1, c.beta2, c.eps, c.wd)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		theta := copy2(f.init)
		ref := make([]refAdam, len(theta))
		for s := 0; s < steps; s++ {
			lr := sched.LR(s)
			if err := opt.Step(params, gradsAt(f, params, s), lr); err != nil {
				t.Fatalf("%s step %d: %v", c.name, s, err)
			}
			for j := range theta {
				if f.grads[s][j] != nil {
					refAdamW(theta[j], f.grads[s][j], &ref[j], lr, c.beta1, c.beta2, c.eps, c.wd)
				}
			}
			for j, p := range params {
				checkClose(t, c.name+" "+p.Name, p.Value.Data, theta[j], tol)
				m, v, step, ok := opt.Moments(p)
				if step != ref[j].step || ok != (ref[j].step > 0) {
					t.Errorf("%s step %d: %s has step count %d (ok %v), want %d", c.name, s, p.Name, step, ok, ref[j].step)
				}
				if ok {
					checkClose(t, c.name+" exp_avg "+p.Name, m.Data, ref[j].m, tol)
					checkClose(t, c.name+" exp_avg_sq "+p.Name, v.Data, ref[j].v, tol)
				}
			}
			if s == 0 {
				// lr = 0: parameters unchanged, but the moments are updated.
				for j, p := range params {
					if !sameBits(p.Value.Data, toT[T](f.init[j])) {
						t.Errorf("%s: lr 0 changed %s", c.name, p.Name)
					}
					if _, _, step, _ := opt.Moments(p); step != 1 {
						t.Errorf("%s: after the lr 0 step %s has step count %d, want 1", c.name, p.Name, step)
					}
				}
			}
		}
		// The parameter that missed three steps has a lower step count.
		if _, _, step, _ := opt.Moments(params[2]); step != steps-3 {
			t.Errorf("%s: %s has step count %d, want %d", c.name, params[2].Name, step, steps-3)
		}
	}
}

func TestAdamWAgainstReference(t *testing.T) {
	t.Run("float64", func(t *testing.T) { testAdamWAgainstReference[float64](t, 1e-13) })
	t.Run("float32", func(t *testing.T) { testAdamWAgainstReference[float32](t, 2e-6) })
}

// TestAdamWSkipsAbsent checks that a parameter without a gradient is not
// decayed and keeps its state exactly.
func TestAdamWSkipsAbsent(t *testing.T) {
	a, b := scalarParam("a", 2), scalarParam("b", 3)
	params := []*nn.Param[float64]{a, b}
	opt, err := NewAdamW[float64](0.9, 0.999, 1e-8, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	both := &nn.Grads[float64]{Mode: nn.Summed, Of: map[*nn.Param[float64]]*tensor.Dense[float64]{
		a: {Shape: []int{1}, Data: []float64{1}}, b: {Shape: []int{1}, Data: []float64{-1}},
	}}
	if err := opt.Step(params, both, 0.1); err != nil {
		t.Fatal(err)
	}
	bVal := b.Value.Data[0]
	mb, vb, _, _ := opt.Moments(b)
	m0, v0 := mb.Data[0], vb.Data[0]
	for range 3 {
		if err := opt.Step(params, scalarGrads(a, 1), 0.1); err != nil {
			t.Fatal(err)
		}
	}
	mb, vb, step, _ := opt.Moments(b)
	if b.Value.Data[0] != bVal || mb.Data[0] != m0 || vb.Data[0] != v0 || step != 1 {
		t.Errorf("b without gradient changed: θ %v→%v, m %v→%v, v %v→%v, step %d", bVal, b.Value.Data[0], m0, mb.Data[0], v0, vb.Data[0], step)
	}
	if _, _, step, _ := opt.Moments(a); step != 4 {
		t.Errorf("a has step count %d, want 4", step)
	}
}

// TestAdamWHand checks the first step by hand: m̂ = g and v̂ = g², so with
// θ0 = 1, g = 0.5, lr = 0.1, λ = 0.1: θ1 = 1·(1 − 0.01) − 0.1·0.5/(0.5 + 1e-8).
// A second equal gradient keeps m̂ = g, v̂ = g²: θ2 = θ1·0.99 − 0.1·0.5/(0.5 + 1e-8).
func TestAdamWHand(t *testing.T) {
	p := scalarParam("w", 1)
	opt, err := NewAdamW[float64](0.9, 0.999, 1e-8, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	want := 0.99 - 0.1*0.5/(0.5+1e-8)
	for s := 1; s <= 2; s++ {
		if err := opt.Step([]*nn.Param[float64]{p}, scalarGrads(p, 0.5), 0.1); err != nil {
			t.Fatal(err)
		}
		if got := p.Value.Data[0]; !(math.Abs(got-want) <= 1e-14) {
			t.Errorf("step %d: θ = %.17g, want %.17g", s, got, want)
		}
		m, v, step, _ := opt.Moments(p)
		wantM := 0.5 * (1 - math.Pow(0.9, float64(s)))
		wantV := 0.25 * (1 - math.Pow(0.999, float64(s)))
		if step != s || !(math.Abs(m.Data[0]-wantM) <= 1e-16) || !(math.Abs(v.Data[0]-wantV) <= 1e-16) {
			t.Errorf("step %d: m = %v (want %v), v = %v (want %v), step %d", s, m.Data[0], wantM, v.Data[0], wantV, step)
		}
		want = want*0.99 - 0.1*0.5/(0.5+1e-8)
	}
	// Variables, so that the arithmetic is float64 as in Python.
	lr, wd, b1, b2 := 0.1, 0.1, 0.9, 0.999
	c := opt.Coefficients(lr, 2)
	if c.Decay != 1-lr*wd || c.BiasCorrection1 != 1-b1*b1 || c.StepSize != lr/(1-b1*b1) ||
		c.BiasCorrection2 != 1-b2*b2 || c.BiasCorrection2Sqrt != math.Sqrt(c.BiasCorrection2) {
		t.Errorf("Coefficients(0.1, 2) = %+v", c)
	}
	// Python: 1 - 0.999**1000 and 1 - 0.9**75 (math.Pow would be tens of ulps off).
	p1000, p75 := 0.36769542477096373, 0.00036998848503512764
	if c := opt.Coefficients(lr, 1000); c.BiasCorrection2 != 1-p1000 {
		t.Errorf("Coefficients(0.1, 1000).BiasCorrection2 = %v, want %v", c.BiasCorrection2, 1-p1000)
	}
	if c := opt.Coefficients(lr, 75); c.BiasCorrection1 != 1-p75 || c.StepSize != lr/(1-p75) {
		t.Errorf("Coefficients(0.1, 75) = %+v, want BiasCorrection1 %v", c, 1-p75)
	}
}

// refAdamW32 is the float32 kernel sequence of PyTorch's CPU AdamW (scalar
// path): mul_(1−lr·λ), lerp_, mul_(β2).addcmul_, sqrt/div/add_, addcdiv_,
// with every Python scalar converted to float32 once.
func refAdamW32(theta, grad []float32, st *refAdam32, lr, beta1, beta2, eps, wd float64) {
	if st.m == nil {
		st.m = make([]float32, len(theta))
		st.v = make([]float32, len(theta))
	}
	st.step++
	if wd != 0 {
		for i := range theta {
			theta[i] *= float32(1 - lr*wd)
		}
	}
	w := float32(1 - beta1)
	for i := range st.m {
		if w < 0.5 {
			st.m[i] = st.m[i] + float32(w*(grad[i]-st.m[i]))
		} else {
			st.m[i] = grad[i] - float32((grad[i]-st.m[i])*(1-w))
		}
	}
	for i := range st.v {
		st.v[i] = float32(st.v[i] * float32(beta2))
		st.v[i] = st.v[i] + float32(float32(float32(1-beta2)*grad[i])*grad[i])
	}
	bc1 := 1 - math.Pow(beta1, float64(st.step))
	bc2 := 1 - math.Pow(beta2, float64(st.step))
	stepSize := lr / bc1
	bc2s := math.Sqrt(bc2)
	for i := range theta {
		denom := float32(float32(math.Sqrt(float64(st.v[i]))) / float32(bc2s))
		denom = denom + float32(eps)
		theta[i] = theta[i] + float32(float32(float32(-stepSize)*st.m[i])/denom)
	}
}

type refAdam32 struct {
	step int
	m, v []float32
}

func TestAdamWFloat32Exact(t *testing.T) {
	const steps = 8
	sched := testSchedule(t)
	for _, c := range adamConfigs {
		f := newFixture(steps, 5, roundTo[float32])
		params := makeParams[float32](f)
		opt := &AdamW[float32]{Beta1: c.beta1, Beta2: c.beta2, Eps: c.eps, WeightDecay: c.wd}
		theta := make([][]float32, len(params))
		ref := make([]refAdam32, len(params))
		for j := range theta {
			theta[j] = toT[float32](f.init[j])
		}
		for s := 0; s < steps; s++ {
			lr := sched.LR(s)
			if err := opt.Step(params, gradsAt(f, params, s), lr); err != nil {
				t.Fatal(err)
			}
			for j := range theta {
				if f.grads[s][j] != nil {
					refAdamW32(theta[j], toT[float32](f.grads[s][j]), &ref[j], lr, c.beta1, c.beta2, c.eps, c.wd)
				}
				if !sameBits(params[j].Value.Data, theta[j]) {
					t.Fatalf("%s step %d: %s = %v, want bitwise %v", c.name, s, params[j].Name, params[j].Value.Data, theta[j])
				}
				if m, v, _, ok := opt.Moments(params[j]); ok && (!sameBits(m.Data, ref[j].m) || !sameBits(v.Data, ref[j].v)) {
					t.Fatalf("%s step %d: moments of %s differ bitwise", c.name, s, params[j].Name)
				}
			}
		}
	}
}

// TestAdamWStateRoundTrip saves the state mid-run (while one parameter has
// a lower step count), restores it into a fresh optimizer and parameters,
// and checks that both continue bit for bit.
func TestAdamWStateRoundTrip(t *testing.T) {
	t.Run("float32", func(t *testing.T) { testAdamWStateRoundTrip[float32](t) })
	t.Run("float64", func(t *testing.T) { testAdamWStateRoundTrip[float64](t) })
}

func testAdamWStateRoundTrip[T tensor.Float](t *testing.T) {
	const steps, split = 9, 4
	sched := testSchedule(t)
	f := newFixture(steps, 6, roundTo[T])
	a := makeParams[T](f)
	optA := &AdamW[T]{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 5e-2}
	for s := 0; s < split; s++ {
		if err := optA.Step(a, gradsAt(f, a, s), sched.LR(s)); err != nil {
			t.Fatal(err)
		}
	}
	saved := optA.State()
	if len(saved) != 3*len(a) {
		t.Fatalf("State has %d entries, want %d: %v", len(saved), 3*len(a), keysOf(saved))
	}
	for _, p := range a {
		_, _, step, _ := optA.Moments(p)
		st := saved[StateName(KindStep, p.Name)]
		if st == nil || !tensor.SameShape(st.Shape, []int{1}) || int(st.Data[0]) != step {
			t.Errorf("State %s = %v, want [%d]", StateName(KindStep, p.Name), st, step)
		}
		for _, kind := range []string{KindExpAvg, KindExpAvgSq} {
			if m := saved[StateName(kind, p.Name)]; m == nil || !tensor.SameShape(m.Shape, p.Value.Shape) {
				t.Errorf("State %s missing or misshapen", StateName(kind, p.Name))
			}
		}
	}
	if _, _, step, _ := optA.Moments(a[2]); step != 2 {
		t.Fatalf("fixture: %s should have missed steps, has step count %d", a[2].Name, step)
	}
	b := cloneParams(a)
	optB := &AdamW[T]{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 5e-2}
	if err := optB.LoadState(b, saved); err != nil {
		t.Fatal(err)
	}
	for _, v := range saved {
		v.Data[0] = 12345 // the loaded state is a copy
	}
	for s := split; s < steps; s++ {
		if err := optA.Step(a, gradsAt(f, a, s), sched.LR(s)); err != nil {
			t.Fatal(err)
		}
		if err := optB.Step(b, gradsAt(f, b, s), sched.LR(s)); err != nil {
			t.Fatal(err)
		}
	}
	for j := range a {
		if !sameBits(a[j].Value.Data, b[j].Value.Data) {
			t.Errorf("%s differs after the round trip", a[j].Name)
		}
		ma, va, sa, _ := optA.Moments(a[j])
		mb, vb, sb, _ := optB.Moments(b[j])
		if !sameBits(ma.Data, mb.Data) || !sameBits(va.Data, vb.Data) || sa != sb {
			t.Errorf("state of %s differs after the round trip", a[j].Name)
		}
	}
	st := optA.State()
	for _, v := range st {
		v.Data[0] = 999
	}
	if m, _, _, _ := optA.Moments(a[0]); m.Data[0] == 999 {
		t.Error("State returned a live array")
	}
}

func TestAdamWValidation(t *testing.T) {
	bad := []struct {
		name                  string
		beta1, beta2, eps, wd float64
		fragments             []string
	}{
		{"beta1 = 1", 1, 0.999, 1e-8, 0, []string{"beta1"}},
		{"negative beta1", -0.1, 0.999, 1e-8, 0, []string{"beta1"}},
		{"NaN beta1", math.NaN(), 0.999, 1e-8, 0, []string{"beta1"}},
		{"beta2 = 1", 0.9, 1, 1e-8, 0, []string{"beta2"}},
		{"beta2 > 1", 0.9, 1.5, 1e-8, 0, []string{"beta2"}},
		{"zero eps", 0.9, 0.999, 0, 0, []string{"eps"}},
		{"negative eps", 0.9, 0.999, -1e-8, 0, []string{"eps"}},
		{"infinite eps", 0.9, 0.999, math.Inf(1), 0, []string{"eps"}},
		{"negative weight decay", 0.9, 0.999, 1e-8, -0.01, []string{"weight decay"}},
		{"NaN weight decay", 0.9, 0.999, 1e-8, math.NaN(), []string{"weight decay"}},
	}
	for _, c := range bad {
		_, err := NewAdamW[float64](c.beta1, c.beta2, c.eps, c.wd)
		wantErr(t, "NewAdamW "+c.name, err, c.fragments...)
		p := scalarParam("w", 1)
		o := &AdamW[float64]{Beta1: c.beta1, Beta2: c.beta2, Eps: c.eps, WeightDecay: c.wd}
		wantErr(t, "Step "+c.name, o.Step([]*nn.Param[float64]{p}, scalarGrads(p, 1), 0.1), c.fragments...)
		if p.Value.Data[0] != 1 {
			t.Errorf("%s: failed Step changed the parameter", c.name)
		}
	}
	wantErr(t, "zero value", (&AdamW[float64]{}).Validate(), "eps")
	testStepValidation(t, func() Optimizer[float64] {
		return &AdamW[float64]{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 1e-2}
	})
}

func TestAdamWLoadStateValidation(t *testing.T) {
	w := &nn.Param[float64]{Name: "w", Value: tensor.New[float64](2, 3)}
	params := []*nn.Param[float64]{w}
	step := func(v float64, shape ...int) *tensor.Dense[float64] {
		d := tensor.New[float64](shape...)
		for i := range d.Data {
			d.Data[i] = v
		}
		return d
	}
	good := func() map[string]*tensor.Dense[float64] {
		return map[string]*tensor.Dense[float64]{
			"exp_avg/w":    tensor.New[float64](2, 3),
			"exp_avg_sq/w": tensor.New[float64](2, 3),
			"step/w":       step(3, 1),
		}
	}
	type edit = func(map[string]*tensor.Dense[float64])
	cases := []struct {
		name      string
		edit      edit
		fragments []string
	}{
		{"unknown kind", func(m map[string]*tensor.Dense[float64]) { m["momentum_buffer/w"] = tensor.New[float64](2, 3) }, []string{"momentum_buffer/w"}},
		{"no slash", func(m map[string]*tensor.Dense[float64]) { m["w"] = tensor.New[float64](2, 3) }, []string{`"w"`}},
		{"unknown parameter", func(m map[string]*tensor.Dense[float64]) { m["exp_avg/v"] = tensor.New[float64](2, 3) }, []string{"exp_avg/v", "unknown parameter"}},
		{"exp_avg shape", func(m map[string]*tensor.Dense[float64]) { m["exp_avg/w"] = tensor.New[float64](6) }, []string{"exp_avg/w", "[6]", "[2 3]"}},
		{"exp_avg_sq shape", func(m map[string]*tensor.Dense[float64]) { m["exp_avg_sq/w"] = tensor.New[float64](2, 3, 1) }, []string{"exp_avg_sq/w", "[2 3 1]"}},
		{"nil moment", func(m map[string]*tensor.Dense[float64]) { m["exp_avg/w"] = nil }, []string{"exp_avg/w", "nil"}},
		{"missing exp_avg_sq", func(m map[string]*tensor.Dense[float64]) { delete(m, "exp_avg_sq/w") }, []string{"lacks exp_avg_sq/w"}},
		{"missing exp_avg", func(m map[string]*tensor.Dense[float64]) { delete(m, "exp_avg/w") }, []string{"lacks exp_avg/w"}},
		{"missing step", func(m map[string]*tensor.Dense[float64]) { delete(m, "step/w") }, []string{"lacks step/w"}},
		{"nil step", func(m map[string]*tensor.Dense[float64]) { m["step/w"] = nil }, []string{"step/w", "nil"}},
		{"step shape", func(m map[string]*tensor.Dense[float64]) { m["step/w"] = step(3, 2) }, []string{"step/w", "one element"}},
		{"zero step", func(m map[string]*tensor.Dense[float64]) { m["step/w"] = step(0, 1) }, []string{"step/w", "positive integer"}},
		{"negative step", func(m map[string]*tensor.Dense[float64]) { m["step/w"] = step(-2, 1) }, []string{"step/w", "positive integer"}},
		{"fractional step", func(m map[string]*tensor.Dense[float64]) { m["step/w"] = step(1.5, 1) }, []string{"step/w", "positive integer"}},
		{"NaN step", func(m map[string]*tensor.Dense[float64]) { m["step/w"] = step(math.NaN(), 1) }, []string{"step/w", "positive integer"}},
	}
	for _, c := range cases {
		opt := &AdamW[float64]{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}
		if err := opt.LoadState(params, good()); err != nil {
			t.Fatalf("%s: loading a good state: %v", c.name, err)
		}
		st := good()
		c.edit(st)
		wantErr(t, c.name, opt.LoadState(params, st), c.fragments...)
		if _, _, s, ok := opt.Moments(w); !ok || s != 3 {
			t.Errorf("%s: failed LoadState changed the state (step %d, ok %v)", c.name, s, ok)
		}
	}
	// A scalar-shaped step (PyTorch's 0-dim tensor) is accepted.
	opt := &AdamW[float64]{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}
	st := good()
	st["step/w"] = &tensor.Dense[float64]{Shape: []int{}, Data: []float64{7}}
	if err := opt.LoadState(params, st); err != nil {
		t.Fatalf("0-dim step refused: %v", err)
	}
	if _, _, s, _ := opt.Moments(w); s != 7 {
		t.Errorf("loaded step count %d, want 7", s)
	}
	// A moment of the wrong shape for a same-named parameter is caught by Step.
	other := scalarParam("w", 1)
	wantErr(t, "Step with stale state", opt.Step([]*nn.Param[float64]{other}, scalarGrads(other, 1), 0.1), "exp_avg/w", "[2 3]")
	if other.Value.Data[0] != 1 {
		t.Error("failed Step changed the parameter")
	}
	if _, _, s, _ := opt.Moments(w); s != 7 {
		t.Error("failed Step advanced the step count")
	}
}
