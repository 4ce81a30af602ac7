# SPDX-License-Identifier: MIT
# bash completion for mring(1): subcommands, each one's options, and
# segment names from $MRING_DIR (default /dev/shm).  Installed to
# share/bash-completion/completions/mring.

_mring_segments()
{
	local dir=${MRING_DIR:-/dev/shm} f
	[ -d "$dir" ] || return
	for f in "$dir"/*; do
		# regular files only: what a segment can be
		[ -f "$f" ] && printf '%s\n' "${f##*/}"
	done
}

_mring()
{
	local cur prev cmd opts
	cur=${COMP_WORDS[COMP_CWORD]}
	prev=${COMP_WORDS[COMP_CWORD-1]}
	if [ "$COMP_CWORD" -eq 1 ]; then
		mapfile -t COMPREPLY < <(compgen -W "drain ls stat rm top serve watch version help
			--help --version" -- "$cur")
		return
	fi
	cmd=${COMP_WORDS[1]}
	case $cmd in
	drain)
		opts="--jsonl --csv --tensorboard --hf --state --follow --wait --flush-ms --every
			--reduce-ranks --observe --on-rewind --last-steps --help"
		case $prev in
		--jsonl|--state)
			mapfile -t COMPREPLY < <(compgen -f -- "$cur")
			return ;;
		--csv|--tensorboard|--hf)
			mapfile -t COMPREPLY < <(compgen -d -- "$cur")
			return ;;
		--flush-ms|--every|--last-steps)
			return ;;
		--on-rewind)
			mapfile -t COMPREPLY < <(compgen -W "remove keep" -- "$cur")
			return ;;
		esac ;;
	serve)
		opts="--listen --interval --print --verbose --all-users --help"
		case $prev in
		--listen|--interval)
			return ;;
		esac ;;
	watch)
		opts="--nan --stall --lag --lag-factor --above --below --spike --crash --json
			--exec --exec-limit --exec-timeout --signal --exit --dump --dump-steps
			--interval --until-done --help"
		case $prev in
		--dump)
			mapfile -t COMPREPLY < <(compgen -d -- "$cur")
			return ;;
		--signal)
			mapfile -t COMPREPLY < <(compgen -W "USR1 USR2 TERM INT HUP" -- "$cur")
			return ;;
		--stall|--lag|--lag-factor|--above|--below|--spike|--exec|--exec-limit|\
		--exec-timeout|--dump-steps|--interval)
			return ;;
		esac ;;
	top)	opts="--all-users --help" ;;
	rm)	opts="--force --help" ;;
	stat)	opts="--hparams --help" ;;
	ls)
		mapfile -t COMPREPLY < <(compgen -d -- "$cur")
		return ;;
	help)
		[ "$COMP_CWORD" -eq 2 ] &&
			mapfile -t COMPREPLY < <(compgen -W "drain ls stat rm top serve watch version" -- "$cur")
		return ;;
	*)	return ;;
	esac
	if [[ $cur == -* ]]; then
		mapfile -t COMPREPLY < <(compgen -W "$opts" -- "$cur")
	elif [[ $cur == */* ]]; then
		mapfile -t COMPREPLY < <(compgen -f -- "$cur")
	else
		mapfile -t COMPREPLY < <(compgen -W "$(_mring_segments)" -- "$cur")
	fi
}
complete -F _mring mring
