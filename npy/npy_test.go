package npy

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/tensor"
)

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for _, shape := range [][]int{{5}, {2, 3}, {2, 1, 4}, {0, 3}} {
		n := 1
		for _, d := range shape {
			n *= d
		}
		f64 := make([]float64, n)
		f32 := make([]float32, n)
		i64 := make([]int64, n)
		for i := range f64 {
			f64[i] = float64(i)*1.25 - 3
			f32[i] = float32(f64[i])
			i64[i] = int64(i) - 2
		}
		for name, write := range map[string]func(string) error{
			"f64": func(p string) error { return WriteFile(p, shape, f64) },
			"f32": func(p string) error { return WriteFile(p, shape, f32) },
			"i64": func(p string) error { return WriteFile(p, shape, i64) },
		} {
			path := filepath.Join(dir, name+".npy")
			if err := write(path); err != nil {
				t.Fatal(err)
			}
			raw, _ := os.ReadFile(path)
			if hl := 10 + int(raw[8]) + int(raw[9])<<8; hl%64 != 0 {
				t.Errorf("%s %v: data starts at %d, want a multiple of 64", name, shape, hl)
			}
			got, err := Read(path)
			if err != nil {
				t.Fatalf("%s %v: %v", name, shape, err)
			}
			if len(got.Shape) != len(shape) {
				t.Fatalf("%s: shape %v, want %v", name, got.Shape, shape)
			}
			for i := range shape {
				if got.Shape[i] != shape[i] {
					t.Fatalf("%s: shape %v, want %v", name, got.Shape, shape)
				}
			}
			for i, v := range got.Data {
				want := f64[i]
				if name == "i64" {
					want = float64(i64[i])
				}
				if v != want {
					t.Fatalf("%s %v: value %d is %g, want %g", name, shape, i, v, want)
				}
			}
		}
	}
}

func TestWrongShape(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.npy")
	if err := WriteFile(path, []int{2, 2}, []float64{1, 2, 3}); err == nil {
		t.Fatal("a shape that does not match the data was accepted")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("a refused write left %s behind", path)
	}
}

func TestDense(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.npy")
	a := tensor.New[float32](3, 2)
	for i := range a.Data {
		a.Data[i] = float32(i)
	}
	if err := WriteDense(path, a); err != nil {
		t.Fatal(err)
	}
	ints, shape, err := ReadInts(path)
	if err != nil {
		t.Fatal(err)
	}
	if shape[0] != 3 || shape[1] != 2 || ints[5] != 5 {
		t.Fatalf("got %v %v", shape, ints)
	}
}

// TestNumpy loads a written file with numpy when python3 and numpy exist.
func TestNumpy(t *testing.T) {
	if exec.Command("python3", "-c", "import numpy").Run() != nil {
		t.Skip("python3 with numpy is not installed")
	}
	path := filepath.Join(t.TempDir(), "n.npy")
	if err := WriteFile(path, []int{2, 3}, []float32{0, 1, 2, 3, 4, 5.5}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("python3", "-c", "import numpy,sys; a=numpy.load(sys.argv[1]); print(a.shape, a.dtype, a[1,2])", path).CombinedOutput()
	if err != nil {
		t.Fatalf("numpy: %v: %s", err, out)
	}
	if got := string(out); got != "(2, 3) float32 5.5\n" {
		t.Fatalf("numpy read %q", got)
	}
}

// npyFile builds a version-1.0 .npy file from a header dictionary and data.
func npyFile(dict string, data []byte) []byte {
	h := dict + "\n"
	b := append([]byte(magic), byte(len(h)), byte(len(h)>>8))
	return append(append(b, h...), data...)
}

// TestReadDamaged checks that damaged files are errors naming the file and
// the problem, not panics or allocations of what the header claims.
func TestReadDamaged(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.npy")
	if err := WriteFile(good, []int{2, 3}, []float64{1, 2, 3, 4, 5, 6}); err != nil {
		t.Fatal(err)
	}
	valid, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	noNewline := append([]byte(nil), valid...)
	noNewline[len(valid)-48-1] = ' ' // the header's final newline, before 6 float64s
	eight := make([]byte, 16)
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"short", valid[:7], "not a .npy file"},
		{"magic", append([]byte("PK\x03\x04"), valid[4:]...), "not a .npy file"},
		{"version", append(append([]byte(magic[:6]), 3, 0), valid[8:]...), "format version 3.0"},
		{"header-cut", valid[:40], "the header claims"},
		{"data-cut", valid[:len(valid)-3], "truncated"},
		{"no-newline", noNewline, "has no newline"},
		{"reordered", npyFile("{'shape': (2,), 'fortran_order': False, 'descr': '<f8', }", eight), "not a dictionary"},
		{"no-brace", npyFile("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), ", eight), "not a dictionary"},
		{"shape-list", npyFile("{'descr': '<f8', 'fortran_order': False, 'shape': [2], }", eight), "not a tuple"},
		{"shape-2^60", npyFile("{'descr': '<f8', 'fortran_order': False, 'shape': (1152921504606846976,), }", eight), "needs more than the 16 bytes"},
		{"shape-overflow", npyFile("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4), }", eight), "needs more than the 16 bytes"},
		{"shape-negative", npyFile("{'descr': '<f8', 'fortran_order': False, 'shape': (-1, -2), }", eight), "negative dimension"},
		{"dtype-unquoted", npyFile("{'descr': <f8, 'fortran_order': False, 'shape': (2,), }", eight), "not a quoted string"},
		{"dtype-i4", npyFile("{'descr': '<i4', 'fortran_order': False, 'shape': (4,), }", eight), `dtype "<i4" is not supported`},
		{"fortran", npyFile("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 1), }", eight), "Fortran-ordered"},
	} {
		path := filepath.Join(dir, c.name+".npy")
		if err := os.WriteFile(path, c.data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Read(path)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error naming the file and saying %q", c.name, err, c.want)
		}
		if f, err := Open(path); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Open got %v, want an error naming the file and saying %q", c.name, err, c.want)
			if f != nil {
				f.Close()
			}
		}
	}
	// Bytes after the data are ignored, as numpy.load ignores them.
	path := filepath.Join(dir, "trailing.npy")
	if err := os.WriteFile(path, append(valid, 1, 2, 3), 0o644); err != nil {
		t.Fatal(err)
	}
	if a, err := Read(path); err != nil || a.Data[5] != 6 {
		t.Errorf("trailing bytes: got %v, %v", a, err)
	}
}

func TestReadIntsRange(t *testing.T) {
	dir := t.TempDir()
	for name, v := range map[string]float64{"fraction": 1.5, "huge": 1e300, "inf": math.Inf(1), "nan": math.NaN()} {
		path := filepath.Join(dir, name+".npy")
		if err := WriteFile(path, []int{2}, []float64{1, v}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ReadInts(path); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: got %v, want an error naming the file", name, err)
		}
	}
}

// TestFileRanges reads arrays of each dtype by ranges (File.ReadFloat64),
// some longer than its read buffer, and compares them with Read's whole
// array; a range past the end is an error naming the file.
func TestFileRanges(t *testing.T) {
	dir := t.TempDir()
	const n = 3<<17 + 5 // more values than one read of ReadFloat64 takes
	f32, f64, i64 := make([]float32, n), make([]float64, n), make([]int64, n)
	for i := range n {
		f32[i], f64[i], i64[i] = float32(i)*0.37-1e4, math.Sin(float64(i))*1e-300, int64(i*i)-1<<40
	}
	paths := map[string]string{"float32": filepath.Join(dir, "f4.npy"), "float64": filepath.Join(dir, "f8.npy"), "int64": filepath.Join(dir, "i8.npy")}
	if err := WriteFile(paths["float32"], []int{n}, f32); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(paths["float64"], []int{n}, f64); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(paths["int64"], []int{n}, i64); err != nil {
		t.Fatal(err)
	}
	for dtype, path := range paths {
		whole, err := Read(path)
		if err != nil {
			t.Fatal(err)
		}
		f, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if f.Dtype != dtype || f.Len() != n || len(f.Shape) != 1 || f.Shape[0] != n {
			t.Errorf("%s: Open says dtype %s, shape %v", path, f.Dtype, f.Shape)
		}
		for _, r := range [][2]int{{0, n}, {0, 1}, {n - 1, n}, {7, 7}, {12345, 12345 + 1<<17 + 3}, {1 << 17, 1<<18 + 1}} {
			got := make([]float64, r[1]-r[0])
			if err := f.ReadFloat64(r[0], got); err != nil {
				t.Fatal(err)
			}
			for i, v := range got {
				if w := whole.Data[r[0]+i]; v != w {
					t.Fatalf("%s: value %d of the range %v is %v, the whole array's %v", dtype, r[0]+i, r, v, w)
				}
			}
		}
		for _, r := range [][2]int{{n - 1, n + 1}, {-1, 0}} {
			if err := f.ReadFloat64(r[0], make([]float64, r[1]-r[0])); err == nil || !strings.Contains(err.Error(), path) ||
				!strings.Contains(err.Error(), "outside the array") {
				t.Errorf("%s: the range %v: %v, want an error naming the file", dtype, r, err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Header is the header WriteFile writes.
	raw, err := os.ReadFile(paths["float32"])
	if err != nil {
		t.Fatal(err)
	}
	if h := Header[float32]([]int{n}); string(raw[:len(h)]) != string(h) || len(raw) != len(h)+4*n {
		t.Errorf("Header[float32] differs from the header WriteFile writes")
	}
}
