package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newEPKCmd is a placeholder until the command lands.
func newEPKCmd() *cobra.Command {
	return &cobra.Command{Use: "epk", Short: "(not implemented yet)", Hidden: true,
		RunE: func(*cobra.Command, []string) error { return errors.New("epk: not implemented yet") }}
}
