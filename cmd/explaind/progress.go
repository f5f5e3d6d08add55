package main

import (
	"io"

	"github.com/spf13/cobra"
)

// progressTo returns where a command draws its progress bars: standard
// error, or nowhere (nil) with --quiet.
func progressTo(cmd *cobra.Command, quiet bool) io.Writer {
	if quiet {
		return nil
	}
	return cmd.ErrOrStderr()
}
