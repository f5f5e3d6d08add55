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
//
//   - Quadrature (Quadrature, Plan): the midpoint and Gauss–Legendre rules,
//     which have no tolerance (parity runs and probes), and two rules that
//     certify one. Both split [0, 1] per test sample into intervals, each
//     integrated with a low-order Gauss–Legendre rule, and measure every
//     interval's error along Δθ, |∫_lo^hi J·Δθ dt − (f(hi) − f(lo))| (max over
//     classes). While a sample's errors add up to more than Tol, its
//     intervals of largest error are bisected, all samples together, one
//     batched pass per round; then the step's completeness residual is
//     measured per (sample, class), the samples that still miss Tol are
//     refined against a lower target and a lower rounding floor (pieces
//     whose errors lie below 32ε of their values are left alone while
//     planning, but below it they can still add up to more than Tol), and
//     those that cannot be brought to Tol within the node budget
//     (MaxNodes), or are NaN, are listed in StepResult.Missed
//     (StepResult.Certified otherwise). Contributions derived from the
//     features are measured again, and their plan leaves 1/1024 of Tol for
//     the derivation's float32 rounding. Summing the
//     errors, not accepting each interval at Tol, is what makes Tol hold
//     for the step: an interval holding a jump of the integrand has an
//     error of order jump × length, so k such intervals accepted at Tol
//     each missed Tol up to k-fold. Exact starts from the points where a
//     ReLU input changes sign along the step, located per test sample
//     (SwitchModel), so its pieces are smooth; Adaptive starts from one
//     interval per sample (Quadrature.Start) of any PathModel.
//
//     explaind's adaptive chooses per model: Exact (2 points per piece)
//     for models that expose their switches (the transformer: a few
//     hundred ReLUs per sample, of which a handful switch per step), and
//     Adaptive with Simpson's rule per interval (Quadrature.Ends) for
//     ResNet-9, whose ReLUs and
//     max-pool winners switch far more often than bisection needs nodes
//     at the tolerances used. Measured on the tiny ResNet-9 oracle
//     fixtures (width/16, 12×12, steps 1–5): the oracle located 8–222 smooth
//     pieces per sample and step (about 75 on average), so locating costs
//     at least 2 JVP nodes per piece plus about 10 forward rows per
//     switch, while certified bisection needed 12–32 nodes per sample and
//     step at Tol 1e-4 and 41–634 at 1e-6 (TestCertifiedCNN). ResNet-9 at
//     width/8 on 28×28 images has about 16 times as many ReLUs; on steps
//     40:46 of a short width/8 Fashion-2 run (16 images) certified
//     bisection took 26 nodes per image and step at Tol 1e-4 (the former
//     per-interval rule took 13.8 and missed Tol 2.3-fold; at 1e-6 it took
//     124 and missed 8.7-fold). Near the learning-rate peak of the
//     12-epoch width/8 run (steps 228:230, 4 images, float64) the refined
//     intervals cover the whole step, 4 to 66 per sample and step at depths
//     up to 10, rather than gathering around a few switches: the
//     integrand jumps all along the step, so locating switches would not
//     leave a few smooth pieces there either. There the 3-point
//     Gauss–Legendre intervals spent half their JVP rows on intervals
//     that were bisected later; Simpson's intervals keep every node they
//     evaluate (steps 228:230, 8 images, float32, Tol 1e-4: 41.3 final
//     nodes per image and step against 45.6, 660 single-tangent JVP rows
//     against 1,410 plus 295 forward rows, and 1.7 times less time; late
//     in training, steps 500:502, the two took the same time). On the
//     modulo transformer (steps
//     1400:1460 of the paper run, 32 samples, Tol 1e-6) the certified rule
//     takes 5.57 nodes per sample and step, as the former rule did, which
//     missed Tol (1.4e-6).
//
//   - Evaluation (Evaluator): step-wise contributions [test, class] of the
//     data, regularization and residual parts and of each parameter tensor,
//     by forward mode (one JVP with M tangents per node), or, when every
//     class's features are asked for anyway, as their dot products with
//     the parts (Evaluate); features
//     φ_s(x)ᵀc = ∫ J(θ_s(t))ᵀ c dt per test sample and cotangent, by reverse
//     mode at the same nodes. With Simpson's intervals every node the
//     planning evaluates is final, so there the planning itself runs in
//     reverse mode: one backward row per node gives its integrand along Δθ
//     (J_c(t)·Δθ = Σ_j ⟨∇_j f_c(t), Δθ_j⟩) and its gradients, held
//     (Options.MaxHeldGrads) until the weights are final, when the
//     features are their weighted sums; no JVP row at all. For two classes
//     of log-probabilities (LogProbModel) the two gradients are parallel,
//     ∇f_0 = p_1 h and ∇f_1 = −p_0 h with h = ∇(f_0 − f_1), so one
//     cotangent row per node suffices. Per-parameter scores (Scores) are
//     accumulated over steps; and, always, the completeness residual
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
