package weights_test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
	"github.com/explaind/explaind/weights"
)

func params32() []*nn.Param[float32] {
	a := &nn.Param[float32]{Name: "linear1.weight", Value: tensor.New[float32](2, 3)}
	b := &nn.Param[float32]{Name: "linear1.bias", Value: tensor.New[float32](2)}
	for i := range a.Value.Data {
		a.Value.Data[i] = float32(i) + 0.5
	}
	b.Value.Data[1] = -3
	return []*nn.Param[float32]{a, b}
}

func fresh() []*nn.Param[float32] {
	ps := params32()
	for _, p := range ps {
		p.Value.Zero()
	}
	return ps
}

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.safetensors")
	src := params32()
	if err := weights.Save(path, src, map[string]string{"arch": "test"}); err != nil {
		t.Fatal(err)
	}
	f, err := weights.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Metadata()["arch"] != "test" {
		t.Errorf("metadata lost: %v", f.Metadata())
	}
	dst := fresh()
	if err := weights.LoadParams(f, "", dst); err != nil {
		t.Fatal(err)
	}
	for i := range src {
		if tensor.RelErr(dst[i].Value.Data, src[i].Value.Data) != 0 {
			t.Errorf("%s changed in the round trip", src[i].Name)
		}
	}
	// float64 view of float32 data converts exactly.
	w64, err := weights.Get[float64](f, "linear1.weight")
	if err != nil || w64.Data[5] != 5.5 {
		t.Errorf("Get[float64]: %v %v", w64, err)
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the file", len(entries))
	}
}

func TestLoadErrorsNameTheTensor(t *testing.T) {
	dir := t.TempDir()
	save := func(name string, ps []*nn.Param[float32]) *weights.File {
		p := filepath.Join(dir, name)
		if err := weights.Save(p, ps, nil); err != nil {
			t.Fatal(err)
		}
		f, err := weights.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	full := params32()
	missing := save("missing.safetensors", full[:1])
	extra := save("extra.safetensors", append(params32(), &nn.Param[float32]{Name: "decoder.weight", Value: tensor.New[float32](1)}))
	shaped := params32()
	shaped[0].Value = tensor.New[float32](3, 2)
	wrong := save("shape.safetensors", shaped)
	cases := []struct {
		f    *weights.File
		want string
	}{
		{missing, `missing tensor "linear1.bias"`},
		{extra, `unexpected tensor "decoder.weight"`},
		{wrong, `"linear1.weight" has shape [3 2], the model needs [2 3]`},
	}
	for _, c := range cases {
		dst := fresh()
		err := weights.LoadParams(c.f, "", dst)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.f.Path(), err, c.want)
		}
		for _, p := range dst {
			for _, v := range p.Value.Data {
				if v != 0 {
					t.Fatalf("%s: a failed load changed %s", c.f.Path(), p.Name)
				}
			}
		}
	}
	// The extra tensor is accepted when it is on the ignore list.
	if err := weights.LoadParams(extra, "", fresh(), "decoder.weight"); err != nil {
		t.Errorf("ignored tensor still rejected: %v", err)
	}
}

func TestBadFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.safetensors")
	if err := weights.Save(good, params32(), nil); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(good)
	trunc := filepath.Join(dir, "trunc.safetensors")
	os.WriteFile(trunc, data[:len(data)-3], 0o644)
	if _, err := weights.Open(trunc); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("truncated file: got %v", err)
	}
	short := filepath.Join(dir, "short.safetensors")
	os.WriteFile(short, data[:20], 0o644)
	if _, err := weights.Open(short); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("file cut inside the header: got %v", err)
	}
	if _, err := weights.Open(filepath.Join(dir, "none.safetensors")); err == nil {
		t.Error("missing file: want an error")
	}
	// Integer tensors are refused as floats, with the tensor's name.
	golden, err := weights.Open("../testdata/golden/modulo.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := weights.Get[float32](golden, "input"); err == nil || !strings.Contains(err.Error(), `"input"`) || !strings.Contains(err.Error(), "I64") {
		t.Errorf("wrong dtype: got %v", err)
	}
	ids, shape, err := golden.Ints("input")
	if err != nil || len(ids) != 32 || shape[1] != 4 || ids[1] != 113 || ids[3] != 114 {
		t.Errorf("Ints(input) = %v %v %v", ids, shape, err)
	}
}

// TestHugeDimension checks that a dimension beyond the int range is an
// error: the byte count bounds the shape's product, but not a dimension
// of a tensor with another dimension 0, and tensor.New panics on the
// negative int such a dimension becomes.
func TestHugeDimension(t *testing.T) {
	header := `{"z":{"dtype":"F32","shape":[0,9223372036854775808],"data_offsets":[0,0]}}`
	buf := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	buf = append(buf, header...)
	_, err := weights.Parse("huge.safetensors", buf)
	if err == nil || !strings.Contains(err.Error(), "huge.safetensors") || !strings.Contains(err.Error(), `"z"`) {
		t.Fatalf("got %v, want an error naming the file and the tensor", err)
	}
}
