#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Long runs of the randomized fault tests (not part of CI):
#
#   bash tests/long.sh [MINUTES] [BUILD_DIR]
#
# Repeats, until MINUTES (default 30) are up: test_crash (producers and
# drainers SIGKILLed, producers SIGSTOPped, at random instants; a new
# MRING_TEST_SEED every round), test_stress and test_threads (every
# sequence number and value, every full-ring mode), and test_shortest
# (10^6 new values of each kind against glibc's printf and strtod).
# Stops at the first failure and prints the seed to repeat it with.  BUILD_DIR (default
# build) must hold a configured build with tests.
# The soak and the fuzzer have their own knobs: MRING_SOAK_SECONDS for
# tests/e2e_drain.py::test_soak, and tests/fuzz/run.sh SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=${1:-30}
build=${2:-build}
case $minutes in
'' | *[!0-9]*) echo "long.sh: MINUTES must be a number, got '$minutes'" >&2; exit 2 ;;
esac
cmake --build "$build" -j"$(nproc)" --target test_crash test_stress test_threads test_shortest >/dev/null

end=$(($(date +%s) + minutes * 60))
rounds=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
while (($(date +%s) < end)); do
	seed=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
	# as ctest runs them: test_threads one test at a time
	for t in "test_crash --jobs=2" "test_stress --jobs=2" "test_threads --jobs=1" \
		"test_shortest --jobs=2"; do
		set -- $t
		if ! MRING_TEST_SEED=$seed MRING_TEST_SHORTEST_N=1000000 \
			"$build/tests/$1" "$2" >"$log" 2>&1; then
			cat "$log"
			echo -n "long.sh: $1 failed in round $((rounds + 1))" >&2
			# test_crash draws its instants from the seed, test_shortest its values
			case $1 in test_crash | test_shortest) echo -n ", MRING_TEST_SEED=$seed" >&2 ;; esac
			echo >&2
			exit 1
		fi
	done
	rounds=$((rounds + 1))
done
# per round: 40 producer kills, up to 64 drainer kills, 50 producer stops
echo "long.sh: $rounds rounds in $minutes min, no failure:" \
	"$((rounds * 40)) producer kills, up to $((rounds * 64)) drainer kills," \
	"$((rounds * 50)) producer stops (x1000 reads each), $((rounds * 4)) stress tests," \
	"$((rounds * 2)) threaded tests, $((rounds * 10)) M formatted values"
