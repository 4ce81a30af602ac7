# SPDX-License-Identifier: MIT
# apt.sh - sourced by the scripts that install what they need: Debian
# packages that are missing are installed, and another apt or dpkg at
# work (unattended-upgrades, a second shell) is waited for instead of
# failing at once.
#
#   apt_install PKG...    install the ones not installed (as root)
#   apt_missing PKG...    print the ones not installed, one per line
#
# APT_LOCK_WAIT: seconds to wait for the locks in all (default 600).

apt_missing() {
	local p
	for p; do
		# installed, not merely known to dpkg (a removed package keeps its config)
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			echo "$p"
	done
}

# apt-get ARGS..., again while another apt or dpkg holds a lock it needs
apt_run() {
	local waited=0 limit=${APT_LOCK_WAIT:-600} pause=${APT_LOCK_PAUSE:-5} out rc
	while :; do
		rc=0
		out=$(DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$pause" "$@" 2>&1) ||
			rc=$?
		[ "$rc" = 0 ] && return 0
		printf '%s\n' "$out" >&2	# said only when it failed
		# apt says so in these words for the dpkg, lists and archives locks
		if ! grep -q -e 'Could not get lock' -e 'Unable to acquire the dpkg frontend lock' \
			<<<"$out" || [ "$waited" -ge "$limit" ]; then
			return "$rc"
		fi
		echo "apt.sh: another apt or dpkg is running; waiting (${waited}s of ${limit}s)" >&2
		sleep "$pause"
		waited=$((waited + pause))
	done
}

apt_install() {
	local need
	mapfile -t need < <(apt_missing "$@")
	((${#need[@]})) || return 0
	echo "apt.sh: installing ${need[*]}" >&2
	apt_run update -qq && apt_run install -y -qq --no-install-recommends "${need[@]}"
}
