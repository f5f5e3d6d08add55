// Package job runs `explaind epk`: it opens a recorded run, turns the
// presets into explain queries, evaluates them in one pass over the
// history and writes an epkfile directory with summary.json. A job saves
// its state while it runs, and rerunning the same job resumes it.
package job

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/explaind/explaind/data"
	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/explain"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/atomicfile"
	"github.com/explaind/explaind/internal/localpath"
	"github.com/explaind/explaind/internal/lock"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/setting"
	"github.com/explaind/explaind/shard"
	"github.com/explaind/explaind/tensor"
)

// Options describe a job.
type Options struct {
	// Run and Out are the run directory and the output directory.
	Run, Out string
	// Presets are among epkfile.Presets (default: validation).
	Presets []string
	// TestSize is the number of test samples, the first of the split
	// (0: all); TestIndices, if set, name them instead.
	TestSize    int
	TestIndices []int
	// Shard, if set, is the part of the job this process computes: the
	// block Shard.Range of the test samples selected by TestSize or
	// TestIndices (package shard). Its output is a complete output of
	// those samples that records the shard (epkfile.Shard); Merge joins
	// the shards' outputs into the whole job's.
	Shard shard.Shard
	// TestSplit is the split the test samples are drawn from: "" for the
	// run's evaluation split (the modulo run's "val", the CNN run's
	// "test"), which may also be named, or "train" to explain training
	// samples (the validation statistics are then computed on them).
	TestSplit string
	// SnapshotEvery is the history preset's snapshot interval in steps
	// (0: DefaultSnapshotEvery).
	SnapshotEvery int
	// Quadrature is "adaptive" (default), "exact:K", "midpoint:K" or
	// "gauss:K"; Tol the completeness residual per step and per (test
	// sample, class) that adaptive and exact certify (0: 1e-6 in float64,
	// 1e-4 in float32; at least epk.MinTol32 in float32). A step that
	// misses it within the node budget is listed in the summary, which is
	// then not certified.
	Quadrature string
	Tol        float64
	// Precision is "float64" (default) or "float32".
	Precision string
	// From and To are the steps [From, To) (To 0: all).
	From, To int
	// MaxBytes is the memory ceiling (0: none); Chunk the test samples
	// a worker evaluates together (0: explain's default, sized by the
	// model's working set: see explain.ChunkValues);
	// Workers the chunks evaluated at once, each on
	// its own model instance (0: one per processor).
	MaxBytes int64
	Chunk    int
	Workers  int
	// Software is recorded in the manifest.
	Software string
	// Progress, if set, is called after each step with the steps done and
	// the total.
	Progress func(done, total int)
	// CheckpointEvery is how often the job's state is saved (0: 10 min);
	// with CheckpointCost c > 0, a state that takes d to save is saved at
	// most every c·d (explain.Spec.CheckpointCost), so that saving costs
	// at most 1/c of the job's time.
	CheckpointEvery time.Duration
	CheckpointCost  float64
	// Log receives notes (nil: none).
	Log io.Writer
}

// DefaultCheckpointCost is the CheckpointCost of explaind's commands:
// saving costs at most 2 % of a job's time. Measured on the paper run's
// 2000 samples: its 1.9 GB state takes 8 s to write and sync, so the
// demo's 2-minute interval becomes 400 s (every 2 minutes, saving took
// 6 % of the EPK stage, with the workers idle).
const DefaultCheckpointCost = 50

// DefaultSnapshotEvery is the history preset's snapshot interval when
// Options.SnapshotEvery is 0.
const DefaultSnapshotEvery = 50

// Summary is DIR/summary.json.
type Summary struct {
	Run         string   `json:"run"`
	Presets     []string `json:"presets"`
	Steps       [2]int   `json:"steps"`
	TestSamples int      `json:"test_samples"`
	// TestSplit is the split the test samples come from.
	TestSplit       string  `json:"test_split,omitempty"`
	Classes         int     `json:"classes"`
	Quadrature      string  `json:"quadrature"`
	Tol             float64 `json:"tol"`
	Precision       string  `json:"precision"`
	ArgmaxAgreement float64 `json:"argmax_agreement"`
	Accuracy        float64 `json:"accuracy"`
	ModelAccuracy   float64 `json:"model_accuracy"`
	MeanAbsDelta    float64 `json:"mean_abs_delta"`
	MaxAbsDelta     float64 `json:"max_abs_delta"`
	StdDelta        float64 `json:"std_delta"`
	KLDiv           float64 `json:"kl_div"`
	// MaxCompletenessResidual is the largest per-step completeness
	// residual |Σ contributions of step s − (f(θ_{s+1}) − f(θ_s))| over
	// steps, test samples and classes.
	MaxCompletenessResidual float64 `json:"max_completeness_residual"`
	// MaxUpdateResidual is the largest update-reconstruction residual of a
	// parameter element; IdentityResidual is max |f0 + data + reg + resid
	// − quadrature residual − model|, which is rounding only.
	MaxUpdateResidual float64 `json:"max_update_residual"`
	IdentityResidual  float64 `json:"identity_residual"`
	// KernelResidual is the relative gap between the data kernel summed
	// over training samples and the forward data contributions.
	KernelResidual     float64 `json:"kernel_residual,omitempty"`
	NodesPerSampleStep float64 `json:"nodes_per_sample_step"`
	// Certified reports that every step's completeness residual was
	// measured at most Tol for every test sample and class: never for
	// the midpoint and gauss rules, which have no tolerance. MissedCount
	// is the number of (step, test sample) pairs that missed Tol, and
	// Missed lists them, the largest residuals first, at most
	// MaxListedMisses of them.
	Certified   bool         `json:"certified"`
	MissedCount int          `json:"missed_count"`
	Missed      []MissedStep `json:"missed,omitempty"`

	WallSeconds  float64 `json:"wall_seconds"`
	PeakRSSBytes int64   `json:"peak_rss_bytes"`
	Software     string  `json:"software"`
	// Shard is the shard ("i/n") of a shard output's summary, whose
	// statistics are over the shard's test samples.
	Shard string `json:"shard,omitempty"`
}

// MissedStep is a step at which a test sample's completeness residual,
// max over classes, missed the tolerance.
type MissedStep struct {
	// Step is the training step s, TestIndex the sample's index in the
	// test split.
	Step      int `json:"step"`
	TestIndex int `json:"test_index"`
	// Residual is the residual; NaN marks one that is not a number
	// (Residual is then 0, which JSON can hold).
	Residual float64 `json:"residual"`
	NaN      bool    `json:"nan,omitempty"`
}

// MaxListedMisses bounds Summary.Missed.
const MaxListedMisses = 1000

// Run executes the job (or resumes it) and returns its summary.
func Run(ctx context.Context, o Options) (*Summary, error) {
	if o.Run == "" || o.Out == "" {
		return nil, setting.Errorf("name the run (%v) and the output directory (%v)", setting.Name("Run"), setting.Name("Out"))
	}
	if err := o.Shard.Check(); err != nil {
		return nil, setting.Errorf("invalid %v: %w", setting.Name("Shard"), err)
	}
	if o.Shard.IsZero() && o.Log != nil {
		if note := shard.Env(); note != "" {
			fmt.Fprintln(o.Log, note)
		}
	}
	if err := checkTol(o); err != nil {
		return nil, err
	}
	m, err := history.ReadManifest(o.Run)
	if err != nil {
		return nil, err
	}
	if o.Precision == "" {
		o.Precision = "float64"
	}
	switch {
	case m.Dtype == "float32" && o.Precision == "float64":
		return run[float32, float64](ctx, o, m)
	case m.Dtype == "float32" && o.Precision == "float32":
		return run[float32, float32](ctx, o, m)
	case m.Dtype == "float64" && o.Precision == "float64":
		return run[float64, float64](ctx, o, m)
	case m.Dtype == "float64" && o.Precision == "float32":
		return run[float64, float32](ctx, o, m)
	}
	return nil, setting.Invalid("Precision", strconv.Quote(o.Precision), "want float32 or float64")
}

// jobKey identifies a job for resuming: the same run, presets, test set,
// steps, rule and precision. The test set is the whole job's: shards of
// one job share its key (shardKey tells them apart). q is the quadrature
// with the evaluator's defaults filled in (epk.Filled), so that a build
// whose defaults differ (the adaptive rule's starting intervals, say)
// does not resume, or merge with, a job saved by another.
func jobKey(o Options, fp string, idx []int, q epk.Quadrature) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s|%v|%v|%d:%d|%+v|%s", fp, o.Presets, idx, o.From, o.To, q, o.Precision)
	// Settings added later enter the key only when they matter, so that
	// the jobs before them keep their keys.
	if o.TestSplit == "train" {
		fmt.Fprintf(h, "|split=%s", o.TestSplit)
	}
	if slices.Contains(o.Presets, epkfile.History) {
		fmt.Fprintf(h, "|snapshot-every=%d", o.SnapshotEvery)
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// shardKey identifies shard s of the job whole: the key a shard output
// records as its Job, so that a rerun of the shard resumes it and no other
// job (nor another shard) takes it for its own.
func shardKey(whole string, s shard.Shard) string {
	if s.IsZero() {
		return whole
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s|shard %d/%d", whole, s.Index, s.Count)
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// saved is the job state file DIR/.epk-state.gob.
type saved struct {
	Key   string
	State *explain.State
}

// stateFile is the job state's file name in the output directory.
const stateFile = ".epk-state.gob"

func statePath(out string) string { return filepath.Join(out, stateFile) }

func run[T, E tensor.Float](ctx context.Context, o Options, m *history.Manifest) (*Summary, error) {
	start := time.Now()
	presets, err := canonicalPresets(o.Presets)
	if err != nil {
		return nil, err
	}
	o.Presets = presets
	if o.SnapshotEvery < 0 {
		return nil, setting.Invalid("SnapshotEvery", o.SnapshotEvery, "the history preset's snapshot interval must be at least 1 step")
	}
	if o.SnapshotEvery == 0 {
		o.SnapshotEvery = DefaultSnapshotEvery
	}
	if m.Dtype == "" {
		return nil, fmt.Errorf("%s: the manifest names no dtype", o.Run)
	}
	tr, err := OpenRun[T, E](o.Run)
	if err != nil {
		return nil, err
	}
	q, err := quadrature(o, tr.Model, tr.Path)
	if err != nil {
		return nil, err
	}
	split, set, all, err := testIndices(tr, o)
	if err != nil {
		return nil, err
	}
	o.TestSplit = split
	if !o.Shard.IsZero() && slices.Contains(o.Presets, epkfile.History) {
		return nil, setting.Invalid("Shard", o.Shard, "the %s preset's Gram matrices pair every two test samples, so it cannot be sharded; "+
			"compute it in one job (its cost grows with the samples squared only in the snapshots)", epkfile.History)
	}
	lo, hi, err := o.Shard.Range(len(all))
	if err != nil {
		return nil, setting.Invalid("Shard", o.Shard, "the job has %d test samples: %v", len(all), err)
	}
	idx := all[lo:hi]
	test, err := set.Subset(idx)
	if err != nil {
		return nil, err
	}
	steps := tr.Source.Replay.Steps()
	to := o.To
	if to == 0 {
		to = steps
	}
	if o.From < 0 || to > steps || o.From >= to {
		return nil, setting.Invalid("From:To", fmt.Sprintf("%d:%d", o.From, to), "the run has %d steps (want 0 ≤ FROM < TO ≤ %d)",
			steps, steps)
	}
	o.To = to
	if o.Quadrature == "" {
		o.Quadrature = "adaptive"
	}
	fp := epkfile.RunFingerprint(m)
	filled, err := epk.Filled[E](q)
	if err != nil {
		return nil, err
	}
	whole := jobKey(o, fp, all, filled)
	key := shardKey(whole, o.Shard)
	var record *epkfile.Shard
	if !o.Shard.IsZero() {
		record = &epkfile.Shard{Index: o.Shard.Index, Count: o.Shard.Count, Samples: [2]int{lo, hi}, Of: len(all),
			TestIndices: idx, WholeJob: whole}
	}
	l, err := lock.Dir(o.Out)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	resume, err := resumeState(o, key)
	if errors.Is(err, errFinished) {
		return finished(o)
	}
	if err != nil {
		return nil, err
	}
	qs := queries(presets)
	var groups []explain.TensorGroup
	var gram *gramFile
	for i := range qs {
		if qs[i].Gram > 0 {
			qs[i].Gram = o.SnapshotEvery
			groups = historyGroups(tr.Model)
			K := len(explain.SnapshotSteps(o.SnapshotEvery, o.From, to))
			gram = newGramFile(o.Out, qs[i].Name, K, len(groups), len(idx), resume != nil)
			defer gram.close()
		}
	}
	spec := explain.Spec[E]{
		Queries:    qs,
		Groups:     groups,
		Test:       explain.TestSet[E]{X: test.Inputs, Labels: test.Labels},
		From:       o.From,
		To:         to,
		Quadrature: q,
		Chunk:      o.Chunk,
		Workers:    o.Workers,
		NewModel:   tr.NewModel,
		MaxBytes:   o.MaxBytes,
		Progress:   o.Progress,
		Resume:     resume,
	}
	if gram != nil {
		spec.Snapshots = gram
	}
	spec.CheckpointEvery, spec.CheckpointCost = o.CheckpointEvery, o.CheckpointCost
	if spec.CheckpointEvery <= 0 {
		spec.CheckpointEvery = 10 * time.Minute
	}
	spec.Checkpoint = func(st *explain.State) error {
		if err := os.MkdirAll(o.Out, 0o755); err != nil {
			return err
		}
		st.Wall = time.Since(start)
		if resume != nil {
			st.Wall += resume.Wall
		}
		if gram != nil {
			// The snapshots the state counts are on disk before it is.
			if err := gram.sync(); err != nil {
				return err
			}
		}
		return atomicfile.Write(statePath(o.Out), func(w io.Writer) error {
			return writeState(w, saved{Key: key, State: st})
		})
	}
	if resume == nil {
		spec.Preflight = func() error { return preflight(ctx, o, tr.Source.Replay, to) }
	}
	out, err := explain.Run(ctx, tr.Source, tr.Model, tr.Path, spec)
	if err != nil {
		if errors.Is(err, explain.ErrInterrupted) {
			return nil, fmt.Errorf("interrupted; the job's state is saved in %s: rerun the same command to resume", o.Out)
		}
		return nil, err
	}
	return write(o, target{key: key, split: split, fp: fp, idx: idx, labels: test.Labels, tol: q.Tol, shard: record, gram: gram}, out)
}

// canonicalPresets checks the presets named and returns them in the order
// of epkfile.Presets, with validation always (and alone when none is named).
func canonicalPresets(named []string) ([]string, error) {
	if len(named) == 0 {
		named = []string{epkfile.Validation}
	}
	var presets []string
	for _, p := range epkfile.Presets {
		if p == epkfile.Validation || slices.Contains(named, p) {
			presets = append(presets, p)
		}
	}
	for _, p := range named {
		if !slices.Contains(epkfile.Presets, p) {
			return nil, fmt.Errorf("unknown preset %q (want %s)", p, strings.Join(epkfile.Presets, ", "))
		}
	}
	return presets, nil
}

// testIndices returns the name of the split the test samples come from
// (Options.TestSplit; by default the modulo run's validation split, the
// CNN run's test split), that split, and the samples' indices in it:
// Options.TestIndices, or the first TestSize samples (0: all).
func testIndices[T, E tensor.Float](tr *TrainRun[T, E], o Options) (split string, val data.Dataset[E], idx []int, err error) {
	val = tr.Data.Val
	split = "val"
	if tr.Config.Task == "cnn" {
		split = "test"
	}
	switch o.TestSplit {
	case "", split:
	case "train":
		split, val = "train", tr.Data.Train
	default:
		return "", val, nil, setting.Invalid("TestSplit", strconv.Quote(o.TestSplit), "this run's splits are %s and train", split)
	}
	idx = o.TestIndices
	if idx == nil {
		n := val.Len()
		if o.TestSize < 0 || o.TestSize > n {
			return "", val, nil, setting.Invalid("TestSize", o.TestSize, "the %s split has %d samples", split, n)
		}
		if o.TestSize > 0 {
			n = o.TestSize
		}
		for i := 0; i < n; i++ {
			idx = append(idx, i)
		}
	}
	for _, i := range idx {
		if i < 0 || i >= val.Len() {
			return "", val, nil, fmt.Errorf("test index %d is out of range: the %s split has %d samples (0 … %d)",
				i, split, val.Len(), val.Len()-1)
		}
	}
	return split, val, idx, nil
}

// historyGroups returns the history preset's groups of the model's
// tensors: explain.DefaultGroups (models.GroupOf), then "all" with every
// tensor.
func historyGroups[E tensor.Float](m nn.Layer[E]) []explain.TensorGroup {
	var names []string
	for _, p := range m.Params() {
		names = append(names, p.Name)
	}
	return append(explain.DefaultGroups(names), explain.TensorGroup{Name: HistoryAll, Tensors: names})
}

// HistoryAll is the history preset's group of every tensor.
const HistoryAll = "all"

// quadrature returns the rule of Options.Quadrature and Tol (0: 1e-6 in
// float64, 1e-4 in float32) for model (whose architecture an error names)
// and its path form.
func quadrature[E tensor.Float](o Options, model any, path epk.PathModel[E]) (epk.Quadrature, error) {
	_, switches := any(path).(epk.SwitchModel[E])
	if name, _, _ := strings.Cut(o.Quadrature, ":"); name == "exact" && !switches {
		arch := "this model"
		if a, ok := model.(interface{ Arch() string }); ok {
			arch = "the " + a.Arch() + " model"
		}
		return epk.Quadrature{}, setting.Errorf("%v exact needs a model that exposes its ReLU switches, and %s does not "+
			"(its switch points, ReLU inputs and max-pool winners, are not located): use %v adaptive (bisection, certified to %v), "+
			"midpoint:K or gauss:K", setting.Name("Quadrature"), arch, setting.Name("Quadrature"), setting.Name("Tol"))
	}
	tol := o.Tol
	if tol == 0 {
		tol = 1e-6
		if o.Precision == "float32" {
			tol = 1e-4
		}
	}
	return ParseQuadrature(o.Quadrature, tol, switches)
}

// checkTol refuses a Tol that is negative or not a number, and, for the
// rules that certify it (adaptive, exact), one below what the precision
// can certify (epk.MinTol32 in float32).
func checkTol(o Options) error {
	if !(o.Tol >= 0) || math.IsInf(o.Tol, 1) {
		return setting.Invalid("Tol", o.Tol, "want a positive tolerance (0: the default)")
	}
	name, _, _ := strings.Cut(o.Quadrature, ":")
	certifies := name == "" || name == "adaptive" || name == "exact"
	if certifies && o.Precision == "float32" && o.Tol > 0 && o.Tol < epk.MinTol32 {
		return setting.Invalid("Tol", o.Tol, "%v float32 cannot certify a completeness residual below %g (the rounding floor of its "+
			"outputs): use a %v of at least %g, or %v float64", setting.Name("Precision"), epk.MinTol32, setting.Name("Tol"), epk.MinTol32,
			setting.Name("Precision"))
	}
	return nil
}

// errFinished is resumeState's answer for an output this very job
// finished (a rerun after a kill that came once the output was complete).
var errFinished = errors.New("the job's output is complete")

// finished returns the summary of the job's finished output in o.Out,
// removing the state file a kill between the manifest and its removal
// left behind.
func finished(o Options) (*Summary, error) {
	s, err := ReadSummary(o.Out)
	if err != nil {
		return nil, fmt.Errorf("%w; it holds this job's finished output otherwise: remove the directory to run the job again", err)
	}
	os.Remove(statePath(o.Out))
	if o.Log != nil {
		fmt.Fprintf(o.Log, "%s already holds this job's finished output: nothing to do\n", o.Out)
	}
	return s, nil
}

// resumeState checks the output directory and returns the saved state of
// an unfinished job with key, nil when the job starts afresh. A finished
// output is not overwritten, nor a directory that is not an EPK output of
// this job, nor one whose manifest or state is a link leading out of it.
func resumeState(o Options, key string) (*explain.State, error) {
	for _, name := range []string{"manifest.json", stateFile, gramPartial} {
		if err := localpath.Check(o.Out, name); err != nil {
			return nil, fmt.Errorf("the output directory's %s: %v", name, err)
		}
	}
	if old, err := os.ReadFile(filepath.Join(o.Out, "manifest.json")); err == nil {
		var om epkfile.Manifest
		if json.Unmarshal(old, &om) == nil && om.Complete {
			if om.Job == key {
				return nil, errFinished
			}
			return nil, setting.Errorf("%s already holds a finished EPK output; choose another %v or remove it", o.Out, setting.Name("Out"))
		}
	}
	f, err := os.Open(statePath(o.Out))
	if err != nil {
		// A job killed before it saved a state may have left its partial
		// history_gram.npy: the job starts afresh without it.
		entries, err := lock.ReadDir(o.Out)
		entries = slices.DeleteFunc(entries, func(e os.DirEntry) bool { return e.Name() == gramPartial })
		if err == nil && len(entries) > 0 {
			return nil, setting.Errorf("%s exists and is not an EPK output of this job; choose another %v", o.Out, setting.Name("Out"))
		}
		os.Remove(filepath.Join(o.Out, gramPartial))
		return nil, nil
	}
	s, derr := readState(f)
	f.Close()
	switch {
	case derr != nil:
		return nil, fmt.Errorf("%s: the saved job state is unreadable (%v); remove it to start afresh", statePath(o.Out), derr)
	case s.Key != key:
		return nil, setting.Errorf("%s holds an unfinished EPK job with other settings; "+
			"rerun with the same settings to resume it, or choose another %v", o.Out, setting.Name("Out"))
	}
	if o.Log != nil {
		fmt.Fprintf(o.Log, "resuming the job in %s after %d of %d steps\n", o.Out, s.State.Done, o.To-o.From)
	}
	return s.State, nil
}

// preflight verifies the steps 0:to before any work (history's VerifyTo:
// every step against its recorded hash, every checkpoint against the
// replayed state, no divergence, nothing NaN or infinite), so that a run
// that fails verification is refused early. A run stamped as reproducing
// under this executable (it trained the run, or replayed it before) skips
// that replay, but not the check of its checkpoints and of its stop reason
// (history's CheckCheckpoints); the pass still checks every step's hash.
//
// The job only reads the run, without its lock; it writes the stamp only
// if it can take the run's lock at once and the run's recorded steps are
// still the ones it replayed, so a process training the run is neither
// waited for nor disturbed, and a run replaced meanwhile is not stamped.
func preflight[T tensor.Float](ctx context.Context, o Options, replay *history.Replay[T], to int) error {
	covered, why, err := history.StampCovers(o.Run, to, o.Software)
	if err != nil {
		return err
	}
	if covered {
		if err := replay.CheckCheckpoints(to); err != nil {
			return fmt.Errorf("the run %s fails verification despite its stamp %s: %w", o.Run, history.StampFile, err)
		}
		if o.Log != nil {
			fmt.Fprintf(o.Log, "%s: skipping the pre-flight replay\n", why)
		}
		return nil
	}
	if o.Log != nil {
		fmt.Fprintf(o.Log, "replaying steps 0:%d to check them against their recorded hashes first (%s)\n", to, why)
	}
	if err := replay.VerifyTo(to, func(int) error { return ctx.Err() }); err != nil {
		return fmt.Errorf("the run %s does not replay (run `explaind verify %s`): %w", o.Run, o.Run, err)
	}
	if err := stamp(o.Run, to, o.Software, epkfile.RunFingerprint(replay.Manifest())); err != nil && o.Log != nil {
		fmt.Fprintf(o.Log, "note: the run replayed but its stamp was not written: %v\n", err)
	}
	return nil
}

// stamp writes the run's stamp (history.WriteStamp) for its first steps
// steps, under the run's lock, if the run's fingerprint is still fp.
func stamp(run string, steps int, software, fp string) error {
	l, err := lock.Dir(run)
	if err != nil {
		return err
	}
	defer l.Release()
	m, err := history.ReadManifest(run)
	if err != nil {
		return err
	}
	if epkfile.RunFingerprint(m) != fp {
		return fmt.Errorf("%s changed while it was replayed", run)
	}
	return history.WriteStamp(run, steps, "replayed", software)
}
