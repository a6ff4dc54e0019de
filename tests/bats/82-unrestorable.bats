#!/usr/bin/env bats
# Fds CRIU would dump but no restore under cryo could bring back: the
# checkpoint is refused naming them, the program runs on, and the last good
# generation stays (and restores).

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

@test "an fd on its own /proc/PID/maps: the checkpoint is refused naming it; the last generation stays" {
	start_cryo maps -- "$CRYO_TESTS/programs/fd-holder.py" /proc/self/maps "$STATE/go"
	refused_after_good maps "$STATE/go" '^holding /proc/[0-9]*/maps' \
		"^cryo: cannot checkpoint 'maps': fd-holder.py \(PID ([0-9]+)\) holds fd [0-9]+ on /proc/\1/maps, a file in /proc of the workload's own processes, which CRIU cannot restore in cryo's PID namespace \(the restored process has another host PID\); close it before checkpointing; the program runs on\$"
	restores_first maps
}

@test "an fd on a namespace file (/proc/self/ns/net): the checkpoint is refused naming it; the last generation stays" {
	start_cryo ns -- "$CRYO_TESTS/programs/fd-holder.py" /proc/self/ns/net "$STATE/go"
	refused_after_good ns "$STATE/go" '^holding net:\[' \
		"^cryo: cannot checkpoint 'ns': fd-holder.py \(PID [0-9]+\) holds fd [0-9]+ on net:\[[0-9]+\], a namespace file, which CRIU cannot restore in cryo's PID namespace \(it would reopen another process's namespace\); close it before checkpointing; the program runs on\$"
	restores_first ns
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
