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
	assert_output --regexp "$STATE/data.db \([0-9.]+ KiB, (stored whole|[0-9.]+ KiB stored: the blocks changed since generation [0-9]+)\)"
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

@test "a file mapped shared and writable, its fd closed, is restored as it was at the checkpoint" {
	start_cryo mw -- "$CRYO_TEST_PROGRAMS/map-writer" "$STATE/mapped"
	checkpoint_kill_restore mw '^step '
	run "$CRYO" inspect mw
	assert_output --partial "$STATE/mapped ("
	stop_workload mw
}

@test "a state file deleted after the checkpoint is restored exactly" {
	start_cryo sf -- python3 "$PROGRAMS/state-writer.py" inplace "$STATE/state"
	wait_for 30 count_at_least 10 '^step ' "$STATE/sf.out"
	run "$CRYO" checkpoint sf
	assert_success
	# The program writes on to the file it holds; its name is gone.
	rm "$STATE/state"
	n=$(count_lines '^step ' "$STATE/sf.out")
	wait_for 30 count_at_least $((n + 10)) '^step ' "$STATE/sf.out"
	run "$CRYO" kill sf
	assert_success
	wait_for 30 count_at_least 1 "restored 'sf' from generation 1" "$STATE/sf.err"
	n=$(count_lines '^step ' "$STATE/sf.out")
	wait_for 30 count_at_least $((n + 10)) '^step ' "$STATE/sf.out"
	[ -f "$STATE/state" ]
	run grep MISMATCH "$STATE/sf.err"
	assert_failure
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

# ---- which files a checkpoint copies: --files-copy, --files-skip ----

@test "--files-copy none: no file is copied; a restore after it changed size fails as CRIU's rule says, in one line with the way out" {
	start_cryo sf --files-copy none -- python3 "$PROGRAMS/state-writer.py" inplace "$STATE/state"
	wait_for 30 count_at_least 10 '^step ' "$STATE/sf.out"
	run "$CRYO" checkpoint sf
	assert_success
	run "$CRYO" inspect sf
	assert_success
	refute_output --partial "files copied with it"
	run sh -c "'$CRYO' inspect --json sf | jq -c .held_files"
	assert_output '[]'
	# The file grows at each step: CRIU refuses it at the restore.
	n=$(count_lines '^step ' "$STATE/sf.out")
	wait_for 30 count_at_least $((n + 10)) '^step ' "$STATE/sf.out"
	run "$CRYO" kill sf
	assert_success
	wait_supervisor "$LAST_SUPERVISOR" 60
	[ "$status" -ne 0 ]
	run grep "cannot restore generation 1 of 'sf':" "$STATE/sf.err"
	assert_output --regexp "has bad size .*cryo did not copy it \(--files-copy none or --files-skip\).*--files-copy snapshot"
	assert_equal "$(echo "$output" | wc -l)" 1
	run grep -c "no generation of 'sf' could be restored; giving up" "$STATE/sf.err"
	assert_output 1
	# Nothing is lost: the generation stays for a restore with the file
	# as it was.
	run "$CRYO" images sf
	assert_line --regexp '^1 '
}

@test "--files-skip DIR: a file under DIR is not copied and others are; a restore puts back only those copied" {
	mkdir "$STATE/cache"
	start_cryo hf --files-skip "$STATE/cache/" -- "$PROGRAMS/hold-files.py" \
		"$STATE/cache/scratch" "$STATE/cache-not" "$STATE/data"
	wait_for 30 count_at_least 1 '^holding 3 files' "$STATE/hf.out"
	run "$CRYO" checkpoint hf
	assert_success
	run sh -c "'$CRYO' inspect --json hf | jq -r '.held_files[].path' | sort"
	assert_success
	assert_output "$(printf '%s\n' "$STATE/cache-not" "$STATE/data")"
	# After the checkpoint the copied file grows, and the skipped one is
	# rewritten at its size (which CRIU takes).
	cp "$STATE/data" "$STATE/data.ref"
	echo more >>"$STATE/data"
	printf changed | dd of="$STATE/cache/scratch" conv=notrunc status=none
	cp "$STATE/cache/scratch" "$STATE/scratch.ref"
	run "$CRYO" kill hf
	assert_success
	wait_for 30 count_at_least 1 "restored 'hf' from generation 1" "$STATE/hf.err"
	cmp "$STATE/data" "$STATE/data.ref"
	cmp "$STATE/cache/scratch" "$STATE/scratch.ref"
	stop_workload hf
}

@test "bad --files-copy and --files-skip values are refused in one line naming the option and the way out" {
	run "$CRYO" run --files-copy check -- true
	assert_failure 2
	assert_output "cryo: invalid --files-copy 'check': use snapshot or none"
	run "$CRYO" restore --files-copy all nothing
	assert_failure 2
	assert_output "cryo: invalid --files-copy 'all': use snapshot or none"
	run "$CRYO" run --files-skip cache -- true
	assert_failure 2
	assert_output "cryo: invalid --files-skip 'cache': give an absolute path, e.g. /var/cache/app"
	run "$CRYO" run --files-skip "$STATE/../etc" -- true
	assert_failure 2
	assert_output --partial "cryo: invalid --files-skip '$STATE/../etc': a path without '.', '..' or empty parts"
	mkdir "$STATE/real"
	ln -s "$STATE/real" "$STATE/link"
	run "$CRYO" run --files-skip "$STATE/link/" -- true
	assert_failure 2
	assert_output "cryo: invalid --files-skip '$STATE/link/': it goes through a symbolic link; give the path it leads to, '$STATE/real'"
}

# ---- held files stored as the blocks changed since the generation before ----

# block_cmd NAME N CMD: has block-writer.py (workload NAME, its file
# $STATE/blocks) run CMD, its Nth command, and waits until it is done (once
# more than before: a restored program counts again from its checkpoint).
block_cmd() {
	local had
	had=$(count_lines "^done $2 " "$STATE/$1.out")
	echo "$3" >"$STATE/blocks.cmd"
	wait_for 30 count_at_least $((had + 1)) "^done $2 " "$STATE/$1.out"
}

# held FIELD NAME@GEN: FIELD (size, stored, base) of the one held file of
# generation GEN, from cryo inspect --json.
held() {
	"$CRYO" inspect --json "$2" | jq -r ".held_files[0].$1"
}

# Checkpoints NAME, expecting generation GEN, and keeps a copy of its file as
# it then is (it changes only on a command) as $STATE/ref.GEN.
checkpoint_ref() {
	run "$CRYO" checkpoint "$1"
	assert_success
	[ "$("$CRYO" images --json "$1" | jq '.[-1].generation')" = "$2" ]
	cp "$STATE/blocks" "$STATE/ref.$2"
}

# After a kill: NAME was restored from generation GEN, its file is exactly
# $STATE/ref.GEN, and the program ran a command N more on it without finding
# its file other than its memory says.
restored_exactly() {
	local name=$1 gen=$2 n=$3
	wait_for 30 grep -q "restored '$name' from generation $gen" "$STATE/$name.err"
	cmp "$STATE/blocks" "$STATE/ref.$gen"
	block_cmd "$name" "$n" "change 1"
	run grep MISMATCH "$STATE/$name.err"
	assert_failure
	run grep -c "restored '$name' from generation" "$STATE/$name.err"
	assert_output 1
}

@test "a held file with 1% of its blocks changed stores about 1% of it, against the generation before" {
	# 8 MiB: 2048 blocks, 20 of them changed.
	start_cryo bw -- python3 "$PROGRAMS/block-writer.py" "$STATE/blocks" 8192
	wait_for 30 grep -q '^ready' "$STATE/bw.out"
	checkpoint_ref bw 1
	[ "$(held stored bw@1)" = 8388608 ]
	[ "$(held base bw@1)" = 0 ]
	block_cmd bw 1 "change 20"
	checkpoint_ref bw 2
	run "$CRYO" inspect bw@2
	assert_output --regexp "$STATE/blocks \(8.0 MiB, [0-9.]+ KiB stored: the blocks changed since generation 1\)"
	local stored
	stored=$(held stored bw@2)
	[ "$(held size bw@2)" = 8388608 ]
	[ "$(held base bw@2)" = 1 ]
	# The 20 blocks and a little: at most 2% of the file.
	[ "$stored" -ge $((20 * 4096)) ]
	[ "$stored" -le $((8388608 / 50)) ]
	[ "$("$CRYO" images --json bw | jq '.[-1].held_files[0].stored')" = "$stored" ]
	run "$CRYO" kill bw
	assert_success
	restored_exactly bw 2 2
	stop_workload bw
}

@test "a chain of three incremental generations of a changing held file restores exactly, lazily" {
	start_cryo bw -- python3 "$PROGRAMS/block-writer.py" "$STATE/blocks" 1024
	wait_for 30 grep -q '^ready' "$STATE/bw.out"
	checkpoint_ref bw 1
	local g
	for g in 2 3 4; do
		block_cmd bw $((g - 1)) "change 5"
		checkpoint_ref bw $g
		[ "$(held base bw@$g)" = $((g - 1)) ]
	done
	run "$CRYO" inspect bw@4
	assert_output --partial "incremental on generation 3 (3 in a row)"
	# Changed after the last checkpoint: put back as it was then.
	block_cmd bw 4 "change 50"
	block_cmd bw 5 "grow 5"
	run "$CRYO" kill bw
	assert_success
	restored_exactly bw 4 4
	run grep -c "its memory follows lazily" "$STATE/bw.err"
	assert_output 1
	stop_workload bw
}

@test "a held file truncated, grown and renamed over between incremental generations restores exactly" {
	start_cryo bw --no-lazy-restore -- python3 "$PROGRAMS/block-writer.py" "$STATE/blocks" 1024
	wait_for 30 grep -q '^ready' "$STATE/bw.out"
	checkpoint_ref bw 1
	# Blocks vanish; a partial last block comes, grows, is cut again.
	block_cmd bw 1 "truncate 401"
	checkpoint_ref bw 2
	[ "$(held base bw@2)" = 1 ]
	[ "$(held size bw@2)" = $((401 * 1024)) ]
	block_cmd bw 2 "grow 9"
	checkpoint_ref bw 3
	[ "$(held base bw@3)" = 2 ]
	block_cmd bw 3 "truncate 398"
	block_cmd bw 4 "change 3"
	checkpoint_ref bw 4
	[ "$(held base bw@4)" = 3 ]
	# Another inode at the path: stored whole, then against that.
	block_cmd bw 5 "rename"
	checkpoint_ref bw 5
	[ "$(held base bw@5)" = 0 ]
	block_cmd bw 6 "change 2"
	checkpoint_ref bw 6
	[ "$(held base bw@6)" = 5 ]
	block_cmd bw 7 "truncate 100"
	run "$CRYO" kill bw
	assert_success
	restored_exactly bw 6 7
	stop_workload bw
	# An older generation rebuilds as it was too, lazily this time.
	rm "$STATE/blocks"
	"$CRYO" restore --generation 3 bw >"$STATE/bw.out" 2>"$STATE/bw.err" </dev/null &
	track_supervisor $!
	LAST_SUPERVISOR=$!
	restored_exactly bw 3 3
	stop_workload bw
}

@test "a damaged block of a held file in an incremental generation: set aside, the one before restored" {
	start_cryo bw -- python3 "$PROGRAMS/block-writer.py" "$STATE/blocks" 1024
	wait_for 30 grep -q '^ready' "$STATE/bw.out"
	checkpoint_ref bw 1
	block_cmd bw 1 "change 10"
	checkpoint_ref bw 2
	[ "$(held base bw@2)" = 1 ]
	# A changed block is random bytes, which the archive stores as they
	# are: one of them is damaged where it lies in generation 2.
	local hex off
	hex=$(sed -n 's/^changed //p' "$STATE/bw.out" | tail -1)
	off=$(python3 -c 'import sys; print(open(sys.argv[1], "rb").read().find(bytes.fromhex(sys.argv[2])))' "$(gen_file bw 2)" "$hex")
	[ "$off" -gt 0 ]
	flip_byte "$(gen_file bw 2)" $((off + 8))
	run "$CRYO" images bw
	assert_line --regexp '^2 .* NO: '
	run "$CRYO" kill bw
	assert_success
	wait_for 30 grep -q "restored 'bw' from generation 1" "$STATE/bw.err"
	run grep -c "generation 2 of 'bw' .*damaged.*set aside as gen-000000000002.cryo.damaged" "$STATE/bw.err"
	assert_output 1
	[ -e "$(gen_file bw 2).damaged" ]
	cmp "$STATE/blocks" "$STATE/ref.1"
	block_cmd bw 1 "change 1"
	run grep MISMATCH "$STATE/bw.err"
	assert_failure
	stop_workload bw
}
