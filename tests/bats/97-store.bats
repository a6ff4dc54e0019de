#!/usr/bin/env bats
# cryo run --store s3://BUCKET/PREFIX: every generation copied to a real
# S3-compatible store (OpenStack Swift's s3api, started here by
# scripts/lib/swift-s3 as in 96-remote, and stopped by its PIDs at the end)
# in the background; cryo images and cryo status show where each generation
# is and how far the store lags; retention applies to the store too.

load helpers
load remote

BUCKET=cryo-store

setup_file() {
	remote_up store swift
	"$TOOL" s3 mb "$BUCKET"
}

teardown_file() {
	remote_down
}

setup() {
	setup_state
	remote_env
	TICKER=$CRYO_TESTS/programs/ticker.py
}

teardown() {
	# A test that froze the store lets it go again, whatever happened.
	[ -z "${SWIFT_S3_PROXY_PID:-}" ] || kill -CONT "$SWIFT_S3_PROXY_PID" 2>/dev/null || true
	teardown_state
}

# The generations the store holds under PREFIX, one number a line (not
# the owner mark).
remote_gens() {
	"$TOOL" s3 ls "$BUCKET" "$1/" | sed -nE 's|^.*/gen-0*([0-9]+)\.cryo .*$|\1|p'
}

# The generations on this machine of workload NAME, one number a line.
local_gens() {
	find "$STATE/$1" -maxdepth 1 -name 'gen-*.cryo' -printf '%f\n' | sed -E 's/^gen-0*([0-9]+)\.cryo$/\1/' | sort -n
}

remote_count_is() {
	[ "$(remote_gens "$1" | wc -l)" -eq "$2" ]
}

status_matches() {
	"$CRYO" status "$1" | grep -qE -- "$2"
}

# Each generation of NAME in the store is byte for byte the local archive.
same_bytes() {
	local name=$1 prefix=$2 g
	for g in $(local_gens "$name"); do
		"$TOOL" s3 get "$BUCKET" "$prefix/gen-$(printf %012d "$g").cryo" "$STATE/back" >/dev/null
		cmp "$STATE/back" "$(gen_file "$name" "$g")"
	done
}

@test "store: every generation is copied to the store byte for byte; cryo images and cryo status show it" {
	start_cryo t --store "s3://$BUCKET/one" -- "$TICKER"
	wait_for 30 test -s "$STATE/t/pid"
	for _ in 1 2 3; do
		run "$CRYO" checkpoint t
		assert_success
	done
	wait_for 30 remote_count_is one/t 3
	same_bytes t one/t
	wait_for 30 status_matches t '^  store s3://cryo-store/one: up to date \(generation 3\)$'
	run "$CRYO" images t
	assert_success
	assert_line --regexp '^1 .* both +command +yes$'
	assert_line --regexp '^3 .* both +command +yes$'
	run "$CRYO" images --json t
	python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert [g["stored"] for g in d]==["both"]*3, d' "$output"
	run "$CRYO" status --json t
	python3 -c 'import json,sys; s=json.loads(sys.argv[1])["store"]; assert s["uploaded"]==3 and s["behind"]==0 and s["error"] is None, s' "$output"
}

@test "store: while the store does not answer, checkpoints go on and cryo status says how far behind and why; then the uploads catch up" {
	start_cryo t --store "s3://$BUCKET/two" -- "$TICKER"
	wait_for 30 test -s "$STATE/t/pid"
	run "$CRYO" checkpoint t
	assert_success
	wait_for 30 status_matches t 'up to date \(generation 1\)$'
	kill -STOP "$SWIFT_S3_PROXY_PID"
	# The checkpoints do not wait for the store (each request to it waits 10 s).
	run timeout 8 "$CRYO" checkpoint t
	assert_success
	run timeout 8 "$CRYO" checkpoint t
	assert_success
	run "$CRYO" images t
	assert_line --regexp '^1 .* both +command +yes$'
	assert_line --regexp '^3 .* local +command +yes$'
	wait_for 60 status_matches t '^  store s3://cryo-store/two: 2 generations behind \(newest here 3, in the store 1\); failing for [0-9]+s: .*did not answer within'
	run "$CRYO" status t
	[ "$(echo "$output" | grep -c '^  store ')" -eq 1 ]
	# Long enough that no checkpoint's wake is left over: what brings the
	# store up to date is the uploader's own retry.
	wait_for 90 status_matches t 'failing for ([3-9][0-9]|[0-9]{3,})s: '
	kill -CONT "$SWIFT_S3_PROXY_PID"
	wait_for 90 status_matches t 'up to date \(generation 3\)$'
	remote_count_is two/t 3
	same_bytes t two/t
	run "$CRYO" images t
	assert_line --regexp '^3 .* both +command +yes$'
}

@test "store: a generation pruned here is deleted from the store, but not a base that a kept generation needs" {
	# 1 is full, 2-9 build on it one after the other, 10 is full again and
	# 11-12 build on it: with --keep 1, 10-12 remain here (45-delta), and
	# so in the store, where 1-9 were copied first.
	run "$CRYO" run --name mh --keep 1 --store "s3://$BUCKET/three" -- "$CRYO_EXAMPLES/memhog" 16 12 10 100
	assert_success
	run local_gens mh
	assert_output "$(printf '10\n11\n12')"
	run remote_gens three/mh
	assert_output "$(printf '10\n11\n12')"
	same_bytes mh three/mh
}

@test "store: wrong credentials are one line in cryo status; the program and its checkpoints go on" {
	AWS_SECRET_ACCESS_KEY=not-the-secret start_cryo t --store "s3://$BUCKET/four" -- "$TICKER"
	wait_for 30 test -s "$STATE/t/pid"
	run "$CRYO" checkpoint t
	assert_success
	wait_for 30 status_matches t "^  store s3://cryo-store/four: 1 generation behind \(newest here 1, in the store 0\); failing for [0-9]+s: .*check the credentials of access key 'cryo:test'"
	run "$CRYO" status --json t
	python3 -c 'import json,sys; s=json.loads(sys.argv[1])["store"]; assert s["behind"]==1 and "credentials" in s["error"] and "\n" not in s["error"], s' "$output"
	run "$CRYO" images t
	assert_line --regexp '^1 .* local +command +yes$'
	# Nothing of it in the store.
	remote_count_is four/t 0
	grep -q . "$STATE/t.out"
}

@test "store: without credentials cryo run refuses to start, in one line naming what to set" {
	unset AWS_SECRET_ACCESS_KEY
	run "$CRYO" run --name t --store "s3://$BUCKET/five" -- true
	assert_failure
	assert_output --regexp "^cryo: invalid --store 's3://cryo-store/five': .*AWS_SECRET_ACCESS_KEY"
	[ "${#lines[@]}" -eq 1 ]
	[ ! -e "$STATE/t" ] || [ -z "$(local_gens t)" ]
}

@test "store: another machine's workload of the same name and prefix puts and deletes nothing there" {
	start_cryo t --store "s3://$BUCKET/six" -- "$TICKER"
	wait_for 30 test -s "$STATE/t/pid"
	for _ in 1 2; do
		run "$CRYO" checkpoint t
		assert_success
	done
	wait_for 30 remote_count_is six/t 2
	# Another machine: another state directory, the same name and store,
	# and a --keep that would prune the first one's generations there.
	local other=$STATE/other
	mkdir -m 700 "$other"
	"$CRYO" run --state-dir "$other" --name t --keep 1 --store "s3://$BUCKET/six" -- "$TICKER" \
		>"$STATE/other.out" 2>"$STATE/other.err" </dev/null &
	track_supervisor "$!"
	wait_for 30 test -s "$other/t/pid"
	for _ in 1 2 3; do
		run "$CRYO" checkpoint --state-dir "$other" t
		assert_success
	done
	wait_for 30 sh -c "'$CRYO' status --state-dir '$other' t | grep -q 'holds another workload.s generations'"
	remote_count_is six/t 2
	same_bytes t six/t
	# The first one goes on uploading there.
	run "$CRYO" checkpoint t
	assert_success
	wait_for 30 remote_count_is six/t 3
	same_bytes t six/t
}

# Machine A (state directory $STATE/a) runs ticker workload t with --store
# s3://$BUCKET/PREFIX and takes N checkpoints, each in the store; then it is
# lost: its supervisor and program killed outright, its disk gone.
lose_machine_after() {
	local prefix=$1 n=$2
	mkdir -m 700 "$STATE/a"
	"$CRYO" run --state-dir "$STATE/a" --name t --store "s3://$BUCKET/$prefix" -- "$TICKER" \
		>"$STATE/a.out" 2>"$STATE/a.err" </dev/null &
	local sup=$!
	track_supervisor "$sup"
	wait_for 30 test -s "$STATE/a/t/pid"
	for _ in $(seq "$n"); do
		sleep 0.3
		run "$CRYO" checkpoint --state-dir "$STATE/a" t
		assert_success
	done
	wait_for 30 remote_count_is "$prefix/t" "$n"
	local prog
	prog=$(cat "$STATE/a/t/pid")
	kill -KILL "$sup"
	wait_for 10 sh -c "! kill -0 $prog"
	rm -rf "$STATE/a"
}

# Restores t on "machine B" (state directory $STATE/b) from the store, in
# the background; its output in $STATE/b.out and b.err.
restore_on_b() {
	[ -d "$STATE/b" ] || mkdir -m 700 "$STATE/b"
	"$CRYO" restore --state-dir "$STATE/b" --store "s3://$BUCKET/$1" t \
		>"$STATE/b.out" 2>"$STATE/b.err" </dev/null &
	LAST_SUPERVISOR=$!
	track_supervisor "$!"
}

@test "store: a machine lost: cryo restore --store elsewhere fetches the newest generation and its bases, resumes the program and uploads from then on" {
	lose_machine_after seven 3
	restore_on_b seven
	wait_for 60 test -s "$STATE/b/t/pid"
	wait_for 30 grep -q "restored 't' from generation 3" "$STATE/b.err"
	grep -q "fetched generation 3 of 't' from s3://$BUCKET/seven" "$STATE/b.err"
	# The program carries on from its count, not from 1.
	wait_for 30 test -s "$STATE/b.out"
	[ "$(head -n 1 "$STATE/b.out")" -gt 1 ]
	# The workload is this machine's now: its next generation goes to the store.
	run "$CRYO" checkpoint --state-dir "$STATE/b" t
	assert_success
	assert_output --partial 'checkpoint 4 of '
	wait_for 30 sh -c "'$TOOL' s3 ls '$BUCKET' seven/t/ | grep -q 'gen-000000000004.cryo'"
	"$TOOL" s3 get "$BUCKET" seven/t/gen-000000000004.cryo "$STATE/back" >/dev/null
	cmp "$STATE/back" "$STATE/b/t/gen-000000000004.cryo"
}

@test "store: a damaged or missing object in the store: the generation before is restored, saying why" {
	lose_machine_after eight 3
	# Generation 3 in the store is damaged (one byte in its body).
	local key3=eight/t/gen-000000000003.cryo key2=eight/t/gen-000000000002.cryo
	"$TOOL" s3 get "$BUCKET" "$key3" "$STATE/g3.good" >/dev/null
	cp "$STATE/g3.good" "$STATE/g3"
	flip_byte "$STATE/g3"
	"$TOOL" s3 put "$BUCKET" "$key3" "$STATE/g3" >/dev/null
	restore_on_b eight
	wait_for 60 grep -q "restored 't' from generation 2" "$STATE/b.err"
	grep -q "generation 3 of 't' in s3://$BUCKET/eight cannot be restored (generation 3 in the store is damaged" "$STATE/b.err"
	[ ! -e "$STATE/b/t/gen-000000000003.cryo" ]
	kill -TERM "$LAST_SUPERVISOR"
	wait_supervisor "$LAST_SUPERVISOR" 30
	rm -rf "$STATE/b"
	# Generation 3 is whole again but generation 2 is gone from the store:
	# neither 2 nor 3 (built on 2) can be restored.
	"$TOOL" s3 put "$BUCKET" "$key3" "$STATE/g3.good" >/dev/null
	"$TOOL" s3 rm "$BUCKET" "$key2"
	restore_on_b eight
	wait_for 60 grep -q "restored 't' from generation 1" "$STATE/b.err"
	grep -q "generation 3 of 't' in s3://$BUCKET/eight cannot be restored (generation 2 is not in the store)" "$STATE/b.err"
	[ ! -e "$STATE/b/t/gen-000000000003.cryo" ]
}

@test "store: cryo restore --store with the store down and nothing here fails in one line; so does an empty store" {
	kill -STOP "$SWIFT_S3_PROXY_PID"
	mkdir -m 700 "$STATE/b"
	run timeout 60 "$CRYO" restore --state-dir "$STATE/b" --store "s3://$BUCKET/nine" t
	assert_failure 1
	assert_output --regexp "cannot fetch 't' from s3://$BUCKET/nine: cannot list .*did not answer"
	kill -CONT "$SWIFT_S3_PROXY_PID"
	run timeout 60 "$CRYO" restore --state-dir "$STATE/b" --store "s3://$BUCKET/nine" t
	assert_failure 1
	assert_output --partial "s3://$BUCKET/nine holds no generation of 't'"
}
