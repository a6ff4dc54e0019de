#!/usr/bin/env bats
# Real servers not written for cryo, unmodified: redis-server from Debian and
# a python3 asyncio server.

load helpers

setup() {
	setup_state
	PORT=$(free_port)
	CLIENTS=
}
teardown() {
	if [ -n "$CLIENTS" ]; then
		kill "$CLIENTS" 2>/dev/null || true
		wait "$CLIENTS" 2>/dev/null || true
	fi
	teardown_state
}

rcli() { redis-cli -p "$PORT" "$@"; }
redis_up() { [ "$(rcli ping)" = PONG ]; }

start_redis() {
	start_cryo redis "$@" -- redis-server --port "$PORT" --bind 127.0.0.1 --save '' \
		--appendonly no --daemonize no --loglevel warning
	wait_for 30 redis_up
}

@test "redis: checkpoint, more writes, kill -9; the restore holds exactly the checkpoint's data" {
	start_redis
	seq 1 20000 | awk '{print "SET key:" $1 " value-" $1}' | rcli --pipe >/dev/null
	assert_equal "$(rcli dbsize)" 20000
	# A client connected during the checkpoint is not disturbed.
	exec {conn}<>"/dev/tcp/127.0.0.1/$PORT"
	run "$CRYO" checkpoint redis
	assert_success
	printf 'PING\r\n' >&"$conn"
	read -r -t 5 reply <&"$conn"
	assert_equal "${reply%$'\r'}" "+PONG"

	seq 1 500 | awk '{print "SET extra:" $1 " x"}' | rcli --pipe >/dev/null
	rcli set key:7 changed >/dev/null
	assert_equal "$(rcli dbsize)" 20500

	kill -KILL "$(prog_pid redis)"
	wait_for 30 grep -q "restored 'redis'" "$STATE/redis.err"
	wait_for 30 redis_up
	assert_equal "$(rcli dbsize)" 20000
	for k in 1 7 777 12345 20000; do
		assert_equal "$(rcli get "key:$k")" "value-$k"
	done
	assert_equal "$(rcli exists extra:1)" 0
	# The connection open at the checkpoint came back closed: the server
	# ended it, and its old client sees the end too.
	run timeout 5 cat <&"$conn"
	exec {conn}<&-
	assert_equal "$(rcli client list | wc -l)" 1
}

@test "redis under redis-benchmark load with periodic checkpoints: no errors" {
	start_redis --every 200ms
	run timeout 120 redis-benchmark -p "$PORT" -n 30000 -c 8 -t set,get,incr,lpush -q
	assert_success
	refute_output --partial "rror"
	assert_output --partial "SET:"
	assert_output --partial "LPUSH:"
	# Checkpoints were taken while it ran.
	images=("$STATE/redis"/gen-*.cryo)
	[ "${#images[@]}" -ge 2 ]
	run "$CRYO" images redis
	refute_output --partial " NO"
}

@test "python3 asyncio server: a client connected across checkpoints sees no error; a crash restores the count" {
	start_cryo py -- "$CRYO_TESTS/programs/asyncio-server.py" "$PORT"
	wait_for 30 grep -q listening "$STATE/py.out"
	"$CRYO_TESTS/programs/client.py" "$PORT" 0.01 4 >"$STATE/client.out" &
	client=$!
	for _ in 1 2 3; do
		sleep 0.7
		"$CRYO" checkpoint py >/dev/null
	done
	wait "$client"
	run cat "$STATE/client.out"
	assert_output --regexp '^ok [0-9]+ 1 [0-9]+$'
	at_checkpoint=$(awk '{print $4}' "$STATE/client.out")

	kill -KILL "$(prog_pid py)"
	wait_for 30 grep -q "restored 'py'" "$STATE/py.err"
	wait_for 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT"
	run "$CRYO_TESTS/programs/client.py" "$PORT" 0 0.1
	assert_success
	# The count goes on from the last checkpoint, not from zero, and not
	# from the requests served after it.
	first=$(awk '{print $3}' <<<"$output")
	[ "$first" -gt 1 ] && [ "$first" -le "$at_checkpoint" ]
}

@test "40 idle TCP clients: a checkpoint locks none of them (no iptables, no repair), each answers after it; after a crash each sees its end and the restored server takes new clients" {
	start_cryo tcp -- "$CRYO_TESTS/programs/asyncio-server.py" "$PORT"
	wait_for 30 grep -q listening "$STATE/tcp.out"
	"$CRYO_TESTS/programs/tcp-clients.py" "$PORT" 40 120 >"$STATE/clients.out" 2>&1 3>&- &
	CLIENTS=$!
	wait_for 60 grep -q '^connected 40$' "$STATE/clients.out"

	run "$CRYO" checkpoint tcp
	assert_success
	# CRIU's log of this dump (it finished) shows no command run per
	# connection: no iptables or nft lock, no repair mode.
	log="$STATE/tcp/criu-dump.log"
	grep -q 'Dumping finished successfully' "$log"
	assert_equal "$(grep -c -e 'Running iptables' -e 'Running nftables' -e 'Turning repair on' "$log")" 0
	# Every connection works on, undisturbed.
	kill -USR1 "$CLIENTS"
	wait_for 30 grep -q '^answered' "$STATE/clients.out"
	run grep '^answered' "$STATE/clients.out"
	assert_output "answered 40 of 40"

	run "$CRYO" kill tcp
	assert_success
	wait_for 30 grep -q "restored 'tcp'" "$STATE/tcp.err"
	# The old clients see their connections end; new ones are served.
	kill -USR2 "$CLIENTS"
	wait_for 30 grep -q '^ended' "$STATE/clients.out"
	run grep '^ended' "$STATE/clients.out"
	assert_output "ended 40 of 40"
	wait_for 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT"
	run "$CRYO_TESTS/programs/client.py" "$PORT" 0 0.1
	assert_success
	assert_output --regexp '^ok [0-9]+ [0-9]+ [0-9]+$'
}
