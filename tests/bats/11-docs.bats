#!/usr/bin/env bats
# What a user finds besides cryo itself: meson install puts the man pages,
# the bash completion and the systemd unit in place (into a temp DESTDIR);
# the completion (contrib/bash-completion/cryo) offers the verbs, each verb's
# options as its --help names them, workload names from the state directory,
# and NAME@GEN for cryo inspect; and the docs lint (scripts/lib/check-docs)
# catches a README or man page out of step with --help. The state directory
# is a temp one.

load helpers

setup() {
	setup_state
	# shellcheck source=contrib/bash-completion/cryo
	source "$CRYO_TESTS/../contrib/bash-completion/cryo"
	mkdir -p "$STATE/web" "$STATE/worker" "$STATE/db" "$STATE/.hidden" "$STATE/-dash"
	touch "$STATE/worker-file" "$STATE/web/gen-000000000003.cryo" \
		"$STATE/web/gen-000000000012.cryo" "$STATE/web/gen-000000000013.cryo.damaged"
}
teardown() { teardown_state; }

# complete WORD...: what _cryo offers for the last word, as bash would call
# it (the line up to the cursor in COMP_LINE too), sorted, on one line.
complete_line() {
	COMP_WORDS=("$CRYO" "$@")
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMP_LINE="${COMP_WORDS[*]}"
	COMP_POINT=${#COMP_LINE}
	COMPREPLY=()
	_cryo
	printf '%s\n' "${COMPREPLY[@]}" | sort | paste -sd ' '
}

# The long options cryo VERB --help names, sorted, on one line.
help_options() {
	"$CRYO" "$1" --help | grep -oE -- '--[a-z][a-z0-9-]*' | sort -u | paste -sd ' '
}

@test "the verbs are those of cryo --help" {
	want=$("$CRYO" --help | awk '/^  [a-z]/ {print $1}' | sort | paste -sd ' ')
	[ -n "$want" ]
	run complete_line ""
	assert_output "$want"
	run complete_line ch
	assert_output checkpoint
	run complete_line -
	assert_output "--help --version"
}

@test "each verb's options are those its --help names" {
	for verb in run restore checkpoint status images inspect stop kill migrate serve keygen; do
		run complete_line "$verb" --
		assert_output "$(help_options "$verb")"
	done
	run complete_line run --no
	assert_output "--no-delta --no-lazy-restore"
	# cryo restore has no --name: the name is its argument.
	run complete_line restore --n
	assert_output "--net --no-delta --no-lazy-restore"
}

@test "workload names come from the state directory, valid names only" {
	run complete_line status ""
	assert_output "db web worker"
	run complete_line stop --checkpoint w
	assert_output "web worker"
	run complete_line restore -d ""
	assert_output "db web worker"
	# --state-dir on the line wins over CRYO_STATE_DIR.
	other=$(mktemp -d "$STATE/other.XXXXXX")
	mkdir "$other/elsewhere"
	run complete_line images --state-dir "$other" ""
	assert_output elsewhere
	# Verbs that take no name get none.
	run complete_line serve ""
	assert_output ""
}

@test "cryo inspect completes NAME@GEN from the stored generations" {
	# bash splits web@ at the '@' (COMP_WORDBREAKS); the line holds it whole.
	COMP_WORDS=("$CRYO" inspect web @)
	COMP_CWORD=3
	COMP_LINE="$CRYO inspect web@"
	COMP_POINT=${#COMP_LINE}
	_cryo
	run printf '%s\n' "${COMPREPLY[@]}"
	assert_output "$(printf '3\n12')"
	run complete_line inspect w
	assert_output "web worker"
}

@test "option values: choices, directories, and none where cryo cannot know" {
	run complete_line run --restart ""
	assert_output "always no on-failure"
	run complete_line run --dump-via f
	assert_output files
	run complete_line run --keep ""
	assert_output ""
	# An address: its scheme, not another option.
	run complete_line run --lease ""
	assert_output "etcd://"
	run complete_line restore --store ""
	assert_output "s3://"
	run complete_line run --state-dir "$STATE/w"
	assert_output "$STATE/web $STATE/worker"
	# After --, a command.
	run complete_line run --name x -- bas
	assert_output --regexp "(^| )bash( |$)"
}

@test "meson install puts the man pages, the completion and the unit in place" {
	dest=$STATE/dest
	DESTDIR=$dest meson install -C "$CRYO_BUILD_DIR" --quiet --no-rebuild >/dev/null
	page=$(find "$dest" -path '*/man1/cryo-run.1')
	[ -n "$page" ]
	mandir=${page%/man1/cryo-run.1}
	for p in man1/cryo.1 man3/libcryo.3 man5/cryo-images.5; do
		[ -f "$mandir/$p" ]
	done
	# man finds it by name, as 'man cryo-run' would once installed.
	run env MANPATH="$mandir" MANWIDTH=80 man cryo-run
	assert_success
	assert_output --partial "cryo-run - run a program under a supervisor"
	run env MANPATH="$mandir" MANWIDTH=80 man 5 cryo-images
	assert_output --partial "CRYODLT1"

	comp=$(find "$dest" -path '*/bash-completion/completions/cryo')
	[ -n "$comp" ]
	run bash -c 'source "$1" && complete -p cryo' _ "$comp"
	assert_output "complete -F _cryo cryo"

	unit=$(find "$dest" -path '*/lib/systemd/system/cryo@.service')
	[ -n "$unit" ]
	# Its ExecStart runs the cryo that meson installed.
	bin=$(sed -n 's/^ExecStart=\([^ ]*\) .*/\1/p' "$unit")
	[ -x "$dest$bin" ]
}

@test "the docs lint (check-docs help) fails on a README or man page out of step with --help" {
	# A copy of what it reads: the README, the pages and runtime/.
	root=$STATE/root
	mkdir -p "$root"
	cp -r "$CRYO_TESTS/../README.md" "$CRYO_TESTS/../doc" "$CRYO_TESTS/../runtime" "$root/"
	run bash "$CRYO_TESTS/../scripts/lib/check-docs" help "$CRYO" "$root"
	assert_success
	# An option --help names that the README leaves out, and a command
	# line with an option the verb does not take.
	sed -i 's/--no-verify/--no-check/g' "$root/README.md"
	# shellcheck disable=SC2016 # the backquotes are the README's
	printf '\nRun `cryo keygen --force /etc/cryo/key` to replace it.\n' >>"$root/README.md"
	printf '\n*cryo serve --json --listen* _ADDR_\n' >>"$root/doc/cryo-serve.1.scd"
	run bash "$CRYO_TESTS/../scripts/lib/check-docs" help "$CRYO" "$root"
	assert_failure 1
	assert_line "check-docs: cryo images --help names --no-verify, which the README does not"
	assert_line "check-docs: README.md writes 'cryo keygen --force /etc/cryo/key': cryo keygen takes no --force"
	assert_line "check-docs: cryo-serve.1.scd writes 'cryo serve --json --listen _ADDR_': cryo serve takes no --json"
}
