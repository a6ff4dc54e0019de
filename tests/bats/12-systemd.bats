#!/usr/bin/env bats
# The systemd unit template (contrib/systemd/cryo@.service.in, as meson
# configures it): systemd-analyze verify accepts it, and the way it starts a
# workload resumes it after a reboot. systemd is not PID 1 on these machines,
# so the test starts the workload itself, with the unit's own ExecStart line
# and a config file in a temp directory in place of /etc/cryo.

load helpers

UNIT=${CRYO_BUILD_DIR:-}/contrib/cryo@.service

setup() {
	setup_state
	[ -f "$UNIT" ] || fail "no configured unit at '$UNIT' (meson builds it)"
	CONF_DIR=$STATE/etc-cryo
	mkdir -p "$CONF_DIR"
}
teardown() { teardown_state; }

# unit_key KEY: the value of KEY= in the unit.
unit_key() {
	sed -n "s/^$1=//p" "$UNIT"
}

# unit_command KEY NAME: the words of the unit's KEY (ExecStart, ExecStop)
# for instance NAME, as systemd makes them: %i is NAME, a $VAR of the
# EnvironmentFile (read from CONF_DIR, for /etc/cryo) is its value split at
# whitespace, into zero or more words; a leading '-' goes; the unit's cryo
# (where meson would install it) is the cryo under test. Sets CMD and exports
# the file's variables, as systemd passes them to the command.
unit_command() {
	local line envfile word key value
	line=$(unit_key "$1")
	line=${line#-}
	envfile=$(unit_key EnvironmentFile)
	envfile=${envfile//%i/$2}
	[ "${envfile%/*}" = /etc/cryo ] || fail "EnvironmentFile is '$envfile', not in /etc/cryo"
	while IFS= read -r word; do
		case $word in '' | '#'*) continue ;; esac
		key=${word%%=*}
		value=${word#*=}
		value=${value#\"}
		value=${value%\"}
		export "$key=$value"
	done <"$CONF_DIR/${envfile##*/}"
	CMD=()
	for word in ${line//%i/$2}; do
		if [[ $word =~ ^\$([A-Z_]+)$ ]]; then
			local -a split
			read -ra split <<<"${!BASH_REMATCH[1]:-}"
			CMD+=("${split[@]}")
		else
			CMD+=("$word")
		fi
	done
	[[ ${CMD[0]} == */cryo ]] || fail "$1 runs '${CMD[0]}', not cryo"
	CMD[0]=$CRYO
}

# Starts instance NAME as the unit would; its output goes to
# $STATE/NAME.out and NAME.err (appended: a second start adds to them).
unit_start() {
	unit_command ExecStart "$1"
	"${CMD[@]}" >>"$STATE/$1.out" 2>>"$STATE/$1.err" </dev/null &
	track_supervisor "$!"
	LAST_SUPERVISOR=$!
}

# PID and every process descended from it, parents first (at most 1000).
descendants() {
	local queue=("$1") p n=0
	local -a kids
	while [ "${#queue[@]}" -gt 0 ] && [ "$n" -lt 1000 ]; do
		p=${queue[0]}
		queue=("${queue[@]:1}")
		echo "$p"
		n=$((n + 1))
		read -ra kids <<<"$(cat /proc/"$p"/task/*/children 2>/dev/null | tr '\n' ' ')"
		queue+=("${kids[@]}")
	done
}

write_conf() {
	cat >"$CONF_DIR/$1.conf" <<-CONF
		# written by 12-systemd.bats
		CRYO_PROG=$CRYO_EXAMPLES/counter 400 10 20
		CRYO_ARGS=--keep 2
		CRYO_STOP_ARGS=${2:-}
		CRYO_STATE_DIR=$STATE
	CONF
}

newest_generation() {
	local files=("$STATE/$1"/gen-*.cryo) f
	f=${files[-1]##*/gen-}
	echo "$((10#${f%.cryo}))"
}

@test "systemd-analyze verify accepts the unit, with the reasons it was written for" {
	command -v systemd-analyze >/dev/null || skip "systemd-analyze is not installed"
	write_conf demo
	unit_command ExecStart demo # checks the ExecStart line's shape
	dir=$STATE/units
	mkdir "$dir"
	# The unit as meson configured it, but for the cryo under test (verify
	# wants its executables to exist).
	sed "s|[^ =-]*/cryo |$CRYO |" "$UNIT" >"$dir/cryo@demo.service"
	# Its Documentation= pages, as meson install would lay them out.
	for page in "$CRYO_BUILD_DIR"/doc/*.[1-8]; do
		mkdir -p "$STATE/man/man${page##*.}"
		ln -s "$page" "$STATE/man/man${page##*.}/"
	done
	MANPATH=$STATE/man run systemd-analyze verify "$dir/cryo@demo.service"
	assert_success
	assert_output ""
	[ "$(unit_key Type)" = exec ]
	[ "$(unit_key KillMode)" = mixed ]
	[ "$(unit_key Restart)" = on-failure ]
	[[ " $(unit_key SuccessExitStatus) " == *" 143 "* ]]
	[[ $(unit_key ExecStart) == *"run --name %i "* ]]
	[[ $(unit_key ExecStop) == *"stop \$CRYO_STOP_ARGS %i" ]]
}

@test "after a 'reboot' (every process of the workload killed), the unit's start resumes the newest image" {
	want=$("$CRYO_EXAMPLES/counter" 400 10 0 | grep '^result')
	write_conf demo
	unit_start demo
	first=$LAST_SUPERVISOR
	wait_for 60 count_at_least 1 '^checkpointed at step 60 ' "$STATE/demo.out"
	# A reboot: every process of the workload dies at once, by SIGKILL.
	mapfile -t pids < <(descendants "$first")
	[ "${#pids[@]}" -ge 2 ] # the supervisor and at least its program's init
	kill -KILL "${pids[@]}"
	wait_supervisor "$first" 30
	for p in "${pids[@]}"; do
		wait_for 30 eval "! kill -0 $p"
	done
	gen=$(newest_generation demo)
	step=$(sed -n "s/^checkpointed at step \([0-9]*\) as generation $gen\$/\1/p" "$STATE/demo.out")
	[ -n "$step" ]

	unit_start demo
	wait_supervisor "$LAST_SUPERVISOR" 120
	assert_equal "$status" 0
	run grep "stored generation(s) and no supervisor: resuming the newest" "$STATE/demo.err"
	assert_success
	run grep -c "^restored at step $step from generation $gen\$" "$STATE/demo.out"
	assert_output 1
	run grep '^result' "$STATE/demo.out"
	assert_output "$want"
}

@test "stopping the unit takes a last checkpoint when its config asks, and cryo run's status is a success" {
	write_conf demo --checkpoint
	unit_start demo
	wait_for 60 count_at_least 1 '^checkpointed at step 20 ' "$STATE/demo.out"
	unit_command ExecStop demo
	run "${CMD[@]}"
	assert_success
	assert_output --partial "stopped 'demo' after checkpoint"
	wait_supervisor "$LAST_SUPERVISOR" 60
	[[ " $(unit_key SuccessExitStatus) " == *" $status "* ]]
	run "$CRYO" images --json demo
	assert_success
	[[ $output == *'"trigger": "stop"'* || $output == *'"trigger":"stop"'* ]]

	# Without CRYO_STOP_ARGS the same line stops it without one.
	write_conf demo2
	unit_start demo2
	wait_for 60 count_at_least 1 '^checkpointed at step 20 ' "$STATE/demo2.out"
	unit_command ExecStop demo2
	run "${CMD[@]}"
	assert_success
	assert_output "stopped 'demo2'"
	wait_supervisor "$LAST_SUPERVISOR" 60
	assert_equal "$status" 143
	run "$CRYO" images --json demo2
	assert_success
	[[ $output != *'"stop"'* ]]
}
