package train

import "testing"

func TestPhasesOf(t *testing.T) {
	ms := []EpochMetrics{
		{Step: 10, TrainAcc: 0.5, ValAcc: 0.2},  // validation high before memorization: not a rise
		{Step: 20, TrainAcc: 0.99, ValAcc: 0.0}, // memorized
		{Step: 30, TrainAcc: 1, ValAcc: 0.05},
		{Step: 40, TrainAcc: 1, ValAcc: 0.3}, // rising
		{Step: 50, TrainAcc: 1, ValAcc: 0.98},
		{Step: 60, TrainAcc: 1, ValAcc: 0.99}, // grokked at 0.99
		{Step: 70, TrainAcc: 1, ValAcc: 1},    // grokked at the default target 1
	}
	for _, c := range []struct {
		target float64
		want   Phases
	}{
		{0.99, Phases{20, 40, 60}},
		{0, Phases{20, 40, 70}},
	} {
		if got := PhasesOf(ms, c.target); got != c.want {
			t.Errorf("target %v: %+v, want %+v", c.target, got, c.want)
		}
	}
	if got := PhasesOf(ms[:3], 0.99); got != (Phases{20, -1, -1}) {
		t.Errorf("not grokked: %+v", got)
	}
	if got := PhasesOf(nil, 0.99); got != (Phases{-1, -1, -1}) {
		t.Errorf("no metrics: %+v", got)
	}
	// A jump straight to the target rises and groks at once.
	if got := PhasesOf([]EpochMetrics{{Step: 5, TrainAcc: 1}, {Step: 9, TrainAcc: 1, ValAcc: 1}}, 0); got != (Phases{5, 9, 9}) {
		t.Errorf("jump: %+v", got)
	}
}
