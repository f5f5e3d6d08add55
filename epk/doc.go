// Package epk is the numerical core of ExPLAIND's exact path kernel
// (docs/method.md §1–§4): it splits optimizer steps into their data
// and regularization parts and integrates the model's Jacobian along each
// step.
//
// For one step s with parameters θ_s, update Δθ_s = θ_{s+1} − θ_s and a
// test batch X, the path identity
//
//	f(θ_{s+1}; x) − f(θ_s; x) = ∫_0^1 J(θ_s + tΔθ_s; x) dt · Δθ_s
//
// holds exactly. The pieces:
//
//   - Splitting (Update, AdamWSplitter, SGDSplitter): Δθ_s = Data + Reg +
//     Resid, with PyTorch's AdamW and SGD semantics; Resid is the
//     update-reconstruction residual, computed in float64 and reported.
//     Kernel carries the coefficients a reverse-time data-attribution sweep
//     needs.
//   - Quadrature (Quadrature, Plan): the midpoint and Gauss–Legendre rules;
//     Exact, which locates every t where a ReLU input changes sign along the
//     step (per test sample) and integrates each smooth piece with a
//     low-order Gauss–Legendre rule; and Adaptive, which bisects until the
//     step identity holds per interval (for models whose switching points
//     are not exposed, such as CNNs with max-pools).
//   - Evaluation (Evaluator): step-wise contributions [test, class] of the
//     data, regularization and residual parts and of each parameter tensor,
//     by forward mode (one JVP with M tangents per node); features
//     φ_s(x)ᵀc = ∫ J(θ_s(t))ᵀ c dt per test sample and cotangent, by reverse
//     mode at the same nodes; per-parameter scores (Scores) accumulated over
//     steps; and, always, the completeness residual
//     Σ contributions − (f(θ_{s+1}) − f(θ_s)), the error estimate of every
//     rule (two forward passes).
//
// Models are evaluated at one path position per row (PathModel): a row is
// one test sample at one quadrature node, so samples with different nodes
// share one batched pass. models.Modulo implements PathModel and
// SwitchModel natively; LayerPath adapts any nn.Layer by substituting the
// parameters, one group of equal positions at a time.
//
// A typical step, visiting a replayed run in order (history.Replay.Forward;
// explain.StepInputOf builds a step's input from a replayed view):
//
//	g, _ := epk.MeanGradient(model, xTrain, yTrain) // at θ_s
//	u, _ := splitter.Split(explain.StepInputOf(view, g))
//	ev, _ := epk.NewEvaluator[float64](model, epk.Options{Quadrature: epk.Quadrature{Rule: epk.Exact}, PerTensor: true})
//	res, _ := ev.Evaluate(u, xTest, epk.Request[float64]{Features: true})
//	scores.Add(res.Features, u)
//
// Everything is generic over tensor.Float; sums over quadrature nodes of
// contributions are accumulated in float64.
package epk
