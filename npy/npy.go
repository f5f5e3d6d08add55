// Package npy writes and reads NumPy .npy files (format version 1.0,
// little-endian, C order) for explaind's outputs, so that numpy.load and
// torch.from_numpy open them directly. Writing is atomic: a reader sees the
// old file or the complete new one. Reading goes through
// codeberg.org/sbinet/npyio, an independent implementation of the format.
package npy

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"codeberg.org/sbinet/npyio"

	"github.com/explaind/explaind/internal/atomicfile"
	"github.com/explaind/explaind/tensor"
)

// magic starts every .npy file, followed by the format version 1.0.
const magic = "\x93NUMPY\x01\x00"

// header returns the padded header of an array of the given numpy dtype
// descriptor and shape.
func header(descr string, shape []int) []byte {
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = strconv.Itoa(d)
	}
	tuple := strings.Join(dims, ", ")
	if len(shape) == 1 {
		tuple += ","
	}
	dict := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, tuple)
	// Pad with spaces so that the data starts on a multiple of 64 bytes,
	// ending the header with a newline.
	total := len(magic) + 2 + len(dict) + 1
	pad := (64 - total%64) % 64
	var b bytes.Buffer
	b.WriteString(magic)
	binary.Write(&b, binary.LittleEndian, uint16(len(dict)+pad+1))
	b.WriteString(dict)
	b.WriteString(strings.Repeat(" ", pad))
	b.WriteByte('\n')
	return b.Bytes()
}

func checkShape(shape []int, n int) error {
	want := 1
	for _, d := range shape {
		if d < 0 {
			return fmt.Errorf("npy: negative dimension in shape %v", shape)
		}
		want *= d
	}
	if want != n {
		return fmt.Errorf("npy: shape %v holds %d values, got %d", shape, want, n)
	}
	return nil
}

// Encode writes data with the given shape in .npy format to w. The element
// type selects the dtype: float32 '<f4', float64 '<f8', int64 '<i8'.
func Encode[E float32 | float64 | int64](w io.Writer, shape []int, data []E) error {
	if err := checkShape(shape, len(data)); err != nil {
		return err
	}
	var descr string
	var zero E
	switch any(zero).(type) {
	case float32:
		descr = "<f4"
	case float64:
		descr = "<f8"
	case int64:
		descr = "<i8"
	}
	if _, err := w.Write(header(descr, shape)); err != nil {
		return err
	}
	buf := make([]byte, 0, 1<<16)
	for _, v := range data {
		switch x := any(v).(type) {
		case float32:
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(x))
		case float64:
			buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(x))
		case int64:
			buf = binary.LittleEndian.AppendUint64(buf, uint64(x))
		}
		if len(buf) >= 1<<16-8 {
			if _, err := w.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	_, err := w.Write(buf)
	return err
}

// WriteFile writes data with the given shape to path atomically.
func WriteFile[E float32 | float64 | int64](path string, shape []int, data []E) error {
	if err := checkShape(shape, len(data)); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return atomicfile.Write(path, func(w io.Writer) error { return Encode(w, shape, data) })
}

// WriteFloat32 writes float64 data as float32 values ('<f4') to path
// atomically, converting as it streams instead of copying the array.
func WriteFloat32(path string, shape []int, data []float64) error {
	if err := checkShape(shape, len(data)); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return atomicfile.Write(path, func(w io.Writer) error {
		if _, err := w.Write(header("<f4", shape)); err != nil {
			return err
		}
		buf := make([]byte, 0, 1<<16)
		for _, v := range data {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(float32(v)))
			if len(buf) == cap(buf) {
				if _, err := w.Write(buf); err != nil {
					return err
				}
				buf = buf[:0]
			}
		}
		_, err := w.Write(buf)
		return err
	})
}

// WriteDense writes a dense array to path atomically, as float32 or float64
// like the array itself.
func WriteDense[T tensor.Float](path string, a *tensor.Dense[T]) error {
	switch d := any(a.Data).(type) {
	case []float32:
		return WriteFile(path, a.Shape, d)
	case []float64:
		return WriteFile(path, a.Shape, d)
	}
	return fmt.Errorf("%s: unsupported element type", path)
}

// Ints converts ints to the int64 values WriteFile stores.
func Ints(v []int) []int64 {
	out := make([]int64, len(v))
	for i, x := range v {
		out[i] = int64(x)
	}
	return out
}

// Read reads a .npy file of float32, float64 or integer values and returns
// it as float64 with its shape. Fortran-ordered arrays are refused.
func Read(path string) (*tensor.Dense[float64], error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, err := npyio.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: not a .npy file: %w", path, err)
	}
	if r.Header.Descr.Fortran {
		return nil, fmt.Errorf("%s: Fortran-ordered arrays are not supported; save with numpy.ascontiguousarray", path)
	}
	shape := append([]int(nil), r.Header.Descr.Shape...)
	out := &tensor.Dense[float64]{Shape: shape}
	switch d := strings.Trim(r.Header.Descr.Type, `'"`); d {
	case "<f8", "f8", "float64":
		if err := r.Read(&out.Data); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	case "<f4", "f4", "float32":
		var v []float32
		if err := r.Read(&v); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out.Data = make([]float64, len(v))
		for i, x := range v {
			out.Data[i] = float64(x)
		}
	case "<i8", "i8", "int64":
		var v []int64
		if err := r.Read(&v); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out.Data = make([]float64, len(v))
		for i, x := range v {
			out.Data[i] = float64(x)
		}
	default:
		return nil, fmt.Errorf("%s: dtype %q is not supported (want float32, float64 or int64)", path, d)
	}
	if err := checkShape(shape, len(out.Data)); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// ReadInts reads a .npy file of integers (or integral floats) as ints.
func ReadInts(path string) ([]int, []int, error) {
	a, err := Read(path)
	if err != nil {
		return nil, nil, err
	}
	out := make([]int, len(a.Data))
	for i, v := range a.Data {
		if v != math.Trunc(v) {
			return nil, nil, fmt.Errorf("%s: value %g at %d is not an integer", path, v, i)
		}
		out[i] = int(v)
	}
	return out, a.Shape, nil
}
