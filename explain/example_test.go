package explain_test

import (
	"context"
	"fmt"
	"log"

	"github.com/explaind/explaind/epk"
	"github.com/explaind/explaind/explain"
	"github.com/explaind/explaind/explain/job"
)

// Open a recorded run, and ask in one pass for the kernel machine's
// prediction, each layer group's contribution per test sample, pruning
// importance per parameter and the data kernel per class and training
// sample.
func Example() {
	run, err := job.OpenRun[float32, float64]("runs/modulo")
	if err != nil {
		log.Fatal(err)
	}
	val, _ := run.Data.Val.Head(64)
	names := make([]string, 0)
	for _, p := range run.Model.Params() {
		names = append(names, p.Name)
	}
	out, err := explain.Run(context.Background(), run.Source, run.Model, run.Path, explain.Spec[float64]{
		Queries: []explain.Query{
			{Name: "prediction", Keep: explain.Test | explain.Class},
			{Name: "groups", Keep: explain.Test | explain.Group, Part: explain.Model},
			{Name: "importance", Keep: explain.Param, Abs: true},
			{Name: "kernel", Keep: explain.Class | explain.Train, Part: explain.Data},
		},
		Test:       explain.TestSet[float64]{X: val.Inputs, Labels: val.Labels},
		Quadrature: epk.Quadrature{Rule: epk.Exact, Points: 2, Grid: 4, Tol: 1e-6},
		Groups:     explain.DefaultGroups(names),
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range out.Results {
		fmt.Println(r.Query.Name, r.Axes, r.Shape)
	}
}
