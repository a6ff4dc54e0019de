# shellcheck shell=bash
# Shared by scripts/lib/swift-s3 and scripts/lib/etcd-test: free loopback
# ports, PIDs saved with their start times, and stopping only those PIDs.
# Every wait here has a deadline.

# The start time of PID (field 22 of /proc/PID/stat), or nothing.
pid_start_time() {
	sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20
}

# Alive = exists and is no zombie (kill -0 succeeds on a zombie, and PID 1
# may reap an orphan seconds late).
pid_alive() {
	local st
	st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}

# save_pid FILE PID: records PID and its start time, so that stop_pid never
# signals a recycled PID.
save_pid() {
	echo "$2 $(pid_start_time "$2")" >"$1"
}

# stop_pid FILE: TERM to the PID in FILE if it is still the process that was
# saved, KILL after 5 s; removes FILE.
stop_pid() {
	local pid start i
	[ -e "$1" ] || return 0
	read -r pid start <"$1" || true
	if [ -n "${pid:-}" ] && [ -n "${start:-}" ] && [ "$(pid_start_time "$pid")" = "$start" ]; then
		kill -CONT "$pid" 2>/dev/null || true
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			pid_alive "$pid" || break
			sleep 0.1
		done
		if pid_alive "$pid"; then
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$1"
}

# free_ports N: prints N distinct TCP ports on 127.0.0.1 that nothing listens
# on now (a random pick in 20000-59999, checked with ss; 200 tries at most).
free_ports() {
	local want=$1 got=() p tries=0 q dup
	while [ "${#got[@]}" -lt "$want" ]; do
		tries=$((tries + 1))
		if [ "$tries" -gt 200 ]; then
			echo "no free port found on 127.0.0.1 after 200 tries" >&2
			return 1
		fi
		p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
		dup=0
		for q in "${got[@]}"; do [ "$q" = "$p" ] && dup=1; done
		[ "$dup" = 0 ] || continue
		[ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ] || continue
		got+=("$p")
	done
	echo "${got[@]}"
}

# wait_answer SECONDS PIDDIR WHAT COMMAND...: polls COMMAND every 100 ms until
# it succeeds; fails, naming WHAT, when a process saved in PIDDIR has exited
# or SECONDS have passed.
wait_answer() {
	local secs=$1 piddir=$2 what=$3 deadline f pid
	shift 3
	deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		for f in "$piddir"/*.pid; do
			[ -e "$f" ] || continue
			read -r pid _ <"$f"
			if ! pid_alive "$pid"; then
				echo "$what: $(basename "$f" .pid) exited while starting" >&2
				return 1
			fi
		done
		if [ "$SECONDS" -ge "$deadline" ]; then
			echo "$what: no answer after $secs s" >&2
			return 1
		fi
		sleep 0.1
	done
}
