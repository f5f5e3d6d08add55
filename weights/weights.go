// Package weights reads and writes parameters as safetensors files with
// PyTorch state_dict names, so that weights trained in PyTorch can be
// explained here and ours opened with safetensors.torch.load_file.
//
// Loading is strict: a missing, extra or wrongly shaped tensor, a dtype that
// is not a float, or a truncated file is an error naming the tensor (or the
// file) and the problem, and nothing is loaded unless everything fits.
// Writing is atomic: a temporary file in the same directory is renamed over
// the destination only once it is complete.
package weights

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"

	"github.com/explaind/explaind/internal/atomicfile"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
	"github.com/nlpodyssey/safetensors"
)

// File is a parsed safetensors file held in memory.
type File struct {
	path string
	st   safetensors.SafeTensors
	meta map[string]string
}

// Open reads and parses a safetensors file.
func Open(path string) (*File, error) {
	buf, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("weights: %w", err)
	}
	return Parse(path, buf)
}

// Parse parses a safetensors file already in memory; name is used in errors.
func Parse(name string, buf []byte) (*File, error) {
	if len(buf) < 8 {
		return nil, fmt.Errorf("weights: %s is not a safetensors file: only %d bytes (truncated?)", name, len(buf))
	}
	if n := binary.LittleEndian.Uint64(buf[:8]); n > uint64(len(buf)-8) {
		return nil, fmt.Errorf("weights: %s is truncated: its header claims %d bytes but the file has %d after the length", name, n, len(buf)-8)
	}
	_, md, err := safetensors.ReadMetadata(buf)
	if err != nil {
		if strings.Contains(err.Error(), "incomplete buffer") {
			return nil, fmt.Errorf("weights: %s is truncated or has trailing bytes: its tensors do not end where the file ends", name)
		}
		return nil, fmt.Errorf("weights: %s is not a valid safetensors file: %v", name, err)
	}
	st, err := safetensors.Deserialize(buf)
	if err != nil {
		return nil, fmt.Errorf("weights: %s: %v", name, err)
	}
	// The header's dimensions are uint64s; the byte count bounds their
	// product, but not a dimension of a tensor with another dimension 0.
	for _, n := range st.Names() {
		tv, _ := st.Tensor(n)
		for _, d := range tv.Shape() {
			if d > math.MaxInt {
				return nil, fmt.Errorf("weights: %s: tensor %q has shape %v, with a dimension beyond %d", name, n, tv.Shape(), math.MaxInt)
			}
		}
	}
	return &File{path: name, st: st, meta: md.Metadata()}, nil
}

// Path returns the file's path as given to Open.
func (f *File) Path() string { return f.path }

// Metadata returns the file's "__metadata__" strings (never nil).
func (f *File) Metadata() map[string]string {
	if f.meta == nil {
		return map[string]string{}
	}
	return f.meta
}

// Names returns the tensor names in sorted order.
func (f *File) Names() []string {
	names := f.st.Names()
	sort.Strings(names)
	return names
}

// Has reports whether the file holds a tensor called name.
func (f *File) Has(name string) bool {
	_, ok := f.st.Tensor(name)
	return ok
}

// Shape returns a tensor's shape.
func (f *File) Shape(name string) ([]int, error) {
	tv, ok := f.st.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("weights: %s has no tensor %q", f.path, name)
	}
	return intShape(tv.Shape()), nil
}

func intShape(s []uint64) []int {
	out := make([]int, len(s))
	for i, d := range s {
		out[i] = int(d)
	}
	return out
}

// Get returns a floating-point tensor converted to T. F32 and F64 tensors
// are accepted; any other dtype is an error naming the tensor.
func Get[T tensor.Float](f *File, name string) (*tensor.Dense[T], error) {
	tv, ok := f.st.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("weights: %s has no tensor %q", f.path, name)
	}
	shape := intShape(tv.Shape())
	out := tensor.New[T](shape...)
	data := tv.Data()
	switch tv.DType() {
	case safetensors.F32:
		for i := range out.Data {
			out.Data[i] = T(math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:])))
		}
	case safetensors.F64:
		for i := range out.Data {
			out.Data[i] = T(math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:])))
		}
	default:
		return nil, fmt.Errorf("weights: tensor %q in %s has dtype %s; want F32 or F64", name, f.path, tv.DType())
	}
	return out, nil
}

// Ints returns an integer tensor (I64 or I32) as ints, with its shape.
func (f *File) Ints(name string) ([]int, []int, error) {
	tv, ok := f.st.Tensor(name)
	if !ok {
		return nil, nil, fmt.Errorf("weights: %s has no tensor %q", f.path, name)
	}
	shape := intShape(tv.Shape())
	n := tensor.Numel(shape)
	out := make([]int, n)
	data := tv.Data()
	switch tv.DType() {
	case safetensors.I64:
		for i := range out {
			out[i] = int(int64(binary.LittleEndian.Uint64(data[8*i:])))
		}
	case safetensors.I32:
		for i := range out {
			out[i] = int(int32(binary.LittleEndian.Uint32(data[4*i:])))
		}
	default:
		return nil, nil, fmt.Errorf("weights: tensor %q in %s has dtype %s; want I64 or I32", name, f.path, tv.DType())
	}
	return out, shape, nil
}

// LoadParams copies the tensors prefix+p.Name into every parameter. It
// fails, loading nothing, if a parameter is missing or has another shape, or
// if the file holds tensors under prefix that match no parameter and are
// not listed in ignore (for example the reference transformer's unused
// "positional_encoding.pe").
func LoadParams[T tensor.Float](f *File, prefix string, params []*nn.Param[T], ignore ...string) error {
	var problems []string
	want := map[string]bool{}
	loaded := make([]*tensor.Dense[T], len(params))
	for i, p := range params {
		name := prefix + p.Name
		want[name] = true
		shape, err := f.Shape(name)
		if err != nil {
			problems = append(problems, fmt.Sprintf("missing tensor %q (shape %v)", name, p.Value.Shape))
			continue
		}
		if !tensor.SameShape(shape, p.Value.Shape) {
			problems = append(problems, fmt.Sprintf("tensor %q has shape %v, the model needs %v", name, shape, p.Value.Shape))
			continue
		}
		t, err := Get[T](f, name)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		loaded[i] = t
	}
	skip := map[string]bool{}
	for _, n := range ignore {
		skip[prefix+n] = true
	}
	for _, name := range f.Names() {
		if strings.HasPrefix(name, prefix) && !want[name] && !skip[name] {
			problems = append(problems, fmt.Sprintf("unexpected tensor %q: the model has no such parameter", name))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("weights: cannot load %s: %s", f.path, strings.Join(problems, "; "))
	}
	for i, p := range params {
		copy(p.Value.Data, loaded[i].Data)
	}
	return nil
}

// view adapts a tensor to safetensors.View.
type view struct {
	dtype safetensors.DType
	shape []uint64
	data  []byte
}

func (v view) DType() safetensors.DType { return v.dtype }
func (v view) Shape() []uint64          { return v.shape }
func (v view) Data() []byte             { return v.data }
func (v view) DataLen() uint64          { return uint64(len(v.data)) }

func toView[T tensor.Float](t *tensor.Dense[T]) view {
	v := view{shape: make([]uint64, len(t.Shape))}
	for i, d := range t.Shape {
		v.shape[i] = uint64(d)
	}
	switch data := any(t.Data).(type) {
	case []float32:
		v.dtype = safetensors.F32
		v.data = make([]byte, 4*len(data))
		for i, x := range data {
			binary.LittleEndian.PutUint32(v.data[4*i:], math.Float32bits(x))
		}
	case []float64:
		v.dtype = safetensors.F64
		v.data = make([]byte, 8*len(data))
		for i, x := range data {
			binary.LittleEndian.PutUint64(v.data[8*i:], math.Float64bits(x))
		}
	}
	return v
}

// Save writes the named tensors (F32 for float32, F64 for float64) and the
// metadata to path atomically. Names must be unique and non-empty.
func Save[T tensor.Float](path string, tensors []*nn.Param[T], metadata map[string]string) error {
	views := make(map[string]view, len(tensors))
	for _, p := range tensors {
		if p.Name == "" {
			return errors.New("weights: cannot save a tensor without a name")
		}
		if _, dup := views[p.Name]; dup {
			return fmt.Errorf("weights: tensor name %q appears twice", p.Name)
		}
		if len(p.Value.Shape) == 0 {
			return fmt.Errorf("weights: tensor %q is a scalar; save it with shape [1]", p.Name)
		}
		views[p.Name] = toView(p.Value)
	}
	if err := atomicfile.Write(path, func(w io.Writer) error {
		return safetensors.SerializeToWriter(views, metadata, w)
	}); err != nil {
		return fmt.Errorf("weights: %w", err)
	}
	return nil
}
