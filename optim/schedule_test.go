package optim

import (
	"math"
	"testing"
)

func TestConstant(t *testing.T) {
	var s Schedule = Constant(3e-4)
	for _, step := range []int{0, 1, 1000} {
		if got := s.LR(step); got != 3e-4 {
			t.Errorf("Constant.LR(%d) = %v", step, got)
		}
	}
}

func TestPiecewiseLinear(t *testing.T) {
	s, err := NewPiecewiseLinear([]float64{0, 10, 20}, []float64{0, 1, 0.5})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		step int
		want float64
	}{
		{-5, 0},    // clamped before the first breakpoint
		{0, 0},     // at a breakpoint
		{5, 0.5},   // rising
		{10, 1},    // at a breakpoint
		{15, 0.75}, // falling
		{18, 0.6},
		{20, 0.5}, // at the last breakpoint
		{99, 0.5}, // clamped after it
	}
	for _, c := range cases {
		if got := s.LR(c.step); !(math.Abs(got-c.want) <= 1e-15) {
			t.Errorf("LR(%d) = %v, want %v", c.step, got, c.want)
		}
	}
	// numpy's formula, exactly: slope·(x − xp[j]) + fp[j].
	if got, want := s.LR(13), (0.5-1)/(20-10.0)*3+1; got != want {
		t.Errorf("LR(13) = %v, want numpy's %v", got, want)
	}
	// The constructor copies its arguments.
	steps := []float64{0, 10}
	c, err := NewPiecewiseLinear(steps, []float64{1, 2})
	if err != nil {
		t.Fatal(err)
	}
	steps[1] = 1000
	if got := c.LR(10); got != 2 {
		t.Errorf("LR after editing the caller's slice = %v, want 2", got)
	}
	one := PiecewiseLinear{Steps: []float64{4}, Values: []float64{0.25}}
	for _, step := range []int{0, 4, 9} {
		if got := one.LR(step); got != 0.25 {
			t.Errorf("single breakpoint: LR(%d) = %v", step, got)
		}
	}
}

func TestPiecewiseLinearValidation(t *testing.T) {
	cases := []struct {
		name          string
		steps, values []float64
		fragment      string
	}{
		{"empty", nil, nil, "no breakpoints"},
		{"length mismatch", []float64{0, 1}, []float64{1}, "2 breakpoints but 1 values"},
		{"repeated breakpoint", []float64{0, 5, 5}, []float64{0, 1, 0}, "increase strictly"},
		{"decreasing breakpoints", []float64{0, 5, 3}, []float64{0, 1, 0}, "increase strictly"},
		{"NaN breakpoint", []float64{0, math.NaN()}, []float64{0, 1}, "breakpoint 1"},
		{"infinite value", []float64{0, 1}, []float64{0, math.Inf(1)}, "value 1"},
	}
	for _, c := range cases {
		_, err := NewPiecewiseLinear(c.steps, c.values)
		wantErr(t, c.name, err, c.fragment)
		if got := (PiecewiseLinear{Steps: c.steps, Values: c.values}).LR(0); !math.IsNaN(got) {
			t.Errorf("%s: LR of an invalid schedule = %v, want NaN", c.name, got)
		}
	}
}

func TestTriangle(t *testing.T) {
	// 10 steps per epoch, peak at epoch 5, end at epoch 50: breakpoints 0, 50, 500.
	s, err := Triangle(0.4, 10, 5, 50)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		step int
		want float64
	}{
		{0, 0},                // starts at 0
		{25, 0.2},             // half way up
		{50, 0.4},             // peak
		{275, 0.2},            // half way down
		{410, 0.4 * 90 / 450}, // near the end
		{500, 0},              // end
		{600, 0},              // past the end
	}
	for _, c := range cases {
		if got := s.LR(c.step); !(math.Abs(got-c.want) <= 1e-15) {
			t.Errorf("Triangle LR(%d) = %v, want %v", c.step, got, c.want)
		}
	}
	if s.LR(0) != 0 || s.LR(50) != 0.4 || s.LR(500) != 0 {
		t.Error("Triangle breakpoints are not exact")
	}
	// Monotone up to the peak, then down.
	for step := 1; step <= 500; step++ {
		prev, cur := s.LR(step-1), s.LR(step)
		if (step <= 50 && !(cur > prev)) || (step > 50 && !(cur < prev)) {
			t.Fatalf("Triangle not a triangle at step %d: %v then %v", step, prev, cur)
		}
	}
	bad := []struct {
		name                            string
		peak                            float64
		perEpoch, peakEpoch, totalEpoch int
		fragment                        string
	}{
		{"peak at 0", 0.4, 10, 0, 50, "increase strictly"},
		{"peak at end", 0.4, 10, 50, 50, "increase strictly"},
		{"peak after end", 0.4, 10, 60, 50, "increase strictly"},
		{"no steps per epoch", 0.4, 0, 5, 50, "steps per epoch"},
		{"negative lr", -0.4, 10, 5, 50, "peak learning rate"},
		{"NaN lr", math.NaN(), 10, 5, 50, "peak learning rate"},
	}
	for _, c := range bad {
		_, err := Triangle(c.peak, c.perEpoch, c.peakEpoch, c.totalEpoch)
		wantErr(t, c.name, err, c.fragment)
	}
	if got := (Scaled{Scale: 1}).LR(0); !math.IsNaN(got) {
		t.Errorf("Scaled without a base: LR = %v, want NaN", got)
	}
}
