#!/usr/bin/env bats
# A damaged piece of memory met by a lazy restore (the default): in the
# first piece of a memory image (met while CRIU still restores) or in a late
# one (met once the program runs), in a whole or an incremental generation,
# under cryo run and cryo restore. Each time the restore ends within a
# bounded time, the generation is set aside, the one before is restored and
# runs on, and nothing of the failed restore is left: no CRIU, no
# half-restored cryo-init or program. A restore that never gets its memory
# ends with a stop, and even a supervisor killed outright leaves nothing;
# the CRIU started ahead for the next restore ends without a word on the
# terminal.

load helpers

setup() {
	setup_state
	command -v zstd >/dev/null || skip "needs the zstd command to read a manifest"
}
teardown() { teardown_state; }

TICKER="$CRYO_TESTS/programs/ticker.py"

# The offset in FILE (a generation) of a piece of memory: "first", the first
# frame of the first memory image, or "last", the last frame of the last one
# (images/FORMAT.md: the trailer points at the manifest, whose `frames` lines
# give each memory image's frames).
frame_offset() {
	python3 - "$1" "$2" <<-'PY'
	import struct, subprocess, sys
	path, which = sys.argv[1], sys.argv[2]
	with open(path, "rb") as f:
	    data = f.read()
	assert data[-64:-56] == b"CRYOEND\0"
	off, length = struct.unpack_from("<QQ", data, len(data) - 56)
	text = subprocess.run(["zstd", "-dcq"], input=data[off:off + length],
	                      capture_output=True, check=True).stdout.decode()
	frames = [l.split(" ") for l in text.splitlines() if l.startswith("frames ")]
	if which == "first":
	    lens = [int(x) for x in frames[0][2].split(",")]
	    print(int(frames[0][1]) + min(6000, lens[0] // 2))
	else:
	    lens = [int(x) for x in frames[-1][2].split(",")]
	    print(int(frames[-1][1]) + sum(lens[:-1]) + lens[-1] // 2)
	PY
}

# The live processes cryo started for this test: its environment names this
# test's state directory and its command line is cryo's, CRIU's, the
# guard's, cryo-init's or the ticker's (the test's own shells are not).
ours() {
	local e p st
	for e in /proc/[0-9]*/environ; do
		p=${e#/proc/}
		p=${p%/environ}
		grep -qzx "CRYO_STATE_DIR=$STATE" "$e" 2>/dev/null || continue
		tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null |
			grep -qE "criu|cryo-init|cryo-restore-guard|ticker\.py|^$CRYO (run|restore) " ||
			continue
		st=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f1)
		if [ -n "$st" ] && [ "$st" != Z ]; then echo "$p"; fi
	done
}

# Every process of ours descends from supervisor PID (none is orphaned).
all_under() {
	local p q n
	for p in $(ours); do
		q=$p
		for n in $(seq 20); do
			[ "$q" = "$1" ] && break
			q=$(sed 's/.*) //' "/proc/$q/stat" 2>/dev/null | cut -d' ' -f2)
			if [ -z "$q" ] || [ "$q" = 0 ]; then break; fi
		done
		if [ "$q" != "$1" ]; then
			echo "process $p ($(tr '\0' ' ' <"/proc/$p/cmdline")) is not under $1" >&2
			return 1
		fi
	done
}

# "PID STARTTIME" of every live process that descends from PID (a process
# mid-restore has neither command line nor environment yet: found this way).
tree_of() {
	cat /proc/[0-9]*/stat 2>/dev/null | awk -v root="$1" '
	{ pid = $1; sub(/.*\) /, ""); if ($1 == "Z") next; kids[$2] = kids[$2] " " pid; start[pid] = $20 }
	END {
		q[1] = root; n = 1
		for (i = 1; i <= n; i++) {
			m = split(kids[q[i]], k, " ")
			for (j = 1; j <= m; j++) { q[++n] = k[j]; print k[j], start[k[j]] }
		}
	}'
}

# Those of the "PID STARTTIME" lines in $TREE that still live.
tree_alive() {
	local pid start now
	while read -r pid start; do
		[ -n "$pid" ] || continue
		now=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '$1 != "Z" { print $20 }')
		if [ "$now" = "$start" ]; then echo "$pid $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"; fi
	done <<<"$TREE"
}

# Nothing is left: none of $TREE (taken before), nothing of ours.
none_left() {
	local left
	left="$(tree_alive)$(ours)"
	[ -z "$left" ] && return 0
	echo "left: $left" >&2
	return 1
}

# Ends what a test left, by PID, if it failed midway: processes of ours only.
kill_ours() {
	local p
	for p in $(ours) $(tree_alive | cut -d' ' -f1); do kill -KILL "$p" 2>/dev/null || true; done
}

# two_generations_damaged WHICH [--no-delta]: runs the ticker as c, takes
# two checkpoints (the second incremental unless --no-delta) and damages
# generation 2 at piece WHICH.
two_generations_damaged() {
	local which=$1
	shift
	start_cryo c "$@" -- "$TICKER"
	wait_for 30 has_pid c
	wait_for 30 grep -q '^3$' "$STATE/c.out"
	run "$CRYO" checkpoint c
	assert_success
	run "$CRYO" checkpoint c
	assert_success
	run "$CRYO" inspect c@2
	if [ "$1" = --no-delta ]; then
		refute_output --partial "incremental on generation"
	else
		assert_output --partial "incremental on generation 1"
	fi
	local off
	off=$(frame_offset "$(gen_file c 2)" "$which")
	flip_byte "$(gen_file c 2)" "$off"
	run "$CRYO" images c
	assert_line --regexp '^2 .* NO: '
}

# After a damaged generation 2: generation 1 runs on, within 30 s, and the
# damaged one is set aside.
restored_from_1() {
	local log=$1
	wait_for 30 grep -q "restored 'c' from generation 1" "$log"
	run grep -c "generation 2 of 'c' .*damaged.*set aside as gen-000000000002.cryo.damaged" "$log"
	assert_output 1
	[ -e "$(gen_file c 2).damaged" ]
	wait_for 30 has_pid c
	# It runs on: it counts further.
	local n
	n=$(wc -l <"$STATE/c.out")
	wait_for 10 count_at_least "$((n + 3))" . "$STATE/c.out"
}

# Stops c, then nothing of the test is left.
stop_and_check() {
	all_under "$1"
	TREE=$(tree_of "$1")
	run "$CRYO" stop c
	assert_success
	wait_supervisor "$1" 30
	wait_for 20 none_left
	# CRIU's complaints go to its log, never to the terminal.
	run grep -c "Error (" "$STATE/c.err"
	assert_output 0
}

kill_program_and_check() {
	kill -KILL "$(prog_pid c)"
	restored_from_1 "$STATE/c.err"
	stop_and_check "$LAST_SUPERVISOR"
}

@test "damage in the first piece of a whole generation's memory: set aside, the one before restored, nothing left" {
	two_generations_damaged first --no-delta
	kill_program_and_check
}

@test "damage in a late piece of a whole generation's memory: set aside, the one before restored, nothing left" {
	two_generations_damaged last --no-delta
	kill_program_and_check
}

@test "damage in an incremental generation's memory: set aside, the one before restored, nothing left" {
	two_generations_damaged first
	kill_program_and_check
}

@test "cryo restore of a damaged generation: set aside, the one before restored, nothing left" {
	two_generations_damaged first --no-delta
	run "$CRYO" stop c
	assert_success
	TREE=$(tree_of "$LAST_SUPERVISOR")
	wait_supervisor "$LAST_SUPERVISOR" 30
	wait_for 20 none_left
	"$CRYO" restore c >>"$STATE/c.out" 2>"$STATE/c.restore.err" </dev/null &
	local sup=$!
	track_supervisor "$sup"
	restored_from_1 "$STATE/c.restore.err"
	stop_and_check "$sup"
	run grep -c "Error (" "$STATE/c.restore.err"
	assert_output 0
}

# Runs the ticker, takes a checkpoint and kills the program: its restore's
# first lazy page does not come (CRYO_INJECT_LAZY_FAULT), the restore stays
# under way, until a process of ours waits for that page.
stalled_restore() {
	export CRYO_INJECT_LAZY_FAULT=stall
	start_cryo c --no-delta -- "$TICKER"
	wait_for 30 has_pid c
	wait_for 30 grep -q '^3$' "$STATE/c.out"
	run "$CRYO" checkpoint c
	assert_success
	kill -KILL "$(prog_pid c)"
	wait_for 30 waits_for_a_page
}

# A process of ours waits for a page (the restored program, mid-restore).
waits_for_a_page() {
	local p
	for p in $(tree_of "$LAST_SUPERVISOR" | cut -d' ' -f1); do
		[ "$(cat "/proc/$p/wchan" 2>/dev/null)" = handle_userfault ] && return 0
	done
	return 1
}

@test "a restore whose memory does not come ends at SIGTERM; nothing is left" {
	stalled_restore
	TREE=$(tree_of "$LAST_SUPERVISOR")
	kill -TERM "$LAST_SUPERVISOR"
	wait_supervisor "$LAST_SUPERVISOR" 20
	wait_for 20 none_left
	run grep -c "Error (" "$STATE/c.err"
	assert_output 0
}

@test "a supervisor killed outright while it restores leaves no CRIU and no half-restored program" {
	stalled_restore
	all_under "$LAST_SUPERVISOR"
	TREE=$(tree_of "$LAST_SUPERVISOR")
	kill -KILL "$LAST_SUPERVISOR"
	wait "$LAST_SUPERVISOR" || true
	wait_for 20 none_left || {
		kill_ours
		return 1
	}
}

# A `criu swrk` (a CRIU service process) descends from PID.
criu_waits_under() {
	local p _
	while read -r p _; do
		tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qE '(^|/)criu swrk ' && return 0
	done <<<"$(tree_of "$1")"
	return 1
}

@test "cryo stop: the CRIU started ahead for the next restore ends quietly" {
	start_cryo c -- "$TICKER"
	wait_for 30 has_pid c
	# After a checkpoint, and after a restore, the next restore is made
	# ready: a CRIU waits.
	run "$CRYO" checkpoint c
	assert_success
	wait_for 10 criu_waits_under "$LAST_SUPERVISOR"
	kill -KILL "$(prog_pid c)"
	wait_for 30 grep -q "restored 'c' from generation 1" "$STATE/c.err"
	wait_for 30 has_pid c
	wait_for 10 criu_waits_under "$LAST_SUPERVISOR"
	TREE=$(tree_of "$LAST_SUPERVISOR")
	run "$CRYO" stop c
	assert_success
	wait_supervisor "$LAST_SUPERVISOR" 30
	wait_for 20 none_left
	run cat "$STATE/c.out" "$STATE/c.err"
	refute_output --partial "Error ("
}

@test "a supervisor killed outright: the CRIU started ahead ends without a word on the terminal" {
	start_cryo c -- "$TICKER"
	wait_for 30 has_pid c
	run "$CRYO" checkpoint c
	assert_success
	wait_for 10 criu_waits_under "$LAST_SUPERVISOR"
	TREE=$(tree_of "$LAST_SUPERVISOR")
	kill -KILL "$LAST_SUPERVISOR"
	wait "$LAST_SUPERVISOR" || true
	wait_for 20 none_left
	run cat "$STATE/c.out" "$STATE/c.err"
	refute_output --partial "Error ("
}
