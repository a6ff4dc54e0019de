#!/usr/bin/env bats
# cryo migrate / cryo serve between two "hosts" that are network namespaces
# made here (A at 10.77.0.1 and fd77::1, B at 10.77.0.2 and fd77::2, each with
# a bridge br0), and a client namespace (10.77.0.3, fd77::3), all joined by a
# switch namespace's bridge.
# Workloads get their own address (cryo run --net) on A's br0 and move to B.

load helpers

setup_file() {
	export NS="cm$$"
	ip netns add "${NS}sw"
	ip -n "${NS}sw" link add sw0 type bridge
	ip -n "${NS}sw" link set sw0 up
	local h n=1
	for h in a b c; do
		ip netns add "${NS}$h"
		ip link add "${NS}$h-up" type veth peer name "${NS}$h-sw"
		ip link set "${NS}$h-up" netns "${NS}$h"
		ip link set "${NS}$h-sw" netns "${NS}sw"
		ip -n "${NS}sw" link set "${NS}$h-sw" master sw0 up
		ip -n "${NS}$h" link set lo up
	done
	# The hosts' uplinks get addresses above those of cryo's host ends
	# (fe:...), which a bridge would otherwise take as its own while a
	# workload is attached, and give back when it leaves.
	ip -n "${NS}a" link set "${NS}a-up" address fe:ff:ff:ff:ff:fa
	ip -n "${NS}b" link set "${NS}b-up" address fe:ff:ff:ff:ff:fb
	for h in a b; do
		ip -n "${NS}$h" link add br0 type bridge
		ip -n "${NS}$h" link set "${NS}$h-up" master br0 up
		ip -n "${NS}$h" addr add "10.77.0.$n/24" dev br0
		ip -n "${NS}$h" addr add "fd77::$n/64" dev br0 nodad
		ip -n "${NS}$h" link set br0 up
		n=$((n + 1))
	done
	ip -n "${NS}c" addr add 10.77.0.3/24 dev "${NS}c-up"
	ip -n "${NS}c" addr add fd77::3/64 dev "${NS}c-up" nodad
	ip -n "${NS}c" link set "${NS}c-up" up
}

teardown_file() {
	local h
	for h in a b c sw; do
		ip netns del "${NS}$h" 2>/dev/null || true
	done
}

# nsenter execs the command (no fork for a network namespace), so $! of a
# backgrounded "nsenter ... &" is the command's own PID.
inA() { nsenter --net="/run/netns/${NS}a" "$@"; }
inB() { nsenter --net="/run/netns/${NS}b" "$@"; }
inC() { nsenter --net="/run/netns/${NS}c" "$@"; }

setup() {
	setup_state
	A=$STATE/a
	B=$STATE/b
	mkdir -p "$A" "$B"
	KEY=$STATE/key
	head -c 32 /dev/urandom >"$KEY"
	chmod 600 "$KEY"
	HELPERS=()
	start_serve "$B" 7070
}

# Ends what arrived on B (its supervisors are the serve's children), then
# everything this test started.
teardown() {
	local d w
	for d in "$A" "$B" "$STATE/b2" "$STATE/small"; do
		for w in "$d"/*/control.sock; do
			[ -S "$w" ] || continue
			timeout 20 "$CRYO" stop --state-dir "$d" "$(basename "$(dirname "$w")")" \
				>/dev/null 2>&1 || true
		done
	done
	for p in "${HELPERS[@]}"; do
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	# A failed test shows what the supervisors and the serves logged.
	if [ -z "${BATS_TEST_COMPLETED:-}" ]; then
		for f in "$STATE"/*.err "$STATE"/*.out "$A"/*/output.log "$B"/*/output.log; do
			[ -f "$f" ] && { echo "--- $f"; tail -n 30 "$f"; }
		done >&2
	fi
	# Sanitizer reports from the supervisors that arrived on B.
	local bad=0
	if grep -l -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$B"/*/output.log 2>/dev/null; then
		cat "$B"/*/output.log >&2
		bad=1
	fi
	if mountpoint -q "$STATE/small" 2>/dev/null; then umount "$STATE/small"; fi
	teardown_state
	return "$bad"
}

# Makes teardown end PID (started by the test itself).
track_helper() {
	HELPERS+=("$1")
}

# start_serve STATE_DIR PORT [KEY [OPTIONS...]]: a cryo serve on B that lets
# workloads attach to br0 (environment: $SERVE_ENV); its PID in $SERVE_PID.
start_serve() {
	local log=$STATE/serve-$2.err
	# shellcheck disable=SC2086  # SERVE_ENV is a list of VAR=value words
	env ${SERVE_ENV:-} nsenter --net="/run/netns/${NS}b" "$CRYO" serve --listen "10.77.0.2:$2" \
		--key-file "${3:-$KEY}" --state-dir "$1" --bridge br0 "${@:4}" >"$log" 2>&1 </dev/null 3>&- &
	SERVE_PID=$!
	track_helper "$SERVE_PID"
	wait_for 10 grep -q "serving migrations" "$log"
}

# start_in_a NAME ARGS...: cryo run on A.
# With A_OWN_DISK=SIZE, cryo run runs in a mount namespace of its own where
# $DATA is an empty tmpfs of SIZE: A's own disk there.
start_in_a() {
	local name=$1 disk=()
	shift
	if [ -n "${A_OWN_DISK:-}" ]; then
		# shellcheck disable=SC2016  # the inner shell expands them
		disk=(unshare --mount --propagation slave sh -ec
			'mount -t tmpfs -o "size=$1" tmpfs "$2"; shift 2; exec "$@"' sh "$A_OWN_DISK" "$DATA")
	fi
	"${disk[@]}" nsenter --net="/run/netns/${NS}a" "$CRYO" run --state-dir "$A" --name "$name" "$@" \
		>"$STATE/$name.out" 2>"$STATE/$name.err" </dev/null 3>&- &
	track_supervisor "$!"
	A_SUPERVISOR=$!
}

# migrate NAME [PORT [KEY [OPTIONS...]]]
migrate() {
	inA "$CRYO" migrate --state-dir "$A" "$1" --to "10.77.0.2:${2:-7070}" --key-file "${3:-$KEY}" \
		"${@:4}"
}

b_pid() { cat "$B/$1/pid" 2>/dev/null; }
a_pid() { cat "$A/$1/pid" 2>/dev/null; }
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# A client in C that sends a request every 5 ms for SECONDS over one
# connection to ADDR:PORT, checking every reply; its pid in $CLIENT.
start_client() {
	nsenter --net="/run/netns/${NS}c" timeout 60 python3 "$CRYO_TESTS/programs/client.py" \
		"$2" 0.005 "$3" "$1" >"$STATE/client.out" 2>&1 3>&- &
	CLIENT=$!
	track_helper "$CLIENT"
}

# Migrates a server while the client talks to it, then checks everything the
# issue asks of the move.
migrate_server_under_load() {
	local name=$1 port=$2
	start_client 10.77.0.50 "$port" 5
	sleep 1.5
	if [ "${3:-}" = json ]; then
		run migrate "$name" 7070 "$KEY" --json
		assert_success
		# Each phase with its duration, then the result.
		assert_line --regexp '^\{"event":"phase","phase":"preflight","ms":[0-9.]+\}$'
		assert_line --regexp '^\{"ok":true,"to":"10.77.0.2:7070","frozen_ms":[0-9.]+,.*"phases":\{"connect":[0-9.]+,"preflight":[0-9.]+,"dump":[0-9.]+,"transfer":[0-9.]+,"restore":[0-9.]+\}\}$'
	else
		# On a terminal: a progress bar for the transfer.
		run script -qec "nsenter --net=/run/netns/${NS}a $CRYO migrate --state-dir $A $name --to 10.77.0.2:7070 --key-file $KEY" /dev/null
		assert_success
		assert_output --partial "transfer   ["
		assert_output --partial "'$name' moved to 10.77.0.2:7070: frozen"
	fi
	# The client saw every reply, in order, none twice: the count runs on.
	wait "$CLIENT"
	run cat "$STATE/client.out"
	assert_output --regexp '^ok [0-9]+ 1 [0-9]+$'
	# CRIU dumped the connection to move it, and locked nothing for it:
	# the workload's namespace was off the network (no iptables, no nft).
	grep -q 'Dumping TCP connection' "$A/$name/criu-dump.log"
	assert_equal "$(grep -c -e 'Running iptables' -e 'Running nftables' "$A/$name/criu-dump.log")" 0
	# Nothing runs on A any more, and A says where it went.
	run "$CRYO" status --state-dir "$A" --json "$name"
	assert_output --partial '"state":"migrated"'
	assert_output --partial '"moved_to":"10.77.0.2:7070"'
	run ip -n "${NS}a" -o link show
	refute_output --partial cryo-
	assert_equal "$(grep -c "'$name' moved to 10.77.0.2:7070 (frozen" "$STATE/$name.err")" 1
	# cryo run on A ends with 0: its workload moved away (cryo-run(1),
	# EXIT STATUS).
	wait_supervisor "$A_SUPERVISOR" 30
	assert_equal "$status" 0
	# B supervises it now.
	run "$CRYO" status --state-dir "$B" --json "$name"
	assert_output --partial '"state":"running"'
	local pid
	pid=$(b_pid "$name")
	alive "$pid"
	# A crash there is followed by a restore there.
	kill -KILL "$pid"
	wait_for 30 count_at_least 2 "restored '$name'" "$B/$name/output.log"
	run inC timeout 20 python3 "$CRYO_TESTS/programs/client.py" "$port" 0.01 0.5 10.77.0.50
	assert_success
}

# br0_mac HOST [BRIDGE]: the bridge's MAC address.
br0_mac() { ip -n "${NS}$1" -o link show "${2:-br0}" | grep -o 'link/ether [0-9a-f:]*'; }

@test "migrate: an epoll echo server moves with its address and a busy connection, then restores on B after kill -9" {
	local mac_a mac_b
	mac_a=$(br0_mac a)
	mac_b=$(br0_mac b)
	start_in_a echo --net 10.77.0.50/24 --bridge br0 -- \
		"$CRYO_TEST_PROGRAMS/echo-counter" 0.0.0.0 8000
	wait_for 10 grep -q listening "$STATE/echo.out"
	migrate_server_under_load echo 8000 json
	# The hosts' bridges kept their addresses as the workload came and went.
	assert_equal "$(br0_mac a)" "$mac_a"
	assert_equal "$(br0_mac b)" "$mac_b"
}

@test "migrate: a python3 asyncio server moves with a busy connection" {
	start_in_a aserver --net 10.77.0.50/24 --bridge br0 -- \
		python3 "$CRYO_TESTS/programs/asyncio-server.py" 8001 0.0.0.0
	wait_for 20 grep -q listening "$STATE/aserver.out"
	migrate_server_under_load aserver 8001
}

@test "migrate: the workload's neighbour entries go with it: on B it reaches its client without asking the segment first" {
	start_in_a echo --net 10.77.0.50/24 --bridge br0 -- \
		"$CRYO_TEST_PROGRAMS/echo-counter" 0.0.0.0 8000
	wait_for 10 grep -q listening "$STATE/echo.out"
	start_client 10.77.0.50 8000 4
	sleep 1
	local mac_c
	mac_c=$(ip -n "${NS}c" -o link show "${NS}c-up" | grep -o 'link/ether [0-9a-f:]*')
	run nsenter --net="/proc/$(a_pid echo)/ns/net" ip neigh show 10.77.0.3 dev eth0
	assert_output --partial "lladdr ${mac_c#link/ether }"
	run migrate echo
	assert_success
	wait_for 10 grep -q "'echo' arrived by migration and runs" "$B/echo/output.log"
	# Right after the move the entry for the client holds its address, and
	# no request was ever sent for it (a resolution, the first request of
	# which went out while the workload was still off the network, counts
	# its probes and leaves it INCOMPLETE for a second).
	run nsenter --net="/proc/$(b_pid echo)/ns/net" ip -s neigh show 10.77.0.3 dev eth0
	assert_output --partial "lladdr ${mac_c#link/ether }"
	assert_output --partial "probes 0"
	refute_output --partial INCOMPLETE
	refute_output --partial FAILED
	wait "$CLIENT"
	run cat "$STATE/client.out"
	assert_output --regexp '^ok [0-9]+ 1 [0-9]+$'
}

@test "migrate --precopy: a whole image first, then only what changed while frozen" {
	start_in_a echo --net 10.77.0.50/24 --bridge br0 -- \
		"$CRYO_TEST_PROGRAMS/echo-counter" 0.0.0.0 8000
	wait_for 10 grep -q listening "$STATE/echo.out"
	start_client 10.77.0.50 8000 5
	sleep 1
	run migrate echo 7070 "$KEY" --precopy --json
	assert_success
	assert_line --regexp '^\{"event":"phase","phase":"precopy","ms":[0-9.]+\}$'
	assert_line --regexp '^\{"ok":true,.*"phases":\{"connect":[0-9.]+,"preflight":[0-9.]+,"precopy":[0-9.]+,"dump":[0-9.]+,"transfer":[0-9.]+,"restore":[0-9.]+\}\}$'
	wait "$CLIENT"
	run cat "$STATE/client.out"
	assert_output --regexp '^ok [0-9]+ 1 [0-9]+$'
	# B holds the whole image and the one built on it.
	run "$CRYO" images --state-dir "$B" echo
	assert_line --regexp '^1 .* migrate +yes$'
	assert_line --regexp '^2 .* migrate +yes$'
	run "$CRYO" inspect --state-dir "$B" --json echo@2
	assert_output --partial '"base":"1"'
	# It says where the program worked, read before the dump ended it.
	assert_output --regexp '"cwd":"/[^"]*"'
	# A crash there restores the generation built on the pre-copied one.
	kill -KILL "$(b_pid echo)"
	wait_for 30 count_at_least 2 "restored 'echo' from generation 2" "$B/echo/output.log"
	run inC timeout 20 python3 "$CRYO_TESTS/programs/client.py" 8000 0.01 0.5 10.77.0.50
	assert_success
}

@test "migrate: an IPv6 address moves with a busy connection, then restores on B after kill -9" {
	start_in_a echo6 --net fd77::50/64 --bridge br0 -- "$CRYO_TEST_PROGRAMS/echo-counter" :: 8000
	wait_for 10 grep -q listening "$STATE/echo6.out"
	# The migration itself goes over IPv6 too, to a second serve on B.
	nsenter --net="/run/netns/${NS}b" "$CRYO" serve --listen "[fd77::2]:7076" \
		--key-file "$KEY" --state-dir "$B" --bridge br0 >"$STATE/serve6.err" 2>&1 </dev/null 3>&- &
	track_helper "$!"
	wait_for 10 grep -q "serving migrations" "$STATE/serve6.err"
	start_client fd77::50 8000 5
	sleep 1.5
	run inA "$CRYO" migrate --state-dir "$A" echo6 --to "[fd77::2]:7076" --key-file "$KEY"
	assert_success
	wait "$CLIENT"
	run cat "$STATE/client.out"
	assert_output --regexp '^ok [0-9]+ 1 [0-9]+$'
	run "$CRYO" inspect --state-dir "$B" --json echo6
	assert_output --partial 'fd77::50/64'
	# Its neighbour advertisements went out, on A at the start and on B.
	run cat "$STATE/echo6.err" "$B/echo6/output.log"
	refute_output --partial "neighbour advertisement"
	kill -KILL "$(b_pid echo6)"
	wait_for 30 count_at_least 2 "restored 'echo6'" "$B/echo6/output.log"
	run inC timeout 20 python3 "$CRYO_TESTS/programs/client.py" 8000 0.01 0.5 fd77::50
	assert_success
}

@test "migrate: redis with 100k keys; a connection opened before the move works after it" {
	start_in_a redis --net 10.77.0.51/24 --bridge br0 -- redis-server --port 6379 \
		--bind 0.0.0.0 --protected-mode no --save '' --appendonly no --daemonize no \
		--loglevel warning
	rc() { inC redis-cli -h 10.77.0.51 "$@"; }
	up() { [ "$(rc ping)" = PONG ]; }
	wait_for 30 up
	seq 1 100000 | awk '{print "SET key:" $1 " value-" $1}' | rc --pipe >/dev/null
	assert_equal "$(rc dbsize)" 100000
	nsenter --net="/run/netns/${NS}c" timeout 90 python3 \
		"$CRYO_TESTS/programs/held-conn.py" 10.77.0.51 6379 "$STATE/ready" "$STATE/go" \
		"GET key:77" DBSIZE >"$STATE/held.out" 2>&1 3>&- &
	local held=$!
	track_helper "$held"
	wait_for 10 test -e "$STATE/ready"
	run migrate redis
	assert_success
	touch "$STATE/go"
	wait "$held"
	run cat "$STATE/held.out"
	assert_output "$(printf '+PONG\nvalue-77\n:100000')"
	assert_equal "$(rc dbsize)" 100000
	assert_equal "$(rc get key:99999)" value-99999
	alive "$(b_pid redis)"
}

@test "migrate: a wrong key is refused before anything is paused" {
	start_in_a echo --net 10.77.0.50/24 --bridge br0 -- \
		"$CRYO_TEST_PROGRAMS/echo-counter" 0.0.0.0 8000
	wait_for 10 grep -q listening "$STATE/echo.out"
	local pid
	pid=$(a_pid echo)
	head -c 32 /dev/urandom >"$STATE/other-key"
	chmod 600 "$STATE/other-key"
	run migrate echo 7070 "$STATE/other-key"
	assert_failure
	assert_output --partial "does not hold the same key"
	assert_output --partial "was not paused"
	assert_equal "$(a_pid echo)" "$pid"
	run inC timeout 20 python3 "$CRYO_TESTS/programs/client.py" 8000 0.01 0.3 10.77.0.50
	assert_success
	[ ! -e "$B/echo/pid" ]
}

@test "migrate: a program whose file differs on the target is refused before it is paused" {
	# The hosts share a file system: a bind mount over the program's path
	# shows the target (and anyone who looks now) another version.
	mkdir "$STATE/bin"
	cp "$CRYO_TEST_PROGRAMS/echo-counter" "$STATE/bin/server"
	start_in_a echo --net 10.77.0.50/24 --bridge br0 -- "$STATE/bin/server" 0.0.0.0 8000
	wait_for 10 grep -q listening "$STATE/echo.out"
	cp "$STATE/bin/server" "$STATE/bin/new" && printf x >>"$STATE/bin/new"
	mount --bind "$STATE/bin/new" "$STATE/bin/server"
	run migrate echo
	umount "$STATE/bin/server"
	assert_failure
	assert_output --partial "the target refused: '$STATE/bin/server' differs here from the source's copy"
	assert_output --partial "was not paused"
	alive "$(a_pid echo)"
}

@test "run --net without --bridge: a routed address, torn down with the workload" {
	start_in_a routed --net 10.88.0.5/32 -- "$CRYO_TEST_PROGRAMS/echo-counter" 0.0.0.0 8002
	wait_for 10 grep -q listening "$STATE/routed.out"
	# Host A reaches it through the host route and proxy ARP.
	run inA ip route get 10.88.0.5
	assert_output --partial "dev cryo-"
	run inA timeout 20 python3 "$CRYO_TESTS/programs/client.py" 8002 0.01 0.3 10.88.0.5
	assert_success
	"$CRYO" stop --state-dir "$A" routed
	wait_for 10 bash -c "! ip -n ${NS}a -o link show | grep -q cryo-"
}

@test "run --net --bridge: a bridge with no other port keeps its address as workloads come and go" {
	ip -n "${NS}a" link add br9 type bridge
	ip -n "${NS}a" link set br9 up
	local mac
	mac=$(br0_mac a br9)
	start_in_a lone --net 10.99.0.5/24 --bridge br9 -- "$CRYO_TEST_PROGRAMS/echo-counter" 0.0.0.0 8004
	wait_for 10 grep -q listening "$STATE/lone.out"
	assert_equal "$(br0_mac a br9)" "$mac"
	"$CRYO" stop --state-dir "$A" lone
	wait_for 10 bash -c "! ip -n ${NS}a -o link show | grep -q cryo-"
	assert_equal "$(br0_mac a br9)" "$mac"
	ip -n "${NS}a" link del br9
}

@test "run --net without --bridge: a routed IPv6 address, torn down with the workload" {
	start_in_a routed6 --net fd88::5/128 -- "$CRYO_TEST_PROGRAMS/echo-counter" :: 8003
	wait_for 10 grep -q listening "$STATE/routed6.out"
	# Host A reaches it through the host route; it answers through fe80::1.
	run inA ip -6 route get fd88::5
	assert_output --partial "dev cryo-"
	run inA timeout 20 python3 "$CRYO_TESTS/programs/client.py" 8003 0.01 0.3 fd88::5
	assert_success
	"$CRYO" stop --state-dir "$A" routed6
	wait_for 10 bash -c "! ip -n ${NS}a -o link show | grep -q cryo-"
}

@test "migrate: TCP connections without --net are refused before the program is paused" {
	start_in_a plain -- "$CRYO_TEST_PROGRAMS/echo-counter" 127.0.0.1 8003
	wait_for 10 grep -q listening "$STATE/plain.out"
	nsenter --net="/run/netns/${NS}a" timeout 60 python3 "$CRYO_TESTS/programs/client.py" \
		8003 0.01 8 127.0.0.1 >"$STATE/client.out" 2>&1 3>&- &
	local client=$!
	track_helper "$client"
	sleep 1
	run migrate plain
	assert_failure
	assert_output --partial "holds 1 open TCP connection and its address cannot move with it"
	assert_output --partial "was not paused"
	wait "$client"
	run cat "$STATE/client.out"
	assert_output --regexp '^ok '
}

@test "migrate: a program without --net and without connections moves" {
	start_in_a counter -- "$CRYO_EXAMPLES/counter" 100000 0 20
	wait_for 10 grep -q '^step 5$' "$STATE/counter.out"
	run migrate counter
	assert_success
	# It counts on there, from where it was.
	wait_for 20 grep -q '^step' "$B/counter/output.log"
	local last first
	last=$(grep '^step' "$STATE/counter.out" | tail -1 | cut -d' ' -f2)
	first=$(grep '^step' "$B/counter/output.log" | head -1 | cut -d' ' -f2)
	assert_equal "$first" "$((last + 1))"
	# A's pid file went with the program: the PID there is no longer its.
	[ ! -e "$A/counter/pid" ]
	alive "$(b_pid counter)"
}

@test "migrate: --files-skip travels with the program: the skipped file is not carried, and the target's checkpoints leave it out too" {
	local data=$STATE/data
	mkdir -p "$data/cache"
	start_in_a hf --files-skip "$data/cache" -- "$CRYO_TESTS/programs/hold-files.py" \
		"$data/cache/scratch" "$data/db"
	wait_for 10 grep -q '^holding 2 files' "$STATE/hf.out"
	run migrate hf
	assert_success
	wait_for 20 alive "$(b_pid hf)"
	run sh -c "'$CRYO' inspect --state-dir '$B' --json hf | jq -r '.held_files[].path'"
	assert_success
	assert_output "$data/db"
	run "$CRYO" checkpoint --state-dir "$B" hf
	assert_success
	run sh -c "'$CRYO' inspect --state-dir '$B' --json hf | jq -r '.manifest.generation, .held_files[].path'"
	assert_success
	assert_line --index 1 "$data/db"
	assert_equal "${#lines[@]}" 2
	[ "${lines[0]}" -gt 1 ]
}

@test "migrate: a program holding a file unlinked while open with another hard link moves with what the file held; no link_remap left" {
	local dir=$STATE/files
	mkdir "$dir"
	start_in_a ul -- "$CRYO_TESTS/programs/unlinked-holder.py" "$dir" "kept text"
	wait_for 10 count_at_least 2 '^[0-9]' "$STATE/ul.out"
	touch "$dir/go"
	wait_for 10 grep -q '^unlinked' "$STATE/ul.out"
	run migrate ul
	assert_success
	wait_for 20 grep -q '^[0-9]* kept text$' "$B/ul/output.log"
	alive "$(b_pid ul)"
	run ls -A "$dir"
	assert_output "$(printf 'data.link\ngo')"
	# Writes through its fd reach its own file on B, not the other link.
	touch "$dir/poke"
	wait_for 10 grep -q '^[0-9]* POKEDtext$' "$B/ul/output.log"
	assert_equal "$(cat "$dir/data.link")" "kept text"
}

# ---- files the program holds open for writing travel with it ----

# start_serve_own_disk PORT SIZE: a cryo serve on B (state in $B) in a mount
# namespace of its own where $DATA is an empty tmpfs of SIZE: the simulated
# hosts share one file system, and this target must not find the source's
# files there. Its mounts are slaves of the host's, as a real host's would
# share them (the restored program's mounts are made slaves of its host's
# again, and CRIU cannot copy sharing from a private mount). Its PID in
# $SERVE_PID.
start_serve_own_disk() {
	local log=$STATE/serve-$1.err
	# shellcheck disable=SC2016  # the inner shell expands them
	unshare --mount --propagation slave sh -ec \
		'mount -t tmpfs -o "size=$1" tmpfs "$2"; shift 2; exec "$@"' sh "$2" "$DATA" \
		nsenter --net="/run/netns/${NS}b" "$CRYO" serve --listen "10.77.0.2:$1" \
		--key-file "$KEY" --state-dir "$B" --bridge br0 >"$log" 2>&1 </dev/null 3>&- &
	SERVE_PID=$!
	track_helper "$SERVE_PID"
	wait_for 10 grep -q "serving migrations" "$log"
}

# Runs a command in that serve's mount namespace: what B's disk holds.
on_b_disk() { nsenter --mount="/proc/$SERVE_PID/ns/mnt" "$@"; }

# start_sqlite NAME ADDRESS DB [JOURNAL_MODE [OPTIONS...]]: the SQLite program
# on A, serving its row count on ADDRESS:8005.
start_sqlite() {
	start_in_a "$1" --net "$2/24" --bridge br0 "${@:5}" -- \
		python3 "$CRYO_TESTS/programs/sqlite-server.py" "$3" 8005 "${4:-delete}"
	wait_for 20 grep -q listening "$STATE/$1.out"
}

rows_printed() { grep '^row ' "$1" | tail -1 | cut -d' ' -f2; }
# rows_above FILE N: the program has printed a row past N in FILE.
rows_above() { [ "$(rows_printed "$1")" -gt "$2" ]; }

# migrate_sqlite [OPTIONS...]: the SQLite program (WAL mode) moves to a target
# that starts without its database while a client reads rows (cryo migrate
# OPTIONS), and carries on there from where it was. A and B each have a disk
# of their own mounted at $DATA, as two machines would: the program's mount
# namespace is built again on B from B's mounts at the paths A had.
migrate_sqlite() {
	DATA=$STATE/data
	mkdir "$DATA"
	start_serve_own_disk 7077 64m
	run on_b_disk ls -A "$DATA"
	assert_output ""
	A_OWN_DISK=64m start_sqlite sq 10.77.0.53 "$DATA/rows.db" wal
	# A's database is on A's disk only.
	[ ! -e "$DATA/rows.db" ]
	wait_for 30 count_at_least 20 '^row ' "$STATE/sq.out"
	nsenter --net="/run/netns/${NS}c" timeout 60 python3 "$CRYO_TESTS/programs/rows-client.py" \
		10.77.0.53 8005 0.01 5 >"$STATE/client.out" 2>&1 3>&- &
	local client=$!
	track_helper "$client"
	sleep 1.5
	run migrate sq 7077 "$KEY" "$@"
	assert_success
	# The client read rows all along, with no error, and saw them grow.
	wait "$client"
	run cat "$STATE/client.out"
	assert_output --regexp '^ok [0-9]+ [0-9]+ [0-9]+$'
	local first last
	read -r _ _ first last <"$STATE/client.out"
	[ "$last" -gt "$first" ]
	# On B it carries on from the row it was at, its database as its memory
	# has it (no MISMATCH).
	wait_for 30 count_at_least 20 '^row ' "$B/sq/output.log"
	last=$(rows_printed "$STATE/sq.out")
	first=$(grep '^row ' "$B/sq/output.log" | head -1 | cut -d' ' -f2)
	assert_equal "$first" "$((last + 1))"
	run grep MISMATCH "$B/sq/output.log"
	assert_failure
	# B's disk holds the database, sound, rows 1..N with nothing missing,
	# and more of them than A wrote.
	run on_b_disk python3 - "$DATA/rows.db" "$last" <<-'PY'
	import sqlite3, sys
	con = sqlite3.connect(sys.argv[1], timeout=10)
	print(con.execute("pragma integrity_check").fetchone()[0])
	count, top, bad = con.execute("select count(*), max(i), sum(i != v) from t").fetchone()
	print("rows", "contiguous" if count == top and bad == 0 else f"{count} {top} {bad}")
	print("more than A's" if count > int(sys.argv[2]) else f"{count}, A wrote {sys.argv[2]}")
	PY
	assert_success
	assert_line --index 0 ok
	assert_line --index 1 "rows contiguous"
	assert_line --index 2 "more than A's"
	# A crash there is followed by a restore there, database and all.
	kill -KILL "$(b_pid sq)"
	wait_for 30 count_at_least 2 "restored 'sq'" "$B/sq/output.log"
	last=$(rows_printed "$B/sq/output.log")
	wait_for 30 rows_above "$B/sq/output.log" "$((last + 10))"
	run grep MISMATCH "$B/sq/output.log"
	assert_failure
}

@test "migrate: the SQLite program moves with its database while a client reads rows, and carries on from where it was" {
	migrate_sqlite
}

@test "migrate --precopy: the SQLite program moves with its database, which goes whole with the frozen image" {
	migrate_sqlite --precopy
	run "$CRYO" inspect --state-dir "$B" --json sq@2
	assert_output --partial '"base":"1"'
}

@test "migrate: files past --files-max, past the room on the target's disk, where the target has a symbolic link or outside its --files-under are refused before the program is paused" {
	DATA=$STATE/data
	mkdir "$DATA"
	start_serve_own_disk 7077 1m
	# Databases of about 2 MiB.
	local db pid pid2 pid3 n
	for db in "$DATA/rows.db" "$DATA/rows2.db"; do
		python3 - "$db" <<-'PY'
		import sqlite3, sys
		con = sqlite3.connect(sys.argv[1])
		con.execute("create table pad(b)")
		con.execute("insert into pad values(zeroblob(2000000))")
		con.commit()
		PY
	done
	start_sqlite sq 10.77.0.53 "$DATA/rows.db" delete --files-max 1M
	pid=$(a_pid sq)
	run migrate sq 7077
	assert_failure
	assert_output --regexp "the program holds '$DATA/rows.db' \([0-9.]+ MiB\) open for writing.*--files-max SIZE"
	assert_output --partial "was not paused"
	assert_equal "$(echo "$output" | wc -l)" 1
	assert_equal "$(a_pid sq)" "$pid"
	# Under the limit, but over the room on the target's disk.
	start_sqlite sq2 10.77.0.54 "$DATA/rows2.db"
	pid2=$(a_pid sq2)
	run migrate sq2 7077
	assert_failure
	assert_output --partial "the target refused: not enough room for the files the program holds open for writing in '$DATA' here"
	assert_output --partial "was not paused"
	assert_equal "$(a_pid sq2)" "$pid2"
	# A target writes only regular files: not through a symbolic link.
	on_b_disk ln -s /etc/passwd "$DATA/rows3.db"
	start_sqlite sq3 10.77.0.55 "$DATA/rows3.db"
	pid3=$(a_pid sq3)
	run migrate sq3 7077
	assert_failure
	assert_output --partial "the target refused: '$DATA/rows3.db', a file the program holds open for writing, is a symbolic link here, not a regular file"
	assert_output --partial "was not paused"
	assert_equal "$(a_pid sq3)" "$pid3"
	# All run on, their databases as their memory has them.
	n=$(rows_printed "$STATE/sq2.out")
	wait_for 30 rows_above "$STATE/sq2.out" "$((n + 10))"
	run grep MISMATCH "$STATE/sq.err" "$STATE/sq2.err" "$STATE/sq3.err"
	assert_failure
	run on_b_disk ls -A "$DATA"
	assert_output rows3.db
	run on_b_disk test -L "$DATA/rows3.db"
	assert_success
	# A target that writes such files only under other directories.
	start_serve "$B" 7078 "$KEY" --files-under /var/lib/cryo-none --files-under /srv
	run migrate sq2 7078
	assert_failure
	assert_output --partial "the target refused: the program holds '$DATA/rows2.db' open for writing, outside the directories this target writes such files under (it allows: /var/lib/cryo-none, /srv; cryo serve --files-under DIR)"
	assert_output --partial "was not paused"
	assert_equal "$(a_pid sq2)" "$pid2"
	[ ! -e "$B/sq/pid" ] && [ ! -e "$B/sq2/pid" ] && [ ! -e "$B/sq3/pid" ]
}

@test "migrate: a key file that others can read is refused" {
	start_in_a echo --net 10.77.0.50/24 --bridge br0 -- \
		"$CRYO_TEST_PROGRAMS/echo-counter" 0.0.0.0 8000
	wait_for 10 grep -q listening "$STATE/echo.out"
	chmod 644 "$KEY"
	run migrate echo
	assert_failure
	assert_output --partial "chmod 600"
}

# A program with a sizeable image, for the failures mid-transfer.
start_big() {
	start_in_a big --net 10.77.0.52/24 --bridge br0 -- "$CRYO_TEST_PROGRAMS/bench-target" 48
	wait_for 20 has_pid_a big
}
has_pid_a() { alive "$(a_pid "$1")"; }

# start_mitm MODE N [PID]: a damaging proxy on B's 7071 in front of cryo serve.
start_mitm() {
	nsenter --net="/run/netns/${NS}b" timeout 150 python3 "$CRYO_TESTS/programs/mitm.py" \
		10.77.0.2 7071 10.77.0.2 7070 "$@" >"$STATE/mitm.out" 2>&1 3>&- &
	track_helper "$!"
	wait_for 10 grep -q listening "$STATE/mitm.out"
}

# After a failed migration the program runs on A again, from its dump.
assert_resumed_on_a() {
	assert_output --partial "runs here again"
	wait_for 20 has_pid_a big
	[ ! -e "$B/big/pid" ]
	run "$CRYO" status --state-dir "$A" --json big
	assert_output --partial '"state":"running"'
	# It carries on: a gap in its clock loop is reported after the resume.
	wait_for 20 grep -q '^gap ' "$STATE/big.out"
}

@test "migrate: a tampered stream is refused before anything is restored; the program runs on A" {
	start_big
	start_mitm flip 2000000
	run migrate big 7071
	assert_failure
	assert_output --partial "failed authentication"
	assert_resumed_on_a
	run ls "$B/big"
	refute_output --partial ".cryo"
}

@test "migrate: a target that dies mid-transfer; the program runs on A" {
	start_big
	start_mitm cut 2000000
	run migrate big 7071
	assert_failure
	assert_output --partial "closed the connection"
	assert_resumed_on_a
}

@test "migrate: a target whose cryo is killed mid-transfer; the program runs on A" {
	start_big
	start_mitm kill 2000000 "${HELPERS[0]}"
	run migrate big 7071
	assert_failure
	assert_resumed_on_a
	run cat "$STATE/mitm.out"
	assert_output --partial "killed the target"
	run ls -a "$B/big"
	refute_line --regexp '^gen-'
	# The next attempt goes through, and sweeps what the killed one left.
	run migrate big
	assert_success
	run ls -a "$B/big"
	refute_output --partial ".incoming"
	assert_line --regexp '^gen-[0-9]+\.cryo$'
}

# fail_on_b FAULT WHAT [SOURCE_FAULT]: B's serve has FAULT injected; the move
# of a server with a busy connection fails saying WHAT, and the program runs on
# A again with its connection, while B keeps only an image set aside.
fail_on_b() {
	mkdir "$STATE/b2"
	SERVE_ENV="CRYO_INJECT_MIGRATE_FAULT=$1" start_serve "$STATE/b2" 7073
	CRYO_INJECT_MIGRATE_FAULT=${3:-} start_in_a echo --net 10.77.0.50/24 --bridge br0 -- \
		"$CRYO_TEST_PROGRAMS/echo-counter" 0.0.0.0 8000
	wait_for 10 grep -q listening "$STATE/echo.out"
	start_client 10.77.0.50 8000 4
	sleep 1
	run migrate echo 7073
	assert_failure
	assert_output --partial "$2"
	assert_output --partial "runs here again"
	# The client's connection lives on with the program back on A.
	wait "$CLIENT"
	run cat "$STATE/client.out"
	assert_output --regexp '^ok '
	# B keeps no generation that could resume a second copy, and runs none.
	run ls -a "$STATE/b2/echo"
	refute_line --regexp '^gen-[0-9]+\.cryo$'
	assert_line --regexp '^gen-[0-9]+\.cryo\.unconfirmed$'
	[ ! -e "$STATE/b2/echo/pid" ]
	# A's pid file names the program that runs there again.
	alive "$(a_pid echo)"
}

@test "migrate: a target that cannot restore; the program runs on A with its connection" {
	fail_on_b restore "cannot restore on the target: CRIU restore failed (injected)"
}

# The source holds DONE back (late-done) until the target has given up.
@test "migrate: a target that gives up before DONE reaches it; the program runs on A again" {
	fail_on_b give-up "the target gave up before it heard that the program may run there" late-done
}

@test "migrate --precopy: a target that cannot restore; the program runs on A from its dump" {
	mkdir "$STATE/b2"
	SERVE_ENV="CRYO_INJECT_MIGRATE_FAULT=restore" start_serve "$STATE/b2" 7073
	start_big
	run migrate big 7073 "$KEY" --precopy
	assert_failure
	assert_output --partial "cannot restore on the target: CRIU restore failed (injected)"
	assert_resumed_on_a
	run ls -a "$STATE/b2/big"
	refute_line --regexp '^gen-[0-9]+\.cryo$'
}

@test "migrate: a target without room refuses before the program is paused" {
	mkdir "$STATE/small"
	mount -t tmpfs -o size=4m tmpfs "$STATE/small"
	start_serve "$STATE/small" 7072
	start_big
	local pid
	pid=$(a_pid big)
	run migrate big 7072
	assert_failure
	assert_output --partial "not enough room"
	assert_output --partial "was not paused"
	assert_equal "$(a_pid big)" "$pid"
}

@test "migrate: bad requests get one clear line" {
	run "$CRYO" migrate --state-dir "$A" web
	assert_failure
	assert_output --partial "needs --to HOST:PORT and --key-file"
	run "$CRYO" migrate --state-dir "$A" nothing --to 10.77.0.2:7070 --key-file "$KEY"
	assert_failure
	assert_output --partial "'nothing' is not running"
	run "$CRYO" serve --listen nowhere --key-file "$KEY" --state-dir "$B"
	assert_failure
	assert_output --partial "invalid --listen"
	run "$CRYO" serve --listen 10.77.0.2:7079 --key-file "$KEY" --state-dir "$B" --files-under srv/../etc
	assert_failure
	assert_output --partial "invalid --files-under 'srv/../etc': give an absolute path"
	run "$CRYO" run --net 10.0.0.300/24 -- true
	assert_failure
	assert_output --partial "invalid --net"
	run "$CRYO" run --bridge br0 -- true
	assert_failure
	assert_output --partial "need --net"
	run "$CRYO" run --net fd77::9/64 --bridge br0 --gateway 10.77.0.1 -- true
	assert_failure
	assert_output --partial "same family"
	run "$CRYO" run --net fd77::9/129 --bridge br0 -- true
	assert_failure
	assert_output --partial "invalid --net"
	# Garbage on the serve port is dropped, and serve goes on.
	inC timeout 5 bash -c 'exec 3<>/dev/tcp/10.77.0.2/7070; head -c 4000 /dev/urandom >&3' || true
	wait_for 10 grep -q "refused a connection" "$STATE/serve-7070.err"
	run grep "refused a connection" "$STATE/serve-7070.err"
	assert_output --partial "does not speak cryo's migration protocol"
}

# ---- the trust boundary: what a peer may ask of cryo serve ----

start_echo() {
	start_in_a echo --net 10.77.0.50/24 --bridge br0 -- \
		"$CRYO_TEST_PROGRAMS/echo-counter" 0.0.0.0 8000
	wait_for 10 grep -q listening "$STATE/echo.out"
}

@test "serve: a flood of slow unauthenticated connections is refused beyond the bound and cut at the deadline; a migration then goes through" {
	start_echo
	# 50 connections that send the magic, then a byte a second: 10 (the
	# default bound) are held until the handshake's deadline (10 s, for the
	# whole of it), the others are closed at once.
	run inC timeout 60 python3 "$CRYO_TESTS/programs/slow-flood.py" 10.77.0.2 7070 50 30
	assert_success
	assert_output --regexp '^refused 40 cut 10 open 0 held 1[0-9]$'
	run cat "$STATE/serve-7070.err"
	assert_output --partial "are in their handshake already, the most --max-unauthenticated allows"
	assert_output --partial "did not complete the handshake within 10.0 s"
	assert_output --regexp "refused [0-9]+ more connections beyond the 10 in their handshake"
	alive "$SERVE_PID"
	run migrate echo
	assert_success
	# It answers from B.
	run inC timeout 20 python3 "$CRYO_TESTS/programs/client.py" 8000 0.01 0.5 10.77.0.50
	assert_success
	alive "$(b_pid echo)"
}

@test "serve: accept() failing for want of file descriptors is tried again until it works" {
	mkdir "$STATE/b2"
	start_serve "$STATE/b2" 7074
	# No descriptor free: the serve's lowest free one becomes its limit.
	local low=0 hard
	while [ -e "/proc/$SERVE_PID/fd/$low" ] && [ "$low" -lt 1024 ]; do
		low=$((low + 1))
	done
	hard=$(prlimit --pid "$SERVE_PID" --nofile --output HARD --noheadings)
	prlimit --pid "$SERVE_PID" --nofile="$low:$hard"
	inC timeout 5 bash -c 'exec 3<>/dev/tcp/10.77.0.2/7074; head -c 4000 /dev/urandom >&3' || true
	wait_for 10 grep -q "cannot accept a connection: Too many open files; trying again" \
		"$STATE/serve-7074.err"
	sleep 1
	alive "$SERVE_PID"
	# Once descriptors are free, the waiting connection is served.
	prlimit --pid "$SERVE_PID" --nofile="1024:$hard"
	wait_for 10 grep -q "does not speak cryo's migration protocol" "$STATE/serve-7074.err"
	run grep -c "cannot accept a connection" "$STATE/serve-7074.err"
	assert_output 1
	grep -q "accepting connections again" "$STATE/serve-7074.err"
}

@test "serve: an offer whose fields are out of the target's range is refused, naming the field" {
	local forged field
	# A source that holds the key could send anything: cryo's own never
	# sends these, so the tests forge them.
	for forged in "set.zstd_level=99|set.zstd_level '99' is out of range: this target takes 1 to 19" \
		"set.keep=0|set.keep '0' is out of range" \
		"set.policy=7|set.policy '7' is out of range" \
		"cwd=etc|cwd 'etc' is not an absolute path" \
		"net.gateway=fd77::1|net.gateway 'fd77::1' is invalid"; do
		field=${forged%%|*}
		CRYO_INJECT_MIGRATE_FAULT="offer:$field" start_echo
		run migrate echo
		assert_failure
		assert_output --partial "the target refused: the offer's ${forged#*|}"
		assert_output --partial "was not paused"
		"$CRYO" stop --state-dir "$A" echo
		wait_for 10 bash -c "! ip -n ${NS}a -o link show | grep -q cryo-"
	done
	[ ! -e "$B/echo/pid" ]
}

@test "serve: an image larger than the offer said is cut off at the room the target checked for" {
	# The offer says the program's memory is 1 byte: the target checks for
	# room for that (and 16 MiB more) and takes no more; the archive is 24 MiB.
	CRYO_INJECT_MIGRATE_FAULT=offer:raw_estimate=1 start_in_a big --net 10.77.0.52/24 \
		--bridge br0 -- "$CRYO_TEST_PROGRAMS/bench-target" 48
	wait_for 20 has_pid_a big
	run migrate big
	assert_failure
	assert_output --partial "the image is larger than the offer said: more than 16.0 MiB"
	assert_resumed_on_a
	run ls -a "$B/big"
	refute_line --regexp '^gen-'
}

@test "serve --allow: a workload of another name is refused" {
	start_serve "$B" 7075 "$KEY" --allow web --allow db
	start_echo
	run migrate echo 7075
	assert_failure
	assert_output --partial "the target refused: this target does not take a workload named 'echo' (cryo serve --allow)"
	assert_output --partial "was not paused"
	[ ! -e "$B/echo/pid" ]
}

@test "serve: a workload on a bridge other than the serve's own is refused" {
	local h
	for h in a b; do
		ip -n "${NS}$h" link add br9 type bridge
		ip -n "${NS}$h" link set br9 up
	done
	start_in_a lone --net 10.99.0.5/24 --bridge br9 -- "$CRYO_TEST_PROGRAMS/echo-counter" 0.0.0.0 8004
	wait_for 10 grep -q listening "$STATE/lone.out"
	run migrate lone
	assert_failure
	assert_output --partial "the target refused: the offer's net.bridge 'br9' is not one this target lets workloads attach to (it allows: br0; start cryo serve with --bridge br9 to allow it)"
	assert_output --partial "was not paused"
	[ ! -e "$B/lone/pid" ]
	"$CRYO" stop --state-dir "$A" lone
	wait_for 10 bash -c "! ip -n ${NS}a -o link show | grep -q cryo-"
	for h in a b; do
		ip -n "${NS}$h" link del br9
	done
}

@test "run --net: an fd on the program's own network namespace file is checkpointed and restored on that namespace" {
	touch "$STATE/go"
	start_in_a nsfd --net 10.88.0.6/32 -- "$CRYO_TESTS/programs/fd-holder.py" /proc/self/ns/net \
		"$STATE/go"
	wait_for 10 grep -q '^holding ' "$STATE/nsfd.out"
	local held fd pid
	read -r _ held _ _ fd < <(grep '^holding ' "$STATE/nsfd.out")
	pid=$(a_pid nsfd)
	# Its own namespace, not the host's.
	assert_equal "$(readlink "/proc/$pid/ns/net")" "$held"
	[ "$held" != "$(readlink /proc/self/ns/net)" ]
	run "$CRYO" checkpoint --state-dir "$A" nsfd
	assert_success
	kill -KILL "$pid"
	wait_for 30 grep -q "restored 'nsfd' from generation 1" "$STATE/nsfd.err"
	wait_for 10 has_pid_a nsfd
	pid=$(a_pid nsfd)
	assert_equal "$(readlink "/proc/$pid/fd/$fd")" "$held"
	assert_equal "$(readlink "/proc/$pid/ns/net")" "$held"
	"$CRYO" stop --state-dir "$A" nsfd
	wait_for 10 bash -c "! ip -n ${NS}a -o link show | grep -q cryo-"
}
