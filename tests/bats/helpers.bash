# shellcheck shell=bash disable=SC2034  # variables are for the .bats files that load this
# Shared by cryo's bats suites. Every wait is bounded; every process a test
# starts is ended by PID in teardown; every state directory is a fresh temp.

bats_load_library bats-support
bats_load_library bats-assert

: "${CRYO:?set CRYO to the cryo binary (meson test does)}"
: "${CRYO_EXAMPLES:?set CRYO_EXAMPLES to the examples build directory}"
export CRYO_INIT
# meson points LD_LIBRARY_PATH at its own build's libcryo; the examples find
# theirs through their RUNPATH, which must win (a sanitized libcryo cannot be
# loaded into an unsanitized program).
unset LD_LIBRARY_PATH

setup_state() {
	STATE=$(mktemp -d /tmp/cryo-test.XXXXXX)
	export CRYO_STATE_DIR=$STATE
	SUPERVISORS=()
}

# Makes teardown end supervisor PID (started by the test itself).
track_supervisor() {
	SUPERVISORS+=("$1")
}

# Starts `cryo run ARGS...` in the background; its stdout and stderr go to
# $STATE/NAME.out and NAME.err, where NAME is the first argument.
start_cryo() {
	local name=$1
	shift
	"$CRYO" run --name "$name" "$@" >"$STATE/$name.out" 2>"$STATE/$name.err" </dev/null &
	SUPERVISORS+=("$!")
	LAST_SUPERVISOR=$!
}

# wait_for SECONDS COMMAND...: polls every 50 ms until COMMAND succeeds.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	while ! "$@" 2>/dev/null; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			echo "timed out waiting for: $*" >&2
			return 1
		fi
		sleep 0.05
	done
}

# The host PID of workload NAME's program, once it runs.
prog_pid() {
	cat "$STATE/$1/pid" 2>/dev/null
}

has_pid() {
	local p
	p=$(prog_pid "$1") && [ -n "$p" ] && [ "$p" != 0 ] && kill -0 "$p"
}

# The number of lines matching PATTERN in FILE is at least N.
count_at_least() {
	local n
	n=$(grep -c -- "$2" "$3" 2>/dev/null) || n=0
	[ "$n" -ge "$1" ]
}

# Waits up to SECONDS for the supervisor PID to exit; sets $status to its code.
wait_supervisor() {
	local pid=$1 deadline=$((SECONDS + $2))
	while kill -0 "$pid" 2>/dev/null; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			echo "supervisor $pid still running after $2 s" >&2
			return 1
		fi
		sleep 0.05
	done
	status=0
	wait "$pid" || status=$?
}

teardown_state() {
	local p
	for p in "${SUPERVISORS[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in "${SUPERVISORS[@]}"; do
		for _ in $(seq 100); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.05
		done
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	# Sanitizer reports from the supervisor fail the test that caused them.
	if grep -l -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$STATE"/*.err 2>/dev/null; then
		cat "$STATE"/*.err >&2
		rm -rf "$STATE"
		return 1
	fi
	if mountpoint -q "$STATE/full" 2>/dev/null; then umount "$STATE/full"; fi
	rm -rf "$STATE"
}

# A TCP port on loopback that nothing listens on now, below the ephemeral
# range (32768 and up here), where a connection of some other process may
# hold it as its own end and make a server's bind fail.
free_port() {
	local p
	for _ in $(seq 50); do
		p=$((20000 + RANDOM % 12000))
		if ! (exec {fd}<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# One line from a server on loopback PORT that talks first. (bats owns fd 3.)
query() {
	local line fd
	exec {fd}<>"/dev/tcp/127.0.0.1/$1" || return 1
	read -r -t 5 line <&"$fd" || {
		exec {fd}<&-
		return 1
	}
	exec {fd}<&-
	echo "$line"
}

# The generation file of workload NAME, generation GEN.
gen_file() {
	printf '%s/%s/gen-%012d.cryo' "$STATE" "$1" "$2"
}

# Flips the byte at OFFSET (default: the middle) of FILE.
flip_byte() {
	python3 - "$1" "${2:-}" <<-'PY'
	import os, sys
	path, off = sys.argv[1], sys.argv[2]
	size = os.path.getsize(path)
	off = int(off) if off else size // 2
	with open(path, "r+b") as f:
	    f.seek(off)
	    b = f.read(1)
	    f.seek(off)
	    f.write(bytes([b[0] ^ 0xFF]))
	PY
}
