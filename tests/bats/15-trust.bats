#!/usr/bin/env bats
# The state directory is the supervisor's alone: one that others could change
# is refused, and files are never created through links found in it. The pid
# file names the program only while a supervisor runs it.

load helpers

setup() {
	setup_state
	# Root's files that a planted link points at: they must stay as they are.
	mkdir "$STATE/targets"
	for f in lock status pid log; do
		echo "root's $f" >"$STATE/targets/$f"
	done
	chmod 0644 "$STATE"/targets/*
	SHM_DIRS=()
}

teardown() {
	local d
	for d in "${SHM_DIRS[@]}"; do
		rm -rf "$d"
	done
	teardown_state
}

# Runs COMMAND... as the unprivileged user nobody.
as_nobody() {
	setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"
}

# Every target still holds what it held; each one written is named.
targets_unchanged() {
	local f ok=0
	for f in lock status pid log; do
		if [ "$(cat "$STATE/targets/$f")" != "root's $f" ]; then
			echo "$STATE/targets/$f was written: $(head -c 100 "$STATE/targets/$f")" >&2
			ok=1
		fi
	done
	return "$ok"
}

@test "a state directory others may write is refused, with the directory and the fix" {
	mkdir -m 0777 "$STATE/open"
	chmod 0777 "$STATE/open"
	run "$CRYO" run --state-dir "$STATE/open" --name v1 -- true
	assert_failure
	assert_output "cryo: state directory '$STATE/open/v1' is not safe: '$STATE/open' is writable by others (run: chmod go-w '$STATE/open'); or choose another with --state-dir or CRYO_STATE_DIR"
	mkdir "$STATE/grp"
	chmod 0770 "$STATE/grp"
	run "$CRYO" run --state-dir "$STATE/grp" --name v1 -- true
	assert_failure
	assert_output --partial "'$STATE/grp' is writable by its group (run: chmod go-w '$STATE/grp')"
	# The workload's own directory, even with the sticky bit.
	mkdir -p "$STATE/sd/v1"
	chmod 1777 "$STATE/sd/v1"
	run "$CRYO" run --state-dir "$STATE/sd" --name v1 -- true
	assert_failure
	assert_output --partial "'$STATE/sd/v1' is writable by others"
	# Another user's workload directory.
	chmod 0700 "$STATE/sd/v1"
	chown nobody "$STATE/sd/v1"
	run "$CRYO" run --state-dir "$STATE/sd" --name v1 -- true
	assert_failure
	assert_output --partial "'$STATE/sd/v1' belongs to uid 65534, who could replace what cryo keeps there (run: chown root '$STATE/sd/v1')"
	# A state directory with the sticky bit, like /tmp, is fine: only an
	# entry's owner may replace it there, and the workload's is root's.
	mkdir "$STATE/sticky"
	chmod 1777 "$STATE/sticky"
	run "$CRYO" run --state-dir "$STATE/sticky" --name v1 -- true
	assert_success
}

@test "links planted by another user in a directory of theirs: refused, nothing written" {
	# A place where nobody may make directories, as in /tmp.
	chmod 0711 "$STATE"
	mkdir -m 1777 "$STATE/pub"
	chmod 1777 "$STATE/pub"
	# shellcheck disable=SC2016  # expanded by that shell, from its $1
	as_nobody sh -c '
		mkdir -p "$1/pub/st/v1" && chmod 777 "$1/pub/st" "$1/pub/st/v1" &&
		ln -s "$1/targets/lock" "$1/pub/st/v1/lock" &&
		ln -s "$1/targets/status" "$1/pub/st/v1/status.json.tmp" &&
		ln -s "$1/targets/pid" "$1/pub/st/v1/pid.tmp"' _ "$STATE"
	CRYO_STATE_DIR=$STATE/pub/st run "$CRYO" run --name v1 -- "$CRYO_EXAMPLES/counter" 20 5 10
	assert_failure
	assert_output --partial "is not safe: '$STATE/pub/st' belongs to uid 65534"
	targets_unchanged
	# Made root's but left open to all: refused for that.
	chown -R root:root "$STATE/pub/st"
	CRYO_STATE_DIR=$STATE/pub/st run "$CRYO" run --name v1 -- "$CRYO_EXAMPLES/counter" 20 5 10
	assert_failure
	assert_output --partial "'$STATE/pub/st' is writable by others (run: chmod go-w '$STATE/pub/st')"
	targets_unchanged
}

@test "links in the workload's directory are never followed: lock, pid, status.json, CRIU's log" {
	mkdir -p "$STATE/v1"
	ln -s "$STATE/targets/lock" "$STATE/v1/lock"
	run "$CRYO" run --name v1 -- true
	assert_failure
	assert_output "cryo: cannot lock '$STATE/v1/lock': it is a symbolic link, a hard link or another user's file, which cryo does not open; remove it"
	targets_unchanged
	rm "$STATE/v1/lock"
	ln -s "$STATE/targets/status" "$STATE/v1/status.json.tmp"
	ln -s "$STATE/targets/pid" "$STATE/v1/pid.tmp"
	ln -s "$STATE/targets/log" "$STATE/v1/criu-dump.log"
	# (A link under an archive's temporary name is test_store's, in
	# tests/unit/test-archive.c: here the generation's number would step
	# over it.)
	start_cryo v1 -- "$CRYO_EXAMPLES/counter" 40 20 50
	wait_supervisor "$LAST_SUPERVISOR" 60
	assert_equal "$status" 0
	run grep -c '^checkpointed at step' "$STATE/v1.out"
	assert_output 2
	targets_unchanged
	[ -f "$STATE/v1/status.json" ] && [ ! -L "$STATE/v1/status.json" ]
	[ -f "$STATE/v1/criu-dump.log" ] && [ ! -L "$STATE/v1/criu-dump.log" ]
	[ -f "$STATE/v1/gen-000000000002.cryo" ] && [ ! -e "$STATE/v1/pid" ]
	grep -q '"state":"stopped"' "$STATE/v1/status.json"
}

@test "a workload name starting with '-' is refused" {
	run "$CRYO" run --name -v1 -- true
	assert_failure
	assert_output --partial "invalid workload name '-v1'"
	run "$CRYO" status -- -v1
	assert_failure
	assert_output --partial "invalid workload name '-v1'"
	[ ! -e "$STATE/-v1" ]
}

@test "the /dev/shm sweep removes our own leftovers only, never another user's" {
	# A PID that is gone: a process of ours that ended.
	true &
	dead=$!
	wait "$dead"
	theirs=$(as_nobody mktemp -d "/dev/shm/cryo-trusttest-$dead-XXXXXX")
	mine=$(mktemp -d "/dev/shm/cryo-trusttest-$dead-XXXXXX")
	SHM_DIRS+=("$theirs" "$mine")
	as_nobody touch "$theirs/data"
	run "$CRYO" run --name s -- true
	assert_success
	[ ! -e "$mine" ]
	[ -f "$theirs/data" ]
}

@test "cryo kill: the program dies as in a crash and is restored; a workload not running is said so" {
	start_cryo t -- "$CRYO_EXAMPLES/counter" 100000 10 20
	wait_for 30 count_at_least 1 '^checkpointed at step' "$STATE/t.out"
	pid=$(prog_pid t)
	run "$CRYO" kill t
	assert_success
	assert_output "killed the program of 't' (SIGKILL); its supervisor takes it as a crash"
	wait_for 10 bash -c "! kill -0 $pid"
	wait_for 30 count_at_least 1 "restored 't' from generation" "$STATE/t.err"
	wait_for 30 has_pid t
	[ "$(prog_pid t)" != "$pid" ]
	run grep -c "was killed by signal 9" "$STATE/t.err"
	assert_output 1
	"$CRYO" stop t >/dev/null
	wait_supervisor "$LAST_SUPERVISOR" 30
	run "$CRYO" kill t
	assert_failure
	assert_output --partial "'t' is not running: no supervisor in '$STATE/t'"
}

@test "the pid file is there only while a supervisor runs the program" {
	start_cryo t -- "$CRYO_EXAMPLES/counter" 100000 1000 20
	wait_for 30 has_pid t
	"$CRYO" stop t >/dev/null
	wait_supervisor "$LAST_SUPERVISOR" 30
	[ ! -e "$STATE/t/pid" ]
	# A supervisor killed with SIGKILL cannot remove it: cryo status tells
	# that nobody runs the program, whatever the files say.
	start_cryo t -- "$CRYO_EXAMPLES/counter" 100000 1000 20
	wait_for 30 has_pid t
	pid=$(prog_pid t)
	kill -KILL "$LAST_SUPERVISOR"
	wait_for 10 bash -c "! kill -0 $pid"
	run "$CRYO" status --json t
	assert_success
	python3 - "$output" <<-'PY'
	import json, sys
	r = json.loads(sys.argv[1])
	r = r[0] if isinstance(r, list) else r
	assert r["state"] == "stopped" and r["pid"] == 0, r
	PY
}
