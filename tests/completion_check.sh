#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# completion_check.sh - completion/mring.bash offers the subcommands, each
# subcommand's options as its --help lists them, and the segment names in
# $MRING_DIR.  Usage: completion_check.sh PATH-TO-mring
set -euo pipefail
mring=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "completion_check: FAIL: $*" >&2; exit 1; }
# shellcheck source=../completion/mring.bash
. "$here/../completion/mring.bash"

# complete WORD... : what _mring offers for the last word
complete_words() {
	COMP_WORDS=("$@")
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMPREPLY=()
	_mring
	printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' '
}

got=$(complete_words mring "")
[ "$got" = "--help --version drain help ls rm serve stat top version watch " ] || fail "subcommands: $got"
[ "$(complete_words mring d)" = "drain " ] || fail "mring d"

# every option a subcommand's --help mentions is offered, and nothing else
for cmd in drain serve top rm watch stat; do
	want=$({ "$mring" "$cmd" --help; echo --help; } | grep -o -- '--[a-z][a-z-]*' |
		sort -u | tr '\n' ' ')
	got=$(complete_words mring "$cmd" --)
	[ "$got" = "$want" ] || fail "$cmd options: offered '$got', --help lists '$want'"
done

# segment names from $MRING_DIR; not directories
export MRING_DIR=$work
: > "$work/run-r0"
: > "$work/run-r1"
: > "$work/other"
mkdir "$work/adir"
[ "$(complete_words mring stat run)" = "run-r0 run-r1 " ] || fail "segments: $(complete_words mring stat run)"
[ "$(complete_words mring drain --jsonl x.jsonl r)" = "run-r0 run-r1 " ] || fail "drain segments"
[ "$(complete_words mring help s)" = "serve stat " ] || fail "help s"
echo "completion_check: all passed"
