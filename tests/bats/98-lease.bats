#!/usr/bin/env bats
# cryo run --store ... --lease etcd://HOST:PORT: the workload runs only while
# its supervisor holds an etcd lease, and only the holder publishes
# generations. Against a real OpenStack Swift (s3api) and a real etcd, both
# started here by scripts/lib/swift-s3 and scripts/lib/etcd-test and stopped
# by their PIDs at the end. TTLs are short (3 s) so that expiry is quick.

load helpers
load remote

BUCKET=cryo-lease

setup_file() {
	remote_up lease etcd swift
	"$TOOL" s3 mb "$BUCKET"
}

teardown_file() {
	remote_down
}

setup() {
	setup_state
	remote_env
	TICKER=$CRYO_TESTS/programs/ticker.py
	LEASE=etcd://${ETCD_ENDPOINT#http://}
}

teardown() {
	# A test that froze a service lets it go again, whatever happened.
	[ -z "${ETCD_PID:-}" ] || kill -CONT "$ETCD_PID" 2>/dev/null || true
	[ -z "${SWIFT_S3_PROXY_PID:-}" ] || kill -CONT "$SWIFT_S3_PROXY_PID" 2>/dev/null || true
	teardown_state
}

# The generations the store holds under PREFIX, one number a line.
remote_gens() {
	"$TOOL" s3 ls "$BUCKET" "$1/" | sed -nE 's|^.*/gen-0*([0-9]+)\.cryo .*$|\1|p'
}

# The published record of PREFIX/NAME (its JSON), empty if none.
published() {
	"$TOOL" etcd get "cryo/$BUCKET/$1/published" 2>/dev/null | sed -E 's/ [0-9]+$//'
}

published_gen() {
	published "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["generation"])'
}

published_is() {
	[ "$(published_gen "$1")" = "$2" ]
}

# The lease that holds the owner key of PREFIX/NAME.
owner_lease() {
	"$TOOL" etcd get "cryo/$BUCKET/$1/owner" | sed -E 's/^.* ([0-9]+)$/\1/'
}

supervisor_gone() {
	! kill -0 "$1" 2>/dev/null
}

@test "lease: a second owner of the same workload is refused in one line naming the holder; nothing starts" {
	start_cryo t --store "s3://$BUCKET/one" --lease "$LEASE" --lease-ttl 3 -- "$TICKER"
	wait_for 30 test -s "$STATE/t/pid"
	local first=$LAST_SUPERVISOR
	local other=$STATE/other
	mkdir -m 700 "$other"
	run timeout 30 "$CRYO" run --state-dir "$other" --name t --store "s3://$BUCKET/one" \
		--lease "$LEASE" --lease-ttl 3 -- "$TICKER"
	assert_failure
	assert_output --regexp "^cryo: 't' is owned through $LEASE by the supervisor PID $first on host '[^']+' \(state directory '$STATE/t'\): not started here; wait for it to end with --standby, or stop it there$"
	[ "${#lines[@]}" -eq 1 ]
	[ ! -e "$other/t/pid" ]
	# The first runs on, and holds the lease still.
	kill -0 "$(prog_pid t)"
	run "$CRYO" status t
	assert_line --regexp '^  lease etcd://.*: held \(TTL 3s\)'
}

@test "lease: etcd unreachable at start is one line, and nothing starts" {
	local port
	port=$(free_port)
	run timeout 30 "$CRYO" run --name t --store "s3://$BUCKET/two" --lease "etcd://127.0.0.1:$port" -- "$TICKER"
	assert_failure
	assert_output --regexp "^cryo: cannot take the lease of 't' on etcd://127.0.0.1:$port: .*; not started \(is etcd running there\?\)$"
	[ "${#lines[@]}" -eq 1 ]
	[ ! -e "$STATE/t/pid" ]
}

@test "lease: --lease without --store is refused in one line" {
	run "$CRYO" run --name t --lease "$LEASE" -- "$TICKER"
	assert_failure 2
	assert_output "cryo: --lease needs --store s3://BUCKET/PREFIX: the lease owns the workload's copy in that store"
}

@test "lease: etcd stopped while the program runs: the program is stopped before the lease's TTL ends, in one line" {
	start_cryo t --store "s3://$BUCKET/three" --lease "$LEASE" --lease-ttl 3 -- "$TICKER"
	wait_for 30 test -s "$STATE/t/pid"
	local sup=$LAST_SUPERVISOR pid
	pid=$(prog_pid t)
	kill -STOP "$ETCD_PID"
	local t0=$EPOCHREALTIME
	# Gone within the TTL (3 s) of the freeze, generously measured: the
	# keeper's margin is 1 s, so it fences 2 s after its last renewal.
	wait_for 10 supervisor_gone "$pid"
	local took
	took=$(echo "$EPOCHREALTIME - $t0" | bc)
	echo "# program gone after $took s" >&3
	[ "$(echo "$took < 3" | bc)" = 1 ]
	wait_for 10 supervisor_gone "$sup"
	kill -CONT "$ETCD_PID"
	run cat "$STATE/t.err"
	assert_line --regexp "^cryo: lost the lease on $LEASE: stopped 't' so that a standby can take over; no renewal succeeded for .*"
	local rc=0
	wait "$sup" || rc=$?
	[ "$rc" -eq 1 ]
	run "$CRYO" status t
	assert_line --regexp '^  lease etcd://.*: lost'
}

@test "lease: a lease revoked with etcdctl fences the program at once" {
	command -v etcdctl >/dev/null || skip "etcdctl (etcd-client) is not installed"
	start_cryo t --store "s3://$BUCKET/four" --lease "$LEASE" --lease-ttl 30 -- "$TICKER"
	wait_for 30 test -s "$STATE/t/pid"
	local sup=$LAST_SUPERVISOR pid lease
	pid=$(prog_pid t)
	lease=$(owner_lease four/t)
	ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINT" lease revoke "$(printf %x "$lease")"
	# TTL 30: renewed every 10 s; it must not take anything like the TTL.
	wait_for 15 supervisor_gone "$pid"
	wait_for 10 supervisor_gone "$sup"
	run cat "$STATE/t.err"
	assert_line --regexp "^cryo: lost the lease on $LEASE: stopped 't' so that a standby can take over; lease $lease has expired or was revoked"
}

@test "lease: the published record names the newest uploaded generation and its chain, base first" {
	start_cryo t --store "s3://$BUCKET/five" --lease "$LEASE" --lease-ttl 3 -- "$TICKER"
	wait_for 30 test -s "$STATE/t/pid"
	for _ in 1 2 3; do
		run "$CRYO" checkpoint t
		assert_success
	done
	wait_for 30 published_is five/t 3
	run published five/t
	# 2 and 3 are built on 1 (the ticker's memory barely changes).
	python3 - "$output" "$STATE/t" <<'PY'
import json, os, sys
rec = json.loads(sys.argv[1])
chain = [c["generation"] for c in rec["chain"]]
assert rec["generation"] == 3 and chain[-1] == 3 and chain == sorted(chain), rec
for c in rec["chain"]:
    size = os.path.getsize(os.path.join(sys.argv[2], "gen-%012d.cryo" % c["generation"]))
    assert c["size"] == size and c["etag"], (c, size)
PY
	run "$CRYO" status t
	assert_line --regexp '^  lease etcd://.*: held \(TTL 3s\), published generation 3$'
	run "$CRYO" images t
	assert_line --regexp '^3 .* both +command +yes \(published\)$'
	assert_line --regexp '^2 .* both +command +yes$'
	# A fresh run would number its generations from 1 again, over the
	# published chain in the store: refused, and nothing is put there.
	"$CRYO" stop t >/dev/null
	wait_supervisor "$LAST_SUPERVISOR" 30
	local before
	before=$("$TOOL" s3 ls "$BUCKET" five/t/)
	run timeout 60 "$CRYO" run --name t --fresh --store "s3://$BUCKET/five" --lease "$LEASE" \
		--lease-ttl 3 -- "$TICKER"
	assert_failure 1
	assert_output --regexp "^cryo: 't' has generation 3 published on $LEASE: --fresh would put generations numbered from 1 again over those in s3://$BUCKET/five; start it without --fresh"
	[ "$("$TOOL" s3 ls "$BUCKET" five/t/)" = "$before" ]
	published_is five/t 3
}

@test "lease: a stale owner cannot publish, and a new owner deletes its unpublished leftovers" {
	start_cryo t --store "s3://$BUCKET/six" --lease "$LEASE" --lease-ttl 3 -- "$TICKER"
	wait_for 30 test -s "$STATE/t/pid"
	local sup=$LAST_SUPERVISOR
	run "$CRYO" checkpoint t
	assert_success
	wait_for 30 published_is six/t 1
	# The store stops taking anything: generation 2 is local only, then
	# etcd goes too and the owner fences itself.
	kill -STOP "$SWIFT_S3_PROXY_PID"
	run timeout 8 "$CRYO" checkpoint t
	assert_success
	kill -STOP "$ETCD_PID"
	wait_for 30 supervisor_gone "$sup"
	kill -CONT "$ETCD_PID"
	kill -CONT "$SWIFT_S3_PROXY_PID"
	published_is six/t 1
	# An old owner's leftover, put by hand where generation 2 would go:
	# the next owner deletes it before its first put.
	"$TOOL" s3 put "$BUCKET" six/t/gen-000000000009.cryo "$(gen_file t 1)" >/dev/null
	# A stale lease (granted, never the owner's) cannot publish.
	local stale
	stale=$("$TOOL" etcd grant 10)
	run "$TOOL" etcd publish "cryo/$BUCKET/six/t/owner" "$stale" "cryo/$BUCKET/six/t/published" '{"generation":99}'
	assert_failure
	published_is six/t 1
	"$TOOL" etcd revoke "$stale"
	# The workload resumes here with the lease (its lease expired or
	# revoked by now: wait for it), and takes the prefix over.
	wait_for 15 sh -c "! '$TOOL' etcd get 'cryo/$BUCKET/six/t/owner' >/dev/null 2>&1"
	start_cryo t --store "s3://$BUCKET/six" --lease "$LEASE" --lease-ttl 3 -- "$TICKER"
	wait_for 30 test -s "$STATE/t/pid"
	wait_for 30 sh -c "! '$TOOL' s3 ls '$BUCKET' six/t/ | grep -q gen-000000000009"
	run "$CRYO" checkpoint t
	assert_success
	wait_for 30 published_is six/t 3
}

@test "store-sync: cryo checkpoint answers once the generation is in the store and published; a store that does not take it within 60 s makes it a failure, and the generation stays here" {
	start_cryo t --store "s3://$BUCKET/seven" --lease "$LEASE" --lease-ttl 3 --store-sync -- "$TICKER"
	wait_for 30 test -s "$STATE/t/pid"
	run "$CRYO" checkpoint t
	assert_success
	# No wait: it was there when the answer came.
	run remote_gens seven/t
	assert_output 1
	published_is seven/t 1
	kill -STOP "$SWIFT_S3_PROXY_PID"
	run timeout 120 "$CRYO" checkpoint t
	assert_failure
	assert_output --regexp "checkpoint 2 of 't' is durable here, but the store s3://$BUCKET/seven did not take it within 60 s \(--store-sync\); it stays here and is uploaded later"
	test -e "$(gen_file t 2)"
	kill -CONT "$SWIFT_S3_PROXY_PID"
	wait_for 60 published_is seven/t 2
}

@test "store-sync: the program's news that its checkpoint is durable waits for the store" {
	kill -STOP "$SWIFT_S3_PROXY_PID"
	start_cryo a --store "s3://$BUCKET/eight" --store-sync -- "$CRYO_TEST_PROGRAMS/async-checkpoint" 1 100
	wait_for 30 grep -q '^dumped generation 1, running$' "$STATE/a.out"
	test -e "$(gen_file a 1)"
	# Durable here long since, but not in the store: no news.
	sleep 3
	run cat "$STATE/a.out"
	refute_output --partial durable
	kill -CONT "$SWIFT_S3_PROXY_PID"
	wait_for 40 grep -q '^durable generation 1$' "$STATE/a.out"
	run remote_gens eight/a
	assert_output 1
}

# Starts a standby of workload t on "another machine" (state directory
# $STATE/other), with the given store prefix.
start_standby() {
	mkdir -m 700 "$STATE/other"
	"$CRYO" run --state-dir "$STATE/other" --name t --store "s3://$BUCKET/$1" --lease "$LEASE" \
		--lease-ttl 3 --standby -- "$TICKER" >"$STATE/other.out" 2>"$STATE/other.err" </dev/null &
	track_supervisor "$!"
	STANDBY=$!
}

# Kills workload t's supervisor and program with SIGKILL, as the loss of
# their machine would.
lose_owner() {
	local sup=$1 pid
	# The pid file says 0 if the program was slow to start: never kill 0
	# (this process group).
	pid=$(prog_pid t)
	[ "${pid:-0}" -gt 0 ]
	kill -KILL "$sup" "$pid"
	wait_for 10 supervisor_gone "$sup"
}

@test "standby: waits while the owner holds the lease; takes it once the owner is killed and its TTL expired, and starts afresh when nothing was published" {
	start_cryo t --store "s3://$BUCKET/nine" --lease "$LEASE" --lease-ttl 3 -- "$TICKER"
	wait_for 30 test -s "$STATE/t/pid"
	local owner=$LAST_SUPERVISOR first
	first=$(owner_lease nine/t)
	start_standby nine
	wait_for 30 grep -q "^cryo: 't' is owned through $LEASE by the supervisor PID $owner on host .*: standing by, waiting until its lease ends$" "$STATE/other.err"
	# Longer than the TTL: the owner renews, the standby waits.
	sleep 4
	[ ! -e "$STATE/other/t/pid" ]
	kill -0 "$STANDBY"
	[ "$(owner_lease nine/t)" = "$first" ]
	lose_owner "$owner"
	run "$CRYO" status t
	assert_line --regexp '^  lease etcd://.*: ended \(TTL 3s\), nothing published yet$'
	wait_for 30 test -s "$STATE/other/t/pid"
	grep -q "nothing was published: starting it afresh" "$STATE/other.err"
	run "$CRYO" status --state-dir "$STATE/other" t
	assert_line --regexp '^  lease etcd://.*: held \(TTL 3s\), nothing published yet$'
	[ "$(owner_lease nine/t)" != "$first" ]
	wait_for 10 grep -q '^3$' "$STATE/other.out"
}

@test "standby: after the owner's loss it resumes from the published generation, fetched from the store, and publishes from then on" {
	start_cryo t --store "s3://$BUCKET/ten" --lease "$LEASE" --lease-ttl 3 -- "$TICKER" 0.2
	wait_for 30 test -s "$STATE/t/pid"
	local owner=$LAST_SUPERVISOR
	wait_for 30 grep -q '^10$' "$STATE/t.out"
	run "$CRYO" checkpoint t
	assert_success
	run "$CRYO" checkpoint t
	assert_success
	wait_for 30 published_is ten/t 2
	local at
	at=$(tail -n 1 "$STATE/t.out")
	start_standby ten
	wait_for 30 grep -q "standing by, waiting until its lease ends" "$STATE/other.err"
	lose_owner "$owner"
	wait_for 30 test -s "$STATE/other/t/pid"
	grep -q "^cryo: 't' holds the lease on $LEASE: resuming from generation 2 (published: 2)$" "$STATE/other.err"
	test -e "$(gen_file other/t 2)"
	# The ticker goes on from its count at the checkpoint, not from 1.
	wait_for 10 test -s "$STATE/other.out"
	[ "$(head -n 1 "$STATE/other.out")" -gt 10 ]
	[ "$(head -n 1 "$STATE/other.out")" -le $((at + 1)) ]
	run "$CRYO" checkpoint --state-dir "$STATE/other" t
	assert_success
	wait_for 30 published_is ten/t 3
}

@test "standby: of two standbys exactly one takes over; the other waits on" {
	start_cryo t --store "s3://$BUCKET/eleven" --lease "$LEASE" --lease-ttl 3 -- "$TICKER"
	wait_for 30 test -s "$STATE/t/pid"
	local owner=$LAST_SUPERVISOR d
	local -a sb=()
	for d in b1 b2; do
		mkdir -m 700 "$STATE/$d"
		"$CRYO" run --state-dir "$STATE/$d" --name t --store "s3://$BUCKET/eleven" --lease "$LEASE" \
			--lease-ttl 3 --standby -- "$TICKER" >"$STATE/$d.out" 2>"$STATE/$d.err" </dev/null &
		track_supervisor "$!"
		sb+=("$!")
	done
	for d in b1 b2; do
		wait_for 30 grep -q "standing by, waiting until its lease ends" "$STATE/$d.err"
	done
	lose_owner "$owner"
	wait_for 30 sh -c "test -s '$STATE/b1/t/pid' || test -s '$STATE/b2/t/pid'"
	# Past another TTL and poll: still one.
	sleep 5
	local running=0
	for d in b1 b2; do
		[ ! -s "$STATE/$d/t/pid" ] || running=$((running + 1))
	done
	[ "$running" -eq 1 ]
	kill -0 "${sb[0]}"
	kill -0 "${sb[1]}"
	# The one waiting says so in cryo status, and a stop ends its wait.
	local w=0
	[ -s "$STATE/b1/t/pid" ] && w=1
	d=b$((w + 1))
	run "$CRYO" status --state-dir "$STATE/$d" t
	assert_line --regexp "^  lease etcd://.*: waiting \(TTL 3s\), nothing published yet; held by the supervisor PID ${sb[1 - w]} on host"
	kill -TERM "${sb[w]}"
	wait_for 10 supervisor_gone "${sb[w]}"
	grep -q "^cryo: standby of 't' stopped before it took the lease on $LEASE$" "$STATE/$d.err"
}

@test "standby: an object put over a published generation (an upload of an owner that had lost its lease) is refused by its ETag, and the generation before is restored" {
	start_cryo t --store "s3://$BUCKET/twelve" --lease "$LEASE" --lease-ttl 3 -- "$TICKER" 0.2
	wait_for 30 test -s "$STATE/t/pid"
	local owner=$LAST_SUPERVISOR
	for _ in 1 2 3; do
		run "$CRYO" checkpoint t
		assert_success
	done
	wait_for 30 published_is twelve/t 3
	# Another history of the same workload, three generations long, under
	# another prefix: its generation 3 is a good archive, but not this one.
	mkdir -m 700 "$STATE/else"
	"$CRYO" run --state-dir "$STATE/else" --name t --store "s3://$BUCKET/twelve-else" -- "$TICKER" \
		>"$STATE/else.out" 2>"$STATE/else.err" </dev/null &
	track_supervisor "$!"
	local other=$!
	wait_for 30 test -s "$STATE/else/t/pid"
	for _ in 1 2 3; do
		run "$CRYO" checkpoint --state-dir "$STATE/else" t
		assert_success
	done
	wait_for 30 sh -c "'$TOOL' s3 ls '$BUCKET' twelve-else/t/ | grep -q gen-000000000003"
	kill -TERM "$other"
	wait_supervisor "$other" 30
	"$TOOL" s3 get "$BUCKET" twelve-else/t/gen-000000000003.cryo "$STATE/g3" >/dev/null
	start_standby twelve
	wait_for 30 grep -q "standing by, waiting until its lease ends" "$STATE/other.err"
	lose_owner "$owner"
	# As a fenced owner's upload landing late would.
	"$TOOL" s3 put "$BUCKET" twelve/t/gen-000000000003.cryo "$STATE/g3" >/dev/null
	wait_for 30 test -s "$STATE/other/t/pid"
	grep -q "generation 3 in the store is not the one published (its ETag is" "$STATE/other.err"
	grep -q "^cryo: 't' holds the lease on $LEASE: resuming from generation 2 (published: 3)$" "$STATE/other.err"
	[ ! -e "$(gen_file other/t 3)" ]
}
