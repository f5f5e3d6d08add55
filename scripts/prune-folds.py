#!/usr/bin/env python3
"""Tables of the pruning experiment over scoring/evaluation folds.

    scripts/prune-folds.py OUT [FRACTIONS]

OUT is scripts/prune-folds.sh's output: OUT/<scope>/fold<k>/summary.json,
each an `explaind prune` summary. For each scope and each fraction kept
(FRACTIONS, comma-separated; default 0.005,0.01,0.02,0.05,0.1,0.2,0.3) it
prints, per method, the mean over folds of the agreement with the unpruned
model and of the test accuracy (random: the mean of its draws within a
fold first), with the standard deviation over folds. Standard library only.
"""
import glob
import json
import os
import statistics
import sys


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    fractions = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3]
    if len(sys.argv) > 2:
        fractions = [float(f) for f in sys.argv[2].split(",")]
    methods = ["epk", "magnitude", "random"]
    for scope in ("global", "module"):
        paths = sorted(glob.glob(os.path.join(out, scope, "fold*", "summary.json")))
        if not paths:
            continue
        folds = [json.load(open(p)) for p in paths]
        s0 = folds[0]
        print(f"\n{scope}: {len(folds)} folds, {s0['scoring_samples']} scoring and {s0['eval_samples']} evaluation "
              f"samples each, {s0['seeds']} random draws per fold, unpruned accuracy "
              + ", ".join(f"{f['unpruned']['accuracy']:.3f}" for f in folds))
        print("\n| kept | " + " | ".join(f"{m} agreement" for m in methods) + " | "
              + " | ".join(f"{m} accuracy" for m in methods) + " |")
        print("| --- " * (1 + 2 * len(methods)) + "|")
        for frac in fractions:
            cells = {}
            for metric in ("agreement", "accuracy"):
                for m in methods:
                    vals = []
                    for f in folds:
                        curve = next(c for c in f["curves"] if c["method"] == m)
                        pts = [p for p in curve["points"] if abs(p["fraction"] - frac) < 1e-12]
                        if not pts:
                            sys.exit(f"prune-folds: fraction {frac} is not in {scope}'s grids")
                        vals.append(pts[0][metric]["mean"])
                    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                    cells[(metric, m)] = f"{statistics.mean(vals):.3f} ± {sd:.3f}"
            row = [cells[("agreement", m)] for m in methods] + [cells[("accuracy", m)] for m in methods]
            print(f"| {100 * frac:g} % | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
