package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newRetrainCmd is a placeholder until the command lands.
func newRetrainCmd() *cobra.Command {
	return &cobra.Command{Use: "retrain", Short: "(not implemented yet)", Hidden: true,
		RunE: func(*cobra.Command, []string) error { return errors.New("retrain: not implemented yet") }}
}
