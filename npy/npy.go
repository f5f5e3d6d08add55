// Package npy writes and reads NumPy .npy files (format version 1.0,
// little-endian, C order) for explaind's outputs, so that numpy.load and
// torch.from_numpy open them directly. Writing is atomic: a reader sees the
// old file or the complete new one. Reading goes through
// codeberg.org/sbinet/npyio, an independent implementation of the format.
package npy

import (
	"bufio"
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
	if _, err := w.Write(Header[E](shape)); err != nil {
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

// itemSize is the size in bytes of a value of each dtype Read accepts.
var itemSize = map[string]int{
	"<f8": 8, "f8": 8, "float64": 8,
	"<f4": 4, "f4": 4, "float32": 4,
	"<i8": 8, "i8": 8, "int64": 8,
}

// checkHeader reads the preamble and header of a .npy file of size bytes
// from r and checks what npyio's parser takes for granted, so that a
// damaged file is an error rather than a panic or a huge allocation there:
// that the header fits in the file and has its final newline, that it holds the
// keys 'descr', 'fortran_order' and 'shape' in that order (as numpy writes
// them), and that the shape is a parenthesized tuple. It returns the number
// of bytes after the header. npyio parses the header again; checkData
// checks the shape it finds against those bytes.
func checkHeader(r io.Reader, size int64) (data int64, err error) {
	var pre [12]byte
	if _, err := io.ReadFull(r, pre[:10]); err != nil {
		return 0, fmt.Errorf("not a .npy file: only %d bytes, shorter than the 10-byte preamble", size)
	}
	if string(pre[:6]) != magic[:6] {
		return 0, fmt.Errorf("not a .npy file: it does not start with %q", magic[:6])
	}
	var n, hlen int64
	switch pre[6] {
	case 1:
		n, hlen = 10, int64(binary.LittleEndian.Uint16(pre[8:]))
	case 2:
		if _, err := io.ReadFull(r, pre[10:12]); err != nil {
			return 0, fmt.Errorf("truncated: %d bytes, shorter than the 12-byte preamble of version 2", size)
		}
		n, hlen = 12, int64(binary.LittleEndian.Uint32(pre[8:]))
	default:
		return 0, fmt.Errorf("format version %d.%d is not supported (want 1.0 or 2.0)", pre[6], pre[7])
	}
	if hlen > size-n {
		return 0, fmt.Errorf("truncated: the header claims %d bytes but the file has %d after the preamble", hlen, size-n)
	}
	h := make([]byte, hlen)
	if _, err := io.ReadFull(r, h); err != nil {
		return 0, fmt.Errorf("reading the header: %w", err)
	}
	nl := bytes.LastIndexByte(h, '\n')
	if nl < 0 {
		return 0, fmt.Errorf("the header %s has no newline, which ends every .npy header", excerpt(string(h)))
	}
	dict := string(h[:nl])
	// npyio takes each value to end two bytes (", ") before the next key,
	// and the shape two bytes before the first '}'.
	d := strings.Index(dict, "'descr': ")
	o := strings.Index(dict, "'fortran_order': ")
	s := strings.Index(dict, "'shape': ")
	e := strings.Index(dict, "}")
	if d < 0 || o < 0 || s < 0 || e < 0 ||
		d+len("'descr': ") > o-2 || o+len("'fortran_order': ") > s-2 || s+len("'shape': ") > e-2 {
		return 0, fmt.Errorf("the header %s is not a dictionary {'descr': ..., 'fortran_order': ..., 'shape': (...), }", excerpt(dict))
	}
	if t := dict[s+len("'shape': ") : e-2]; len(t) < 2 || t[0] != '(' || t[len(t)-1] != ')' {
		return 0, fmt.Errorf("the shape %s in the header is not a tuple", excerpt(t))
	}
	return size - n - hlen, nil
}

// checkData checks that data bytes hold the values of the given size that
// shape declares, without overflowing on a shape that claims 2^60 of them.
func checkData(shape []int, size int, data int64) error {
	room := data / int64(size) // values the data bytes can hold
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return fmt.Errorf("negative dimension in shape %v", shape)
		}
		if d > 0 && n > room/int64(d) {
			n = room + 1
			break
		}
		n *= int64(d)
	}
	if n > room {
		return fmt.Errorf("truncated: the shape %v of %d-byte values needs more than the %d bytes that follow the header", shape, size, data)
	}
	return nil
}

// excerpt quotes a header for an error message, shortened if it is long.
func excerpt(h string) string {
	h = strings.TrimRight(h, " ")
	if len(h) > 200 {
		return fmt.Sprintf("%q...", h[:200])
	}
	return fmt.Sprintf("%q", h)
}

// Read reads a .npy file of float32, float64 or integer values and returns
// it as float64 with its shape. Fortran-ordered arrays are refused, and so
// is a file whose header is malformed or declares more data than the file
// holds (bytes after the data are ignored, as numpy.load ignores them).
// Every error names the file.
func Read(path string) (*tensor.Dense[float64], error) {
	nf, r, err := openFile(path)
	if err != nil {
		return nil, err
	}
	defer nf.Close()
	shape := nf.Shape
	out := &tensor.Dense[float64]{Shape: shape}
	switch nf.Dtype {
	case "float64":
		if err := r.Read(&out.Data); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	case "float32":
		var v []float32
		if err := r.Read(&v); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out.Data = make([]float64, len(v))
		for i, x := range v {
			out.Data[i] = float64(x)
		}
	case "int64":
		var v []int64
		if err := r.Read(&v); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out.Data = make([]float64, len(v))
		for i, x := range v {
			out.Data[i] = float64(x)
		}
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
		if v < math.MinInt64 || v >= math.MaxInt64 {
			return nil, nil, fmt.Errorf("%s: value %g at %d does not fit in an int", path, v, i)
		}
		out[i] = int(v)
	}
	return out, a.Shape, nil
}

// Header returns the preamble and header of a .npy file holding an array
// of E (float32 '<f4', float64 '<f8', int64 '<i8') with the given shape:
// the values, little-endian in C order, follow it. It is for writers that
// fill an array's data in place (io.WriterAt) instead of streaming it.
func Header[E float32 | float64 | int64](shape []int) []byte {
	var zero E
	switch any(zero).(type) {
	case float32:
		return header("<f4", shape)
	case float64:
		return header("<f8", shape)
	}
	return header("<i8", shape)
}

// File is a .npy file opened for reading its values by ranges, for
// arrays too large to read whole: its header is checked once, by Open, as
// Read checks it.
type File struct {
	// Path is the file's path, Shape the array's shape and Dtype its
	// values' type ("float32", "float64" or "int64").
	Path  string
	Shape []int
	Dtype string
	f     *os.File
	// data is the offset of the values, size a value's bytes.
	data int64
	size int
}

// dtypes names the dtypes of itemSize as File.Dtype does.
var dtypes = map[string]string{
	"<f8": "float64", "f8": "float64", "float64": "float64",
	"<f4": "float32", "f4": "float32", "float32": "float32",
	"<i8": "int64", "i8": "int64", "int64": "int64",
}

// Open opens a .npy file of float32, float64 or int64 values for
// ReadFloat64, refusing what Read refuses (a malformed header, a
// Fortran-ordered array, fewer data bytes than the shape declares).
// Every error names the file. The caller closes it.
func Open(path string) (*File, error) {
	f, _, err := openFile(path)
	return f, err
}

// openFile opens path as Open does and returns the npyio reader that
// parsed its header, positioned at its values.
func openFile(path string) (_ *File, _ *npyio.Reader, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	data, err := checkHeader(f, st.Size())
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, nil, err
	}
	r, err := npyio.NewReader(bufio.NewReader(f))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: not a .npy file: %w", path, err)
	}
	if r.Header.Descr.Fortran {
		return nil, nil, fmt.Errorf("%s: Fortran-ordered arrays are not supported; save with numpy.ascontiguousarray", path)
	}
	// npyio parses only quoted dtypes, as numpy writes them ('<f8').
	typ := r.Header.Descr.Type
	d := strings.Trim(typ, `'"`)
	if typ != "'"+d+"'" {
		return nil, nil, fmt.Errorf("%s: dtype %s is not a quoted string like '<f8'", path, typ)
	}
	size, ok := itemSize[d]
	if !ok {
		return nil, nil, fmt.Errorf("%s: dtype %q is not supported (want float32, float64 or int64)", path, d)
	}
	shape := append([]int(nil), r.Header.Descr.Shape...)
	// npyio allocates the values the shape declares before reading them.
	if err := checkData(shape, size, data); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return &File{Path: path, Shape: shape, Dtype: dtypes[d], f: f, data: st.Size() - data, size: size}, r, nil
}

// Len returns the number of values of the array.
func (f *File) Len() int {
	n := 1
	for _, d := range f.Shape {
		n *= d
	}
	return n
}

// ReadFloat64 reads the values [off, off+len(dst)) of the array (in C
// order) into dst, as float64. A range beyond the array is an error.
func (f *File) ReadFloat64(off int, dst []float64) error {
	if off < 0 || len(dst) > f.Len()-off {
		return fmt.Errorf("%s: values %d … %d are outside the array of %d values (shape %v)", f.Path, off, off+len(dst)-1, f.Len(), f.Shape)
	}
	buf := make([]byte, min(len(dst), 1<<17)*f.size)
	for done := 0; done < len(dst); {
		n := min(len(dst)-done, len(buf)/f.size)
		b := buf[:n*f.size]
		if _, err := f.f.ReadAt(b, f.data+int64(off+done)*int64(f.size)); err != nil {
			return fmt.Errorf("%s: %w", f.Path, err)
		}
		out := dst[done : done+n]
		switch f.Dtype {
		case "float32":
			for i := range out {
				out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
			}
		case "float64":
			for i := range out {
				out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
			}
		default:
			for i := range out {
				out[i] = float64(int64(binary.LittleEndian.Uint64(b[8*i:])))
			}
		}
		done += n
	}
	return nil
}

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }
