package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/explaind/explaind/experiments/expio"
	"github.com/explaind/explaind/experiments/swap"
	"github.com/explaind/explaind/internal/progress"
	"github.com/spf13/cobra"
)

// stopExperimentOnSignal returns a context cancelled by the first Ctrl-C
// or SIGTERM, saying on stderr that the experiment stops when (for example
// "after this step") and writes the results so far; a second signal kills
// the process. It is interruptible (train.go) with a message that fits
// experiments, which write results, not checkpoints.
func stopExperimentOnSignal(cmd *cobra.Command, what string) (context.Context, context.CancelFunc) {
	return stopOnSignal(cmd, fmt.Sprintf("\nexplaind: stopping %s and writing the results so far (Ctrl-C again to abort)", what))
}

// reportExperiment turns the error of an experiment that wrote its
// partial results into the command's error.
func reportExperiment(cmd *cobra.Command, name, out string, complete bool, err error) error {
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	if !complete {
		return fmt.Errorf("%s: interrupted; the results so far are in %s (summary.json says \"complete\": false)", name, out)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s: results written to %s\n", name, out)
	return nil
}

func newSwapCmd() *cobra.Command {
	var run, out string
	var kept []string
	var quiet bool
	opt := swap.Options{Every: 10, EvalChunk: 2048}
	cmd := &cobra.Command{
		Use:   "swap --run RUN --out DIR",
		Short: "Swap the final modulo model's parameters outside a kept set for those of earlier steps",
		Long: `For every --every-th step s of a modulo run (and the final step), take the
final model and replace every parameter outside a kept set of groups by its
value before step s. Report the validation accuracy of the swapped model minus
that of the step's own model, and the KL divergence from the final model (mean
over validation samples of KL(final || swapped)).

Groups: embedding (input_emb), attention (head*_encoder, head*_decoder),
linear1, linear2, decoder. A kept set is groups joined by "+", or "all-but-"
followed by such a list. The default sets are the paper's:
embedding+linear2+decoder, decoder+linear2, decoder, embedding+decoder,
all-but-attention.

Writes DIR/summary.json, DIR/swap.csv (one row per step and kept set) and the
figure DIR/swap.png / DIR/swap.svg.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("swap: name the output directory with --out DIR")
			}
			opt.Kept = nil
			for _, k := range kept {
				s, err := swap.ParseKeptSet(k)
				if err != nil {
					return fmt.Errorf("swap: invalid --kept: %w", err)
				}
				opt.Kept = append(opt.Kept, s)
			}
			if err := opt.Check(); err != nil {
				return err
			}
			r, err := expio.OpenRun(swap.Command, run, "modulo")
			if err != nil {
				return err
			}
			if _, err := r.Modulo(swap.Command); err != nil {
				return err
			}
			if r.Data.Val.Len() == 0 {
				return fmt.Errorf("swap: --run %s has no validation samples to compare on", run)
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return fmt.Errorf("swap: --out: %w", err)
			}
			ctx, cancel := stopExperimentOnSignal(cmd, "after this step")
			defer cancel()
			opt.Progress = progress.Func(progressTo(cmd, quiet), "swap: steps")
			res, runErr := swap.Run(ctx, r, opt)
			if res == nil {
				return runErr
			}
			if err := swap.Write(out, r, opt, res, buildInfo()); err != nil {
				return err
			}
			return reportExperiment(cmd, "swap", out, res.Complete, runErr)
		},
	}
	f := cmd.Flags()
	f.StringVar(&run, "run", "", "the modulo training run (required)")
	f.StringVar(&out, "out", "", "output directory (created if missing; its files are replaced)")
	f.IntVar(&opt.Every, "every", opt.Every, "compare every N-th step (and the final step)")
	f.StringSliceVar(&kept, "kept", swap.DefaultKeptSetNames(), "kept sets: groups joined by + (embedding, attention, linear1, linear2, decoder), or all-but-GROUPS")
	f.IntVar(&opt.EvalChunk, "eval-chunk", opt.EvalChunk, "samples per forward pass (0: all at once)")
	f.BoolVar(&quiet, "quiet", false, "no progress bar")
	cmd.MarkFlagRequired("run")
	cmd.MarkFlagRequired("out")
	return cmd
}
