package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
)

// stopExperimentOnSignal returns the context an experiment's Do runs
// under: the first Ctrl-C or SIGTERM cancels it, after saying on stderr
// that the experiment stops and what it leaves (what, for example "after
// this step and writing the results so far"); a second signal kills the
// process. It is interruptible (train.go) with a message that fits
// experiments, which write results, not checkpoints.
func stopExperimentOnSignal(cmd *cobra.Command, what string) (context.Context, context.CancelFunc) {
	return stopOnSignal(cmd, fmt.Sprintf("\nexplaind: stopping %s (Ctrl-C again to abort)", what))
}
