// Package testrun holds the fixtures that explaind's tests share: recorded
// training runs, built once per test binary and handed to every test that
// asks for the same one, the fabricated CIFAR files the CNN runs read, and
// checks of the EPK outputs made from the runs.
//
// A tiny modulo-addition run trains in a fraction of a second, but the
// tests of one package ask for the same run many times. Dir builds a
// fixture under a key the first time a test asks for it and returns the
// same directory afterwards; Train keys a run by its element type and its
// configuration. A package that uses them calls Main from its TestMain,
// which removes the fixtures when the tests are done:
//
//	func TestMain(m *testing.M) { testrun.Main(m) }
//
// A shared fixture is read-only. A test that writes into a run (tampers
// with it, or runs a job that stamps it) takes a private Copy. Every test
// that was handed a shared fixture checks, when it ends, that the
// fixture's files are unchanged, and fails otherwise.
package testrun

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/explaind/explaind/data"
	"github.com/explaind/explaind/tensor"
	"github.com/explaind/explaind/train"
)

var (
	// root holds the fixtures of this test binary (set by Main).
	root string
	// mu guards fixtures.
	mu       sync.Mutex
	fixtures = map[string]*fixture{}
)

// A fixture is one shared directory, built once.
type fixture struct {
	once   sync.Once
	dir    string
	built  bool // the build returned (it may have failed the test instead)
	digest string
	err    error
	// spoiler names the test that modified the fixture, if one did.
	spoiler string
}

// Main runs the tests of a package with a fresh fixture directory and
// removes it afterwards; call it from TestMain. The test binary exits
// with m.Run's code when TestMain returns.
func Main(m *testing.M) {
	dir, err := os.MkdirTemp("", "explaind-testrun-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "testrun:", err)
		os.Exit(1)
	}
	root = dir
	defer os.RemoveAll(dir)
	m.Run()
}

// Dir returns the shared fixture named key, calling build to make it the
// first time any test of the binary asks for it. build gets the path of
// a directory that does not exist yet, to create as the fixture; the
// directory around it is the fixture's own and build may keep files it
// needs there (a data set the run reads). build reports failure by its
// error, which fails the test at once (and every later test that asks for
// the same key).
//
// The caller must not modify the fixture: when the test ends, Dir fails
// it if any file of the fixture changed, and every later test that asks
// for the fixture fails naming that test. A test that must write into a
// run takes a Copy.
func Dir(t testing.TB, key string, build func(dir string) error) string {
	t.Helper()
	if root == "" {
		t.Fatal("testrun: call testrun.Main from the package's TestMain")
	}
	mu.Lock()
	f := fixtures[key]
	if f == nil {
		f = &fixture{dir: filepath.Join(root, strconv.Itoa(len(fixtures)), "run")}
		fixtures[key] = f
	}
	mu.Unlock()
	f.once.Do(func() {
		if f.err = os.MkdirAll(filepath.Dir(f.dir), 0o755); f.err != nil {
			return
		}
		f.err = build(f.dir)
		f.built = true
		if f.err == nil {
			f.digest, f.err = digest(filepath.Dir(f.dir))
		}
	})
	if !f.built {
		t.Fatalf("testrun: the build of the fixture %s stopped in an earlier test", key)
	}
	if f.err != nil {
		t.Fatalf("testrun: building the fixture %s: %v", key, f.err)
	}
	mu.Lock()
	spoiler := f.spoiler
	mu.Unlock()
	if spoiler != "" {
		t.Fatalf("testrun: the shared fixture %s was modified by %s", key, spoiler)
	}
	t.Cleanup(func() {
		if d, err := digest(filepath.Dir(f.dir)); err != nil || d != f.digest {
			mu.Lock()
			if f.spoiler == "" {
				f.spoiler = t.Name()
			}
			mu.Unlock()
			t.Errorf("testrun: the test modified the shared fixture %s in %s (%v); a test that writes into a run must take a Copy", key, f.dir, err)
		}
	})
	return f.dir
}

// Train returns the directory of a run trained with configuration c in
// element type T (train.Train with no options), trained the first time
// any test of the binary asks for it. Training is deterministic, so the
// shared run is the one each test would train for itself. The caller must
// not modify it (see Dir).
func Train[T tensor.Float](t testing.TB, c train.Config) string {
	t.Helper()
	key := fmt.Sprintf("train.Train[%T] %s", T(0), c.Marshal())
	return Dir(t, key, func(dir string) error {
		_, err := train.Train[T](context.Background(), dir, c, train.Options{})
		return err
	})
}

// Modulo returns the tiny modulo-addition configuration the tests train:
// the paper's settings (train.ModuloDefaults: AdamW, full batch) with
// p = 7 (9 output classes), 20 training and 8 validation samples, a
// transformer of width 8 with 2 heads and an MLP of 12, trained for
// exactly epochs epochs (no stop at 100 % accuracy) with a checkpoint
// every checkpointEvery steps. Tests change what they need (the learning
// rate, the sizes) before training it.
func Modulo(epochs, checkpointEvery int) train.Config {
	c := train.ModuloDefaults()
	c.Modulo = &train.ModuloTask{P: 7, TrainSize: 20, ValSize: 8, DModel: 8, Heads: 2, MLP: 12}
	c.Epochs, c.StopAtPerfect, c.CheckpointEvery = epochs, false, checkpointEvery
	return c
}

// Copy copies the run directory dir into a fresh directory under
// t.TempDir() (of the same base name) and returns the copy, which the
// test may modify.
func Copy(t testing.TB, dir string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(dir))
	if err := os.CopyFS(dst, os.DirFS(dir)); err != nil {
		t.Fatalf("testrun: copying %s: %v", dir, err)
	}
	return dst
}

// digest hashes the names, kinds and contents of everything under dir.
func digest(dir string) (string, error) {
	h := sha256.New()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		fmt.Fprintf(h, "%q %v\n", rel, d.Type())
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%d\n", len(b))
		h.Write(b)
		return nil
	})
	return hex.EncodeToString(h.Sum(nil)), err
}

// WriteCIFAR writes a small data set in CIFAR-10's binary format into dir
// (cifar-10-batches-bin of a --data-dir): every training and test file
// holds n records cycling through cat (3), dog (5) and car (1); cats are
// bright in the top half, dogs in the bottom (horizontal flips mirror
// left and right, so they keep the class). The pixels are drawn from a
// fixed seed: the same n gives the same files.
func WriteCIFAR(dir string, n int) error {
	rng := rand.New(rand.NewPCG(5, 5))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range append(slices.Clone(data.CIFARTrainFiles), data.CIFARTestFile) {
		var buf []byte
		for i := range n {
			label := []byte{3, 5, 1}[i%3]
			rec := make([]byte, data.CIFARRecordSize)
			rec[0] = label
			for j := 1; j < len(rec); j++ {
				row := ((j - 1) % 1024) / 32
				rec[j] = byte(rng.IntN(100))
				if (label == 3) == (row < 16) {
					rec[j] += 60
				}
			}
			buf = append(buf, rec...)
		}
		if err := os.WriteFile(filepath.Join(dir, name), buf, 0o644); err != nil {
			return err
		}
	}
	return nil
}
