package main

import (
	"encoding/json"
	"fmt"

	"github.com/explaind/explaind/experiments/components"
	"github.com/explaind/explaind/internal/progress"
	"github.com/spf13/cobra"
)

// newComponentsCmd is `explaind components`: similarity of validation
// samples by their per-layer EPK component embeddings on a modulo run.
func newComponentsCmd() *cobra.Command {
	var o components.Options
	var quiet bool
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
nearest neighbours share the label).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Top < 1 || o.HistK < 1 || o.Examples < 1 {
				return fmt.Errorf("components: --top (%d), --hist-k (%d) and --examples (%d) must be at least 1", o.Top, o.HistK, o.Examples)
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
			fmt.Fprintf(cmd.OutOrStdout(), "mean cosine similarity of %d validation samples by layer group:\n%s\nresults written to %s (%d files)\n", s.Samples, b, o.Out, len(s.Files))
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
	f.BoolVar(&quiet, "quiet", false, "no progress bar")
	for _, name := range []string{"run", "epk", "out"} {
		cmd.MarkFlagRequired(name)
	}
	return cmd
}
