package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/internal/lock"
	"github.com/explaind/explaind/internal/progress"
	"github.com/explaind/explaind/train"
	"github.com/spf13/cobra"
)

// interruptible returns a context cancelled by the first Ctrl-C or
// SIGTERM; a second signal kills the process as usual.
func interruptible(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return stopOnSignal(cmd, "\nexplaind: stopping after this step and writing a checkpoint (Ctrl-C again to abort)")
}

// stopOnSignal returns a context cancelled by the first Ctrl-C or SIGTERM,
// after printing message; a second signal kills the process as usual.
func stopOnSignal(cmd *cobra.Command, message string) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(cmd.Context())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case <-sig:
			fmt.Fprintln(cmd.ErrOrStderr(), message)
			signal.Stop(sig)
			cancel()
		case <-ctx.Done():
			signal.Stop(sig)
		}
	}()
	return ctx, cancel
}

func printSummary(cmd *cobra.Command, dir string, s *train.Summary) error {
	b, _ := json.MarshalIndent(s, "", "  ")
	fmt.Fprintf(cmd.OutOrStdout(), "%s\nrun written to %s\n", b, dir)
	if !s.Done {
		return fmt.Errorf("training stopped before it finished: %s", s.StopReason)
	}
	return nil
}

func newTrainCmd() *cobra.Command {
	var resume string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Train a model while recording its history (modulo | cnn), or resume a run",
		Long: `Train the paper's models while recording everything needed to replay
every step exactly: the configuration, each step's batch, flips and learning
rate, a hash of the parameters after every step, and checkpoints every K steps.

  explaind train modulo --out runs/modulo       the grokking transformer
  explaind train cnn --dataset fashion2 --out runs/fashion2
  explaind train --resume runs/modulo           continue an interrupted run`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if resume == "" {
				return fmt.Errorf("name a task (explaind train modulo|cnn) or a run to continue (--resume DIR)")
			}
			ctx, cancel := interruptible(cmd)
			defer cancel()
			s, err := train.Resume[float32](ctx, resume, trainOptions(cmd, quiet, false))
			if err != nil {
				return err
			}
			return printSummary(cmd, resume, s)
		},
	}
	cmd.Flags().StringVar(&resume, "resume", "", "continue the interrupted run in this directory")
	cmd.PersistentFlags().BoolVar(&quiet, "quiet", false, "no progress bar")
	cmd.AddCommand(newTrainModuloCmd(&quiet), newTrainCNNCmd(&quiet))
	return cmd
}

func trainOptions(cmd *cobra.Command, quiet, overwrite bool) train.Options {
	return train.Options{Overwrite: overwrite, Software: buildInfo(), EvalChunk: 2048, Progress: progressTo(cmd, quiet)}
}

// commonTrainFlags binds the flags shared by both tasks.
func commonTrainFlags(cmd *cobra.Command, c *train.Config, out *string, overwrite *bool) {
	f := cmd.Flags()
	f.StringVar(out, "out", "", "run directory to create (required)")
	f.BoolVar(overwrite, "overwrite", false, "replace an existing run directory")
	f.Uint64Var(&c.Seed, "seed", c.Seed, "seed for initialization, data split, batch order and flips")
	f.IntVar(&c.Epochs, "epochs", c.Epochs, "number of epochs (at most, for modulo)")
	f.Float64Var(&c.Optimizer.LR, "lr", c.Optimizer.LR, "learning rate (the peak of the triangle schedule)")
	f.Float64Var(&c.Optimizer.WeightDecay, "weight-decay", c.Optimizer.WeightDecay, "weight decay")
	f.IntVar(&c.BatchSize, "batch-size", c.BatchSize, "batch size (0: full batch)")
	f.IntVar(&c.CheckpointEvery, "checkpoint-every", c.CheckpointEvery, "write a checkpoint every K steps")
	f.StringVar(&c.Schedule, "schedule", c.Schedule, "learning-rate schedule: constant or triangle")
	cmd.MarkFlagRequired("out")
}

func runTrain(cmd *cobra.Command, c train.Config, out string, overwrite, quiet bool) error {
	ctx, cancel := interruptible(cmd)
	defer cancel()
	s, err := train.Train[float32](ctx, out, c, trainOptions(cmd, quiet, overwrite))
	if err != nil {
		return err
	}
	return printSummary(cmd, out, s)
}

func newTrainModuloCmd(quiet *bool) *cobra.Command {
	c := train.ModuloDefaults()
	var out string
	var overwrite bool
	cmd := &cobra.Command{
		Use:   "modulo",
		Short: "Train the modulo-addition transformer (AdamW, full batch) until it groks",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runTrain(cmd, c, out, overwrite, *quiet)
		},
	}
	commonTrainFlags(cmd, &c, &out, &overwrite)
	f := cmd.Flags()
	m := c.Modulo
	f.IntVar(&m.P, "p", m.P, "the modulus p (vocabulary p+2)")
	f.IntVar(&m.TrainSize, "train-size", m.TrainSize, "training samples")
	f.IntVar(&m.ValSize, "val-size", m.ValSize, "validation samples")
	f.IntVar(&m.DModel, "d-model", m.DModel, "model width")
	f.IntVar(&m.Heads, "heads", m.Heads, "attention heads")
	f.IntVar(&m.MLP, "mlp", m.MLP, "MLP width")
	f.Float64Var(&c.Optimizer.Beta1, "beta1", c.Optimizer.Beta1, "AdamW β1")
	f.Float64Var(&c.Optimizer.Beta2, "beta2", c.Optimizer.Beta2, "AdamW β2")
	f.BoolVar(&c.StopAtPerfect, "stop-at-perfect", c.StopAtPerfect, "stop once training and validation accuracy both reach --stop-accuracy")
	f.Float64Var(&c.StopAccuracy, "stop-accuracy", 1, "accuracy (a fraction) at which --stop-at-perfect stops")
	return cmd
}

func newTrainCNNCmd(quiet *bool) *cobra.Command {
	c := train.CNNDefaults("fashion2")
	var out string
	var overwrite bool
	cmd := &cobra.Command{
		Use:   "cnn",
		Short: "Train the ResNet-9 (no batch norm) on a two-class image task (SGD, triangle schedule)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runTrain(cmd, c, out, overwrite, *quiet)
		},
	}
	commonTrainFlags(cmd, &c, &out, &overwrite)
	f := cmd.Flags()
	n := c.CNN
	f.StringVar(&n.Dataset, "dataset", n.Dataset, "fashion2 (Fashion-MNIST T-shirt vs shirt) or cifar2 (CIFAR-10 cat vs dog)")
	f.StringVar(&n.DataDir, "data-dir", "", "dataset directory (cifar2: cifar-10-batches-bin; fashion2: default /usr/share/datasets/fashion-mnist)")
	f.IntVar(&n.TrainSize, "train-size", 0, "keep the first N training images (0: all)")
	f.IntVar(&n.TestSize, "test-size", 0, "keep the first N test images (0: all)")
	f.IntVar(&n.WidthDiv, "width-div", n.WidthDiv, "divide every channel count by this (1 is the paper's full width)")
	f.BoolVar(&n.Flip, "flip", n.Flip, "random horizontal flips of training images")
	f.IntVar(&c.PeakEpoch, "peak-epoch", c.PeakEpoch, "epoch at which the triangle schedule peaks")
	f.Float64Var(&c.Optimizer.Momentum, "momentum", c.Optimizer.Momentum, "SGD momentum")
	return cmd
}

func newVerifyCmd() *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "verify RUN",
		Short: "Replay a recorded run and check every step against its recorded hash",
		Long: `Replay a recorded run and check every step against its recorded hash,
then stamp the run (verified.json) so that later EPK jobs of this
executable can skip their pre-flight replay.

verify only reads the run, but it writes the stamp only under the run's
lock, which it takes, if it can, before it opens the run and holds until it
is done; meanwhile a train --resume of the run is refused, naming verify's
PID. A run another process is writing is verified as it stands but not
stamped.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// The lock is taken before the run is read, so that a run that
			// verifies is the run stamped.
			l, lockErr := lock.Dir(args[0])
			defer l.Release()
			o, err := train.Open[float32](args[0])
			if err != nil {
				return err
			}
			r := o.Replay
			n := r.Steps()
			var step func(int)
			if bar := progress.Func(progressTo(cmd, quiet), "verifying"); bar != nil {
				step = func(done int) { bar(done, n) }
			}
			if err := r.Verify(step); err != nil {
				return err
			}
			if lockErr != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "note: the run verified but is not stamped: %v\n", lockErr)
			} else if err := history.WriteStamp(args[0], n, "replayed", buildInfo()); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "note: the run verified but its stamp was not written: %v\n", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: all %d steps and %d checkpoints reproduce bit for bit\n", args[0], n, len(r.Manifest().Checkpoints))
			return nil
		},
	}
	cmd.Flags().BoolVar(&quiet, "quiet", false, "no progress bar")
	return cmd
}
