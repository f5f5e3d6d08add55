package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/explaind/explaind/experiments/components"
	"github.com/explaind/explaind/internal/progress"
	"github.com/spf13/cobra"
)

// newComponentsCmd is `explaind components`: similarity of validation
// samples by their per-layer EPK component embeddings on a modulo run.
func newComponentsCmd() *cobra.Command {
	var o components.Options
	var quiet bool
	var historySteps string
	cmd := &cobra.Command{
		Use:   "components --run RUN --epk DIR --out DIR",
		Short: "Compare validation samples by their per-layer EPK component embeddings (modulo runs)",
		Long: `Each validation sample's class-summed per-parameter EPK scores (the
components preset of ` + "`explaind epk`" + `) within a layer group form an
embedding: the token embedding, the attention encoders, the attention
decoders, linear1, linear2, the decoder, and the whole model.

For each group writes DIR/similarity_<group>.npy (the cosine similarities in
the EPK output's sample order), heatmaps sorted by a+b, label, a and b,
neighbors_<group>.csv (each sample's --top most and least similar
samples), histograms of the inputs and labels of the --hist-k nearest
neighbours of --examples samples, and a 2-D PCA projection coloured by label
and by a+b (figures in PNG and SVG); then DIR/samples.csv (inputs, labels and
PCA coordinates) and DIR/summary.json (per group: the mean similarity of
samples with the same label against different labels, and how often the
nearest neighbours share the label).

When the EPK output has the history preset, also writes DIR/history.csv
(per snapshot step and group, the mean similarity of same-label and of
different-label pairs, and the grokking phase), history_similarity.png/svg
(those means over training, one panel per group, with the ends of the
phases marked) and history_heatmaps.png/svg (group × snapshot small
multiples at --history-steps, sorted by label). The phases come from the
run's metrics.jsonl: memorization until the training accuracy first
reaches 99 %, circuit formation until the validation accuracy first
reaches 10 %, cleanup until it reaches the run's stop accuracy, grokked
after.

With --train-epk, an EPK output of training samples (explaind epk
--test-split train --preset components), compares validation with
training samples per group: train_similarity_<group>.npy (validation ×
training cosine similarities), its heatmaps sorted by a+b and by label,
train_neighbors_<group>.csv (each validation sample's --top most and least
similar training samples) and, in summary.json, how often a validation
sample's --top nearest training samples share its label.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Top < 1 || o.HistK < 1 || o.Examples < 1 {
				return fmt.Errorf("components: --top (%d), --hist-k (%d) and --examples (%d) must be at least 1", o.Top, o.HistK, o.Examples)
			}
			for _, f := range strings.Split(historySteps, ",") {
				if f = strings.TrimSpace(f); f == "" {
					continue
				}
				v, err := strconv.Atoi(f)
				if err != nil || v < 1 {
					return fmt.Errorf("invalid --history-steps %q: want comma-separated snapshot steps ≥ 1", historySteps)
				}
				o.HistorySteps = append(o.HistorySteps, v)
			}
			o.Progress = progress.Func(progressTo(cmd, quiet), "components")
			ctx, cancel := stopExperimentOnSignal(cmd, "before the next tensor; nothing is written unless writing has begun, which then finishes")
			defer cancel()
			s, err := components.Do(ctx, o)
			if err != nil {
				return err
			}
			type head struct {
				Group     string  `json:"group"`
				Same      float64 `json:"same_label"`
				Different float64 `json:"different_label"`
				Match     float64 `json:"neighbor_label_match"`
				Chance    float64 `json:"chance_label_match"`
			}
			var hs []head
			for _, g := range s.Groups {
				hs = append(hs, head{g.Name, g.SameLabel, g.DifferentLabel, g.NeighborLabelMatch, g.ChanceLabelMatch})
			}
			b, _ := json.MarshalIndent(hs, "", "  ")
			fmt.Fprintf(cmd.OutOrStdout(), "mean cosine similarity of %d validation samples by layer group:\n%s\n", s.Samples, b)
			if s.History != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "component history: %d snapshots (steps %d … %d), phases %+v\n",
					len(s.History.Steps), s.History.Steps[0], s.History.Steps[len(s.History.Steps)-1], s.History.Phases)
			}
			if s.Train != nil {
				b, _ := json.MarshalIndent(s.Train, "", "  ")
				fmt.Fprintf(cmd.OutOrStdout(), "validation against %d training samples by layer group:\n%s\n", s.TrainSamples, b)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "results written to %s (%d files)\n", o.Out, len(s.Files))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Run, "run", "", "the modulo training run (required)")
	f.StringVar(&o.EPK, "epk", "", "the `explaind epk` output with the components preset (required)")
	f.StringVar(&o.Out, "out", "", "directory to write the results to (required)")
	f.IntVar(&o.Top, "top", components.DefaultTop, "most and least similar samples listed per sample")
	f.IntVar(&o.HistK, "hist-k", components.DefaultHistK, "nearest neighbours in the histograms")
	f.IntVar(&o.Examples, "examples", components.DefaultExamples, "example samples whose neighbours are plotted")
	f.StringVar(&historySteps, "history-steps", "", "comma-separated snapshot steps drawn as heatmaps (default: 4 evenly spaced snapshots)")
	f.StringVar(&o.TrainEPK, "train-epk", "", "an `explaind epk --test-split train` output with the components preset, to compare validation with training samples")
	f.BoolVar(&quiet, "quiet", false, "no progress bar")
	for _, name := range []string{"run", "epk", "out"} {
		cmd.MarkFlagRequired(name)
	}
	return cmd
}
