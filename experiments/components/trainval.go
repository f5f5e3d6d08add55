package components

import (
	"bytes"
	"cmp"
	"context"
	"encoding/csv"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/gemm"
	"github.com/explaind/explaind/internal/atomicfile"
	"github.com/explaind/explaind/npy"
	"gonum.org/v1/plot/vg"
)

// TrainGroupSummary compares validation with training samples in one
// group's influence space.
type TrainGroupSummary struct {
	Group string `json:"group"`
	// K is the number of nearest training samples of each validation
	// sample; NeighborLabelMatch the fraction of them that share its
	// label, averaged over validation samples, and ChanceLabelMatch the
	// same for K training samples drawn at random.
	K                  int     `json:"k"`
	NeighborLabelMatch float64 `json:"neighbor_label_match"`
	ChanceLabelMatch   float64 `json:"chance_label_match"`
	// SameLabel and DifferentLabel are the mean cosine similarity of
	// validation–training pairs with equal and with different labels.
	SameLabel      float64 `json:"same_label"`
	DifferentLabel float64 `json:"different_label"`
}

// crossGrams accumulates, per group, the nv×nt products E_val E_trainᵀ of
// the two outputs' scores, and the squared norms of both sides' rows, one
// tensor at a time (sizes[i] elements each). tick is called after each
// tensor.
func crossGrams(ctx context.Context, val, tr *expio.EPKRun, groups []Group, sizes []int, nv, nt int, tick func()) (cross, nval, ntr map[string][]float64, err error) {
	cross, nval, ntr = map[string][]float64{}, map[string][]float64{}, map[string][]float64{}
	for _, g := range groups {
		cross[g.Name], nval[g.Name], ntr[g.Name] = make([]float64, nv*nt), make([]float64, nv), make([]float64, nt)
	}
	for i, t := range val.EPK.Manifest.Tensors {
		if err := ctx.Err(); err != nil {
			return nil, nil, nil, err
		}
		a, err := val.EPK.Array("scores/" + t)
		if err != nil {
			return nil, nil, nil, err
		}
		b, err := tr.EPK.Array("scores/" + t)
		if err != nil {
			return nil, nil, nil, err
		}
		d := sizes[i]
		if len(a.Data) != nv*d || len(b.Data) != nt*d {
			return nil, nil, nil, fmt.Errorf("components: scores/%s has shapes %v and %v in the two outputs, want [%d, ...] and [%d, ...] of %d elements",
				t, a.Shape, b.Shape, nv, nt, d)
		}
		for _, g := range []string{GroupAll, groupOf(t)} {
			if g == "" || cross[g] == nil {
				continue
			}
			gemm.Gemm(false, true, nv, nt, d, 1, a.Data, d, b.Data, d, 1, cross[g], nt)
			rowNorms(nval[g], a.Data, d)
			rowNorms(ntr[g], b.Data, d)
		}
		tick()
	}
	return cross, nval, ntr, nil
}

// rowNorms adds the squared norms of the rows of e (d values each) to n.
func rowNorms(n, e []float64, d int) {
	for r := range n {
		for _, v := range e[r*d : (r+1)*d] {
			n[r] += v * v
		}
	}
}

// crossCosine turns the product c (nv×nt) into cosine similarities with
// the squared norms nv2 and nt2 (0 for a zero embedding).
func crossCosine(c, nv2, nt2 []float64) []float64 {
	nt := len(nt2)
	s := make([]float64, len(c))
	for i, a := range nv2 {
		for j, b := range nt2 {
			if a > 0 && b > 0 {
				s[i*nt+j] = math.Max(-1, math.Min(1, c[i*nt+j]/math.Sqrt(a*b)))
			}
		}
	}
	return s
}

// nearestIn returns the k largest and the k smallest entries of row, the
// largest (or smallest) first; ties go by position.
func nearestIn(row []float64, k int) (most, least []Neighbor) {
	all := make([]Neighbor, len(row))
	for j, v := range row {
		all[j] = Neighbor{j, v}
	}
	slices.SortStableFunc(all, func(x, y Neighbor) int { return cmp.Compare(y.Sim, x.Sim) })
	k = min(k, len(all))
	most = slices.Clone(all[:k])
	for j := range k {
		least = append(least, all[len(all)-1-j])
	}
	return most, least
}

// trainStats summarizes the nv×nt cosine matrix sim of a group.
func trainStats(name string, sim []float64, val, tr *sampleSet, k int) TrainGroupSummary {
	nv, nt := len(val.samples), len(tr.samples)
	st := TrainGroupSummary{Group: name, K: min(k, nt)}
	count := map[int]int{}
	for _, l := range tr.labels {
		count[l]++
	}
	var same, diff float64
	var ns, nd int
	for i := range nv {
		row := sim[i*nt : (i+1)*nt]
		for j, v := range row {
			if val.labels[i] == tr.labels[j] {
				same, ns = same+v, ns+1
			} else {
				diff, nd = diff+v, nd+1
			}
		}
		most, _ := nearestIn(row, st.K)
		m := 0
		for _, nb := range most {
			if tr.labels[nb.Pos] == val.labels[i] {
				m++
			}
		}
		st.NeighborLabelMatch += float64(m) / float64(max(len(most), 1))
		st.ChanceLabelMatch += float64(count[val.labels[i]]) / float64(nt)
	}
	st.NeighborLabelMatch /= float64(nv)
	st.ChanceLabelMatch /= float64(nv)
	if ns > 0 {
		st.SameLabel = same / float64(ns)
	}
	if nd > 0 {
		st.DifferentLabel = diff / float64(nd)
	}
	return st
}

// writeTrainVal writes, per group, train_similarity_<group>.npy (the
// validation × training cosine matrix), its heatmap with both sides sorted
// by label and by a+b, and train_neighbors_<group>.csv (each validation
// sample's top most and least similar training samples); it returns the
// groups' summaries.
func writeTrainVal(dir string, groups []Group, cross, nval, ntr map[string][]float64, val, tr *sampleSet, top int, add func(...string)) ([]TrainGroupSummary, error) {
	nv, nt := len(val.samples), len(tr.samples)
	var out []TrainGroupSummary
	for _, g := range groups {
		sim := crossCosine(cross[g.Name], nval[g.Name], ntr[g.Name])
		out = append(out, trainStats(g.Name, sim, val, tr, top))
		path := filepath.Join(dir, "train_similarity_"+g.Name+".npy")
		if err := npy.WriteFile(path, []int{nv, nt}, sim); err != nil {
			return nil, err
		}
		add(path)
		for oi := range 2 { // the orders by a+b and by label
			p, cm := heatmapPlot(sim, nt, val.orders[oi], tr.orders[oi],
				g.Title+": cosine similarity of validation (rows) and training (columns) samples", maxPixels)
			p.Y.Label.Text = "validation " + p.Y.Label.Text
			p.X.Label.Text = "training " + p.X.Label.Text
			paths, err := withColorBar(p, cm, "cosine similarity", 6.5*vg.Inch, 5.5*vg.Inch,
				filepath.Join(dir, "train_heatmap_"+g.Name+"_by_"+val.orders[oi].Name))
			if err != nil {
				return nil, err
			}
			add(paths...)
		}
		path = filepath.Join(dir, "train_neighbors_"+g.Name+".csv")
		if err := atomicfile.WriteBytes(path, trainNeighborsCSV(sim, val, tr, top)); err != nil {
			return nil, err
		}
		add(path)
	}
	return out, nil
}

// trainNeighborsCSV lists each validation sample's top most and least
// similar training samples.
func trainNeighborsCSV(sim []float64, val, tr *sampleSet, top int) []byte {
	nt := len(tr.samples)
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write([]string{"pos", "val_index", "a", "b", "label", "kind", "rank", "train_pos", "train_index", "train_a", "train_b", "train_label", "similarity"})
	it := strconv.Itoa
	for i, sm := range val.samples {
		most, least := nearestIn(sim[i*nt:(i+1)*nt], top)
		for _, kind := range []struct {
			name string
			nbs  []Neighbor
		}{{"most", most}, {"least", least}} {
			for r, nb := range kind.nbs {
				o := tr.samples[nb.Pos]
				w.Write([]string{it(i), it(sm.Index), it(sm.A), it(sm.B), it(sm.Label), kind.name, it(r + 1),
					it(nb.Pos), it(o.Index), it(o.A), it(o.B), it(o.Label), strconv.FormatFloat(nb.Sim, 'g', 8, 64)})
			}
		}
	}
	w.Flush()
	return buf.Bytes()
}
