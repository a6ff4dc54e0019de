#!/usr/bin/env bats
# Many workloads on one machine: their checkpoints run side by side. CRIU's
# dump makes a directory (proc.crtools) in the working directory of a program
# whose /proc is not its own (criu-glue/dump-lock.c): only such dumps, with the
# same working directory, take turns.

load helpers

setup() {
	setup_state
	TICKER=$CRYO_TESTS/programs/ticker.py
	mkdir "$STATE/shared" "$STATE/own1" "$STATE/own2"
	# The CRIU workload "held" uses: while $STATE/hold exists, each start
	# waits (at most 60 s) until $STATE/go does, so that its dump is under
	# way, the program still running, for as long as the test wants.
	REAL_CRIU=$(PATH=$PATH:/usr/local/sbin:/usr/sbin command -v criu)
	cat >"$STATE/criu" <<-EOF
		#!/bin/bash
		if [ -e "$STATE/hold" ]; then
		    touch "$STATE/entered"
		    for _ in \$(seq 1200); do
		        [ -e "$STATE/go" ] || [ ! -d "$STATE" ] && break
		        sleep 0.05
		    done
		fi
		exec "$REAL_CRIU" "\$@"
	EOF
	chmod +x "$STATE/criu"
}
teardown() {
	touch "$STATE/go"
	# The locks of this test's directories, which dumps that took turns
	# left (a later directory may get the same inode).
	local d
	for d in shared own1 own2; do
		rm -f "/run/lock/cryo-dump-$(stat -c '%d-%i' "$STATE/$d").lock"
	done
	teardown_state
}

# start_in DIR NAME [CRIU] -- COMMAND...: cryo run --name NAME in working
# directory DIR, with CRYO_CRIU=CRIU if given.
start_in() {
	local dir=$1 name=$2 criu=${3:-}
	shift 3
	(cd "$dir" && CRYO_CRIU=$criu exec "$CRYO" run --name "$name" "$@" \
		>"$STATE/$name.out" 2>"$STATE/$name.err" </dev/null) &
	track_supervisor "$!"
}

# Checkpoints each workload named, all at once; fails unless all succeed.
checkpoint_all() {
	local pids=() w p failed=0
	for w in "$@"; do
		timeout 60 "$CRYO" checkpoint "$w" >"$STATE/cp-$w.out" 2>&1 &
		pids+=("$!")
	done
	for p in "${pids[@]}"; do
		wait "$p" || failed=1
	done
	if [ "$failed" = 1 ]; then
		cat "$STATE"/cp-*.out >&2
		return 1
	fi
}

@test "four workloads, two sharing a working directory, one restored: checkpointed all at once, ten times, every checkpoint succeeds" {
	start_in "$STATE/shared" s1 "" -- "$TICKER" 0.1
	start_in "$STATE/shared" s2 "" -- "$TICKER" 0.1
	start_in "$STATE/own1" o1 "" -- "$TICKER" 0.1
	start_in "$STATE/own2" o2 "" -- "$TICKER" 0.1
	for w in s1 s2 o1 o2; do
		wait_for 30 has_pid "$w"
	done
	# A restored program has its own /proc again too.
	run timeout 30 "$CRYO" checkpoint s2
	assert_success
	old=$(prog_pid s2)
	kill -KILL "$old"
	wait_for 30 grep -q "restored 's2'" "$STATE/s2.err"
	wait_for 30 has_pid s2
	for _ in $(seq 10); do
		checkpoint_all s1 s2 o1 o2
	done
	for w in s1 s2 o1 o2; do
		run timeout 30 "$CRYO" status "$w"
		assert_line --regexp "^$w +running "
	done
	# No dump of theirs made a directory, nor needed a lock.
	[ ! -e "$STATE/shared/proc.crtools" ]
	dev_ino=$(stat -c '%d-%i' "$STATE/shared")
	[ ! -e "/run/lock/cryo-dump-$dev_ino.lock" ]
}

@test "while one workload's dump is under way, other workloads are checkpointed, in its working directory too" {
	start_in "$STATE/shared" held "$STATE/criu" -- "$TICKER" 0.1
	start_in "$STATE/shared" s2 "" -- "$TICKER" 0.1
	start_in "$STATE/own1" o1 "" -- "$TICKER" 0.1
	for w in held s2 o1; do
		wait_for 30 has_pid "$w"
	done
	touch "$STATE/hold"
	timeout 90 "$CRYO" checkpoint held >"$STATE/cp-held.out" 2>&1 &
	held_cp=$!
	wait_for 30 test -e "$STATE/entered"
	# held's supervisor is inside its dump (CRIU started, waiting): these
	# go ahead of it. With dumps taking turns they would wait for it.
	checkpoint_all s2 o1
	kill -0 "$held_cp"
	rm "$STATE/hold"
	touch "$STATE/go"
	wait "$held_cp"
	run timeout 30 "$CRYO" status held
	assert_line --regexp '^held +running '
}

@test "programs whose /proc is the host's, in one working directory: their dumps take turns, and all succeed" {
	# Each unmounts its own /proc: the host's, underneath, is what it sees,
	# and CRIU makes proc.crtools in its working directory at each dump.
	start_in "$STATE/shared" held "$STATE/criu" -- sh -c "umount -l /proc && exec $TICKER 0.1"
	start_in "$STATE/shared" h2 "" -- sh -c "umount -l /proc && exec $TICKER 0.1"
	start_in "$STATE/own1" h3 "" -- sh -c "umount -l /proc && exec $TICKER 0.1"
	for w in held h2 h3; do
		wait_for 30 count_at_least 2 '^[0-9]' "$STATE/$w.out"
	done
	for _ in $(seq 10); do
		checkpoint_all held h2 h3
	done
	# held's dump under way: h3, elsewhere, goes ahead of it; h2, in the
	# same directory, waits until it is done.
	touch "$STATE/hold"
	timeout 90 "$CRYO" checkpoint held >"$STATE/cp-held.out" 2>&1 &
	held_cp=$!
	wait_for 30 test -e "$STATE/entered"
	timeout 90 "$CRYO" checkpoint h2 >"$STATE/cp-h2.out" 2>&1 &
	h2_cp=$!
	checkpoint_all h3
	sleep 1
	kill -0 "$h2_cp"
	rm "$STATE/hold"
	touch "$STATE/go"
	wait "$held_cp"
	wait "$h2_cp"
	[ ! -e "$STATE/shared/proc.crtools" ]
}
