package epk_test

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/models"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/optim"
	"github.com/explaind/explaind/tensor"
	"github.com/explaind/explaind/weights"
)

// The models implement the interfaces the evaluator needs.
var (
	_ epk.SwitchModel[float64] = (*models.Modulo[float64])(nil)
	_ epk.SwitchModel[float32] = (*models.Modulo[float32])(nil)
)

// oracleDir is testdata/golden-epk, or the directory named by
// EXPLAIND_GOLDEN_EPK_DIR.
func oracleDir() string {
	if dir := os.Getenv("EXPLAIND_GOLDEN_EPK_DIR"); dir != "" {
		return dir
	}
	return filepath.Join("..", "testdata", "golden-epk")
}

// cnnArch is the architecture name of models.ResNet9 in the fixtures'
// metadata.
const cnnArch = "resnet9_nobn"

// oracleFixtures returns every EPK oracle fixture (*.safetensors) in
// oracleDir whose metadata names arch, or every fixture for arch "", and
// fails the test when there is none: a test of the fixtures must hold for
// each of them.
func oracleFixtures(t testing.TB, arch string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(oracleDir(), "*.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, path := range files {
		if arch != "" {
			f, err := weights.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			if f.Metadata()["arch"] != arch {
				continue
			}
		}
		out = append(out, path)
	}
	if len(out) == 0 {
		what := "EPK oracle fixture"
		if arch != "" {
			what += " of arch " + arch
		}
		t.Fatalf("no *.safetensors %s in %s", what, oracleDir())
	}
	return out
}

// eachOracle runs fn as a subtest, named by the file, on every EPK
// oracle fixture of arch (see oracleFixtures), logging its path; under
// -short, on the first fixture only.
func eachOracle(t *testing.T, arch string, fn func(t *testing.T, path string)) {
	t.Helper()
	paths := oracleFixtures(t, arch)
	if testing.Short() && len(paths) > 1 {
		// -short (make race: the race detector makes these ~15× slower)
		// checks the first fixture only; the plain test run checks all.
		t.Logf("-short: checking 1 of the %d fixtures", len(paths))
		paths = paths[:1]
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			t.Logf("checking EPK oracle fixture %s", path)
			fn(t, path)
		})
	}
}

// TestGoldenEPK checks every EPK oracle fixture in oracleDir, by the
// architecture its metadata names, and fails if there is none.
func TestGoldenEPK(t *testing.T) {
	eachOracle(t, "", func(t *testing.T, path string) {
		f, err := weights.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		switch arch := f.Metadata()["arch"]; arch {
		case models.ModuloArch:
			checkModuloOracle(t, path)
		case cnnArch:
			checkCNNOracleSubset(t, path)
		default:
			t.Fatalf("unknown arch %q in the fixture's metadata", arch)
		}
	})
}

func metaFloats(t testing.TB, f *weights.File, key string) []float64 {
	t.Helper()
	s, ok := f.Metadata()[key]
	if !ok {
		t.Fatalf("metadata has no %q", key)
	}
	var out []float64
	for _, part := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(part), 64)
		if err != nil {
			t.Fatalf("metadata %q = %q: %v", key, s, err)
		}
		out = append(out, v)
	}
	return out
}

func getF64(t testing.TB, f *weights.File, name string) *tensor.Dense[float64] {
	t.Helper()
	v, err := weights.Get[float64](f, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// inputOf reads an input tensor stored as floats or as integer token ids.
func inputOf(t testing.TB, f *weights.File, name string) *tensor.Dense[float64] {
	t.Helper()
	if v, err := weights.Get[float64](f, name); err == nil {
		return v
	}
	ids, shape, err := f.Ints(name)
	if err != nil {
		t.Fatal(err)
	}
	x := tensor.New[float64](shape...)
	for i, v := range ids {
		x.Data[i] = float64(v)
	}
	return x
}

func ints(t testing.TB, f *weights.File, name string) ([]int, []int) {
	t.Helper()
	v, shape, err := f.Ints(name)
	if err != nil {
		t.Fatal(err)
	}
	return v, shape
}

// slab returns entry i of the first axis of a.
func slab(a *tensor.Dense[float64], i int) []float64 {
	n := len(a.Data) / a.Shape[0]
	return a.Data[i*n : (i+1)*n]
}

// run is a training run replayed from an oracle fixture: the updates of
// every step and the test batch.
type run struct {
	f      *weights.File
	model  nn.Layer[float64]
	params []*nn.Param[float64]
	xTrain *tensor.Dense[float64]
	yTrain []int
	xTest  *tensor.Dense[float64]
	bs     [][]int
	lr     []float64
	ups    []*epk.Update[float64]
	grads  []map[string]*tensor.Dense[float64] // g_s, the steps' mean loss gradients
}

// replay trains model from params/step0 with opt on the recorded batches
// and learning rates, checks every params/step<s>, and splits every step.
func replay(t testing.TB, f *weights.File, model nn.Layer[float64], opt optim.Optimizer[float64], sp epk.Splitter[float64]) *run {
	t.Helper()
	r := &run{f: f, model: model, params: model.Params()}
	if err := weights.LoadParams(f, "params/step0/", r.params); err != nil {
		t.Fatal(err)
	}
	r.xTrain = inputOf(t, f, "train/input")
	r.yTrain, _ = ints(t, f, "train/target")
	r.xTest = inputOf(t, f, "test/input")
	bflat, bshape := ints(t, f, "batches")
	r.lr = getF64(t, f, "lr").Data
	per := len(r.xTrain.Data) / r.xTrain.Shape[0]
	worst := 0.0
	for s := 0; s < bshape[0]; s++ {
		idx := bflat[s*bshape[1] : (s+1)*bshape[1]]
		r.bs = append(r.bs, idx)
		xb := tensor.New[float64](append([]int{len(idx)}, r.xTrain.Shape[1:]...)...)
		yb := make([]int, len(idx))
		for i, k := range idx {
			copy(xb.Data[i*per:(i+1)*per], r.xTrain.Data[k*per:(k+1)*per])
			yb[i] = r.yTrain[k]
		}
		before := snapshot(r.params)
		optBefore := opt.State()
		g, err := epk.MeanGradient(model, xb, yb)
		if err != nil {
			t.Fatal(err)
		}
		grads := &nn.Grads[float64]{Mode: nn.Summed, Of: map[*nn.Param[float64]]*tensor.Dense[float64]{}}
		for _, p := range r.params {
			grads.Of[p] = g[p.Name]
		}
		if err := opt.Step(r.params, grads, r.lr[s]); err != nil {
			t.Fatal(err)
		}
		after := snapshot(r.params)
		for _, p := range after {
			want := getF64(t, f, fmt.Sprintf("params/step%d/%s", s+1, p.Name))
			d, _ := tensor.MaxAbsDiff(p.Value.Data, want.Data)
			worst = math.Max(worst, d)
		}
		u, err := sp.Split(epk.StepInput[float64]{Step: s, LR: r.lr[s], Before: before, After: after, OptBefore: optBefore, Grad: g})
		if err != nil {
			t.Fatal(err)
		}
		r.ups = append(r.ups, u)
		r.grads = append(r.grads, g)
	}
	t.Logf("replayed %d steps: parameters match params/step1..%d to %.2g (max abs)", len(r.ups), len(r.ups), worst)
	if !(worst <= 1e-12) {
		t.Errorf("replayed parameters differ from the oracle's by %.3g (max abs), want ≤ 1e-12", worst)
	}
	return r
}

func snapshot(ps []*nn.Param[float64]) []*nn.Param[float64] {
	out := make([]*nn.Param[float64], len(ps))
	for i, p := range ps {
		out[i] = &nn.Param[float64]{Name: p.Name, Value: p.Value.Clone()}
	}
	return out
}

func moduloRunAt(t testing.TB, path string) (*run, *models.Modulo[float64]) {
	t.Helper()
	f, err := weights.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := models.ModuloConfigFromMetadata(f.Metadata())
	if err != nil {
		t.Fatal(err)
	}
	m, err := models.NewModulo[float64](cfg)
	if err != nil {
		t.Fatal(err)
	}
	betas := metaFloats(t, f, "betas")
	eps := metaFloats(t, f, "eps")[0]
	wd := metaFloats(t, f, "weight_decay")[0]
	opt, err := optim.NewAdamW[float64](betas[0], betas[1], eps, wd)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := epk.NewAdamWSplitter(opt)
	if err != nil {
		t.Fatal(err)
	}
	return replay(t, f, m, opt, sp), m
}

// check compares got with want (relative max-norm error) and reports it.
func check(t *testing.T, what string, got, want []float64, tol float64) float64 {
	t.Helper()
	d, s := tensor.MaxAbsDiff(got, want)
	rel := d / math.Max(s, 1e-300)
	if !(rel <= tol) {
		t.Errorf("%s: relative error %.3g (abs %.3g, scale %.3g), want ≤ %.0e", what, rel, d, s, tol)
	}
	return rel
}

// oracleResidual returns the oracle's own identity residual at step s,
// max |step_data + step_reg − step_change| (AdamW has no update residual):
// how far its Gauss–Legendre sums on the smooth pieces are from exact.
func oracleResidual(s int, stepChange, stepData, stepReg *tensor.Dense[float64]) float64 {
	c, d, r := slab(stepChange, s), slab(stepData, s), slab(stepReg, s)
	worst := 0.0
	for i := range c {
		e := math.Abs(d[i] + r[i] - c[i])
		if math.IsNaN(e) {
			return e // no slack for a broken fixture
		}
		worst = math.Max(worst, e)
	}
	return worst
}

// checkModuloOracle checks the whole chain against the float64 oracle of
// a 6-step AdamW run of the tiny modulo transformer: the replayed
// parameters, the update split, and then twice the step contributions.
//
// First with the oracle's own rule (6-point Gauss–Legendre on every
// smooth piece between the located switches, no piece check): the same
// sums on the same pieces, so the step change, data, regularization and
// per-tensor contributions must agree to 1e-11 relative (they do to about
// 2e-14; moving every located switch by 1e-10 fails every fixture, by
// 1e-11 one of the three); so must the piece counts, the per-parameter
// scores and (through a reverse sweep written here with the splitter's
// kernel coefficients) the data kernel.
//
// Then with the piece check (pieces whose Gauss–Legendre estimate misses
// f(end) − f(start) are split), which makes our sums exact where a piece
// was too long for 6 nodes: its completeness must be within 1e-11, its
// data and regularization contributions agree with the oracle's to 1e-11
// relative plus the oracle's own identity residual at that step (the
// oracle has no piece check: in seed 21's first step its data + reg
// misses its step_change by 1.3e-11), and the end-to-end identity
// f0 + Σ(data + reg + resid) = fN must hold to 1e-11.
func checkModuloOracle(t *testing.T, path string) {
	r, m := moduloRunAt(t, path)
	f := r.f
	for s, u := range r.ups {
		if !(u.MaxResid <= 1e-15) {
			t.Errorf("step %d: update-reconstruction residual %.3g, want ≤ 1e-15 in float64", s, u.MaxResid)
		}
	}
	const tol = 1e-11
	oracleRule := epk.Quadrature{Rule: epk.Exact, Points: 6, SkipCheck: true}
	ev, err := epk.NewEvaluator[float64](m, epk.Options{Quadrature: oracleRule, PerTensor: true})
	if err != nil {
		t.Fatal(err)
	}
	checked, err := epk.NewEvaluator[float64](m, epk.Options{Quadrature: epk.Quadrature{Rule: epk.Exact, Points: 6}})
	if err != nil {
		t.Fatal(err)
	}
	stepChange := getF64(t, f, "step_change")
	stepData := getF64(t, f, "step_data")
	stepReg := getF64(t, f, "step_reg")
	pieces, _ := ints(t, f, "pieces")
	B := r.xTest.Shape[0]
	C := m.Classes()
	var scores epk.Scores[float64]
	total := tensor.New[float64](B, C)
	var phis []*epk.Features[float64]
	var worstData, worstReg, worstTensor, worstOwn, worstCData, worstCReg, worstComp float64
	agree, nPieces := 0, 0
	for s, u := range r.ups {
		res, err := ev.Evaluate(u, r.xTest, epk.Request[float64]{Features: true})
		if err != nil {
			t.Fatal(err)
		}
		phis = append(phis, res.Features)
		if err := scores.Add(res.Features, u); err != nil {
			t.Fatal(err)
		}
		check(t, fmt.Sprintf("step %d: exact change f(θ_{s+1})−f(θ_s)", s), res.Change.Data, slab(stepChange, s), 1e-12)
		worstData = math.Max(worstData, check(t, fmt.Sprintf("step %d: data contributions (oracle's rule)", s), res.Data.Data, slab(stepData, s), tol))
		worstReg = math.Max(worstReg, check(t, fmt.Sprintf("step %d: regularization contributions (oracle's rule)", s), res.Reg.Data, slab(stepReg, s), tol))
		for j, name := range res.TensorNames {
			want := getF64(t, f, "tensor_contrib/"+name)
			worstTensor = math.Max(worstTensor, check(t, fmt.Sprintf("step %d: tensor_contrib/%s (oracle's rule)", s, name), res.Tensor[j].Data, slab(want, s), tol))
		}
		for b := 0; b < B; b++ {
			nPieces++
			if res.Plan.Pieces[b] == pieces[s*B+b] {
				agree++
			}
		}

		// The piece-checked rule: exact, and off from the oracle by no
		// more than the oracle's own residual.
		rc, err := checked.Contributions(u, r.xTest, nil)
		if err != nil {
			t.Fatal(err)
		}
		own := oracleResidual(s, stepChange, stepData, stepReg)
		worstOwn = math.Max(worstOwn, own)
		_, ds := tensor.MaxAbsDiff(rc.Data.Data, slab(stepData, s))
		_, rs := tensor.MaxAbsDiff(rc.Reg.Data, slab(stepReg, s))
		worstCData = math.Max(worstCData, check(t, fmt.Sprintf("step %d: data contributions (piece check)", s), rc.Data.Data, slab(stepData, s), tol+own/math.Max(ds, 1e-300)))
		worstCReg = math.Max(worstCReg, check(t, fmt.Sprintf("step %d: regularization contributions (piece check)", s), rc.Reg.Data, slab(stepReg, s), tol+own/math.Max(rs, 1e-300)))
		worstComp = math.Max(worstComp, rc.MaxCompleteness)
		if !(rc.MaxCompleteness <= 1e-11) {
			t.Errorf("step %d: completeness residual %.3g with the piece check, want ≤ 1e-11", s, rc.MaxCompleteness)
		}
		for i := range total.Data {
			total.Data[i] += rc.Data.Data[i] + rc.Reg.Data[i] + rc.Resid.Data[i]
		}
		t.Logf("step %d: max |change| %.3g; oracle's rule: completeness %.2g (the oracle's own %.2g), pieces per sample %v (oracle %v), %d JVP rows with %d tangents, %d+%d locating rows, %d root rounds; piece check: completeness %.2g, %d JVP rows",
			s, res.MaxChange, res.MaxCompleteness, own, res.Plan.Pieces, pieces[s*B:(s+1)*B], res.Stats.JVPRows, res.Stats.Tangents,
			res.Stats.DerivRows, res.Stats.ForwardRows, res.Stats.RootIters, rc.MaxCompleteness, rc.Stats.JVPRows)
	}
	t.Logf("oracle's rule against the oracle (relative): data %.2g, reg %.2g, tensor_contrib %.2g", worstData, worstReg, worstTensor)
	t.Logf("piece check against the oracle (relative): data %.2g, reg %.2g; completeness %.2g, the oracle's own identity residual %.2g (abs)", worstCData, worstCReg, worstComp, worstOwn)
	t.Logf("piece counts agree with the oracle for %d of %d (step, sample) pairs", agree, nPieces)
	if agree != nPieces {
		t.Errorf("piece counts differ from the oracle's for %d of %d (step, sample) pairs", nPieces-agree, nPieces)
	}

	// f0 + Σ_s (data + reg + resid) = fN.
	f0, fN := getF64(t, f, "f0"), getF64(t, f, "fN")
	end := make([]float64, len(f0.Data))
	for i := range end {
		end[i] = f0.Data[i] + total.Data[i]
	}
	e := check(t, "f0 + Σ_s (data + reg + resid) against fN", end, fN.Data, tol)
	t.Logf("f0 + Σ_s (data + reg + resid) = fN to %.2g (relative)", e)

	// Per-parameter scores (classes kept), summed over steps.
	worst := 0.0
	for j, name := range scores.Names {
		want := getF64(t, f, "param_scores/"+name)
		worst = math.Max(worst, check(t, "param_scores/"+name, scores.Delta[j].Data, want.Data, tol))
		dr := make([]float64, len(want.Data))
		for i := range dr {
			dr[i] = scores.Data[j].Data[i] + scores.Reg[j].Data[i]
		}
		check(t, "param_scores/"+name+" (data + reg parts)", dr, want.Data, tol)
	}
	t.Logf("param_scores agree to %.2g (relative, per tensor)", worst)

	checkDataKernel(t, r, phis, tol)
}

// checkDataKernel runs the reverse-time sweep of DESIGN.md §2 with the
// updates' kernel coefficients and compares it with the oracle's
// data_kernel [test, C, train].
func checkDataKernel(t *testing.T, r *run, phis []*epk.Features[float64], tol float64) {
	t.Helper()
	want := getF64(t, r.f, "data_kernel")
	B, C, N := want.Shape[0], want.Shape[1], want.Shape[2]
	got := tensor.New[float64](B, C, N)
	params := r.params
	Q := make([][]float64, len(params)) // per parameter, [B*C, size]
	per := len(r.xTrain.Data) / r.xTrain.Shape[0]
	for s := len(r.ups) - 1; s >= 0; s-- {
		u := r.ups[s]
		phi := phis[s]
		for j, p := range params {
			size := len(p.Value.Data)
			if Q[j] == nil {
				Q[j] = make([]float64, B*C*size)
			}
			a := u.Kernel.A[j].Data
			for row := 0; row < B*C; row++ {
				q := Q[j][row*size : (row+1)*size]
				ph := phi.Phi[j].Data[row*size : (row+1)*size]
				for i := range q {
					q[i] = a[i]*ph[i] + u.Kernel.Beta*q[i]
				}
			}
		}
		// Training samples' output gradients ∇θ f_{y_k}(θ_s; x_k).
		idx := r.bs[s]
		xb := tensor.New[float64](append([]int{len(idx)}, r.xTrain.Shape[1:]...)...)
		for i, k := range idx {
			copy(xb.Data[i*per:(i+1)*per], r.xTrain.Data[k*per:(k+1)*per])
		}
		for j, p := range params {
			copy(p.Value.Data, u.Before[j].Data)
		}
		y, st, err := r.model.Forward(xb)
		if err != nil {
			t.Fatal(err)
		}
		dy := tensor.New[float64](y.Shape...)
		for i, k := range idx {
			dy.Data[i*C+r.yTrain[k]] = 1
		}
		g := nn.NewGrads(nn.PerRow, params, len(idx))
		if _, err := r.model.Backward(st, dy, g, false); err != nil {
			t.Fatal(err)
		}
		for j, p := range params {
			size := len(p.Value.Data)
			w := u.Kernel.E[j] / float64(len(idx))
			for i, k := range idx {
				gk := g.Of[p].Data[i*size : (i+1)*size]
				for row := 0; row < B*C; row++ {
					q := Q[j][row*size : (row+1)*size]
					var dot float64
					for e, v := range gk {
						dot += q[e] * v
					}
					got.Data[row*N+k] += w * dot
				}
			}
		}
	}
	e := check(t, "data_kernel (reverse sweep with the kernel coefficients)", got.Data, want.Data, tol)
	t.Logf("data_kernel from the reverse sweep agrees to %.2g (relative)", e)
}

func snapshot32(ps []*nn.Param[float32]) []*nn.Param[float32] {
	out := make([]*nn.Param[float32], len(ps))
	for i, p := range ps {
		out[i] = &nn.Param[float32]{Name: p.Name, Value: p.Value.Clone()}
	}
	return out
}

func gradsOf[T tensor.Float](ps []*nn.Param[T], g map[string]*tensor.Dense[T]) *nn.Grads[T] {
	grads := &nn.Grads[T]{Mode: nn.Summed, Of: map[*nn.Param[T]]*tensor.Dense[T]{}}
	for _, p := range ps {
		grads.Of[p] = g[p.Name]
	}
	return grads
}
