package data

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/explaind/explaind/tensor"
)

// CIFAR-10 binary-format constants.
const (
	// CIFARDirName is the directory the CIFAR-10 binary archive extracts to.
	CIFARDirName = "cifar-10-batches-bin"
	// CIFARRecordSize is the size of one record: 1 label byte and 3072 pixel
	// bytes (1024 red, 1024 green, 1024 blue, each 32×32 row-major).
	CIFARRecordSize = 1 + 3*32*32
	// CIFARCat and CIFARDog are the CIFAR-10 labels kept by the CIFAR-2 task
	// (as classes 0 and 1).
	CIFARCat = 3
	CIFARDog = 5
)

// CIFARMean and CIFARStd are the per-channel (R, G, B) normalization
// constants of the reference, applied as ((x/255) − mean) / std. The means
// are the CIFAR-10 training-set channel means; the stds are the widely copied
// values of the reference code (they are not the pixel standard deviations,
// which are about 0.247, 0.243, 0.261), kept for fidelity.
var (
	CIFARMean = [3]float64{0.4914, 0.4822, 0.4465}
	CIFARStd  = [3]float64{0.2023, 0.1994, 0.2010}
)

// CIFARTrainFiles and CIFARTestFile are the batch files of the two splits.
var (
	CIFARTrainFiles = []string{"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"}
	CIFARTestFile   = "test_batch.bin"
)

const cifarHowTo = "expected the CIFAR-10 binary version: a directory " + CIFARDirName +
	" holding data_batch_1.bin … data_batch_5.bin and test_batch.bin, each a sequence of 3073-byte records " +
	"(1 label byte 0..9, then 3072 pixel bytes: 1024 red, 1024 green, 1024 blue, each 32×32 row-major); " +
	"pass that directory or its parent. Get it by downloading the \"CIFAR-10 binary version (suitable for C programs)\" " +
	"(cifar-10-binary.tar.gz) from https://www.cs.toronto.edu/~kriz/cifar.html on a machine with network access " +
	"and extracting it (tar xzf cifar-10-binary.tar.gz); this machine cannot download it. " +
	"Fashion-MNIST is the image dataset that works out of the box here (apt-get install dataset-fashion-mnist)"

// ResolveCIFARDir returns the directory holding the CIFAR-10 .bin files:
// dir itself when it contains data_batch_1.bin or test_batch.bin, else
// dir/cifar-10-batches-bin when that is a directory. Otherwise the error
// names the path, the expected files and format, and how to obtain them.
func ResolveCIFARDir(dir string) (string, error) {
	if dir == "" {
		return "", fmt.Errorf("data: no CIFAR-10 directory given; %s", cifarHowTo)
	}
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		return "", fmt.Errorf("data: CIFAR-10 directory %s does not exist or is not a directory; %s", dir, cifarHowTo)
	}
	for _, f := range []string{CIFARTrainFiles[0], CIFARTestFile} {
		if isFile(filepath.Join(dir, f)) {
			return dir, nil
		}
	}
	sub := filepath.Join(dir, CIFARDirName)
	if st, err := os.Stat(sub); err == nil && st.IsDir() {
		return sub, nil
	}
	return "", fmt.Errorf("data: %s contains neither the CIFAR-10 .bin files nor a %s directory; %s", dir, CIFARDirName, cifarHowTo)
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// ReadCIFARFile reads one CIFAR-10 binary batch file and returns its pixel
// bytes (records × 3072, [N, 3, 32, 32] order) and labels. It returns an
// error naming the file when it is missing, empty, not a whole number of
// 3073-byte records, or has a label byte above 9.
func ReadCIFARFile(path string) (pixels, labels []byte, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("data: CIFAR-10 file %s not found; %s", path, cifarHowTo)
		}
		return nil, nil, fmt.Errorf("data: reading CIFAR-10 file: %w", err)
	}
	if len(b) == 0 {
		return nil, nil, fmt.Errorf("data: CIFAR-10 file %s is empty; want a sequence of %d-byte records", path, CIFARRecordSize)
	}
	if len(b)%CIFARRecordSize != 0 {
		return nil, nil, fmt.Errorf("data: CIFAR-10 file %s is malformed: its size %d bytes is not a multiple of the %d-byte record (1 label byte + 3072 pixel bytes); truncated download or not the binary version?",
			path, len(b), CIFARRecordSize)
	}
	n := len(b) / CIFARRecordSize
	pixels = make([]byte, n*(CIFARRecordSize-1))
	labels = make([]byte, n)
	for i := range n {
		rec := b[i*CIFARRecordSize : (i+1)*CIFARRecordSize]
		if rec[0] > 9 {
			return nil, nil, fmt.Errorf("data: CIFAR-10 file %s is malformed: record %d (byte offset %d) has label byte %d, want 0..9", path, i, i*CIFARRecordSize, rec[0])
		}
		labels[i] = rec[0]
		copy(pixels[i*(CIFARRecordSize-1):], rec[1:])
	}
	return pixels, labels, nil
}

// ReadCIFAR10 reads one CIFAR-10 split (the five data batches in order for
// SplitTrain, test_batch.bin for SplitTest) from dir, which may be the
// directory holding the .bin files or its parent (see ResolveCIFARDir).
func ReadCIFAR10(dir string, split Split) (*RawImages, error) {
	if err := split.check(); err != nil {
		return nil, err
	}
	root, err := ResolveCIFARDir(dir)
	if err != nil {
		return nil, err
	}
	files := CIFARTrainFiles
	if split == SplitTest {
		files = []string{CIFARTestFile}
	}
	raw := &RawImages{C: 3, H: 32, W: 32}
	for _, f := range files {
		pix, lbl, err := ReadCIFARFile(filepath.Join(root, f))
		if err != nil {
			return nil, err
		}
		raw.Pixels = append(raw.Pixels, pix...)
		raw.Labels = append(raw.Labels, lbl...)
		raw.N += len(lbl)
	}
	return raw, nil
}

// LoadCIFAR2 loads the CIFAR-2 task of the reference from dir (the
// cifar-10-batches-bin directory or its parent): cats (CIFAR-10 label 3)
// become class 0 and dogs (label 5) class 1, in file order, normalized per
// channel with CIFARMean and CIFARStd, as [N, 3, 32, 32] inputs (10000
// training and 2000 test images for the full dataset). The dataset is named
// "cifar2_<split>".
func LoadCIFAR2[T tensor.Float](dir string, split Split) (Dataset[T], error) {
	raw, err := ReadCIFAR10(dir, split)
	if err != nil {
		return Dataset[T]{}, err
	}
	return TwoClass[T](raw, CIFARCat, CIFARDog, CIFARMean[:], CIFARStd[:], "cifar2_"+split.String())
}
