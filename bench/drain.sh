#!/bin/bash
# SPDX-License-Identifier: MIT
#
# drain.sh - benchmarks of the `mring drain` tool.  Two modes:
#
# 1. bench/drain.sh BUILD_DIR [REPS]
#    Events per second that `mring drain` writes into each sink.  One
#    producer run (tests/prod_canary: 1,000,000 steps, two ON_STEP values
#    per step, an epoch every 1000 steps: 3,004,000 events) fills a segment;
#    each repetition drains a copy of it into JSONL, CSV and TensorBoard on
#    one core and times it.  Prints ROW lines for bench/run.sh's table:
#    median, min, max events/s per sink over the repetitions.
#
# 2. bench/drain.sh [--build DIR] [--mring [LABEL=]PATH]... [--reps N]
#                   [--quick] [--only flat|sink|latency] [--no-build] [--no-pin]
#    Issue 11: a WAIT-mode producer with the real `mring drain --follow
#    --jsonl FILE SEG` (default options) attached (bench/bench_drain.c):
#      flat     producer events/s, 16 values per step, rings 2^20, 4096, 1024
#      sink     the sink's own rate: `drain --jsonl` of a closed segment
#      latency  mring_log of step s -> line of step s in the file (1 step/ms)
#    Every --mring tool is measured in the same run (default: BUILD/mring,
#    labelled "tree"); e.g. the original drain next to the working tree's:
#      git -C "$ROOT" worktree add /tmp/mring-old 07516fb
#      cmake -S /tmp/mring-old -B /tmp/mring-old/build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF
#      cmake --build /tmp/mring-old/build -j2 --target mring_tool
#      bash bench/drain.sh --mring old=/tmp/mring-old/build/mring --mring tree=build-bench/mring
#    --build DIR  where bench_drain (and the default tool) are built
#                 (default $BUILD_DIR or <repo>/build-bench; configured
#                 Release if it has no CMakeCache.txt); --no-build: use as is
#    --reps N     repetitions, median reported (default 3); --quick: shorter
#                 runs (about 15 s per tool); default about 50 s per tool
#    Output files go to a fresh directory in ${TMPDIR:-/tmp} (its file
#    system is printed: fsync cost depends on it), segments to /dev/shm.
#    Prints RUN lines, one table and "LABEL.key value" lines; exit status 1
#    if any run was invalid (records dropped, rows missing, drain failed).
set -euo pipefail

if [ $# -eq 0 ] || [[ $1 == -* ]]; then
	ROOT=$(cd "$(dirname "$0")/.." && pwd)
	BUILD=${BUILD_DIR:-$ROOT/build-bench}
	TOOLS=()
	ARGS=()
	DO_BUILD=1
	while [ $# -gt 0 ]; do
		case $1 in
		--build) BUILD=$2; shift ;;
		--mring) TOOLS+=("$2"); shift ;;
		--reps|--only) ARGS+=("$1" "$2"); shift ;;
		--quick|--no-pin) ARGS+=("$1") ;;
		--no-build) DO_BUILD=0 ;;
		-h|--help) sed -n '3,37p' "$0"; exit 0 ;;
		*) echo "drain.sh: unknown option $1 (--help)" >&2; exit 2 ;;
		esac
		shift
	done
	BUILD=$(cd "$BUILD" 2>/dev/null && pwd || echo "$BUILD")
	if [ "$DO_BUILD" = 1 ]; then
		if [ ! -f "$BUILD/CMakeCache.txt" ]; then
			cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >&2
		fi
		cmake --build "$BUILD" -j"$(nproc)" --target bench_drain mring_tool >&2
	fi
	[ ${#TOOLS[@]} -gt 0 ] || TOOLS=("tree=$BUILD/mring")
	OUT=$(mktemp -d "${TMPDIR:-/tmp}/mring-drain-follow.XXXXXX")
	SHM=$(mktemp -d /dev/shm/mring-drain-follow.XXXXXX)
	trap 'rm -rf "$OUT" "$SHM"' EXIT
	trap 'exit 1' HUP INT TERM

	# what is measured: each tool's source commit and whether its tree differs
	describe() {	# tool path -> "commit (dirty: files)" of the tree it was built from
		local dir src top
		dir=$(dirname "$1")
		src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$dir/CMakeCache.txt" 2>/dev/null || true)
		top=$(git -C "${src:-$dir}" rev-parse --show-toplevel 2>/dev/null) || { echo "not in git"; return; }
		local dirty
		dirty=$(git -C "$top" status --short --untracked-files=no -- src include CMakeLists.txt 2>/dev/null | wc -l)
		echo "source $top, commit $(git -C "$top" rev-parse --short HEAD)$([ "$dirty" -gt 0 ] && echo ", plus $dirty modified files under src/ include/ CMakeLists.txt (working tree)")"
	}
	echo "mring drain benchmark (issue 11), $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	echo "machine: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); nproc $(nproc); kernel $(uname -r); clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null || echo '?')"
	echo "output files: $OUT on $(df -T "$OUT" | awk 'NR == 2 { print $2 " (" $1 ")" }'); segments: $SHM"
	BARGS=()
	n=0
	for t in "${TOOLS[@]}"; do
		n=$((n + 1))
		if [[ $t == *=* && ${t%%=*} != */* && ${t%%=*} != .* ]]; then
			label=${t%%=*} path=${t#*=}
		else
			label=tool$n path=$t
		fi
		path=$(cd "$(dirname "$path")" && pwd)/$(basename "$path")
		echo "tool $label: $path; $(describe "$path")"
		BARGS+=(--mring "$label=$path")
	done
	rc=0
	"$BUILD/bench_drain" "${BARGS[@]}" "${ARGS[@]}" --dir "$OUT" --shm "$SHM" || rc=$?
	exit $rc
fi

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
