#!/bin/bash
# SPDX-License-Identifier: MIT
#
# run.sh - the one command: build the benchmarks (Release, build-bench/),
# run them all (mring hot path with a drainer, peers, reader side, memory,
# callgrind instruction counts) and print one table.
#
# Usage: bench/run.sh [--quick] [--reps N]
#
#   --quick   smoke run (3 reps, smaller runs): about a minute
#   --reps N  repetitions (default 7)
#
# As root it apt-get installs what is missing (lttng-tools liblttng-ust-dev
# liburcu-dev valgrind cmake gcc pkg-config).  LTTng: if no lttng-sessiond
# is running it starts one (--daemonize) and stops that one (by its pid) at
# the end; it creates a session mring-bench-<pid> writing to /dev/shm,
# enables mring_bench:* in a channel of 8 x 1 MiB sub-buffers (discard
# mode), starts it, runs the suite, stops and destroys the session and
# removes its trace.  Environment: BUILD_DIR (default <repo>/build-bench),
# MRING_DIR (segments, default /dev/shm), TMPDIR (fprintf peer's file).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-bench}
SUITE_ARGS=()
while [ $# -gt 0 ]; do
	case $1 in
	--quick) SUITE_ARGS+=(--quick) ;;
	--reps) SUITE_ARGS+=(--reps "$2"); shift ;;
	-h|--help) sed -n '3,21p' "$0"; exit 0 ;;
	*) echo "usage: $0 [--quick] [--reps N]" >&2; exit 2 ;;
	esac
	shift
done

T0=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mring-bench.XXXXXX")
SESSION="mring-bench-$$"
TRACE_DIR="/dev/shm/mring-bench-lttng-$$"
SESSIOND_PID=""
SESSION_UP=0

cleanup() {
	if [ "$SESSION_UP" = 1 ]; then
		lttng destroy "$SESSION" >/dev/null 2>&1 || true
		SESSION_UP=0
	fi
	rm -rf "$TRACE_DIR"
	if [ -n "$SESSIOND_PID" ]; then
		kill "$SESSIOND_PID" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$SESSIOND_PID" 2>/dev/null || break; sleep 0.1; done
		SESSIOND_PID=""
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

# ---- 1. what is missing --------------------------------------------------
# shellcheck source=../scripts/apt.sh
. "$ROOT/scripts/apt.sh"
mapfile -t missing < <(apt_missing lttng-tools liblttng-ust-dev liburcu-dev valgrind cmake gcc \
	pkg-config libncurses-dev python3-dev python3-setuptools python3-pip python3-venv prometheus)
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ]; then
		apt_install "${missing[@]}"
	else
		echo "run.sh: missing ${missing[*]} (not root: not installing; those peers are skipped)" >&2
	fi
fi

# ---- 2. build ------------------------------------------------------------
echo "configuring and building in $BUILD ..." >&2
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
	-DMRING_BENCH_PEERS=ON >"$WORK/cmake.log" 2>&1 || { cat "$WORK/cmake.log" >&2; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" --target bench_suite bench_insn bench_fmt mring_tool prod_canary >"$WORK/build.log" 2>&1 ||
	{ cat "$WORK/build.log" >&2; exit 1; }

# ---- 3. memory first: before any LTTng session maps its buffers into us ----
echo "running bench_suite --memory-only ${SUITE_ARGS[*]:-} ..." >&2
suite_rc=0
"$BUILD/bench_suite" --memory-only "${SUITE_ARGS[@]}" >"$WORK/mem.out" || suite_rc=$?

# ---- 3b. LTTng session ----------------------------------------------------
LTTNG_NOTE="lttng: not available"
if command -v lttng >/dev/null 2>&1 && command -v lttng-sessiond >/dev/null 2>&1; then
	if ! pgrep -x lttng-sessiond >/dev/null 2>&1; then
		before=$(pgrep -x lttng-sessiond || true)
		lttng-sessiond --daemonize >"$WORK/sessiond.log" 2>&1 || true
		for _ in $(seq 50); do
			SESSIOND_PID=$(pgrep -x -n lttng-sessiond || true)
			[ -n "$SESSIOND_PID" ] && [ "$SESSIOND_PID" != "$before" ] && break
			sleep 0.1
		done
		echo "started lttng-sessiond pid $SESSIOND_PID (stopped at exit)" >&2
	else
		echo "using the running lttng-sessiond" >&2
	fi
	if lttng create "$SESSION" --output="$TRACE_DIR" >"$WORK/lttng.log" 2>&1 &&
	   lttng enable-channel -u -s "$SESSION" --subbuf-size=1M --num-subbuf=8 ch \
		>>"$WORK/lttng.log" 2>&1 &&
	   lttng enable-event -u -s "$SESSION" -c ch 'mring_bench:*' >>"$WORK/lttng.log" 2>&1 &&
	   lttng start "$SESSION" >>"$WORK/lttng.log" 2>&1; then
		SESSION_UP=1
	else
		cat "$WORK/lttng.log" >&2
		LTTNG_NOTE="lttng: session setup FAILED (see above)"
	fi
fi

# ---- 4. run ------------------------------------------------------------------
echo "running bench_suite ${SUITE_ARGS[*]:-} ..." >&2
"$BUILD/bench_suite" --no-memory "${SUITE_ARGS[@]}" >"$WORK/suite.out" || suite_rc=$?

if [ "$SESSION_UP" = 1 ]; then
	lttng stop "$SESSION" >"$WORK/stop.log" 2>&1 || true
	discarded=$(grep -o '[0-9]* events* were discarded' "$WORK/stop.log" | grep -o '^[0-9]*' || true)
	trace_kib=$(du -sk "$TRACE_DIR" 2>/dev/null | cut -f1 || echo '?')
	lttng destroy "$SESSION" >/dev/null 2>&1 || true
	SESSION_UP=0
	LTTNG_NOTE="lttng: session $SESSION (per-uid buffers, 8 x 1 MiB sub-buffers, discard mode, trace on /dev/shm) wrote ${trace_kib} KiB; events discarded: ${discarded:-0}"
fi
rm -rf "$TRACE_DIR"
if [ -n "$SESSIOND_PID" ]; then
	kill "$SESSIOND_PID" 2>/dev/null || true
	for _ in $(seq 50); do kill -0 "$SESSIOND_PID" 2>/dev/null || break; sleep 0.1; done
	SESSIOND_PID=""
fi

# ---- 4b. the drain tool into each sink ---------------------------------------
echo "drain.sh ..." >&2
drain_rc=0
bash "$ROOT/bench/drain.sh" "$BUILD" 3 >"$WORK/drain.rows" 2>"$WORK/drain.err" || drain_rc=$?

# ---- 4b'. the sinks' number formatter against printf + strtod --------------
echo "bench_fmt ..." >&2
fmt_rc=0
"$BUILD/bench_fmt" --rows >"$WORK/fmt.rows" 2>"$WORK/fmt.err" || fmt_rc=$?

# ---- 4c. the Python binding (m.log next to a bare call, same run) -----------
echo "python binding ..." >&2
py_rc=0
{
	/usr/bin/python3 -m venv --system-site-packages "$WORK/venv" &&
	"$WORK/venv/bin/python" -m pip install -q --no-build-isolation "$ROOT" &&
	"$WORK/venv/bin/python" "$ROOT/python/bench_log.py" --rows --number 1000000 --repeat 7
} >"$WORK/py.rows" 2>"$WORK/py.err" || py_rc=$?

# ---- 4d. mring serve: one scrape of ~1,000 series ---------------------------
echo "mring serve scrape cost ..." >&2
serve_rc=0
/usr/bin/python3 "$ROOT/tests/e2e_serve.py" --mring "$BUILD/mring" \
	--producer "$BUILD/prod_canary" --bench 40 >"$WORK/serve.out" 2>&1 || serve_rc=$?
awk 'BEGIN { OFS = "\t" }
/^bench: [0-9]+ segments/ {
	for (i = 1; i <= NF; i++) {
		if ($i == "median") med = $(i + 1)
		if ($i == "p90") p90 = $(i + 1)
		if ($i == "max") mx = $(i + 1)
		if ($i == "series,") series = $(i - 1)
	}
	print "ROW", "3.08", "mring serve: one /metrics scrape", med, "-", mx, "ms", "-", "-", "-",
	      series " series (40 segments), new TCP connection each; p90 " p90 " ms"
}' "$WORK/serve.out" >"$WORK/serve.rows"

# ---- 5. callgrind: instructions per call -----------------------------------
echo "callgrind ..." >&2
cg_rc=0
if command -v valgrind >/dev/null 2>&1; then
	sh "$ROOT/bench/callgrind.sh" "$BUILD/bench_insn" >"$WORK/cg.out" 2>&1 || cg_rc=$?
	awk 'BEGIN { OFS = "\t" }
	function row(key, name, v, target, goal) {
		print "ROW", key, name, v, v, v, "Ir/call", "-", target,
		      (v <= goal ? "met" : "MISSED"), "callgrind, deterministic: (Ir(2000)-Ir(1000))/1000, incl. wrapper ret"
	}
	$1 == "log_step"       { row("1.20", "instructions per mring_log, ON_STEP", $NF, "<= 16", 16) }
	$1 == "log_step_epoch" { row("1.21", "instructions per mring_log, ON_STEP|ON_EPOCH", $NF, "<= 50", 50) }
	$1 == "weighted"       { row("1.22", "instructions per mring_log_weighted, ON_STEP|ON_EPOCH", $NF, "<= 50", 50) }
	$1 == "log_epoch"      { print "ROW", "1.23", "instructions per mring_log, ON_EPOCH only", $NF, $NF, $NF, "Ir/call", "-", "-", "-", "no ring record" }
	$1 == "step"           { print "ROW", "1.24", "instructions per mring_step", $NF, $NF, $NF, "Ir/call", "-", "-", "-", "clock_gettime via glibc syscall path under valgrind (no kernel Ir)" }
	' "$WORK/cg.out" >"$WORK/cg.rows"
else
	: >"$WORK/cg.rows"
fi

# ---- 6. one table ------------------------------------------------------------
model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
echo
echo "mring benchmark suite, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty tree)')"
echo "machine: ${model:-?}; nproc $(nproc); kernel $(uname -r); $(systemd-detect-virt 2>/dev/null || echo 'virt ?'); clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null || echo '?')"
echo "build: $(${CC:-cc} --version | head -1), CMAKE_BUILD_TYPE=Release; lttng-ust $(dpkg-query -W -f='${Version}' liblttng-ust-dev 2>/dev/null || echo none); liburcu $(dpkg-query -W -f='${Version}' liburcu-dev 2>/dev/null || echo none); $(valgrind --version 2>/dev/null || echo 'no valgrind')"
grep '^INFO' "$WORK/suite.out" | cut -f2- | grep -v 'all checks passed\|CHECK FAILURES' || true
echo "$LTTNG_NOTE"
echo "figures: median, min, max over the repetitions; ratio = peer cost / mring cost, per repetition, median [min-max]"
echo
{ grep -h '^ROW' "$WORK/suite.out" "$WORK/mem.out" "$WORK/drain.rows" "$WORK/fmt.rows" "$WORK/py.rows" "$WORK/serve.rows" || true; cat "$WORK/cg.rows"; } | LC_ALL=C sort -t "$(printf '\t')" -k2,2 |
awk -F '\t' '
function fmt(v) {
	if (v == "" || v == "-") return "-"
	v += 0
	if (v < 0) a = -v; else a = v
	if (a >= 10000) return sprintf("%.0f", v)
	if (a >= 100) return sprintf("%.1f", v)
	return sprintf("%.2f", v)
}
BEGIN {
	hdr = sprintf("%-5s %-54s %9s %9s %9s %-8s %-18s %-20s %-7s %s", "#", "case", "median", "min", "max", "unit", "ratio vs mring", "target", "status", "note")
	print hdr
	gsub(/./, "-", hdr); print hdr
	sec["1"] = "1. hot path (drainer process on the other cpu)"
	sec["2"] = "2. peers: per step one wall-clock read + 16 records (id, step, epoch, value, wall time)"
	sec["3"] = "3. reader side"
	sec["4"] = "4. memory"
	sec["5"] = "5. Python (CPython extension, per call)"
}
{
	s = substr($2, 1, 1)
	if (s != last) { print "  " sec[s]; last = s }
	printf "%-5s %-54s %9s %9s %9s %-8s %-18s %-20s %-7s %s\n", $2, $3, fmt($4), fmt($5), fmt($6), $7, $8, $9, $10, $11
}'
echo
grep -h '^INFO' "$WORK/mem.out" "$WORK/suite.out" | cut -f2- | grep 'all checks passed\|CHECK FAILURES' || echo "bench_suite: exit status $suite_rc"
[ "$cg_rc" = 0 ] || { echo "callgrind.sh failed:"; cat "$WORK/cg.out"; }
[ "$drain_rc" = 0 ] || { echo "drain.sh failed:"; cat "$WORK/drain.err"; }
[ "$fmt_rc" = 0 ] || { echo "bench_fmt failed:"; cat "$WORK/fmt.err"; }
[ "$py_rc" = 0 ] || { echo "python bench failed:"; cat "$WORK/py.err"; }
[ "$serve_rc" = 0 ] || { echo "serve bench failed:"; cat "$WORK/serve.out"; }

# ---- 7. issue 11: a WAIT-mode producer with `mring drain --follow` attached ----
# (bench/drain.sh --help; add --mring LABEL=PATH to compare other builds of the tool)
echo "drain.sh --follow bench (WAIT producer with mring drain attached) ..." >&2
echo
follow_rc=0
follow_args=(--build "$BUILD" --no-build)
[[ " ${SUITE_ARGS[*]:-} " == *" --quick "* ]] && follow_args+=(--quick)
cmake --build "$BUILD" -j"$(nproc)" --target bench_drain >"$WORK/build-drain.log" 2>&1 &&
	bash "$ROOT/bench/drain.sh" "${follow_args[@]}" | grep -v '^RUN ' || follow_rc=$?
[ "$follow_rc" = 0 ] || { echo "drain.sh (follow) failed: exit status $follow_rc"; cat "$WORK/build-drain.log"; }
echo "total $(( $(date +%s) - T0 )) s"
[ "$follow_rc" = 0 ] || exit 1
exit $(( suite_rc || cg_rc || drain_rc || py_rc || serve_rc ))
