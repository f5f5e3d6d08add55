package train

import (
	"github.com/explaind/explaind/setting"

	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/explaind/explaind/data"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/atomicfile"
	"github.com/explaind/explaind/internal/lock"
	"github.com/explaind/explaind/internal/progress"
	"github.com/explaind/explaind/tensor"
)

// MetricsFile and SummaryFile are written into the run directory.
const (
	MetricsFile = "metrics.jsonl"
	SummaryFile = "summary.json"
)

// EpochMetrics is one line of metrics.jsonl.
type EpochMetrics struct {
	Epoch int `json:"epoch"`
	// Step is the number of steps done at the end of the epoch.
	Step      int     `json:"step"`
	LR        float64 `json:"lr"`
	TrainLoss float64 `json:"train_loss"`
	TrainAcc  float64 `json:"train_acc"`
	ValLoss   float64 `json:"val_loss"`
	ValAcc    float64 `json:"val_acc"`
	// TrainEval says how the training figures were measured: "full" (the
	// whole training set after the epoch) or "batches" (mean over the
	// epoch's batches, before each update).
	TrainEval string  `json:"train_eval"`
	Seconds   float64 `json:"seconds"`
}

// Summary is written to summary.json at the end of training.
type Summary struct {
	Task       string  `json:"task"`
	Done       bool    `json:"done"`
	StopReason string  `json:"stop_reason"`
	Steps      int     `json:"steps"`
	Epochs     int     `json:"epochs"`
	TrainLoss  float64 `json:"train_loss"`
	TrainAcc   float64 `json:"train_acc"`
	ValLoss    float64 `json:"val_loss"`
	ValAcc     float64 `json:"val_acc"`
	// PerfectStep is the first step after which training and validation
	// accuracy were both 100% (-1 if never).
	PerfectStep int     `json:"perfect_step"`
	WallSeconds float64 `json:"wall_seconds"`
	BytesOnDisk int64   `json:"bytes_on_disk"`
	Software    string  `json:"software"`
}

// Options control a training run's side effects.
type Options struct {
	// Overwrite allows replacing an existing run directory.
	Overwrite bool
	// Progress receives the progress bar (nil: none).
	Progress io.Writer
	// Steps, if set, is called after every step with the steps recorded
	// and the most the run can take (its epochs' steps), instead of the
	// bar on Progress: a caller's own progress display (the demo's bar
	// over its stages).
	Steps func(done, total int)
	// Software is recorded in the manifest.
	Software string
	// EvalChunk bounds the samples per forward pass when evaluating.
	EvalChunk int
}

// Train runs a new training job into dir. It stops when the epochs are
// done, when the configured accuracy criterion is met, or when ctx is
// cancelled (Ctrl-C): then it writes a checkpoint and returns a summary
// with Done false, and Resume continues the run. It holds dir's lock
// (internal/lock) throughout: a second process writing dir is refused.
func Train[T tensor.Float](ctx context.Context, dir string, cfg Config, opt Options) (*Summary, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	j, err := newJob[T](&cfg)
	if err != nil {
		return nil, err
	}
	l, err := lock.Dir(dir)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	defer l.Release()
	rec, err := history.Create[T](dir, j.sess, history.Options{
		Config: cfg.Marshal(), Datasets: j.datasets(), CheckpointEvery: cfg.CheckpointEvery,
		Overwrite: opt.Overwrite, Software: opt.Software,
	})
	if err != nil {
		return nil, err
	}
	if err := j.writeSplits(dir, false); err != nil {
		return nil, err
	}
	j.fresh = true
	return j.run(ctx, dir, rec, opt)
}

// Resume continues an interrupted run in dir from its last checkpoint,
// holding dir's lock as Train does.
func Resume[T tensor.Float](ctx context.Context, dir string, opt Options) (*Summary, error) {
	l, err := lock.Dir(dir)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	defer l.Release()
	j, err := reopen[T](dir)
	if err != nil {
		return nil, err
	}
	rec, err := history.Resume[T](dir, j.sess)
	if err != nil {
		return nil, err
	}
	// A start killed after its first manifest but before the splits.
	if err := j.writeSplits(dir, true); err != nil {
		return nil, err
	}
	ms, err := ReadMetrics(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ms {
		if e.Step <= rec.Steps() { // the epochs done by the checkpoint resumed from
			j.metrics = append(j.metrics, e)
		}
	}
	return j.run(ctx, dir, rec, opt)
}

// An Opened run is a recorded run rebuilt for replay.
type Opened[T tensor.Float] struct {
	Replay  *history.Replay[T]
	Session *Session[T]
	Config  *Config
	// Data holds the run's datasets, checked against the manifest's
	// fingerprints; Session trains on Data.Train.
	Data *Data[T]
}

// Open rebuilds a recorded run for replay: the model, optimizer and data
// from the manifest's configuration, checked against its fingerprints.
func Open[T tensor.Float](dir string) (*Opened[T], error) {
	j, err := reopen[T](dir)
	if err != nil {
		return nil, err
	}
	r, err := history.Open[T](dir, j.sess)
	if err != nil {
		return nil, err
	}
	return &Opened[T]{Replay: r, Session: j.sess, Config: j.cfg, Data: j.data}, nil
}

// reopen rebuilds the job of the recorded run in dir from its manifest's
// configuration, with its datasets checked against the recorded
// fingerprints.
// writeSplits writes a modulo run's train and validation splits to
// dir/splits/{train,val}.csv (other tasks have none); with missingOnly,
// only the files that are missing. The splits follow from the
// configuration alone, so a rewritten file equals the one a run started
// without interruption wrote.
func (j *job[T]) writeSplits(dir string, missingOnly bool) error {
	if j.data.ModuloTrain == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Join(dir, "splits"), 0o755); err != nil {
		return err
	}
	for _, f := range []struct {
		name  string
		split *data.ModuloSplit
	}{{"train.csv", j.data.ModuloTrain}, {"val.csv", j.data.ModuloVal}} {
		path := filepath.Join(dir, "splits", f.name)
		if _, err := os.Stat(path); missingOnly && err == nil {
			continue
		}
		if err := f.split.WriteCSV(path); err != nil {
			return err
		}
	}
	return nil
}

func reopen[T tensor.Float](dir string) (*job[T], error) {
	m, cfg, err := readRun(dir)
	if err != nil {
		return nil, err
	}
	j, err := newJob[T](cfg)
	if err != nil {
		return nil, err
	}
	if err := j.checkDatasets(m); err != nil {
		return nil, err
	}
	return j, nil
}

// ManifestConfig returns the training configuration a run's manifest
// records (history.Manifest.Config, written by Train), checked by
// Validate as Train checked it. Its error does not name the run; callers
// add the directory.
func ManifestConfig(m *history.Manifest) (*Config, error) {
	var c Config
	if err := json.Unmarshal(m.Config, &c); err != nil {
		return nil, fmt.Errorf("the manifest's configuration is unreadable: %v", err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("the manifest's configuration is invalid: %v", err)
	}
	return &c, nil
}

// readRun reads the manifest of the run in dir and its configuration.
func readRun(dir string) (*history.Manifest, *Config, error) {
	m, err := history.ReadManifest(dir)
	if err != nil {
		return nil, nil, err
	}
	c, err := ManifestConfig(m)
	if err != nil {
		return nil, nil, fmt.Errorf("train: %s: %w", dir, err)
	}
	return m, c, nil
}

// job is a training run being executed.
type job[T tensor.Float] struct {
	cfg     *Config
	data    *Data[T]
	sess    *Session[T]
	metrics []EpochMetrics
	// fresh is set when the whole run is trained by this process, which
	// then stamps it as verified (history.WriteStamp).
	fresh bool
}

func newJob[T tensor.Float](cfg *Config) (*job[T], error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d, err := LoadData[T](cfg)
	if err != nil {
		return nil, err
	}
	if cfg.BatchSize > d.Train.Len() {
		return nil, fmt.Errorf("train: %w", setting.Invalid("BatchSize", cfg.BatchSize, "larger than the %d training samples", d.Train.Len()))
	}
	model, err := BuildModel[T](cfg, d)
	if err != nil {
		return nil, err
	}
	opt, err := BuildOptimizer[T](cfg)
	if err != nil {
		return nil, err
	}
	sess, err := NewSession[T](model, opt, d.Train)
	if err != nil {
		return nil, err
	}
	return &job[T]{cfg: cfg, data: d, sess: sess}, nil
}

func info[T tensor.Float](d data.Dataset[T]) history.DatasetInfo {
	return history.DatasetInfo{Name: d.Name, Samples: d.Len(), Classes: d.Classes, Fingerprint: d.Fingerprint()}
}

func (j *job[T]) datasets() map[string]history.DatasetInfo {
	return map[string]history.DatasetInfo{"train": info(j.data.Train), "val": info(j.data.Val)}
}

// checkDatasets refuses to continue or replay a run on different data.
func (j *job[T]) checkDatasets(m *history.Manifest) error {
	for role, now := range j.datasets() {
		if was, ok := m.Datasets[role]; ok && was.Fingerprint != now.Fingerprint {
			return setting.Errorf("train: the %s data (%s, %d samples) differs from the data the run was trained on (%s, %d samples, fingerprint %.12s…): point %v at the original files", role, now.Name, now.Samples, was.Name, was.Samples, was.Fingerprint, setting.Name("CNN.DataDir"))
		}
	}
	return nil
}

// epochBatches returns the batches of an epoch: nil for full batch, else
// a permutation drawn from a generator seeded by (seed, epoch), so any
// epoch's batches can be recomputed without replaying the ones before.
func (j *job[T]) epochBatches(epoch int) ([][]int, error) {
	if j.cfg.BatchSize == 0 {
		return [][]int{nil}, nil
	}
	rng := rand.New(rand.NewPCG(j.cfg.Seed, 0x6261746368000000+uint64(epoch))) // "batch"+epoch
	return data.EpochBatches(rng, j.data.Train.Len(), j.cfg.BatchSize)
}

// flips returns the flip draws of a step's batch ("" without augmentation).
func (j *job[T]) flips(step, n int) string {
	if j.cfg.CNN == nil || !j.cfg.CNN.Flip {
		return ""
	}
	rng := rand.New(rand.NewPCG(j.cfg.Seed, 0x666c697000000000+uint64(step))) // "flip"+step
	return EncodeFlips(data.FlipDraws(rng, n))
}

func (j *job[T]) run(ctx context.Context, dir string, rec *history.Recorder[T], opt Options) (*Summary, error) {
	start := time.Now()
	cfg := j.cfg
	spe := cfg.StepsPerEpoch(j.data.Train.Len())
	sched, err := cfg.BuildSchedule(j.data.Train.Len())
	if err != nil {
		return nil, err
	}
	var bar *progress.Bar
	if opt.Progress != nil && opt.Steps == nil {
		bar = progress.New(opt.Progress, cfg.Epochs*spe, rec.Steps(), "training", "steps")
	}
	sum := &Summary{Task: cfg.Task, PerfectStep: -1, Software: opt.Software}
	for _, m := range j.metrics {
		if m.TrainAcc == 1 && m.ValAcc == 1 && sum.PerfectStep < 0 {
			sum.PerfectStep = m.Step
		}
	}
	stop := ""
	// The epoch being trained, its start, and its batch losses and
	// accuracies summed over its stepped steps.
	var (
		epoch, stepped  int
		lossSum, accSum float64
		t0              time.Time
		batches         [][]int
	)
	// endEpoch appends the metrics of the epoch that ends at the current
	// step, once, from its batches' sums.
	endEpoch := func(lossSum, accSum float64, done int) error {
		step := rec.Steps()
		if n := len(j.metrics); n > 0 && j.metrics[n-1].Step == step {
			return nil
		}
		m := EpochMetrics{Epoch: epoch, Step: step, LR: sched.LR(step - 1)}
		var err error
		if cfg.BatchSize == 0 {
			m.TrainEval = "full"
			if m.TrainLoss, m.TrainAcc, err = Evaluate(j.sess.Model, j.data.Train, opt.EvalChunk); err != nil {
				return err
			}
		} else {
			m.TrainEval = "batches"
			m.TrainLoss, m.TrainAcc = lossSum/float64(done), accSum/float64(done)
		}
		if m.ValLoss, m.ValAcc, err = Evaluate(j.sess.Model, j.data.Val, opt.EvalChunk); err != nil {
			return err
		}
		m.Seconds = time.Since(t0).Seconds()
		j.metrics = append(j.metrics, m)
		return nil
	}
	// A checkpoint at the last step of an epoch (written inside rec.Step,
	// before the step's loss is summed) first adds that epoch's metrics,
	// so that the metrics file is never behind the manifest: a resume
	// from that checkpoint starts with the next epoch and would otherwise
	// lose them.
	rec.OnCheckpoint = func(step int) error {
		if l := j.sess.LastLoss; batches != nil && step == epoch*spe+len(batches) && !math.IsNaN(l) && !math.IsInf(l, 0) {
			if err := endEpoch(lossSum+l, accSum+j.sess.LastAccuracy, stepped+1); err != nil {
				return err
			}
		}
		return writeMetrics(filepath.Join(dir, MetricsFile), j.metrics)
	}
	for epoch = rec.Steps() / spe; epoch < cfg.Epochs && stop == ""; epoch++ {
		t0 = time.Now()
		if batches, err = j.epochBatches(epoch); err != nil {
			return nil, err
		}
		lossSum, accSum, stepped = 0, 0, 0
		for i := rec.Steps() - epoch*spe; i < len(batches); i++ {
			step := epoch*spe + i
			n := len(batches[i])
			r := history.StepRecord{Epoch: epoch, LR: sched.LR(step), WeightDecay: cfg.Optimizer.WeightDecay,
				Batch: batches[i], Flips: j.flips(step, n)}
			if err := rec.Step(r); err != nil {
				return nil, err
			}
			if l := j.sess.LastLoss; math.IsNaN(l) || math.IsInf(l, 0) {
				rec.OnCheckpoint = nil // NaN metrics cannot be written; without this the manifest would not record the divergence (history.DivergedReason)
				rec.Close(false, history.DivergedReason(step))
				return nil, setting.Errorf("train: the loss became %v at step %d: training diverged; lower %v (now %g)", l, step, setting.Name("Optimizer.LR"), cfg.Optimizer.LR)
			}
			lossSum += j.sess.LastLoss
			accSum += j.sess.LastAccuracy
			stepped++
			if bar != nil {
				bar.Add(1)
			}
			if opt.Steps != nil {
				opt.Steps(rec.Steps(), cfg.Epochs*spe)
			}
			if ctx.Err() != nil {
				stop = "interrupted"
				break
			}
		}
		if stop != "" && stepped < len(batches) {
			break // a partial epoch gets no metrics line
		}
		if err := endEpoch(lossSum, accSum, stepped); err != nil {
			return nil, err
		}
		m := j.metrics[len(j.metrics)-1]
		if bar != nil {
			bar.Describe(fmt.Sprintf("epoch %d: loss %.4f, train %.1f%%, val %.1f%%", epoch+1, m.TrainLoss, 100*m.TrainAcc, 100*m.ValAcc))
		}
		if m.TrainAcc == 1 && m.ValAcc == 1 && sum.PerfectStep < 0 {
			sum.PerfectStep = m.Step
		}
		if thr := AccuracyTarget(cfg.StopAccuracy); cfg.StopAtPerfect && stop == "" && m.TrainAcc >= thr && m.ValAcc >= thr {
			stop = "perfect"
		}
	}
	if bar != nil {
		bar.Finish()
	}
	done := stop != "interrupted"
	if stop == "" {
		stop = "epochs"
	}
	reasons := map[string]string{"perfect": fmt.Sprintf("training and validation accuracy reached %g%%", 100*AccuracyTarget(cfg.StopAccuracy)), "epochs": "all epochs done",
		"interrupted": "interrupted; continue with: explaind train --resume " + dir}
	if err := rec.Close(done, reasons[stop]); err != nil {
		return nil, err
	}
	if done && j.fresh {
		// Replay runs the code that trained, so the executable that
		// trained the whole run reproduces it: stamping it spares later
		// jobs a full pre-flight replay. The stamp is only a cache.
		_ = history.WriteStamp(dir, rec.Steps(), "trained", opt.Software)
	}
	sum.Done, sum.StopReason, sum.Steps = done, reasons[stop], rec.Steps()
	if n := len(j.metrics); n > 0 {
		last := j.metrics[n-1]
		sum.Epochs, sum.TrainLoss, sum.TrainAcc, sum.ValLoss, sum.ValAcc = last.Epoch+1, last.TrainLoss, last.TrainAcc, last.ValLoss, last.ValAcc
	}
	sum.WallSeconds = time.Since(start).Seconds()
	if err := writeJSON(filepath.Join(dir, SummaryFile), sum); err != nil {
		return nil, err
	}
	sum.BytesOnDisk = dirSize(dir)
	return sum, writeJSON(filepath.Join(dir, SummaryFile), sum)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(path, append(b, '\n'))
}

func writeMetrics(path string, ms []EpochMetrics) error {
	return atomicfile.Write(path, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		for _, m := range ms {
			if err := enc.Encode(m); err != nil {
				return err
			}
		}
		return nil
	})
}

// ReadMetrics reads the run's metrics.jsonl (MetricsFile in dir), one
// EpochMetrics a line; blank lines are skipped. A run without the file
// has no metrics and no error.
func ReadMetrics(dir string) ([]EpochMetrics, error) {
	path := filepath.Join(dir, MetricsFile)
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	var out []EpochMetrics
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for line := 1; sc.Scan(); line++ {
		l := bytes.TrimSpace(sc.Bytes())
		if len(l) == 0 {
			continue
		}
		var m EpochMetrics
		if err := json.Unmarshal(l, &m); err != nil {
			return nil, fmt.Errorf("train: %s line %d: %v", path, line, err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("train: %s: %w", path, err)
	}
	return out, nil
}

// dirSize returns the bytes of the regular files under dir, lock files
// aside.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && !lock.IsLockFile(d.Name()) {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
