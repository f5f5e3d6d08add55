package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newComponentsCmd is a placeholder until the command lands.
func newComponentsCmd() *cobra.Command {
	return &cobra.Command{Use: "components", Short: "(not implemented yet)", Hidden: true,
		RunE: func(*cobra.Command, []string) error { return errors.New("components: not implemented yet") }}
}
