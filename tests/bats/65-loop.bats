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

# Makes teardown end PID, a helper (not a supervisor) the test started.
track_holder() {
	HOLDERS+=("$1")
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

@test "a reader of cryo run's output that does not read: checkpoints are answered, a kill -9 is restored" {
	mkfifo "$STATE/fifo"
	# This shell holds the fifo open, and never reads it.
	exec {reader}<>"$STATE/fifo"
	"$CRYO" run --name y -- /usr/bin/yes >"$STATE/fifo" 2>"$STATE/y.err" </dev/null &
	track_supervisor "$!"
	wait_for 30 has_pid y
	run timeout 10 "$CRYO" checkpoint y
	assert_success
	run timeout 10 "$CRYO" status y
	assert_line --regexp "^y +running +$(prog_pid y) "
	old=$(prog_pid y)
	kill -KILL "$old"
	wait_for 15 grep -q "restored 'y'" "$STATE/y.err"
	wait_for 15 has_pid y
	[ "$(prog_pid y)" != "$old" ]
	run timeout 10 "$CRYO" stop y
	assert_success
	exec {reader}<&-
}

@test "eight clients of the commands socket that say nothing: status and checkpoint answer at once" {
	start_cryo t -- "$TICKER"
	wait_for 30 has_pid t
	python3 "$CRYO_TESTS/programs/idle-clients.py" "$STATE/t/control.sock" 8 30 >"$STATE/idle.out" &
	track_holder "$!"
	wait_for 10 grep -q connected "$STATE/idle.out"
	run timeout 5 "$CRYO" status t
	assert_success
	assert_line --regexp '^t +running '
	run timeout 8 "$CRYO" checkpoint t
	assert_success
	# The program's output was not held up meanwhile.
	n=$(grep -c '^[0-9]' "$STATE/t.out")
	wait_for 5 count_at_least $((n + 5)) '^[0-9]' "$STATE/t.out"
}

@test "clients that never read their replies: the supervisor carries on" {
	start_cryo t -- "$TICKER"
	wait_for 30 has_pid t
	# Many status requests on connections whose replies are never read.
	python3 - "$STATE/t/control.sock" <<-'PY'
	import socket, sys
	held = []
	for _ in range(20):
	    s = socket.socket(socket.AF_UNIX)
	    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
	    s.connect(sys.argv[1])
	    s.sendall(b"status\n")
	    held.append(s)
	PY
	run timeout 5 "$CRYO" status t
	assert_success
	assert_line --regexp '^t +running '
}

@test "cryo run as a background job of a terminal never stops on it; a kill -9 is restored" {
	python3 "$CRYO_TESTS/programs/background-job.py" "$STATE/job.pid" "$STATE/tty.out" 60 \
		"$CRYO" run --name bg -- "$TICKER" 0.2 &
	track_holder "$!"
	wait_for 10 test -s "$STATE/job.pid"
	job=$(cat "$STATE/job.pid")
	track_supervisor "$job"
	wait_for 30 has_pid bg
	# It would stop (state T) at its first read of the terminal.
	for _ in 1 2 3 4 5; do
		run_state=$(awk '{print $3}' "/proc/$job/stat")
		[ "$run_state" != T ] || {
			echo "the supervisor stopped on the terminal" >&2
			false
		}
		sleep 0.2
	done
	run timeout 10 "$CRYO" checkpoint bg
	assert_success
	old=$(prog_pid bg)
	kill -KILL "$old"
	wait_for 15 grep -q "restored 'bg'" "$STATE/tty.out"
	wait_for 15 has_pid bg
	[ "$(prog_pid bg)" != "$old" ]
	# Its output reaches the terminal from the background (TOSTOP is set).
	n=$(grep -c '^[0-9]' "$STATE/tty.out")
	wait_for 10 count_at_least $((n + 3)) '^[0-9]' "$STATE/tty.out"
	run timeout 10 "$CRYO" stop bg
	assert_success
}

@test "cryo run -d: prints the name and returns once the program runs; output goes to output.log; cryo stop ends it" {
	run timeout 30 "$CRYO" run -d --name d -- "$TICKER"
	assert_success
	assert_line d
	assert_line --regexp "^cryo: 'd' runs detached: supervisor PID [0-9]+, output in '$STATE/d/output.log'"
	sup=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["supervisor_pid"])' "$("$CRYO" status --json d)")
	track_supervisor "$sup"
	has_pid d
	wait_for 10 count_at_least 3 '^[0-9]' "$STATE/d/output.log"
	# In a session of its own, away from ours.
	[ "$(ps -o sid= -p "$sup" | tr -d ' ')" = "$sup" ]
	run timeout 10 "$CRYO" checkpoint d
	assert_success
	kill -KILL "$(prog_pid d)"
	wait_for 15 grep -q "restored 'd'" "$STATE/d/output.log"
	run timeout 15 "$CRYO" stop --checkpoint d
	assert_success
	wait_for 15 bash -c "! kill -0 $sup"
	# cryo restore -d likewise.
	run timeout 30 "$CRYO" restore -d d
	assert_success
	assert_line d
	sup=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["supervisor_pid"])' "$("$CRYO" status --json d)")
	track_supervisor "$sup"
	wait_for 15 count_at_least 2 "restored 'd'" "$STATE/d/output.log"
	run timeout 15 "$CRYO" stop d
	assert_success
	wait_for 15 bash -c "! kill -0 $sup"
	# A name already running: the reason, and a failure.
	"$CRYO" run --name busy -- "$TICKER" >"$STATE/busy.out" 2>&1 </dev/null &
	track_supervisor "$!"
	wait_for 30 has_pid busy
	run timeout 30 "$CRYO" run -d --name busy -- "$TICKER"
	assert_failure
	assert_output --partial "workload 'busy' is already running under supervisor PID"
}
