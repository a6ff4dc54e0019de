#!/usr/bin/env bats
# Files the program holds open for writing without O_APPEND (a database, a
# state file rewritten in place): a checkpoint copies them while the program
# is frozen, a restore puts them back before CRIU reopens them, so the
# program and its files carry on from the same instant.

load helpers

setup() { setup_state; }
teardown() { teardown_state; }

PROGRAMS=$CRYO_TESTS/programs

# Lines matching PATTERN in FILE.
count_lines() {
	grep -c -- "$1" "$2" || true
}

# checkpoint_kill_restore NAME PATTERN: once the program has printed 10
# lines matching PATTERN, checkpoints it, lets it print 30 more, kills it as
# a crash would and waits until the restored program has printed 30 more.
checkpoint_kill_restore() {
	local name=$1 pattern=$2 n
	wait_for 30 count_at_least 10 "$pattern" "$STATE/$name.out"
	run "$CRYO" checkpoint "$name"
	assert_success
	n=$(count_lines "$pattern" "$STATE/$name.out")
	wait_for 30 count_at_least $((n + 30)) "$pattern" "$STATE/$name.out"
	run "$CRYO" kill "$name"
	assert_success
	wait_for 30 count_at_least 1 "restored '$name' from generation 1" "$STATE/$name.err"
	n=$(count_lines "$pattern" "$STATE/$name.out")
	wait_for 30 count_at_least $((n + 30)) "$pattern" "$STATE/$name.out"
	# The program found its file as its memory had it (no MISMATCH, no
	# second restore), and went back to the checkpoint: lines repeat.
	run grep -c "restored '$name' from generation" "$STATE/$name.err"
	assert_output 1
	run grep MISMATCH "$STATE/$name.err"
	assert_failure
	run sh -c "grep -- '$pattern' '$STATE/$name.out' | sort | uniq -d | wc -l"
	[ "$output" -ge 1 ]
}

# Stops workload NAME, whose supervisor is $LAST_SUPERVISOR.
stop_workload() {
	run "$CRYO" stop "$1"
	assert_success
	wait_supervisor "$LAST_SUPERVISOR" 30
}

# The database is sound and holds rows 1..N with nothing missing.
check_database() {
	run python3 - "$1" <<-'PY'
	import sqlite3, sys
	con = sqlite3.connect(sys.argv[1])
	print(con.execute("pragma integrity_check").fetchone()[0])
	count, top, bad = con.execute("select count(*), max(i), sum(i != v) from t").fetchone()
	print("rows", "contiguous" if count == top and bad == 0 else f"{count} {top} {bad}")
	PY
	assert_success
	assert_line --index 0 ok
	assert_line --index 1 "rows contiguous"
}

@test "an SQLite database (rollback journal) carries on from the checkpoint after a crash, restored lazily" {
	start_cryo db -- python3 "$PROGRAMS/sqlite-writer.py" "$STATE/data.db"
	checkpoint_kill_restore db '^row '
	run "$CRYO" inspect db
	assert_success
	assert_output --partial "files copied with it"
	assert_output --regexp "$STATE/data.db \([0-9.]+ KiB\)"
	run grep -c "its memory follows lazily" "$STATE/db.err"
	assert_output 1
	stop_workload db
	check_database "$STATE/data.db"
}

@test "an SQLite database in WAL mode carries on from the checkpoint after a crash, restored in full" {
	start_cryo db --no-lazy-restore -- python3 "$PROGRAMS/sqlite-writer.py" "$STATE/data.db" wal
	checkpoint_kill_restore db '^row '
	run "$CRYO" inspect db
	assert_output --partial "$STATE/data.db-wal ("
	stop_workload db
	check_database "$STATE/data.db"
}

@test "a state file rewritten in place is restored exactly" {
	start_cryo sf -- python3 "$PROGRAMS/state-writer.py" inplace "$STATE/state"
	checkpoint_kill_restore sf '^step '
	stop_workload sf
}

@test "a state file truncated and rewritten is restored exactly" {
	start_cryo sf --no-lazy-restore -- python3 "$PROGRAMS/state-writer.py" truncate "$STATE/state"
	checkpoint_kill_restore sf '^step '
	stop_workload sf
}

@test "a state file replaced by renaming a new version over it is restored exactly" {
	start_cryo sf -- python3 "$PROGRAMS/state-writer.py" rename "$STATE/state"
	checkpoint_kill_restore sf '^step '
	stop_workload sf
}

@test "a file rewritten without pause is copied at the instant of the freeze, incremental generation and lazy restore too" {
	# A step every few microseconds, and too few lines to fill the pipe
	# while the supervisor is busy checkpointing: the program never waits.
	export STATE_WRITER_PAUSE=0 STATE_WRITER_PRINT_EVERY=500
	start_cryo sf -- python3 "$PROGRAMS/state-writer.py" truncate "$STATE/state"
	wait_for 30 count_at_least 10 '^step ' "$STATE/sf.out"
	run "$CRYO" checkpoint sf
	assert_success
	run "$CRYO" checkpoint sf
	assert_success
	run "$CRYO" inspect sf
	assert_output --partial "incremental on generation 1"
	n=$(count_lines '^step ' "$STATE/sf.out")
	wait_for 30 count_at_least $((n + 20)) '^step ' "$STATE/sf.out"
	run "$CRYO" kill sf
	assert_success
	wait_for 30 count_at_least 1 "restored 'sf' from generation 2 .*its memory follows lazily" "$STATE/sf.err"
	n=$(count_lines '^step ' "$STATE/sf.out")
	wait_for 30 count_at_least $((n + 20)) '^step ' "$STATE/sf.out"
	run grep -c "restored 'sf' from generation" "$STATE/sf.err"
	assert_output 1
	run grep MISMATCH "$STATE/sf.err"
	assert_failure
	stop_workload sf
}

file_bigger_than() {
	[ "$(stat -c %s "$2")" -gt "$1" ]
}

@test "files past --files-max: the checkpoint is refused in one line, the program runs on, the last good generation stays" {
	start_cryo sf --files-max 256K -- python3 "$PROGRAMS/state-writer.py" inplace "$STATE/state" "$STATE/grow"
	wait_for 30 count_at_least 5 '^step ' "$STATE/sf.out"
	run "$CRYO" checkpoint sf
	assert_success
	touch "$STATE/grow"
	wait_for 30 file_bigger_than 262144 "$STATE/state"
	run "$CRYO" checkpoint sf
	assert_failure
	assert_output --regexp "cannot checkpoint 'sf': the program holds '$STATE/state' \([0-9.]+ [KM]iB\) open for writing.*--files-max SIZE"
	assert_equal "$(echo "$output" | wc -l)" 1
	rm "$STATE/grow"
	run has_pid sf
	assert_success
	run "$CRYO" images sf
	assert_line --regexp '^1 '
	refute_line --regexp '^2 '
	# A crash now goes back to generation 1, file and all.
	n=$(count_lines '^step ' "$STATE/sf.out")
	wait_for 30 count_at_least $((n + 5)) '^step ' "$STATE/sf.out"
	run "$CRYO" kill sf
	assert_success
	wait_for 30 count_at_least 1 "restored 'sf' from generation 1" "$STATE/sf.err"
	n=$(count_lines '^step ' "$STATE/sf.out")
	wait_for 30 count_at_least $((n + 10)) '^step ' "$STATE/sf.out"
	run grep MISMATCH "$STATE/sf.err"
	assert_failure
	stop_workload sf
}
