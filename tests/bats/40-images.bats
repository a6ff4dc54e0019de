#!/usr/bin/env bats
# Damaged images are refused and the one before is restored; a full disk
# fails a checkpoint without harming the program or the last good image.

load helpers

setup() { setup_state; }
teardown() { teardown_state; }

# Runs a slow counter (a checkpoint every second) until generation 3 is
# stored, then damages generation 3 with the command given, then kills it.
damage_and_kill() {
	start_cryo c -- "$CRYO_EXAMPLES/counter" 60 10 100
	wait_for 60 count_at_least 1 '^checkpointed at step 30 as generation 3$' "$STATE/c.out"
	"$@" "$(gen_file c 3)"
	kill -KILL "$(prog_pid c)"
	wait_for 30 grep -q "restored 'c' from generation" "$STATE/c.err"
}

@test "a newest image with a flipped byte is refused; the one before is restored" {
	damage_and_kill flip_byte
	run cat "$STATE/c.err"
	assert_output --partial "generation 3 of 'c' is damaged ("
	assert_output --partial "set aside as gen-000000000003.cryo.damaged"
	assert_output --partial "restored 'c' from generation 2"
	[ -e "$(gen_file c 3).damaged" ]
	# The set-aside generation is no longer the newest checkpoint cryo
	# status shows, and cryo images lists it, marked.
	run "$CRYO" status c
	assert_success
	refute_output --partial "gen 3,"
	run "$CRYO" images --no-verify c
	assert_line --regexp '^3 .* damaged +local .* NO \(set aside as damaged\)$'
	run "$CRYO" images --json c
	python3 -c 'import json,sys; d={g["generation"]: g for g in json.loads(sys.argv[1])}; assert d[3]["set_aside"] and d[3]["kept"]=="damaged" and d[3]["verified"] is False and not d[2]["set_aside"], d' "$output"
	wait_for 30 grep -q '^restored at step 20 from generation 2$' "$STATE/c.out"
	# New checkpoints take new numbers: 3 is never reused.
	wait_for 30 grep -q '^checkpointed at step 30 as generation 4$' "$STATE/c.out"
}

@test "a truncated newest image is refused; the one before is restored" {
	truncate_half() { truncate -s "$(($(stat -c %s "$1") / 2))" "$1"; }
	damage_and_kill truncate_half
	run cat "$STATE/c.err"
	assert_output --partial "generation 3 of 'c' is damaged (image is truncated"
	assert_output --partial "restored 'c' from generation 2"
	wait_for 30 grep -q '^restored at step 20 from generation 2$' "$STATE/c.out"
}

@test "cryo images shows which generations verify" {
	damage_and_kill flip_byte
	"$CRYO" checkpoint c
	run "$CRYO" images c
	assert_success
	assert_line --regexp '^2 .* program +yes$'
	assert_line --regexp '^4 .* command +yes$'
	flip_byte "$(gen_file c 4)"
	run "$CRYO" images c
	assert_line --regexp '^4 .* NO: '
}

@test "cryo images tells the generations kept as the newest --keep from those kept only as their bases" {
	# Deltas chain back to the last whole generation (whole again after 8
	# in a row): --keep 2 keeps the newest 2 and every generation they are
	# built on, at most 8 more.
	start_cryo k --every 200ms --keep 2 -- sleep 600
	wait_for 60 test -e "$(gen_file k 6)"
	"$CRYO" stop k
	wait_supervisor "$LAST_SUPERVISOR" 30
	run "$CRYO" images k
	assert_success
	[ "$(grep -cE '^[0-9]+ .* newest +local ' <<<"$output")" -eq 2 ]
	n_base=$(grep -cE '^[0-9]+ .* base +local ' <<<"$output")
	[ "$n_base" -ge 1 ] && [ "$n_base" -le 8 ]
	# Every generation here is one of those two kinds.
	[ "$(grep -cE '^[0-9]+ ' <<<"$output")" -eq $((2 + n_base)) ]
	run "$CRYO" images --json k
	python3 - "$output" <<-'PY'
	import json, sys
	d = json.loads(sys.argv[1])
	assert [g["kept"] for g in d][-2:] == ["newest", "newest"], d
	assert all(g["kept"] == "base" for g in d[:-2]), d
	PY
}

@test "cryo images of a workload that does not exist fails as cryo status does" {
	run "$CRYO" images nosuch
	assert_failure 1
	assert_output "cryo: no workload 'nosuch' in '$STATE' (see cryo status)"
	run "$CRYO" status nosuch
	assert_failure 1
	assert_output "cryo: no workload 'nosuch' in '$STATE' (see cryo status)"
}

# FILE's memory images' frame tables forged to start at 2^64-1, with the
# manifest's and the trailer's checksums made good again.
forge_frames() {
	"$CRYO_TEST_PROGRAMS/manifest-forge" show "$1" >"$STATE/manifest.txt"
	grep -q '^frames ' "$STATE/manifest.txt"
	sed -E 's/^frames [0-9]+ /frames 18446744073709551615 /' "$STATE/manifest.txt" |
		"$CRYO_TEST_PROGRAMS/manifest-forge" write "$1"
}

@test "a forged manifest, checksums and all, is refused alike by cryo images, cryo inspect and the restore" {
	start_cryo c -- "$CRYO_EXAMPLES/counter" 60 10 100
	wait_for 60 count_at_least 1 '^checkpointed at step 30 as generation 3$' "$STATE/c.out"
	forge_frames "$(gen_file c 3)"
	# A copy for cryo images and cryo inspect to look at, the restore
	# setting the store's aside.
	mkdir -p "$STATE/copy/c"
	cp "$(gen_file c 2)" "$(gen_file c 3)" "$STATE/copy/c/"
	kill -KILL "$(prog_pid c)"
	wait_for 30 grep -q "restored 'c' from generation" "$STATE/c.err"
	run cat "$STATE/c.err"
	assert_output --partial "generation 3 of 'c' is damaged (manifest's frame table for 'pages-"
	assert_output --partial "set aside as gen-000000000003.cryo.damaged"
	assert_output --partial "restored 'c' from generation 2"
	[ -e "$(gen_file c 3).damaged" ]
	wait_for 30 grep -q '^restored at step 20 from generation 2$' "$STATE/c.out"

	run "$CRYO" images --state-dir "$STATE/copy" c
	assert_success
	assert_line --regexp '^2 .* yes$'
	assert_line --regexp "^3 .* NO: manifest's frame table for 'pages-.* outside the image body$"
	run "$CRYO" inspect --state-dir "$STATE/copy" c@3
	assert_failure
	assert_output --partial "does not verify: manifest's frame table"
	run "$CRYO" inspect --state-dir "$STATE/copy" c@2
	assert_success
}

@test "a disk that fills during a checkpoint: the program runs on, the last good image stays" {
	mkdir "$STATE/full"
	mount -t tmpfs -o size=8m tmpfs "$STATE/full"
	export CRYO_STATE_DIR=$STATE/full
	"$CRYO" run --name c -- "$CRYO_EXAMPLES/counter" 400 10 20 >"$STATE/c.out" 2>"$STATE/c.err" </dev/null &
	track_supervisor "$!"
	sup=$!
	wait_for 60 count_at_least 2 '^checkpointed at step' "$STATE/c.out"
	# Fill the disk.
	dd if=/dev/zero of="$STATE/full/filler" bs=64k 2>/dev/null || true
	wait_for 60 count_at_least 2 '^checkpoint at step [0-9]* failed' "$STATE/c.out"
	run "$CRYO" images c
	assert_success
	good=$(grep -c ' yes$' <<<"$output")
	[ "$good" -ge 2 ]
	refute_output --partial "NO"
	run grep -c "cannot checkpoint 'c'" "$STATE/c.err"
	[ "$output" -ge 2 ]
	# Nothing half-written is left behind.
	run ls -a "$STATE/full/c"
	refute_output --partial ".tmp"
	refute_output --partial ".dump-"
	# The program ran on; with room again, checkpoints resume, and a crash
	# restores the newest.
	rm -f "$STATE/full/filler"
	n=$(grep -c '^checkpointed at step' "$STATE/c.out")
	wait_for 60 count_at_least $((n + 1)) '^checkpointed at step' "$STATE/c.out"
	kill -KILL "$(cat "$STATE/full/c/pid")"
	wait_for 30 grep -q "restored 'c' from generation" "$STATE/c.err"
	wait_supervisor "$sup" 60
	assert_equal "$status" 0
	assert_equal "$(grep '^result' "$STATE/c.out")" "$("$CRYO_EXAMPLES/counter" 400 10 0 | grep '^result')"
}
