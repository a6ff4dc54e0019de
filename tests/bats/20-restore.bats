#!/usr/bin/env bats
# Restore after a crash: the program carries on from its newest checkpoint.

load helpers

setup() { setup_state; }
teardown() { teardown_state; }

# The result of an uninterrupted run.
expected_result() {
	"$CRYO_EXAMPLES/counter" "$@" | grep '^result'
}

@test "a counter killed with SIGKILL at several points ends with the uninterrupted result" {
	want=$(expected_result 60 5 0)
	start_cryo c -- "$CRYO_EXAMPLES/counter" 60 5 25
	round=0
	for kill_at in 12 31 47; do
		wait_for 30 count_at_least 1 "^step $kill_at\$" "$STATE/c.out"
		kill -KILL "$(prog_pid c)"
		round=$((round + 1))
		wait_for 30 count_at_least "$round" "restored 'c' from generation" "$STATE/c.err"
		wait_for 30 has_pid c
	done
	wait_supervisor "$LAST_SUPERVISOR" 60
	assert_equal "$status" 0
	run grep '^result' "$STATE/c.out"
	assert_output "$want"
	# cryo_checkpoint() returned CRYO_RESTORED in each restored copy, at the
	# step of the checkpoint it was restored from.
	run grep -c '^restored at step' "$STATE/c.out"
	assert_output 3
	run grep -c -E '^restored at step (10|30|45) from generation [0-9]+$' "$STATE/c.out"
	assert_output 3
	run grep -c -- "was killed by signal 9" "$STATE/c.err"
	assert_output 3
}

@test "output after a restore still arrives on cryo's stdout, and steps repeat from the checkpoint" {
	start_cryo c -- "$CRYO_EXAMPLES/counter" 30 10 20
	wait_for 30 count_at_least 1 '^step 15$' "$STATE/c.out"
	kill -KILL "$(prog_pid c)"
	wait_supervisor "$LAST_SUPERVISOR" 60
	assert_equal "$status" 0
	# Step 12 ran before the kill and again after the restore from step 10.
	run grep -c '^step 12$' "$STATE/c.out"
	assert_output 2
	run grep -c '^step 25$' "$STATE/c.out"
	assert_output 1
	run grep -c '^step 5$' "$STATE/c.out"
	assert_output 1
}

@test "a crash before the first checkpoint starts the program afresh, and says so" {
	start_cryo c -- "$CRYO_EXAMPLES/counter" 40 20 25
	wait_for 30 count_at_least 1 '^step 5$' "$STATE/c.out"
	kill -KILL "$(prog_pid c)"
	wait_supervisor "$LAST_SUPERVISOR" 60
	assert_equal "$status" 0
	run grep "has no checkpoint yet: starting it afresh" "$STATE/c.err"
	assert_success
	assert_output "cryo: 'c' was killed by signal 9 (Killed) and has no checkpoint yet: starting it afresh"
	# One line: no restore announced where there is nothing to restore.
	run grep "restoring the newest checkpoint" "$STATE/c.err"
	assert_failure
	run grep -c '^step 1$' "$STATE/c.out"
	assert_output 2
}

@test "--max-restarts without a checkpoint ever taken: gives up saying there is nothing to resume" {
	run "$CRYO" run --name nock --restart always --max-restarts 2 -- true
	assert_success
	assert_output --partial "'nock' exited with status 0, after 2 restarts in a row; giving up: no checkpoint of it was taken, so there is nothing to resume (start it again with: cryo run --name nock -- PROG)"
	refute_output --partial "images kept in"
	refute_output --partial "cryo restore nock"
	refute_output --partial "restoring the newest checkpoint"
}

@test "a segfault is a crash too" {
	cat >"$STATE/crashy.sh" <<-'SH'
		#!/bin/sh
		# Crashes on its first run only: a marker file remembers.
		if [ ! -e "$1" ]; then touch "$1"; kill -SEGV $$; fi
		echo survived
	SH
	chmod +x "$STATE/crashy.sh"
	run "$CRYO" run --name crashy -- "$STATE/crashy.sh" "$STATE/marker"
	assert_success
	assert_output --partial "was killed by signal 11"
	assert_output --partial "survived"
}

@test "--restart no: the program's failure is cryo run's" {
	start_cryo c --restart no -- "$CRYO_EXAMPLES/counter" 100 5 20
	wait_for 30 count_at_least 1 '^checkpointed at step 5' "$STATE/c.out"
	kill -KILL "$(prog_pid c)"
	wait_supervisor "$LAST_SUPERVISOR" 30
	assert_equal "$status" 137
}

@test "--restart always restores after exit 0 too; --max-restarts gives up clearly" {
	run "$CRYO" run --name loop --restart always --max-restarts 2 -- "$CRYO_EXAMPLES/counter" 4 2 0
	assert_success
	assert_output --partial "after 2 restarts in a row without a successful checkpoint; giving up"
	assert_output --partial "resume with: cryo restore loop"
	# The first run and two restored copies each reach the end.
	run grep -c '^result' <<<"$output"
	assert_output 3
}

@test "SIGTERM to cryo run reaches the program, and no restore follows" {
	start_cryo c -- "$CRYO_EXAMPLES/counter" 1000 10 20
	wait_for 30 has_pid c
	kill -TERM "$LAST_SUPERVISOR"
	wait_supervisor "$LAST_SUPERVISOR" 30
	assert_equal "$status" 143
	run grep -c restor "$STATE/c.err"
	assert_output 0
}

@test "SIGTERM sent to the program inside its namespace ends it as it would outside" {
	start_cryo c --restart no -- "$CRYO_EXAMPLES/counter" 1000 10 20
	wait_for 30 has_pid c
	kill -TERM "$(prog_pid c)"
	wait_supervisor "$LAST_SUPERVISOR" 30
	assert_equal "$status" 143
}

@test "--dump-via files (CRIU's image files, not cryo's page server): the same restore, the same result" {
	want=$(expected_result 40 5 0)
	start_cryo c --dump-via files -- "$CRYO_EXAMPLES/counter" 40 5 25
	wait_for 30 count_at_least 1 '^step 22$' "$STATE/c.out"
	kill -KILL "$(prog_pid c)"
	wait_supervisor "$LAST_SUPERVISOR" 60
	assert_equal "$status" 0
	run grep '^result' "$STATE/c.out"
	assert_output "$want"
	run grep -c '^restored at step 20 from generation 4$' "$STATE/c.out"
	assert_output 1
}

# The CRIU process cryo starts ahead of a restore, as the supervisor's child.
standby_criu() {
	ps -o pid=,args= --ppid "$1" | awk '$2 ~ /criu$/ && $3 == "swrk" {print $1}'
}

has_standby() {
	[ -n "$(standby_criu "$1")" ]
}

gone() {
	! kill -0 "$1" 2>/dev/null
}

@test "a checkpoint makes the next restore ready; the restore works without it too, and none is left behind" {
	start_cryo c -- "$CRYO_EXAMPLES/counter" 60 10 40
	sup=$LAST_SUPERVISOR
	wait_for 30 count_at_least 1 '^step 12$' "$STATE/c.out"
	wait_for 10 has_standby "$sup"
	# Used by the first restore, made again once the restored program runs.
	first=$(standby_criu "$sup")
	kill -KILL "$(prog_pid c)"
	wait_for 30 count_at_least 1 "restored 'c' from generation" "$STATE/c.err"
	gone "$first"
	wait_for 10 has_standby "$sup"
	# Gone before the next crash: that restore starts CRIU itself.
	second=$(standby_criu "$sup")
	[ "$second" != "$first" ]
	kill -KILL "$second"
	kill -KILL "$(prog_pid c)"
	wait_for 30 count_at_least 2 "restored 'c' from generation" "$STATE/c.err"
	wait_for 10 has_standby "$sup"
	third=$(standby_criu "$sup")
	wait_supervisor "$sup" 60
	assert_equal "$status" 0
	run grep '^result' "$STATE/c.out"
	assert_output "$(expected_result 60 10 0)"
	gone "$third"
}
