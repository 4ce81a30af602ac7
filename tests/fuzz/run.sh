#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Fuzz the mring reader with libFuzzer + ASan + UBSan.
#
#   bash tests/fuzz/run.sh [SECONDS] [extra libFuzzer flags...]
#
# Builds tests/fuzz/fuzz_reader.c with clang (installs clang 14 and
# libclang-rt-14-dev with apt-get when missing), fuzzes a throw-away copy
# of tests/fuzz/corpus/ for SECONDS (default 60) and fails on any crash,
# leak, timeout or out-of-memory.  Crash files are kept in
# tests/fuzz/artifacts/ (not committed).  Extra flags go to libFuzzer,
# e.g. -jobs=8 -workers=8 for a parallel campaign.
set -euo pipefail
cd "$(dirname "$0")/../.."

secs=${1:-60}
shift || true
case $secs in
'' | *[!0-9]*) echo "run.sh: SECONDS must be a number, got '$secs'" >&2; exit 2 ;;
esac

CC=${CC:-clang}
have_fuzzer() {
	command -v "$CC" >/dev/null 2>&1 &&
		echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }' |
		"$CC" -x c -fsanitize=fuzzer,address,undefined -o /dev/null - >/dev/null 2>&1
}
if ! have_fuzzer; then
	echo "== installing clang and libclang-rt-14-dev"
	# shellcheck source=../../scripts/apt.sh
	. "$(dirname "$0")/../../scripts/apt.sh"
	apt_install clang libclang-rt-14-dev
	have_fuzzer || { echo "run.sh: $CC cannot build a libFuzzer target" >&2; exit 1; }
fi

work=$(mktemp -d /tmp/mring-fuzz.XXXXXX)
shm_base=/dev/shm
[ -d "$shm_base" ] && [ -w "$shm_base" ] || shm_base=/tmp
export MRING_FUZZ_DIR
MRING_FUZZ_DIR=$(mktemp -d "$shm_base/mring-fuzz-run.XXXXXX")
cleanup() { rm -rf "$work" "$MRING_FUZZ_DIR"; }
trap cleanup EXIT

echo "== building fuzz_reader"
# shellcheck disable=SC2046
"$CC" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	-I include $(ls src/*.c) tests/fuzz/fuzz_reader.c -lpthread -lm \
	-o "$work/fuzz_reader"

mkdir -p "$work/corpus" tests/fuzz/artifacts
cp tests/fuzz/corpus/* "$work/corpus/" 2>/dev/null || true

echo "== fuzzing for $secs s"
set +e
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
	"$work/fuzz_reader" "$work/corpus" \
	-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
	-print_final_stats=1 -artifact_prefix=tests/fuzz/artifacts/ "$@" \
	>"$work/log" 2>&1
rc=$?
set -e

# -jobs runs write fuzz-N.log files in the current directory
logs=("$work/log")
for f in fuzz-[0-9]*.log; do
	[ -e "$f" ] && mv "$f" "$work/" && logs+=("$work/$f")
done

runs=0
for l in "${logs[@]}"; do
	r=$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "$l" | grep -o '[0-9]*$' | tail -1 || true)
	runs=$((runs + ${r:-0}))
done
crashes=$(cat "${logs[@]}" | grep -ac -E '^==[0-9]+==ERROR|^SUMMARY: (Address|Undefined|Leak)Sanitizer|deadly signal|ALARM: working on the last Unit|out-of-memory \(' || true)

# the final stats: the last status line and the coverage summary
grep -a -E '^#[0-9]+.*(DONE|cov:)' "$work/log" | tail -1 || true
grep -a -E '^stat::' "$work/log" || true

if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
	echo "---- libFuzzer log (tail) ----"
	cat "${logs[@]}" | tail -60
	ls -l tests/fuzz/artifacts/ 2>/dev/null || true
	echo "fuzz_reader: $runs runs, FAILED (exit $rc); reproduce with:" \
		"$work/fuzz_reader <crash file> (rebuild first: this dir is removed)"
	exit 1
fi
rmdir tests/fuzz/artifacts 2>/dev/null || true
echo "fuzz_reader: $runs runs, 0 crashes"
