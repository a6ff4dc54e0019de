#!/usr/bin/env bats
# Each workload lives in its own PID namespace: restores never collide with
# PIDs in use, not even those of another copy of the same image.

load helpers

setup() { setup_state; }
teardown() { teardown_state; }

@test "two copies restored from one image, one after the other, both run to the end" {
	want=$("$CRYO_EXAMPLES/counter" 80 10 0 | grep '^result')
	start_cryo c -- "$CRYO_EXAMPLES/counter" 80 10 50
	first=$LAST_SUPERVISOR
	wait_for 60 count_at_least 1 '^checkpointed at step 20' "$STATE/c.out"
	# Two more state directories holding the same generations (2 may be
	# built on 1).
	for copy in a b; do
		mkdir -p "$STATE/$copy/c"
		cp "$(gen_file c 1)" "$(gen_file c 2)" "$STATE/$copy/c/"
	done
	"$CRYO" restore --generation 2 --state-dir "$STATE/a" c >"$STATE/a.out" 2>"$STATE/a.err" </dev/null &
	track_supervisor "$!"
	a=$!
	wait_for 30 grep -q "restored 'c' from generation 2" "$STATE/a.err"
	"$CRYO" restore --generation 2 --state-dir "$STATE/b" c >"$STATE/b.out" 2>"$STATE/b.err" </dev/null &
	track_supervisor "$!"
	b=$!
	wait_for 30 grep -q "restored 'c' from generation 2" "$STATE/b.err"
	# Three copies of one program, all PID 2 inside their namespaces, none
	# colliding with another on the host.
	pa=$(cat "$STATE/a/c/pid") pb=$(cat "$STATE/b/c/pid") p0=$(prog_pid c)
	[ "$pa" != "$pb" ] && [ "$pa" != "$p0" ] && [ "$pb" != "$p0" ]
	grep -q 'NSpid:.*[[:space:]]2$' "/proc/$pa/status"
	grep -q 'NSpid:.*[[:space:]]2$' "/proc/$pb/status"
	for sup in "$first" "$a" "$b"; do
		wait_supervisor "$sup" 60
		assert_equal "$status" 0
	done
	for f in c a b; do
		assert_equal "$(grep '^result' "$STATE/$f.out")" "$want"
	done
	grep -q '^restored at step 20 from generation 2$' "$STATE/a.out"
	grep -q '^restored at step 20 from generation 2$' "$STATE/b.out"
}

@test "a restore right after kill -9, again and again, does not hit a PID still taken" {
	start_cryo c -- "$CRYO_EXAMPLES/counter" 1000 5 20
	for round in 1 2 3 4; do
		wait_for 30 count_at_least "$round" '^checkpointed at step' "$STATE/c.out"
		kill -KILL "$(prog_pid c)"
		wait_for 30 count_at_least "$round" "restored 'c' from generation" "$STATE/c.err"
		wait_for 30 has_pid c
	done
	run grep -c "cannot restore" "$STATE/c.err"
	assert_output 0
}
