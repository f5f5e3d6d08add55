package main

import (
	"fmt"

	"github.com/explaind/explaind/report"
	"github.com/spf13/cobra"
)

func newReportCmd() *cobra.Command {
	var opts report.Options
	cmd := &cobra.Command{
		Use:   "report --run RUN [--epk DIR]... [--experiments DIR]... --out FILE.html",
		Short: "Write a self-contained HTML report of a run, its EPK outputs and experiments",
		Long: `Write one HTML page that opens without a network: the run's configuration
and summary, its training curves, for each EPK output (--epk, made by
explaind epk for this run) its validation table and figures (per-step
change against the model, completeness residual, per-layer influence over
training, data against regularization, components, pruning, data kernel;
whatever the output holds), and for each experiment directory
(--experiments: prune, components, swap, retrain outputs) its summary.json
and PNG figures.

The figures are also written as PNG and SVG to FILE_figures/, and what the
report holds to FILE.json.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := report.Build(opts)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "wrote %s (%.1f MB, %d figures; PNG and SVG in %s)\n", s.Report, float64(s.Bytes)/1e6, s.Figures, s.FiguresDir)
			for _, sec := range s.Sections {
				fmt.Fprintf(w, "  %s %s: %d tables, %d figures\n", sec.Kind, sec.Dir, len(sec.Tables), len(sec.Figures))
				for _, n := range sec.Notes {
					fmt.Fprintf(w, "    note: %s\n", n)
				}
			}
			_, _, sum := report.Paths(s.Report)
			fmt.Fprintf(w, "summary in %s\n", sum)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Run, "run", "", "training run directory (required)")
	f.StringArrayVar(&opts.EPK, "epk", nil, "EPK output directory of the run (repeatable)")
	f.StringArrayVar(&opts.Experiments, "experiments", nil, "experiment output directory (repeatable)")
	f.StringVar(&opts.Out, "out", "", "the HTML file to write, FILE.html (required)")
	cmd.MarkFlagRequired("run")
	cmd.MarkFlagRequired("out")
	return cmd
}
