// Package epkfile defines the on-disk layout of an `explaind epk` output
// directory and reads and writes it: .npy arrays that numpy opens, a
// manifest.json saying what each array is (shape, axes, units), and the run
// fingerprint that ties the output to the training run it explains.
//
// The arrays each preset writes (X test samples, C classes, S steps, T
// parameter tensors, N training samples):
//
//	always      test_indices [X], test_labels [X]
//	validation  f0, model, epk, data, reg, resid, quad_residual [X, C];
//	            step_max_completeness [S], step_change [S, X]
//	grokking    step_tensor [S, T, X]; step_data, step_reg, step_resid
//	            [S, X] (all of the true class's log-probability)
//	components  scores/<tensor> [X, tensor shape...] (summed over classes)
//	history     history_steps [K], history_gram [K, G, X, X]: at K snapshot
//	            steps, per layer group, the Gram matrices of the scores
//	            accumulated up to that step (components' quantity)
//	pruning     importance/<tensor> [tensor shape...]
//	kernel      kernel [C, N], kernel_reg [C] (summed over test samples)
//	reference   scores_class/<tensor> [X, C, tensor shape...],
//	            kernel_full [X, C, N]
package epkfile

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/atomicfile"
	"github.com/explaind/explaind/internal/localpath"
	"github.com/explaind/explaind/npy"
	"github.com/explaind/explaind/tensor"
)

// Format is the version of the layout this package writes.
const Format = 1

// The presets of `explaind epk`.
const (
	Validation = "validation"
	Grokking   = "grokking"
	Components = "components"
	// History stores, at every snapshot step, each layer group's Gram
	// matrix of the components preset's scores accumulated up to it.
	History = "history"
	Pruning = "pruning"
	Kernel  = "kernel"
	// Reference writes the reference implementation's outputs for parity
	// runs: per-parameter scores per test sample and class, and the data
	// kernel per test sample, class and training sample.
	Reference = "reference"
)

// Presets lists every preset in the order `explaind epk` runs them.
var Presets = []string{Validation, Grokking, Components, History, Pruning, Kernel, Reference}

// ArrayInfo describes one array of the output.
type ArrayInfo struct {
	// File is the path of the .npy file relative to the output directory.
	File string `json:"file"`
	// Dtype is "float32", "float64" or "int64".
	Dtype string `json:"dtype"`
	// Shape and Axes give the array's dimensions and what each indexes.
	Shape []int    `json:"shape"`
	Axes  []string `json:"axes"`
	// Units says what the values are (for example "log-probability").
	Units string `json:"units"`
	// Preset is the preset that wrote the array ("" for the test set).
	Preset string `json:"preset"`
	// Description says how the array was computed.
	Description string `json:"description"`
	// Labels names the entries of axes that are not plain indices (for
	// example "group": the layer groups, in order).
	Labels map[string][]string `json:"labels,omitempty"`
}

// TestSet says which test samples an output covers.
type TestSet struct {
	// Split is the dataset role the samples come from ("val" or "test",
	// or "train" for training samples explained as test samples).
	Split string `json:"split"`
	// Count is the number of samples (their indices are in test_indices).
	Count int `json:"count"`
}

// Shard is the manifest's record of a shard output: part Index of Count
// of a job whose test samples are split into contiguous blocks (package
// shard). Its arrays are those of the whole job restricted to the block,
// except that arrays summed over test samples hold the block's partial
// sums in float64, whatever the whole job stores, so that a merge of the
// shards rounds once.
type Shard struct {
	Index int `json:"index"`
	Count int `json:"count"`
	// Samples is the block [lo, hi) of the whole job's Of test samples
	// (positions in its test_indices) that the shard covers, and
	// TestIndices are their indices in the split.
	Samples     [2]int `json:"samples"`
	Of          int    `json:"of"`
	TestIndices []int  `json:"test_indices"`
	// WholeJob is the key of the whole job (the Job of its unsharded
	// output); Manifest.Job is the shard's own.
	WholeJob string `json:"whole_job"`
}

// Manifest is DIR/manifest.json.
type Manifest struct {
	Format   int    `json:"format"`
	Software string `json:"software"`
	Created  string `json:"created"`
	// Run is the run directory (as given) and RunFingerprint identifies
	// the run (see RunFingerprint).
	Run            string `json:"run"`
	RunFingerprint string `json:"run_fingerprint"`
	// Presets lists the presets computed; Steps the range [from, to).
	Presets []string `json:"presets"`
	Steps   [2]int   `json:"steps"`
	// Precision is the evaluation's element type; Quadrature the rule
	// (as on the command line) and Tol its tolerance.
	Precision  string  `json:"precision"`
	Quadrature string  `json:"quadrature"`
	Tol        float64 `json:"tol"`
	Test       TestSet `json:"test"`
	// Classes is C; Tensors are the parameter tensors in model order and
	// TensorShapes their shapes.
	Classes      int      `json:"classes"`
	Tensors      []string `json:"tensors"`
	TensorShapes [][]int  `json:"tensor_shapes"`
	// Arrays describes every array, by name.
	Arrays map[string]ArrayInfo `json:"arrays"`
	// Job identifies the job that wrote the output (a hash of the run's
	// fingerprint, the presets, the test samples, the steps, the
	// quadrature and the precision): rerunning a finished job finds its
	// output by it instead of computing it again.
	Job string `json:"job,omitempty"`
	// Shard is set in the output of one shard of a job split over its
	// test samples (nil: the whole job).
	Shard *Shard `json:"shard,omitempty"`
	// Complete is set once every array has been written.
	Complete bool `json:"complete"`
}

// RunFingerprint identifies a training run: a hash of its configuration,
// its initial parameters and every step's parameter hash. An EPK output
// records the fingerprint of the run it explains.
func RunFingerprint(m *history.Manifest) string {
	h := sha256.New()
	h.Write(m.Config)
	for i := 0; i <= len(m.Steps); i++ {
		fmt.Fprintf(h, "\n%s", m.Hash(i))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Output is an opened EPK output directory.
type Output struct {
	Dir      string
	Manifest Manifest
}

// ErrIncomplete is returned by Open for an output whose job has not
// finished.
var ErrIncomplete = errors.New("the EPK job that writes this output has not finished")

// Open reads DIR/manifest.json. It refuses a manifest that stores an
// array outside DIR (an absolute file name, "..", a symbolic link leading
// out) before any array is read.
func Open(dir string) (*Output, error) {
	path := filepath.Join(dir, "manifest.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("%s is not an EPK output (no manifest.json); create one with `explaind epk --run RUN --out %s`", dir, dir)
		}
		return nil, err
	}
	o := &Output{Dir: dir}
	if err := json.Unmarshal(raw, &o.Manifest); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if o.Manifest.Format != Format {
		return nil, fmt.Errorf("%s: EPK output format %d, this explaind reads format %d", path, o.Manifest.Format, Format)
	}
	if !o.Manifest.Complete {
		return nil, fmt.Errorf("%s: %w; rerun the same `explaind epk` command to resume it", path, ErrIncomplete)
	}
	for _, name := range slices.Sorted(maps.Keys(o.Manifest.Arrays)) {
		if err := localpath.Check(dir, o.Manifest.Arrays[name].File); err != nil {
			return nil, fmt.Errorf("%s: array %q: %v", path, name, err)
		}
	}
	return o, nil
}

// CheckRun returns an error unless the output explains the run whose
// manifest is m: the same fingerprint and the run's parameter tensors.
func (o *Output) CheckRun(m *history.Manifest) error {
	if fp := RunFingerprint(m); fp != o.Manifest.RunFingerprint {
		return fmt.Errorf("the EPK output %s was computed for a different run (fingerprint %s, this run's is %s; it names run %s): run `explaind epk` on this run", o.Dir, o.Manifest.RunFingerprint, fp, o.Manifest.Run)
	}
	em := o.Manifest
	if len(em.Tensors) != len(m.Params) || len(em.TensorShapes) != len(em.Tensors) {
		return fmt.Errorf("the EPK output %s lists %d tensors, the run has %d parameters", o.Dir, len(em.Tensors), len(m.Params))
	}
	for i, p := range m.Params {
		if em.Tensors[i] != p.Name || !slices.Equal(em.TensorShapes[i], p.Shape) {
			return fmt.Errorf("the EPK output's tensor %d is %s %v, the run's parameter %s %v", i, em.Tensors[i], em.TensorShapes[i], p.Name, p.Shape)
		}
	}
	return nil
}

// Require returns an error naming the command that computes preset unless
// the output holds it.
func (o *Output) Require(preset string) error {
	if slices.Contains(o.Manifest.Presets, preset) {
		return nil
	}
	return fmt.Errorf("the EPK output %s has no %q preset (it has %s); compute it with `explaind epk --run %s --out DIR --preset %s`",
		o.Dir, preset, strings.Join(o.Manifest.Presets, ", "), o.Manifest.Run, preset)
}

// Array reads the named array as float64.
func (o *Output) Array(name string) (*tensor.Dense[float64], error) {
	info, err := o.info(name)
	if err != nil {
		return nil, err
	}
	a, err := npy.Read(filepath.Join(o.Dir, info.File))
	if err != nil {
		return nil, err
	}
	if err := info.checkShape(a.Shape); err != nil {
		return nil, err
	}
	return a, nil
}

// info returns the manifest's entry of the named array.
func (o *Output) info(name string) (ArrayInfo, error) {
	info, ok := o.Manifest.Arrays[name]
	if !ok {
		return info, fmt.Errorf("the EPK output %s has no array %q", o.Dir, name)
	}
	return info, nil
}

// checkShape checks a file's array shape against the manifest's.
func (info ArrayInfo) checkShape(shape []int) error {
	if !slices.Equal(shape, info.Shape) {
		return fmt.Errorf("%s: shape %v, the manifest says %v", info.File, shape, info.Shape)
	}
	return nil
}

// OpenArray opens the named array for reading by ranges (npy.File), for
// an array too large to read whole; its shape must be the manifest's. The
// caller closes it.
func (o *Output) OpenArray(name string) (*npy.File, error) {
	info, err := o.info(name)
	if err != nil {
		return nil, err
	}
	f, err := npy.Open(filepath.Join(o.Dir, info.File))
	if err != nil {
		return nil, err
	}
	if err := info.checkShape(f.Shape); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Ints reads the named integer array.
func (o *Output) Ints(name string) ([]int, error) {
	info, ok := o.Manifest.Arrays[name]
	if !ok {
		return nil, fmt.Errorf("the EPK output %s has no array %q", o.Dir, name)
	}
	v, _, err := npy.ReadInts(filepath.Join(o.Dir, info.File))
	return v, err
}

// FileName returns the file an array of the given name is stored in.
func FileName(name string) string { return name + ".npy" }

// Writer writes an output directory: arrays first, the manifest (marked
// complete) last, each file atomically.
type Writer struct {
	Dir      string
	Manifest Manifest
}

// NewWriter prepares dir (creating it) for an output described by m.
func NewWriter(dir string, m Manifest) (*Writer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	m.Format = Format
	if m.Arrays == nil {
		m.Arrays = map[string]ArrayInfo{}
	}
	return &Writer{Dir: dir, Manifest: m}, nil
}

// Write stores an array (float32, float64 or int64 values) and records it.
func Write[E float32 | float64 | int64](w *Writer, name string, data []E, info ArrayInfo) error {
	info.File = FileName(name)
	if err := localpath.Check(w.Dir, info.File); err != nil {
		return fmt.Errorf("epkfile: array %q: %v", name, err)
	}
	path := filepath.Join(w.Dir, info.File)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := npy.WriteFile(path, info.Shape, data); err != nil {
		return err
	}
	var zero E
	switch any(zero).(type) {
	case float32:
		info.Dtype = "float32"
	case float64:
		info.Dtype = "float64"
	default:
		info.Dtype = "int64"
	}
	w.Manifest.Arrays[name] = info
	return nil
}

// WriteFloat32 stores float64 values as a float32 array and records it.
func WriteFloat32(w *Writer, name string, data []float64, info ArrayInfo) error {
	info.File = FileName(name)
	if err := localpath.Check(w.Dir, info.File); err != nil {
		return fmt.Errorf("epkfile: array %q: %v", name, err)
	}
	path := filepath.Join(w.Dir, info.File)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := npy.WriteFloat32(path, info.Shape, data); err != nil {
		return err
	}
	info.Dtype = "float32"
	w.Manifest.Arrays[name] = info
	return nil
}

// Place records an array whose .npy file the caller wrote itself, at path
// in w.Dir (an array streamed into its file while a job ran, too large to
// hold in memory), with values of dtype ("float32", "float64" or
// "int64"): it renames the file, which the caller has synced, to the
// array's file name (atomically: the array's file is absent or whole) and
// records it.
func Place(w *Writer, name, path, dtype string, info ArrayInfo) error {
	info.File = FileName(name)
	if err := localpath.Check(w.Dir, info.File); err != nil {
		return fmt.Errorf("epkfile: array %q: %v", name, err)
	}
	dst := filepath.Join(w.Dir, info.File)
	if filepath.Dir(dst) != filepath.Dir(path) {
		return fmt.Errorf("epkfile: array %q: %s is not in %s, its file's directory", name, path, filepath.Dir(dst))
	}
	if err := atomicfile.Rename(path, dst); err != nil {
		return err
	}
	info.Dtype = dtype
	w.Manifest.Arrays[name] = info
	return nil
}

// WriteManifest writes manifest.json (complete or not).
func (w *Writer) WriteManifest(complete bool) error {
	w.Manifest.Complete = complete
	raw, err := json.MarshalIndent(w.Manifest, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(filepath.Join(w.Dir, "manifest.json"), append(raw, '\n'))
}
