#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# deb_check.sh - the Debian packages, in a build, install, compile, run,
# purge cycle: cpack -G DEB builds libmring1, libmring-dev and mring;
# apt-get installs them (and what they depend on); a program is compiled
# with pkg-config against the installed library and run; ldconfig knows
# libmring.so.1; mring and its completion work; apt-get purge removes
# every file again.  Root only (it installs into /usr); skips when an
# mring package is installed already, rather than replace it.
# Usage: deb_check.sh [BUILD_DIR]   (default: build-deb)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-deb}
fail() { echo "deb_check: FAIL: $*" >&2; exit 1; }
if [ "$(id -u)" != 0 ]; then
	echo "deb_check: skipped (needs root)"
	exit 0
fi
for p in libmring1 libmring-dev mring; do
	if grep -q 'install ok installed' <<<"$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)"; then
		echo "deb_check: skipped ($p is installed already; not replacing it)"
		exit 0
	fi
done
# shellcheck source=../scripts/apt.sh
. scripts/apt.sh
apt_install dpkg-dev		# dpkg-shlibdeps computes the Depends lines

rm -rf "$build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
	-DCMAKE_INSTALL_PREFIX=/usr >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null
build=$(cd "$build" && pwd)	# apt-get takes a package file by a path with a /
(cd "$build" && cpack -G DEB >/dev/null 2>&1) || fail "cpack -G DEB"

debs=("$build"/libmring1_*.deb "$build"/libmring-dev_*.deb "$build"/mring_*.deb)
for d in "${debs[@]}"; do
	[ -f "$d" ] || fail "no package $d"
done
ma=$(gcc -print-multiarch)
# grep -q on a here-string, not a pipe: under pipefail, grep quitting at
# the first match kills the writer with SIGPIPE and fails the pipeline
grep -q "usr/lib/$ma/libmring.so.1.0.0" <<<"$(dpkg-deb -c "$build"/libmring1_*.deb)" ||
	fail "libmring1 does not put the library in /usr/lib/$ma"

purge() { apt_run purge -y -qq libmring1 libmring-dev mring >/dev/null 2>&1 || true; }
trap purge EXIT
apt_run install -y -qq "${debs[@]}" >/dev/null

# /lib or /usr/lib: the same directory on a merged-/usr system
grep -q "libmring.so.1 .*=> \(/usr\)\?/lib/$ma/libmring.so.1$" <<<"$(ldconfig -p)" ||
	fail "ldconfig does not know libmring.so.1"
work=$(mktemp -d)
cat > "$work/use.c" <<'C'
#include <stdio.h>
#include <mring.h>
int main(void)
{
	struct mring_writer *w;
	int ret = mring_writer_open("deb-check", NULL, &w);

	if (ret < 0) {
		fprintf(stderr, "%s\n", mring_strerror(ret));
		return 1;
	}
	mring_step(w, 1);
	mring_log(w, mring_metric(w, "x", MRING_ON_STEP), 0.5);
	return mring_writer_close(w) != 0;
}
C
# shellcheck disable=SC2046
cc -std=c11 -o "$work/use" "$work/use.c" $(pkg-config --cflags --libs mring)
grep -q "libmring.so.1 => \(/usr\)\?/lib/$ma/libmring.so.1 " <<<"$(ldd "$work/use")" ||
	fail "the program does not load the installed libmring.so.1"
MRING_DIR=$work "$work/use"
grep -q "^   0 x " <<<"$(MRING_DIR=$work mring stat deb-check)" || fail "mring stat of the segment"
grep -q "^mring " <<<"$(mring --version)" || fail "mring --version"
[ -f /usr/share/bash-completion/completions/mring ] || fail "no bash completion"
[ -f /usr/share/doc/libmring1/copyright ] || fail "no copyright file"
# manual pages: mring(1) with the tool, mring(3) and one per function with -dev
for page in man1/mring.1 man3/mring.3 man3/mring_log.3 man3/mring_writer_open.3; do
	[ -f "/usr/share/man/$page" ] || [ -f "/usr/share/man/$page.gz" ] ||
		fail "no manual page /usr/share/man/$page"
done
rm -rf "$work"

trap - EXIT
apt_run purge -y -qq libmring1 libmring-dev mring >/dev/null
for f in /usr/bin/mring "/usr/lib/$ma/libmring.so.1" /usr/include/mring.h \
	/usr/share/bash-completion/completions/mring /usr/share/man/man3/mring_log.3; do
	[ ! -e "$f" ] || fail "$f is still there after purge"
done
! grep -q "libmring.so.1" <<<"$(ldconfig -p)" || fail "ldconfig still lists libmring.so.1"
echo "deb_check: build, install, compile, run, purge: all passed"
