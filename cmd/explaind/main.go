// Command explaind trains models while recording their history, rewrites
// them as exact path kernel machines (ExPLAIND), and runs the paper's
// experiments. Run "explaind help" for the commands.
package main

import (
	"fmt"
	"os"
	"strings"
	"unicode"

	"github.com/explaind/explaind/internal/heapfloor"
	"github.com/explaind/explaind/setting"
	"github.com/spf13/cobra"
)

func main() {
	heapfloor.Set()
	if err := execute(newRootCmd()); err != nil {
		fmt.Fprintln(os.Stderr, "explaind:", err)
		os.Exit(1)
	}
}

// execute runs root's command line and returns its error as the user is
// to see it: the settings that the libraries name by their API names
// (setting.Error) named by the flags of the command that ran.
func execute(root *cobra.Command) error {
	cmd, err := root.ExecuteC()
	return flagError(cmd, err)
}

// flagExceptions maps the API names whose flag is not the kebab case of
// their last part to that flag.
var flagExceptions = map[string]string{
	"From:To":        "steps",     // explain/job's Options.From and To
	"Optimizer.Name": "optimizer", // train.Config: not "name"
}

// flagName returns the flag of cmd that sets the setting the API calls
// name ("TestSize" → "--test-size", "Optimizer.LR" → "--lr"), or name
// itself when cmd has no such flag.
func flagName(cmd *cobra.Command, name string) string {
	f, ok := flagExceptions[name]
	if !ok {
		f = kebab(name[strings.LastIndexByte(name, '.')+1:])
	}
	if cmd != nil && cmd.Flags().Lookup(f) != nil {
		return "--" + f
	}
	return name
}

// kebab returns the kebab case of a Go name: "TestSize" → "test-size",
// "DModel" → "d-model", "LR" → "lr", "HistK" → "hist-k".
func kebab(name string) string {
	r := []rune(name)
	var b strings.Builder
	for i, c := range r {
		if i > 0 && unicode.IsUpper(c) && (!unicode.IsUpper(r[i-1]) || i+1 < len(r) && unicode.IsLower(r[i+1])) {
			b.WriteByte('-')
		}
		b.WriteRune(unicode.ToLower(c))
	}
	return b.String()
}

// flagError returns err with its settings named by cmd's flags; it wraps
// err, so errors.Is and errors.As see what err holds.
func flagError(cmd *cobra.Command, err error) error {
	if err == nil {
		return nil
	}
	msg := setting.Rename(err, func(name string) string { return flagName(cmd, name) })
	if msg == err.Error() {
		return err
	}
	return &renamedError{msg: msg, err: err}
}

type renamedError struct {
	msg string
	err error
}

func (e *renamedError) Error() string { return e.msg }
func (e *renamedError) Unwrap() error { return e.err }
