// Command custommodel records the training of a model of your own, built
// from explaind's layers, so that ExPLAIND can explain it like the built-in
// ones: the loop is yours, the run store records and replays it.
//
//	go run ./examples/custommodel -out /tmp/mymodel
//
// The recipe: wrap the model, an optimizer and the training data in a
// train.Session (a history.Stepper), start a run with history.Create, and
// give every step to Recorder.Step as a history.StepRecord (batch indices,
// learning rate). Replay needs the same model, optimizer and data again:
// build them the same way and pass them to history.Open.
package main

import (
	"flag"
	"fmt"
	"log"
	"math"
	"math/rand/v2"

	"github.com/explaind/explaind/data"
	"github.com/explaind/explaind/history"
	"github.com/explaind/explaind/nn"
	"github.com/explaind/explaind/optim"
	"github.com/explaind/explaind/tensor"
	"github.com/explaind/explaind/train"
)

// twoSpirals is a small two-class problem in the plane.
func twoSpirals(n int, seed uint64) data.Dataset[float32] {
	rng := rand.New(rand.NewPCG(seed, 1))
	x := tensor.New[float32](n, 2)
	y := make([]int, n)
	for i := 0; i < n; i++ {
		c := i % 2
		r := rng.Float64()*3 + 0.3
		a := r*2 + float64(c)*math.Pi + rng.NormFloat64()*0.1
		x.Data[2*i], x.Data[2*i+1] = float32(r*math.Cos(a)), float32(r*math.Sin(a))
		y[i] = c
	}
	return data.Dataset[float32]{Name: "two_spirals", Inputs: x, Labels: y, Classes: 2}
}

// build makes the model, optimizer and session; replay calls it again.
func build(seed uint64) (*train.Session[float32], error) {
	rng := rand.New(rand.NewPCG(seed, 2))
	l1 := nn.NewLinear[float32]("0", 2, 64, true)
	l2 := nn.NewLinear[float32]("2", 64, 64, true)
	l3 := nn.NewLinear[float32]("4", 64, 2, true)
	for _, l := range []*nn.Linear[float32]{l1, l2, l3} {
		l.InitUniform(rng)
	}
	model := nn.NewSequential[float32](l1, nn.ReLU[float32]{}, l2, nn.ReLU[float32]{}, l3, nn.LogSoftmax[float32]{})
	opt, err := optim.NewSGD[float32](0.9, 0, 1e-4, false)
	if err != nil {
		return nil, err
	}
	return train.NewSession[float32](model, opt, twoSpirals(512, seed))
}

func main() {
	out := flag.String("out", "/tmp/explaind-custom", "run directory")
	steps := flag.Int("steps", 300, "training steps")
	flag.Parse()

	sess, err := build(7)
	if err != nil {
		log.Fatal(err)
	}
	rec, err := history.Create[float32](*out, sess, history.Options{CheckpointEvery: 50, Overwrite: true,
		Config: []byte(`{"example":"custommodel","seed":7}`)})
	if err != nil {
		log.Fatal(err)
	}
	sched := optim.Constant(0.05)
	batchRNG := rand.New(rand.NewPCG(7, 3))
	for s := 0; s < *steps; s++ {
		batch := batchRNG.Perm(512)[:64] // your loop decides batches and rates
		if err := rec.Step(history.StepRecord{Epoch: s / 8, LR: sched.LR(s), WeightDecay: 1e-4, Batch: batch}); err != nil {
			log.Fatal(err)
		}
		if s%50 == 0 {
			fmt.Printf("step %d: batch loss %.4f, accuracy %.2f\n", s, sess.LastLoss, sess.LastAccuracy)
		}
	}
	if err := rec.Close(true, "done"); err != nil {
		log.Fatal(err)
	}
	loss, acc, err := train.Evaluate[float32](sess.Model, sess.Train, 0)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("trained %d steps: loss %.4f, accuracy %.3f; run in %s\n", *steps, loss, acc, *out)

	// Replay: rebuild the same model, then recompute and check every step.
	fresh, err := build(7)
	if err != nil {
		log.Fatal(err)
	}
	r, err := history.Open[float32](*out, fresh)
	if err != nil {
		log.Fatal(err)
	}
	if err := r.Verify(nil); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("replayed and verified all %d steps bit for bit\n", r.Steps())
}
