package nn

import "github.com/explaind/explaind/tensor"

// phaseOf splits an input offset t = d·s + a with 0 ≤ a < s: input row
// oh·s + t is row oh + d of phase a.
func phaseOf(t, s int) (a, d int) {
	a = ((t % s) + s) % s
	return a, (t - a) / s
}

// convTap is a kernel tap (i, j) as the unfolding reads it: with
// (a, dh) = phaseOf(i − ph, s) and (b, dw) = phaseOf(j − pw, s), output
// position (oh, ow) reads position (oh + dh, ow + dw) of phase plane
// a·s + b (see splitPhases; with stride 1 the one phase is the image).
type convTap struct{ phase, dh, dw int }

// taps returns the kernel's taps in the order of a channel's rows of cols:
// (i, j) row-major.
func (g convGeom) taps() []convTap {
	taps := make([]convTap, 0, g.kh*g.kw)
	for i := 0; i < g.kh; i++ {
		a, dh := phaseOf(i-g.ph, g.s)
		for j := 0; j < g.kw; j++ {
			b, dw := phaseOf(j-g.pw, g.s)
			taps = append(taps, convTap{phase: a*g.s + b, dh: dh, dw: dw})
		}
	}
	return taps
}

// phaseSize returns the size hs×ws = ⌈H/s⌉×⌈W/s⌉ of a phase plane: the
// image's for stride 1.
func (g convGeom) phaseSize() (hs, ws int) { return (g.h + g.s - 1) / g.s, (g.w + g.s - 1) / g.s }

// tapPlane returns the plane that tap tp reads from an image plane: the
// image itself for stride 1 (phases nil), else its phase among phases
// (planes of n values each).
func tapPlane[T tensor.Float](img, phases []T, tp convTap, n int) []T {
	if phases == nil {
		return img
	}
	return phases[tp.phase*n : (tp.phase+1)*n]
}

// splitPhases deinterleaves an h×w plane into s·s phase planes of hs×ws
// (hs = ⌈h/s⌉, ws = ⌈w/s⌉): phase (a, b) holds src[r·s+a, q·s+b], zero
// beyond the image.
func splitPhases[T tensor.Float](src []T, h, w, s, hs, ws int, phases []T) {
	for a := 0; a < s; a++ {
		for b := 0; b < s; b++ {
			ph := phases[(a*s+b)*hs*ws : (a*s+b+1)*hs*ws]
			for r := 0; r < hs; r++ {
				d := ph[r*ws : (r+1)*ws]
				ih := r*s + a
				if ih >= h {
					clear(d)
					continue
				}
				row := src[ih*w : (ih+1)*w]
				q := 0
				for iw := b; iw < w; iw += s {
					d[q] = row[iw]
					q++
				}
				clear(d[q:])
			}
		}
	}
}

// mergePhases adds phase planes back onto an h×w plane (splitPhases'
// transpose), one output row at a time.
func mergePhases[T tensor.Float](phases []T, h, w, s, hs, ws int, dst []T) {
	for ih := 0; ih < h; ih++ {
		a, r := ih%s, ih/s
		row := dst[ih*w : (ih+1)*w]
		if s == 2 {
			p0 := phases[(2*a)*hs*ws+r*ws:][:ws]
			p1 := phases[(2*a+1)*hs*ws+r*ws:][:ws]
			for q := 0; q < w/2; q++ {
				row[2*q] += p0[q]
				row[2*q+1] += p1[q]
			}
			if w%2 == 1 {
				row[w-1] += p0[w/2]
			}
			continue
		}
		for b := 0; b < s; b++ {
			src := phases[(a*s+b)*hs*ws+r*ws:][:ws]
			q := 0
			for iw := b; iw < w; iw += s {
				row[iw] += src[q]
				q++
			}
		}
	}
}

// shiftRange returns the rows (or columns) [lo, hi) of an output of n whose
// source index o + d lies in [0, m).
func shiftRange(n, m, d int) (int, int) {
	lo, hi := max(0, -d), min(n, m-d)
	if hi < lo {
		hi = lo
	}
	return lo, hi
}

// shiftCopy sets dst[oh, ow] = src[oh+dh, ow+dw] for an ho×wo dst and an
// hs×ws src, zero where the source is outside. When the rows have the same
// length the valid part is one contiguous copy, and only the |dw| columns
// that wrapped around are cleared afterwards.
func shiftCopy[T tensor.Float](dst []T, ho, wo int, src []T, hs, ws, dh, dw int) {
	r0, r1 := shiftRange(ho, hs, dh)
	c0, c1 := shiftRange(wo, ws, dw)
	if r0 == r1 || c0 == c1 {
		clear(dst)
		return
	}
	clear(dst[:r0*wo])
	clear(dst[r1*wo:])
	if wo == ws {
		off := dh*ws + dw
		lo, hi := r0*wo+c0, (r1-1)*wo+c1
		copy(dst[lo:hi], src[lo+off:hi+off])
		clear(dst[r0*wo : lo])
		clear(dst[hi : r1*wo])
		if c0 > 0 || c1 < wo {
			for r := r0; r < r1-1; r++ {
				gap := dst[r*wo+c1 : (r+1)*wo+c0]
				for q := range gap {
					gap[q] = 0
				}
			}
		}
		return
	}
	for r := r0; r < r1; r++ {
		d := dst[r*wo : (r+1)*wo]
		s := src[(r+dh)*ws : (r+dh+1)*ws]
		for q := range d[:c0] {
			d[q] = 0
		}
		if c1-c0 < 16 { // short rows: a loop beats a call to memmove
			s = s[c0+dw : c1+dw]
			for q, v := range s {
				d[c0+q] = v
			}
		} else {
			copy(d[c0:c1], s[c0+dw:c1+dw])
		}
		for q := c1; q < wo; q++ {
			d[q] = 0
		}
	}
}

// shiftAdd is shiftCopy's transpose: dst[oh+dh, ow+dw] += src[oh, ow] for
// the sources inside the hs×ws dst.
func shiftAdd[T tensor.Float](dst []T, hs, ws int, src []T, ho, wo, dh, dw int) {
	r0, r1 := shiftRange(ho, hs, dh)
	c0, c1 := shiftRange(wo, ws, dw)
	if c0 == c1 {
		return
	}
	for r := r0; r < r1; r++ {
		s := src[r*wo+c0 : r*wo+c1]
		d := dst[(r+dh)*ws+c0+dw : (r+dh)*ws+c1+dw]
		for q, v := range s {
			d[q] += v
		}
	}
}

// forPlanes calls body(jb, c, phases) for every (image, channel) plane of
// a chunk of cnt images; with par, the planes are split over goroutines.
// phases is the goroutine's scratch for one plane's s·s phase planes (nil
// for stride 1).
func forPlanes[T tensor.Float](par bool, g convGeom, cnt int, body func(jb, c int, phases []T)) {
	hs, ws := g.phaseSize()
	maybeParallel(par, cnt*g.c, g.kh*g.kw*g.pos, func(lo, hi int) {
		var phases []T
		if g.s > 1 {
			phases = make([]T, g.s*g.s*hs*ws)
		}
		for u := lo; u < hi; u++ {
			body(u/g.c, u%g.c, phases)
		}
	})
}

// im2col unfolds images b0 … b0+cnt−1 of x into cols [C·KH·KW, cnt·P]:
// cols[(c·KH + i)·KW + j, jb·P + oh·W' + ow] = x[b0+jb, c, oh·s−ph+i, ow·s−pw+j]
// (zero outside the image). With stride s > 1 each plane is first split
// into s·s phases, so that every row of cols is a shifted copy of one
// phase. With par, work is split over (image, channel) pairs.
func im2col[T tensor.Float](par bool, g convGeom, x []T, b0, cnt int, cols []T) {
	n, plane, kk := cnt*g.pos, g.h*g.w, g.kh*g.kw
	hs, ws := g.phaseSize()
	taps := g.taps()
	forPlanes(par, g, cnt, func(jb, c int, phases []T) {
		src := x[((b0+jb)*g.c+c)*plane : ((b0+jb)*g.c+c+1)*plane]
		if phases != nil {
			splitPhases(src, g.h, g.w, g.s, hs, ws, phases)
		}
		for t, tp := range taps {
			row := c*kk + t
			dst := cols[row*n+jb*g.pos : row*n+(jb+1)*g.pos]
			shiftCopy(dst, g.ho, g.wo, tapPlane(src, phases, tp, hs*ws), hs, ws, tp.dh, tp.dw)
		}
	})
}

// col2im folds dcols [C·KH·KW, cnt·P] back onto images r0 … r0+cnt−1 of dx
// (adding): the transpose of im2col. With par, each (image, channel) plane
// is written by one goroutine.
func col2im[T tensor.Float](par bool, g convGeom, dcols []T, dx []T, r0, cnt int) {
	n, plane, kk := cnt*g.pos, g.h*g.w, g.kh*g.kw
	hs, ws := g.phaseSize()
	taps := g.taps()
	forPlanes(par, g, cnt, func(jb, c int, phases []T) {
		dst := dx[((r0+jb)*g.c+c)*plane : ((r0+jb)*g.c+c+1)*plane]
		clear(phases)
		for t, tp := range taps {
			row := c*kk + t
			src := dcols[row*n+jb*g.pos : row*n+(jb+1)*g.pos]
			shiftAdd(tapPlane(dst, phases, tp, hs*ws), hs, ws, src, g.ho, g.wo, tp.dh, tp.dw)
		}
		if phases != nil {
			mergePhases(phases, g.h, g.w, g.s, hs, ws, dst)
		}
	})
}
