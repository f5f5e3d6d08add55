package swap_test

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/experiments/expio/expiotest"
	"github.com/explaind/explaind/experiments/swap"
	"github.com/explaind/explaind/internal/testrun"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/tensor"
	"github.com/explaind/explaind/train"
)

func TestMain(m *testing.M) { testrun.Main(m) }

// tinyRun opens the shared small modulo run (p = 7, 20 training samples, 24
// full-batch steps, checkpoints every 5 steps, so most sampled states are
// replayed).
func tinyRun(t *testing.T) *expio.Run {
	return expiotest.OpenTinyModuloRun(t, swap.Command, 20, 24, 5)
}

func TestParseKeptSet(t *testing.T) {
	cases := map[string][]string{
		"all-but-attention":         {swap.Embedding, swap.Linear1, swap.Linear2, swap.Decoder},
		"decoder+linear2":           {swap.Linear2, swap.Decoder},
		"embedding+linear2+decoder": {swap.Embedding, swap.Linear2, swap.Decoder},
		"all-but-linear1+linear2":   {swap.Embedding, swap.Attention, swap.Decoder},
	}
	for s, want := range cases {
		k, err := swap.ParseKeptSet(s)
		if err != nil || k.Name != s || !slices.Equal(k.Groups, want) {
			t.Errorf("ParseKeptSet(%q) = %+v, %v; want groups %v", s, k, err, want)
		}
	}
	for _, bad := range []string{"", "mlp", "decoder+decoder", "all-but-embedding+attention+linear1+linear2+decoder", "decoder+"} {
		if k, err := swap.ParseKeptSet(bad); err == nil {
			t.Errorf("ParseKeptSet(%q) = %+v, want an error", bad, k)
		}
	}
	names := swap.DefaultKeptSetNames()
	if d := swap.DefaultKeptSets(); len(d) != 5 || len(names) != 5 || d[4].Name != "all-but-attention" || !slices.Equal(d[2].Groups, []string{swap.Decoder}) {
		t.Errorf("default kept sets %+v", d)
	}
}

func TestSteps(t *testing.T) {
	for _, c := range []struct {
		n, every int
		want     []int
	}{{24, 7, []int{0, 7, 14, 21, 24}}, {20, 10, []int{0, 10, 20}}, {0, 10, []int{0}}, {3, 1, []int{0, 1, 2, 3}}} {
		if got := swap.Steps(c.n, c.every); !slices.Equal(got, c.want) {
			t.Errorf("Steps(%d, %d) = %v, want %v", c.n, c.every, got, c.want)
		}
	}
}

func TestMeanKL(t *testing.T) {
	lg := func(v ...float64) *tensor.Dense[float32] {
		out := tensor.New[float32](len(v)/2, 2)
		for i, x := range v {
			out.Data[i] = float32(math.Log(x))
		}
		return out
	}
	p, q := lg(0.5, 0.5, 0.9, 0.1), lg(0.25, 0.75, 0.9, 0.1)
	kl, err := swap.MeanKL(p, q)
	want := (0.5*math.Log(0.5/0.25) + 0.5*math.Log(0.5/0.75)) / 2 // the second rows agree
	if err != nil || !(math.Abs(kl-want) <= 1e-7) {
		t.Errorf("MeanKL = %v, %v; want %v", kl, err, want)
	}
	if kl, err := swap.MeanKL(p, p); err != nil || kl != 0 {
		t.Errorf("MeanKL(p, p) = %v, %v; want exactly 0", kl, err)
	}
	if _, err := swap.MeanKL(p, lg(0.5, 0.5)); err == nil {
		t.Error("MeanKL of different shapes: want an error")
	}
}

func TestOptionsCheck(t *testing.T) {
	for _, c := range []struct {
		opt  swap.Options
		want string
	}{
		{swap.Options{Every: 0}, "invalid Every"},
		{swap.Options{Every: -3}, "invalid Every"},
		{swap.Options{Every: 10, EvalChunk: -1}, "invalid EvalChunk"},
		{swap.Options{Every: 10, Kept: []swap.KeptSet{{Name: "decoder"}, {Name: "decoder"}}}, "twice"},
	} {
		if err := c.opt.Check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Check(%+v) = %v, want an error mentioning %s", c.opt, err, c.want)
		}
	}
	o := swap.Options{Every: 10}
	if err := o.Check(); err != nil || len(o.Kept) != 5 {
		t.Errorf("Check fills in the default kept sets: %v, %+v", err, o.Kept)
	}
}

// TestFinalStepIsTheFinalModel: at the final step every swapped model is
// the final model, so the accuracy difference and the KL are exactly 0;
// earlier steps differ.
func TestFinalStepIsTheFinalModel(t *testing.T) {
	r := tinyRun(t)
	res, err := swap.Run(context.Background(), r, swap.Options{Every: 7})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Complete || res.FinalStep != 24 || !slices.Equal(res.Steps, []int{0, 7, 14, 21, 24}) || len(res.Rows) != 25 {
		t.Fatalf("result: complete %v, final step %d, steps %v, %d rows; want 5 steps × 5 kept sets", res.Complete, res.FinalStep, res.Steps, len(res.Rows))
	}
	_, acc, err := train.Evaluate(r.Session.Model, r.Data.Val, 0) // Run leaves the session at the last sampled state, the final one
	if err != nil {
		t.Fatal(err)
	}
	if res.FinalAcc != acc {
		t.Errorf("final validation accuracy %v, the session's model gives %v", res.FinalAcc, acc)
	}
	someKL := false
	for _, row := range res.Rows {
		if row.Step == 24 {
			if row.AccDiff != 0 || row.KL != 0 || row.SwappedAcc != res.FinalAcc || row.StepAcc != res.FinalAcc {
				t.Errorf("final step, kept %s: %+v; want the final model (difference 0, KL 0)", row.Kept, row)
			}
		} else if row.KL > 1e-3 {
			someKL = true
		}
		if row.AccDiff != row.SwappedAcc-row.StepAcc || row.KL < 0 || math.IsNaN(row.KL) {
			t.Errorf("row %+v: inconsistent", row)
		}
	}
	if !someKL {
		t.Error("no earlier step differs from the final model: the test proves nothing")
	}
}

// TestAllButAttentionAtStepZero rebuilds, independently of Run, the final
// model with the attention of step 0 and compares.
func TestAllButAttentionAtStepZero(t *testing.T) {
	r := tinyRun(t)
	k, _ := swap.ParseKeptSet("all-but-attention")
	res, err := swap.Run(context.Background(), r, swap.Options{Every: 100, Kept: []swap.KeptSet{k}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 2 || res.Rows[0].Step != 0 || res.Rows[1].Step != 24 {
		t.Fatalf("rows %+v: want steps 0 and 24", res.Rows)
	}
	got := res.Rows[0]

	o, err := train.Open[float32](r.Dir)
	if err != nil {
		t.Fatal(err)
	}
	replay, sess := o.Replay, o.Session
	snapshot := func(s int) map[string][]float32 {
		if err := replay.Seek(s); err != nil {
			t.Fatal(err)
		}
		out := map[string][]float32{}
		for _, p := range sess.Params() {
			out[p.Name] = slices.Clone(p.Value.Data)
		}
		return out
	}
	theta0, thetaN := snapshot(0), snapshot(24)
	set := func(m map[string][]float32, attentionFrom map[string][]float32) {
		for _, p := range sess.Params() {
			v := m[p.Name]
			if strings.HasPrefix(p.Name, "head") {
				v = attentionFrom[p.Name]
			}
			copy(p.Value.Data, v)
		}
	}
	logp := func() *tensor.Dense[float32] {
		y, _, err := sess.Model.Forward(r.Data.Val.Inputs)
		if err != nil {
			t.Fatal(err)
		}
		return y
	}
	set(thetaN, thetaN)
	final := logp()
	set(theta0, theta0)
	_, acc0, _ := train.Evaluate(sess.Model, r.Data.Val, 0)
	set(thetaN, theta0)
	_, accSwapped, _ := train.Evaluate(sess.Model, r.Data.Val, 0)
	swapped := logp()
	var kl float64
	n, c := final.Shape[0], final.Shape[1]
	for i := range n {
		for j := range c {
			lf, ls := float64(final.Data[i*c+j]), float64(swapped.Data[i*c+j])
			kl += math.Exp(lf) * (lf - ls) / float64(n)
		}
	}
	if got.SwappedAcc != accSwapped || got.StepAcc != acc0 || got.AccDiff != accSwapped-acc0 {
		t.Errorf("step 0: swapped acc %v, step acc %v, diff %v; want %v, %v, %v", got.SwappedAcc, got.StepAcc, got.AccDiff, accSwapped, acc0, accSwapped-acc0)
	}
	if !(math.Abs(got.KL-kl) <= 1e-9*max(1, kl)) || kl < 1e-3 {
		t.Errorf("step 0: KL %v, the rebuilt model gives %v (want equal and clearly above 0)", got.KL, kl)
	}
}

// TestSwappedPicksByGroup checks which arrays Swapped takes.
func TestSwappedPicksByGroup(t *testing.T) {
	mk := func(v float32) []*nn.Param[float32] {
		var ps []*nn.Param[float32]
		for _, name := range []string{"input_emb.weight", "head1_encoder.weight", "head1_decoder.weight", "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias", "decoder.weight"} {
			d := tensor.New[float32](1)
			d.Data[0] = v
			ps = append(ps, &nn.Param[float32]{Name: name, Value: d})
		}
		return ps
	}
	final, step := mk(1), mk(0)
	k, _ := swap.ParseKeptSet("decoder+linear2")
	ps, err := swap.Swapped(final, step, k)
	if err != nil {
		t.Fatal(err)
	}
	var got []float32
	for _, p := range ps {
		got = append(got, p.Value.Data[0])
	}
	if want := []float32{0, 0, 0, 0, 0, 1, 1, 1}; !slices.Equal(got, want) {
		t.Errorf("Swapped took %v, want %v (1: final)", got, want)
	}
	if _, err := swap.Swapped(final, step[:3], k); err == nil {
		t.Error("Swapped of different parameter lists: want an error")
	}
}

func TestWriteOutputs(t *testing.T) {
	r := tinyRun(t)
	opt := swap.Options{Every: 10}
	res, err := swap.Run(context.Background(), r, opt)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if err := swap.Write(out, r, opt, res, "test"); err != nil {
		t.Fatal(err)
	}
	recs := expiotest.ReadCSV(t, filepath.Join(out, swap.CSVFile))
	if len(recs) != 1+4*5 || recs[0][0] != "step" || recs[1][1] != "embedding+linear2+decoder" || recs[20][0] != "24" {
		t.Fatalf("CSV: %d records: want a header and 4 steps × 5 kept sets", len(recs))
	}
	var sum swap.Summary
	b := expiotest.ReadJSON(t, filepath.Join(out, swap.SummaryFile), &sum)
	if !sum.Complete || sum.RunFingerprint != epkfile.RunFingerprint(r.Manifest) || sum.Steps != 4 || len(sum.Headline) != 5 ||
		sum.Settings.Every != 10 || len(sum.Settings.Groups[swap.Attention]) != 4 || sum.Headline[0].FirstStepBelow < 0 {
		t.Errorf("summary %s", b)
	}
	expiotest.CheckFigure(t, filepath.Join(out, swap.FigureBase))
	if tmp, _ := filepath.Glob(filepath.Join(out, ".*")); len(tmp) != 0 {
		t.Errorf("temporary files left behind: %v", tmp)
	}
}

func TestInterruptedRunReturnsPartialResult(t *testing.T) {
	r := tinyRun(t)
	ctx, cancel := context.WithCancel(context.Background())
	opt := swap.Options{Every: 5, Progress: func(done, _ int) {
		if done == 2 {
			cancel()
		}
	}}
	res, err := swap.Run(ctx, r, opt)
	if !errors.Is(err, context.Canceled) || res == nil || res.Complete || len(res.Rows) != 2*5 {
		t.Fatalf("interrupted run: %v, %+v; want the rows of two steps and context.Canceled", err, res)
	}
	out := t.TempDir()
	if err := swap.Write(out, r, opt, res, "test"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(out, swap.SummaryFile))
	if !bytes.Contains(b, []byte(`"complete": false`)) {
		t.Errorf("summary of an interrupted run: %s", b)
	}
}
