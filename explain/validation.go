package explain

import (
	"math"

	"github.com/explaind/explaind/tensor"
)

// validation accumulates a job's Validation, which every job reports
// whatever its queries: the completeness accounting of the kernel machine
// against the model.
type validation[E tensor.Float] struct {
	Validation
	// nodes is the number of quadrature nodes summed over test samples and
	// steps.
	nodes int
}

func newValidation[E tensor.Float](d *dims) validation[E] {
	xc := d.samples * d.classes
	return validation[E]{Validation: Validation{
		Start: make([]float64, xc), Model: make([]float64, xc),
		Data: make([]float64, xc), Reg: make([]float64, xc), Resid: make([]float64, xc), Quad: make([]float64, xc),
		StepMaxCompleteness: make([]float64, d.steps), StepMaxChange: make([]float64, d.steps),
		StepChange: make([]float64, d.steps*d.samples),
		Certified:  true,
	}}
}

// addRows accumulates a chunk's forward-mode results in its test samples'
// rows; the chunks of a step may add their rows at once.
func (v *validation[E]) addRows(c *chunk[E], d *dims) {
	res, C, si := c.forward, d.classes, c.step
	B := res.Change.Shape[0]
	if si == 0 {
		copy(v.Start[c.lo*C:], res.Before.Data)
	}
	if si == d.steps-1 {
		copy(v.Model[c.lo*C:], res.After.Data)
	}
	for i := 0; i < B*C; i++ {
		g := c.lo*C + i
		v.Data[g] += res.Data.Data[i]
		v.Reg[g] += res.Reg.Data[i]
		v.Resid[g] += res.Resid.Data[i]
		v.Quad[g] += res.Completeness.Data[i]
	}
	for b := 0; b < B; b++ {
		y := d.labels[c.lo+b]
		v.StepChange[si*d.samples+c.lo+b] = res.Change.Data[b*C+y]
	}
}

// addTotals accumulates what a chunk adds over test samples (the step's
// maxima, certification, misses and node count), in chunk order.
func (v *validation[E]) addTotals(c *chunk[E]) {
	res, si := c.forward, c.step
	v.StepMaxCompleteness[si] = math.Max(v.StepMaxCompleteness[si], res.MaxCompleteness)
	v.StepMaxChange[si] = math.Max(v.StepMaxChange[si], res.MaxChange)
	if !res.Certified {
		v.Certified = false
	}
	for _, m := range res.Missed {
		v.Missed = append(v.Missed, Miss{Step: res.Step, Sample: c.lo + m.Sample, Residual: m.Residual})
		v.MissedCount++
	}
	for _, n := range res.Plan.NodesPerSample() {
		v.nodes += n
	}
}

// output returns the Validation of the finished job.
func (v *validation[E]) output(d *dims) Validation {
	out := v.Validation
	out.Nodes = float64(v.nodes) / float64(d.samples*d.steps)
	return out
}
