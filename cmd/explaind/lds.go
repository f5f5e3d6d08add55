package main

import (
	"fmt"
	"sort"

	"github.com/explaind/explaind/experiments/lds"
	"github.com/explaind/explaind/internal/progress"
	"github.com/explaind/explaind/shard"
	"github.com/spf13/cobra"
)

func newLDSCmd() *cobra.Command {
	var quiet bool
	var shardArg string
	var merge []string
	opt := ldsDefaults()
	cmd := &cobra.Command{
		Use:   "lds --run RUN --out DIR",
		Short: "Linear datamodeling score: how well EPK, TracIn-CP and gradient similarity predict retraining on random subsets",
		Long: `Draws --subsets random subsets of the run's training set (each --fraction of it,
distinct, seeded by --subset-seed), trains the run's model afresh on each
--seeds times (the run's optimizer, learning rate per step and number of steps;
seed k initializes and orders the batches as the run's seed + k), and records
for the test samples the true class's log-probability (logprob) and the margin
to the run's runner-up class (margin).

Each attribution a[test, train] predicts a retrained model's output as the sum
of a over the subset; the LDS of a test sample is Spearman's correlation of
prediction and output over the subsets. Methods: epk (the EPK data kernel,
from --epk, an explaind epk output of this run with --preset reference, whose
test samples are then scored; or computed here with --compute-epk), tracin (TracIn-CP over the run's checkpoints),
grad_dot and grad_cos (at the final model), trak (TRAK with the final model
alone, gradients projected to min(512, N/2) dimensions), random. A finished
job whose summary lacks a method this build scores is scored again from its
retrainings.

Writes DIR/summary.json (per method and target the mean LDS and its bootstrap
interval over test samples, the retrained models' accuracies, the spread over
seeds with --seeds 2 or more, wall times), DIR/lds.csv (LDS per method, target
and test sample), DIR/subsets.npy and subsets.csv, DIR/retrainings.csv,
DIR/targets_logprob.npy and targets_margin.npy [subset, seed, test],
DIR/attributions/METHOD_TARGET.npy [test, train], and the figures DIR/lds.png
and DIR/scatter.png (with .svg). DIR/progress.json holds the retrainings done,
rewritten after each: rerunning the same command after an interruption, even
a kill, resumes after the last one.

Sharded over a cluster's job array: --shard i/n does only block i of n of the
retrainings (subset by subset, seeds within) into its own DIR; then
explaind merge --out DIR SHARD0 SHARD1 ... joins the n finished shards'
directories (the settings come from them) and scores, writing what the
unsharded job writes; explaind lds --out DIR --merge SHARD0,SHARD1,... does
the same and takes --bootstrap, --confidence and --compute-epk if given.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opt.Software, opt.Log = buildInfo(), cmd.ErrOrStderr()
			opt.Progress = progress.Func(progressTo(cmd, quiet), "lds: retrainings")
			opt.Stage = func(what string) func(done, total int) { return progress.Func(progressTo(cmd, quiet), "lds: "+what) }
			ctx, cancel := stopExperimentOnSignal(cmd, "after this retraining step (the unfinished retraining is dropped)")
			defer cancel()
			var s *lds.Summary
			var err error
			if len(merge) > 0 {
				// The shards record the job's scoring settings: the
				// flags override them only when given.
				if !cmd.Flags().Changed("bootstrap") {
					opt.Bootstrap = 0
				}
				if !cmd.Flags().Changed("confidence") {
					opt.Confidence = 0
				}
				s, err = lds.Merge(ctx, opt, merge)
			} else {
				if opt.Shard, err = shard.Parse(shardArg); err != nil {
					return fmt.Errorf("lds: --shard: %w", err)
				}
				if opt.Shard.IsZero() {
					if note := shard.Env(); note != "" {
						fmt.Fprintln(cmd.ErrOrStderr(), note+" (--shard)")
					}
				}
				s, err = lds.Do(ctx, opt)
			}
			if err != nil {
				return err
			}
			return printLDS(cmd, opt.Out, s)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opt.Run, "run", "", "the training run (required but with --merge)")
	f.StringVar(&opt.Out, "out", "", "output directory (created if missing); rerunning the same command resumes an interrupted job there")
	f.StringVar(&opt.EPK, "epk", "", "an explaind epk output of the run with the reference preset (scores the epk method on its test samples)")
	f.BoolVar(&opt.ComputeEPK, "compute-epk", false, "without --epk: compute the epk method's data kernel here (the reference preset's kernel_full at each sample's true and runner-up class only, float64, adaptive quadrature at tolerance 1e-6)")
	f.IntVar(&opt.Subsets, "subsets", opt.Subsets, "number M of random training subsets")
	f.Float64Var(&opt.Fraction, "fraction", opt.Fraction, "fraction of the training set in each subset, in (0, 1)")
	f.IntVar(&opt.Seeds, "seeds", opt.Seeds, "retrainings per subset K (seeds 0 … K-1); 2 or more also measure the spread over seeds")
	f.Uint64Var(&opt.SubsetSeed, "subset-seed", 0, "seed of the subsets, the random baseline and the bootstrap")
	f.IntVar(&opt.TestSize, "test-size", 0, fmt.Sprintf("test samples scored, the first of the split or of the --epk output (0: all of the --epk output's, or %d)", lds.DefaultTestSize))
	f.IntVar(&opt.Bootstrap, "bootstrap", opt.Bootstrap, "bootstrap resamples of the confidence interval")
	f.Float64Var(&opt.Confidence, "confidence", opt.Confidence, "level of the confidence interval")
	f.IntVar(&opt.EvalChunk, "eval-chunk", opt.EvalChunk, "samples per forward pass when evaluating (0: all at once)")
	f.StringVar(&shardArg, "shard", "", "do only shard I/N of the retrainings (0-based, such as $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
	f.StringSliceVar(&merge, "merge", nil, "join these finished shards' directories into --out and score (their settings are used, but --bootstrap, --confidence and --compute-epk if given)")
	f.BoolVar(&quiet, "quiet", false, "no progress bar")
	cmd.MarkFlagRequired("out")
	cmd.MarkFlagsMutuallyExclusive("merge", "shard")
	cmd.MarkFlagsMutuallyExclusive("merge", "run")
	cmd.MarkFlagsMutuallyExclusive("epk", "compute-epk")
	return cmd
}

// ldsDefaults returns the defaults of explaind lds's flags.
func ldsDefaults() lds.Options {
	return lds.Options{Subsets: 100, Fraction: 0.5, Seeds: 1, Bootstrap: 1000, Confidence: 0.95, EvalChunk: 2048}
}

// printLDS prints what an lds job (or a shard, or a merge) did, and the
// LDS per method and target.
func printLDS(cmd *cobra.Command, out string, s *lds.Summary) error {
	if s.Shard != "" {
		fmt.Fprintf(cmd.OutOrStdout(), "lds: shard %s: %d retrainings written to %s (%.0f s); merge the finished shards with explaind merge --out DIR SHARD...\n",
			s.Shard, s.Retrained.Count, out, s.WallSeconds.Retraining)
		return nil
	}
	w := cmd.OutOrStdout()
	if s.Reused {
		fmt.Fprintf(w, "lds: already done: %s holds the complete results of this run with these settings; nothing rewritten\n", out)
	}
	methods := make([]string, 0, len(s.Methods))
	for m := range s.Methods {
		methods = append(methods, m)
	}
	order := map[string]int{}
	for i, m := range lds.Methods() {
		order[m] = i
	}
	sort.Slice(methods, func(a, b int) bool { return order[methods[a]] < order[methods[b]] })
	for _, m := range methods {
		fmt.Fprintf(w, "lds: %-9s", m)
		for _, t := range lds.Targets() {
			iv := s.Methods[m][t]
			fmt.Fprintf(w, "  %s %6.3f [%6.3f, %6.3f]", t, iv.Mean, iv.Lo, iv.Hi)
		}
		fmt.Fprintln(w)
	}
	if len(s.Noise) > 0 {
		fmt.Fprintf(w, "lds: %-9s", "ceiling")
		for _, t := range lds.Targets() {
			n := s.Noise[t]
			fmt.Fprintf(w, "  %s %6.3f (seed vs seed %.3f)", t, n.Ceiling, n.SeedLDS)
		}
		fmt.Fprintln(w)
	}
	if !s.Reused {
		fmt.Fprintf(w, "lds: results written to %s (retraining %.0f s, scoring %.0f s)\n", out, s.WallSeconds.Retraining, s.WallSeconds.Scoring)
	}
	return nil
}

// mergeLDS is explaind merge of an LDS job's shards: scored with the
// settings the shards record.
func mergeLDS(cmd *cobra.Command, out string, shards []string) error {
	ctx, cancel := stopExperimentOnSignal(cmd, "the merge (rerun it to resume)")
	defer cancel()
	opt := ldsDefaults()
	opt.Bootstrap, opt.Confidence = 0, 0 // the shards'
	opt.Out, opt.Software, opt.Log = out, buildInfo(), cmd.ErrOrStderr()
	opt.Stage = func(what string) func(done, total int) { return progress.Func(progressTo(cmd, false), "lds: "+what) }
	s, err := lds.Merge(ctx, opt, shards)
	if err != nil {
		return err
	}
	return printLDS(cmd, out, s)
}
