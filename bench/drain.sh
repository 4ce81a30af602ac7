#!/bin/bash
# SPDX-License-Identifier: MIT
#
# drain.sh - events per second that `mring drain` writes into each sink.
#
# Usage: bench/drain.sh BUILD_DIR [REPS]
#
# One producer run (tests/prod_canary: 1,000,000 steps, two ON_STEP values
# per step, an epoch every 1000 steps: 3,004,000 events) fills a segment;
# each repetition drains a copy of it into JSONL, CSV and TensorBoard on one
# core and times it.  Prints ROW lines for bench/run.sh's table: median,
# min, max events/s per sink over the repetitions.
set -euo pipefail

BUILD=${1:?usage: drain.sh BUILD_DIR [REPS]}
REPS=${2:-3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mring-drain-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export MRING_DIR=$WORK

"$BUILD/prod_canary" seg 1000000 1000 0 0 8388608 >/dev/null

now_ns() { date +%s%N; }

declare -A rates
for rep in $(seq "$REPS"); do
	for sink in jsonl csv tensorboard; do
		cp "$WORK/seg" "$WORK/s-$sink"
		out="$WORK/out-$sink"
		rm -rf "$out" "$out.mring-state"
		[ "$sink" = jsonl ] && arg="$out" || arg="$out"
		t0=$(now_ns)
		summary=$(taskset -c 0 "$BUILD/mring" drain "--$sink" "$arg" "s-$sink" 2>&1)
		t1=$(now_ns)
		events=$(echo "$summary" | awk '/events,/ { print $3 }')
		rates[$sink]+="$(awk -v e="$events" -v ns=$((t1 - t0)) 'BEGIN { printf "%.4f", e / ns * 1000 }') "
		rm -rf "$out" "$out.mring-state" "$WORK/s-$sink"
	done
done

row() {	# key name sink target goal
	echo "${rates[$3]}" | tr ' ' '\n' | grep . | sort -g | awk -v key="$1" -v name="$2" \
		-v target="$4" -v goal="$5" 'BEGIN { OFS = "\t" }
		{ v[NR] = $1 }
		END {
			med = v[int((NR + 1) / 2)]
			status = goal == "" ? "-" : (med >= goal ? "met" : "MISSED")
			print "ROW", key, name, med, v[1], v[NR], "M ev/s", "-", target, status,
			      "mring drain on one core, " NR " reps, 3.0 M events (prod_canary)"
		}'
}
row 3.05 "mring drain -> JSONL file" jsonl ">= 5 M ev/s" 5
row 3.06 "mring drain -> CSV (metrics.csv)" csv "-" ""
row 3.07 "mring drain -> TensorBoard event file" tensorboard "-" ""
