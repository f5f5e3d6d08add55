package data

import (
	"fmt"

	"github.com/explaind/explaind/tensor"
)

// Split selects the training or the test part of an image dataset.
type Split int

const (
	// SplitTrain is the training part (CIFAR-10 data_batch_1..5,
	// Fashion-MNIST train-*).
	SplitTrain Split = iota
	// SplitTest is the test part (CIFAR-10 test_batch, Fashion-MNIST t10k-*).
	SplitTest
)

// String returns "train" or "test".
func (s Split) String() string {
	switch s {
	case SplitTrain:
		return "train"
	case SplitTest:
		return "test"
	}
	return fmt.Sprintf("Split(%d)", int(s))
}

func (s Split) check() error {
	if s != SplitTrain && s != SplitTest {
		return fmt.Errorf("data: unknown split %v, want SplitTrain or SplitTest", s)
	}
	return nil
}

// RawImages is an image set as stored on disk: N images of C×H×W unsigned
// bytes in [N, C, H, W] row-major order, and the original class label of each
// image.
type RawImages struct {
	// N, C, H, W are the image count, channels, height and width.
	N, C, H, W int
	// Pixels holds N*C*H*W bytes in [N, C, H, W] order.
	Pixels []byte
	// Labels holds the N original class labels.
	Labels []byte
}

// TwoClass builds a binary classification Dataset from raw: the images whose
// original label is neg become class 0 and those whose label is pos become
// class 1, in file order; all others are dropped. Pixel values are normalized
// per channel as ((x/255) − mean[c]) / std[c], computed in the element type T
// with the same operations and rounding as torchvision's ToTensor followed
// by Normalize (so float32 output matches a float32 PyTorch pipeline). The
// inputs have shape [N', C, H, W].
func TwoClass[T tensor.Float](raw *RawImages, neg, pos int, mean, std []float64, name string) (Dataset[T], error) {
	if raw == nil {
		return Dataset[T]{}, fmt.Errorf("data: TwoClass: no images")
	}
	if neg == pos {
		return Dataset[T]{}, fmt.Errorf("data: TwoClass: the two classes must differ, got %d and %d", neg, pos)
	}
	if len(mean) != raw.C || len(std) != raw.C {
		return Dataset[T]{}, fmt.Errorf("data: TwoClass: %d channels but %d means and %d stds", raw.C, len(mean), len(std))
	}
	img := raw.C * raw.H * raw.W
	if raw.N < 0 || img <= 0 || len(raw.Pixels) != raw.N*img || len(raw.Labels) != raw.N {
		return Dataset[T]{}, fmt.Errorf("data: TwoClass: inconsistent raw images: N=%d C=%d H=%d W=%d with %d pixel bytes and %d labels",
			raw.N, raw.C, raw.H, raw.W, len(raw.Pixels), len(raw.Labels))
	}
	// Lookup table: lut[c][x] = normalized value of byte x in channel c.
	lut := make([][256]T, raw.C)
	for c := range raw.C {
		if !(std[c] > 0) {
			return Dataset[T]{}, fmt.Errorf("data: TwoClass: std[%d] = %v, want > 0", c, std[c])
		}
		m, s := T(mean[c]), T(std[c])
		for x := range 256 {
			v := T(T(x) / T(255))
			lut[c][x] = T(T(v-m) / s)
		}
	}
	keep := 0
	for _, y := range raw.Labels {
		if int(y) == neg || int(y) == pos {
			keep++
		}
	}
	out := tensor.New[T](keep, raw.C, raw.H, raw.W)
	labels := make([]int, 0, keep)
	plane := raw.H * raw.W
	j := 0
	for i, y := range raw.Labels {
		var cls int
		switch int(y) {
		case neg:
			cls = 0
		case pos:
			cls = 1
		default:
			continue
		}
		src := raw.Pixels[i*img : (i+1)*img]
		dst := out.Data[j*img : (j+1)*img]
		for c := range raw.C {
			t := &lut[c]
			for k, x := range src[c*plane : (c+1)*plane] {
				dst[c*plane+k] = t[x]
			}
		}
		labels = append(labels, cls)
		j++
	}
	return Dataset[T]{Name: name, Inputs: out, Labels: labels, Classes: 2}, nil
}
