#!/usr/bin/env bash
# Fuzzes each of explaind's fuzz targets (func FuzzXxx in a *_test.go file)
# in turn for a bounded time:
#
#   scripts/fuzz.sh [TIME] [PATTERN]
#
# TIME is per target, as go test's -fuzztime takes it: a duration (10s,
# the default) or a count of executions (5000x). PATTERN, an extended
# regular expression, limits the run to the targets whose name matches it. Set
# GOFLAGS for build tags (GOFLAGS=-tags=openblas). Minimizing each new
# input is capped at 100 executions so that slow targets spend their time
# fuzzing. A failing input is written to the package's
# testdata/fuzz/FuzzXxx/, where plain go test replays it from then on;
# the script goes on with the other targets and exits 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
time=${1:-10s}
pattern=${2:-.}
failed=()
while IFS=: read -r file line; do
	name=${line#func }
	name=${name%%(*}
	[[ $name =~ $pattern ]] || continue
	pkg=./$(dirname "$file")
	echo "== $name ($pkg, $time)"
	if ! out=$(go test -run '^$' -fuzz "^$name\$" -fuzztime "$time" -fuzzminimizetime 100x "$pkg" 2>&1); then
		echo "$out"
		# The fuzzing engine itself can time out on a loaded machine
		# ("context deadline exceeded", no failing input written): retry once.
		if grep -q "context deadline exceeded" <<<"$out" && ! grep -q "Failing input written" <<<"$out" &&
			go test -run '^$' -fuzz "^$name\$" -fuzztime "$time" -fuzzminimizetime 100x "$pkg"; then
			continue
		fi
		failed+=("$name ($pkg)")
	else
		echo "$out"
	fi
done < <(git ls-files '*_test.go' | xargs grep -H -o '^func Fuzz[A-Za-z0-9_]*(' | sort)
if [ ${#failed[@]} -gt 0 ]; then
	printf 'fuzz: failed: %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz: every target passed"
