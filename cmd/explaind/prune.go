package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newPruneCmd is a placeholder until the command lands.
func newPruneCmd() *cobra.Command {
	return &cobra.Command{Use: "prune", Short: "(not implemented yet)", Hidden: true,
		RunE: func(*cobra.Command, []string) error { return errors.New("prune: not implemented yet") }}
}
