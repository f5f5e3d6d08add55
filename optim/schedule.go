package optim

import (
	"fmt"
	"math"
)

// Schedule gives the learning rate of each optimizer step.
type Schedule interface {
	// LR returns the learning rate of step step (0-based: the first
	// Optimizer.Step of a run is step 0). An invalid schedule returns NaN,
	// which Optimizer.Step refuses.
	LR(step int) float64
}

// Constant is a schedule with the same learning rate at every step.
type Constant float64

// LR returns the constant learning rate.
func (c Constant) LR(int) float64 { return float64(c) }

// PiecewiseLinear interpolates linearly between breakpoints, with
// numpy.interp semantics: LR(step) = numpy.interp(step, Steps, Values), so
// it is Values[0] before Steps[0] and Values[len-1] after the last
// breakpoint. Steps must be strictly increasing and finite, Values finite and
// of the same length (at least one); see Validate.
type PiecewiseLinear struct {
	// Steps are the breakpoints (numpy's xp), strictly increasing.
	Steps []float64
	// Values are the learning rates at the breakpoints (numpy's fp).
	Values []float64
}

// NewPiecewiseLinear returns a validated PiecewiseLinear holding copies of
// steps and values.
func NewPiecewiseLinear(steps, values []float64) (PiecewiseLinear, error) {
	s := PiecewiseLinear{Steps: append([]float64(nil), steps...), Values: append([]float64(nil), values...)}
	if err := s.Validate(); err != nil {
		return PiecewiseLinear{}, err
	}
	return s, nil
}

// Validate reports whether s is a valid schedule.
func (s PiecewiseLinear) Validate() error {
	if len(s.Steps) == 0 {
		return fmt.Errorf("optim.PiecewiseLinear: no breakpoints")
	}
	if len(s.Steps) != len(s.Values) {
		return fmt.Errorf("optim.PiecewiseLinear: %d breakpoints but %d values", len(s.Steps), len(s.Values))
	}
	for i, x := range s.Steps {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Errorf("optim.PiecewiseLinear: breakpoint %d is %v (want finite)", i, x)
		}
		if i > 0 && !(x > s.Steps[i-1]) {
			return fmt.Errorf("optim.PiecewiseLinear: breakpoints must increase strictly, but breakpoint %d (%v) ≤ breakpoint %d (%v)", i, x, i-1, s.Steps[i-1])
		}
	}
	for i, y := range s.Values {
		if math.IsNaN(y) || math.IsInf(y, 0) {
			return fmt.Errorf("optim.PiecewiseLinear: value %d is %v (want finite)", i, y)
		}
	}
	return nil
}

// LR returns numpy.interp(float64(step), s.Steps, s.Values), computed as
// numpy computes it, or NaN when s is invalid.
func (s PiecewiseLinear) LR(step int) float64 {
	if s.Validate() != nil {
		return math.NaN()
	}
	return interp(float64(step), s.Steps, s.Values)
}

// interp is numpy's arr_interp for one point with increasing xp.
func interp(x float64, xp, fp []float64) float64 {
	n := len(xp)
	if x < xp[0] {
		return fp[0]
	}
	if x > xp[n-1] {
		return fp[n-1]
	}
	// j = the last index with xp[j] <= x.
	j := 0
	for j+1 < n && xp[j+1] <= x {
		j++
	}
	if j == n-1 || xp[j] == x {
		return fp[j]
	}
	slope := (fp[j+1] - fp[j]) / (xp[j+1] - xp[j])
	y := float64(slope*(x-xp[j])) + fp[j]
	if math.IsNaN(y) {
		y = float64(slope*(x-xp[j+1])) + fp[j+1]
		if math.IsNaN(y) && fp[j] == fp[j+1] {
			y = fp[j]
		}
	}
	return y
}

// Scaled multiplies another schedule by a constant: LR(step) =
// Scale·Base.LR(step), the way torch.optim.lr_scheduler.LambdaLR multiplies
// the base learning rate by the lambda's value.
type Scaled struct {
	// Scale multiplies every learning rate of Base.
	Scale float64
	// Base is the schedule being scaled.
	Base Schedule
}

// LR returns Scale·Base.LR(step), or NaN when Base is nil.
func (s Scaled) LR(step int) float64 {
	if s.Base == nil {
		return math.NaN()
	}
	return s.Scale * s.Base.LR(step)
}

// Triangle returns the paper's CIFAR-10 schedule: a linear warm-up from 0 to
// peakLR over peakEpoch epochs, then a linear decay to 0 at totalEpochs,
//
//	LR(step) = peakLR · numpy.interp(step, [0, peakEpoch·S, totalEpochs·S], [0, 1, 0])
//
// with S = stepsPerEpoch. Step 0 has learning rate 0, and steps past the end
// stay at 0. It needs peakLR finite and ≥ 0, stepsPerEpoch ≥ 1 and
// 0 < peakEpoch < totalEpochs.
func Triangle(peakLR float64, stepsPerEpoch, peakEpoch, totalEpochs int) (Scaled, error) {
	if math.IsNaN(peakLR) || math.IsInf(peakLR, 0) || peakLR < 0 {
		return Scaled{}, fmt.Errorf("optim.Triangle: invalid peak learning rate %v (want a finite value ≥ 0)", peakLR)
	}
	if stepsPerEpoch < 1 {
		return Scaled{}, fmt.Errorf("optim.Triangle: invalid steps per epoch %d (want ≥ 1)", stepsPerEpoch)
	}
	if !(0 < peakEpoch && peakEpoch < totalEpochs) {
		return Scaled{}, fmt.Errorf("optim.Triangle: breakpoints must increase strictly: want 0 < peak epoch (%d) < total epochs (%d)", peakEpoch, totalEpochs)
	}
	base, err := NewPiecewiseLinear(
		[]float64{0, float64(peakEpoch * stepsPerEpoch), float64(totalEpochs * stepsPerEpoch)},
		[]float64{0, 1, 0})
	if err != nil {
		return Scaled{}, err
	}
	return Scaled{Scale: peakLR, Base: base}, nil
}
