#!/usr/bin/env bats
# Write tracking (criu-glue/pages.h, criu-glue/criu-patches/): after the first
# checkpoint CRIU sends only the pages written since the one before, the rest
# is copied from it; every restored page must be as it was. mem-churn writes,
# maps, unmaps, moves (mremap), drops (MADV_DONTNEED) and protects memory at
# random between checkpoints, in itself and in a child it replaces every few
# rounds, and compares its memory with its own digest after each restore.

load helpers

setup() { setup_state; }
teardown() { teardown_state; }

# Kills the program once round $1 is checkpointed, and waits for its restore.
kill_after_round() {
	wait_for 120 grep -q "^round $1 checkpointed" "$STATE/mc.out"
	local before
	before=$(grep -c ' restored ' "$STATE/mc.out" || true)
	kill -KILL "$(prog_pid mc)"
	wait_for 60 count_at_least $((before + 1)) ' restored ' "$STATE/mc.out"
}

# Bytes CRIU sent and bytes copied from the checkpoint before, per
# checkpoint, from the supervisor's --verbose lines.
tracked_lines() {
	grep -E "KiB of memory sent by CRIU, [0-9]+ KiB unchanged" "$STATE/mc.err"
}

@test "only what was written is sent; every page of a churned program and its child restores exactly" {
	criu check --feature uffd_wp_track
	start_cryo mc --verbose -- "$CRYO_TEST_PROGRAMS/mem-churn" 24 1234
	kill_after_round 7
	kill_after_round 15
	wait_for 120 grep -q '^done$' "$STATE/mc.out"
	wait_supervisor "$LAST_SUPERVISOR" 60
	cat "$STATE/mc.out"
	assert_equal "$status" 0
	run grep -c ' restored .*: parent ok, child ok$' "$STATE/mc.out"
	assert_output 2
	run grep -E 'MISMATCH|failed|does not answer' "$STATE/mc.out"
	assert_failure
	# After the first checkpoint, and again after each restore (a new
	# process: untracked), most memory was not sent again.
	tracked_lines
	run bash -c "grep -E 'KiB of memory sent by CRIU, [1-9][0-9]{3,} KiB unchanged' '$STATE/mc.err' | wc -l"
	[ "$output" -ge 15 ]
}

@test "a checkpoint that fails after CRIU re-armed the tracking makes the next one whole, and restores stay exact" {
	CRYO_INJECT_CHECKPOINT_FAULT=frozen:5 start_cryo mc --verbose -- "$CRYO_TEST_PROGRAMS/mem-churn" 12 99
	kill_after_round 8
	wait_for 120 grep -q '^done$' "$STATE/mc.out"
	wait_supervisor "$LAST_SUPERVISOR" 60
	cat "$STATE/mc.out"
	assert_equal "$status" 0
	run grep -c '^round 5 checkpoint failed' "$STATE/mc.out"
	assert_output 1
	run grep -c ' restored .*: parent ok, child ok$' "$STATE/mc.out"
	assert_output 1
	run grep -E 'MISMATCH|does not answer' "$STATE/mc.out"
	assert_failure
	# The one before the failed one shared memory with its own parent; the
	# one after shared nothing.
	tracked_lines
	run bash -c "grep -E 'checkpoint [0-9]+ of .mc.: [0-9]+ KiB of memory sent' '$STATE/mc.err' | sed -n 4p"
	assert_output --regexp ', [1-9][0-9]* KiB unchanged since the checkpoint before$'
	run bash -c "grep -E 'checkpoint [0-9]+ of .mc.: [0-9]+ KiB of memory sent' '$STATE/mc.err' | sed -n 5p"
	assert_output --regexp ', 0 KiB unchanged since the checkpoint before$'
}
