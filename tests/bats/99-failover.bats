#!/usr/bin/env bats
# Losing a machine: a workload owned through an etcd lease, its generations
# in an S3-compatible store, and a standby on another "machine" that takes
# over. Two machines are two network namespaces (A: 10.213.0.2, B:
# 10.213.0.3) on a bridge of the host's (10.213.0.1), where the test's own
# etcd and Swift (scripts/lib/etcd-test, scripts/lib/swift-s3) listen; each
# machine has its own state directory. The program is durable-counter: it
# appends a value to a log only once its checkpoint is published, and a
# heartbeat naming the copy that runs. From the log, as a client would, the
# tests check that the values never go down (no published generation lost,
# no restore of a stale one) and that a copy never runs again once another
# has begun (never two at once).

load helpers
load remote

BUCKET=cryo-failover
NS=cryofo
TTL=3

setup_file() {
	ip link add "${NS}br" type bridge
	ip addr add 10.213.0.1/24 dev "${NS}br"
	ip link set "${NS}br" up
	local h i=2
	for h in a b; do
		ip netns add "${NS}$h"
		ip link add "${NS}$h-br" type veth peer name "${NS}$h-in"
		ip link set "${NS}$h-in" netns "${NS}$h"
		ip link set "${NS}$h-br" master "${NS}br" up
		ip -n "${NS}$h" addr add "10.213.0.$i/24" dev "${NS}$h-in"
		ip -n "${NS}$h" link set "${NS}$h-in" up
		ip -n "${NS}$h" link set lo up
		i=$((i + 1))
	done
	CRYO_SERVICE_IP=10.213.0.1 remote_up failover swift etcd
	"$TOOL" s3 mb "$BUCKET"
}

teardown_file() {
	remote_down
	local h
	for h in a b; do
		ip netns del "${NS}$h" 2>/dev/null || true
	done
	ip link del "${NS}br" 2>/dev/null || true
}

setup() {
	setup_state
	remote_env
	ip link set "${NS}a-br" up
	ip link set "${NS}b-br" up
	LOG=$STATE/counter.log
}

teardown() {
	teardown_state
}

# on_machine H NAME PREFIX ARGS...: cryo run on machine H (its network
# namespace, its state directory $STATE/H) of durable-counter as workload
# NAME, owned through the lease and stored under PREFIX; the supervisor's
# PID in $LAST_SUPERVISOR, its output in $STATE/H.err.
on_machine() {
	local h=$1 name=$2 prefix=$3
	shift 3
	[ -d "$STATE/$h" ] || mkdir -m 700 "$STATE/$h"
	nsenter --net="/run/netns/${NS}$h" "$CRYO" run --state-dir "$STATE/$h" --name "$name" \
		--store "s3://$BUCKET/$prefix" --lease "${ETCD_ENDPOINT/http/etcd}" --lease-ttl "$TTL" \
		--store-sync "$@" -- "$CRYO_TEST_PROGRAMS/durable-counter" "$LOG" 100 \
		>"$STATE/$h.out" 2>"$STATE/$h.err" </dev/null &
	LAST_SUPERVISOR=$!
	track_supervisor "$!"
}

durable_count_at_least() {
	[ "$(grep -c ' durable ' "$LOG" 2>/dev/null)" -ge "$1" ]
}

# The log as a client reads it: values never go down, and once a copy's
# token is seen after another's it is never seen again.
log_is_one_history() {
	python3 - "$LOG" <<-'PY'
	import sys
	last, seen, current = 0, set(), None
	for i, line in enumerate(open(sys.argv[1]), 1):
	    f = line.split()
	    token = f[-1]
	    if token != current:
	        if token in seen:
	            sys.exit(f"line {i}: copy {token} runs again after another began: two copies at once")
	        if current:
	            seen.add(current)
	        current = token
	    if f[0] != "alive":
	        n = int(f[0])
	        if n < last:
	            sys.exit(f"line {i}: value {n} after {last}: a published value was lost")
	        last = n
	PY
}

restored_on_b() {
	grep -q "restored 'c' from generation" "$STATE/b.err"
}

@test "failover: the owner's machine cut off from etcd and the store stops its copy; the standby takes over from the newest published generation; never two copies" {
	on_machine a c one
	local owner=$LAST_SUPERVISOR
	wait_for 60 durable_count_at_least 5
	on_machine b c one --standby
	wait_for 30 grep -q "waiting" "$STATE/b.err"
	sleep 1
	run restored_on_b
	assert_failure
	# Machine A loses its link.
	ip link set "${NS}a-br" down
	wait_for 60 restored_on_b
	local before
	before=$(grep -c ' durable ' "$LOG")
	wait_for 60 durable_count_at_least $((before + 5))
	log_is_one_history
	grep -q "lost the lease" "$STATE/a.err"
	wait_supervisor "$owner" 30
	[ "$status" -ne 0 ]
	# A, back on the network, has nothing running and writes nothing.
	ip link set "${NS}a-br" up
	sleep 2
	log_is_one_history
}

@test "failover: the owner's whole machine killed: the standby runs the program from the newest published generation" {
	on_machine a c two
	local owner=$LAST_SUPERVISOR prog
	wait_for 60 durable_count_at_least 5
	on_machine b c two --standby
	wait_for 30 grep -q "waiting" "$STATE/b.err"
	prog=$(cat "$STATE/a/c/pid")
	# Every process of machine A, at once: the supervisor, the program and,
	# when a checkpoint is under way, CRIU (left alone, it waited forever
	# for the program it had been dumping). Again until none is left.
	kill -KILL "$owner" "$prog"
	local _ left
	for _ in $(seq 20); do
		left=$(ip netns pids "${NS}a")
		[ -n "$left" ] || break
		# shellcheck disable=SC2086  # a list of PIDs
		kill -KILL $left 2>/dev/null || true
		sleep 0.05
	done
	local last
	last=$(grep ' durable ' "$LOG" | tail -n 1 | cut -d' ' -f1)
	wait_for 60 restored_on_b
	wait_for 30 grep -q ' restored ' "$LOG"
	[ "$(grep ' restored ' "$LOG" | tail -n 1 | cut -d' ' -f1)" -ge "$last" ]
	wait_for 60 durable_count_at_least $(($(grep -c ' durable ' "$LOG") + 3))
	log_is_one_history
}

@test "failover: the history checker finds two copies at once and a value lost" {
	printf '1 durable aa\nalive aa\n2 durable aa\n2 restored bb\nalive aa\n' >"$LOG"
	run log_is_one_history
	assert_failure
	assert_output --partial 'two copies at once'
	printf '1 durable aa\n5 durable aa\n4 restored bb\n' >"$LOG"
	run log_is_one_history
	assert_failure
	assert_output --partial 'a published value was lost'
}
