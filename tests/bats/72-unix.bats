#!/usr/bin/env bats
# A local server whose clients stay connected over a unix socket (redis-server
# from Debian, unmodified): its checkpoints leave the connections be, a
# restore after a crash hands them back ended, and a migration is refused.

load helpers

setup() {
	setup_state
	SOCK=$STATE/redis.sock
	HELPERS=()
}
teardown() {
	local p
	for p in "${HELPERS[@]}"; do
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	teardown_state
}

rcli() { redis-cli -s "$SOCK" "$@"; }
redis_up() { [ "$(rcli ping)" = PONG ]; }

start_redis() {
	start_cryo redis "$@" -- redis-server --port 0 --unixsocket "$SOCK" --save '' \
		--appendonly no --daemonize no --loglevel warning
	wait_for 30 redis_up
}

# The newest generation's number (0 before the first).
newest_gen() {
	local f n=0
	for f in "$STATE/redis"/gen-*.cryo; do
		[ -e "$f" ] || continue
		f=${f##*/gen-}
		f=${f%.cryo}
		n=$((10#$f))
	done
	echo "$n"
}
gen_past() { [ "$(newest_gen)" -ge "$1" ]; }

# A client that connects, pings, says "connected" in $STATE/held.out, then
# waits (at most 60 s) for its connection to end and says "ended".
start_held_client() {
	python3 - "$SOCK" "$STATE/held.out" <<'PY' 3>&- &
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"PING\r\n")
assert s.recv(100).startswith(b"+PONG")
out = open(sys.argv[2], "w")
print("connected", file=out, flush=True)
s.settimeout(60)
print("ended" if s.recv(100) == b"" else "data", file=out, flush=True)
PY
	HELPERS+=("$!")
	HELD=$!
	wait_for 10 grep -q connected "$STATE/held.out"
}

@test "redis on a unix socket: checkpoints with clients connected; after a crash the connection ends and clients reconnect" {
	start_redis --every 1s
	start_held_client
	# Checkpoints succeed while it stays connected, and under a benchmark's
	# clients, none of which sees an error.
	local before
	before=$(newest_gen)
	timeout 120 redis-benchmark -s "$SOCK" -n 100000 -c 4 -t set,get,incr -q \
		>"$STATE/bench.out" 2>&1 3>&- &
	local bench=$!
	HELPERS+=("$bench")
	wait_for 60 gen_past "$((before + 3))"
	local bench_status=0
	wait "$bench" || bench_status=$?
	assert_equal "$bench_status" 0
	run cat "$STATE/bench.out"
	refute_output --partial "rror"
	assert_output --partial "SET:"
	run grep "failed" "$STATE/redis.err"
	assert_output ""
	run "$CRYO" images redis
	refute_output --partial " NO"
	# The held client is still connected and served.
	kill -0 "$HELD"
	rcli set answer 42 >/dev/null
	# (the next checkpoint may have begun before the write)
	wait_for 30 gen_past "$(($(newest_gen) + 2))"

	run "$CRYO" kill redis
	assert_success
	wait_for 30 grep -q "restored 'redis'" "$STATE/redis.err"
	wait_for 30 redis_up
	assert_equal "$(rcli get answer)" 42
	# The old client saw its connection end; the restored server saw it end
	# too and let it go: the only client left is the one asking.
	wait_for 10 grep -q ended "$STATE/held.out"
	assert_equal "$(rcli client list | wc -l)" 1
	# A client that connects anew is served, across further checkpoints.
	start_held_client
	before=$(newest_gen)
	wait_for 30 gen_past "$((before + 2))"
	assert_equal "$(rcli client list | wc -l)" 2
}

@test "redis on a unix socket: a migration with a client connected is refused before it is paused" {
	start_redis
	start_held_client
	head -c 32 /dev/urandom >"$STATE/key"
	chmod 600 "$STATE/key"
	# No cryo serve listens there: the refusal comes before any connection.
	run "$CRYO" migrate redis --to 127.0.0.1:1 --key-file "$STATE/key"
	assert_failure
	assert_output --partial "holds 1 unix-socket connection to processes outside it, which cannot move"
	assert_output --partial "was not paused"
	# Nothing was disturbed.
	redis_up
	kill -0 "$HELD"
	[ "$(wc -l <"$STATE/held.out")" = 1 ]
}

@test "redis on a unix socket: a client that connects between cryo's look and the freeze costs the checkpoint nothing" {
	# The supervisor's first look misses the connection, as it misses one
	# made just after it: CRIU refuses that dump, and cryo dumps again.
	CRYO_INJECT_CHECKPOINT_FAULT=unix-look-late start_redis
	start_held_client
	run "$CRYO" checkpoint redis
	assert_success
	[ "$(newest_gen)" -ge 1 ]
	kill -0 "$HELD"
	[ "$(wc -l <"$STATE/held.out")" = 1 ]
}
