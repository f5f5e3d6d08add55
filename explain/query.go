package explain

import (
	"fmt"
	"slices"
	"strings"
)

// Axis is one axis of the contribution tensor T[x, c, k, s, j] (docs/method.md
// §2) that a query can keep.
type Axis uint8

// The axes a query can keep. Tensor and Group coarsen the parameter axis j
// (to whole parameter tensors or named groups of tensors); Param keeps
// every element.
const (
	Test   Axis = 1 << iota // x: test samples
	Class                   // c: output classes
	Train                   // k: training samples (data attribution)
	Step                    // s: training steps (or buckets of steps)
	Param                   // j: parameter elements
	Tensor                  // j summed within each parameter tensor
	Group                   // j summed within each named group of tensors
)

var axisNames = []struct {
	a    Axis
	name string
}{{Step, "step"}, {Test, "test"}, {Class, "class"}, {Train, "train"}, {Tensor, "tensor"}, {Group, "group"}, {Param, "param"}}

// String names the axes of a (for example "test,class").
func (a Axis) String() string {
	var parts []string
	for _, n := range axisNames {
		if a&n.a != 0 {
			parts = append(parts, n.name)
		}
	}
	return strings.Join(parts, ",")
}

// ParseAxes parses a comma-separated list of axis names.
func ParseAxes(s string) (Axis, error) {
	var a Axis
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		i := slices.IndexFunc(axisNames, func(n struct {
			a    Axis
			name string
		}) bool {
			return n.name == f
		})
		if i < 0 {
			return 0, fmt.Errorf("unknown axis %q (want step, test, class, train, tensor, group or param)", f)
		}
		a |= axisNames[i].a
	}
	return a, nil
}

// Part selects which part of each update a query attributes (docs/method.md
// §1: Δθ_s = data + regularization + reconstruction residual).
type Part uint8

// The parts. Model is data + regularization, what the optimizer's
// equations explain; Update adds the update-reconstruction residual, so
// that Σ_s (Update) is the model's exact change up to quadrature error.
const (
	Update Part = iota // data + reg + resid: the recorded update
	Data               // the gradient (training data) part
	Reg                // the weight-decay part
	Resid              // the update-reconstruction residual
	Model              // data + reg
)

// String names the part.
func (p Part) String() string {
	switch p {
	case Update:
		return "update"
	case Data:
		return "data"
	case Reg:
		return "reg"
	case Resid:
		return "resid"
	case Model:
		return "model"
	}
	return fmt.Sprintf("Part(%d)", p)
}

// Classes selects which outputs a query sums or keeps.
type Classes uint8

// AllClasses uses every output class (kept with the Class axis, summed
// otherwise); TrueClass uses only each test sample's labelled class (the
// log-probability of the correct answer).
const (
	AllClasses Classes = iota
	TrueClass
)

// Query names one explanation: a sum of the contribution tensor over the
// axes it does not keep. With Abs, the absolute value is taken after
// summing over steps (and over training samples, unless kept) at the
// resolution of every other axis, then the remaining axes not kept are
// summed: R[kept] = Σ_{x,c,j not kept} |Σ_{s,k} T| (pruning importance is
// Keep: Param, Abs: true).
type Query struct {
	// Name identifies the result.
	Name string
	// Keep is the set of kept axes (Tensor, Group and Param exclude each
	// other).
	Keep Axis
	// Part is the part of the updates attributed (default Update).
	Part Part
	// Classes selects all classes or each sample's true class.
	Classes Classes
	// Abs takes the absolute value after summing over steps.
	Abs bool
	// Bucket is the number of consecutive steps per bucket when Step is
	// kept (default 1).
	Bucket int
	// Gram, when positive, makes the query a snapshot query (kind
	// Snapshots), which keeps Test and Group: it accumulates each test
	// sample's per-element scores e_s(x) = Σ_{s' < s} Σ_c φ_{s'}(x)[c, :] ⊙
	// (part of Δθ_{s'}) over the steps from From, and at every snapshot
	// step s (the multiples of Gram in (From, To), and To) stores, per
	// group g, the Gram matrix G_g[x, x'] = <e_s(x)|_g, e_s(x')|_g> of the
	// scores restricted to the group's tensors. Result.Steps lists the
	// snapshot steps.
	Gram int
}

// Kind is the evaluation a query needs, cheapest first (docs/method.md §2).
type Kind uint8

// The evaluations. Forward queries are JVPs along the update (one tangent
// per part; when tensors are kept, one more per tensor if the class axis
// is kept, else dot products with the feature pass); Feature queries
// need reverse-mode features per test sample (per element); Sweep queries
// need the reverse-time data-kernel sweep over training samples.
// Snapshots queries (Query.Gram) accumulate the feature pass's
// per-element scores like Feature queries and reduce them to per-group
// Gram matrices at snapshot steps.
const (
	Forward Kind = iota
	Feature
	Sweep
	Snapshots
)

// kind classifies q and checks that it can be evaluated.
func (q Query) kind() (Kind, error) {
	k := q.Keep
	if n := popcount(k & (Param | Tensor | Group)); n > 1 {
		return 0, fmt.Errorf("query %q keeps %s: keep at most one of param, tensor and group", q.Name, k&(Param|Tensor|Group))
	}
	if q.Classes == TrueClass && k&Class != 0 {
		return 0, fmt.Errorf("query %q keeps the class axis but uses only the true class", q.Name)
	}
	if q.Bucket < 0 {
		return 0, fmt.Errorf("query %q: step bucket %d must be positive", q.Name, q.Bucket)
	}
	if q.Part > Model {
		return 0, fmt.Errorf("query %q: unknown part %d", q.Name, q.Part)
	}
	if q.Gram < 0 {
		return 0, fmt.Errorf("query %q: snapshot interval %d must be positive", q.Name, q.Gram)
	}
	if q.Gram > 0 {
		if k != Test|Group || q.Abs {
			return 0, fmt.Errorf("query %q takes Gram snapshots: it keeps test and group and nothing else, without an absolute value", q.Name)
		}
		return Snapshots, nil
	}
	switch {
	case k&Train != 0:
		if q.Part != Data {
			return 0, fmt.Errorf("query %q keeps training samples: only the data part is attributed to them (set Part: Data)", q.Name)
		}
		if q.Abs {
			return 0, fmt.Errorf("query %q: an absolute value per training sample and step is not supported", q.Name)
		}
		if k&(Param|Step) != 0 {
			return 0, fmt.Errorf("query %q keeps training samples with %s: that is n_train × P (or × steps) values per test row; keep tensor or group instead", q.Name, k&(Param|Step))
		}
		return Sweep, nil
	case k&Param != 0 || q.Abs:
		if k&Step != 0 {
			return 0, fmt.Errorf("query %q keeps steps with per-element (or absolute) scores: keep tensor or group per step instead", q.Name)
		}
		return Feature, nil
	default:
		if k&(Tensor|Group) != 0 && q.Part != Model {
			return 0, fmt.Errorf("query %q keeps %s: per-tensor contributions are of the model part (data + reg), set Part: Model", q.Name, k&(Tensor|Group))
		}
		return Forward, nil
	}
}

func popcount(a Axis) int {
	n := 0
	for ; a != 0; a &= a - 1 {
		n++
	}
	return n
}
