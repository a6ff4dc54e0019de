#!/usr/bin/env bats
# Fds CRIU would dump but no restore under cryo could bring back: the
# checkpoint is refused naming them, the program runs on, and the last good
# generation stays (and restores). And what CRIU alone would lose after a
# checkpoint, which cryo keeps: a file unlinked while open with another hard
# link; and two kinds that were such while the program had no /proc of its
# own, restored now.

load helpers

setup() { setup_state; }
teardown() { teardown_state; }

# Checkpoints NAME (generation 1), makes its program take the fd (touches
# GO, waits for WAIT_FOR in its output), then checks that the second
# checkpoint is refused with a line matching REGEXP, that the program runs
# on and that generation 1 is the only one.
refused_after_good() {
	local name=$1 go=$2 wait_for=$3 regexp=$4 n
	wait_for 30 count_at_least 2 '^[0-9]' "$STATE/$name.out"
	run "$CRYO" checkpoint "$name"
	assert_success
	touch "$go"
	wait_for 30 grep -q "$wait_for" "$STATE/$name.out"
	run "$CRYO" checkpoint "$name"
	assert_failure
	assert_output --regexp "$regexp"
	[ "${#lines[@]}" -eq 1 ]
	n=$(grep -c '^[0-9]' "$STATE/$name.out")
	wait_for 10 count_at_least $((n + 3)) '^[0-9]' "$STATE/$name.out"
	run "$CRYO" images "$name"
	assert_output --regexp $'\n1 [^\n]* yes$'
	[ "${#lines[@]}" -eq 2 ]
}

# A crash of NAME restores generation 1.
restores_first() {
	"$CRYO" kill "$1" >/dev/null
	wait_for 30 grep -q "restored '$1' from generation 1" "$STATE/$1.err"
	local n
	n=$(grep -c '^[0-9]' "$STATE/$1.out")
	wait_for 10 count_at_least $((n + 3)) '^[0-9]' "$STATE/$1.out"
}

# Starts NAME holding an fd on PATH (fd-holder.py), checkpoints it, kills it
# and waits for its restore; sets FD to the fd and HELD to what it was on.
held_through_restore() {
	local name=$1 path=$2
	touch "$STATE/go"
	start_cryo "$name" -- "$CRYO_TESTS/programs/fd-holder.py" "$path" "$STATE/go"
	wait_for 30 grep -q '^holding ' "$STATE/$name.out"
	wait_for 30 count_at_least 2 '^[0-9]' "$STATE/$name.out"
	read -r _ HELD _ _ FD < <(grep '^holding ' "$STATE/$name.out")
	run "$CRYO" checkpoint "$name"
	assert_success
	restores_first "$name"
}

@test "an fd on its own /proc/PID/maps: checkpointed, and restored on the program's own maps" {
	held_through_restore maps /proc/self/maps
	# The program sees itself as PID 2 of its own /proc, before and after.
	assert_equal "$HELD" /proc/2/maps
	local pid
	pid=$(prog_pid maps)
	assert_equal "$(readlink "/proc/$pid/fd/$FD")" /proc/2/maps
	assert_equal "$(head -n 1 "/proc/$pid/fd/$FD")" "$(head -n 1 "/proc/$pid/maps")"
}

@test "an fd on a namespace file (/proc/self/ns/net): checkpointed, and restored on the same namespace" {
	held_through_restore ns /proc/self/ns/net
	local pid
	pid=$(prog_pid ns)
	assert_equal "$(readlink "/proc/$pid/fd/$FD")" "$HELD"
	assert_equal "$(readlink "/proc/$pid/ns/net")" "$HELD"
}

# NAME (cryo run options ARGS...) holds an fd, for reading and writing, on a
# file unlinked while open that has another hard link: the checkpoint
# succeeds; the file changes through its other link; after a crash the
# restored program reads through its fd what the file held at the checkpoint
# and writes through it, its other link left as it is; a second checkpoint
# and crash bring back what it wrote. CRIU's link_remap.N is never left in
# the directory.
restores_unlinked() {
	local name=$1 dir=$STATE/files n
	shift
	mkdir "$dir"
	start_cryo "$name" "$@" -- "$CRYO_TESTS/programs/unlinked-holder.py" "$dir" "kept text"
	wait_for 30 count_at_least 2 '^[0-9]' "$STATE/$name.out"
	touch "$dir/go"
	wait_for 30 grep -q '^unlinked' "$STATE/$name.out"
	run "$CRYO" checkpoint "$name"
	assert_success
	run ls -A "$dir"
	assert_output "$(printf 'data.link\ngo')"
	printf 'changed after' >"$dir/data.link"
	wait_for 10 grep -q '^[0-9]* changed after$' "$STATE/$name.out"
	"$CRYO" kill "$name" >/dev/null
	wait_for 30 grep -q "restored '$name' from generation 1" "$STATE/$name.err"
	n=$(grep -c '^[0-9]' "$STATE/$name.out")
	wait_for 10 count_at_least $((n + 3)) '^[0-9]' "$STATE/$name.out"
	run tail -n 1 "$STATE/$name.out"
	assert_output --regexp '^[0-9]+ kept text$'
	run ls -A "$dir"
	assert_output "$(printf 'data.link\ngo')"
	assert_equal "$(cat "$dir/data.link")" "changed after"
	# Writes through the fd reach the restored file, not the other link.
	touch "$dir/poke"
	wait_for 10 grep -q '^[0-9]* POKEDtext$' "$STATE/$name.out"
	assert_equal "$(cat "$dir/data.link")" "changed after"
	# The restored file has no name left: CRIU keeps it in the image.
	run "$CRYO" checkpoint "$name"
	assert_success
	"$CRYO" kill "$name" >/dev/null
	wait_for 30 grep -q "restored '$name' from generation 2" "$STATE/$name.err"
	n=$(grep -c '^[0-9]' "$STATE/$name.out")
	wait_for 10 count_at_least $((n + 3)) '^[0-9]' "$STATE/$name.out"
	run tail -n 1 "$STATE/$name.out"
	assert_output --regexp '^[0-9]+ POKEDtext$'
	run ls -A "$dir"
	assert_output "$(printf 'data.link\ngo')"
}

@test "an fd on a file unlinked while open with another hard link: checkpointed, and restored lazily as it was, no link_remap left" {
	restores_unlinked ul
	run grep -c "restored 'ul' from generation .*its memory follows lazily" "$STATE/ul.err"
	assert_output 2
}

@test "an fd on a file unlinked while open with another hard link: restored in full as it was, no link_remap left" {
	restores_unlinked ulfull --no-lazy-restore
	run grep -c "restored 'ulfull' from generation .*lazily" "$STATE/ulfull.err"
	assert_output 0
}

@test "a checkpoint that fails holding a file unlinked while open with another hard link leaves no link_remap; the program runs on" {
	local dir=$STATE/files n
	mkdir "$dir"
	start_cryo ulfail --files-max 256K -- "$CRYO_TESTS/programs/unlinked-holder.py" "$dir" \
		"kept text" "$STATE/big"
	wait_for 30 count_at_least 2 '^[0-9]' "$STATE/ulfail.out"
	touch "$dir/go"
	wait_for 30 grep -q '^unlinked' "$STATE/ulfail.out"
	run "$CRYO" checkpoint ulfail
	assert_failure
	assert_output --regexp "^cryo: cannot checkpoint 'ulfail': the program holds '$STATE/big' .* --files-max SIZE"
	run ls -A "$dir"
	assert_output "$(printf 'data.link\ngo')"
	n=$(grep -c '^[0-9]' "$STATE/ulfail.out")
	wait_for 10 count_at_least $((n + 3)) '^[0-9]' "$STATE/ulfail.out"
}
