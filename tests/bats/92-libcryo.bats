#!/usr/bin/env bats
# libcryo in a program's children: a child of fork() cannot checkpoint (every
# call is -ENOTCONN and sends nothing), and its parent, first run or restored
# copy, goes on checkpointing.

load helpers

setup() { setup_state; }
teardown() { teardown_state; }

@test "libcryo: a child of fork() gets -ENOTCONN; its parent checkpoints on" {
	run "$CRYO" run --name f -- "$CRYO_TEST_PROGRAMS/fork-checkpoint" 2 10
	assert_success
	assert_line --regexp '^libcryo [0-9]+\.[0-9]+\.[0-9]+$'
	for g in 1 2; do
		assert_line "checkpointed generation $g"
		assert_line "child: not connected, generation $g"
	done
	refute_line --partial "child: cryo_checkpoint"
	assert_line "done"
	run "$CRYO" images f
	assert_line --regexp '^2 .* yes$'
}

@test "libcryo: a restored copy checkpoints on, and its children get -ENOTCONN" {
	start_cryo f -- "$CRYO_TEST_PROGRAMS/fork-checkpoint" 3 2000
	wait_for 30 grep -q '^child: not connected, generation 1$' "$STATE/f.out"
	kill -KILL "$(prog_pid f)"
	wait_supervisor "$LAST_SUPERVISOR" 60
	assert_equal "$status" 0
	run cat "$STATE/f.out"
	assert_line "restored from generation 1"
	assert_line "checkpointed generation 3"
	assert_line "child: not connected, generation 3"
	refute_line --partial "child: cryo_checkpoint"
	assert_line "done"
}
