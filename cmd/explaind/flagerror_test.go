package main

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explaind/explaind/setting"
	"github.com/spf13/cobra"
)

func TestKebab(t *testing.T) {
	for name, want := range map[string]string{"TestSize": "test-size", "DModel": "d-model", "LR": "lr",
		"HistK": "hist-k", "Out": "out", "MaxCheckpoints": "max-checkpoints", "EPK": "epk", "P": "p"} {
		if got := kebab(name); got != want {
			t.Errorf("kebab(%q) = %q, want %q", name, got, want)
		}
	}
}

// subcommand returns the command of explaind's tree at path.
func subcommand(t *testing.T, path ...string) *cobra.Command {
	t.Helper()
	c, _, err := newRootCmd().Find(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestFlagError checks that library errors reach the user with the flags
// of the command that ran, and keep what they wrap.
func TestFlagError(t *testing.T) {
	epk := subcommand(t, "epk")
	trainModulo := subcommand(t, "train", "modulo")
	for _, c := range []struct {
		cmd  *cobra.Command
		err  error
		want string
	}{
		{epk, fmt.Errorf("job: %w", setting.Invalid("TestSize", 400, "the %s split has %d samples", "val", 370)),
			"job: invalid --test-size 400: the val split has 370 samples"},
		{epk, setting.Invalid("From:To", "5:2", "the run has 6 steps"), "invalid --steps 5:2: the run has 6 steps"},
		{epk, setting.Errorf("%s is full; choose another %v", "d", setting.Name("Out")), "d is full; choose another --out"},
		// A name without a flag in the command stays as it is.
		{epk, setting.Invalid("Optimizer.LR", -1, "want ≥ 0"), "invalid Optimizer.LR -1: want ≥ 0"},
		{trainModulo, fmt.Errorf("train: %w", setting.Invalid("Optimizer.LR", -1, "want ≥ 0")), "train: invalid --lr -1: want ≥ 0"},
		{trainModulo, setting.Invalid("Modulo.DModel", nil, "odd"), "invalid --d-model: odd"},
		{trainModulo, setting.Invalid("Precision", `"x"`, "want float64"), `invalid Precision "x": want float64`},
		{nil, setting.Invalid("TestSize", 1, "odd"), "invalid TestSize 1: odd"},
		{epk, errors.New("no setting"), "no setting"},
	} {
		err := flagError(c.cmd, c.err)
		if err == nil || err.Error() != c.want {
			t.Errorf("flagError(%q) = %v, want %q", c.err, err, c.want)
		}
		var e *setting.Error
		if errors.As(c.err, &e) && !errors.As(err, &e) {
			t.Errorf("flagError(%q) lost its setting.Error", c.err)
		}
	}
	if flagError(epk, nil) != nil {
		t.Error("flagError(nil) is not nil")
	}
	wrapped := flagError(epk, setting.Invalid("Out", "d", "%w", fs.ErrExist))
	if !errors.Is(wrapped, fs.ErrExist) {
		t.Errorf("%v lost its cause", wrapped)
	}
}

// TestFlagErrorEndToEnd runs commands whose libraries refuse a setting.
func TestFlagErrorEndToEnd(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "r")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"train", "modulo", "--out", dir, "--lr", "-1"}, "train: invalid --lr -1: want a finite value ≥ 0"},
		{[]string{"train", "cnn", "--out", dir, "--peak-epoch", "13"}, "train: invalid --peak-epoch 13: want strictly between 0 and --epochs (12)"},
		{[]string{"train", "cnn", "--out", dir, "--epochs", "1", "--peak-epoch", "0"}, "train: invalid --peak-epoch 0: want strictly between 0 and --epochs (1)"},
	} {
		if _, err := run(c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want an error mentioning %q", c.args, err, c.want)
		}
	}
}
