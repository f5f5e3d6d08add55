package nn_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// randPath returns a path with a random direction for every parameter and
// random positions in [−0.2, 1.2], the first 0 and the second 1.
func randPath(rng *rand.Rand, params []*nn.Param[float64], b int) *nn.Path[float64] {
	p := &nn.Path[float64]{Delta: map[*nn.Param[float64]]*tensor.Dense[float64]{}, T: make([]float64, b)}
	for _, prm := range params {
		d := randInput(rng, prm.Value.Shape...)
		for i := range d.Data {
			d.Data[i] *= 0.3
		}
		p.Delta[prm] = d
	}
	for i := range p.T {
		p.T[i] = rng.Float64()*1.4 - 0.2
	}
	p.T[0] = 0
	if b > 1 {
		p.T[1] = 1
	}
	return p
}

// pathAt evaluates PathForward with parameters θ + s·v, input x + s·u (u
// may be nil) and positions T + s·dt (dt may be nil), restoring θ.
func pathAt(t *testing.T, l pathLayer, x, u *tensor.Dense[float64], p *nn.Path[float64], v map[*nn.Param[float64]][]float64, dt []float64, s float64) *tensor.Dense[float64] {
	t.Helper()
	saved := map[*nn.Param[float64]][]float64{}
	for prm, dir := range v {
		saved[prm] = append([]float64(nil), prm.Value.Data...)
		tensor.AddScaled(prm.Value.Data, s, dir)
	}
	defer func() {
		for prm, old := range saved {
			copy(prm.Value.Data, old)
		}
	}()
	xs := x
	if u != nil {
		xs = x.Clone()
		tensor.AddScaled(xs.Data, s, u.Data)
	}
	ps := p
	if dt != nil {
		ps = &nn.Path[float64]{Delta: p.Delta, T: append([]float64(nil), p.T...)}
		tensor.AddScaled(ps.T, s, dt)
	}
	y, _, err := l.PathForward(xs, ps)
	if err != nil {
		t.Fatal(err)
	}
	return y
}

// fdPath is the central difference of PathForward along (v, u, dt).
func fdPath(t *testing.T, l pathLayer, x, u *tensor.Dense[float64], p *nn.Path[float64], v map[*nn.Param[float64]][]float64, dt []float64) *tensor.Dense[float64] {
	const eps = 1e-6
	yp := pathAt(t, l, x, u, p, v, dt, eps)
	ym := pathAt(t, l, x, u, p, v, dt, -eps)
	for i := range yp.Data {
		yp.Data[i] = (yp.Data[i] - ym.Data[i]) / (2 * eps)
	}
	return yp
}

// checkPathFD checks the path rules of l at positions p.T against central
// finite differences in float64 (relative tolerance 1e-6, nncheck's):
// PathJVP along M tangents of the parameters and the input; PathJVP along
// Δθ itself against d/dt of PathForward (the derivative exact path
// integration integrates); PathBackward's summed parameter gradients and
// input cotangent (K per sample) through ⟨dy, Df·v⟩ = ⟨∇, v⟩.
func checkPathFD(t *testing.T, rng *rand.Rand, l pathLayer, x *tensor.Dense[float64], p *nn.Path[float64], k, m int) {
	t.Helper()
	const tol = 1e-6
	params := l.Params()
	b := x.Shape[0]
	nx := len(x.Data) / b
	y, st, err := l.PathForward(x, p)
	if err != nil {
		t.Fatal(err)
	}
	ny := len(y.Data) / b
	check := func(what string, got, want []float64) {
		t.Helper()
		if e := tensor.RelErr(got, want); !(e <= tol) {
			t.Errorf("%s: relative error %.3g against finite differences, want ≤ %.0e", what, e, tol)
		}
	}
	// Tangents of the parameters and the input.
	tan := &nn.Tangents[float64]{M: m, Of: map[*nn.Param[float64]]*tensor.Dense[float64]{}}
	for _, prm := range params {
		tan.Of[prm] = randInput(rng, append([]int{m}, prm.Value.Shape...)...)
	}
	dx := randInput(rng, append([]int{b * m}, x.Shape[1:]...)...)
	yj, dyj, err := l.PathJVP(x, dx, p, tan)
	if err != nil {
		t.Fatal(err)
	}
	if d := tensor.RelErr(yj.Data, y.Data); d > 1e-14 {
		t.Errorf("PathJVP's output differs from PathForward's by %.3g", d)
	}
	for mm := 0; mm < m; mm++ {
		v := map[*nn.Param[float64]][]float64{}
		for _, prm := range params {
			n := len(prm.Value.Data)
			v[prm] = tan.Of[prm].Data[mm*n : (mm+1)*n]
		}
		u := tensor.New[float64](x.Shape...)
		got := make([]float64, 0, len(y.Data))
		for bb := 0; bb < b; bb++ {
			copy(u.Data[bb*nx:(bb+1)*nx], dx.Data[(bb*m+mm)*nx:(bb*m+mm+1)*nx])
			got = append(got, dyj.Data[(bb*m+mm)*ny:(bb*m+mm+1)*ny]...)
		}
		check(fmt.Sprintf("PathJVP direction %d", mm), got, fdPath(t, l, x, u, p, v, nil).Data)
	}
	// d/dt along the path is the JVP along Δθ.
	along := &nn.Tangents[float64]{M: 1, Of: map[*nn.Param[float64]]*tensor.Dense[float64]{}}
	for prm, d := range p.Delta {
		along.Of[prm] = &tensor.Dense[float64]{Shape: append([]int{1}, d.Shape...), Data: d.Data}
	}
	_, dyt, err := l.PathJVP(x, nil, p, along)
	if err != nil {
		t.Fatal(err)
	}
	ones := make([]float64, b)
	for i := range ones {
		ones[i] = 1
	}
	check("PathJVP along Δθ vs d/dt", dyt.Data, fdPath(t, l, x, nil, p, nil, ones).Data)

	// PathBackward against the same finite differences.
	cot := randInput(rng, append([]int{b * k}, y.Shape[1:]...)...)
	g := nn.NewGrads(nn.Summed, params, 0)
	dxb, err := l.PathBackward(st, cot, g, true)
	if err != nil {
		t.Fatal(err)
	}
	pair := func(d *tensor.Dense[float64]) float64 {
		var s float64
		for bb := 0; bb < b; bb++ {
			for kk := 0; kk < k; kk++ {
				s += dotF(cot.Data[(bb*k+kk)*ny:(bb*k+kk+1)*ny], d.Data[bb*ny:(bb+1)*ny])
			}
		}
		return s
	}
	scalar := func(what string, got, want, scale float64) {
		t.Helper()
		if e := math.Abs(got-want) / math.Max(scale, 1e-30); !(e <= tol) {
			t.Errorf("%s: got %.10g, finite differences %.10g (relative error %.3g)", what, got, want, e)
		}
	}
	for _, prm := range params {
		dir := randInput(rng, prm.Value.Shape...).Data
		want := pair(fdPath(t, l, x, nil, p, map[*nn.Param[float64]][]float64{prm: dir}, nil))
		got := dotF(g.Of[prm].Data, dir)
		scalar("PathBackward gradient of "+prm.Name, got, want, math.Sqrt(dotF(g.Of[prm].Data, g.Of[prm].Data)*dotF(dir, dir)))
	}
	u := randInput(rng, x.Shape...)
	var got float64
	for bb := 0; bb < b; bb++ {
		for kk := 0; kk < k; kk++ {
			got += dotF(dxb.Data[(bb*k+kk)*nx:(bb*k+kk+1)*nx], u.Data[bb*nx:(bb+1)*nx])
		}
	}
	scalar("PathBackward input cotangent", got, pair(fdPath(t, l, x, u, p, nil, nil)), math.Sqrt(dotF(dxb.Data, dxb.Data)*dotF(u.Data, u.Data)))
}

func dotF(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// TestConv2dPathRules: for every convolution case (strides, paddings, odd
// and rectangular sizes, the folded and the transposed input cotangent),
// with and without the fused ReLU, the path rules match the plain rules
// evaluated sample by sample at θ + t_b ΔW (checkPathLayer) and finite
// differences of PathForward (checkPathFD), with a position per sample
// (short runs: the stacked [W; ΔW] products) and with 8 samples at two
// positions (runs long enough for products with W + tΔW).
func TestConv2dPathRules(t *testing.T) {
	rng := rand.New(rand.NewPCG(81, 82))
	for _, c := range convCases {
		for _, fused := range []bool{false, true} {
			for _, shared := range []bool{false, true} {
				t.Run(fmt.Sprintf("%v_relu%v_shared%v", c, fused, shared), func(t *testing.T) {
					l := nn.NewConv2dRect[float64]("conv", c.in, c.out, c.kh, c.kw, c.stride, c.pad)
					l.ReLU = fused
					initParams(rng, l)
					b := c.b + 1 // at least two positions
					var ts []float64
					if shared {
						b = 8
						ts = []float64{0.3, 0.3, 0.3, 0.3, 0.3, 0.8, 0.8, 0.8}
					}
					x := randInput(rng, b, c.in, c.h, c.w)
					checkPathLayerAt(t, rng, l, x, randInput(rng, b*c.m, c.in, c.h, c.w), c.k, c.m, ts)
					p := randPath(rng, l.Params(), b)
					if ts != nil {
						copy(p.T, ts)
					}
					checkPathFD(t, rng, l, x, p, c.k, c.m)
				})
			}
		}
	}
}

// TestConv2dPathNil: a nil path, or one where the weight does not move, is
// the plain layer bit for bit (Forward and JVP are the path rules at θ).
func TestConv2dPathNil(t *testing.T) {
	rng := rand.New(rand.NewPCG(83, 84))
	l := nn.NewConv2d[float64]("conv", 3, 4, 3, 2, 1)
	l.ReLU = true
	initParams(rng, l)
	x := randInput(rng, 3, 3, 7, 6)
	y, st, err := l.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	cot := randInput(rng, 6, 4, 4, 3)
	dx, err := l.Backward(st, cot, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*nn.Path[float64]{nil, {T: []float64{0.3, 0.5, 2}}} {
		yp, stp, err := l.PathForward(x, p)
		if err != nil {
			t.Fatal(err)
		}
		dxp, err := l.PathBackward(stp, cot, nil, true)
		if err != nil {
			t.Fatal(err)
		}
		if tensor.RelErr(yp.Data, y.Data) != 0 || tensor.RelErr(dxp.Data, dx.Data) != 0 {
			t.Errorf("path %v: the path rules differ from the plain ones", p)
		}
	}
	if _, _, err := l.PathForward(x, &nn.Path[float64]{T: []float64{0, 1}}); err == nil {
		t.Error("two positions for three samples: want an error")
	}
	if _, _, err := l.PathJVP(x, nil, &nn.Path[float64]{T: []float64{0, math.NaN(), 1}}, nil); err == nil {
		t.Error("a NaN position: want an error")
	}
	bad := &nn.Path[float64]{Delta: map[*nn.Param[float64]]*tensor.Dense[float64]{l.Weight: tensor.New[float64](4, 3, 3, 2)}, T: []float64{0, 0, 0}}
	if _, _, err := l.PathForward(x, bad); err == nil {
		t.Error("a direction of the wrong shape: want an error")
	}
}

// TestConv2dPathBackwardGrouped: the grouped weight gradients are
// PathBackward's per-row gradients summed per group, dx is PathBackward's,
// for small batches and for batches large enough to be split over workers
// (with groups that straddle the workers' segments, at GOMAXPROCS 2 and 7).
func TestConv2dPathBackwardGrouped(t *testing.T) {
	rng := rand.New(rand.NewPCG(85, 86))
	bigGroups := func(b int) ([]int, int) {
		groups := make([]int, b)
		g := 0
		for i := range groups {
			if i > 0 && rng.IntN(9) == 0 {
				g += 1 + rng.IntN(2) // leaves some groups empty
			}
			groups[i] = g
		}
		return groups, g + 2
	}
	type gcase struct {
		name    string
		c       convCase
		fused   bool
		groups  []int
		nGroups int
		procs   int
	}
	cases := []gcase{
		{"stride 2, uneven", convCases[2], true, []int{0, 0, 1, 2, 2}, 3, 0},
		{"K=1, empty group", convCases[0], false, []int{0, 1, 1, 3}, 5, 0},
		{"one group", convCases[5], true, []int{0, 0, 0}, 1, 0},
	}
	// distinct puts every sample of b in a group of its own, skipping some.
	distinct := func(b int) ([]int, int) {
		groups := make([]int, b)
		g := 0
		for i := range groups {
			g += 1 + rng.IntN(2)
			groups[i] = g
		}
		return groups, g + 1
	}
	for _, procs := range []int{2, 7} {
		gr, n := bigGroups(120)
		cases = append(cases, gcase{fmt.Sprintf("120 samples, GOMAXPROCS %d", procs),
			convCase{in: 4, out: 5, kh: 3, kw: 3, stride: 1, pad: 1, h: 8, w: 8, k: 2}, true, gr, n, procs})
		// Groups of one sample: a stride-1 convolution takes each row's
		// weight gradient from the unfolding of dy that gives its dx.
		for _, k := range []int{1, 2} {
			gr, n = distinct(120)
			cases = append(cases, gcase{fmt.Sprintf("120 samples, distinct groups, K=%d, GOMAXPROCS %d", k, procs),
				convCase{in: 4, out: 5, kh: 3, kw: 3, stride: 1, pad: 1, h: 8, w: 8, k: k}, true, gr, n, procs})
		}
	}
	for i, c := range []int{0, 4, 2} { // stride 1, pad 1 and 2 (shared unfolding); stride 2
		gr, n := distinct(5)
		cases = append(cases, gcase{fmt.Sprintf("distinct groups %d", i), convCases[c], i%2 == 0, gr, n, 0})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.procs > 0 {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(c.procs))
			}
			b := len(c.groups)
			l := nn.NewConv2dRect[float64]("conv", c.c.in, c.c.out, c.c.kh, c.c.kw, c.c.stride, c.c.pad)
			l.ReLU = c.fused
			initParams(rng, l)
			_, st, err := l.PathForward(randInput(rng, b, c.c.in, c.c.h, c.c.w), randPath(rng, l.Params(), b))
			if err != nil {
				t.Fatal(err)
			}
			out, _ := l.OutShape([]int{b, c.c.in, c.c.h, c.c.w})
			cot := randInput(rng, append([]int{b * c.c.k}, out[1:]...)...)
			perRow := nn.NewGrads(nn.PerRow, l.Params(), b*c.c.k)
			dxWant, err := l.PathBackward(st, cot, perRow, true)
			if err != nil {
				t.Fatal(err)
			}
			run := func(g *nn.Grads[float64], needDx bool) (*tensor.Dense[float64], error) {
				return l.PathBackwardGrouped(st, cot, g, c.groups, c.nGroups, needDx)
			}
			checkGroupedBackward(t, run, l.Params(), perRow, dxWant, c.groups, c.nGroups, c.c.k, 1e-12)
		})
	}
	t.Run("errors", func(t *testing.T) {
		l := nn.NewConv2d[float64]("conv", 2, 3, 3, 1, 1)
		initParams(rng, l)
		_, st, err := l.PathForward(randInput(rng, 4, 2, 5, 5), randPath(rng, l.Params(), 4))
		if err != nil {
			t.Fatal(err)
		}
		cot := randInput(rng, 8, 3, 5, 5)
		checkGroupedErrors(t, func(g *nn.Grads[float64], groups []int, nGroups int) error {
			_, err := l.PathBackwardGrouped(st, cot, g, groups, nGroups, true)
			return err
		}, l.Params(), 2, "gradient buffer")
	})
}

// tinyCNN is conv+ReLU, a 2×2 max-pool, a residual conv+ReLU block, a
// strided conv+ReLU, the global max-pool, flatten and a linear head: every
// kind of layer of ResNet-9. With bias the first convolution's weights are
// shifted negative, so that many of its outputs are 0 after the ReLU and
// max-pool windows hold ties (all zeros, or zeros and one positive value).
func tinyCNN(rng *rand.Rand, negative bool) *nn.Sequential[float64] {
	c1 := nn.NewConv2d[float64]("0", 2, 3, 3, 1, 1)
	c1.ReLU = true
	c2 := nn.NewConv2d[float64]("2.a", 3, 3, 3, 1, 1)
	c2.ReLU = true
	c3 := nn.NewConv2d[float64]("3", 3, 4, 3, 2, 0)
	c3.ReLU = true
	head := nn.NewLinear[float64]("9", 4, 3, false)
	net := nn.NewSequential[float64](c1, nn.NewMaxPool2d[float64](2, 2), &nn.Residual[float64]{Module: nn.NewSequential[float64](c2)},
		c3, nn.AdaptiveMaxPool2d[float64]{}, nn.Flatten[float64]{}, head, nn.LogSoftmax[float64]{})
	initParams(rng, net)
	if negative {
		for i := range c1.Weight.Value.Data {
			c1.Weight.Value.Data[i] -= 0.08
		}
	}
	return net
}

// TestSequentialPathRules: the containers' path rules, over a small CNN
// with every ResNet-9 layer kind, match sample-by-sample plain evaluation
// at θ + t_b Δθ and finite differences, also where the ReLU leaves ties of
// zeros in max-pool windows (counted, so the test cannot pass without
// them); grouped backward sums the per-row gradients per group.
func TestSequentialPathRules(t *testing.T) {
	rng := rand.New(rand.NewPCG(87, 88))
	for _, negative := range []bool{false, true} {
		t.Run(fmt.Sprintf("ties %v", negative), func(t *testing.T) {
			net := tinyCNN(rng, negative)
			const b = 5
			x := randInput(rng, b, 2, 9, 11)
			for i := range x.Data {
				x.Data[i] = math.Abs(x.Data[i])
			}
			if negative {
				ties := countTies(t, net, x)
				if ties.allZero == 0 || ties.someZero == 0 {
					t.Fatalf("want windows of zeros and windows with zeros and a positive value, got %+v", ties)
				}
				t.Logf("2×2 windows after the first ReLU: %+v", ties)
			}
			checkPathLayer(t, rng, net, x, randInput(rng, b*2, 2, 9, 11), 2, 2)
			p := randPath(rng, net.Params(), b)
			checkPathFD(t, rng, net, x, p, 3, 2)

			_, st, err := net.PathForward(x, p)
			if err != nil {
				t.Fatal(err)
			}
			cot := randInput(rng, b*3, 3)
			perRow := nn.NewGrads(nn.PerRow, net.Params(), b*3)
			dxWant, err := net.PathBackward(st, cot, perRow, true)
			if err != nil {
				t.Fatal(err)
			}
			groups := []int{0, 0, 2, 2, 2}
			checkGroupedBackward(t, func(g *nn.Grads[float64], needDx bool) (*tensor.Dense[float64], error) {
				return net.PathBackwardGrouped(st, cot, g, groups, 3, needDx)
			}, net.Params(), perRow, dxWant, groups, 3, 3, 1e-12)
		})
	}
}

type tieCount struct{ allZero, someZero, positive int }

// countTies counts the 2×2 windows of the first layer's output by their
// zeros.
func countTies(t *testing.T, net *nn.Sequential[float64], x *tensor.Dense[float64]) tieCount {
	y, _, err := net.Layers[0].Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	var c tieCount
	h, w := y.Shape[2], y.Shape[3]
	for pl := 0; pl < y.Shape[0]*y.Shape[1]; pl++ {
		for i := 0; i+1 < h; i += 2 {
			for j := 0; j+1 < w; j += 2 {
				zeros := 0
				for _, q := range [][2]int{{i, j}, {i, j + 1}, {i + 1, j}, {i + 1, j + 1}} {
					if y.Data[pl*h*w+q[0]*w+q[1]] == 0 {
						zeros++
					}
				}
				switch zeros {
				case 4:
					c.allZero++
				case 0:
					c.positive++
				default:
					c.someZero++
				}
			}
		}
	}
	return c
}

// TestPathLayerErrors: a layer with parameters but no path rules is an
// error in a container's path rules, not a silent evaluation at θ.
func TestPathLayerErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(89, 90))
	l := nn.NewLinear[float64]("l", 3, 2, false)
	initParams(rng, l)
	net := nn.NewSequential[float64](plainOnly{l})
	x := randInput(rng, 2, 3)
	if _, _, err := net.PathForward(x, nil); err == nil {
		t.Error("PathForward through a layer without path rules: want an error")
	}
	if _, _, err := net.PathJVP(x, nil, nil, nil); err == nil {
		t.Error("PathJVP through a layer without path rules: want an error")
	}
}

// plainOnly hides a layer's path rules: it has only nn.Layer's methods.
type plainOnly struct{ nn.Layer[float64] }
