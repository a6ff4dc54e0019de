#!/usr/bin/env bats
# Fds CRIU would dump but no restore under cryo could bring back: the
# checkpoint is refused naming them, the program runs on, and the last good
# generation stays (and restores). And two kinds that were such while the
# program had no /proc of its own, restored now.

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

@test "an fd on a file unlinked while open with another hard link: refused naming it, no link_remap left; the last generation stays" {
	mkdir "$STATE/files"
	start_cryo ul -- "$CRYO_TESTS/programs/unlinked-holder.py" "$STATE/files" "kept text"
	refused_after_good ul "$STATE/files/go" '^unlinked' \
		"^cryo: cannot checkpoint 'ul': unlinked-holder \(PID [0-9]+\) holds fd [0-9]+ on $STATE/files/data \(deleted\), a file unlinked while open that has other hard links, which CRIU cannot restore once the program ran on after the checkpoint \(its link_remap link is gone\); close it before checkpointing; the program runs on\$"
	# CRIU was not asked to make a link next to the file.
	run ls -A "$STATE/files"
	assert_output "$(printf 'data.link\ngo')"
	assert_equal "$(cat "$STATE/files/data.link")" "kept text"
}
