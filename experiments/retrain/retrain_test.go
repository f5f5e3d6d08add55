package retrain_test

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/experiments/expio/expiotest"
	"github.com/explaind/explaind/experiments/retrain"
	"github.com/explaind/explaind/internal/testrun"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/train"
)

func TestMain(m *testing.M) { testrun.Main(m) }

// tinyRun opens the shared small modulo run (p = 7, 10 training and 8
// validation samples, 100 full-batch steps, checkpoints every 25). It
// memorizes much of its training set (all of it from about step 90 on in
// the pure-Go build; float rounding differs between GEMM backends, and
// such a small run's path with it); its validation samples stay unlearned,
// as p = 7 is too small to generalize.
func tinyRun(t testing.TB) *expio.Run {
	return expiotest.OpenTinyModuloRun(t, retrain.Command, 10, 100, 25)
}

// session returns a training session of the run's model holding state,
// with a fresh optimizer.
func session(t *testing.T, r *expio.Run, state []*nn.Param[float32]) *train.Session[float32] {
	t.Helper()
	m, err := train.BuildModel[float32](r.Config, r.Data)
	if err != nil {
		t.Fatal(err)
	}
	if err := expio.LoadParams(m.Params(), state); err != nil {
		t.Fatal(err)
	}
	opt, _ := train.BuildOptimizer[float32](r.Config)
	s, err := train.NewSession[float32](m, opt, r.Data.Train)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// perfect returns the run's final state trained on until it classifies
// every training sample correctly.
func perfect(t *testing.T, r *expio.Run) []*nn.Param[float32] {
	t.Helper()
	final, err := r.State(r.Steps())
	if err != nil {
		t.Fatal(err)
	}
	s := session(t, r, final)
	o, err := retrain.UntilPerfect(context.Background(), s, r.Data.Train, r.Config, 2000, 1, 0)
	if err != nil || o.Epochs < 0 {
		t.Fatalf("the tiny run's final model does not memorize its 10 training samples in 2000 more epochs: %+v, %v", o, err)
	}
	return expio.CopyParams(s.Params())
}

// memorized returns the run's data with the training set as validation
// set too, so that 100% on both is reachable by the tiny model.
func memorized(r *expio.Run) *train.Data[float32] {
	return &train.Data[float32]{Train: r.Data.Train, Val: r.Data.Train}
}

func TestPartsCoverTheModel(t *testing.T) {
	r := tinyRun(t)
	for _, p := range r.Session.Params() {
		var in []string
		for _, part := range retrain.Parts() {
			ok, err := retrain.InPart(part, p.Name)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				in = append(in, part)
			}
		}
		want := retrain.Pipeline
		switch {
		case strings.HasPrefix(p.Name, "head"):
			want = retrain.Attention
		case p.Name == "input_emb.weight" || p.Name == "decoder.weight":
			want = retrain.Outer
		}
		if !slices.Equal(in, []string{want}) {
			t.Errorf("%s is in parts %v, want [%s]", p.Name, in, want)
		}
	}
	if _, err := retrain.InPart("mlp", "linear1.weight"); err == nil || !strings.Contains(err.Error(), "outer, pipeline, attention") {
		t.Errorf("unknown part: %v", err)
	}
}

func TestCheckpoints(t *testing.T) {
	for _, c := range []struct {
		n, stride, limit int
		want             []int
	}{{24, 10, 0, []int{24, 14, 4}}, {20, 10, 0, []int{20, 10, 0}}, {24, 10, 2, []int{24, 14}}, {3, 100, 0, []int{3}}} {
		if got := retrain.Checkpoints(c.n, c.stride, c.limit); !slices.Equal(got, c.want) {
			t.Errorf("Checkpoints(%d, %d, %d) = %v, want %v", c.n, c.stride, c.limit, got, c.want)
		}
	}
}

func TestOptionsCheck(t *testing.T) {
	good := retrain.Options{Stride: 100, MaxEpochs: 500, Seeds: 5}
	for _, c := range []struct {
		edit func(*retrain.Options)
		want string
	}{
		{func(o *retrain.Options) { o.Parts = []string{"mlp"} }, "invalid Parts"},
		{func(o *retrain.Options) { o.Parts = []string{"outer", "outer"} }, "invalid Parts"},
		{func(o *retrain.Options) { o.Stride = 0 }, "invalid Stride"},
		{func(o *retrain.Options) { o.MaxEpochs = 0 }, "invalid MaxEpochs"},
		{func(o *retrain.Options) { o.Seeds = 0 }, "invalid Seeds"},
		{func(o *retrain.Options) { o.MaxCheckpoints = -1 }, "invalid MaxCheckpoints"},
		{func(o *retrain.Options) { o.Target = 1.5 }, "invalid Target"},
	} {
		o := good
		c.edit(&o)
		if err := o.Check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Check(%+v) = %v, want an error mentioning %s", o, err, c.want)
		}
	}
	o := good
	if err := o.Check(); err != nil || !slices.Equal(o.Parts, retrain.Parts()) || o.Target != 1 {
		t.Errorf("Check fills in all parts and a target of 1: %v, %+v", err, o)
	}
}

func values(ps []*nn.Param[float32]) map[string][]float32 {
	out := map[string][]float32{}
	for _, p := range ps {
		out[p.Name] = slices.Clone(p.Value.Data)
	}
	return out
}

// TestBuildRedrawsOnlyThePart: the part's parameters are drawn afresh,
// the same for every checkpoint and different for another seed; every
// other parameter is the checkpoint's, bit for bit.
func TestBuildRedrawsOnlyThePart(t *testing.T) {
	r := tinyRun(t)
	final, err := r.State(r.Steps())
	if err != nil {
		t.Fatal(err)
	}
	first, err := r.State(0)
	if err != nil {
		t.Fatal(err)
	}
	want := values(final)
	for _, part := range retrain.Parts() {
		job := retrain.Job{Config: r.Config, Data: r.Data, State: final, Part: part, Seed: 3}
		build := func(j retrain.Job) map[string][]float32 {
			s, err := retrain.Build(j)
			if err != nil {
				t.Fatal(err)
			}
			return values(s.Params())
		}
		got := build(job)
		again := build(job)
		other := job
		other.Seed = 4
		otherSeed := build(other)
		fromFirst := job
		fromFirst.State = first
		atFirst := build(fromFirst)
		for name, v := range got {
			in, _ := retrain.InPart(part, name)
			if !slices.Equal(again[name], v) {
				t.Errorf("part %s: %s differs between two builds with the same seed", part, name)
			}
			if in {
				if slices.Equal(v, want[name]) || slices.Equal(otherSeed[name], v) {
					t.Errorf("part %s: %s is not drawn afresh per seed", part, name)
				}
				if !slices.Equal(atFirst[name], v) {
					t.Errorf("part %s: %s is drawn differently for another checkpoint", part, name)
				}
			} else if !slices.Equal(v, want[name]) {
				t.Errorf("part %s: %s is not the checkpoint's", part, name)
			}
		}
	}
	if !slices.Equal(values(final)["linear1.weight"], want["linear1.weight"]) {
		t.Error("Build modified the checkpoint it loaded from")
	}
}

// TestZeroEpochsWhenAlreadyPerfect: a model at 100% before training is
// reported as 0 epochs, without training; one that cannot get there as −1.
func TestZeroEpochsWhenAlreadyPerfect(t *testing.T) {
	r := tinyRun(t)
	state := perfect(t, r)
	sess := session(t, r, state)
	o, err := retrain.UntilPerfect(context.Background(), sess, r.Data.Train, r.Config, 50, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if o.Epochs != 0 || o.EpochsRun != 0 || o.TrainEpochs != 0 || o.ValEpochs != 0 || o.InitTrainAcc != 1 || o.InitValAcc != 1 {
		t.Errorf("already perfect: %+v; want 0 epochs and no training", o)
	}
	if !slices.Equal(values(sess.Params())["linear1.weight"], values(state)["linear1.weight"]) {
		t.Error("the model was trained although it was already perfect")
	}
	// On the real validation set (never learned by this run) it does not
	// get there in 3 epochs: −1, after training all 3.
	o, err = retrain.UntilPerfect(context.Background(), session(t, r, state), r.Data.Val, r.Config, 3, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if o.Epochs != -1 || o.EpochsRun != 3 || o.TrainEpochs != 0 || o.ValEpochs != -1 || o.InitValAcc == 1 {
		t.Errorf("not reachable: %+v; want −1 after 3 epochs, training at 100%% from the start", o)
	}
}

// TestRetrainFromFinalCheckpoint: with a part drawn afresh, the run's
// final model learns its training set (the validation set here too)
// within the epoch budget, the same way every time; a lower target is met
// no later.
func TestRetrainFromFinalCheckpoint(t *testing.T) {
	r := tinyRun(t)
	final, err := r.State(r.Steps())
	if err != nil {
		t.Fatal(err)
	}
	const maxEpochs = 1000
	for _, part := range retrain.Parts() {
		job := retrain.Job{Config: r.Config, Data: memorized(r), State: final, Part: part, Seed: 1, MaxEpochs: maxEpochs}
		o, err := retrain.Retrain(context.Background(), job)
		if err != nil {
			t.Fatal(err)
		}
		if o.InitTrainAcc >= 1 {
			t.Fatalf("part %s: the re-drawn model is still at 100%% (%+v): the test proves nothing", part, o)
		}
		if o.Epochs < 1 || o.Epochs > maxEpochs || o.EpochsRun != o.Epochs || o.TrainAcc != 1 || o.ValAcc != 1 || o.TrainEpochs != o.Epochs || o.Diverged {
			t.Errorf("part %s: %+v; want 100%% after 1..%d epochs", part, o, maxEpochs)
		}
		again, err := retrain.Retrain(context.Background(), job)
		if err != nil || again != o {
			t.Errorf("part %s: a second retraining gave %+v (%v), the first %+v", part, again, err, o)
		}
		job.Target = 0.5
		half, err := retrain.Retrain(context.Background(), job)
		if err != nil || half.Epochs < 0 || half.Epochs > o.Epochs || half.TrainAcc < 0.5 {
			t.Errorf("part %s: target 50%%: %+v (%v); want at most %d epochs", part, half, err, o.Epochs)
		}
		t.Logf("part %s: %d epochs to 100%% (from %.2f), %d to 50%%", part, o.Epochs, o.InitTrainAcc, half.Epochs)
	}
	if _, err := retrain.Retrain(context.Background(), retrain.Job{Config: r.Config, Data: r.Data, State: final, Part: "mlp", MaxEpochs: 1}); err == nil {
		t.Error("an unknown part: want an error")
	}
}

func TestRunWritesOutputs(t *testing.T) {
	r := tinyRun(t)
	opt := retrain.Options{Parts: []string{retrain.Pipeline, retrain.Outer}, Stride: 50, MaxEpochs: 3, Seeds: 2}
	res, err := retrain.Run(context.Background(), r, opt)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Complete || !slices.Equal(res.Checkpoints, []int{100, 50, 0}) || len(res.Rows) != 3*2*2 {
		t.Fatalf("result: complete %v, checkpoints %v, %d rows; want 3 checkpoints × 2 parts × 2 seeds", res.Complete, res.Checkpoints, len(res.Rows))
	}
	if row := res.Rows[3]; row.Checkpoint != 100 || row.Part != retrain.Outer || row.Seed != 1 {
		t.Errorf("row 3 %+v: want checkpoint 100, outer, seed 1", row)
	}
	for _, row := range res.Rows {
		if row.Epochs != -1 || row.EpochsRun != 3 { // the validation set is never learned
			t.Errorf("row %+v: want −1 after 3 epochs", row)
		}
	}
	out := t.TempDir()
	if err := retrain.Write(out, r, opt, res, "test"); err != nil {
		t.Fatal(err)
	}
	recs := expiotest.ReadCSV(t, filepath.Join(out, retrain.CSVFile))
	if len(recs) != 13 || recs[0][3] != "epochs" || recs[1][0] != "100" || recs[1][3] != "-1" || recs[1][4] != "false" {
		t.Fatalf("CSV %v: want a header and 12 rows", recs)
	}
	var sum retrain.Summary
	b := expiotest.ReadJSON(t, filepath.Join(out, retrain.SummaryFile), &sum)
	if !sum.Complete || sum.RunFingerprint != epkfile.RunFingerprint(r.Manifest) || len(sum.Points) != 6 || sum.Points[0].Checkpoint != 0 ||
		sum.Points[0].Mean != 3 || sum.Points[0].Reached != 0 || len(sum.Headline) != 2 || sum.Headline[0].LatestUnreached != 100 ||
		!slices.Equal(sum.Settings.PartParams[retrain.Outer], []string{"input_emb.weight", "decoder.weight"}) {
		t.Errorf("summary %s", b)
	}
	for _, pt := range sum.Points {
		var tr, va float64
		n := 0
		for _, row := range res.Rows {
			if row.Checkpoint == pt.Checkpoint && row.Part == pt.Part {
				tr, va, n = tr+row.TrainAcc, va+row.ValAcc, n+1
			}
		}
		if n != 2 || !(math.Abs(pt.FinalTrainAcc-tr/2) <= 1e-12) || !(math.Abs(pt.FinalValAcc-va/2) <= 1e-12) {
			t.Errorf("point %+v: final accuracies are not the mean of its %d rows (%g, %g)", pt, n, tr/2, va/2)
		}
	}
	expiotest.CheckFigure(t, filepath.Join(out, retrain.FigureBase))
}

func TestInterruptedRun(t *testing.T) {
	r := tinyRun(t)
	ctx, cancel := context.WithCancel(context.Background())
	opt := retrain.Options{Parts: []string{retrain.Attention}, Stride: 50, MaxEpochs: 2, Seeds: 2, Progress: func(done, _ int) {
		if done == 3 {
			cancel()
		}
	}}
	res, err := retrain.Run(ctx, r, opt)
	if !errors.Is(err, context.Canceled) || res == nil || res.Complete || len(res.Rows) != 3 {
		t.Fatalf("interrupted: %v, %+v; want 3 rows and context.Canceled", err, res)
	}
}
