package data

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/explaind/explaind/internal/atomicfile"
	"github.com/explaind/explaind/tensor"
)

// Defaults of the modulo-addition task of the ExPLAIND reference.
const (
	// DefaultModuloP is the modulus p.
	DefaultModuloP = 113
	// DefaultModuloTrain is the size of the training split.
	DefaultModuloTrain = 4000
	// DefaultModuloVal is the size of the validation split.
	DefaultModuloVal = 2000
)

// moduloStream is the second PCG word of the modulo shuffle: the shuffle is
// driven by rand.New(rand.NewPCG(Seed, moduloStream)).
const moduloStream = 0x6d6f64756c6f2b2b // "modulo++"

// ModuloConfig configures MakeModulo. DefaultModuloConfig returns the
// reference values.
type ModuloConfig struct {
	// P is the modulus; it must be at least 3.
	P int
	// Train is the number of training pairs (>= 0).
	Train int
	// Val is the number of validation pairs (>= 0).
	Val int
	// Seed seeds the shuffle of all pairs.
	Seed uint64
}

// DefaultModuloConfig returns the reference configuration with the given
// seed: p = 113, 4000 training and 2000 validation pairs.
func DefaultModuloConfig(seed uint64) ModuloConfig {
	return ModuloConfig{P: DefaultModuloP, Train: DefaultModuloTrain, Val: DefaultModuloVal, Seed: seed}
}

// ModuloPair is one example of the modulo-addition task: the unordered pair
// a <= b with label (a+b) mod p.
type ModuloPair struct {
	A, B, Label int
}

// Tokens returns the token sequence [a, p, b, p+1] of the pair; p stands for
// "+" and p+1 for "=", so the vocabulary has p+2 tokens.
func (q ModuloPair) Tokens(p int) [4]int { return [4]int{q.A, p, q.B, p + 1} }

// ModuloSplit is an ordered list of modulo-addition examples for modulus P.
// Sample i of the split is Pairs[i].
type ModuloSplit struct {
	// Name identifies the split, e.g. "modulo_p113_train".
	Name string
	// P is the modulus.
	P int
	// Pairs are the examples in split order.
	Pairs []ModuloPair
}

// Len returns the number of examples.
func (s *ModuloSplit) Len() int { return len(s.Pairs) }

// Vocab returns the vocabulary size p+2.
func (s *ModuloSplit) Vocab() int { return s.P + 2 }

// Tokens returns the token ids [a, p, b, p+1] of every example.
func (s *ModuloSplit) Tokens() [][4]int {
	out := make([][4]int, len(s.Pairs))
	for i, q := range s.Pairs {
		out[i] = q.Tokens(s.P)
	}
	return out
}

// Labels returns the label (a+b) mod p of every example.
func (s *ModuloSplit) Labels() []int {
	out := make([]int, len(s.Pairs))
	for i, q := range s.Pairs {
		out[i] = q.Label
	}
	return out
}

// ModuloInputs returns the token ids of s as a float-coded [N, 4] array (the
// embedding layer reads each value as an integer index). It is a function
// rather than a method because Go methods cannot take type parameters.
func ModuloInputs[T tensor.Float](s *ModuloSplit) *tensor.Dense[T] {
	out := tensor.New[T](len(s.Pairs), 4)
	for i, q := range s.Pairs {
		t := q.Tokens(s.P)
		for j, v := range t {
			out.Data[4*i+j] = T(v)
		}
	}
	return out
}

// ModuloDataset returns s as a Dataset with [N, 4] float-coded token inputs,
// labels (a+b) mod p, P classes and the split's name.
func ModuloDataset[T tensor.Float](s *ModuloSplit) Dataset[T] {
	return Dataset[T]{Name: s.Name, Inputs: ModuloInputs[T](s), Labels: s.Labels(), Classes: s.P}
}

// NumModuloPairs returns the number of unordered pairs 0 <= a <= b < p,
// p(p+1)/2 (6441 for p = 113); 0 for p <= 0.
func NumModuloPairs(p int) int {
	if p <= 0 {
		return 0
	}
	return p * (p + 1) / 2
}

// ModuloPairs returns every unordered pair 0 <= a <= b < p with its label,
// ordered by a then b. It returns an error for p < 3.
func ModuloPairs(p int) ([]ModuloPair, error) {
	if p < 3 {
		return nil, fmt.Errorf("data: modulo addition needs p >= 3, got %d", p)
	}
	out := make([]ModuloPair, 0, NumModuloPairs(p))
	for a := range p {
		for b := a; b < p; b++ {
			out = append(out, ModuloPair{A: a, B: b, Label: moduloLabel(a, b, p)})
		}
	}
	return out, nil
}

// MakeModulo builds the modulo-addition splits: all unordered pairs of
// ModuloPairs(cfg.P), shuffled with rand.New(rand.NewPCG(cfg.Seed, c)) for
// a fixed constant c (rand.Rand.Shuffle), then the first cfg.Val pairs form
// the validation split and the next cfg.Train pairs the training split. The
// two splits are disjoint; a zero size gives an empty split. Use
// DefaultModuloConfig for the reference sizes.
//
// It returns an error for P < 3, a negative size, or Train+Val larger than
// the number of pairs for that P.
func MakeModulo(cfg ModuloConfig) (train, val *ModuloSplit, err error) {
	if cfg.P < 3 {
		return nil, nil, fmt.Errorf("data: modulo addition needs p >= 3, got %d", cfg.P)
	}
	if cfg.Train < 0 || cfg.Val < 0 {
		return nil, nil, fmt.Errorf("data: modulo split sizes must be >= 0, got train %d, val %d", cfg.Train, cfg.Val)
	}
	total := NumModuloPairs(cfg.P)
	if cfg.Train > total || cfg.Val > total || cfg.Train+cfg.Val > total {
		return nil, nil, fmt.Errorf("data: modulo train %d + val %d = %d exceeds the %d unordered pairs 0 <= a <= b < %d that exist for p = %d",
			cfg.Train, cfg.Val, cfg.Train+cfg.Val, total, cfg.P, cfg.P)
	}
	pairs, err := ModuloPairs(cfg.P)
	if err != nil {
		return nil, nil, err
	}
	rng := newPCGRand(cfg.Seed, moduloStream)
	rng.Shuffle(len(pairs), func(i, j int) { pairs[i], pairs[j] = pairs[j], pairs[i] })
	val = &ModuloSplit{Name: fmt.Sprintf("modulo_p%d_val", cfg.P), P: cfg.P, Pairs: append([]ModuloPair(nil), pairs[:cfg.Val]...)}
	train = &ModuloSplit{Name: fmt.Sprintf("modulo_p%d_train", cfg.P), P: cfg.P, Pairs: append([]ModuloPair(nil), pairs[cfg.Val:cfg.Val+cfg.Train]...)}
	return train, val, nil
}

// moduloLabel returns (a+b) mod p for 0 <= a, b < p without computing
// a+b, which overflows an int for p near the int range.
func moduloLabel(a, b, p int) int {
	if y := a - (p - b); y >= 0 {
		return y
	}
	return a + b
}

// moduloCSVHeader is the header row of the modulo CSV format.
var moduloCSVHeader = []string{"index", "a", "b", "label"}

// WriteCSV writes the split to path atomically: the CSV is written to a
// temporary file in the same directory, synced, and renamed over path, so a
// reader never sees a partial file. The columns are index,a,b,label with a
// header row; index is the sample's position in the split (0-based).
func (s *ModuloSplit) WriteCSV(path string) error {
	return atomicfile.Write(path, func(w io.Writer) error {
		cw := csv.NewWriter(w)
		if err := cw.Write(moduloCSVHeader); err != nil {
			return err
		}
		for i, q := range s.Pairs {
			rec := []string{strconv.Itoa(i), strconv.Itoa(q.A), strconv.Itoa(q.B), strconv.Itoa(q.Label)}
			if err := cw.Write(rec); err != nil {
				return err
			}
		}
		cw.Flush()
		return cw.Error()
	})
}

// ReadModuloCSV reads a split written by WriteCSV for modulus p and names it
// name. Every row is checked: index equal to the row position, 0 <= a <= b
// < p, and label == (a+b) mod p; errors name the file and the line.
func ReadModuloCSV(path string, p int, name string) (*ModuloSplit, error) {
	if p < 3 {
		return nil, fmt.Errorf("data: reading modulo split %s: modulo addition needs p >= 3, got %d", path, p)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("data: reading modulo split: %w", err)
	}
	defer f.Close()
	cr := csv.NewReader(bufio.NewReader(f))
	cr.FieldsPerRecord = len(moduloCSVHeader)
	cr.ReuseRecord = true
	head, err := cr.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("data: %s: empty file, want a header %v", path, moduloCSVHeader)
		}
		return nil, fmt.Errorf("data: %s: %w", path, err)
	}
	for i, h := range moduloCSVHeader {
		if head[i] != h {
			return nil, fmt.Errorf("data: %s: header %v, want %v", path, head, moduloCSVHeader)
		}
	}
	s := &ModuloSplit{Name: name, P: p}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("data: %s: %w", path, err)
		}
		line, _ := cr.FieldPos(0)
		var v [4]int
		for j, field := range rec {
			v[j], err = strconv.Atoi(field)
			if err != nil {
				return nil, fmt.Errorf("data: %s line %d: column %s: %q is not an integer", path, line, moduloCSVHeader[j], field)
			}
		}
		idx, a, b, y := v[0], v[1], v[2], v[3]
		if idx != len(s.Pairs) {
			return nil, fmt.Errorf("data: %s line %d: index %d, want %d (rows must be in split order)", path, line, idx, len(s.Pairs))
		}
		if a < 0 || b < a || b >= p {
			return nil, fmt.Errorf("data: %s line %d: pair (a=%d, b=%d) is not 0 <= a <= b < %d", path, line, a, b, p)
		}
		if want := moduloLabel(a, b, p); y != want {
			return nil, fmt.Errorf("data: %s line %d: label %d, want (%d+%d) mod %d = %d", path, line, y, a, b, p, want)
		}
		s.Pairs = append(s.Pairs, ModuloPair{A: a, B: b, Label: y})
	}
	return s, nil
}
