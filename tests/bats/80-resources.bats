#!/usr/bin/env bats
# Files and sockets of unmodified programs, and what CRIU cannot checkpoint.

load helpers

setup() { setup_state; }
teardown() {
	if mountpoint -q "$STATE/gone" 2>/dev/null; then umount "$STATE/gone"; fi
	teardown_state
}

@test "io_uring: the checkpoint fails naming the resource; the program runs on" {
	start_cryo ur -- "$CRYO_TEST_PROGRAMS/uring-holder"
	wait_for 30 count_at_least 2 '^[0-9]' "$STATE/ur.out"
	run "$CRYO" checkpoint ur
	assert_failure
	assert_output --regexp "cannot checkpoint 'ur': CRIU dump failed: uring-holder \(PID [0-9]+\) holds an io_uring instance \(fd [0-9]+\), which CRIU cannot checkpoint \(log: '$STATE/ur/criu-dump.log'\); the program runs on"
	[ -s "$STATE/ur/criu-dump.log" ]
	n=$(tail -n 1 "$STATE/ur.out")
	wait_for 10 count_at_least 1 "^$((n + 3))\$" "$STATE/ur.out"
	run "$CRYO" images ur
	assert_output --partial "(no images of 'ur'"
}

@test "a log file opened O_APPEND that grew after the checkpoint does not block a restore" {
	start_cryo log -- "$CRYO_TESTS/programs/append-logger.py" "$STATE/app.log"
	wait_for 30 count_at_least 5 '^line' "$STATE/app.log"
	"$CRYO" checkpoint log >/dev/null
	n=$(wc -l <"$STATE/app.log")
	wait_for 30 count_at_least $((n + 10)) '^line' "$STATE/app.log"
	kill -KILL "$(prog_pid log)"
	wait_for 30 grep -q "restored 'log' from generation 1" "$STATE/log.err"
	m=$(wc -l <"$STATE/app.log")
	wait_for 30 count_at_least $((m + 5)) '^line' "$STATE/app.log"
}

@test "a unix socket with a path serves after every restore" {
	sock=$STATE/server.sock
	start_cryo ux -- "$CRYO_TESTS/programs/unix-server.py" "$sock"
	wait_for 30 grep -q listening "$STATE/ux.out"
	ask() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print(s.makefile().readline().strip())' "$sock"; }
	assert_equal "$(ask)" "count 1"
	"$CRYO" checkpoint ux >/dev/null
	assert_equal "$(ask)" "count 2"
	for round in 1 2; do
		kill -KILL "$(prog_pid ux)"
		wait_for 30 count_at_least "$round" "restored 'ux'" "$STATE/ux.err"
		wait_for 30 ask
		"$CRYO" checkpoint ux >/dev/null
	done
	# Each restore went back to the count at its checkpoint (1, then 2).
	assert_equal "$(ask)" "count 4"
}

@test "the program has its own /proc: /proc/<getpid()> is itself, /proc/locks and fdinfo name its lock and pidfd by its PID, an fd on its maps; likewise after two restores" {
	start_cryo op -- "$CRYO_TESTS/programs/own-proc.py" "$STATE/lock"
	wait_for 30 count_at_least 3 '^[0-9]' "$STATE/op.out"
	run "$CRYO" checkpoint op
	assert_success
	local before=0 n
	for round in 1 2; do
		before=$(prog_pid op)
		kill -KILL "$before"
		wait_for 30 count_at_least "$round" "restored 'op' from generation 1" "$STATE/op.err"
		wait_for 30 has_pid op
		[ "$(prog_pid op)" != "$before" ]
		n=$(grep -c '^[0-9]' "$STATE/op.out")
		wait_for 10 count_at_least $((n + 3)) '^[0-9]' "$STATE/op.out"
	done
	# Every line, before the checkpoint and after each restore: its PID in
	# its namespace is 2, and its /proc says so (status, the lock's owner in
	# /proc/locks and in fdinfo, a pidfd's fdinfo, the maps its fd reads).
	run grep -c '^[0-9]' "$STATE/op.out"
	[ "$output" -ge 9 ]
	run grep -v -E '^[0-9]+ pid=2 name=own-proc.py status=2 lock=2 fdinfo=2 pidfd=2 maps=ok$' \
		"$STATE/op.out"
	assert_output ''
}

@test "a mount the host had at the checkpoint and has no longer does not stop the restore: the program comes back without it" {
	mkdir "$STATE/gone"
	mount -t tmpfs -o size=1m cryo-test "$STATE/gone"
	start_cryo mnt -- "$CRYO_TESTS/programs/ticker.py"
	wait_for 30 count_at_least 3 '^[0-9]' "$STATE/mnt.out"
	# The program's mount namespace is a copy of ours: it has the mount.
	grep -q " $STATE/gone " "/proc/$(prog_pid mnt)/mountinfo"
	run "$CRYO" checkpoint mnt
	assert_success
	# Gone from the host, the place it was on too (as a network
	# namespace's file under /run/netns goes with `ip netns delete`).
	umount "$STATE/gone"
	rmdir "$STATE/gone"
	kill -KILL "$(prog_pid mnt)"
	wait_for 30 grep -q "restored 'mnt' from generation 1" "$STATE/mnt.err"
	n=$(grep -c '^[0-9]' "$STATE/mnt.out")
	wait_for 10 count_at_least $((n + 3)) '^[0-9]' "$STATE/mnt.out"
	run grep -c " $STATE/gone " "/proc/$(prog_pid mnt)/mountinfo"
	assert_output 0
	# Said once (another mount of the host's may go meanwhile too).
	grep -E -q "^cryo: 'mnt' comes back without [0-9]+ mounts? it had at the checkpoint, gone from the host since$" \
		"$STATE/mnt.err"
	# Its own /proc came back with it.
	run grep -c ' - proc ' "/proc/$(prog_pid mnt)/mountinfo"
	[ "$output" -ge 2 ]
}
