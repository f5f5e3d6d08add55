#!/usr/bin/env bash
# The pruning experiment over K scoring/evaluation splits of one EPK job:
#
#   scripts/prune-folds.sh RUN SHARDS OUT [prune flags...]
#
# SHARDS holds the K shard outputs of one `explaind epk --shard I/K` job
# (SHARDS/0 ... SHARDS/K-1, presets validation and pruning). For fold k
# and each scope (global, module), `explaind prune` scores with every
# shard but k and evaluates on the test samples outside them (shard k and
# any sample the job left out), into OUT/<scope>/fold<k>; fold k's random
# pruning is seeded k+1. scripts/prune-folds.py then prints the table of
# the folds' means and spreads. Finished folds are kept: rerun to resume.
set -euo pipefail
if [ $# -lt 3 ]; then
	sed -n '2,12p' "$0" >&2
	exit 2
fi
run=$1 shards=$2 out=$3
shift 3
bin=${EXPLAIND:-$(dirname "$0")/../bin/explaind}
if [ ! -d "$shards" ]; then
	echo "prune-folds: no directory $shards; compute the shards with explaind epk --shard I/K --out $shards/I" >&2
	exit 2
fi
k=$(find "$shards" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*' | wc -l)
if [ "$k" -lt 2 ]; then
	echo "prune-folds: $shards holds $k shard outputs, want the K ≥ 2 shards of one job (SHARDS/0 ... SHARDS/K-1)" >&2
	exit 2
fi
for scope in global module; do
	for ((f = 0; f < k; f++)); do
		dir=$out/$scope/fold$f
		[ -f "$dir/summary.json" ] && continue
		args=()
		for ((j = 0; j < k; j++)); do
			[ "$j" -ne "$f" ] && args+=(--epk "$shards/$j")
		done
		"$bin" prune --run "$run" "${args[@]}" --out "$dir" --scope "$scope" --seed $((f + 1)) --quiet "$@" >/dev/null
		echo "prune-folds: $dir"
	done
done
python3 "$(dirname "$0")/prune-folds.py" "$out"
