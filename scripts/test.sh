#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build mring and pass every test: a normal build with every test, a
# Release build, an ASan+UBSan build and a TSan build with every test,
# an install check
# (pkg-config and the CMake package), the Python binding's tests, and a
# 60 s fuzzing run of the reader.
# On a fresh Debian 12 machine, as root: installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."

# One line at the end says how it went, whichever step stopped it.
set -E
stage() {
	step=$1
	echo "== $1"
}
trap 'echo "test.sh: FAILED in step: $step (after $((SECONDS / 60)) min; the output above says why)" >&2' ERR
# shellcheck source=apt.sh
. scripts/apt.sh
# python3 and its protobuf/crc32c modules are the independent readers of
# what `mring drain` writes (JSON, CSV, TensorBoard event files)
# tmux drives `mring top` in a real terminal for its test; promtool and a
# real Prometheus check `mring serve`
stage "install what is missing (waits for another apt)"
apt_install cmake gcc g++ make pkg-config libcriterion-dev python3 python3-protobuf python3-yaml \
	protobuf-compiler python3-crc32c libncurses-dev tmux liburcu-dev prometheus \
	python3-dev python3-setuptools python3-pip python3-venv python3-pytest groff-base \
	python3-torch

jobs=$(nproc)
stage "build and test (RelWithDebInfo)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure

stage "Release build (-O3 warns about things -O2 does not; the benches use it)"
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build build-release -j"$jobs"

stage "build and test under AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug \
	-DMRING_SANITIZE=address,undefined >/dev/null
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=halt_on_error=1:detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	ctest --test-dir build-asan --output-on-failure

stage "build and test under ThreadSanitizer"
# Criterion's runner starts under TSan thanks to tests/tsan_arena.c;
# tests/test_threads.c puts producer and readers on one mapping for it
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DMRING_SANITIZE=thread >/dev/null
cmake --build build-tsan -j"$jobs"
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	ctest --test-dir build-tsan --output-on-failure

stage "install check: pkg-config and find_package(mring)"
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install build --prefix "$prefix" >/dev/null
cat > "$prefix/use.c" <<'C'
#include <mring.h>
int main(void) { return mring_strerror(-EBUSY)[0] == '\0'; }
C
PKG_CONFIG_PATH="$prefix/lib/pkgconfig:$prefix/lib/$(gcc -print-multiarch)/pkgconfig" \
	sh -c 'cc -std=c11 -o "$0/use" "$0/use.c" $(pkg-config --cflags --libs mring)' "$prefix"
LD_LIBRARY_PATH="$prefix/lib:$prefix/lib/$(gcc -print-multiarch)" "$prefix/use"
mkdir -p "$prefix/cm"
cat > "$prefix/cm/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.20)
project(use C)
find_package(mring REQUIRED)
add_executable(use ../use.c)
target_link_libraries(use PRIVATE mring::mring_static)
CM
cmake -S "$prefix/cm" -B "$prefix/cm/b" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$prefix/cm/b" >/dev/null
"$prefix/cm/b/use"
test -f "$prefix/share/bash-completion/completions/mring"
echo "install check passed"

stage "Debian packages: build, install, compile, run, purge"
bash tests/deb_check.sh build-deb

stage "Python binding (venv, pip install, pytest)"
/usr/bin/python3 -m venv --system-site-packages "$prefix/venv"
"$prefix/venv/bin/python" -m pip install -q --no-build-isolation .
# the alert test runs `mring watch --signal` against a Python trainer
MRING_TOOL="$PWD/build/mring" "$prefix/venv/bin/python" -m pytest -q -p no:cacheprovider tests/python
/usr/bin/python3 tests/readme_check.py --include include --lib build/libmring.a \
	--python "$prefix/venv/bin/python"
"$prefix/venv/bin/python" python/bench_log.py --number 200000 --repeat 3

stage "fuzz the reader (60 s)"; bash tests/fuzz/run.sh 60

echo "test.sh: all passed in $((SECONDS / 60)) min $((SECONDS % 60)) s: ctest in the" \
	"RelWithDebInfo, ASan+UBSan and TSan builds, install check, Debian packages," \
	"Python binding, fuzzing"
