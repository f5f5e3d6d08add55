package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newDemoCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "End-to-end demo (not yet implemented: training, EPK and experiments land in later issues)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), buildInfo())
			return fmt.Errorf("the demo is not implemented yet: only the differentiable core exists; see the README's status section")
		},
	}
	cmd.Flags().StringVar(&out, "out", "out/demo", "directory for the demo's outputs")
	return cmd
}
