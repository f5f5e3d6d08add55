package optim

import (
	"math"
	"testing"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// refSGD is a direct float64 transcription of torch.optim.SGD's
// _single_tensor_sgd for one parameter. buf is nil before the first step.
func refSGD(theta, buf, grad []float64, lr, mu, damp, wd float64, nesterov bool) []float64 {
	d := append([]float64(nil), grad...)
	if wd != 0 {
		for i := range d {
			d[i] = d[i] + wd*theta[i]
		}
	}
	if mu != 0 {
		if buf == nil {
			buf = append([]float64(nil), d...)
		} else {
			for i := range buf {
				buf[i] = buf[i]*mu + (1-damp)*d[i]
			}
		}
		if nesterov {
			for i := range d {
				d[i] = d[i] + mu*buf[i]
			}
		} else {
			d = append([]float64(nil), buf...)
		}
	}
	for i := range theta {
		theta[i] = theta[i] - lr*d[i]
	}
	return buf
}

var sgdConfigs = []struct {
	name         string
	mu, damp, wd float64
	nesterov     bool
}{
	{"plain", 0, 0, 0, false},
	{"weight decay", 0, 0, 5e-4, false},
	{"momentum", 0.9, 0, 0, false},
	{"momentum+dampening+wd", 0.9, 0.3, 5e-2, false},
	{"nesterov+wd", 0.9, 0, 5e-2, true},
}

func testSGDAgainstReference[T tensor.Float](t *testing.T, tol float64) {
	const steps = 8
	sched := testSchedule(t)
	if sched.LR(0) != 0 {
		t.Fatalf("schedule starts at %v, want 0", sched.LR(0))
	}
	for _, c := range sgdConfigs {
		f := newFixture(steps, 1, roundTo[T])
		params := makeParams[T](f)
		opt, err := NewSGD[T](c.mu, c.damp, c.wd, c.nesterov)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		theta := copy2(f.init)
		bufs := make([][]float64, len(theta))
		for s := 0; s < steps; s++ {
			lr := sched.LR(s)
			if err := opt.Step(params, gradsAt(f, params, s), lr); err != nil {
				t.Fatalf("%s step %d: %v", c.name, s, err)
			}
			for j := range theta {
				if f.grads[s][j] != nil {
					bufs[j] = refSGD(theta[j], bufs[j], f.grads[s][j], lr, c.mu, c.damp, c.wd, c.nesterov)
				}
			}
			for j, p := range params {
				checkClose(t, c.name+" "+p.Name, p.Value.Data, theta[j], tol)
				b := opt.MomentumBuffer(p)
				switch {
				case bufs[j] == nil && b != nil:
					t.Errorf("%s step %d: %s has a momentum buffer, want none", c.name, s, p.Name)
				case bufs[j] != nil && b == nil:
					t.Errorf("%s step %d: %s has no momentum buffer", c.name, s, p.Name)
				case b != nil:
					checkClose(t, c.name+" buffer "+p.Name, b.Data, bufs[j], tol)
				}
			}
			if s == 0 && c.mu != 0 {
				// lr = 0: parameters unchanged, buffers initialized.
				for j, p := range params {
					if !sameBits(p.Value.Data, toT[T](f.init[j])) {
						t.Errorf("%s: lr 0 changed %s", c.name, p.Name)
					}
					if opt.MomentumBuffer(p) == nil {
						t.Errorf("%s: lr 0 step did not create the buffer of %s", c.name, p.Name)
					}
				}
			}
		}
	}
}

func TestSGDAgainstReference(t *testing.T) {
	t.Run("float64", func(t *testing.T) { testSGDAgainstReference[float64](t, 1e-14) })
	t.Run("float32", func(t *testing.T) { testSGDAgainstReference[float32](t, 1e-6) })
}

// TestSGDHand checks two steps worked out by hand: θ0 = 1, g = 0.5,
// lr = 0.1, μ = 0.9, λ = 0.1.
//
//	step 1: d = 0.5 + 0.1·1 = 0.6, b = 0.6, θ = 1 − 0.06 = 0.94
//	step 2: d = 0.5 + 0.094 = 0.594, b = 0.54 + 0.594 = 1.134, θ = 0.94 − 0.1134 = 0.8266
func TestSGDHand(t *testing.T) {
	p := scalarParam("w", 1)
	opt, err := NewSGD[float64](0.9, 0, 0.1, false)
	if err != nil {
		t.Fatal(err)
	}
	wantTheta := []float64{0.94, 0.8266}
	wantBuf := []float64{0.6, 1.134}
	for s := range 2 {
		if err := opt.Step([]*nn.Param[float64]{p}, scalarGrads(p, 0.5), 0.1); err != nil {
			t.Fatal(err)
		}
		if got := p.Value.Data[0]; !(math.Abs(got-wantTheta[s]) <= 1e-15) {
			t.Errorf("step %d: θ = %v, want %v", s+1, got, wantTheta[s])
		}
		if got := opt.MomentumBuffer(p).Data[0]; !(math.Abs(got-wantBuf[s]) <= 1e-15) {
			t.Errorf("step %d: buffer = %v, want %v", s+1, got, wantBuf[s])
		}
	}
	// Nesterov, one step from θ0 = 1: d = 0.6, b = 0.6, d = 0.6 + 0.54 = 1.14, θ = 1 − 0.114.
	q := scalarParam("w", 1)
	nes, err := NewSGD[float64](0.9, 0, 0.1, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := nes.Step([]*nn.Param[float64]{q}, scalarGrads(q, 0.5), 0.1); err != nil {
		t.Fatal(err)
	}
	if got := q.Value.Data[0]; !(math.Abs(got-0.886) <= 1e-15) {
		t.Errorf("nesterov: θ = %v, want 0.886", got)
	}
}

// refSGD32 is the float32 kernel sequence of PyTorch's CPU SGD (scalar
// path), used to check that the float32 path computes in float32.
func refSGD32(theta, buf, grad []float32, lr, mu, damp, wd float64, nesterov bool) []float32 {
	d := append([]float32(nil), grad...)
	if wd != 0 {
		for i := range d {
			d[i] = d[i] + float32(float32(wd)*theta[i])
		}
	}
	if mu != 0 {
		if buf == nil {
			buf = append([]float32(nil), d...)
		} else {
			for i := range buf {
				buf[i] = float32(buf[i]*float32(mu)) + float32(float32(1-damp)*d[i])
			}
		}
		if nesterov {
			for i := range d {
				d[i] = d[i] + float32(float32(mu)*buf[i])
			}
		} else {
			d = append([]float32(nil), buf...)
		}
	}
	for i := range theta {
		theta[i] = theta[i] + float32(float32(-lr)*d[i])
	}
	return buf
}

func TestSGDFloat32Exact(t *testing.T) {
	const steps = 8
	sched := testSchedule(t)
	for _, c := range sgdConfigs {
		f := newFixture(steps, 2, roundTo[float32])
		params := makeParams[float32](f)
		opt := &SGD[float32]{Momentum: c.mu, Dampening: c.damp, WeightDecay: c.wd, Nesterov: c.nesterov}
		theta := make([][]float32, len(params))
		bufs := make([][]float32, len(params))
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
					bufs[j] = refSGD32(theta[j], bufs[j], toT[float32](f.grads[s][j]), lr, c.mu, c.damp, c.wd, c.nesterov)
				}
				if !sameBits(params[j].Value.Data, theta[j]) {
					t.Fatalf("%s step %d: %s = %v, want bitwise %v", c.name, s, params[j].Name, params[j].Value.Data, theta[j])
				}
			}
		}
	}
}

// TestSGDStateRoundTrip saves the state mid-run, restores it into a fresh
// optimizer and fresh parameters, and checks that both continue bit for bit.
func TestSGDStateRoundTrip(t *testing.T) {
	const steps, split = 8, 3
	sched := testSchedule(t)
	f := newFixture(steps, 3, roundTo[float32])
	a := makeParams[float32](f)
	optA := &SGD[float32]{Momentum: 0.9, Dampening: 0.1, WeightDecay: 1e-2}
	for s := 0; s < split; s++ {
		if err := optA.Step(a, gradsAt(f, a, s), sched.LR(s)); err != nil {
			t.Fatal(err)
		}
	}
	saved := optA.State()
	if len(saved) != len(a) {
		t.Fatalf("State has %d entries, want %d: %v", len(saved), len(a), keysOf(saved))
	}
	for _, p := range a {
		if saved[StateName(KindMomentumBuffer, p.Name)] == nil {
			t.Fatalf("State lacks %s", StateName(KindMomentumBuffer, p.Name))
		}
	}
	b := cloneParams(a)
	optB := &SGD[float32]{Momentum: 0.9, Dampening: 0.1, WeightDecay: 1e-2}
	if err := optB.LoadState(b, saved); err != nil {
		t.Fatal(err)
	}
	// The loaded state is a copy: scribbling on the saved map changes nothing.
	for _, v := range saved {
		v.Data[0] = 12345
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
		if !sameBits(optA.MomentumBuffer(a[j]).Data, optB.MomentumBuffer(b[j]).Data) {
			t.Errorf("buffer of %s differs after the round trip", a[j].Name)
		}
	}
	// State returns copies too.
	st := optA.State()
	for _, v := range st {
		v.Data[0] = 999
	}
	if optA.MomentumBuffer(a[0]).Data[0] == 999 {
		t.Error("State returned the live buffer")
	}
	// Loading nil clears the state.
	if err := optA.LoadState(a, nil); err != nil {
		t.Fatal(err)
	}
	if len(optA.State()) != 0 || optA.MomentumBuffer(a[0]) != nil {
		t.Error("LoadState(nil) did not clear the state")
	}
}

func keysOf[V any](m map[string]V) []string { return sortedKeys(m) }

func TestSGDValidation(t *testing.T) {
	bad := []struct {
		name      string
		opt       SGD[float64]
		fragments []string
	}{
		{"negative momentum", SGD[float64]{Momentum: -0.1}, []string{"momentum"}},
		{"NaN momentum", SGD[float64]{Momentum: math.NaN()}, []string{"momentum"}},
		{"negative weight decay", SGD[float64]{WeightDecay: -1}, []string{"weight decay"}},
		{"infinite weight decay", SGD[float64]{WeightDecay: math.Inf(1)}, []string{"weight decay"}},
		{"NaN dampening", SGD[float64]{Momentum: 0.9, Dampening: math.NaN()}, []string{"dampening"}},
		{"nesterov without momentum", SGD[float64]{Nesterov: true}, []string{"Nesterov"}},
		{"nesterov with dampening", SGD[float64]{Momentum: 0.9, Dampening: 0.1, Nesterov: true}, []string{"Nesterov", "dampening"}},
	}
	for _, c := range bad {
		_, err := NewSGD[float64](c.opt.Momentum, c.opt.Dampening, c.opt.WeightDecay, c.opt.Nesterov)
		wantErr(t, "NewSGD "+c.name, err, c.fragments...)
		p := scalarParam("w", 1)
		o := c.opt
		wantErr(t, "Step "+c.name, o.Step([]*nn.Param[float64]{p}, scalarGrads(p, 1), 0.1), c.fragments...)
		if p.Value.Data[0] != 1 {
			t.Errorf("%s: failed Step changed the parameter", c.name)
		}
	}
	if _, err := NewSGD[float64](0.9, 0, 5e-4, true); err != nil {
		t.Errorf("valid Nesterov settings refused: %v", err)
	}
	testStepValidation(t, func() Optimizer[float64] { return &SGD[float64]{Momentum: 0.9} })
}

func TestSGDLoadStateValidation(t *testing.T) {
	w := &nn.Param[float64]{Name: "w", Value: tensor.New[float64](2, 3)}
	params := []*nn.Param[float64]{w}
	good := func() map[string]*tensor.Dense[float64] {
		return map[string]*tensor.Dense[float64]{"momentum_buffer/w": tensor.New[float64](2, 3)}
	}
	cases := []struct {
		name      string
		edit      func(map[string]*tensor.Dense[float64])
		fragments []string
	}{
		{"no slash", func(m map[string]*tensor.Dense[float64]) { m["momentum_buffer"] = tensor.New[float64](1) }, []string{`"momentum_buffer"`}},
		{"wrong kind", func(m map[string]*tensor.Dense[float64]) { m["exp_avg/w"] = tensor.New[float64](2, 3) }, []string{"exp_avg/w"}},
		{"unknown parameter", func(m map[string]*tensor.Dense[float64]) { m["momentum_buffer/v"] = tensor.New[float64](2, 3) }, []string{"momentum_buffer/v", "unknown parameter"}},
		{"wrong shape", func(m map[string]*tensor.Dense[float64]) { m["momentum_buffer/w"] = tensor.New[float64](3, 2) }, []string{"momentum_buffer/w", "[3 2]", "[2 3]"}},
		{"short data", func(m map[string]*tensor.Dense[float64]) {
			m["momentum_buffer/w"] = &tensor.Dense[float64]{Shape: []int{2, 3}, Data: make([]float64, 5)}
		}, []string{"momentum_buffer/w"}},
		{"nil tensor", func(m map[string]*tensor.Dense[float64]) { m["momentum_buffer/w"] = nil }, []string{"momentum_buffer/w", "nil"}},
	}
	for _, c := range cases {
		opt := &SGD[float64]{Momentum: 0.9}
		if err := opt.LoadState(params, good()); err != nil {
			t.Fatalf("%s: loading a good state: %v", c.name, err)
		}
		opt.MomentumBuffer(w).Data[0] = 7
		st := good()
		c.edit(st)
		wantErr(t, c.name, opt.LoadState(params, st), c.fragments...)
		if b := opt.MomentumBuffer(w); b == nil || b.Data[0] != 7 {
			t.Errorf("%s: failed LoadState changed the state", c.name)
		}
	}
	plain := &SGD[float64]{}
	wantErr(t, "buffers without momentum", plain.LoadState(params, good()), "Momentum is 0")
	dup := []*nn.Param[float64]{w, {Name: "w", Value: tensor.New[float64](1)}}
	wantErr(t, "duplicate names", (&SGD[float64]{Momentum: 0.9}).LoadState(dup, good()), "two parameters are named w")

	// A buffer of the wrong shape for a same-named parameter is caught by Step.
	opt := &SGD[float64]{Momentum: 0.9}
	if err := opt.LoadState(params, good()); err != nil {
		t.Fatal(err)
	}
	other := scalarParam("w", 1)
	wantErr(t, "Step with a stale buffer", opt.Step([]*nn.Param[float64]{other}, scalarGrads(other, 1), 0.1), "momentum_buffer/w", "[2 3]")
	if other.Value.Data[0] != 1 {
		t.Error("failed Step changed the parameter")
	}
}

// testStepValidation checks the input validation shared by every optimizer.
func testStepValidation(t *testing.T, mk func() Optimizer[float64]) {
	t.Helper()
	newP := func() (*nn.Param[float64], *nn.Param[float64]) {
		return &nn.Param[float64]{Name: "a", Value: tensor.New[float64](2)}, &nn.Param[float64]{Name: "b", Value: tensor.New[float64](3)}
	}
	grads := func(a, b *nn.Param[float64], bShape ...int) *nn.Grads[float64] {
		ga := tensor.New[float64](2)
		ga.Data[0], ga.Data[1] = 1, 2
		return &nn.Grads[float64]{Mode: nn.Summed, Of: map[*nn.Param[float64]]*tensor.Dense[float64]{a: ga, b: tensor.New[float64](bShape...)}}
	}
	for _, lr := range []float64{-1e-3, math.NaN(), math.Inf(1)} {
		a, b := newP()
		wantErr(t, "bad lr", mk().Step([]*nn.Param[float64]{a, b}, grads(a, b, 3), lr), "learning rate")
	}
	{
		a, b := newP()
		o := mk()
		wantErr(t, "gradient shape", o.Step([]*nn.Param[float64]{a, b}, grads(a, b, 4), 0.1), "gradient for b", "[4]", "[3]")
		if a.Value.Data[0] != 0 || a.Value.Data[1] != 0 {
			t.Error("failed Step updated parameter a")
		}
		if len(o.State()) != 0 {
			t.Error("failed Step created optimizer state")
		}
	}
	{
		a, b := newP()
		g := grads(a, b, 3)
		g.Of[b] = &tensor.Dense[float64]{Shape: []int{3}, Data: make([]float64, 2)}
		wantErr(t, "gradient data length", mk().Step([]*nn.Param[float64]{a, b}, g, 0.1), "gradient for b")
	}
	{
		a, b := newP()
		g := grads(a, b, 3)
		g.Of[b] = nil
		wantErr(t, "nil gradient", mk().Step([]*nn.Param[float64]{a, b}, g, 0.1), "gradient for b", "nil")
	}
	{
		a, b := newP()
		wantErr(t, "nil grads", mk().Step([]*nn.Param[float64]{a, b}, nil, 0.1), "nil gradients")
		g := grads(a, b, 3)
		g.Mode = nn.PerRow
		wantErr(t, "per-row grads", mk().Step([]*nn.Param[float64]{a, b}, g, 0.1), "Summed")
	}
	{
		a, b := newP()
		b.Name = "a"
		wantErr(t, "duplicate names", mk().Step([]*nn.Param[float64]{a, b}, grads(a, b, 3), 0.1), "two parameters are named a")
		b.Name = ""
		wantErr(t, "empty name", mk().Step([]*nn.Param[float64]{a, b}, grads(a, b, 3), 0.1), "no name")
	}
	{
		a, b := newP()
		wantErr(t, "nil parameter", mk().Step([]*nn.Param[float64]{a, nil}, grads(a, b, 3), 0.1), "parameter 1 is nil")
		b.Value = nil
		wantErr(t, "nil value", mk().Step([]*nn.Param[float64]{a, b}, grads(a, b, 3), 0.1), "b has no value")
		b.Value = &tensor.Dense[float64]{Shape: []int{3}, Data: make([]float64, 4)}
		wantErr(t, "inconsistent value", mk().Step([]*nn.Param[float64]{a, b}, grads(a, b, 3), 0.1), "parameter b has 4 values")
	}
	{
		// A valid call works, and a parameter without a gradient is untouched.
		a, b := newP()
		b.Value.Data[0] = 3
		g := grads(a, b, 3)
		delete(g.Of, b)
		if err := mk().Step([]*nn.Param[float64]{a, b}, g, 0.1); err != nil {
			t.Fatalf("valid Step: %v", err)
		}
		if a.Value.Data[0] == 0 {
			t.Error("valid Step did not update a")
		}
		if b.Value.Data[0] != 3 {
			t.Error("Step updated b, which had no gradient")
		}
	}
}
