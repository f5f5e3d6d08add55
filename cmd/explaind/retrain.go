package main

import (
	"fmt"

	"github.com/explaind/explaind/experiments/retrain"
	"github.com/explaind/explaind/internal/progress"
	"github.com/spf13/cobra"
)

func newRetrainCmd() *cobra.Command {
	var quiet bool
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
another run or other settings is refused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
	f.BoolVar(&quiet, "quiet", false, "no progress bar")
	cmd.MarkFlagRequired("run")
	cmd.MarkFlagRequired("out")
	return cmd
}
