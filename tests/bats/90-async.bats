#!/usr/bin/env bats
# cryo_checkpoint_async(): the program runs on before the image is durable
# and learns later, through an fd it can poll, whether it became durable.

load helpers

setup() { setup_state; }
teardown() { teardown_state; }

@test "async checkpoints: dumped, running, then durable, each generation in turn" {
	run "$CRYO" run --name a -- "$CRYO_TEST_PROGRAMS/async-checkpoint" 4 10
	assert_success
	for g in 1 2 3 4; do
		assert_line "dumped generation $g, running"
		assert_line "durable generation $g"
	done
	assert_line "done"
	run "$CRYO" images a
	assert_line --regexp '^4 .* program +yes$'
}

@test "async: a copy restored from an async checkpoint gets CRYO_RESTORED" {
	start_cryo a -- "$CRYO_TEST_PROGRAMS/async-checkpoint" 3 2000
	wait_for 30 grep -q '^durable generation 2$' "$STATE/a.out"
	kill -KILL "$(prog_pid a)"
	wait_supervisor "$LAST_SUPERVISOR" 60
	assert_equal "$status" 0
	run cat "$STATE/a.out"
	assert_line "restored from generation 2"
	assert_line "done"
}

@test "async: when storing fails, the program hears it and the previous generation stays" {
	export CRYO_INJECT_STORE_FAULT=enospc:2
	run "$CRYO" run --name a -- "$CRYO_TEST_PROGRAMS/async-checkpoint" 3 10
	assert_success
	assert_line "durable generation 1"
	assert_line "dumped generation 2, running"
	assert_line "not durable: No space left on device"
	assert_line "dumped generation 3, running"
	assert_line "durable generation 3"
	assert_output --partial "cannot checkpoint 'a': cannot store the image: cannot write"
	run ls -a "$STATE/a"
	refute_output --partial ".tmp"
	refute_output --partial "gen-000000000002"
	run "$CRYO" images a
	assert_line --regexp '^1 .* yes$'
	assert_line --regexp '^3 .* yes$'
}
