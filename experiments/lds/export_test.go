package lds

// Projection returns the trak method's whole projection matrix R [P × k]
// of seed, row-major, for the tests.
func Projection(P, k int, seed uint64) []float32 {
	p := newProjector(P, k, seed)
	var out []float32
	for b, off := 0, 0; off < P; b, off = b+1, off+projBlock {
		out = append(out, p.fill(b, min(projBlock, P-off))...)
	}
	return out
}
