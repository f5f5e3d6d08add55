package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newSwapCmd is a placeholder until the command lands.
func newSwapCmd() *cobra.Command {
	return &cobra.Command{Use: "swap", Short: "(not implemented yet)", Hidden: true,
		RunE: func(*cobra.Command, []string) error { return errors.New("swap: not implemented yet") }}
}
