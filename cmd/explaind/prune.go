package main

import (
	"encoding/json"
	"fmt"

	"github.com/explaind/explaind/experiments/prune"
	"github.com/explaind/explaind/internal/progress"
	"github.com/spf13/cobra"
)

// newPruneCmd is `explaind prune`: EPK-importance pruning of a CNN run
// against random and magnitude pruning.
func newPruneCmd() *cobra.Command {
	var o prune.Options
	var fractions []float64
	var quiet bool
	cmd := &cobra.Command{
		Use:   "prune --run RUN --epk DIR [--epk DIR ...] --out DIR",
		Short: "Prune a CNN run by EPK importance, against random and magnitude pruning",
		Long: `Keep the top fraction of the ResNet-9's parameters by EPK importance
(the pruning preset of ` + "`explaind epk`" + `), set the others to zero and
evaluate the pruned model on the test samples the importance was not
computed on: test accuracy, agreement with the unpruned model and the mean
KL(unpruned ‖ pruned). Baselines: random pruning with the same number of
parameters kept per layer (over --seeds draws) and magnitude pruning.
The final Linear layer (--unpruned) is never pruned; the fraction kept
counts the other parameters.

--epk may be repeated with outputs of disjoint test samples computed
alike (the shards of one job, explaind epk --shard I/N): their
importances are added, and the pruned models are evaluated on the test
samples none of them scored. Leaving out one shard of N each time gives
N scoring/evaluation splits from one EPK job:

  explaind epk --run R --out S/2 --preset validation,pruning --test-size 0 --shard 2/5
  explaind prune --run R --epk S/0 --epk S/1 --epk S/3 --epk S/4 --out P/fold2

Writes DIR/summary.json, DIR/prune.csv (every evaluation) and figures
(PNG and SVG): accuracy, agreement and KL against the fraction kept per
grid, and the parameters pruned per layer.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("fractions") {
				o.Grids = []prune.Grid{{Name: "custom", Fractions: fractions}}
			}
			o.Progress = progress.Func(progressTo(cmd, quiet), "pruning")
			ctx, cancel := stopExperimentOnSignal(cmd, "before the next evaluation; nothing is written")
			defer cancel()
			s, err := prune.Do(ctx, o)
			if err != nil {
				return err
			}
			head := map[string]any{"scope": s.Scope, "eval_samples": s.EvalSamples, "scoring_samples": s.ScoringSamples,
				"unpruned": s.Unpruned, "prunable_params": s.PrunableParams}
			b, _ := json.MarshalIndent(head, "", "  ")
			fmt.Fprintf(cmd.OutOrStdout(), "%s\npruning results written to %s (%d files)\n", b, o.Out, len(s.Files))
			return nil
		},
	}
	o.Grids = prune.DefaultGrids()
	f := cmd.Flags()
	f.StringVar(&o.Run, "run", "", "the CNN training run (required)")
	f.StringArrayVar(&o.EPK, "epk", nil, "an `explaind epk` output with the pruning preset (required; repeat for outputs of disjoint test samples, whose importances are added)")
	f.StringVar(&o.Out, "out", "", "directory to write the results to (required)")
	f.StringVar(&o.Scope, "scope", prune.ScopeGlobal, "keep the top fraction across all layers (global) or within each layer (module)")
	f.Float64SliceVar(&fractions, "fractions", nil, "fractions of the parameters to keep, each in [0, 1] (default: 0.01–0.30 by 0.01 and 0.001–0.030 by 0.001)")
	f.IntVar(&o.Seeds, "seeds", 5, "random-pruning draws")
	f.Uint64Var(&o.Seed, "seed", 1, "seed of the random pruning")
	f.StringSliceVar(&o.Keep, "unpruned", []string{prune.DefaultKeep}, "parameters never pruned")
	f.IntVar(&o.Chunk, "chunk", 250, "samples per forward pass")
	f.BoolVar(&quiet, "quiet", false, "no progress bar")
	for _, name := range []string{"run", "epk", "out"} {
		cmd.MarkFlagRequired(name)
	}
	return cmd
}
