package main

import (
	"fmt"

	"github.com/explaind/explaind/experiments/swap"
	"github.com/explaind/explaind/internal/progress"
	"github.com/spf13/cobra"
)

func newSwapCmd() *cobra.Command {
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
			opt.Kept = nil
			for _, k := range kept {
				s, err := swap.ParseKeptSet(k)
				if err != nil {
					return fmt.Errorf("swap: invalid --kept: %w", err)
				}
				opt.Kept = append(opt.Kept, s)
			}
			opt.Software = buildInfo()
			opt.Progress = progress.Func(progressTo(cmd, quiet), "swap: steps")
			ctx, cancel := stopExperimentOnSignal(cmd, "after this step and writing the results so far")
			defer cancel()
			if _, err := swap.Do(ctx, opt); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "swap: results written to %s\n", opt.Out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opt.Run, "run", "", "the modulo training run (required)")
	f.StringVar(&opt.Out, "out", "", "output directory (created if missing; its files are replaced)")
	f.IntVar(&opt.Every, "every", opt.Every, "compare every N-th step (and the final step)")
	f.StringSliceVar(&kept, "kept", swap.DefaultKeptSetNames(), "kept sets: groups joined by + (embedding, attention, linear1, linear2, decoder), or all-but-GROUPS")
	f.IntVar(&opt.EvalChunk, "eval-chunk", opt.EvalChunk, "samples per forward pass (0: all at once)")
	f.BoolVar(&quiet, "quiet", false, "no progress bar")
	cmd.MarkFlagRequired("run")
	cmd.MarkFlagRequired("out")
	return cmd
}
