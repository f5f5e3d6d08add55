package components

import (
	"context"
	"encoding/csv"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/experiments/expio/expiotest"
	"github.com/explaind/explaind/explain/job"
	"github.com/explaind/explaind/npy"
	"github.com/explaind/explaind/train"
)

func TestPhases(t *testing.T) {
	ms := []train.EpochMetrics{
		{Step: 1, TrainAcc: 0.2, ValAcc: 0.01}, {Step: 2, TrainAcc: 0.995, ValAcc: 0.02},
		{Step: 3, TrainAcc: 1, ValAcc: 0.5}, {Step: 4, TrainAcc: 1, ValAcc: 0.99}, {Step: 5, TrainAcc: 1, ValAcc: 1},
	}
	for _, c := range []struct {
		ms   []train.EpochMetrics
		stop float64
		want []Phase
	}{
		{ms, 0.99, []Phase{{"memorization", 0, 2}, {"circuit formation", 2, 3}, {"cleanup", 3, 4}, {"grokked", 4, 6}}},
		{ms, 1, []Phase{{"memorization", 0, 2}, {"circuit formation", 2, 3}, {"cleanup", 3, 5}, {"grokked", 5, 6}}},
		{ms[:3], 1, []Phase{{"memorization", 0, 2}, {"circuit formation", 2, 3}, {"cleanup", 3, 6}}},
		{ms[:2], 1, []Phase{{"memorization", 0, 2}, {"circuit formation", 2, 6}}},
		{ms[:1], 1, []Phase{{"memorization", 0, 6}}},
		{nil, 1, nil},
	} {
		if got := Phases(c.ms, c.stop, 6); !slices.Equal(got, c.want) {
			t.Errorf("Phases(%d metrics, stop %g) = %v, want %v", len(c.ms), c.stop, got, c.want)
		}
	}
	if p := phaseAt([]Phase{{"memorization", 0, 2}, {"cleanup", 2, 6}}, 6); p != "cleanup" {
		t.Errorf("the last step is in phase %q", p)
	}
	if s, err := heatmapSteps(nil, []int{50, 100, 150, 200, 250, 300, 333}); err != nil || !slices.Equal(s, []int{50, 150, 250, 333}) {
		t.Errorf("default heatmap steps %v (%v)", s, err)
	}
	if _, err := heatmapSteps([]int{60}, []int{50, 100}); err == nil || !strings.Contains(err.Error(), "[50 100]") {
		t.Errorf("a step that is no snapshot: %v", err)
	}
}

// TestHistoryAndTrainEPK runs `explaind epk` with the components and
// history presets on the validation samples and with components on
// training samples of a tiny run, then Do with both: the history's last
// snapshot gives the components' similarities, the train-to-validation
// matrix is the cosine of the two outputs' scores, and the new files are
// written.
func TestHistoryAndTrainEPK(t *testing.T) {
	root := t.TempDir()
	run := tinyRun(t)
	epk := filepath.Join(root, "epk")
	if _, err := job.Run(context.Background(), job.Options{Run: run, Out: epk, SnapshotEvery: 1,
		Presets: []string{epkfile.Components, epkfile.History}}); err != nil {
		t.Fatal(err)
	}
	tepk := filepath.Join(root, "train-epk")
	if _, err := job.Run(context.Background(), job.Options{Run: run, Out: tepk, TestSplit: "train",
		Presets: []string{epkfile.Components}}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(root, "out")
	var ticks, total int
	s, err := Do(context.Background(), Options{Run: run, EPK: epk, Out: out, TrainEPK: tepk, HistK: 3, Examples: 1, Top: 3,
		HistorySteps: []int{1, 3}, Progress: func(d, n int) { ticks, total = d, n }})
	if err != nil {
		t.Fatal(err)
	}
	if ticks != total {
		t.Errorf("progress %d of %d", ticks, total)
	}
	if s.History == nil || !slices.Equal(s.History.Steps, []int{1, 2, 3}) || !slices.Equal(s.History.Heatmaps, []int{1, 3}) {
		t.Fatalf("history %+v", s.History)
	}
	// The last snapshot covers every step: its statistics are the
	// components'. (history_gram is float32, the scores float32.)
	for _, g := range s.Groups {
		i := slices.IndexFunc(s.History.Points, func(p HistoryPoint) bool { return p.Step == 3 && p.Group == g.Name })
		if i < 0 {
			t.Errorf("no point of group %s at step 3", g.Name)
			continue
		}
		p := s.History.Points[i]
		if !(math.Abs(p.SameLabel-g.SameLabel) <= 1e-5) || !(math.Abs(p.DifferentLabel-g.DifferentLabel) <= 1e-5) || !(math.Abs(p.Mean-g.Mean) <= 1e-5) {
			t.Errorf("%s at the last snapshot: %+v; the components give %+v", g.Name, p, g.Stats)
		}
	}
	rows := readCSV(t, filepath.Join(out, "history.csv"))
	if len(rows) != 1+3*len(s.Groups) || rows[0][3] != "same_label" {
		t.Errorf("history.csv: %d rows, header %v", len(rows), rows[0])
	}
	// The train-to-validation matrix against the scores themselves.
	val, tr := testrunOpen(t, epk), testrunOpen(t, tepk)
	nv, nt := val.Manifest.Test.Count, tr.Manifest.Test.Count
	// The history read one Gram matrix at a time is the whole array's.
	h, err := readHistory(val, nv)
	if err != nil {
		t.Fatal(err)
	}
	whole, err := val.Array("history_gram")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]float64, nv*nv)
	for k := range h.steps {
		for g, name := range h.groups {
			m, err := h.at(k, name, buf)
			if err != nil {
				t.Fatal(err)
			}
			if i := (k*len(h.groups) + g) * nv * nv; !slices.Equal(m, whole.Data[i:i+nv*nv]) {
				t.Errorf("snapshot %d, group %s: the matrix read alone differs from the whole array's", k, name)
			}
		}
	}
	if m, err := h.at(0, "nope", buf); m != nil || err != nil {
		t.Errorf("a group the history lacks: %v, %v", m, err)
	}
	if err := h.close(); err != nil {
		t.Fatal(err)
	}
	if nt != 14 || s.TrainSamples != 14 {
		t.Fatalf("%d training samples explained, summary %d; want 14", nt, s.TrainSamples)
	}
	dot := make([]float64, nv*nt)
	nvv, ntt := make([]float64, nv), make([]float64, nt)
	for _, name := range val.Manifest.Tensors {
		a, _ := val.Array("scores/" + name)
		b, _ := tr.Array("scores/" + name)
		d := len(a.Data) / nv
		for i := range nv {
			for j := range nt {
				for k := range d {
					dot[i*nt+j] += a.Data[i*d+k] * b.Data[j*d+k]
				}
			}
			for k := range d {
				nvv[i] += a.Data[i*d+k] * a.Data[i*d+k]
			}
		}
		for j := range nt {
			for k := range d {
				ntt[j] += b.Data[j*d+k] * b.Data[j*d+k]
			}
		}
	}
	sim, err := npy.Read(filepath.Join(out, "train_similarity_all.npy"))
	if err != nil || !slices.Equal(sim.Shape, []int{nv, nt}) {
		t.Fatalf("train_similarity_all.npy: %v %v", sim, err)
	}
	for i := range nv {
		for j := range nt {
			want := dot[i*nt+j] / math.Sqrt(nvv[i]*ntt[j])
			if !(math.Abs(sim.Data[i*nt+j]-want) <= 1e-9) {
				t.Fatalf("train similarity (%d, %d) = %v, direct %v", i, j, sim.Data[i*nt+j], want)
			}
		}
	}
	// The nearest training samples' label match, from the matrix.
	vl, _ := val.Ints("test_labels")
	tl, _ := tr.Ints("test_labels")
	all := s.Train[slices.IndexFunc(s.Train, func(g TrainGroupSummary) bool { return g.Group == GroupAll })]
	match, chance := 0.0, 0.0
	for i := range nv {
		order := make([]int, nt)
		for j := range order {
			order[j] = j
		}
		slices.SortStableFunc(order, func(x, y int) int {
			return -cmpFloat(sim.Data[i*nt+x], sim.Data[i*nt+y])
		})
		for _, j := range order[:3] {
			if tl[j] == vl[i] {
				match += 1.0 / 3
			}
		}
		for _, l := range tl {
			if l == vl[i] {
				chance += 1.0 / float64(nt)
			}
		}
	}
	if all.K != 3 || !(math.Abs(all.NeighborLabelMatch-match/float64(nv)) <= 1e-12) || !(math.Abs(all.ChanceLabelMatch-chance/float64(nv)) <= 1e-12) {
		t.Errorf("train summary %+v; want match %g, chance %g", all, match/float64(nv), chance/float64(nv))
	}
	nb := readCSV(t, filepath.Join(out, "train_neighbors_linear1.csv"))
	if len(nb) != 1+nv*2*3 || nb[1][5] != "most" || nb[0][8] != "train_index" {
		t.Errorf("train_neighbors_linear1.csv: %d rows, first %v", len(nb), nb[1])
	}
	expiotest.CheckFiles(t, out, "history.csv", "history_similarity.png", "history_similarity.svg", "history_heatmaps.png",
		"history_heatmaps.svg", "train_heatmap_all_by_label.png", "train_heatmap_decoder_by_sum.svg", "train_similarity_linear2.npy")
	expiotest.CheckFiles(t, out, s.Files...)

	// Bad input, refused before any work.
	bad := filepath.Join(root, "bad")
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Run: run, EPK: epk, Out: bad, TrainEPK: epk}, `explains "val" samples, not training samples`},
		{Options{Run: run, EPK: tepk, Out: bad}, "explains training samples; give it as TrainEPK"},
		{Options{Run: run, EPK: epk, Out: bad, HistorySteps: []int{2, 5}}, "step 5 is not a snapshot"},
		{Options{Run: run, EPK: tepk, Out: bad, HistorySteps: []int{0}}, "invalid HistorySteps 0"},
		{Options{Run: run, EPK: filepath.Join(root, "val-only"), Out: bad, HistorySteps: []int{1}}, `no "history" preset`},
	} {
		if c.o.EPK == filepath.Join(root, "val-only") {
			if _, err := job.Run(context.Background(), job.Options{Run: run, Out: c.o.EPK, Presets: []string{epkfile.Components}, TestSize: 3}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := Do(context.Background(), c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v; want an error saying %q", c.o, err, c.want)
		}
		if _, err := os.Stat(bad); err == nil {
			t.Errorf("%+v: a refused command left its output directory", c.o)
			os.RemoveAll(bad)
		}
	}
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func testrunOpen(t *testing.T, dir string) *epkfile.Output {
	t.Helper()
	o, err := epkfile.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return o
}
