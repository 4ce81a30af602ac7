#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# See mring working: a pretend training loop logs every step through
# mring while a separate reader process drains the ring and prints the
# values and the epoch results.  On a fresh Debian 12 machine, as root.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=apt.sh
. scripts/apt.sh
apt_install cmake gcc make pkg-config libncurses-dev liburcu-dev
cmake -S . -B build-demo -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build build-demo -j"$(nproc)" --target demo_train demo_read mring_tool >/dev/null

seg="mring-demo-$$"
out=$(mktemp -d)
trap 'rm -f "${MRING_DIR:-/dev/shm}/$seg" "${MRING_DIR:-/dev/shm}/$seg-b"; rm -rf "$out"' EXIT

echo "== 1. a training loop and a separate reader process (docs/examples/)"
# the reader starts first and waits for the segment, like a sidecar would
build-demo/demo_read "$seg" &
reader=$!
build-demo/demo_train "$seg" 3 8 20000    # 3 epochs of 8 steps, 20 ms each
wait "$reader"

echo
echo "== 2. the same loop drained by \`mring drain\` into JSONL, CSV, TensorBoard and HF"
build-demo/mring drain --wait --follow --flush-ms 100 --jsonl "$out/log.jsonl" \
	--csv "$out/csv" --tensorboard "$out/tb" --hf "$out/hf" "$seg-b" &
drain=$!
build-demo/demo_train "$seg-b" 2 5 20000 >/dev/null
wait "$drain"
echo "-- $out/log.jsonl (Hugging Face log_history rows):"
cat "$out/log.jsonl"
echo "-- $out/csv/metrics.csv (Lightning CSVLogger layout):"
cat "$out/csv/metrics.csv"
echo "-- $out/hf/trainer_state.json (Hugging Face TrainerState), its log_history:"
grep '^    {' "$out/hf/trainer_state.json"
echo "-- $out/tb:"
ls -l "$out/tb"
echo "-- mring ls; mring stat:"
build-demo/mring ls | grep -E "NAME|$seg"
build-demo/mring stat "$seg-b"
