package nn

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/explaind/explaind/tensor"
)

// Embedding looks tokens up in a table, like torch.nn.Embedding, and
// multiplies the rows by a constant Scale (1 for a plain embedding; the
// modulo transformer uses sqrt(d_model)).
//
// The input x has shape [B, S] and holds integer token ids coded as floats
// (the model inputs are float arrays); the output has shape [B, S, Dim].
// Weight has shape [Vocab, Dim] and is named prefix+".weight".
//
// The input is discrete: Backward returns no input cotangent (nil) and JVP
// ignores any input tangent, since an index has no derivative.
type Embedding[T tensor.Float] struct {
	Vocab, Dim int
	// Scale multiplies every looked-up row (y = Scale·W[id]).
	Scale  float64
	Weight *Param[T]
}

// NewEmbedding returns a zero-initialized Embedding with Scale 1 whose
// weight is named prefix+".weight".
func NewEmbedding[T tensor.Float](prefix string, vocab, dim int) *Embedding[T] {
	return &Embedding[T]{Vocab: vocab, Dim: dim, Scale: 1,
		Weight: &Param[T]{Name: prefix + ".weight", Value: tensor.New[T](vocab, dim)}}
}

// InitNormal fills the weight with PyTorch's default initialization for
// embeddings: independent standard normal draws.
func (e *Embedding[T]) InitNormal(rng *rand.Rand) {
	for i := range e.Weight.Value.Data {
		e.Weight.Value.Data[i] = T(rng.NormFloat64())
	}
}

// Params returns the weight.
func (e *Embedding[T]) Params() []*Param[T] { return []*Param[T]{e.Weight} }

// OutShape maps [B, S] to [B, S, Dim].
func (e *Embedding[T]) OutShape(in []int) ([]int, error) {
	if len(in) != 2 || in[1] < 1 {
		return nil, fmt.Errorf("nn.Embedding(%s): input shape %v, want [B, S] token ids", e.Weight.Name, in)
	}
	return []int{in[0], in[1], e.Dim}, nil
}

type embeddingState struct {
	ids   []int // [B*S] token ids
	batch int
}

// tokens converts the float-coded ids of x to ints, checking that each is
// an integer in [0, Vocab).
func (e *Embedding[T]) tokens(x *tensor.Dense[T]) ([]int, error) {
	if _, err := checkInput[T](e, x); err != nil {
		return nil, err
	}
	if !tensor.SameShape(e.Weight.Value.Shape, []int{e.Vocab, e.Dim}) {
		return nil, fmt.Errorf("nn.Embedding(%s): weight has shape %v, want [%d %d]", e.Weight.Name, e.Weight.Value.Shape, e.Vocab, e.Dim)
	}
	s := x.Shape[1]
	ids := make([]int, len(x.Data))
	for i, v := range x.Data {
		f := float64(v)
		if f != math.Trunc(f) || f < 0 || f >= float64(e.Vocab) {
			return nil, fmt.Errorf("nn.Embedding(%s): input[%d, %d] = %v is not a token id in [0, %d)", e.Weight.Name, i/s, i%s, f, e.Vocab)
		}
		ids[i] = int(f)
	}
	return ids, nil
}

// Forward gathers y[b, s] = Scale·W[x[b, s]].
func (e *Embedding[T]) Forward(x *tensor.Dense[T]) (*tensor.Dense[T], State, error) {
	ids, err := e.tokens(x)
	if err != nil {
		return nil, nil, err
	}
	y := tensor.New[T](x.Shape[0], x.Shape[1], e.Dim)
	e.gather(e.Weight.Value.Data, ids, y.Data)
	return y, &embeddingState{ids: ids, batch: x.Shape[0]}, nil
}

// gather writes Scale·table[ids[i]] into row i of out.
func (e *Embedding[T]) gather(table []T, ids []int, out []T) {
	d := e.Dim
	scale := T(e.Scale)
	for i, id := range ids {
		src := table[id*d : (id+1)*d]
		dst := out[i*d : (i+1)*d]
		for j, v := range src {
			dst[j] = scale * v
		}
	}
}

// Backward scatters the cotangents into the weight gradient:
// gW[x[b, s]] += Scale·dy[b*K+k, s]. The input is discrete, so it returns
// no input cotangent (nil) whatever needDx says.
func (e *Embedding[T]) Backward(st State, dy *tensor.Dense[T], g *Grads[T], needDx bool) (*tensor.Dense[T], error) {
	s, ok := st.(*embeddingState)
	if !ok {
		return nil, fmt.Errorf("nn.Embedding(%s): Backward got a state from another layer", e.Weight.Name)
	}
	seq := len(s.ids) / s.batch
	k, err := cotangentsPerSample("Embedding", dy.Shape, s.batch, []int{s.batch, seq, e.Dim})
	if err != nil {
		return nil, err
	}
	rows := s.batch * k
	gw, err := g.checkBuf(e.Weight, rows)
	if err != nil || gw == nil {
		return nil, err
	}
	d := e.Dim
	scale := T(e.Scale)
	size := e.Vocab * d
	for r := 0; r < rows; r++ {
		dst := gw.Data
		if g.Mode == PerRow {
			dst = gw.Data[r*size : (r+1)*size]
		}
		b := r / k
		addTokenRows(dst, s.ids[b*seq:(b+1)*seq], dy.Data[r*seq*d:(r+1)*seq*d], d, scale)
	}
	return nil, nil
}

// JVP: dy[b*M+m, s] = Scale·dW_m[x[b, s]]. An input tangent, if given,
// must have shape [B*M, S]; it is ignored, since ids have no derivative.
func (e *Embedding[T]) JVP(x, dx *tensor.Dense[T], t *Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	y, st, err := e.Forward(x)
	if err != nil {
		return nil, nil, err
	}
	m := t.Count()
	if err := checkTangentInput("Embedding", x, dx, m); err != nil {
		return nil, nil, err
	}
	ids := st.(*embeddingState).ids
	b, seq, d := x.Shape[0], x.Shape[1], e.Dim
	dy := tensor.New[T](b*m, seq, d)
	dW, err := t.dir(e.Weight)
	if err != nil || dW == nil {
		return y, dy, err
	}
	scale := T(e.Scale)
	size := e.Vocab * d
	for bb := 0; bb < b; bb++ {
		for mm := 0; mm < m; mm++ {
			table := dW.Data[mm*size : (mm+1)*size]
			for p := 0; p < seq; p++ {
				id := ids[bb*seq+p]
				src := table[id*d : (id+1)*d]
				dst := dy.Data[((bb*m+mm)*seq+p)*d:]
				for j, v := range src {
					dst[j] = scale * v
				}
			}
		}
	}
	return y, dy, nil
}

// addTokenRows adds scale times the cotangent rows src ([len(ids), d]) of
// one sample's tokens to the rows ids of the embedding gradient dst
// ([vocab, d]).
func addTokenRows[T tensor.Float](dst []T, ids []int, src []T, d int, scale T) {
	for p, id := range ids {
		row := dst[id*d : (id+1)*d]
		for j, v := range src[p*d : (p+1)*d] {
			row[j] += scale * v
		}
	}
}
