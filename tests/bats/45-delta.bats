#!/usr/bin/env bats
# Incremental generations: a checkpoint after a small change stores only the
# pages that changed, and restores rebuild the whole image from the chain.

load helpers

setup() { setup_state; }
teardown() { teardown_state; }

size_of() { stat -c %s "$(gen_file "$1" "$2")"; }

@test "after 1% of memory changed, a generation stores at most 5% of a full one; restore is exact" {
	want=$("$CRYO_EXAMPLES/memhog" 64 8 10 | tail -n 1)
	start_cryo mh -- "$CRYO_EXAMPLES/memhog" 64 8 10 300
	wait_for 60 grep -q '^checkpoint 3 rc 0 generation 4 ' "$STATE/mh.out"
	full=$(size_of mh 1)
	for g in 2 3 4; do
		delta=$(size_of mh "$g")
		echo "generation $g: $delta bytes, full: $full"
		[ $((delta * 100)) -le $((full * 5)) ]
	done
	run "$CRYO" inspect mh@4
	assert_line --regexp '^incremental +on generation 3 \(3 in a row\)$'
	# Each memory image's delta line (the manifest repeats the key) is in
	# the JSON, as an array: cryo-init's and memhog's.
	run bash -c "'$CRYO' inspect --json mh@4 | python3 -c 'import json, sys; d = json.load(sys.stdin)[\"manifest\"][\"delta\"]; print(len(d) if isinstance(d, list) else 0)'"
	assert_output 2
	kill -KILL "$(prog_pid mh)"
	wait_for 30 grep -q "restored 'mh' from generation 4" "$STATE/mh.err"
	wait_supervisor "$LAST_SUPERVISOR" 60
	assert_equal "$status" 0
	assert_equal "$(tail -n 1 "$STATE/mh.out")" "$want"
	run grep -c "^checkpoint 3 rc 1 generation 4 " "$STATE/mh.out"
	assert_output 1
}

@test "retention keeps the generations an incremental one is built on, and no more" {
	run "$CRYO" run --name mh --keep 1 -- "$CRYO_EXAMPLES/memhog" 16 12 10
	assert_success
	# 1 is full, 2-9 build on it one after the other (8 in a row at most),
	# 10 is full again and 11-12 build on it: with --keep 1, 10-12 remain.
	run ls "$STATE/mh"
	refute_output --partial "gen-000000000009.cryo"
	assert_output --partial "gen-000000000010.cryo"
	assert_output --partial "gen-000000000012.cryo"
	run "$CRYO" inspect mh@10
	refute_line --partial "incremental"
	run "$CRYO" images mh
	refute_output --partial " NO"
}

@test "--no-delta stores every generation whole" {
	run "$CRYO" run --name mh --no-delta -- "$CRYO_EXAMPLES/memhog" 16 3 10
	assert_success
	full=$(size_of mh 1)
	[ $(($(size_of mh 3) * 2)) -gt "$full" ]
}
