// Package report draws explaind's figures and assembles them, with the
// run's configuration and the EPK's validation figures, into one
// self-contained HTML page.
//
// Build reads a training run (manifest.json, metrics.jsonl, summary.json),
// any number of `explaind epk` output directories made for that run, and
// any number of experiment directories (each a summary.json and PNG/SVG
// figures), and writes
//
//	FILE.html           the page: every figure inlined as a base64 PNG, no
//	                    external style sheet, script, font or image, so it
//	                    opens without a network
//	FILE_figures/       every figure the report drew, as NAME.png and NAME.svg
//	FILE.json           what the report holds (Summary), written last
//
// The figures of a run: training and validation loss and accuracy over
// steps (and the learning rate when it varies). Of an EPK output, for each
// preset it holds: the per-step predicted change against the real change
// and the completeness residual per step; each layer group's contribution
// per step and summed over training (the grokking phases); the balance of
// the data and regularization terms; the EPK prediction against the model;
// per-group component scores and pruning importance; and the data kernel
// as a heat map; plus the validation table from its summary.json (or,
// without one, computed from the validation arrays).
//
// Every file is written atomically: a reader sees the old file or the
// complete new one.
package report
