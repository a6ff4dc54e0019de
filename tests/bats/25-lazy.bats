#!/usr/bin/env bats
# Lazy restore: the program runs again before its memory is all back; what
# it reads is what it had (also through incremental generations), a
# checkpoint taken meanwhile is whole, a damaged piece of memory is caught,
# and --no-lazy-restore restores in full.

load helpers

setup() { setup_state; }
teardown() { teardown_state; }

LAZY_CHECK="$CRYO_TEST_PROGRAMS/lazy-check"

# Kills the copy of lc that runs; the next is restored (lazily) from
# generation GEN and, asked to, reads all its PAGES pages as they were.
kill_and_check_restored() {
	local gen=$1 pages=$2
	kill -KILL "$(prog_pid lc)"
	wait_for 60 grep -q "restored 'lc' from generation $gen in .* its memory follows lazily)" "$STATE/lc.err"
	wait_for 30 has_pid lc
	kill -USR1 "$(prog_pid lc)"
	wait_for 60 grep -q "^checked $pages pages on request: ok\$" "$STATE/lc.out"
	run grep -c "differs" "$STATE/lc.out"
	assert_output 0
}

@test "a whole generation is restored lazily; every page reads as it was, in a scattered order" {
	start_cryo lc --no-delta --verbose -- "$LAZY_CHECK" 96
	wait_for 60 grep -q '^filled 24576 pages$' "$STATE/lc.out"
	# 96 MiB and more than 64: through cryo's page server, by default.
	run grep -c "checkpoint 1 of 'lc' (through cryo's page server)" "$STATE/lc.err"
	assert_output 1
	kill -KILL "$(prog_pid lc)"
	# The copy checkpoints at once (while its memory is still coming), then
	# reads every page.
	wait_for 60 grep -q '^checked 24576 pages after checkpoint 0: ok$' "$STATE/lc.out"
	run grep -c "restored 'lc' from generation 1 in .* its memory follows lazily)" "$STATE/lc.err"
	assert_output 1
	# The checkpoint it took then holds all of its memory: restored (lazily
	# again) from it, it reads the same.
	kill -KILL "$(prog_pid lc)"
	wait_for 60 grep -q '^checked 24576 pages after checkpoint 1: ok$' "$STATE/lc.out"
	run grep -c "restored 'lc' from generation 2 in .* its memory follows lazily)" "$STATE/lc.err"
	assert_output 1
	run grep -c "differs" "$STATE/lc.out"
	assert_output 0
	# cryo put the pages in place itself, on faults and in the background.
	run grep -c "all the memory of 'lc' is back, .* (24[0-9]* lazy pages; [0-9]* faults brought" "$STATE/lc.err"
	assert_output 2
	# Once all is in, the lazy-pages socket and the scratch directory go.
	wait_for 30 bash -c "! ls /dev/shm | grep -q '^cryo-restore-lc-$LAST_SUPERVISOR-'"
	wait_for 30 test ! -e "$STATE/lc/lazy-pages.socket"
}

# The supervisor's anonymous memory (kB) marked FIELD in smaps_rollup.
sup_kb() {
	awk -v f="$1:" '$1 == f { print $2 }' "/proc/$LAST_SUPERVISOR/smaps_rollup"
}

@test "the next checkpoint takes the pages into the memory the last one left, kept resident; restored from it, every page reads as it was" {
	# Without write tracking, each dump receives every page (with it,
	# 46-tracking: a dump shares the unchanged pages with the one before).
	CRYO_TRACK=0 start_cryo lc --no-delta --verbose -- "$LAZY_CHECK" 64
	wait_for 60 grep -q '^filled 16384 pages$' "$STATE/lc.out"
	run "$CRYO" checkpoint lc
	assert_success
	run "$CRYO" checkpoint lc
	assert_success
	run grep -c "checkpoint [23] of 'lc' (through cryo's page server, into the last checkpoint's memory)" "$STATE/lc.err"
	assert_output 2
	# The memory stays the supervisor's, resident, not left to the kernel
	# to take back (MADV_FREE: every page of it cold again on a VM): no
	# more lazily freed than the archive writer's 16 MiB.
	[ "$(sup_kb Anonymous)" -ge $((64 * 1024)) ]
	[ "$(sup_kb LazyFree)" -lt $((32 * 1024)) ]
	kill_and_check_restored 3 16384
}

@test "a program that forks, moves, unmaps and drops memory while it is still coming back reads what it should" {
	start_cryo lc --no-delta -- "$LAZY_CHECK" 128 mm
	wait_for 60 grep -q '^filled 32768 pages$' "$STATE/lc.out"
	kill -KILL "$(prog_pid lc)"
	wait_for 60 grep -q '^mm changes: ' "$STATE/lc.out"
	run grep '^mm changes: ' "$STATE/lc.out"
	assert_output "mm changes: ok"
	wait_for 60 grep -q '^checked 32768 pages after checkpoint 0: ok$' "$STATE/lc.out"
	run grep -c "restored 'lc' from generation 1 in .* its memory follows lazily)" "$STATE/lc.err"
	assert_output 1
	# The checkpoint taken then holds the new map: restored from it, the
	# program reads the same.
	kill -KILL "$(prog_pid lc)"
	wait_for 60 grep -q '^checked 32768 pages after checkpoint 1: ok$' "$STATE/lc.out"
	run grep -c "differs\|wrong\|failed" "$STATE/lc.out"
	assert_output 0
}

@test "an incremental generation is restored lazily through those it is built on, and reads as it was" {
	start_cryo lc -- "$LAZY_CHECK" 64
	wait_for 60 grep -q '^filled 16384 pages$' "$STATE/lc.out"
	kill -KILL "$(prog_pid lc)"
	wait_for 60 grep -q '^checked 16384 pages after checkpoint 0: ok$' "$STATE/lc.out"
	# Generation 2, the copy's checkpoint then, is a delta on 1.
	run "$CRYO" inspect lc@2
	assert_output --partial "incremental on generation 1"
	kill -KILL "$(prog_pid lc)"
	wait_for 60 grep -q '^checked 16384 pages after checkpoint 1: ok$' "$STATE/lc.out"
	run grep -c "restored 'lc' from generation 2 in .* its memory follows lazily)" "$STATE/lc.err"
	assert_output 1
	# Once its memory is all in, the next checkpoint is a delta on it.
	run "$CRYO" checkpoint lc
	assert_success
	run "$CRYO" inspect lc@3
	assert_output --partial "incremental on generation 2"
	# Restored through 3, 2 and 1.
	kill_and_check_restored 3 16384
	run grep -c "damaged\|in full" "$STATE/lc.err"
	assert_output 0
}

@test "--no-lazy-restore restores all the memory before the program runs" {
	start_cryo lc --no-lazy-restore -- "$LAZY_CHECK" 32
	wait_for 60 grep -q '^filled 8192 pages$' "$STATE/lc.out"
	kill -KILL "$(prog_pid lc)"
	wait_for 60 grep -q '^checked 8192 pages after checkpoint 0: ok$' "$STATE/lc.out"
	# Generation 2 is a delta on 1: rebuilt in full too.
	run "$CRYO" inspect lc@2
	assert_output --partial "incremental on generation 1"
	kill -KILL "$(prog_pid lc)"
	wait_for 60 grep -q '^checked 8192 pages after checkpoint 1: ok$' "$STATE/lc.out"
	run grep -c "restored 'lc' from generation 2 in [0-9.]* ms (program PID [0-9]*)$" "$STATE/lc.err"
	assert_output 1
	run grep -c "memory follows lazily" "$STATE/lc.err"
	assert_output 0
}

@test "a damaged piece of memory: the copy is stopped, the generation set aside, the one before restored" {
	start_cryo lc --no-delta -- "$LAZY_CHECK" 64
	wait_for 60 grep -q '^filled 16384 pages$' "$STATE/lc.out"
	run "$CRYO" checkpoint lc
	assert_success
	# A byte late in generation 2's memory (random bytes, stored as they are).
	flip_byte "$(gen_file lc 2)" "$(($(stat -c %s "$(gen_file lc 2)") - 300000))"
	kill -KILL "$(prog_pid lc)"
	wait_for 60 grep -q "restored 'lc' from generation 1" "$STATE/lc.err"
	wait_for 30 has_pid lc
	run cat "$STATE/lc.err"
	assert_output --partial "generation 2 of 'lc'"
	assert_output --partial "set aside as gen-000000000002.cryo.damaged"
	[ -e "$(gen_file lc 2).damaged" ]
	wait_for 60 grep -q '^checked 16384 pages after checkpoint 0: ok$' "$STATE/lc.out"
	run grep -c "differs" "$STATE/lc.out"
	assert_output 0
}
