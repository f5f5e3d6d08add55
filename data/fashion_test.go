package data

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func idxBytes(magic uint32, dims []uint32, data []byte) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.BigEndian, magic)
	for _, d := range dims {
		binary.Write(&b, binary.BigEndian, d)
	}
	b.Write(data)
	return b.Bytes()
}

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// writeTinyFashion writes a 4-image 2×3 training set with labels 0, 6, 3, 6.
func writeTinyFashion(t *testing.T, dir string, zip bool) {
	t.Helper()
	pix := make([]byte, 4*6)
	for i := range pix {
		pix[i] = byte(i * 11)
	}
	files := map[string][]byte{
		"train-images-idx3-ubyte": idxBytes(IDXImagesMagic, []uint32{4, 2, 3}, pix),
		"train-labels-idx1-ubyte": idxBytes(IDXLabelsMagic, []uint32{4}, []byte{0, 6, 3, 6}),
	}
	for name, b := range files {
		if zip {
			name, b = name+".gz", gz(t, b)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTinyFashion(t *testing.T) {
	for _, zip := range []bool{false, true} {
		dir := t.TempDir()
		writeTinyFashion(t, dir, zip)
		d, err := LoadFashion2[float64](dir, SplitTrain, DefaultFashionPair)
		if err != nil {
			t.Fatal(err)
		}
		if d.Name != "fashion2_0v6_train" || !reflect.DeepEqual(d.Inputs.Shape, []int{3, 1, 2, 3}) || !reflect.DeepEqual(d.Labels, []int{0, 1, 1}) {
			t.Fatalf("gz=%v: %q shape %v labels %v", zip, d.Name, d.Inputs.Shape, d.Labels)
		}
		// Sample 2 is image 3: bytes 18*11 .. 23*11.
		for k := range 6 {
			x := float64((18 + k) * 11)
			want := (x/255 - 0.2860) / 0.3530
			if got := d.Inputs.Data[12+k]; !(math.Abs(got-want) <= 1e-12) {
				t.Fatalf("gz=%v: value %d = %v, want %v", zip, k, got, want)
			}
		}
		// Another pair: Coat... here label 3 (Dress) vs 0.
		d2, err := LoadFashion2[float32](dir, SplitTrain, [2]int{3, 0})
		if err != nil || !reflect.DeepEqual(d2.Labels, []int{1, 0}) {
			t.Fatalf("pair (3,0): %v %v", d2.Labels, err)
		}
	}
}

func TestIDXErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := idxBytes(IDXImagesMagic, []uint32{2, 2, 2}, []byte{1, 2, 3, 4, 5, 6, 7, 8})
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"magic", idxBytes(IDXLabelsMagic, []uint32{2, 2, 2}, good[16:]), "bad magic number 0x00000801, want 0x00000803"},
		{"short", good[:len(good)-1], "truncated: header declares dimensions [2 2 2] (8 data bytes) but the file holds only 7"},
		{"header", good[:9], "truncated header"},
		{"nomagic", good[:2], "truncated"},
		{"trailing", append(append([]byte(nil), good...), 0), "unexpected data after"},
		{"gzmagic", gz(t, idxBytes(0x00000802, []uint32{2, 2, 2}, good[16:])), "bad magic number"},
		{"gzshort", gz(t, good[:len(good)-3]), "truncated"},
		{"gzcut", gz(t, good)[:20], "truncated"},
	}
	for _, c := range cases {
		p := write(c.name, c.b)
		_, _, _, _, err := ReadIDXImages(p)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %v, want one naming %s and containing %q", c.name, err, p, c.want)
		}
	}
	n, r, c, pix, err := ReadIDXImages(write("ok.gz", gz(t, good)))
	if err != nil || n != 2 || r != 2 || c != 2 || !bytes.Equal(pix, good[16:]) {
		t.Fatalf("good gzipped file: %d %d %d %v %v", n, r, c, pix, err)
	}
	if _, err := ReadIDXLabels(write("lbl", good)); err == nil || !strings.Contains(err.Error(), "want 0x00000801") {
		t.Errorf("images file read as labels: %v", err)
	}
}

func TestFashionErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none")
	_, err := LoadFashion2[float32](missing, SplitTrain, DefaultFashionPair)
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "apt-get install dataset-fashion-mnist") {
		t.Errorf("missing directory: %v", err)
	}
	dir := t.TempDir()
	writeTinyFashion(t, dir, true)
	_, err = LoadFashion2[float32](dir, SplitTest, DefaultFashionPair)
	want := filepath.Join(dir, "t10k-images-idx3-ubyte")
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "apt-get install dataset-fashion-mnist") {
		t.Errorf("missing test files: %v", err)
	}
	// Labels file with a different count.
	lbl := filepath.Join(dir, "train-labels-idx1-ubyte.gz")
	if err := os.WriteFile(lbl, gz(t, idxBytes(IDXLabelsMagic, []uint32{3}, []byte{0, 6, 3})), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadFashion2[float32](dir, SplitTrain, DefaultFashionPair)
	if err == nil || !strings.Contains(err.Error(), "holds 4 images but labels file") || !strings.Contains(err.Error(), lbl) {
		t.Errorf("count mismatch: %v", err)
	}
	if err := os.WriteFile(lbl, gz(t, idxBytes(IDXLabelsMagic, []uint32{4}, []byte{0, 6, 12, 6})), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadFashion2[float32](dir, SplitTrain, DefaultFashionPair)
	if err == nil || !strings.Contains(err.Error(), "label 12 of item 2") {
		t.Errorf("label out of range: %v", err)
	}
	for _, pair := range [][2]int{{0, 0}, {-1, 6}, {0, 10}} {
		if _, err := LoadFashion2[float32](dir, SplitTrain, pair); err == nil {
			t.Errorf("pair %v accepted", pair)
		}
	}
}

func TestSystemFashionMNIST(t *testing.T) {
	if _, err := os.Stat(DefaultFashionDir); err != nil {
		t.Skipf("%s not present (apt-get install dataset-fashion-mnist): %v", DefaultFashionDir, err)
	}
	start := time.Now()
	raw, err := ReadFashionMNIST("", SplitTrain)
	if err != nil {
		t.Fatal(err)
	}
	readTime := time.Since(start)
	if raw.N != 60000 || raw.H != 28 || raw.W != 28 || raw.C != 1 {
		t.Fatalf("train raw %d×%d×%d×%d", raw.N, raw.C, raw.H, raw.W)
	}
	// The normalization constants are the training-set pixel mean and std.
	var s, s2 float64
	for _, x := range raw.Pixels {
		v := float64(x) / 255
		s += v
		s2 += v * v
	}
	n := float64(len(raw.Pixels))
	mean := s / n
	std := math.Sqrt(s2/n - mean*mean)
	if !(math.Abs(mean-FashionMean) <= 5e-5) || !(math.Abs(std-FashionStd) <= 5e-5) {
		t.Errorf("training pixel mean %.5f std %.5f, constants %.4f %.4f", mean, std, FashionMean, FashionStd)
	}
	t.Logf("training pixel mean %.5f std %.5f", mean, std)

	start = time.Now()
	d, err := LoadFashion2[float32]("", SplitTrain, DefaultFashionPair)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ReadFashionMNIST(train) %v; LoadFashion2(train, float32) %v", readTime, time.Since(start))
	checkFashion2(t, d, 12000)
	test, err := LoadFashion2[float64](DefaultFashionDir, SplitTest, DefaultFashionPair)
	if err != nil {
		t.Fatal(err)
	}
	checkFashion2(t, test, 2000)
	if d.Name != "fashion2_0v6_train" || test.Name != "fashion2_0v6_test" {
		t.Errorf("names %q %q", d.Name, test.Name)
	}
}

func checkFashion2[T float32 | float64](t *testing.T, d Dataset[T], n int) {
	t.Helper()
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(d.Inputs.Shape, []int{n, 1, 28, 28}) {
		t.Fatalf("shape %v", d.Inputs.Shape)
	}
	ones := 0
	for _, y := range d.Labels {
		ones += y
	}
	if ones != n/2 {
		t.Fatalf("%d of %d labels are 1, want %d", ones, n, n/2)
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range d.Inputs.Data {
		lo = min(lo, float64(v))
		hi = max(hi, float64(v))
	}
	wantLo, wantHi := -0.2860/0.3530, (1-0.2860)/0.3530
	if !(math.Abs(lo-wantLo) <= 1e-6) || !(math.Abs(hi-wantHi) <= 1e-6) {
		t.Fatalf("value range [%v, %v], want [%v, %v]", lo, hi, wantLo, wantHi)
	}
}

// TestIDXClaims checks that dimensions the file cannot hold are errors
// raised before allocating for them: a product beyond 64 bits, which used
// to wrap around (2^31·2^31·4 read as 0 bytes), and a plain file shorter
// than its header declares.
func TestIDXClaims(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		b    []byte
		want string
	}{
		{"wrap", idxBytes(IDXImagesMagic, []uint32{1 << 31, 1 << 31, 4}, nil), "more than 2^64 bytes"},
		{"huge", idxBytes(IDXImagesMagic, []uint32{math.MaxUint32, math.MaxUint32, math.MaxUint32}, nil), "more than 2^64 bytes"},
		{"64MiB", idxBytes(IDXLabelsMagic, []uint32{1 << 26}, []byte{1, 2}), "(67108864 data bytes) but the file holds only 2"},
	} {
		p := filepath.Join(dir, c.name)
		if err := os.WriteFile(p, c.b, 0o644); err != nil {
			t.Fatal(err)
		}
		var err error
		if c.b[3] == 3 {
			_, _, _, _, err = ReadIDXImages(p)
		} else {
			_, err = ReadIDXLabels(p)
		}
		if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one naming %s and containing %q", c.name, err, p, c.want)
		}
	}
	// A zero dimension makes any other dimension harmless.
	p := filepath.Join(dir, "empty")
	if err := os.WriteFile(p, idxBytes(IDXImagesMagic, []uint32{0, math.MaxUint32, math.MaxUint32}, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	if n, _, _, pix, err := ReadIDXImages(p); err != nil || n != 0 || len(pix) != 0 {
		t.Errorf("zero images: %d, %d bytes, %v", n, len(pix), err)
	}
}
