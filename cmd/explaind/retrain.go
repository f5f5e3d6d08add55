package main

import (
	"fmt"

	"github.com/explaind/explaind/experiments/retrain"
	"github.com/explaind/explaind/internal/progress"
	"github.com/explaind/explaind/shard"
	"github.com/spf13/cobra"
)

func newRetrainCmd() *cobra.Command {
	var quiet bool
	var shardFlag string
	opt := retrain.Options{Parts: retrain.Parts(), Stride: 100, MaxEpochs: 500, Seeds: 5, EvalChunk: 2048}
	cmd := &cobra.Command{
		Use:   "retrain --run RUN --out DIR",
		Short: "Re-initialize one part of modulo checkpoints and count the epochs to relearn the task",
		Long: `For checkpoint steps N, N-stride, N-2*stride, ... of a modulo run (from the
end backwards), for every part and seed: draw the part afresh (PyTorch's default
initialization, seeded by the seed), load the rest of the model from the
state before that step, and train full batch with the run's optimizer settings
(from a fresh optimizer state) until training and validation accuracy are both
100% (or --target), for at most --max-epochs epochs.

Parts: outer (the outer layers: embedding and decoder), pipeline (the MLP:
linear1 and linear2), attention (the heads).

Writes DIR/summary.json, DIR/retrain.csv (one row per checkpoint, part and
seed: epochs until 100%, 0 if already there, -1 if not reached) and the figure
DIR/retrain.png / DIR/retrain.svg, and DIR/progress.json: the rows done so far,
rewritten after every retraining. Rerunning the same command (same run, same
--parts, --stride, --max-checkpoints, --max-epochs, --target and --seeds)
after an interruption, even a kill, resumes after the last retraining done;
the results are those of an uninterrupted job. A DIR holding the result of
another run or other settings is refused.

--shard I/N computes shard I (0 ... N-1) of N of the job's retrainings, for
a cluster's job array: each task writes a complete shard output (its own
DIR, which records the shard and resumes like a whole job), and
` + "`explaind merge --out DIR SHARD_DIR...`" + ` joins the finished shards into exactly
what the unsharded job writes. The retrainings are split into N contiguous
blocks, of sizes within one, of the job's (checkpoint, part, seed) rows in
bit-reversed order of their place in the job: every shard gets early and
late checkpoints, every part and every seed alike, so the shards take about
equally long. In a Slurm array (--array=0-N-1) pass
--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT; in a Kubernetes
Indexed Job --shard $JOB_COMPLETION_INDEX/N. Without --shard a task of an
array computes the whole job (and says so).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if opt.Shard, err = shard.Parse(shardFlag); err != nil {
				return fmt.Errorf("retrain: --shard: %w", err)
			}
			if shardFlag == "" {
				if note := shard.Env(); note != "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "retrain: %s (--shard I/N)\n", note)
				}
			}
			opt.Software, opt.Log = buildInfo(), cmd.ErrOrStderr()
			opt.Progress = progress.Func(progressTo(cmd, quiet), "retrain: retrainings")
			ctx, cancel := stopExperimentOnSignal(cmd, "after this epoch (the unfinished retraining is dropped) and writing the results so far")
			defer cancel()
			s, err := retrain.Do(ctx, opt)
			if err != nil {
				return err
			}
			if s.Reused {
				fmt.Fprintf(cmd.OutOrStdout(), "retrain: already done: %s holds the complete results of this run with these settings; nothing rewritten\n", opt.Out)
				return nil
			}
			if s.Shard != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "retrain: %s written to %s; once every shard is done, `explaind merge --out DIR SHARD_DIR...` joins them\n", s.Shard.Describe(), opt.Out)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "retrain: results written to %s\n", opt.Out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opt.Run, "run", "", "the modulo training run (required)")
	f.StringVar(&opt.Out, "out", "", "output directory (created if missing); rerunning the same command resumes an interrupted job there")
	f.StringSliceVar(&opt.Parts, "parts", opt.Parts, "parts to re-initialize: outer (embedding+decoder), pipeline (linear1+linear2), attention")
	f.IntVar(&opt.Stride, "stride", opt.Stride, "steps between checkpoints, counted back from the final step")
	f.IntVar(&opt.MaxCheckpoints, "max-checkpoints", 0, "use at most this many checkpoints, the latest first (0: all)")
	f.IntVar(&opt.MaxEpochs, "max-epochs", opt.MaxEpochs, "epochs of retraining at most")
	f.Float64Var(&opt.Target, "target", 1, "accuracy (a fraction) training and validation must both reach")
	f.IntVar(&opt.Seeds, "seeds", opt.Seeds, "re-initialization seeds (0 .. N-1)")
	f.IntVar(&opt.EvalChunk, "eval-chunk", opt.EvalChunk, "samples per forward pass (0: all at once)")
	f.StringVar(&shardFlag, "shard", "", "compute only shard I/N (0-based) of the retrainings, for a job array; join the shards with explaind merge")
	f.BoolVar(&quiet, "quiet", false, "no progress bar")
	cmd.MarkFlagRequired("run")
	cmd.MarkFlagRequired("out")
	return cmd
}
