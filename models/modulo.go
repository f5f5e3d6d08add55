package models

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"

	"github.com/explaind/explaind/internal/parallel"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
)

// ModuloArch is the architecture name of the modulo-addition transformer,
// as in the fixtures' "arch" metadata.
const ModuloArch = "modulo_transformer"

// ModuloPositionalEncoding is the name of the reference model's positional
// encoding parameter ([1, 10, d_model]). The reference never uses it in its
// forward pass, so Modulo has no such parameter; pass this name to
// weights.LoadParams as ignored when loading a reference state_dict:
//
//	weights.LoadParams(f, "param/", m.Params(), models.ModuloPositionalEncoding)
const ModuloPositionalEncoding = "positional_encoding.pe"

// ModuloConfig sizes the modulo-addition transformer. Zero fields take the
// paper's values (DefaultModuloConfig).
type ModuloConfig struct {
	// P is the modulus; the vocabulary has P+2 tokens (the numbers 0..P−1,
	// then the "+" token P and the "=" token P+1), and there are P+2 classes.
	P int
	// DModel is the embedding width; Heads attention heads of width
	// DModel/Heads each; MLP is the hidden width of the feed-forward block.
	DModel, Heads, MLP int
}

// DefaultModuloConfig returns the paper's model: P 113, d_model 64, 4 heads,
// MLP width 512.
func DefaultModuloConfig() ModuloConfig {
	return ModuloConfig{P: 113, DModel: 64, Heads: 4, MLP: 512}
}

// filled returns c with zero fields replaced by the defaults.
func (c ModuloConfig) filled() ModuloConfig {
	def := DefaultModuloConfig()
	if c.P == 0 {
		c.P = def.P
	}
	if c.DModel == 0 {
		c.DModel = def.DModel
	}
	if c.Heads == 0 {
		c.Heads = def.Heads
	}
	if c.MLP == 0 {
		c.MLP = def.MLP
	}
	return c
}

// Validate reports a configuration that cannot be built (after zero fields
// take their defaults).
func (c ModuloConfig) Validate() error {
	c = c.filled()
	switch {
	case c.P < 1:
		return fmt.Errorf("models: modulo config: P = %d, want at least 1", c.P)
	case c.DModel < 1:
		return fmt.Errorf("models: modulo config: DModel = %d, want at least 1", c.DModel)
	case c.Heads < 1:
		return fmt.Errorf("models: modulo config: Heads = %d, want at least 1", c.Heads)
	case c.DModel%c.Heads != 0:
		return fmt.Errorf("models: modulo config: DModel = %d is not a multiple of Heads = %d", c.DModel, c.Heads)
	case c.MLP < 1:
		return fmt.Errorf("models: modulo config: MLP = %d, want at least 1", c.MLP)
	}
	return nil
}

// ModuloConfigFromMetadata reads a configuration from a fixture's or
// checkpoint's metadata: n_token (P+2), d_model, nhead and dim_mlp.
func ModuloConfigFromMetadata(md map[string]string) (ModuloConfig, error) {
	get := func(key string) (int, error) {
		s, ok := md[key]
		if !ok {
			return 0, fmt.Errorf("models: metadata has no %q", key)
		}
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			return 0, fmt.Errorf("models: metadata %q = %q is not a positive integer", key, s)
		}
		return v, nil
	}
	var c ModuloConfig
	var err error
	var nTok int
	if nTok, err = get("n_token"); err != nil {
		return c, err
	}
	if nTok < 3 {
		return c, fmt.Errorf("models: metadata n_token = %d, want at least 3 (P+2)", nTok)
	}
	c.P = nTok - 2
	if c.DModel, err = get("d_model"); err != nil {
		return c, err
	}
	if c.Heads, err = get("nhead"); err != nil {
		return c, err
	}
	if c.MLP, err = get("dim_mlp"); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// Modulo is the ExPLAIND modulo-addition transformer (the reference's
// SingleLayerTransformerClassifier). An input sample is 4 float-coded
// tokens [a, P, b, P+1]; the output is log-probabilities over the P+2
// tokens, read at the last position:
//
//	h0 = input_emb(x)·sqrt(d_model)                        [B, 4, d]
//	h  = Σ_i head_i(h0) at the last position                [B, d]
//	h  = h + ReLU(linear2(ReLU(linear1(h))))
//	y  = log_softmax(decoder(h))                           [B, P+2]
//
// There is no residual around the attention (the heads' sum is h) and no
// positional encoding. Only the last query is computed, since nothing else
// reaches the output.
//
// Parameters, in the reference's state_dict order: input_emb.weight
// [P+2, d]; headN_encoder.weight [d/H, d] for N = 1..H; headN_decoder.weight
// [d, d/H]; linear1.weight [MLP, d], linear1.bias [MLP]; linear2.weight
// [d, MLP], linear2.bias [d]; decoder.weight [P+2, d]: 89024 values for
// the paper's model, so per-sample gradients of 4000 samples take 1.4 GB in
// float32.
//
// Backward takes any number K of cotangents per sample (K = P+2 gives the
// Jacobian rows) and fills summed or per-row gradients; JVP takes M
// parameter tangents at once.
type Modulo[T tensor.Float] struct {
	Config    ModuloConfig
	Embedding *nn.Embedding[T]
	Attention *nn.AttentionHeads[T]
	Linear1   *nn.Linear[T]
	Linear2   *nn.Linear[T]
	Decoder   *nn.Linear[T]
}

// NewModulo builds a zero-initialized modulo transformer (call Init or load
// weights). Zero fields of cfg take the paper's values.
func NewModulo[T tensor.Float](cfg ModuloConfig) (*Modulo[T], error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.filled()
	vocab, d := cfg.P+2, cfg.DModel
	m := &Modulo[T]{Config: cfg}
	m.Embedding = nn.NewEmbedding[T]("input_emb", vocab, d)
	m.Embedding.Scale = math.Sqrt(float64(d))
	var enc, dec []string
	for h := 1; h <= cfg.Heads; h++ {
		enc = append(enc, fmt.Sprintf("head%d_encoder.weight", h))
		dec = append(dec, fmt.Sprintf("head%d_decoder.weight", h))
	}
	var err error
	if m.Attention, err = nn.NewAttentionHeads[T](enc, dec, d, d/cfg.Heads, true); err != nil {
		return nil, err
	}
	m.Linear1 = nn.NewLinear[T]("linear1", d, cfg.MLP, true)
	m.Linear2 = nn.NewLinear[T]("linear2", cfg.MLP, d, true)
	m.Decoder = nn.NewLinear[T]("decoder", d, vocab, false)
	return m, nil
}

// Arch returns ModuloArch.
func (m *Modulo[T]) Arch() string { return ModuloArch }

// Classes returns P+2.
func (m *Modulo[T]) Classes() int { return m.Config.P + 2 }

// SampleShape returns [4]: the tokens a, P, b, P+1.
func (m *Modulo[T]) SampleShape() []int { return []int{4} }

// UnusedParams lists the reference parameters the model does not have
// because the reference never uses them: ModuloPositionalEncoding.
func (m *Modulo[T]) UnusedParams() []string { return []string{ModuloPositionalEncoding} }

// Init draws PyTorch's default initialization: the embedding standard
// normal, the attention and linear weights and biases uniform in
// ±1/sqrt(fan_in).
func (m *Modulo[T]) Init(rng *rand.Rand) {
	m.Embedding.InitNormal(rng)
	d := m.Config.DModel
	for _, p := range m.Attention.Encoders {
		nn.FillUniform(p.Value.Data, 1/math.Sqrt(float64(d)), rng)
	}
	for _, p := range m.Attention.Decoders {
		nn.FillUniform(p.Value.Data, 1/math.Sqrt(float64(m.Attention.DH)), rng)
	}
	m.Linear1.InitUniform(rng)
	m.Linear2.InitUniform(rng)
	m.Decoder.InitUniform(rng)
}

// Params returns the parameters in state_dict order.
func (m *Modulo[T]) Params() []*nn.Param[T] {
	ps := append(m.Embedding.Params(), m.Attention.Params()...)
	ps = append(ps, m.Linear1.Params()...)
	ps = append(ps, m.Linear2.Params()...)
	return append(ps, m.Decoder.Params()...)
}

// OutShape maps token arrays [B, S] (S = 4 for the task) to [B, P+2].
func (m *Modulo[T]) OutShape(in []int) ([]int, error) {
	shape := in
	for _, l := range []nn.Layer[T]{m.Embedding, m.Attention, m.Linear1, m.Linear2, m.Decoder} {
		var err error
		if shape, err = l.OutShape(shape); err != nil {
			return nil, fmt.Errorf("models.Modulo: %w", err)
		}
	}
	return shape, nil
}

// moduloState keeps every layer's state and the inputs of the three
// linear layers (for per-row weight gradients). Forward's state is
// PathForward's at the start of the path, so Backward and the path
// methods take either.
type moduloState[T tensor.Float] struct {
	emb, attn, l1, relu1, l2, relu2, dec, lsm nn.State
	a, r1, h                                  *tensor.Dense[T] // inputs of linear1, linear2, decoder
}

// Forward returns the log-probabilities [B, P+2] of token arrays x [B, S].
func (m *Modulo[T]) Forward(x *tensor.Dense[T]) (*tensor.Dense[T], nn.State, error) {
	// The start of a path is θ itself: one implementation serves both.
	return m.PathForward(x, nil)
}

// Backward maps K cotangents per sample ([B*K, P+2]) to parameter
// gradients in g (summed or per row). The input is discrete: the returned
// input cotangent is always nil. Per-row weight gradients of the linear
// layers (the bulk of per-sample gradients) are computed here, spread over
// the cores (perRowWeight).
func (m *Modulo[T]) Backward(st nn.State, dy *tensor.Dense[T], g *nn.Grads[T], needDx bool) (*tensor.Dense[T], error) {
	// The start of a path is θ itself: one implementation serves both.
	return nil, m.backward("Backward", st, dy, m.rowGrads(g))
}

// perRowWeight adds dy[r]ᵀ x[r/K] to row r of the PerRow gradient of the
// linear weight w ([out, in]), for dy [B*K, out] and x [B, in]; it does
// nothing unless g wants w per row, and passes dy and x to g's Outer
// receiver of w instead when g has one. Rows are spread over the cores.
func perRowWeight[T tensor.Float](g *nn.Grads[T], w *nn.Param[T], dy, x *tensor.Dense[T]) error {
	if outer := g.OuterOf(w); outer != nil {
		outer(dy.Data, x.Data, x.Shape[0], dy.Shape[0]/x.Shape[0])
		return nil
	}
	if g == nil || g.Mode != nn.PerRow || g.Of[w] == nil {
		return nil
	}
	out, in := w.Value.Shape[0], w.Value.Shape[1]
	rows, b := dy.Shape[0], x.Shape[0]
	buf := g.Of[w]
	if want := []int{rows, out, in}; !tensor.SameShape(buf.Shape, want) {
		return fmt.Errorf("gradient buffer for %s has shape %v, want %v", w.Name, buf.Shape, want)
	}
	k := rows / b
	size := out * in
	parallelRows(rows, size, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			xb := x.Data[(r/k)*in : (r/k+1)*in]
			dst := buf.Data[r*size : (r+1)*size]
			for o, d := range dy.Data[r*out : (r+1)*out] {
				if d != 0 {
					row := dst[o*in : (o+1)*in]
					for i, v := range xb {
						row[i] += d * v
					}
				}
			}
		}
	})
	return nil
}

// parallelRows spreads per-sample loops over the cores.
func parallelRows(n, cost int, fn func(lo, hi int)) { parallel.ForCost(n, cost, fn) }

// JVP returns the log-probabilities and their derivatives ([B*M, P+2])
// along M parameter tangents. The input is discrete; an input tangent is
// checked for shape and otherwise ignored.
func (m *Modulo[T]) JVP(x, dx *tensor.Dense[T], t *nn.Tangents[T]) (*tensor.Dense[T], *tensor.Dense[T], error) {
	// The start of a path is θ itself: one implementation serves both.
	y, dy, _, _, err := m.jvp(x, dx, nil, t, true)
	if err != nil {
		return nil, nil, fmt.Errorf("models.Modulo: %w", err)
	}
	return y, dy, nil
}
