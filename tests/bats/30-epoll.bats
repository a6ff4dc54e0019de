#!/usr/bin/env bats
# An event-loop program blocked in epoll_wait on a timerfd, an eventfd and a
# listening socket survives checkpoint, kill and restore.

load helpers

setup() { setup_state; }
teardown() { teardown_state; }

@test "epoll on timerfd, eventfd and a listening TCP socket survives kill -9 and restore" {
	port=$(free_port)
	start_cryo ep -- "$CRYO_EXAMPLES/epoll-server" "$port" 20 10
	wait_for 30 count_at_least 2 '^checkpointed at tick' "$STATE/ep.out"
	run query "$port"
	assert_success
	assert_output --regexp '^ticks [0-9]+ checkpoints [0-9]+ restores 0 generation [0-9]+$'
	before=$(awk '{print $2}' <<<"$output")

	kill -KILL "$(prog_pid ep)"
	wait_for 30 grep -q "restored 'ep' from generation" "$STATE/ep.err"
	wait_for 30 grep -q '^restored at tick' "$STATE/ep.out"
	# The restored copy serves on the same port, and its timer and eventfd
	# go on: ticks continue from the checkpoint, more checkpoints follow.
	wait_for 30 query "$port"
	run query "$port"
	assert_success
	assert_output --regexp '^ticks [0-9]+ checkpoints [0-9]+ restores 1 generation [0-9]+$'
	gen=$(awk '{print $8}' <<<"$output")
	[ "$gen" -ge 2 ]
	restored_tick=$(grep '^restored at tick' "$STATE/ep.out" | awk '{print $4}')
	[ "$restored_tick" -le "$before" ]
	checkpointed_since_restore() {
		sed -n '/^restored at tick/,$p' "$STATE/ep.out" | grep -q '^checkpointed at tick'
	}
	wait_for 30 checkpointed_since_restore
	run query "$port"
	after=$(awk '{print $2}' <<<"$output")
	[ "$after" -gt "$restored_tick" ]
}
