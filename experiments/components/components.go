// Package components is the component-embedding experiment of ExPLAIND
// on the modulo-addition transformer: each validation sample's
// class-summed per-parameter EPK scores (the components preset of `explaind
// epk`, scores/<tensor> = Σ_s Σ_c φ_s(x)[c,:] ⊙ Δθ_s) restricted to a layer
// group form an embedding of that sample, and samples are compared by the
// cosine similarity of their embeddings.
//
// The groups are the model's layers: the token embedding (input_emb), the
// attention encoders (head*_encoder), the attention decoders
// (head*_decoder), linear1, linear2 and the decoder, and the whole model.
// For each group Do writes the cosine-similarity matrix (.npy and heatmaps
// with the samples sorted by a+b, by label, by a and by b), every sample's
// most and least similar samples, histograms of the inputs and labels of
// the nearest neighbours of a few example samples, and a 2-D PCA projection
// of the embeddings.
//
// The embeddings are never held whole: a group's Gram matrix E Eᵀ (X × X for
// X samples) is accumulated one parameter tensor at a time, and the cosine
// similarities and, for groups wider than X, the principal components are
// computed from it (PCA of the rows of E equals the eigendecomposition of the
// doubly centred Gram matrix). Groups no wider than X use gonum's stat.PC on
// the embeddings themselves; the tests check the two agree.
//
// Over training (history.go): when the EPK output also holds the history
// preset, whose snapshots are each group's Gram matrix of the scores
// accumulated up to a snapshot step, Do writes per group the mean cosine
// similarity of same-label and different-label pairs at every snapshot,
// set against the run's grokking phases (Phases), and heatmaps of chosen
// snapshots as group × step small multiples.
//
// The training set's side (trainval.go): given a second EPK output whose
// test samples are training samples (`explaind epk --test-split train`),
// Do compares every validation sample with every training sample in each
// group's embedding: the validation × training cosine matrix (from E_val
// E_trainᵀ, accumulated one tensor at a time), each validation sample's
// most and least similar training samples, and how often its nearest
// training samples share its label.
package components

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/explaind/explaind/gemm"
	"github.com/explaind/explaind/models"
	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/stat"
)

// The layer groups of the modulo transformer (models.ModuloGroups), in the
// order Groups returns them, then the whole model.
const (
	GroupEmbedding = models.ModuloEmbedding
	GroupEncoders  = models.ModuloAttentionEncoders
	GroupDecoders  = models.ModuloAttentionDecoders
	GroupLinear1   = models.ModuloLinear1
	GroupLinear2   = models.ModuloLinear2
	GroupDecoder   = models.ModuloDecoder
	GroupAll       = "all"
)

// groupTitles gives each group's name in figures.
var groupTitles = map[string]string{
	GroupEmbedding: "token embedding", GroupEncoders: "attention encoders", GroupDecoders: "attention decoders",
	GroupLinear1: "linear1", GroupLinear2: "linear2", GroupDecoder: "decoder", GroupAll: "whole model",
}

// groupOf returns the layer group of a parameter of the modulo transformer
// (models.ModuloGroups), or "" for a name that belongs to none (it still
// counts in GroupAll).
func groupOf(tensor string) string {
	g, _ := models.ModuloGroups().Of(tensor)
	return g
}

// Group is a set of parameter tensors whose scores form one embedding.
type Group struct {
	Name  string `json:"name"`
	Title string `json:"title"`
	// Tensors are the group's parameters, in model order; Dim is the
	// embedding's length (their total size).
	Tensors []string `json:"tensors"`
	Dim     int      `json:"dim"`
}

// Groups returns the non-empty layer groups of the tensors (with sizes[i]
// elements each), then GroupAll with every tensor.
func Groups(tensors []string, sizes []int) []Group {
	var gs []Group
	for _, name := range append(models.ModuloGroups().Names(), GroupAll) {
		g := Group{Name: name, Title: groupTitles[name]}
		for i, t := range tensors {
			if name == GroupAll || groupOf(t) == name {
				g.Tensors = append(g.Tensors, t)
				g.Dim += sizes[i]
			}
		}
		if len(g.Tensors) > 0 {
			gs = append(gs, g)
		}
	}
	return gs
}

// AddGram adds E Eᵀ to the n×n row-major matrix g, for the n×d row-major
// embedding rows e.
func AddGram(g, e []float64, n, d int) {
	gemm.Gemm(false, true, n, n, d, 1, e, d, e, d, 1, g, n)
}

// Cosine returns the n×n cosine-similarity matrix of the samples whose Gram
// matrix is g: g_ij / (|e_i| |e_j|), symmetric with a unit diagonal. A
// sample whose embedding is zero has similarity 0 with every other sample.
func Cosine(g []float64, n int) []float64 {
	norm := make([]float64, n)
	for i := range n {
		norm[i] = math.Sqrt(math.Max(g[i*n+i], 0))
	}
	s := make([]float64, n*n)
	for i := range n {
		s[i*n+i] = 1
		for j := i + 1; j < n; j++ {
			v := 0.0
			if norm[i] > 0 && norm[j] > 0 {
				v = g[i*n+j] / (norm[i] * norm[j])
				v = math.Max(-1, math.Min(1, v))
			}
			s[i*n+j], s[j*n+i] = v, v
		}
	}
	return s
}

// PCA is a two-component principal component projection.
type PCA struct {
	// Scores[i] are sample i's coordinates on the first two components,
	// each component's sign chosen so that its largest coordinate (in
	// absolute value) is positive.
	Scores [][2]float64
	// Explained is the fraction of the total variance each component
	// carries.
	Explained [2]float64
}

// fixSigns makes each component's largest-magnitude score positive.
func (p *PCA) fixSigns() {
	for c := range 2 {
		big := 0.0
		for _, s := range p.Scores {
			if math.Abs(s[c]) > math.Abs(big) {
				big = s[c]
			}
		}
		if big < 0 {
			for i := range p.Scores {
				p.Scores[i][c] = -p.Scores[i][c]
			}
		}
	}
}

// PCAEmbeddings projects the rows of e (samples × dimensions) on their
// first two principal components with gonum's stat.PC.
func PCAEmbeddings(e *mat.Dense) (*PCA, error) {
	n, d := e.Dims()
	if n < 2 {
		return nil, fmt.Errorf("components: PCA needs at least 2 samples, got %d", n)
	}
	var pc stat.PC
	if !pc.PrincipalComponents(e, nil) {
		return nil, fmt.Errorf("components: the PCA of %d×%d embeddings did not converge", n, d)
	}
	var vecs mat.Dense
	pc.VectorsTo(&vecs)
	vars := pc.VarsTo(nil)
	k := min(2, len(vars))
	centered := mat.DenseCopyOf(e)
	for j := range d {
		m := 0.0
		for i := range n {
			m += centered.At(i, j)
		}
		m /= float64(n)
		for i := range n {
			centered.Set(i, j, centered.At(i, j)-m)
		}
	}
	var proj mat.Dense
	proj.Mul(centered, vecs.Slice(0, d, 0, k))
	p := &PCA{Scores: make([][2]float64, n)}
	for i := range n {
		for c := range k {
			p.Scores[i][c] = proj.At(i, c)
		}
	}
	total := 0.0
	for _, v := range vars {
		total += v
	}
	for c := range k {
		if total > 0 {
			p.Explained[c] = vars[c] / total
		}
	}
	p.fixSigns()
	return p, nil
}

// PCAGram is PCAEmbeddings from the n×n Gram matrix g = E Eᵀ of the
// embeddings: with J the centring matrix, J g J = U Λ Uᵀ, and the scores on
// component c are sqrt(λ_c) U[:, c].
func PCAGram(g []float64, n int) (*PCA, error) {
	if n < 2 {
		return nil, fmt.Errorf("components: PCA needs at least 2 samples, got %d", n)
	}
	row := make([]float64, n)
	all := 0.0
	for i := range n {
		for j := range n {
			row[i] += g[i*n+j]
		}
		all += row[i]
		row[i] /= float64(n)
	}
	all /= float64(n * n)
	c := mat.NewSymDense(n, nil)
	for i := range n {
		for j := i; j < n; j++ {
			c.SetSym(i, j, g[i*n+j]-row[i]-row[j]+all)
		}
	}
	var eig mat.EigenSym
	if !eig.Factorize(c, true) {
		return nil, fmt.Errorf("components: the eigendecomposition of the %d×%d Gram matrix did not converge", n, n)
	}
	vals := eig.Values(nil) // ascending
	var vecs mat.Dense
	eig.VectorsTo(&vecs)
	total := 0.0
	for _, v := range vals {
		total += math.Max(v, 0)
	}
	p := &PCA{Scores: make([][2]float64, n)}
	for k := range min(2, n) {
		col := n - 1 - k
		lam := math.Max(vals[col], 0)
		for i := range n {
			p.Scores[i][k] = math.Sqrt(lam) * vecs.At(i, col)
		}
		if total > 0 {
			p.Explained[k] = lam / total
		}
	}
	p.fixSigns()
	return p, nil
}

// Sample is one validation sample of the EPK output.
type Sample struct {
	// Pos is the sample's position in the EPK output, Index its index in
	// the run's validation split.
	Pos   int `json:"pos"`
	Index int `json:"index"`
	// A and B are the summands, Label = (A+B) mod p.
	A     int `json:"a"`
	B     int `json:"b"`
	Label int `json:"label"`
}

// Order is a permutation of the samples for a heatmap.
type Order struct {
	// Name is used in file names, Title in figures.
	Name, Title string
	// Perm[k] is the position (Sample.Pos) of the k-th sample in order,
	// Keys[k] its sort key.
	Perm, Keys []int
}

// Orders returns the samples sorted by a+b ("sum"), by label, by a and by
// b; ties go by a, then b, then position.
func Orders(samples []Sample) []Order {
	mk := func(name, title string, key func(Sample) int) Order {
		s := slices.Clone(samples)
		slices.SortStableFunc(s, func(x, y Sample) int {
			return cmp.Or(cmp.Compare(key(x), key(y)), cmp.Compare(x.A, y.A), cmp.Compare(x.B, y.B), cmp.Compare(x.Pos, y.Pos))
		})
		o := Order{Name: name, Title: title}
		for _, v := range s {
			o.Perm = append(o.Perm, v.Pos)
			o.Keys = append(o.Keys, key(v))
		}
		return o
	}
	return []Order{
		mk("sum", "a+b", func(s Sample) int { return s.A + s.B }),
		mk("label", "label (a+b) mod p", func(s Sample) int { return s.Label }),
		mk("a", "a", func(s Sample) int { return s.A }),
		mk("b", "b", func(s Sample) int { return s.B }),
	}
}

// Neighbor is another sample and its similarity.
type Neighbor struct {
	Pos int
	Sim float64
}

// Nearest returns the k most and the k least similar other samples of
// sample i under the n×n similarity matrix sim, most similar (or least)
// first; ties go by position.
func Nearest(sim []float64, n, i, k int) (most, least []Neighbor) {
	others := make([]Neighbor, 0, n-1)
	for j := range n {
		if j != i {
			others = append(others, Neighbor{j, sim[i*n+j]})
		}
	}
	slices.SortStableFunc(others, func(x, y Neighbor) int { return cmp.Compare(y.Sim, x.Sim) })
	k = min(k, len(others))
	most = slices.Clone(others[:k])
	for j := range k {
		least = append(least, others[len(others)-1-j])
	}
	return most, least
}

// Stats summarize a group's similarities.
type Stats struct {
	// Mean is the mean similarity over pairs of distinct samples; SameLabel
	// and DifferentLabel over the pairs with equal and with different
	// labels (NaN-free: 0 when there is no such pair), and SameMinusDiff
	// their difference, the headline number.
	Mean           float64 `json:"mean"`
	SameLabel      float64 `json:"same_label"`
	DifferentLabel float64 `json:"different_label"`
	SameMinusDiff  float64 `json:"same_minus_different"`
	SameLabelPairs int     `json:"same_label_pairs"`
	// NeighborLabelMatch is the fraction of each sample's K most similar
	// samples that share its label, averaged over samples; ChanceLabelMatch
	// is the same for K samples drawn at random.
	K                  int     `json:"k"`
	NeighborLabelMatch float64 `json:"neighbor_label_match"`
	ChanceLabelMatch   float64 `json:"chance_label_match"`
}

// Similarities returns the statistics of the n×n similarity matrix sim for
// samples with the given labels, with k nearest neighbours.
func Similarities(sim []float64, labels []int, k int) Stats {
	n := len(labels)
	st := Stats{K: k}
	var sum, same, diff float64
	var nSame, nDiff int
	for i := range n {
		for j := i + 1; j < n; j++ {
			v := sim[i*n+j]
			sum += v
			if labels[i] == labels[j] {
				same += v
				nSame++
			} else {
				diff += v
				nDiff++
			}
		}
	}
	if pairs := nSame + nDiff; pairs > 0 {
		st.Mean = sum / float64(pairs)
	}
	if nSame > 0 {
		st.SameLabel = same / float64(nSame)
	}
	if nDiff > 0 {
		st.DifferentLabel = diff / float64(nDiff)
	}
	st.SameMinusDiff = st.SameLabel - st.DifferentLabel
	st.SameLabelPairs = nSame
	if n > 1 && k > 0 {
		count := map[int]int{}
		for _, l := range labels {
			count[l]++
		}
		for i := range n {
			most, _ := Nearest(sim, n, i, k)
			m := 0
			for _, nb := range most {
				if labels[nb.Pos] == labels[i] {
					m++
				}
			}
			st.NeighborLabelMatch += float64(m) / float64(len(most))
			st.ChanceLabelMatch += float64(count[labels[i]]-1) / float64(n-1)
		}
		st.NeighborLabelMatch /= float64(n)
		st.ChanceLabelMatch /= float64(n)
	}
	return st
}
