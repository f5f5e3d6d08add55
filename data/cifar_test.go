package data

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// cifarPixel is the test pattern: byte k of the pixels of record r of file f.
func cifarPixel(f, r, k int) byte { return byte(f*31 + r*7 + k*13) }

// writeCIFAR writes a fake cifar-10-batches-bin under root with the given
// labels per file (train batches 1..5, then the test batch).
func writeCIFAR(t *testing.T, root string, labels [6][]byte) string {
	t.Helper()
	dir := filepath.Join(root, CIFARDirName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	names := append(append([]string(nil), CIFARTrainFiles...), CIFARTestFile)
	for f, name := range names {
		var b []byte
		for r, y := range labels[f] {
			b = append(b, y)
			for k := range 3072 {
				b = append(b, cifarPixel(f, r, k))
			}
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var cifarLabels = [6][]byte{
	{3, 5, 0, 9, 3},
	{1},
	{5, 5},
	{2, 3},
	{8},
	{5, 4, 3},
}

func TestLoadCIFAR2(t *testing.T) {
	root := t.TempDir()
	dir := writeCIFAR(t, root, cifarLabels)
	// Kept training records (file, record, label): (0,0,cat) (0,1,dog)
	// (0,4,cat) (2,0,dog) (2,1,dog) (3,1,cat).
	type rec struct{ f, r, y int }
	want := []rec{{0, 0, 0}, {0, 1, 1}, {0, 4, 0}, {2, 0, 1}, {2, 1, 1}, {3, 1, 0}}
	for _, path := range []string{root, dir} {
		d, err := LoadCIFAR2[float64](path, SplitTrain)
		if err != nil {
			t.Fatal(err)
		}
		if d.Name != "cifar2_train" || d.Classes != 2 || !reflect.DeepEqual(d.Inputs.Shape, []int{6, 3, 32, 32}) {
			t.Fatalf("%s: name %q classes %d shape %v", path, d.Name, d.Classes, d.Inputs.Shape)
		}
		for j, w := range want {
			if d.Labels[j] != w.y {
				t.Fatalf("label %d = %d, want %d", j, d.Labels[j], w.y)
			}
			for _, k := range []int{0, 1, 1023, 1024, 2047, 2048, 3071} {
				c := k / 1024
				x := float64(cifarPixel(w.f, w.r, k))
				v := (x/255 - CIFARMean[c]) / CIFARStd[c]
				if got := d.Inputs.Data[j*3072+k]; !(math.Abs(got-v) <= 1e-12) {
					t.Fatalf("sample %d byte %d = %v, want %v", j, k, got, v)
				}
			}
		}
	}
	test, err := LoadCIFAR2[float32](root, SplitTest)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(test.Labels, []int{1, 0}) || test.Name != "cifar2_test" {
		t.Fatalf("test labels %v name %q", test.Labels, test.Name)
	}
	// Pixel 0 of test record 2 (a cat, now sample 1), red channel.
	x := float64(cifarPixel(5, 2, 0))
	if got, want := float64(test.Inputs.Data[3072]), (x/255-0.4914)/0.2023; !(math.Abs(got-want) <= 1e-6) {
		t.Fatalf("float32 value %v, want %v", got, want)
	}
}

func TestCIFARNormalizationEnds(t *testing.T) {
	raw := &RawImages{N: 2, C: 3, H: 1, W: 1, Pixels: []byte{0, 0, 0, 255, 255, 255}, Labels: []byte{3, 5}}
	d, err := TwoClass[float64](raw, CIFARCat, CIFARDog, CIFARMean[:], CIFARStd[:], "ends")
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{-0.4914 / 0.2023, -0.4822 / 0.1994, -0.4465 / 0.2010, 0.5086 / 0.2023, 0.5178 / 0.1994, 0.5535 / 0.2010}
	for i, w := range want {
		if !(math.Abs(d.Inputs.Data[i]-w) <= 1e-12) {
			t.Fatalf("value %d = %v, want %v", i, d.Inputs.Data[i], w)
		}
	}
	if !(math.Abs(d.Inputs.Data[0]+2.4290657) <= 1e-6) || !(math.Abs(d.Inputs.Data[5]-2.7537313) <= 1e-6) {
		t.Fatalf("end values %v", d.Inputs.Data)
	}
}

func TestCIFARErrors(t *testing.T) {
	root := t.TempDir()
	dir := writeCIFAR(t, root, cifarLabels)

	missing := filepath.Join(root, "nowhere")
	_, err := LoadCIFAR2[float32](missing, SplitTrain)
	for _, s := range []string{missing, "data_batch_1.bin", "test_batch.bin", "3073", "binary version", "cannot download", "Fashion-MNIST", "cifar.html"} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("missing directory: error %v lacks %q", err, s)
		}
	}
	empty := t.TempDir()
	if _, err := LoadCIFAR2[float32](empty, SplitTrain); err == nil || !strings.Contains(err.Error(), empty) || !strings.Contains(err.Error(), CIFARDirName) {
		t.Errorf("directory without data: %v", err)
	}
	if _, err := LoadCIFAR2[float32]("", SplitTrain); err == nil {
		t.Error("empty path accepted")
	}

	gone := filepath.Join(dir, "data_batch_3.bin")
	if err := os.Remove(gone); err != nil {
		t.Fatal(err)
	}
	_, err = LoadCIFAR2[float32](root, SplitTrain)
	if err == nil || !strings.Contains(err.Error(), gone) || !strings.Contains(err.Error(), "not found") {
		t.Errorf("missing batch file: %v", err)
	}
	// The test split does not need the training batches.
	if _, err := LoadCIFAR2[float32](root, SplitTest); err != nil {
		t.Errorf("test split with a training batch missing: %v", err)
	}

	bad := filepath.Join(dir, "data_batch_1.bin")
	b, _ := os.ReadFile(bad)
	if err := os.WriteFile(bad, b[:len(b)-1], 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = ReadCIFARFile(bad)
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "not a multiple of the 3073-byte record") {
		t.Errorf("truncated file: %v", err)
	}
	b[2*CIFARRecordSize] = 10
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = ReadCIFARFile(bad)
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "record 2") || !strings.Contains(err.Error(), "label byte 10") {
		t.Errorf("bad label: %v", err)
	}
	if err := os.WriteFile(bad, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err = ReadCIFARFile(bad); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty file: %v", err)
	}
	if _, err := ReadCIFAR10(root, Split(7)); err == nil {
		t.Error("unknown split accepted")
	}
}
