#!/usr/bin/env bats
# Bad input gets one clear line naming the cause and the way out.

load helpers

bats_require_minimum_version 1.5.0

setup() { setup_state; }
teardown() { teardown_state; }

@test "cryo_checkpoint() outside cryo returns -ENOTCONN and the program runs on" {
	run "$CRYO_EXAMPLES/counter" 4 2 0
	assert_success
	assert_line "checkpoint at step 2 failed: Transport endpoint is not connected"
	assert_line "checkpoint at step 4 failed: Transport endpoint is not connected"
	assert_line --partial "result "
}

@test "an unknown flag is refused with a pointer to --help" {
	run "$CRYO" run --bogus -- true
	assert_failure 2
	assert_output --partial "unknown option '--bogus' for 'cryo run' (see cryo run --help)"
	run "$CRYO" frobnicate
	assert_failure 2
	assert_output --partial "unknown command 'frobnicate'"
}

@test "bad option values are refused" {
	run "$CRYO" run --restart sometimes -- true
	assert_failure 2
	assert_output --partial "invalid --restart 'sometimes': use on-failure, always or no"
	run "$CRYO" run --keep 0 -- true
	assert_failure 2
	assert_output --partial "invalid --keep '0'"
	run "$CRYO" run --every 5x -- true
	assert_failure 2
	assert_output --partial "invalid --every '5x'"
	run "$CRYO" run --name 'a/b' -- true
	assert_failure
	assert_output --partial "invalid workload name 'a/b'"
}

@test "no program, a missing program, a program that is not executable" {
	run "$CRYO" run
	assert_failure 2
	assert_output --partial "no program given"
	run "$CRYO" run -- /nonexistent/prog
	assert_failure 127
	assert_output --partial "cannot run '/nonexistent/prog': No such file or directory"
	run "$CRYO" run -- no-such-program-anywhere
	assert_failure 127
	assert_output --partial "no such program in PATH"
	printf 'data\n' >"$STATE/plain"
	run "$CRYO" run -- "$STATE/plain"
	assert_failure 127
	assert_output --partial "not an executable file"
}

@test "a state directory that cannot be written" {
	touch "$STATE/file"
	run "$CRYO" run --state-dir "$STATE/file/sub" -- true
	assert_failure
	assert_output --partial "cannot create state directory '$STATE/file/sub/true'"
	assert_output --partial "--state-dir"
	mkdir "$STATE/ro"
	mount -t tmpfs -o ro,size=1m tmpfs "$STATE/ro"
	run "$CRYO" run --state-dir "$STATE/ro" -- true
	umount "$STATE/ro"
	assert_failure
	assert_output --partial "state directory '$STATE/ro/true'"
	assert_output --partial "Read-only file system"
}

@test "not root: says so and how to fix it" {
	run setpriv --reuid=65534 --regid=65534 --clear-groups "$CRYO" run -- true
	assert_failure
	assert_output --partial "must run as root"
	assert_output --partial "sudo"
}

@test "CRIU missing: says what to run" {
	CRYO_CRIU=/nonexistent/criu run "$CRYO" run --name t -- true
	assert_failure
	assert_output --partial "CRIU is not installed; run scripts/setup"
}

@test "CRIU too old: says which version and what to run" {
	printf '#!/bin/sh\necho "Version: 3.17.1"\n' >"$STATE/criu"
	chmod +x "$STATE/criu"
	CRYO_CRIU=$STATE/criu run "$CRYO" run --name t -- true
	assert_failure
	assert_output --partial "is version 3.17.1; cryo needs 4.2 or newer (run scripts/setup)"
}

@test "commands on a workload that does not run say how to start it" {
	run "$CRYO" checkpoint nothing-here
	assert_failure
	assert_output --partial "'nothing-here' is not running"
	assert_output --partial "cryo run --name nothing-here"
	run "$CRYO" restore nothing-here
	assert_failure
	assert_output --partial "has no images"
}

@test "the program's own exit status is cryo run's" {
	run "$CRYO" run --name ok -- true
	assert_success
	run "$CRYO" run --name three --restart no -- sh -c 'exit 3'
	assert_failure 3
	run "$CRYO" run --name sig --restart no -- sh -c 'kill -TERM $$'
	assert_failure 143
}

@test "stdin and stdout pass through the supervisor" {
	run bash -c "printf 'hello\nworld\n' | '$CRYO' run --name cat -- cat"
	assert_success
	assert_output "hello
world"
}

@test "every verb explains itself with --help" {
	local verb
	for verb in run checkpoint status images inspect stop kill restore migrate serve keygen; do
		run "$CRYO" "$verb" --help
		assert_success
		assert_line --index 0 --partial "usage: cryo $verb"
	done
}

@test "cryo serve: a missing, readable, linked or foreign key file is refused at start" {
	run "$CRYO" serve --listen 127.0.0.1:0 --key-file "$STATE/none" --state-dir "$STATE"
	assert_failure
	assert_output --partial "cannot read the key file '$STATE/none'"
	head -c 32 /dev/urandom >"$STATE/key"
	chmod 644 "$STATE/key"
	run "$CRYO" serve --listen 127.0.0.1:0 --key-file "$STATE/key" --state-dir "$STATE"
	assert_failure
	assert_output --partial "is open to others (mode 644; run: chmod 600"
	# Whoever can replace the link or owns the file holds the key: both are
	# refused (a serve that took them would run until the timeout ends it).
	chmod 600 "$STATE/key"
	ln -s "$STATE/key" "$STATE/key-link"
	run timeout 10 "$CRYO" serve --listen 127.0.0.1:0 --key-file "$STATE/key-link" \
		--state-dir "$STATE"
	assert_failure
	assert_output --partial "the key file '$STATE/key-link' is a symbolic link"
	chown nobody "$STATE/key"
	run timeout 10 "$CRYO" serve --listen 127.0.0.1:0 --key-file "$STATE/key" --state-dir "$STATE"
	assert_failure
	assert_output --partial "is owned by UID $(id -u nobody), not by this user (UID 0)"
	chown root "$STATE/key"
	printf short >"$STATE/key"
	run "$CRYO" serve --listen 127.0.0.1:0 --key-file "$STATE/key" --state-dir "$STATE"
	assert_failure
	assert_output --partial "must hold 32 to 65536 bytes"
}

@test "--json: a workload no supervisor runs, a key file not there: {\"ok\":false,...} on stdout, exit 1" {
	head -c 32 /dev/urandom >"$STATE/key"
	chmod 600 "$STATE/key"
	run --separate-stderr "$CRYO" migrate --json nosuch --to 127.0.0.1:1 --key-file "$STATE/key"
	assert_failure 1
	python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["ok"] is False and d["errno"] == 2 and "cryo run --name nosuch" in d["error"], d' "$output"
	[ -z "$stderr" ]
	run --separate-stderr "$CRYO" migrate --json nosuch --to 127.0.0.1:1 --key-file "$STATE/none"
	assert_failure 1
	python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["ok"] is False and "cannot read the key file" in d["error"], d' "$output"
	for verb in checkpoint stop kill; do
		run --separate-stderr "$CRYO" "$verb" --json nosuch
		assert_failure 1
		python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["ok"] is False and "is not running" in d["error"], d' "$output"
	done
}

@test "cryo serve has no --json: refused as an unknown option" {
	run "$CRYO" serve --json --listen 127.0.0.1:0 --key-file "$STATE/none"
	assert_failure 2
	assert_output "cryo: unknown option '--json' for 'cryo serve' (see cryo serve --help)"
}

@test "cryo keygen: a 32-byte key of mode 600 in a directory of mode 700 it makes; never over a key; cryo serve takes it" {
	run "$CRYO" keygen "$STATE/etc-cryo/key"
	assert_success
	assert_output "wrote a new key to '$STATE/etc-cryo/key' (mode 600): copy it to every machine that migrates with it, over a channel you already trust"
	assert_equal "$(stat -c '%a %s %U' "$STATE/etc-cryo/key")" "600 32 root"
	assert_equal "$(stat -c %a "$STATE/etc-cryo")" 700
	sum=$(sha256sum <"$STATE/etc-cryo/key")
	run "$CRYO" keygen "$STATE/etc-cryo/key"
	assert_failure 1
	assert_output "cryo: '$STATE/etc-cryo/key' exists: cryo keygen never overwrites a key (the machines that hold it would no longer match); remove it first to make a new one"
	assert_equal "$(sha256sum <"$STATE/etc-cryo/key")" "$sum"
	# Nor through a link.
	ln -s "$STATE/elsewhere" "$STATE/etc-cryo/link"
	run "$CRYO" keygen "$STATE/etc-cryo/link"
	assert_failure 1
	[ ! -e "$STATE/elsewhere" ]
	run "$CRYO" keygen "$STATE/no/such/key"
	assert_failure 1
	assert_output "cryo: cannot create the directory '$STATE/no/such': No such file or directory"
	run "$CRYO" keygen a b
	assert_failure 2
	# cryo serve takes the key as it is.
	"$CRYO" serve --listen 127.0.0.1:0 --key-file "$STATE/etc-cryo/key" --state-dir "$STATE/serve" \
		>"$STATE/serve.out" 2>&1 </dev/null &
	track_supervisor "$!"
	wait_for 30 grep -q serving "$STATE/serve.out"
}
