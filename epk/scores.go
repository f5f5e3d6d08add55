package epk

import (
	"fmt"

	"github.com/explaind/explaind/tensor"
)

// Scores accumulates per-parameter scores over steps: for test sample b,
// cotangent k and parameter element j,
//
//	Delta[j][b*K+k] = Σ_s Phi_s[j][b*K+k] ⊙ Δθ_s[j]
//
// and likewise Data and Reg with the step's data and regularization
// parts (Delta − Data − Reg is the residual's share). Memory is three
// times Samples·K·P values of T.
type Scores[T tensor.Float] struct {
	Samples, K int
	Names      []string
	// Delta, Data and Reg have shape [Samples*K, shape of parameter j...].
	Delta, Data, Reg []*tensor.Dense[T]
	// Steps counts the steps added.
	Steps int
}

// Add accumulates one step's features against its update.
func (s *Scores[T]) Add(f *Features[T], u *Update[T]) error {
	if f == nil || u == nil {
		return fmt.Errorf("epk: Scores.Add needs features and an update")
	}
	if s.Names == nil {
		s.Samples, s.K = f.Samples, f.K
		s.Names = append([]string(nil), f.Names...)
		for _, phi := range f.Phi {
			s.Delta = append(s.Delta, tensor.New[T](phi.Shape...))
			s.Data = append(s.Data, tensor.New[T](phi.Shape...))
			s.Reg = append(s.Reg, tensor.New[T](phi.Shape...))
		}
	}
	if f.Samples != s.Samples || f.K != s.K || len(f.Names) != len(s.Names) {
		return fmt.Errorf("epk: features of %d samples × %d cotangents over %d tensors do not match the scores' %d × %d over %d",
			f.Samples, f.K, len(f.Names), s.Samples, s.K, len(s.Names))
	}
	idx := make(map[string]int, len(u.Names))
	for i, n := range u.Names {
		idx[n] = i
	}
	for j, name := range f.Names {
		if name != s.Names[j] {
			return fmt.Errorf("epk: features name tensor %d %s, the scores %s", j, name, s.Names[j])
		}
		k, ok := idx[name]
		if !ok {
			return fmt.Errorf("epk: step %d has no update for %s", u.Step, name)
		}
		phi := f.Phi[j].Data
		size := len(u.Delta[k].Data)
		if len(phi) != s.Samples*s.K*size {
			return fmt.Errorf("epk: features of %s have %d values, want %d", name, len(phi), s.Samples*s.K*size)
		}
		parts := []struct {
			dst  []T
			part []T
		}{{s.Delta[j].Data, u.Delta[k].Data}, {s.Data[j].Data, u.Data[k].Data}, {s.Reg[j].Data, u.Reg[k].Data}}
		for _, pp := range parts {
			for r := 0; r < s.Samples*s.K; r++ {
				row := phi[r*size : (r+1)*size]
				dst := pp.dst[r*size : (r+1)*size]
				for i, v := range row {
					dst[i] += v * pp.part[i]
				}
			}
		}
	}
	s.Steps++
	return nil
}
