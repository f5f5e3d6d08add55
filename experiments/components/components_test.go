package components

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/experiments/expio/expiotest"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/lock"
	"github.com/explaind/explaind/internal/testrun"
	"github.com/explaind/explaind/npy"
	"github.com/explaind/explaind/train"
	"gonum.org/v1/gonum/mat"
)

func TestMain(m *testing.M) { testrun.Main(m) }

func randomRows(rng *rand.Rand, n, d int) []float64 {
	e := make([]float64, n*d)
	for i := range e {
		e[i] = rng.NormFloat64()
	}
	return e
}

func TestCosineMatchesADirectComputation(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	n, d := 7, 5
	e := randomRows(rng, n, d)
	copy(e[3*d:4*d], e[1*d:2*d]) // samples 1 and 3 are identical
	for j := range d {
		e[5*d+j] = 2.5 * e[1*d+j] // and 5 points the same way
		e[6*d+j] = 0              // 6 is zero
	}
	// The Gram matrix adds up over column blocks.
	rest := make([]float64, n*(d-2))
	for i := range n {
		copy(rest[i*(d-2):], e[i*d+2:(i+1)*d])
	}
	first := make([]float64, n*2)
	for i := range n {
		copy(first[i*2:], e[i*d:i*d+2])
	}
	g := make([]float64, n*n)
	AddGram(g, first, n, 2)
	AddGram(g, rest, n, d-2)
	s := Cosine(g, n)
	for i := range n {
		if s[i*n+i] != 1 {
			t.Errorf("diagonal %d: %v", i, s[i*n+i])
		}
		for j := range n {
			if s[i*n+j] != s[j*n+i] {
				t.Errorf("not symmetric at %d,%d", i, j)
			}
			if i == j || i == 6 || j == 6 {
				continue
			}
			var dot, ni, nj float64
			for k := range d {
				dot += e[i*d+k] * e[j*d+k]
				ni += e[i*d+k] * e[i*d+k]
				nj += e[j*d+k] * e[j*d+k]
			}
			if want := dot / math.Sqrt(ni*nj); !(math.Abs(s[i*n+j]-want) <= 1e-14) {
				t.Errorf("cos(%d,%d) = %v, direct %v", i, j, s[i*n+j], want)
			}
		}
	}
	for _, p := range [][2]int{{1, 3}, {1, 5}, {3, 5}} {
		if v := s[p[0]*n+p[1]]; !(math.Abs(v-1) <= 1e-15) {
			t.Errorf("samples %v with identical directions: similarity %v", p, v)
		}
	}
	if s[6*n+0] != 0 || s[2*n+6] != 0 {
		t.Errorf("a zero embedding has similarity %v, %v", s[6*n], s[2*n+6])
	}
}

func TestPCAGramMatchesStatPC(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	for _, nd := range [][2]int{{12, 30}, {30, 5}, {9, 9}} {
		n, d := nd[0], nd[1]
		e := randomRows(rng, n, d)
		for i := range n { // a dominant direction, so the components are well separated
			e[i*d] += 3 * float64(i)
			e[i*d+1] -= 1.5 * float64(i%4)
		}
		direct, err := PCAEmbeddings(mat.NewDense(n, d, e))
		if err != nil {
			t.Fatal(err)
		}
		g := make([]float64, n*n)
		AddGram(g, e, n, d)
		viaGram, err := PCAGram(g, n)
		if err != nil {
			t.Fatal(err)
		}
		for c := range 2 {
			if !(math.Abs(direct.Explained[c]-viaGram.Explained[c]) <= 1e-10) {
				t.Errorf("%v: explained variance %d: stat.PC %v, Gram %v", nd, c, direct.Explained[c], viaGram.Explained[c])
			}
			for i := range n {
				if !(math.Abs(direct.Scores[i][c]-viaGram.Scores[i][c]) <= 1e-8) {
					t.Errorf("%v: score %d of sample %d: stat.PC %v, Gram %v", nd, c, i, direct.Scores[i][c], viaGram.Scores[i][c])
				}
			}
		}
		if direct.Explained[0] < direct.Explained[1] || !(direct.Explained[0]+direct.Explained[1] <= 1+1e-12) {
			t.Errorf("%v: explained %v", nd, direct.Explained)
		}
	}
}

func TestGroups(t *testing.T) {
	names := []string{"input_emb.weight", "head1_encoder.weight", "head2_encoder.weight", "head1_decoder.weight", "head2_decoder.weight",
		"linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias", "decoder.weight", "headx_encoder.weight"}
	sizes := []int{10, 2, 2, 3, 3, 20, 4, 20, 5, 10, 1}
	gs := Groups(names, sizes)
	want := []struct {
		name string
		dim  int
	}{{GroupEmbedding, 10}, {GroupEncoders, 4}, {GroupDecoders, 6}, {GroupLinear1, 24}, {GroupLinear2, 25}, {GroupDecoder, 10}, {GroupAll, 80}}
	if len(gs) != len(want) {
		t.Fatalf("groups %+v", gs)
	}
	for i, w := range want {
		if gs[i].Name != w.name || gs[i].Dim != w.dim {
			t.Errorf("group %d: %s of %d, want %s of %d", i, gs[i].Name, gs[i].Dim, w.name, w.dim)
		}
	}
	if groupOf("headx_encoder.weight") != "" || groupOf("head12_decoder.weight") != GroupDecoders {
		t.Error("head names misclassified")
	}
}

func TestNeighborsAndStats(t *testing.T) {
	// Four samples, labels 0 0 1 1.
	sim := []float64{
		1, 0.9, 0.1, -0.5,
		0.9, 1, 0.3, 0.2,
		0.1, 0.3, 1, 0.8,
		-0.5, 0.2, 0.8, 1,
	}
	most, least := Nearest(sim, 4, 1, 2)
	if !slices.Equal(most, []Neighbor{{0, 0.9}, {2, 0.3}}) || !slices.Equal(least, []Neighbor{{3, 0.2}, {2, 0.3}}) {
		t.Errorf("neighbours of 1: most %v, least %v", most, least)
	}
	st := Similarities(sim, []int{0, 0, 1, 1}, 1)
	if !(math.Abs(st.SameLabel-0.85) <= 1e-15) || !(math.Abs(st.DifferentLabel-0.025) <= 1e-15) || !(math.Abs(st.Mean-1.8/6) <= 1e-15) {
		t.Errorf("stats %+v: want same 0.85, different 0.025, mean 0.3", st)
	}
	if st.NeighborLabelMatch != 1 || !(math.Abs(st.ChanceLabelMatch-1.0/3) <= 1e-15) || st.SameLabelPairs != 2 {
		t.Errorf("neighbour label match %v (chance %v), %d same-label pairs", st.NeighborLabelMatch, st.ChanceLabelMatch, st.SameLabelPairs)
	}
	o := Orders([]Sample{{Pos: 0, A: 3, B: 4, Label: 0}, {Pos: 1, A: 0, B: 1, Label: 1}, {Pos: 2, A: 2, B: 2, Label: 4}})
	if o[0].Name != "sum" || !slices.Equal(o[0].Perm, []int{1, 2, 0}) || !slices.Equal(o[0].Keys, []int{1, 4, 7}) ||
		!slices.Equal(o[1].Perm, []int{0, 1, 2}) || !slices.Equal(o[2].Perm, []int{1, 2, 0}) || !slices.Equal(o[3].Perm, []int{1, 2, 0}) {
		t.Errorf("orders %+v", o)
	}
}

// tinyRun returns a modulo run with p = 7, 14 training and 12 validation
// samples (testrun.Modulo at learning rate 1e-2, 3 steps).
func tinyRun(t *testing.T) string {
	t.Helper()
	c := testrun.Modulo(3, 2)
	c.Modulo.TrainSize, c.Modulo.ValSize = 14, 12
	c.Optimizer.LR = 1e-2
	return testrun.Train[float32](t, c)
}

// writeEPK fabricates a components output for the run over the validation
// samples idx, with scores from score(tensor, position, element).
func writeEPK(t *testing.T, run, dir string, presets []string, idx []int, score func(name string, x, j int) float64) {
	t.Helper()
	m, err := history.ReadManifest(run)
	if err != nil {
		t.Fatal(err)
	}
	var cfg train.Config
	json.Unmarshal(m.Config, &cfg)
	d, err := train.LoadData[float32](&cfg)
	if err != nil {
		t.Fatal(err)
	}
	em := epkfile.Manifest{Run: run, RunFingerprint: epkfile.RunFingerprint(m), Presets: presets, Test: epkfile.TestSet{Split: "val", Count: len(idx)}, Classes: d.Val.Classes}
	for _, p := range m.Params {
		em.Tensors = append(em.Tensors, p.Name)
		em.TensorShapes = append(em.TensorShapes, p.Shape)
	}
	w, err := epkfile.NewWriter(dir, em)
	if err != nil {
		t.Fatal(err)
	}
	ix, lab := make([]int64, len(idx)), make([]int64, len(idx))
	for i, x := range idx {
		ix[i], lab[i] = int64(x), int64(d.Val.Labels[x])
	}
	if err := epkfile.Write(w, "test_indices", ix, epkfile.ArrayInfo{Shape: []int{len(idx)}}); err != nil {
		t.Fatal(err)
	}
	if err := epkfile.Write(w, "test_labels", lab, epkfile.ArrayInfo{Shape: []int{len(idx)}}); err != nil {
		t.Fatal(err)
	}
	for _, p := range m.Params {
		n := 1
		for _, s := range p.Shape {
			n *= s
		}
		v := make([]float64, len(idx)*n)
		for x := range idx {
			for j := range n {
				v[x*n+j] = score(p.Name, x, j)
			}
		}
		if err := epkfile.Write(w, "scores/"+p.Name, v, epkfile.ArrayInfo{Shape: append([]int{len(idx)}, p.Shape...), Preset: epkfile.Components}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WriteManifest(true); err != nil {
		t.Fatal(err)
	}
}

func TestDo(t *testing.T) {
	root := t.TempDir()
	run := tinyRun(t)
	m, _ := history.ReadManifest(run)
	var cfg train.Config
	json.Unmarshal(m.Config, &cfg)
	d, err := train.LoadData[float64](&cfg)
	if err != nil {
		t.Fatal(err)
	}
	idx := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
	// linear1's scores depend on the label only: samples with equal labels
	// have identical linear1 embeddings. Everything else is random.
	rng := rand.New(rand.NewPCG(3, 3))
	noise := map[string][]float64{}
	score := func(name string, x, j int) float64 {
		if strings.HasPrefix(name, "linear1.") {
			l := d.ModuloVal.Pairs[idx[x]].Label
			return math.Sin(float64(7*j+l*l) + float64(l))
		}
		key := name + "/" + string(rune('a'+x))
		for len(noise[key]) <= j {
			noise[key] = append(noise[key], rng.NormFloat64())
		}
		return noise[key][j]
	}
	epk := filepath.Join(root, "epk")
	writeEPK(t, run, epk, []string{epkfile.Components}, idx, score)
	out := filepath.Join(root, "out")
	var ticks, total int
	s, err := Do(context.Background(), Options{Run: run, EPK: epk, Out: out, HistK: 4, Examples: 2, Progress: func(d, n int) { ticks, total = d, n }})
	if err != nil {
		t.Fatal(err)
	}
	if ticks != total || total != len(m.Params)+7 {
		t.Errorf("progress %d of %d, want %d", ticks, total, len(m.Params)+7)
	}
	if s.Samples != 12 || s.P != 7 || len(s.Groups) != 7 || s.Top != 5 || len(s.Examples) != 2 {
		t.Fatalf("summary %+v", s)
	}
	byName := map[string]GroupSummary{}
	for _, g := range s.Groups {
		byName[g.Name] = g
	}
	l1 := byName[GroupLinear1]
	if l1.SameLabelPairs == 0 || !(math.Abs(l1.SameLabel-1) <= 1e-12) || l1.NeighborLabelMatch < l1.ChanceLabelMatch {
		t.Errorf("linear1 (label-only embeddings): %+v; want same-label similarity 1", l1.Stats)
	}
	if byName[GroupEmbedding].PCAMethod != "gram" || byName[GroupAll].Dim != 0+sumSizes(m) {
		t.Errorf("groups %+v", s.Groups)
	}
	// The whole model's matrix matches a direct computation from the
	// scores, is symmetric and has a unit diagonal.
	sim, err := npy.Read(filepath.Join(out, "similarity_all.npy"))
	if err != nil {
		t.Fatal(err)
	}
	n := 12
	if !slices.Equal(sim.Shape, []int{n, n}) {
		t.Fatalf("similarity_all shape %v", sim.Shape)
	}
	emb := make([][]float64, n)
	for x := range n {
		for _, p := range m.Params {
			for j := range product(p.Shape) {
				emb[x] = append(emb[x], score(p.Name, x, j))
			}
		}
	}
	for i := range n {
		if sim.Data[i*n+i] != 1 {
			t.Errorf("diagonal %d: %v", i, sim.Data[i*n+i])
		}
		for j := range n {
			var dot, a, b float64
			for k := range emb[i] {
				dot += emb[i][k] * emb[j][k]
				a += emb[i][k] * emb[i][k]
				b += emb[j][k] * emb[j][k]
			}
			if v := sim.Data[i*n+j]; v != sim.Data[j*n+i] || (i != j && !(math.Abs(v-dot/math.Sqrt(a*b)) <= 1e-12)) {
				t.Errorf("similarity %d,%d = %v, direct %v", i, j, v, dot/math.Sqrt(a*b))
			}
		}
	}
	l1sim, _ := npy.Read(filepath.Join(out, "similarity_linear1.npy"))
	for i := range n {
		for j := range n {
			if d.ModuloVal.Pairs[i].Label == d.ModuloVal.Pairs[j].Label && !(math.Abs(l1sim.Data[i*n+j]-1) <= 1e-12) {
				t.Errorf("linear1: samples %d and %d share their embedding, similarity %v", i, j, l1sim.Data[i*n+j])
			}
		}
	}
	f, _ := os.Open(filepath.Join(out, "neighbors_all.csv"))
	rows, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil || len(rows) != 1+n*2*5 || rows[1][5] != "most" || rows[1][6] != "1" {
		t.Errorf("neighbors_all.csv: %d rows (%v)", len(rows), err)
	}
	expiotest.CheckFiles(t, out, "heatmap_all_by_sum.png", "heatmap_linear1_by_label.svg", "heatmap_decoder_by_a.png", "heatmap_embedding_by_b.png",
		"neighbor_hist_all.png", "pca_attention_encoders_by_label.svg", "pca_linear2_by_sum.png", "samples.csv", "summary.json")
	expiotest.CheckFiles(t, out, s.Files...)

	// Errors before any work.
	other := filepath.Join(root, "other")
	writeEPK(t, run, other, []string{epkfile.Validation}, idx, score)
	bad := filepath.Join(root, "bad")
	if _, err := Do(context.Background(), Options{Run: run, EPK: other, Out: bad}); err == nil || !strings.Contains(err.Error(), "explaind epk") || !strings.Contains(err.Error(), "components") {
		t.Errorf("missing preset: %v", err)
	}
	if _, err := Do(context.Background(), Options{Run: run, EPK: epk, Out: bad, Top: -1}); err == nil {
		t.Error("--top -1 was accepted")
	}
	if _, err := os.Stat(bad); err == nil {
		t.Error("a refused command left its output directory")
	}
	// An --out another writer holds.
	held, err := lock.Dir(bad)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	want := fmt.Sprintf("components: another explaind process (PID %d) is writing to %s; wait for it to finish or stop it", os.Getpid(), bad)
	if _, err := Do(context.Background(), Options{Run: run, EPK: epk, Out: bad}); err == nil || err.Error() != want {
		t.Errorf("a locked output directory: %v; want %q", err, want)
	}
}

func product(shape []int) int {
	n := 1
	for _, s := range shape {
		n *= s
	}
	return n
}

func sumSizes(m *history.Manifest) int {
	n := 0
	for _, p := range m.Params {
		n += product(p.Shape)
	}
	return n
}

// TestKeyTicksNeverOverlap checks the heatmaps' axis ticks on keys that
// jump past several round values: one tick per position, spaced by at
// least a twelfth of the axis, each labelled with the key of its sample.
func TestKeyTicksNeverOverlap(t *testing.T) {
	keys := []int{3, 5, 8, 11, 12, 14, 19, 21, 22, 28, 45, 46, 47, 51, 52, 53, 58}
	ts := keyTicks(keys).Ticks(0, float64(len(keys)))
	if len(ts) < 3 {
		t.Fatalf("only %d ticks for keys 3..58", len(ts))
	}
	gap := max(1, len(keys)/12)
	for i, tk := range ts {
		pos := int(tk.Value)
		if want := strconv.Itoa(keys[pos]); tk.Label != want {
			t.Errorf("tick %d at sample %d is labelled %q, want its key %s", i, pos, tk.Label, want)
		}
		if i > 0 && pos-int(ts[i-1].Value) < gap {
			t.Errorf("ticks %d and %d are %d samples apart (labels %q, %q), want ≥ %d", i-1, i, pos-int(ts[i-1].Value), ts[i-1].Label, tk.Label, gap)
		}
	}
}
