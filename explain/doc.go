// Package explain is ExPLAIND's query engine (docs/method.md §2). Every
// explanation the paper uses is a sum of one contribution tensor
// T[x, c, k, s, j] (test sample, class, training sample, step, parameter)
// that is never materialized: a Query names the axes it keeps (Test, Class,
// Train, Step in buckets, Param, Tensor or Group), the part of the updates
// it attributes (Data, Reg, Resid, Model = data + reg, or the whole
// Update), whether it uses every class or each sample's true class, and
// whether an absolute value is taken after summing over steps.
//
// Run evaluates a set of queries in one pass over a recorded training
// history, each the cheapest way:
//
//   - Forward queries (nothing per parameter element or training sample):
//     forward-mode JVPs along the update's parts; when tensors or groups
//     are kept, one more tangent per tensor if the query keeps the class
//     axis, else the dot products of each tensor's update with the
//     reverse-mode features of the true class (or the class sum) at the
//     same quadrature nodes, one reverse pass instead of a tangent per
//     tensor;
//   - Feature queries (per element, or with Abs): one reverse pass per
//     quadrature node with one cotangent per class, their sum or the true
//     class, accumulated against the update per test sample. When one
//     cotangent per class is among them (pruning's Abs), the forward-mode
//     pass is dropped: every contribution is the features' dot product
//     with its part of the update (epk.Evaluator.Evaluate);
//   - Sweep queries (per training sample): the reverse-time sweep
//     Q_s = A_s ⊙ φ_s + β Q_{s+1} over the steps, replayed backwards one
//     checkpoint segment at a time, with the sums over test samples and
//     classes pushed in before the products with the training samples'
//     gradients. Memory is (kept rows) × P, whatever the number of
//     training samples: no per-sample momentum buffers.
//
// Whatever the queries, every job also reports the completeness accounting
// of Validation: the initial output, the data, regularization and
// update-reconstruction parts and the quadrature residual, which add up to
// the model's final output.
//
// A run recorded by package train opens with job.OpenRun (package
// explain/job); a model of one's own
// needs a Source (its replay, a gradient model and its batches) and an
// evaluation model (an nn.Layer; epk.LayerPath adapts it to path
// evaluation when it has no path methods of its own).
package explain
