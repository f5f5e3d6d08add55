// Command explaind trains models while recording their history, rewrites
// them as exact path kernel machines (ExPLAIND), and runs the paper's
// experiments. Run "explaind help" for the commands.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "explaind:", err)
		os.Exit(1)
	}
}
