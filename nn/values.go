package nn

import (
	"fmt"

	"github.com/explaind/explaind/tensor"
)

// A ValueCounter reports its own forward working set (see ForwardValues):
// composite layers that are neither Sequential nor Residual implement it
// to be counted through.
type ValueCounter interface {
	ForwardValues(in []int) (int, error)
}

// ForwardValues returns the number of values a forward pass of l on an
// input of shape in creates: every layer's output, and for a Conv2d also
// its unfolded columns, C·KH·KW·H'·W' per sample. It is the working set
// that grows with the batch (the input itself not counted), by which a
// caller sizes batches: with in = [1, …] it is the values per sample.
// Sequential and Residual are counted layer by layer, a layer with a
// ForwardValues method by that method, any other layer by its output.
func ForwardValues[T tensor.Float](l Layer[T], in []int) (int, error) {
	switch l := l.(type) {
	case ValueCounter:
		return l.ForwardValues(in)
	case *Sequential[T]:
		n, shape := 0, in
		for i, m := range l.Layers {
			v, err := ForwardValues(m, shape)
			if err != nil {
				return 0, fmt.Errorf("layer %d: %w", i, err)
			}
			if shape, err = m.OutShape(shape); err != nil {
				return 0, fmt.Errorf("layer %d: %w", i, err)
			}
			n += v
		}
		return n, nil
	case *Residual[T]:
		v, err := ForwardValues(l.Module, in)
		if err != nil {
			return 0, err
		}
		return v + tensor.Numel(in), nil // the module's values and the sum
	case *Conv2d[T]:
		g, err := l.geom(in)
		if err != nil {
			return 0, err
		}
		return g.b * (g.o*g.pos + g.ck*g.pos), nil
	}
	out, err := l.OutShape(in)
	if err != nil {
		return 0, err
	}
	return tensor.Numel(out), nil
}
