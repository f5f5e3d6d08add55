package nn

import (
	"fmt"
	"testing"
)

// BenchmarkIm2col unfolds 64 images for a 3×3 convolution with padding 1
// at the plane sizes of a width/8 ResNet-9 on 28×28 Fashion-2 images (16
// channels at 28×28 and 14×14, 64 at 7×7 and 3×3) on one goroutine,
// the data movement that took 40 % of an EPK pruning job on that model
// (steps 228:230 of the width/8 run, 16 images). Removing the per-row
// bookkeeping of shiftCopy made it 5–15 % faster here but not the job: the
// time moved to the copies, which are bound by writing the 9-fold
// unfolded columns to memory. Avoiding that write (shifted GEMMs on a
// padded image instead of im2col) is the lever left.
//
//	go test -run XXX -bench Im2col ./nn
func BenchmarkIm2col(b *testing.B) {
	const imgs = 64
	for _, sz := range [][2]int{{16, 28}, {16, 14}, {64, 7}, {64, 3}} {
		c, hw := sz[0], sz[1]
		g := newGeom(imgs, c, hw, hw, c, 3, 3, 1, 1, 1)
		x := make([]float32, imgs*c*hw*hw)
		for i := range x {
			x[i] = float32(i % 7)
		}
		cols := make([]float32, g.ck*imgs*g.pos)
		b.Run(fmt.Sprintf("c%d/%dx%d", c, hw, hw), func(b *testing.B) {
			b.SetBytes(int64(4 * len(cols)))
			for i := 0; i < b.N; i++ {
				im2col(false, g, x, 0, imgs, cols)
			}
		})
	}
}
