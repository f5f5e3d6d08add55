package data

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/explaind/explaind/tensor"
)

// DefaultFashionDir is where Debian's package dataset-fashion-mnist installs
// the gzipped Fashion-MNIST IDX files.
const DefaultFashionDir = "/usr/share/datasets/fashion-mnist"

// Fashion-MNIST normalization constants: the mean and standard deviation of
// all pixels of the 60000 training images on the [0, 1] scale (x/255), as
// commonly used for the dataset (computed over the full training set they are
// 0.28604 and 0.35302). The loaders apply (x/255 − FashionMean) / FashionStd.
const (
	FashionMean = 0.2860
	FashionStd  = 0.3530
)

// FashionClassNames are the ten Fashion-MNIST classes by label.
var FashionClassNames = [10]string{
	"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
	"Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
}

// DefaultFashionPair is the default two-class task: T-shirt/top (0) as
// class 0 against Shirt (6) as class 1.
var DefaultFashionPair = [2]int{0, 6}

// fashionFiles returns the base names (without .gz) of the images and labels
// files of a split.
func fashionFiles(split Split) (images, labels string) {
	if split == SplitTest {
		return "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
	}
	return "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
}

const fashionHowTo = "Fashion-MNIST is expected as the IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, " +
	"t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each optionally gzipped, .gz); " +
	"install them with `apt-get install dataset-fashion-mnist` (Debian puts them in " + DefaultFashionDir + ") " +
	"or pass the directory that holds them"

// findFashionFile returns dir/base or dir/base.gz, whichever exists (plain
// first), or an error naming both paths and how to install the files.
func findFashionFile(dir, base string) (string, error) {
	plain := filepath.Join(dir, base)
	for _, p := range []string{plain, plain + ".gz"} {
		st, err := os.Stat(p)
		if err == nil && st.Mode().IsRegular() {
			return p, nil
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("data: Fashion-MNIST file %s: %w", p, err)
		}
	}
	return "", fmt.Errorf("data: Fashion-MNIST file not found: neither %s nor %s.gz exists. %s", plain, plain, fashionHowTo)
}

// ReadFashionMNIST reads the images and labels of one Fashion-MNIST split
// from dir ("" means DefaultFashionDir), gzipped or not, as RawImages with
// C = 1. It checks the IDX magic numbers, that both files hold the same
// number of items, and that every label is in 0..9.
func ReadFashionMNIST(dir string, split Split) (*RawImages, error) {
	if err := split.check(); err != nil {
		return nil, err
	}
	if dir == "" {
		dir = DefaultFashionDir
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("data: Fashion-MNIST directory %s does not exist or is not a directory. %s", dir, fashionHowTo)
	}
	imgBase, lblBase := fashionFiles(split)
	imgPath, err := findFashionFile(dir, imgBase)
	if err != nil {
		return nil, err
	}
	lblPath, err := findFashionFile(dir, lblBase)
	if err != nil {
		return nil, err
	}
	n, rows, cols, pix, err := ReadIDXImages(imgPath)
	if err != nil {
		return nil, err
	}
	labels, err := ReadIDXLabels(lblPath)
	if err != nil {
		return nil, err
	}
	if len(labels) != n {
		return nil, fmt.Errorf("data: Fashion-MNIST %s split: images file %s holds %d images but labels file %s holds %d labels", split, imgPath, n, lblPath, len(labels))
	}
	for i, y := range labels {
		if y > 9 {
			return nil, fmt.Errorf("data: %s: label %d of item %d is outside 0..9", lblPath, y, i)
		}
	}
	return &RawImages{N: n, C: 1, H: rows, W: cols, Pixels: pix, Labels: labels}, nil
}

// LoadFashion2 loads a two-class Fashion-MNIST task from dir ("" means
// DefaultFashionDir): images of class pair[0] become label 0 and those of
// pair[1] label 1, in file order, normalized as (x/255 − FashionMean) /
// FashionStd, with inputs of shape [N, 1, 28, 28]. For DefaultFashionPair the
// training split has 6000+6000 images and the test split 1000+1000. The
// dataset is named "fashion2_<a>v<b>_<split>".
func LoadFashion2[T tensor.Float](dir string, split Split, pair [2]int) (Dataset[T], error) {
	for _, c := range pair {
		if c < 0 || c > 9 {
			return Dataset[T]{}, fmt.Errorf("data: Fashion-MNIST class %d is outside 0..9", c)
		}
	}
	if pair[0] == pair[1] {
		return Dataset[T]{}, fmt.Errorf("data: Fashion-MNIST two-class task needs two different classes, got %d twice", pair[0])
	}
	raw, err := ReadFashionMNIST(dir, split)
	if err != nil {
		return Dataset[T]{}, err
	}
	name := fmt.Sprintf("fashion2_%dv%d_%s", pair[0], pair[1], split)
	return TwoClass[T](raw, pair[0], pair[1], []float64{FashionMean}, []float64{FashionStd}, name)
}
