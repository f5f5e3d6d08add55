package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/explaind/explaind/epkfile"
	"github.com/explaind/explaind/explain"
	"github.com/explaind/explaind/explain/job"
	"github.com/explaind/explaind/internal/progress"
	"github.com/explaind/explaind/shard"
	"github.com/spf13/cobra"
)

// certifyWarning is the warning for a summary whose completeness is not
// certified ("" when it is).
func certifyWarning(s *job.Summary, out string) string {
	if s.Certified {
		return ""
	}
	if name, _, _ := strings.Cut(s.Quadrature, ":"); s.MissedCount == 0 && (name == "adaptive" || name == "exact") {
		return fmt.Sprintf("warning: NOT certified: %s/summary.json records no certification of --tol (an output of an older explaind?)", out)
	}
	if s.MissedCount == 0 {
		return fmt.Sprintf("warning: NOT certified: the %s rule has no tolerance; its per-step completeness residuals (max %.3g) "+
			"are measured, not bounded; --quadrature adaptive certifies --tol", s.Quadrature, s.MaxCompletenessResidual)
	}
	w := fmt.Sprintf("warning: NOT certified: %d (step, test sample) pairs missed --tol %g within the node budget", s.MissedCount, s.Tol)
	if len(s.Missed) > 0 {
		m := s.Missed[0]
		r := fmt.Sprintf("%.3g", m.Residual)
		if m.NaN {
			r = "NaN"
		}
		w += fmt.Sprintf(" (worst: residual %s at step %d, test sample %d)", r, m.Step, m.TestIndex)
	}
	w += fmt.Sprintf("; %s/summary.json lists them. A larger --tol or --precision float64 may certify.", out)
	return w
}

func newEPKCmd() *cobra.Command {
	o := job.Options{CheckpointCost: job.DefaultCheckpointCost}
	var presets, indices, steps, memory, shardFlag string
	var quiet bool
	var profile, memProfile, traceFile string
	cmd := &cobra.Command{
		Use:   "epk",
		Short: "Rewrite a recorded run as its exact path kernel machine and compute influence scores",
		Long: `Replays a recorded run step by step and evaluates the exact path kernel
(EPK) reformulation on test samples: the kernel machine's predictions and
their agreement with the model, and the influence scores the presets name,
in one pass over the history.

Presets (comma-separated; validation is always included):
  validation  the EPK prediction against the model, with the data,
              regularization and residual parts and every step's
              completeness residual
  grokking    per-step and per-tensor contributions to each test sample's
              true-class log-probability
  components  each test sample's class-summed per-parameter scores
  history     the components scores' Gram matrix per layer group at every
              --snapshot-every steps (and the last), accumulated up to it
  pruning     per-parameter absolute scores Σ_{x,c} |Σ_s …|
  kernel      the data kernel per class and training sample, summed over
              test samples (needs --steps starting at 0)

--test-split train explains training samples instead of the validation
(modulo) or test (CNN) split; the validation statistics are then those of
the training samples.

Outputs in DIR: one .npy file per array, manifest.json describing each
(shape, axes, units) and summary.json with the validation statistics.
--quadrature adaptive certifies --tol: every step's completeness residual
is measured per test sample and class and refined until it is at most
--tol; summary.json says "certified": true only then, and lists the steps
and samples that missed it within the node budget (with a warning).
An interrupted job saves its state; rerun the same command to resume.

--shard I/N computes shard I (0 … N-1) of N of the job: the I-th of N
contiguous blocks of its test samples (after --test-size or
--test-indices), of sizes within one of each other. Its output is a
complete EPK output of those samples that records the shard; join the N
shards' outputs with explaind merge. Each shard resumes like any job.

  explaind epk --run runs/modulo --out runs/modulo-epk --preset validation,grokking,components
  explaind epk --run runs/modulo --out bench --steps 0:20 --test-size 4 --quadrature midpoint:10 --preset kernel,components
  explaind epk --run runs/modulo --out shards/2 --preset validation,grokking --shard 2/8`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			for _, p := range strings.Split(presets, ",") {
				if p = strings.TrimSpace(p); p != "" {
					o.Presets = append(o.Presets, p)
				}
			}
			for _, p := range o.Presets {
				if !slices.Contains(epkfile.Presets, p) {
					return fmt.Errorf("invalid --preset %q (want a comma-separated list of %s)", p, strings.Join(epkfile.Presets, ", "))
				}
			}
			if indices != "" {
				for _, f := range strings.Split(indices, ",") {
					v, err := strconv.Atoi(strings.TrimSpace(f))
					if err != nil {
						return fmt.Errorf("invalid --test-indices %q: want comma-separated integers", indices)
					}
					o.TestIndices = append(o.TestIndices, v)
				}
				if o.TestSize != 0 {
					return fmt.Errorf("give --test-size or --test-indices, not both")
				}
			}
			if o.Shard, err = shard.Parse(shardFlag); err != nil {
				return fmt.Errorf("invalid --shard: %w", err)
			}
			if o.SnapshotEvery < 1 {
				return fmt.Errorf("invalid --snapshot-every %d: want a snapshot interval of at least 1 step", o.SnapshotEvery)
			}
			if cmd.Flags().Changed("snapshot-every") && !slices.Contains(o.Presets, epkfile.History) {
				return fmt.Errorf("--snapshot-every sets the history preset's interval: add --preset %s", epkfile.History)
			}
			if o.From, o.To, err = job.ParseSteps(steps); err != nil {
				return err
			}
			if o.MaxBytes, err = job.ParseBytes(memory); err != nil {
				return fmt.Errorf("invalid --memory: %w", err)
			}
			if !(o.Tol >= 0) {
				return fmt.Errorf("invalid --tol %g: want a positive tolerance", o.Tol)
			}
			o.Software = buildInfo()
			// The accumulators are long-lived and large: collect garbage
			// sooner than Go's default so that the peak stays near them.
			debug.SetGCPercent(25)
			if o.MaxBytes > 0 {
				debug.SetMemoryLimit(o.MaxBytes)
			}
			ctx, cancel := interruptible(cmd)
			defer cancel()
			o.Progress = progress.Func(progressTo(cmd, quiet), "epk steps")
			o.Log = cmd.ErrOrStderr()
			if profile != "" {
				pf, err := os.Create(profile)
				if err != nil {
					return err
				}
				pprof.StartCPUProfile(pf)
				defer pprof.StopCPUProfile()
			}
			if traceFile != "" {
				tf, err := os.Create(traceFile)
				if err != nil {
					return err
				}
				if err := trace.Start(tf); err != nil {
					return err
				}
				defer trace.Stop()
			}
			start := time.Now()
			s, err := job.Run(ctx, o)
			if err != nil {
				return err
			}
			if memProfile != "" {
				if err := writeAllocProfile(memProfile); err != nil {
					return err
				}
			}
			b, _ := json.MarshalIndent(s, "", "  ")
			fmt.Fprintf(cmd.OutOrStdout(), "%s\nEPK output written to %s in %.0f s\n", b, o.Out, time.Since(start).Seconds())
			if w := certifyWarning(s, o.Out); w != "" {
				fmt.Fprintln(cmd.ErrOrStderr(), w)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Run, "run", "", "run directory written by explaind train (required)")
	f.StringVar(&o.Out, "out", "", "output directory (required)")
	f.StringVar(&presets, "preset", "validation", "comma-separated presets: "+strings.Join(epkfile.Presets, ", "))
	f.IntVar(&o.TestSize, "test-size", 0, "number of test samples, the first of the validation (modulo) or test (CNN) split (0: all)")
	f.StringVar(&indices, "test-indices", "", "comma-separated indices of test samples in that split (instead of --test-size)")
	f.StringVar(&o.TestSplit, "test-split", "", "split the test samples are drawn from: train, or the run's evaluation split (default: val for modulo, test for CNN)")
	f.IntVar(&o.SnapshotEvery, "snapshot-every", job.DefaultSnapshotEvery, "steps between the history preset's snapshots")
	f.StringVar(&o.Quadrature, "quadrature", "adaptive", "rule for the path integrals: adaptive, exact:K, midpoint:K or gauss:K")
	f.Float64Var(&o.Tol, "tol", 0, "completeness residual per step, test sample and class that adaptive and exact certify (0: 1e-6 in float64, 1e-4 in float32; float32 cannot certify below 1e-5)")
	f.StringVar(&o.Precision, "precision", "float64", "evaluation precision: float32 or float64")
	f.StringVar(&steps, "steps", "", "range of training steps FROM:TO (default: all)")
	f.StringVar(&memory, "memory", "", "memory ceiling for the job's arrays, e.g. 8GiB (default: none)")
	f.StringVar(&shardFlag, "shard", "", "compute shard I/N of the job (0 ≤ I < N): the I-th of N blocks of its test samples; join the shards with explaind merge")
	f.IntVar(&o.Chunk, "chunk", 0, fmt.Sprintf("test samples a worker evaluates together (0: 256 divided among the workers, and at most %d values of the model's forward pass: 4 images of the width/8 ResNet-9, 1 at full width)", explain.ChunkValues))
	f.IntVar(&o.Workers, "workers", 0, "chunks of test samples evaluated at once, each by its own model instance (0: one per processor)")
	f.DurationVar(&o.CheckpointEvery, "save-every", 10*time.Minute, fmt.Sprintf("how often the job's state is saved for resuming (less often when saving takes long: at most %.0f %% of the time)", 100.0/job.DefaultCheckpointCost))
	f.BoolVar(&quiet, "quiet", false, "no progress bar")
	f.StringVar(&profile, "cpuprofile", "", "write a CPU profile to this file")
	f.MarkHidden("cpuprofile")
	f.StringVar(&memProfile, "memprofile", "", "write an allocation profile (every allocation of the job) to this file")
	f.MarkHidden("memprofile")
	f.StringVar(&traceFile, "trace", "", "write an execution trace (go tool trace) to this file: where the cores wait")
	f.MarkHidden("trace")
	cmd.MarkFlagRequired("run")
	cmd.MarkFlagRequired("out")
	return cmd
}

// writeAllocProfile writes the heap profile with every allocation made so
// far (pprof's alloc_space and alloc_objects samples) to path.
func writeAllocProfile(path string) error {
	pf, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(pf, 0); err != nil {
		pf.Close()
		return err
	}
	return pf.Close()
}
