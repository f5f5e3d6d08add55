package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/explaind/explaind/gemm"
	"github.com/spf13/cobra"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "explaind",
		Short:         "Explain trained models as exact path kernel machines (ExPLAIND)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newVersionCmd(), newTrainCmd(), newVerifyCmd(), newEPKCmd(),
		newPruneCmd(), newComponentsCmd(), newSwapCmd(), newRetrainCmd(), newLDSCmd(), newMergeCmd(), newReportCmd(), newDemoCmd())
	return root
}

// buildInfo describes this binary: module version, Go version and GEMM backend.
func buildInfo() string {
	v := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		v = bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " " + s.Value[:12]
			}
		}
	}
	return fmt.Sprintf("explaind %s, %s, gemm backend %s, %d threads", v, runtime.Version(), gemm.Kernels(), runtime.GOMAXPROCS(0))
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, Go version and matrix-product backend",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), buildInfo())
		},
	}
}
