package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/explaind/explaind/experiments/lds"
	"github.com/explaind/explaind/experiments/retrain"
	"github.com/explaind/explaind/explain/job"
	"github.com/spf13/cobra"
)

func newMergeCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "merge --out DIR SHARD...",
		Short: "Join the outputs of a sharded job (--shard I/N) into the whole job's output",
		Long: `Joins the outputs of the shards of one job, computed with --shard I/N
(by the tasks of a cluster's job array, say), into the output the job
computes without --shard. The shards may be given in any order; the kind
of output is read from the first one.

EPK outputs (explaind epk --shard): arrays per test sample are
concatenated in test order, arrays summed over test samples (kernel,
kernel_reg, importance) are added up from the shards' float64 partial
sums, and summary.json is recomputed over all test samples, with the
shards' summed wall time and the largest peak memory of the shards
and of the merge itself.

Retrain outputs (explaind retrain --shard): the rows of the shards are
put back in the unsharded job's order, and the CSV, summary and figures
are written as the unsharded job writes them.

LDS outputs (explaind lds --shard): the shards' retrainings are joined
in the job's order and scored with the settings the shards record, which
writes what the unsharded job writes (explaind lds --merge does the same
with other scoring settings).

The merge refuses shards of different runs, builds, settings or jobs,
duplicate or overlapping shards, missing shards (it names them), an
unfinished shard and a directory that is no shard output, before it
writes anything. A merge that was interrupted is rerun by the same
command; rerunning a finished merge prints its summary.

  explaind merge --out runs/modulo-epk runs/modulo-epk-shards/*`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, shards []string) error {
			if len(shards) == 0 {
				return errors.New("name the shard outputs to merge: explaind merge --out DIR SHARD...")
			}
			start := time.Now()
			var (
				s   any
				err error
			)
			switch outputKind(shards[0]) {
			case "epk":
				s, err = job.Merge(out, shards, cmd.ErrOrStderr())
			case "retrain":
				s, err = retrain.Merge(out, shards, cmd.ErrOrStderr())
			case "lds":
				return mergeLDS(cmd, out, shards)
			default:
				return fmt.Errorf("%s is not the output of a sharded job that explaind merges (an EPK output of explaind epk --shard, a retrain output of explaind retrain --shard or an LDS output of explaind lds --shard)", shards[0])
			}
			if err != nil {
				return err
			}
			b, _ := json.MarshalIndent(s, "", "  ")
			fmt.Fprintf(cmd.OutOrStdout(), "%s\n%d shards merged into %s in %.1f s\n", b, len(shards), out, time.Since(start).Seconds())
			if es, ok := s.(*job.Summary); ok {
				if w := certifyWarning(es, out); w != "" {
					fmt.Fprintln(cmd.ErrOrStderr(), w)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "output directory of the whole job (required)")
	cmd.MarkFlagRequired("out")
	return cmd
}

// outputKind returns the kind of the output of a sharded job in dir, by
// which merge joins it: "epk" for an EPK output or an unfinished EPK job
// (job.IsOutput), "retrain" for a shard of a retrain job
// (retrain.IsShard), "lds" for a shard of an LDS job (lds.IsShard), ""
// for none that merge knows.
func outputKind(dir string) string {
	switch {
	case job.IsOutput(dir):
		return "epk"
	case retrain.IsShard(dir):
		return "retrain"
	case lds.IsShard(dir):
		return "lds"
	}
	return ""
}
