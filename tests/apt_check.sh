#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# apt_check.sh - scripts/apt.sh against a fake apt-get on PATH: it waits
# while another apt holds a lock, gives up after APT_LOCK_WAIT seconds,
# passes other failures through at once, and installs only what dpkg
# does not list as installed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "apt_check: FAIL: $*" >&2; exit 1; }

# fake apt-get: logs its arguments; fails with apt's lock message while
# $work/locked holds a number above 0 (counting it down), or with another
# error when $work/broken exists
cat > "$work/apt-get" <<'FAKE'
#!/bin/bash
echo "$*" >> "$WORK/calls"
n=$(cat "$WORK/locked" 2>/dev/null || echo 0)
if [ "$n" -gt 0 ]; then
	echo $((n - 1)) > "$WORK/locked"
	echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (apt-get)"
	exit 100
fi
[ -e "$WORK/broken" ] && { echo "E: Unable to locate package nosuch"; exit 100; }
exit 0
FAKE
chmod +x "$work/apt-get"
export WORK=$work PATH="$work:$PATH" APT_LOCK_PAUSE=0 APT_LOCK_WAIT=10
# shellcheck source=../scripts/apt.sh
. "$here/../scripts/apt.sh"

# held for 3 tries, then free: apt_run retries and succeeds
echo 3 > "$work/locked"
apt_run install -y x 2> "$work/err" || fail "apt_run gave up while the lock was held 3 times"
[ "$(wc -l < "$work/calls")" = 4 ] || fail "expected 4 calls, got $(wc -l < "$work/calls")"
grep -q "waiting" "$work/err" || fail "no 'waiting' message"
grep -q -- "-o DPkg::Lock::Timeout=0 install -y x" "$work/calls" || fail "arguments: $(cat "$work/calls")"

# held for longer than APT_LOCK_WAIT allows: fails with apt's status
: > "$work/calls"
echo 1000 > "$work/locked"
APT_LOCK_PAUSE=1 APT_LOCK_WAIT=2 apt_run update 2> "$work/err" && fail "apt_run waited forever"
[ "$(wc -l < "$work/calls")" = 3 ] || fail "expected 3 calls (0 s, 1 s, 2 s), got $(wc -l < "$work/calls")"
grep -q "Could not get lock" "$work/err" || fail "apt's message not passed on"

# any other failure: no retry
: > "$work/calls"
echo 0 > "$work/locked"
touch "$work/broken"
apt_run install nosuch 2> "$work/err" && fail "a failed install succeeded"
[ "$(wc -l < "$work/calls")" = 1 ] || fail "retried a failure that is not a lock"
grep -q "Unable to locate package nosuch" "$work/err" || fail "apt's message not passed on"
rm "$work/broken"

# apt_install: only the packages dpkg does not list as installed
: > "$work/calls"
dpkg-query -W -f='${Status}' bash | grep -q 'install ok installed' || fail "bash not installed?"
apt_install bash mring-no-such-package-xyz 2> /dev/null || fail "apt_install failed"
grep -q "install -y -qq --no-install-recommends mring-no-such-package-xyz$" "$work/calls" ||
	fail "install line: $(cat "$work/calls")"
grep -q "update" "$work/calls" || fail "no update before the install"
: > "$work/calls"
apt_install bash || fail "apt_install of an installed package failed"
[ ! -s "$work/calls" ] || fail "apt-get ran for an installed package: $(cat "$work/calls")"
echo "apt_check: all passed"
