// Package data builds the datasets of the ExPLAIND reference experiments and
// the small amount of input plumbing the training loops need.
//
// Three sources are supported:
//
//   - Modulo addition (MakeModulo): every unordered pair 0 <= a <= b < p,
//     tokens [a, p, b, p+1], label (a+b) mod p, shuffled with a seed and cut
//     into a validation and a training split, which can be written to and
//     read back from CSV so a run directory records exactly its data.
//   - CIFAR-2 (LoadCIFAR2): the cat-vs-dog subset of CIFAR-10, read from the
//     dataset's "binary version" (cifar-10-batches-bin).
//   - Fashion-MNIST two-class tasks (LoadFashion2): read from the IDX files
//     that Debian's dataset-fashion-mnist package installs under
//     /usr/share/datasets/fashion-mnist. This is the image dataset that works
//     out of the box on a machine without network access.
//
// All loaders return a Dataset: inputs as a row-major tensor.Dense with the
// sample axis first, integer labels, the class count and a name, with a
// content Fingerprint for run records. Augmentation (random horizontal flips
// with recordable draws) and epoch batching (shuffled, drop-last) are in
// augment.go and batch.go.
//
// Loaders return errors, never panic, for anything that depends on files or
// user-supplied sizes.
package data
