#!/bin/sh
# SPDX-License-Identifier: MIT
#
# callgrind.sh - instructions per call of the inline hot path.
#
# Usage: bench/callgrind.sh [BUILD_DIR | PATH_TO_bench_insn]
#
#   PATH_TO_bench_insn  use that executable as is
#   BUILD_DIR           use BUILD_DIR/bench_insn if it was built there, else
#                       compile bench/bench_insn.c against BUILD_DIR/libmring.a
#   (nothing)           build libmring.a (Release) in a temporary directory
#                       and compile bench/bench_insn.c against it
#
# Environment: CC (default cc), CFLAGS (default -O3 -DNDEBUG, as CMake's
# Release), MRING_DIR (where the short-lived segments go, default /dev/shm).
#
# Each case runs bench_insn for N=1000 and N=2000 calls under
#   valgrind --tool=callgrind --collect-atstart=no \
#            --toggle-collect='bench_measured_*'
# so only the instructions inside the one-line wrapper around the API call
# are counted (the inlined call plus the wrapper's ret), and prints
# (Ir(2000) - Ir(1000)) / 1000.  Deterministic: no drainer, and the ring
# (capacity 65536, 65535 usable in DROP mode) never fills.  Under valgrind
# clock_gettime takes glibc's syscall path (no vDSO): the step figure counts
# that wrapper (about 10 Ir) but nothing in the kernel.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CC=${CC:-cc}
CFLAGS=${CFLAGS:--O3 -DNDEBUG}
N1=1000
N2=2000

command -v valgrind >/dev/null 2>&1 || { echo "callgrind.sh: valgrind not found" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mring-callgrind.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'exit 1' HUP INT PIPE TERM

compile() {	# $1: directory holding libmring.a
	[ -f "$1/libmring.a" ] || { echo "callgrind.sh: no libmring.a in $1" >&2; exit 1; }
	# shellcheck disable=SC2086
	$CC -std=gnu11 $CFLAGS -Wall -Wextra -Werror -I"$ROOT/include" \
		"$ROOT/bench/bench_insn.c" "$1/libmring.a" -lpthread -lm -o "$WORK/bench_insn"
	INSN="$WORK/bench_insn"
	HOW="compiled with $CC $CFLAGS against $1/libmring.a"
}

ARG=${1:-}
if [ -n "$ARG" ] && [ -f "$ARG" ] && [ -x "$ARG" ]; then
	INSN=$ARG
	HOW="given executable"
elif [ -n "$ARG" ] && [ -d "$ARG" ]; then
	if [ -x "$ARG/bench_insn" ]; then
		INSN="$ARG/bench_insn"
		HOW="from build dir $ARG"
	else
		compile "$ARG"
	fi
elif [ -n "$ARG" ]; then
	echo "usage: $0 [BUILD_DIR | PATH_TO_bench_insn]" >&2
	exit 2
else
	echo "building libmring.a (Release) in $WORK/build ..." >&2
	cmake -S "$ROOT" -B "$WORK/build" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build "$WORK/build" --target mring_static -j2 >/dev/null
	compile "$WORK/build"
fi

# Ir collected inside bench_measured_* for: $1 case, $2 N
ir() {
	out="$WORK/callgrind.$1.$2"
	if ! valgrind --tool=callgrind --collect-atstart=no \
		--toggle-collect='bench_measured_*' --callgrind-out-file="$out" \
		"$INSN" "$1" "$2" >"$WORK/log.$1.$2" 2>&1; then
		echo "callgrind.sh: $INSN $1 $2 failed:" >&2
		cat "$WORK/log.$1.$2" >&2
		exit 1
	fi
	# "summary:" (older) or "totals:" holds the Ir collected
	v=$(awk '/^(summary|totals):/ { print $2; exit }' "$out")
	[ -n "$v" ] || { echo "callgrind.sh: no totals in $out" >&2; exit 1; }
	echo "$v"
}

echo "bench_insn: $INSN ($HOW)"
echo "$(valgrind --version); Ir counted in bench_measured_* only; per call = (Ir($N2) - Ir($N1)) / $((N2 - N1))"
printf '%-16s %-44s %10s %10s %9s\n' case what "Ir($N1)" "Ir($N2)" "Ir/call"
for c in log_step log_step_epoch log_epoch weighted step; do
	case $c in
	log_step)	what="mring_log, ON_STEP" ;;
	log_step_epoch)	what="mring_log, ON_STEP|ON_EPOCH" ;;
	log_epoch)	what="mring_log, ON_EPOCH only (no ring record)" ;;
	weighted)	what="mring_log_weighted, ON_STEP|ON_EPOCH" ;;
	step)		what="mring_step (+ glibc clock_gettime, no vDSO)" ;;
	esac
	a=$(ir "$c" "$N1")
	b=$(ir "$c" "$N2")
	per=$(awk -v a="$a" -v b="$b" -v d="$((N2 - N1))" 'BEGIN { printf "%.2f", (b - a) / d }')
	printf '%-16s %-44s %10s %10s %9s\n' "$c" "$what" "$a" "$b" "$per"
done
