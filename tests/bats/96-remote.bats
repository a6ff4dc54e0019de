#!/usr/bin/env bats
# remote/'s clients against the real services, started here from Debian's
# packages as a user would start them (scripts/lib/swift-s3: OpenStack Swift
# with its S3 API; scripts/lib/etcd-test: etcd), on free loopback ports, in a
# temporary directory, and stopped by their PIDs at the end. The clients are
# driven by tests/programs/remote-tool.c (one request per run). The services'
# start times are printed as TAP comments.

load helpers
load remote

# shellcheck source=scripts/lib/service.bash
. "$CRYO_TESTS/../scripts/lib/service.bash"

setup_file() {
	remote_up remote swift etcd
	"$TOOL" s3 mb cryo-e2e
}

teardown_file() {
	remote_down
}

setup() {
	setup_state
	remote_env
}

teardown() {
	# A test that froze a service lets it go again, whatever happened.
	[ -z "${SWIFT_S3_PROXY_PID:-}" ] || kill -CONT "$SWIFT_S3_PROXY_PID" 2>/dev/null || true
	[ -z "${ETCD_PID:-}" ] || kill -CONT "$ETCD_PID" 2>/dev/null || true
	rm -rf "$STATE"
}

now_ms() {
	echo $(($(date +%s%N) / 1000000))
}

@test "s3: a multipart object comes back byte for byte, its ETag that of its parts" {
	head -c $((12 * 1024 * 1024 + 12345)) /dev/urandom >"$STATE/big"
	run "$TOOL" --part-size 5242880 --multipart-from 5242880 s3 put cryo-e2e img/big "$STATE/big"
	assert_success
	# Three parts: 5 MiB, 5 MiB and the rest.
	[[ "$output" =~ ^[0-9a-f]{32}-3\ 12595257$ ]]
	local put=$output
	run "$TOOL" s3 head cryo-e2e img/big
	assert_success
	assert_output "$put"
	run "$TOOL" s3 get cryo-e2e img/big "$STATE/big.back" "${put%% *}"
	assert_success
	assert_output "$put"
	cmp "$STATE/big" "$STATE/big.back"

	# Below the threshold an object goes whole; its ETag is its MD5.
	head -c 100000 /dev/urandom >"$STATE/small"
	run "$TOOL" s3 put cryo-e2e "img/small one+é" "$STATE/small"
	assert_success
	assert_output "$(md5sum <"$STATE/small" | cut -d' ' -f1) 100000"
	run "$TOOL" s3 get cryo-e2e "img/small one+é" "$STATE/small.back"
	assert_success
	cmp "$STATE/small" "$STATE/small.back"
}

@test "s3: a large object streams through the client, never whole in its memory" {
	# 128 MiB: a multipart upload of 16 MiB parts, then a download.
	head -c $((128 * 1024 * 1024)) /dev/urandom >"$STATE/large"
	REMOTE_TOOL_PEAK_RSS=$STATE/put.rss run "$TOOL" s3 put cryo-e2e img/large "$STATE/large"
	assert_success
	[[ "$output" =~ ^[0-9a-f]{32}-8\ 134217728$ ]]
	REMOTE_TOOL_PEAK_RSS=$STATE/get.rss run "$TOOL" s3 get cryo-e2e img/large "$STATE/large.back"
	assert_success
	cmp "$STATE/large" "$STATE/large.back"
	rm -f "$STATE/large" "$STATE/large.back"
	"$TOOL" s3 rm cryo-e2e img/large
	echo "# peak RSS of the tool: $(cat "$STATE/put.rss") KiB putting 128 MiB, $(cat "$STATE/get.rss") KiB getting it" >&3
	# Less than a third of the object, with the sanitizers' own memory.
	[ "$(cat "$STATE/put.rss")" -lt $((40 * 1024)) ]
	[ "$(cat "$STATE/get.rss")" -lt $((40 * 1024)) ]
}

@test "s3: a listing by prefix finds exactly its keys, across continuation pages" {
	local i
	for i in 1 2 3 4 5; do
		"$TOOL" s3 put cryo-e2e "list/a/$i" /etc/hostname >/dev/null
	done
	"$TOOL" s3 put cryo-e2e list/b/1 /etc/hostname >/dev/null
	"$TOOL" s3 put cryo-e2e list/a-not-in-it /etc/hostname >/dev/null
	# Two keys a page: three requests, each going on where the last stopped.
	run "$TOOL" --list-page 2 s3 ls cryo-e2e list/a/
	assert_success
	assert_equal "$(cut -d' ' -f1 <<<"$output" | tr '\n' ' ')" "list/a/1 list/a/2 list/a/3 list/a/4 list/a/5 "
	run "$TOOL" s3 ls cryo-e2e list/
	assert_success
	assert_equal "${#lines[@]}" 7
	run "$TOOL" s3 ls cryo-e2e nothing/
	assert_success
	assert_output ""
}

@test "s3: a deleted object is gone, and deleting it again is no error" {
	"$TOOL" s3 put cryo-e2e del/x /etc/hostname >/dev/null
	"$TOOL" s3 put cryo-e2e del/y /etc/hostname >/dev/null
	run "$TOOL" s3 rm cryo-e2e del/x
	assert_success
	run "$TOOL" s3 head cryo-e2e del/x
	assert_failure 1
	assert_output "remote-tool: there is no object s3://cryo-e2e/del/x at $AWS_ENDPOINT_URL"
	run "$TOOL" s3 ls cryo-e2e del/
	assert_output --regexp '^del/y '
	assert_equal "${#lines[@]}" 1
	run "$TOOL" s3 rm cryo-e2e del/x
	assert_success
}

@test "s3: a wrong secret is one line naming the credentials" {
	AWS_SECRET_ACCESS_KEY=not-the-secret run "$TOOL" s3 put cryo-e2e creds/x /etc/hostname
	assert_failure 1
	assert_equal "${#lines[@]}" 1
	assert_output --partial "refused to put s3://cryo-e2e/creds/x (HTTP 403 SignatureDoesNotMatch"
	assert_output --partial "check the credentials of access key 'cryo:test' (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
	AWS_ACCESS_KEY_ID=cryo:nobody run "$TOOL" s3 ls cryo-e2e
	assert_failure 1
	assert_equal "${#lines[@]}" 1
	assert_output --partial "HTTP 403"
	assert_output --partial "access key 'cryo:nobody'"
	run "$TOOL" s3 ls cryo-e2e creds/
	assert_output ""
}

@test "s3: a missing bucket and a missing object are told apart" {
	run "$TOOL" s3 put no-such-bucket k /etc/hostname
	assert_failure 1
	assert_output "remote-tool: there is no bucket 'no-such-bucket' at $AWS_ENDPOINT_URL: create it, or name another in the store's URL"
	run "$TOOL" s3 ls no-such-bucket
	assert_failure 1
	assert_output --partial "there is no bucket 'no-such-bucket'"
	run "$TOOL" s3 get cryo-e2e missing/k "$STATE/out"
	assert_failure 1
	assert_output "remote-tool: there is no object s3://cryo-e2e/missing/k at $AWS_ENDPOINT_URL"
	# The store's error page went nowhere near the file.
	[ ! -s "$STATE/out" ]
}

@test "s3: an object changed underneath is refused by its ETag before a byte is written" {
	head -c 70000 /dev/urandom >"$STATE/v1"
	head -c 70000 /dev/urandom >"$STATE/v2"
	run "$TOOL" s3 put cryo-e2e changed/x "$STATE/v1"
	assert_success
	local etag1=${output%% *}
	run "$TOOL" s3 put cryo-e2e changed/x "$STATE/v2"
	assert_success
	local etag2=${output%% *}
	run "$TOOL" s3 get cryo-e2e changed/x "$STATE/out" "$etag1"
	assert_failure 1
	assert_equal "${#lines[@]}" 1
	assert_output "remote-tool: s3://cryo-e2e/changed/x changed in the store: its ETag is now $etag2, not $etag1 as expected; list it again for its current version"
	[ ! -s "$STATE/out" ]
	run "$TOOL" s3 get cryo-e2e changed/x "$STATE/out" "$etag2"
	assert_success
	cmp "$STATE/v2" "$STATE/out"
}

@test "s3: an object damaged in the store is detected by its MD5 on the way down" {
	head -c 50000 /dev/urandom >"$STATE/obj"
	run "$TOOL" s3 put cryo-e2e damaged/x "$STATE/obj"
	assert_success
	local etag=${output%% *} data
	# Swift keeps the object in a file of its own: flip the bits of one byte.
	data=$(find "$REMOTE_DIR/swift/srv" -name '*.data' -size 50000c -newer "$STATE/obj")
	[ -n "$data" ] && [ "$(wc -l <<<"$data")" = 1 ]
	cmp "$data" "$STATE/obj"
	local byte
	byte=$(od -An -tu1 -j1000 -N1 "$data")
	printf '%b' "\\0$(printf %03o $((byte ^ 255)))" | dd of="$data" bs=1 seek=1000 conv=notrunc status=none
	run cmp "$data" "$STATE/obj"
	assert_failure 1
	run "$TOOL" s3 get cryo-e2e damaged/x "$STATE/out"
	assert_failure 1
	assert_equal "${#lines[@]}" 1
	assert_output --regexp "^remote-tool: the bytes received for s3://cryo-e2e/damaged/x are not the store's \(their MD5 [0-9a-f]{32}, its ETag $etag\): damaged in the store or on the way$"
}

@test "s3: a stopped store is one line within the deadline; a store gone is one line at once" {
	"$TOOL" s3 put cryo-e2e frozen/x /etc/hostname >/dev/null
	kill -STOP "$SWIFT_S3_PROXY_PID"
	local t0
	t0=$(now_ms)
	run timeout 30 "$TOOL" --deadline-ms 2000 s3 head cryo-e2e frozen/x
	local took=$(($(now_ms) - t0))
	assert_failure 4
	assert_equal "${#lines[@]}" 1
	assert_output --partial "the object store at $AWS_ENDPOINT_URL did not answer within 2.000 s"
	assert_output --partial "check AWS_ENDPOINT_URL"
	echo "# a frozen store refused after $took ms (deadline 2000 ms)" >&3
	[ "$took" -lt 10000 ]
	# A download that stops mid-way: the low-speed deadline.
	t0=$(now_ms)
	run timeout 30 "$TOOL" --deadline-ms 2000 s3 get cryo-e2e frozen/x "$STATE/out"
	assert_failure 4
	assert_equal "${#lines[@]}" 1
	[ $(($(now_ms) - t0)) -lt 10000 ]
	kill -CONT "$SWIFT_S3_PROXY_PID"
	run "$TOOL" s3 head cryo-e2e frozen/x
	assert_success

	local port
	port=$(free_ports 1)
	AWS_ENDPOINT_URL=http://127.0.0.1:$port run timeout 30 "$TOOL" s3 ls cryo-e2e
	assert_failure 1
	assert_output --regexp "^remote-tool: cannot reach the object store at http://127.0.0.1:$port \(.*\): is it running\? check AWS_ENDPOINT_URL$"
}

@test "s3: credentials from a file only root can read; one others can read is refused" {
	local conf=$STATE/s3.conf
	printf 'endpoint = %s\naccess_key_id = %s\nsecret_access_key = %s\n' \
		"$AWS_ENDPOINT_URL" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$conf"
	chmod 600 "$conf"
	unset AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
	run "$TOOL" --config "$conf" s3 put cryo-e2e conf/x /etc/hostname
	assert_success
	chmod 644 "$conf"
	run "$TOOL" --config "$conf" s3 ls cryo-e2e conf/
	assert_failure 1
	assert_output "remote-tool: $conf holds credentials but others may read or change it (mode 0644): chmod 600 $conf"
	# Neither in the file nor in the environment: what to set.
	: >"$conf"
	chmod 600 "$conf"
	run "$TOOL" --config "$conf" s3 ls cryo-e2e
	assert_failure 1
	assert_output "remote-tool: no object store named: set AWS_ENDPOINT_URL or 'endpoint' in $conf"
	run "$TOOL" --config /dev/null s3 ls cryo-e2e
	assert_failure 1
	assert_output --partial "is not a regular file"
}

@test "etcd: only the lease holder's transaction publishes" {
	local l1 l2
	l1=$("$TOOL" etcd grant 10)
	l2=$("$TOOL" etcd grant 10)
	run "$TOOL" etcd acquire t1/owner host-a "$l1"
	assert_success
	# Asking again with the same lease is no error; with another, it is busy.
	run "$TOOL" etcd acquire t1/owner host-a "$l1"
	assert_success
	run "$TOOL" etcd acquire t1/owner host-b "$l2"
	assert_failure 2
	assert_output "remote-tool: 't1/owner' is held by lease $l1 ('host-a'), not by this client's lease $l2"
	run "$TOOL" etcd publish t1/owner "$l1" t1/published gen-1
	assert_success
	run "$TOOL" etcd publish t1/owner "$l2" t1/published gen-evil
	assert_failure 3
	assert_output "remote-tool: 't1/published' not published: 't1/owner' is held by lease $l1 ('host-a'), not by this client's lease $l2: this client does not own it (any more)"
	run "$TOOL" etcd get t1/published
	assert_output "gen-1 0"
	"$TOOL" etcd revoke "$l1"
	"$TOOL" etcd revoke "$l2"
}

@test "etcd: once the holder's lease is revoked, the other takes the key and the old holder cannot publish" {
	local l1 l2
	l1=$("$TOOL" etcd grant 10)
	l2=$("$TOOL" etcd grant 10)
	"$TOOL" etcd acquire t2/owner host-a "$l1"
	"$TOOL" etcd publish t2/owner "$l1" t2/published gen-1
	run "$TOOL" etcd revoke "$l1"
	assert_success
	run "$TOOL" etcd wait t2/owner host-b "$l2" 5000
	assert_success
	run "$TOOL" etcd get t2/owner
	assert_output "host-b $l2"
	run "$TOOL" etcd publish t2/owner "$l1" t2/published gen-2-stale
	assert_failure 3
	assert_output --partial "this client does not own it"
	run "$TOOL" etcd keepalive "$l1"
	assert_failure 3
	assert_output "remote-tool: lease $l1 has expired or was revoked (etcd renewed it to no TTL): this client no longer owns what it held"
	run "$TOOL" etcd revoke "$l1"
	assert_failure 3
	run "$TOOL" etcd publish t2/owner "$l2" t2/published gen-2
	assert_success
	run "$TOOL" etcd get t2/published
	assert_output "gen-2 0"
	"$TOOL" etcd revoke "$l2"
}

@test "etcd: once the holder's lease expires, a waiter takes the key and the old holder cannot publish" {
	local l1 l2 t0 took
	# The holder never renews its 4 s lease; the waiter's is etcd's shortest
	# (2 s), so it would expire first if the waiter did not renew it.
	l1=$("$TOOL" etcd grant 4)
	l2=$("$TOOL" etcd grant 2)
	"$TOOL" etcd acquire t3/owner host-a "$l1"
	# A waiter that gives up first names the holder.
	run "$TOOL" etcd wait t3/owner host-b "$l2" 500
	assert_failure 4
	assert_output --partial "'t3/owner' is held by lease $l1 ('host-a')"
	# This one keeps its own lease alive while it polls, past the holder's TTL.
	t0=$(now_ms)
	run "$TOOL" etcd wait t3/owner host-b "$l2" 15000
	took=$(($(now_ms) - t0))
	assert_success
	echo "# the waiter took the key $took ms after it began (holder's TTL 4 s)" >&3
	run "$TOOL" etcd get t3/owner
	assert_output "host-b $l2"
	run "$TOOL" etcd publish t3/owner "$l1" t3/published stale
	assert_failure 3
	run "$TOOL" etcd get t3/published
	assert_failure 1
	assert_output "remote-tool: etcd at $ETCD_ENDPOINT has no key 't3/published'"
	"$TOOL" etcd revoke "$l2"
}

@test "etcd: a stopped etcd is one line within the deadline; an etcd gone is one line at once" {
	local l t0 took port
	l=$("$TOOL" etcd grant 10)
	kill -STOP "$ETCD_PID"
	t0=$(now_ms)
	ETCD_DEADLINE_MS=1500 run timeout 30 "$TOOL" etcd keepalive "$l"
	took=$(($(now_ms) - t0))
	assert_failure 4
	assert_equal "${#lines[@]}" 1
	assert_output --partial "etcd at $ETCD_ENDPOINT did not answer within 1.500 s"
	echo "# a frozen etcd refused after $took ms (deadline 1500 ms)" >&3
	[ "$took" -lt 10000 ]
	kill -CONT "$ETCD_PID"
	run "$TOOL" etcd keepalive "$l"
	assert_success

	port=$(free_ports 1)
	ETCD_ENDPOINT=http://127.0.0.1:$port run timeout 30 "$TOOL" etcd grant 5
	assert_failure 1
	assert_output --regexp "^remote-tool: cannot reach etcd at http://127.0.0.1:$port \(.*\): is it running\? check the etcd address$"
	"$TOOL" etcd revoke "$l"
}
