package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	"github.com/explaind/explaind/train"
	"github.com/spf13/cobra"
)

// demoConfig is the paper's modulo run (p = 113, 4000/2000 split, AdamW lr
// 1e-3, weight decay 4, full batch), stopped once training and validation
// accuracy both reach 99%. Measured here: one build reached 100% at step
// 1133, another reached 99% at step 1680 and was at 99.25% at step
// 2500, so the strict 100% of the paper cannot bound the demo's time.
// Smaller tasks (p = 31–47) grokked only for some roundings.
func demoConfig() train.Config {
	c := train.ModuloDefaults()
	c.StopAccuracy = 0.99
	return c
}

func newDemoCmd() *cobra.Command {
	var out string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "End-to-end demo: train a small modulo model until it groks, then replay and verify every step",
		Long: `The end-to-end demo on a built-in default. Today it trains a small
modulo-addition transformer until it groks, recording its history, and then
replays and verifies every step. The EPK reformulation and the paper's
experiments join it as they land.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			start := time.Now()
			fmt.Fprintln(w, buildInfo())
			run := filepath.Join(out, "run")
			fmt.Fprintf(w, "1/2 training the paper's modulo transformer (p = 113) until it groks (99%% validation accuracy), into %s\n", run)
			ctx, cancel := interruptible(cmd)
			defer cancel()
			s, err := train.Train[float32](ctx, run, demoConfig(), trainOptions(cmd, quiet, true))
			if err != nil {
				return err
			}
			if !s.Done {
				return fmt.Errorf("the demo was interrupted; %s", s.StopReason)
			}
			b, _ := json.MarshalIndent(s, "    ", "  ")
			fmt.Fprintf(w, "    %s\n", b)
			fmt.Fprintf(w, "2/2 replaying and verifying all %d steps\n", s.Steps)
			r, _, _, err := train.Open[float32](run)
			if err != nil {
				return err
			}
			if err := r.Verify(nil); err != nil {
				return err
			}
			fmt.Fprintf(w, "    every step reproduces bit for bit\n")
			fmt.Fprintf(w, "done in %.0f s; the run is in %s (the EPK engine and the experiments are not implemented yet)\n", time.Since(start).Seconds(), run)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "out/demo", "directory for the demo's outputs")
	cmd.Flags().BoolVar(&quiet, "quiet", false, "no progress bar")
	return cmd
}
