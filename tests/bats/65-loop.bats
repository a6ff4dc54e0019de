#!/usr/bin/env bats
# The supervisor's loop never waits for anyone: a reader of its output that
# does not read, clients of its commands socket that say nothing, a terminal
# it is in the background of. Crashes are restored and commands answered
# whatever they do. Also cryo run -d and Ctrl-C on cryo restore.

load helpers

setup() {
	setup_state
	TICKER=$CRYO_TESTS/programs/ticker.py
	HOLDERS=()
}
teardown() {
	local p
	for p in "${HOLDERS[@]}"; do
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	teardown_state
}

# Starts COMMAND... in the background with SIGINT and SIGQUIT at their
# defaults (a non-interactive shell's `&` ignores them, as a script's would).
start_default_signals() {
	env --default-signal=INT,QUIT "$@" &
	track_supervisor "$!"
	LAST_SUPERVISOR=$!
}

@test "cryo restore ends on SIGINT, like cryo run, though cryo run was started with SIGINT ignored" {
	# start_cryo's `&` ignores SIGINT; the program must not inherit that into
	# its images.
	start_cryo t -- "$TICKER"
	wait_for 30 count_at_least 3 '^[0-9]' "$STATE/t.out"
	run "$CRYO" stop --checkpoint t
	assert_success
	wait_supervisor "$LAST_SUPERVISOR" 30
	start_default_signals "$CRYO" restore t >"$STATE/r.out" 2>"$STATE/r.err" </dev/null
	wait_for 30 count_at_least 2 '^[0-9]' "$STATE/r.out"
	kill -INT "$LAST_SUPERVISOR"
	wait_supervisor "$LAST_SUPERVISOR" 10
	# The program ended on the SIGINT it was sent: 128 + 2.
	[ "$status" -eq 130 ]
	run "$CRYO" status t
	assert_line --regexp '^t +stopped '
}
