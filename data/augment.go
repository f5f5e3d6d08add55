package data

import (
	"fmt"
	"math/rand/v2"

	"github.com/explaind/explaind/tensor"
)

// FlipProbability is the probability of a horizontal flip, as in
// torchvision.transforms.RandomHorizontalFlip's default p = 0.5.
const FlipProbability = 0.5

// FlipDraws draws n independent flip decisions from rng, one per image in
// order: image i is flipped when rng.Float64() < FlipProbability, which is
// torchvision's RandomHorizontalFlip rule (torch.rand(1) < p). The draws can
// be recorded and replayed with ApplyFlips. n <= 0 gives an empty slice.
func FlipDraws(rng *rand.Rand, n int) []bool {
	if n <= 0 {
		return []bool{}
	}
	out := make([]bool, n)
	for i := range out {
		out[i] = rng.Float64() < FlipProbability
	}
	return out
}

// ApplyFlips returns a new [N, C, H, W] array in which image i is mirrored
// along the width axis (x[n, c, h, w] -> x[n, c, h, W-1-w]) when flips[i] is
// true and copied unchanged otherwise. images is not modified. It returns an
// error unless images is 4-dimensional with N == len(flips).
func ApplyFlips[T tensor.Float](images *tensor.Dense[T], flips []bool) (*tensor.Dense[T], error) {
	if images == nil || len(images.Shape) != 4 {
		var shape []int
		if images != nil {
			shape = images.Shape
		}
		return nil, fmt.Errorf("data: ApplyFlips needs images of shape [N, C, H, W], got %v", shape)
	}
	n, c, h, w := images.Shape[0], images.Shape[1], images.Shape[2], images.Shape[3]
	if n*c*h*w != len(images.Data) {
		return nil, fmt.Errorf("data: ApplyFlips: shape %v does not match %d values", images.Shape, len(images.Data))
	}
	if len(flips) != n {
		return nil, fmt.Errorf("data: ApplyFlips: %d flip draws for %d images", len(flips), n)
	}
	out := images.Clone()
	img := c * h * w
	for i, f := range flips {
		if !f {
			continue
		}
		src := images.Data[i*img : (i+1)*img]
		dst := out.Data[i*img : (i+1)*img]
		for r := 0; r < c*h; r++ {
			s, d := src[r*w:(r+1)*w], dst[r*w:(r+1)*w]
			for x := range w {
				d[x] = s[w-1-x]
			}
		}
	}
	return out, nil
}
