#!/usr/bin/env bats
# The workload commands, on an unmodified program (a python3 script).

load helpers

setup() {
	setup_state
	TICKER=$CRYO_TESTS/programs/ticker.py
}
teardown() { teardown_state; }

last_tick() { tail -n 1 "$STATE/$1.out"; }
ticks_past() { [ "$(last_tick "$1")" -gt "$2" ]; }

# A restored copy goes on from the checkpoint, which was taken a moment
# before the program was stopped: its first number is just after the last one
# printed before the stop, or repeats one or two printed in that moment.
# The program (a ticker every 50 ms) runs on between the checkpoint and the
# stop, a few ticks on a busy machine: those are lost, as they should be.
resumes_after() { # FIRST LAST
	echo "first after restore: $1, last before stop: $2"
	[ "$1" -le $(($2 + 1)) ] && [ "$1" -ge $(($2 - 10)) ] && [ "$1" -gt 1 ]
}

@test "cryo checkpoint: an unmodified program, on demand; --json is one JSON document" {
	start_cryo t -- "$TICKER"
	wait_for 30 count_at_least 3 '^[0-9]' "$STATE/t.out"
	run "$CRYO" checkpoint t
	assert_success
	assert_output --regexp "^checkpoint 1 of 't': [0-9.]+ [KM]iB \([0-9.]+ [KM]iB uncompressed\), frozen [0-9.]+ ms, durable after [0-9.]+ ms$"
	run "$CRYO" checkpoint --json t
	assert_success
	python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["ok"] and d["generation"]==2 and d["size"]>0 and d["frozen_us"]>0, d' "$output"
	# The program was not disturbed: it counts on.
	wait_for 10 ticks_past t $(($(last_tick t) + 2))
}

@test "cryo status: running, the program's PID, restarts, the last checkpoint; --json" {
	start_cryo t -- "$TICKER"
	wait_for 30 has_pid t
	"$CRYO" checkpoint t >/dev/null
	run "$CRYO" status t
	assert_success
	assert_line --regexp "^t +running +$(prog_pid t) +0 +gen 1, [0-9]+s ago, .*frozen [0-9.]+ ms$"
	kill -KILL "$(prog_pid t)"
	wait_for 30 grep -q "restored 't'" "$STATE/t.err"
	wait_for 30 has_pid t
	run "$CRYO" status --json
	assert_success
	python3 - "$output" "$(prog_pid t)" <<-'PY'
	import json, sys
	rows = json.loads(sys.argv[1])
	assert len(rows) == 1, rows
	r = rows[0]
	assert r["name"] == "t" and r["state"] == "running", r
	assert r["pid"] == int(sys.argv[2]) and r["restarts"] == 1, r
	assert r["generation"] == 1 and r["last_checkpoint"]["generation"] == 1, r
	PY
	kill -TERM "$LAST_SUPERVISOR"
	wait_supervisor "$LAST_SUPERVISOR" 30
	run "$CRYO" status t
	assert_line --regexp "^t +stopped +- +1 +gen 1"
}

@test "cryo run --every: periodic checkpoints, marked as such in cryo images" {
	start_cryo t --every 300ms --keep 2 --no-delta -- "$TICKER"
	wait_for 30 test -e "$(gen_file t 3)"
	run "$CRYO" images t
	assert_success
	assert_line --regexp '^3 .* timer +yes$'
	# --keep 2: the oldest went.
	[ ! -e "$(gen_file t 1)" ]
	run "$CRYO" images --json t
	python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert len(d)==2 and all(g["verified"] and g["trigger"]=="timer" for g in d), d' "$output"
}

@test "cryo stop --checkpoint, then cryo restore: the program resumes where it stopped" {
	start_cryo t -- "$TICKER"
	wait_for 30 count_at_least 10 '^[0-9]' "$STATE/t.out"
	run "$CRYO" stop --checkpoint t
	assert_success
	assert_output "stopped 't' after checkpoint 1 (resume it with: cryo restore t)"
	wait_supervisor "$LAST_SUPERVISOR" 30
	stopped_at=$(last_tick t)
	"$CRYO" restore t >"$STATE/r.out" 2>"$STATE/r.err" </dev/null &
	track_supervisor "$!"
	wait_for 30 count_at_least 3 '^[0-9]' "$STATE/r.out"
	# The first number after the restore follows the last one before the stop.
	resumes_after "$(head -n 1 "$STATE/r.out")" "$stopped_at"
	run "$CRYO" stop --json t
	assert_success
	python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["ok"] and d["name"]=="t", d' "$output"
}

@test "cryo stop: SIGKILL after the timeout for a program that ignores SIGTERM" {
	start_cryo stubborn -- sh -c 'trap "" TERM; while :; do sleep 0.1; done'
	wait_for 30 has_pid stubborn
	run "$CRYO" stop --timeout 500ms stubborn
	assert_success
	assert_output --partial "did not stop within the timeout: killing it"
	wait_supervisor "$LAST_SUPERVISOR" 30
}

@test "cryo run on a name with images and no supervisor resumes; --fresh starts afresh" {
	start_cryo t -- "$TICKER"
	wait_for 30 count_at_least 5 '^[0-9]' "$STATE/t.out"
	"$CRYO" stop --checkpoint t >/dev/null
	wait_supervisor "$LAST_SUPERVISOR" 30
	at=$(last_tick t)
	# The last checkpoint's dump files went with the supervisor; those a
	# killed supervisor would leave go when the next one starts.
	dir=$(dirname "$(gen_file t 1)")
	run ls -a "$dir"
	refute_output --partial ".dump-"
	mkdir "$dir/.dump-99"
	echo left >"$dir/.dump-99/pages-1.img"

	"$CRYO" run --name t -- "$TICKER" >"$STATE/again.out" 2>"$STATE/again.err" </dev/null &
	track_supervisor "$!"
	sup=$!
	wait_for 30 count_at_least 2 '^[0-9]' "$STATE/again.out"
	grep -q "resuming the newest (use --fresh to start afresh)" "$STATE/again.err"
	[ ! -e "$dir/.dump-99" ]
	resumes_after "$(head -n 1 "$STATE/again.out")" "$at"
	"$CRYO" stop t >/dev/null
	wait_supervisor "$sup" 30

	"$CRYO" run --name t --fresh -- "$TICKER" >"$STATE/fresh.out" 2>"$STATE/fresh.err" </dev/null &
	track_supervisor "$!"
	sup=$!
	wait_for 30 count_at_least 2 '^[0-9]' "$STATE/fresh.out"
	[ "$(head -n 1 "$STATE/fresh.out")" -eq 1 ]
	# The old images stay until a new one is durable, but a crash before
	# then starts afresh rather than resuming the old run.
	[ -e "$(gen_file t 1)" ]
	kill -KILL "$(prog_pid t)"
	wait_for 30 grep -q "has no checkpoint yet: starting it afresh" "$STATE/fresh.err"
	# The first new checkpoint takes the old run's generations away, though
	# --keep (3) would allow them.
	wait_for 30 has_pid t
	run "$CRYO" checkpoint t
	assert_success
	new=$(ls "$dir"/gen-*.cryo)
	[ "$(echo "$new" | wc -l)" -eq 1 ]
	[ ! -e "$(gen_file t 1)" ]
}

@test "two supervisors never run one name: the second says who holds it" {
	start_cryo t -- "$TICKER"
	wait_for 30 has_pid t
	run "$CRYO" run --name t -- "$TICKER"
	assert_failure
	assert_output --partial "workload 't' is already running under supervisor PID $LAST_SUPERVISOR"
}

@test "a supervisor killed with SIGKILL takes its program along; cryo restore resumes it" {
	start_cryo t -- "$TICKER"
	wait_for 30 count_at_least 5 '^[0-9]' "$STATE/t.out"
	"$CRYO" checkpoint t >/dev/null
	pid=$(prog_pid t)
	kill -KILL "$LAST_SUPERVISOR"
	wait_for 10 bash -c "! kill -0 $pid"
	run "$CRYO" status t
	assert_line --regexp '^t +stopped +- '
	"$CRYO" restore t >"$STATE/r.out" 2>"$STATE/r.err" </dev/null &
	track_supervisor "$!"
	sup=$!
	wait_for 30 count_at_least 2 '^[0-9]' "$STATE/r.out"
	# And again, for a restored copy: its supervisor's death ends it too.
	pid=$(prog_pid t)
	kill -KILL "$sup"
	wait_for 10 bash -c "! kill -0 $pid"
}

@test "garbage on the commands socket and on the control socket: the supervisor carries on" {
	start_cryo t -- "$TICKER"
	wait_for 30 has_pid t
	python3 - "$STATE/t/control.sock" <<-'PY'
	import socket, sys
	for payload in (b"", b"\x00\xff" * 100, b"status-but-no-newline", b"bogus\n"):
	    s = socket.socket(socket.AF_UNIX)
	    s.connect(sys.argv[1])
	    s.sendall(payload)
	    s.shutdown(socket.SHUT_WR)
	    s.recv(4096)
	    s.close()
	PY
	run "$CRYO" checkpoint t
	assert_success
	start_cryo g -- "$CRYO_TESTS/programs/garbage-control.py"
	wait_supervisor "$LAST_SUPERVISOR" 30
	assert_equal "$status" 0
	run cat "$STATE/g.out"
	assert_line "reply magic=0x4f595243 type=2 value=-71"
	assert_line "still running"
	run grep -c "sent garbage on its control socket" "$STATE/g.err"
	assert_output 1
}

@test "cryo inspect: manifest, process tree, memory, files and sockets; a damaged image is refused" {
	port=$(free_port)
	start_cryo ep -- "$CRYO_EXAMPLES/epoll-server" "$port" 20 0
	wait_for 30 grep -q listening "$STATE/ep.out"
	"$CRYO" checkpoint ep >/dev/null
	run "$CRYO" inspect ep
	assert_success
	assert_line --regexp "^image +$STATE/ep/gen-000000000001.cryo \(verified\)$"
	assert_line --regexp '^workload +ep, generation 1, taken .* by command$'
	assert_line --regexp "^command +$CRYO_EXAMPLES/epoll-server $port 20 0$"
	assert_line --regexp '^memory +[0-9.]+ [KM]iB dumped$'
	assert_line --regexp '^ +1 +0 +1 +cryo-init$'
	assert_line --regexp '^ +2 +1 +1 +epoll-server$'
	assert_line "  socket TCP 127.0.0.1:$port LISTEN"
	assert_line "  timerfd"
	assert_line "  eventfd"
	assert_line "  epoll"
	run "$CRYO" inspect --json ep@1
	assert_success
	python3 - "$output" <<-'PY'
	import json, sys
	def unique(pairs):
	    keys = [k for k, _ in pairs]
	    assert len(keys) == len(set(keys)), "repeated key in %s" % keys
	    return dict(pairs)
	d = json.loads(sys.argv[1], object_pairs_hook=unique)
	assert d["verified"] and d["manifest"]["trigger"] == "command", d
	assert [p["comm"] for p in d["processes"]] == ["cryo-init", "epoll-server"], d
	assert d["memory_bytes"] > 0 and d["raw_size"] > d["size"] > 0, d
	PY
	run "$CRYO" inspect "$(gen_file ep 1)"
	assert_success
	flip_byte "$(gen_file ep 1)"
	run "$CRYO" inspect ep@1
	assert_failure
	assert_output --partial "does not verify"
	run "$CRYO" inspect ep@7
	assert_failure
	assert_output --partial "No such file"
}

@test "cryo inspect: a bare word is a workload's name, a file is named by a path or --file" {
	start_cryo iw -- sleep 600
	wait_for 30 has_pid iw
	"$CRYO" checkpoint iw >/dev/null
	mkdir "$STATE/cwd"
	cd "$STATE/cwd"
	# A file of the workload's name here does not hide the workload.
	echo "not an image" >iw
	run "$CRYO" inspect iw
	assert_success
	assert_line --regexp "^image +$STATE/iw/gen-000000000001.cryo \(verified\)$"
	# A copy of the image here: a bare word is still a name, and the line
	# says how to name the file.
	cp "$(gen_file iw 1)" gen-1.cryo
	run "$CRYO" inspect gen-1.cryo
	assert_failure 1
	assert_output "cryo: 'gen-1.cryo' is taken as a workload name, and that workload has no images in '$STATE/gen-1.cryo'; for the file 'gen-1.cryo' in this directory, use: cryo inspect ./gen-1.cryo (or --file gen-1.cryo)"
	run "$CRYO" inspect ./gen-1.cryo
	assert_success
	assert_line --regexp '^image +\./gen-1\.cryo \(verified\)$'
	run "$CRYO" inspect --file gen-1.cryo
	assert_success
	assert_line --regexp '^workload +iw, generation 1, '
	run "$CRYO" inspect --file gen-1.cryo iw
	assert_failure 2
	assert_output --partial "give one image: cryo inspect NAME[@GEN] | PATH | --file FILE"
}

@test "a checkpoint a command asked for is reported once on a terminal: by the command" {
	start_cryo once -- "$TICKER"
	wait_for 30 count_at_least 3 '^[0-9]' "$STATE/once.out"
	run "$CRYO" checkpoint once
	assert_success
	assert_output --regexp "^checkpoint 1 of 'once': "
	run "$CRYO" stop --checkpoint once
	assert_success
	assert_output "stopped 'once' after checkpoint 2 (resume it with: cryo restore once)"
	# cryo run exits 143 after cryo stop (cryo-run(1), EXIT STATUS).
	wait_supervisor "$LAST_SUPERVISOR" 30
	assert_equal "$status" 143
	# The supervisor's stderr (the same terminal, run in the foreground)
	# does not say it again.
	run grep "checkpoint [12] of 'once'" "$STATE/once.err"
	assert_failure
	# With --verbose it does, as the debug lines it is.
	start_cryo loud --verbose -- "$TICKER"
	wait_for 30 count_at_least 3 '^[0-9]' "$STATE/loud.out"
	"$CRYO" checkpoint loud >/dev/null
	wait_for 10 grep -q "checkpoint 1 of 'loud' stored (command" "$STATE/loud.err"
}

@test "a program that dies during a periodic checkpoint: one line saying so, not CRIU's complaint" {
	# Without write tracking every dump takes all 64 MiB: long enough to
	# kill the program in (with it, a dump after the first takes ~20 ms).
	CRYO_TRACK=0 start_cryo pd --every 100ms --max-restarts 100 -- "$CRYO_TEST_PROGRAMS/bench-target" 64
	wait_for 30 test -e "$(gen_file pd 1)"
	# Kill it the moment a checkpoint begins (the dump of 64 MiB takes a
	# while), until one such kill landed inside CRIU's dump: at most 20.
	for _ in $(seq 20); do
		grep -q "^cryo: no periodic checkpoint of 'pd'" "$STATE/pd.err" && break
		restored=$(grep -c "restored 'pd' from" "$STATE/pd.err") || true
		wait_for 30 grep -q '"state":"checkpointing"' "$STATE/pd/status.json"
		kill -KILL "$(prog_pid pd)" 2>/dev/null || true
		wait_for 60 count_at_least $((restored + 1)) "restored 'pd' from" "$STATE/pd.err"
	done
	run grep "^cryo: no periodic checkpoint of 'pd'" "$STATE/pd.err"
	assert_success
	assert_line --index 0 "cryo: no periodic checkpoint of 'pd': the program ended during the checkpoint"
}
