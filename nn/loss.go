package nn

import (
	"fmt"

	"github.com/explaind/explaind/tensor"
)

// NLLLoss returns the mean negative log-likelihood of targets under
// log-probabilities logp ([B, C]), like torch.nn.functional.nll_loss, and
// its cotangent with respect to logp (−1/B at each target).
func NLLLoss[T tensor.Float](logp *tensor.Dense[T], target []int) (float64, *tensor.Dense[T], error) {
	dy, err := NLLCotangent(logp, target, 1/float64(len(target)))
	if err != nil {
		return 0, nil, err
	}
	c := logp.Shape[1]
	var loss float64
	for b, y := range target {
		loss -= float64(logp.Data[b*c+y])
	}
	return loss / float64(len(target)), dy, nil
}

// NLLCotangent returns the cotangent −scale at each sample's target class
// and 0 elsewhere: with scale 1 its per-row VJP gives per-sample gradients.
func NLLCotangent[T tensor.Float](logp *tensor.Dense[T], target []int, scale float64) (*tensor.Dense[T], error) {
	if len(logp.Shape) != 2 || logp.Shape[0] != len(target) {
		return nil, fmt.Errorf("nn: log-probabilities of shape %v do not match %d targets", logp.Shape, len(target))
	}
	c := logp.Shape[1]
	dy := tensor.New[T](logp.Shape...)
	for b, y := range target {
		if y < 0 || y >= c {
			return nil, fmt.Errorf("nn: target %d of sample %d is outside [0, %d)", y, b, c)
		}
		dy.Data[b*c+y] = T(-scale)
	}
	return dy, nil
}

// Accuracy returns the fraction of rows of logp whose argmax is the target.
func Accuracy[T tensor.Float](logp *tensor.Dense[T], target []int) float64 {
	if len(target) == 0 {
		return 0
	}
	c := logp.Shape[len(logp.Shape)-1]
	hit := 0
	for b, y := range target {
		if Argmax(logp.Data[b*c:(b+1)*c]) == y {
			hit++
		}
	}
	return float64(hit) / float64(len(target))
}

// Argmax returns the index of the first maximum of v.
func Argmax[T tensor.Float](v []T) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}
