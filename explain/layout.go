package explain

import (
	"fmt"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/tensor"
)

// dims are the sizes of a job that every evaluation reads.
type dims struct {
	// samples and classes are the test samples X and the model's classes C;
	// steps is To − From and train the number of training samples N.
	samples, classes, steps, train int
	// labels are the test samples' classes.
	labels []int
	// The model's parameter tensors in model order: names, shapes and
	// numbers of elements.
	tensorNames  []string
	tensorShapes [][]int
	tensorSizes  []int
}

// paramCount is P, the number of parameter elements.
func (d *dims) paramCount() int64 {
	var p int64
	for _, s := range d.tensorSizes {
		p += int64(s)
	}
	return p
}

// paramAxis is how a query sums the parameter axis: each tensor adds to
// entries of the query's tensor or group axis, or to the single entry of a
// query that keeps neither.
type paramAxis struct {
	// size is the number of entries (1 without a tensor or group axis).
	size int
	// entries lists, per tensor, the entries it adds to (a tensor in no
	// group adds to none, one in several groups to each).
	entries [][]int
	// name and labels name the axis ("tensor" or "group") and its entries;
	// both are empty without a tensor or group axis.
	name   string
	labels []string
}

// newParamAxis returns the parameter axis of q for the tensors of d and the
// groups (with groupsOf, per tensor, its groups' indices).
func newParamAxis(q Query, d *dims, groups []string, groupsOf [][]int) paramAxis {
	switch {
	case q.Keep&Tensor != 0:
		a := paramAxis{size: len(d.tensorNames), name: Tensor.String(), labels: d.tensorNames}
		for t := range d.tensorNames {
			a.entries = append(a.entries, []int{t})
		}
		return a
	case q.Keep&Group != 0:
		return paramAxis{size: len(groups), entries: groupsOf, name: Group.String(), labels: groups}
	}
	a := paramAxis{size: 1}
	for range d.tensorNames {
		a.entries = append(a.entries, []int{0})
	}
	return a
}

// appendTo adds the axis, when there is one, to a result's axes.
func (a paramAxis) appendTo(r *Result) {
	if a.name != "" {
		r.Axes, r.Shape, r.Labels = append(r.Axes, a.name), append(r.Shape, a.size), a.labels
	}
}

// newResult returns q's result with the step (of buckets entries), test
// and class axes it keeps.
func newResult(q Query, buckets int, d *dims) *Result {
	r := &Result{Query: q}
	if q.Keep&Step != 0 {
		r.Axes, r.Shape = append(r.Axes, "step"), append(r.Shape, buckets)
	}
	if q.Keep&Test != 0 {
		r.Axes, r.Shape = append(r.Axes, "test"), append(r.Shape, d.samples)
	}
	if q.Keep&Class != 0 {
		r.Axes, r.Shape = append(r.Axes, "class"), append(r.Shape, d.classes)
	}
	return r
}

// cotKind is a kind of cotangent of the feature pass, the reverse pass that
// gives the features φ_s(x) of the outputs it weighs.
type cotKind int

// The cotangent kinds.
const (
	cotIdentity cotKind = iota // one per class: φ of every class
	cotOnes                    // the class sum
	cotLabel                   // the test sample's true class
	nCot
)

// cotangentOf returns the cotangent kind a query reads its features with
// and the number of cotangents of that kind (C or 1): the true class, every
// class when the class axis is kept or an absolute value is taken per
// class, and otherwise their sum.
func cotangentOf(q Query, classes int) (cotKind, int) {
	switch {
	case q.Classes == TrueClass:
		return cotLabel, 1
	case q.Keep&Class != 0 || q.Abs:
		return cotIdentity, classes
	}
	return cotOnes, 1
}

// featureRows lays out the feature pass's cotangents for each test sample:
// the blocks of the kinds some query reads, in the order of the kinds, C
// rows for cotIdentity and one for cotOnes and cotLabel.
type featureRows struct {
	need   [nCot]bool
	offset [nCot]int // the first row of each kind's block
	total  int       // rows per test sample (0: no feature pass)
}

// layout places the blocks of the needed kinds.
func (r *featureRows) layout(classes int) {
	r.total = 0
	for k := cotIdentity; k < nCot; k++ {
		if r.need[k] {
			r.offset[k] = r.total
			if k == cotIdentity {
				r.total += classes
			} else {
				r.total++
			}
		}
	}
}

// featureRow returns φ of tensor t (of size elements) for test sample b of
// a chunk and row k of kind's block.
func featureRow[E tensor.Float](r *featureRows, f *epk.Features[E], kind cotKind, t, size, b, k int) []E {
	i := b*r.total + r.offset[kind] + k
	return f.Phi[t].Data[i*size : (i+1)*size]
}

// cotangents returns the feature pass's cotangents [B, total, C] for the
// test samples of labels.
func cotangents[E tensor.Float](r *featureRows, classes int, labels []int) *tensor.Dense[E] {
	C, K := classes, r.total
	cot := tensor.New[E](len(labels), K, C)
	for b := range labels {
		row := cot.Data[b*K*C : (b+1)*K*C]
		if r.need[cotIdentity] {
			o := r.offset[cotIdentity]
			for c := 0; c < C; c++ {
				row[(o+c)*C+c] = 1
			}
		}
		if r.need[cotOnes] {
			o := r.offset[cotOnes]
			for c := 0; c < C; c++ {
				row[o*C+c] = 1
			}
		}
		if r.need[cotLabel] {
			row[r.offset[cotLabel]*C+labels[b]] = 1
		}
	}
	return cot
}

// partOf returns in buf the part of tensor t's update a query attributes,
// in float64.
func partOf[E tensor.Float](u *epk.Update[E], p Part, t int, buf []float64) []float64 {
	d, r, s := u.Data[t].Data, u.Reg[t].Data, u.Resid[t].Data
	for i := range buf {
		switch p {
		case Update:
			buf[i] = float64(d[i]) + float64(r[i]) + float64(s[i])
		case Data:
			buf[i] = float64(d[i])
		case Reg:
			buf[i] = float64(r[i])
		case Resid:
			buf[i] = float64(s[i])
		case Model:
			buf[i] = float64(d[i]) + float64(r[i])
		}
	}
	return buf
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d B", n)
}
