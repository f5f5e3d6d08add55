package nn_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/nn/nncheck"
	"github.com/explaind/explaind/tensor"
)

// naiveConv is the textbook definition of torch.nn.Conv2d without bias.
func naiveConv(x *tensor.Dense[float64], w *tensor.Dense[float64], stride, pad int) *tensor.Dense[float64] {
	b, c, h, wd := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	o, kh, kw := w.Shape[0], w.Shape[2], w.Shape[3]
	ho, wo := (h+2*pad-kh)/stride+1, (wd+2*pad-kw)/stride+1
	y := tensor.New[float64](b, o, ho, wo)
	for bb := 0; bb < b; bb++ {
		for oo := 0; oo < o; oo++ {
			for i := 0; i < ho; i++ {
				for j := 0; j < wo; j++ {
					var s float64
					for cc := 0; cc < c; cc++ {
						for p := 0; p < kh; p++ {
							for q := 0; q < kw; q++ {
								ih, iw := i*stride-pad+p, j*stride-pad+q
								if ih < 0 || ih >= h || iw < 0 || iw >= wd {
									continue
								}
								s += x.Data[((bb*c+cc)*h+ih)*wd+iw] * w.Data[((oo*c+cc)*kh+p)*kw+q]
							}
						}
					}
					y.Data[((bb*o+oo)*ho+i)*wo+j] = s
				}
			}
		}
	}
	return y
}

type convCase struct {
	in, out, kh, kw, stride, pad int
	b, h, w                      int
	k, m                         int
}

func (c convCase) String() string {
	return fmt.Sprintf("C%d_O%d_k%dx%d_s%d_p%d_B%d_%dx%d_K%d_M%d", c.in, c.out, c.kh, c.kw, c.stride, c.pad, c.b, c.h, c.w, c.k, c.m)
}

var convCases = []convCase{
	{in: 3, out: 5, kh: 3, kw: 3, stride: 1, pad: 1, b: 2, h: 7, w: 6, k: 2, m: 2},
	{in: 1, out: 3, kh: 1, kw: 1, stride: 1, pad: 0, b: 3, h: 5, w: 5, k: 1, m: 1},
	{in: 2, out: 3, kh: 5, kw: 5, stride: 2, pad: 2, b: 2, h: 9, w: 11, k: 3, m: 2},
	{in: 3, out: 1, kh: 3, kw: 3, stride: 2, pad: 0, b: 2, h: 8, w: 7, k: 1, m: 3},
	{in: 5, out: 7, kh: 3, kw: 5, stride: 1, pad: 2, b: 1, h: 4, w: 6, k: 2, m: 1},
	{in: 1, out: 2, kh: 5, kw: 3, stride: 3, pad: 1, b: 2, h: 10, w: 5, k: 2, m: 2},
	{in: 3, out: 3, kh: 3, kw: 3, stride: 1, pad: 0, b: 2, h: 3, w: 3, k: 2, m: 2}, // 1×1 output
	{in: 2, out: 4, kh: 5, kw: 5, stride: 1, pad: 0, b: 1, h: 5, w: 9, k: 1, m: 2},
	{in: 3, out: 2, kh: 1, kw: 1, stride: 2, pad: 1, b: 2, h: 5, w: 4, k: 2, m: 2}, // padding-only outputs
	{in: 2, out: 3, kh: 1, kw: 1, stride: 1, pad: 1, b: 2, h: 3, w: 4, k: 2, m: 1}, // padding ≥ kernel: folded
	{in: 2, out: 2, kh: 3, kw: 3, stride: 1, pad: 3, b: 1, h: 4, w: 2, k: 1, m: 2}, // padding ≥ kernel: folded
	{in: 3, out: 4, kh: 5, kw: 5, stride: 2, pad: 2, b: 2, h: 12, w: 13, k: 2, m: 2},
	{in: 2, out: 3, kh: 3, kw: 3, stride: 2, pad: 1, b: 2, h: 6, w: 5, k: 1, m: 1},
	// K = 1 at stride 1 with about as many input as output positions: one
	// unfolding of dy gives both the input cotangent and the weight gradient.
	{in: 3, out: 5, kh: 3, kw: 3, stride: 1, pad: 1, b: 3, h: 7, w: 6, k: 1, m: 2},
	{in: 4, out: 2, kh: 5, kw: 3, stride: 1, pad: 2, b: 2, h: 6, w: 5, k: 1, m: 1},
	{in: 2, out: 3, kh: 3, kw: 3, stride: 1, pad: 0, b: 2, h: 9, w: 8, k: 1, m: 1},
}

func TestConv2dForwardMatchesDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, c := range append(convCases, convCase{in: 7, out: 4, kh: 5, kw: 5, stride: 1, pad: 2, b: 3, h: 70, w: 66}) {
		t.Run(c.String(), func(t *testing.T) {
			l := nn.NewConv2dRect[float64]("conv", c.in, c.out, c.kh, c.kw, c.stride, c.pad)
			initParams(rng, l)
			x := randInput(rng, c.b, c.in, c.h, c.w)
			y, _, err := l.Forward(x)
			if err != nil {
				t.Fatal(err)
			}
			want := naiveConv(x, l.Weight.Value, c.stride, c.pad)
			if !tensor.SameShape(y.Shape, want.Shape) {
				t.Fatalf("shape %v, want %v", y.Shape, want.Shape)
			}
			if e := tensor.RelErr(y.Data, want.Data); e > 1e-13 {
				t.Errorf("relative error %.3g against the definition", e)
			}
			// float32 agrees too.
			l32 := nn.NewConv2dRect[float32]("conv", c.in, c.out, c.kh, c.kw, c.stride, c.pad)
			copy(l32.Weight.Value.Data, tensor.Convert[float32](l.Weight.Value).Data)
			y32, _, err := l32.Forward(tensor.Convert[float32](x))
			if err != nil {
				t.Fatal(err)
			}
			if e := tensor.RelErr(y32.Data, want.Data); e > 1e-5 {
				t.Errorf("float32: relative error %.3g against the definition", e)
			}
		})
	}
}

func TestConv2dAgainstFiniteDifferences(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, c := range convCases {
		t.Run(c.String(), func(t *testing.T) {
			l := nn.NewConv2dRect[float64]("conv", c.in, c.out, c.kh, c.kw, c.stride, c.pad)
			initParams(rng, l)
			runCheck(t, l, randInput(rng, c.b, c.in, c.h, c.w), nncheck.Options{K: c.k, M: c.m, Seed: 7})
		})
	}
}

func TestConv2dReLUAgainstFiniteDifferences(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	for _, c := range convCases {
		t.Run(c.String(), func(t *testing.T) {
			l := nn.NewConv2dRect[float64]("conv", c.in, c.out, c.kh, c.kw, c.stride, c.pad)
			l.ReLU = true
			initParams(rng, l)
			runCheck(t, l, randInput(rng, c.b, c.in, c.h, c.w), nncheck.Options{K: c.k, M: c.m, Seed: 8})
		})
	}
}

// TestConv2dReLUMatchesSequential checks the fused ReLU against Conv2d
// followed by nn.ReLU, exactly, including outputs that are exactly 0 (a
// zero input image) where the derivative is taken as 0.
func TestConv2dReLUMatchesSequential(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	for _, typ := range []string{"float32", "float64"} {
		t.Run(typ, func(t *testing.T) {
			if typ == "float32" {
				checkFusedReLU[float32](t, rng)
			} else {
				checkFusedReLU[float64](t, rng)
			}
		})
	}
}

func checkFusedReLU[T tensor.Float](t *testing.T, rng *rand.Rand) {
	fused := nn.NewConv2d[T]("c", 3, 5, 3, 1, 1)
	fused.ReLU = true
	nn.FillUniform(fused.Weight.Value.Data, 0.5, rng)
	plain := nn.NewConv2d[T]("c", 3, 5, 3, 1, 1)
	plain.Weight = fused.Weight
	seq := nn.NewSequential[T](plain, nn.ReLU[T]{})
	const b, k, m = 3, 2, 2
	x := tensor.New[T](b, 3, 6, 7)
	nn.FillUniform(x.Data[3*42:], 1, rng) // sample 0 is all zero: its outputs are exactly 0
	x.Data[5] = -0.0
	cot := tensor.New[T](b*k, 5, 6, 7)
	nn.FillUniform(cot.Data, 1, rng)
	dx := tensor.New[T](b*m, 3, 6, 7)
	nn.FillUniform(dx.Data, 1, rng)
	tan := &nn.Tangents[T]{M: m, Of: map[*nn.Param[T]]*tensor.Dense[T]{fused.Weight: tensor.New[T](m, 5, 3, 3, 3)}}
	nn.FillUniform(tan.Of[fused.Weight].Data, 1, rng)

	same := func(what string, a, b *tensor.Dense[T]) {
		t.Helper()
		if !tensor.SameShape(a.Shape, b.Shape) || tensor.RelErr(a.Data, b.Data) != 0 {
			t.Errorf("%s: fused and sequential differ (relative error %.3g)", what, tensor.RelErr(a.Data, b.Data))
		}
	}
	yf, sf, err := fused.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	ys, ss, err := seq.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	same("Forward", yf, ys)
	for _, mode := range []nn.GradMode{nn.Summed, nn.PerRow} {
		gf := nn.NewGrads(mode, fused.Params(), b*k)
		gs := nn.NewGrads(mode, fused.Params(), b*k)
		df, err := fused.Backward(sf, cot, gf, true)
		if err != nil {
			t.Fatal(err)
		}
		ds, err := seq.Backward(ss, cot, gs, true)
		if err != nil {
			t.Fatal(err)
		}
		same("input cotangent", df, ds)
		same("weight gradient", gf.Of[fused.Weight], gs.Of[fused.Weight])
	}
	yjf, djf, err := fused.JVP(x, dx, tan)
	if err != nil {
		t.Fatal(err)
	}
	yjs, djs, err := seq.JVP(x, dx, tan)
	if err != nil {
		t.Fatal(err)
	}
	same("JVP primal", yjf, yjs)
	same("JVP tangent", djf, djs)
}

// TestConv2dLargeChunks uses images large enough that one call is split into
// several chunks of samples and its loops over several goroutines.
func TestConv2dLargeChunks(t *testing.T) {
	if testing.Short() {
		t.Skip("large shapes")
	}
	rng := rand.New(rand.NewPCG(8, 9))
	l := nn.NewConv2d[float64]("big", 8, 3, 5, 1, 2)
	initParams(rng, l)
	// C·25·H·W = 819200 unfolded values per sample: seven samples take
	// several chunks (spread over the workers), and so do their cotangents.
	runCheck(t, l, randInput(rng, 7, 8, 64, 64), nncheck.Options{K: 2, M: 2, Seed: 3})
	l.ReLU = true
	runCheck(t, l, randInput(rng, 5, 8, 64, 64), nncheck.Options{K: 1, M: 1, Seed: 4})
	s1 := nn.NewConv2d[float64]("big1", 16, 4, 3, 1, 1)
	s1.ReLU = true
	initParams(rng, s1)
	runCheck(t, s1, randInput(rng, 12, 16, 48, 40), nncheck.Options{K: 1, M: 2, Seed: 6})
	s2 := nn.NewConv2d[float64]("big2", 8, 3, 5, 2, 2)
	initParams(rng, s2)
	runCheck(t, s2, randInput(rng, 9, 8, 64, 64), nncheck.Options{K: 2, M: 1, Seed: 5})
}

// TestConv2dPerRowMatchesSummed checks the summed gradient against the sum
// of per-row gradients and the input cotangent of several cotangents per
// sample against the cotangents taken one at a time.
func TestConv2dPerRowMatchesSummed(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	l := nn.NewConv2d[float64]("c", 3, 4, 3, 2, 1)
	initParams(rng, l)
	x := randInput(rng, 3, 3, 9, 8)
	y, st, err := l.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	const k = 3
	dy := randInput(rng, 3*k, 4, y.Shape[2], y.Shape[3])
	sum := nn.NewGrads(nn.Summed, l.Params(), 0)
	dx, err := l.Backward(st, dy, sum, true)
	if err != nil {
		t.Fatal(err)
	}
	pr := nn.NewGrads(nn.PerRow, l.Params(), 3*k)
	if _, err := l.Backward(st, dy, pr, false); err != nil {
		t.Fatal(err)
	}
	n := l.Weight.Value.Numel()
	acc := make([]float64, n)
	for r := 0; r < 3*k; r++ {
		tensor.AddScaled(acc, 1, pr.Of[l.Weight].Data[r*n:(r+1)*n])
	}
	if e := tensor.RelErr(acc, sum.Of[l.Weight].Data); e > 1e-13 {
		t.Errorf("Σ per-row gradients vs summed: relative error %.3g", e)
	}
	ny, nx := len(dy.Data)/(3*k), len(x.Data)/3
	for r := 0; r < 3*k; r++ {
		one := &tensor.Dense[float64]{Shape: []int{3, 4, y.Shape[2], y.Shape[3]}, Data: make([]float64, 3*ny)}
		b := r / k
		copy(one.Data[b*ny:(b+1)*ny], dy.Data[r*ny:(r+1)*ny])
		d1, err := l.Backward(st, one, nil, true)
		if err != nil {
			t.Fatal(err)
		}
		if e := tensor.RelErr(dx.Data[r*nx:(r+1)*nx], d1.Data[b*nx:(b+1)*nx]); e > 1e-13 {
			t.Errorf("input cotangent row %d: relative error %.3g", r, e)
		}
	}
}

func TestConv2dInit(t *testing.T) {
	l := nn.NewConv2d[float32]("c", 4, 6, 3, 1, 1)
	l.InitUniform(rand.New(rand.NewPCG(1, 1)))
	bound := 1 / math.Sqrt(4*9)
	var mx float64
	for _, v := range l.Weight.Value.Data {
		mx = math.Max(mx, math.Abs(float64(v)))
	}
	if !(mx <= bound) || mx < 0.9*bound {
		t.Errorf("max |w| = %g, want just below %g", mx, bound)
	}
	if l.Weight.Name != "c.weight" || !tensor.SameShape(l.Weight.Value.Shape, []int{6, 4, 3, 3}) {
		t.Errorf("weight %s %v", l.Weight.Name, l.Weight.Value.Shape)
	}
}

func TestConv2dShapeErrors(t *testing.T) {
	l := nn.NewConv2d[float32]("conv7", 3, 4, 5, 1, 1)
	for _, in := range [][]int{
		{2, 2, 8, 8}, // wrong channel count
		{2, 3, 2, 8}, // 2+2 rows < kernel 5
		{2, 3, 8, 1}, // 1+2 columns < kernel 5
		{3, 8, 8},    // no batch axis
		{2, 3, 0, 8}, // empty image
	} {
		if _, err := l.OutShape(in); err == nil || !strings.Contains(err.Error(), "conv7") {
			t.Errorf("OutShape(%v): got %v, want an error naming conv7", in, err)
		}
		if _, _, err := l.Forward(tensor.New[float32](in...)); err == nil {
			t.Errorf("Forward(%v): want an error", in)
		}
		if _, _, err := l.JVP(tensor.New[float32](in...), nil, nil); err == nil {
			t.Errorf("JVP(%v): want an error", in)
		}
	}
	if _, err := nn.NewConv2d[float32]("bad", 3, 4, 0, 1, 0).OutShape([]int{1, 3, 4, 4}); err == nil {
		t.Error("kernel 0: want an error")
	}
	if _, err := nn.NewConv2d[float32]("bad", 3, 4, 3, 0, 0).OutShape([]int{1, 3, 4, 4}); err == nil {
		t.Error("stride 0: want an error")
	}
	if _, _, err := l.Forward(&tensor.Dense[float32]{Shape: []int{1, 3, 6, 6}, Data: make([]float32, 10)}); err == nil {
		t.Error("data shorter than the shape: want an error")
	}
	x := tensor.New[float32](2, 3, 6, 6)
	y, st, err := l.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	if !tensor.SameShape(y.Shape, []int{2, 4, 4, 4}) {
		t.Fatalf("output shape %v", y.Shape)
	}
	if _, err := l.Backward(st, tensor.New[float32](3, 4, 4, 4), nil, true); err == nil {
		t.Error("cotangent rows not a multiple of the batch: want an error")
	}
	if _, err := l.Backward(st, tensor.New[float32](2, 4, 4, 5), nil, true); err == nil {
		t.Error("cotangent of another shape: want an error")
	}
	if _, err := l.Backward(nn.ReLU[float32]{}, y, nil, true); err == nil {
		t.Error("foreign state: want an error")
	}
	bad := &nn.Grads[float32]{Mode: nn.PerRow, Of: map[*nn.Param[float32]]*tensor.Dense[float32]{l.Weight: tensor.New[float32](4, 3, 5, 5)}}
	if _, err := l.Backward(st, y, bad, true); err == nil || !strings.Contains(err.Error(), "conv7.weight") {
		t.Errorf("per-row buffer without the row axis: got %v", err)
	}
	tan := &nn.Tangents[float32]{M: 2, Of: map[*nn.Param[float32]]*tensor.Dense[float32]{l.Weight: tensor.New[float32](1, 4, 3, 5, 5)}}
	if _, _, err := l.JVP(x, nil, tan); err == nil || !strings.Contains(err.Error(), "conv7.weight") {
		t.Errorf("tangent with the wrong M: got %v", err)
	}
	if _, _, err := l.JVP(x, tensor.New[float32](2, 3, 6, 6), tan); err == nil {
		t.Error("input tangent without M rows per sample: want an error")
	}
}
