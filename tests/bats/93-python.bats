#!/usr/bin/env bats
# The Python binding (bindings/python): an asyncio server that checkpoints
# itself from a coroutine while it serves a client, is killed, and resumes
# knowing it was restored; the package installed offline by pip (into a venv,
# and with --target) and by meson install, each found by python3.

load helpers

setup() {
	setup_state
	PORT=$(free_port)
	BINDING=$CRYO_TESTS/../bindings/python
	: "${CRYO_PYTHON:=python3}"
}
teardown() { teardown_state; }

# A copy of the binding's source, without what an earlier pip build left in it.
binding_copy() {
	cp -r "$BINDING" "$STATE/src"
	rm -rf "$STATE/src/build" "$STATE/src"/*.egg-info
}

# pip, offline whatever this machine's pip configuration says.
offline_pip() {
	env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
		PIP_DISABLE_PIP_VERSION_CHECK=1 timeout 300 "$@" --no-index --no-cache-dir --quiet
}

@test "python: an asyncio server checkpoints itself while serving, and resumes knowing it was restored" {
	export PYTHONPATH=$BINDING
	start_cryo py -- "$CRYO_PYTHON" "$CRYO_TESTS/programs/cryo-asyncio-server.py" "$PORT" 3 10
	wait_for 30 grep -q '^listening$' "$STATE/py.out"
	# One client, this server's alone (its counts follow each other without a
	# gap), sends a request every 2 ms through the three checkpoints that its
	# requests set off: none fails, none is lost.
	run "$CRYO_PYTHON" "$CRYO_TESTS/programs/client.py" "$PORT" 0.002 8 127.0.0.1
	assert_success
	assert_output --regexp '^ok [0-9]+ 1 [0-9]+$'
	wait_for 60 grep -q '^durable generation 4, ' "$STATE/py.out"
	run cat "$STATE/py.out"
	assert_line --regexp '^cryo [0-9]+\.[0-9]+\.[0-9]+$'
	assert_line "checkpointed generation 1"
	for g in 2 3 4; do
		assert_line --regexp "^durable generation $g, count [0-9]+, answered [0-9]+ while pending$"
	done
	refute_line --partial "failed"
	# The loop answered requests while the images were being stored (about
	# 150 ms each here, against a request every 2 ms).
	answered=$(awk '/ while pending$/ {n += $(NF - 2)} END {print n + 0}' "$STATE/py.out")
	[ "$answered" -ge 1 ]
	at=$(sed -n 's/^durable generation 4, count \([0-9]*\),.*/\1/p' "$STATE/py.out")

	run "$CRYO" kill py
	assert_success
	wait_for 60 grep -q '^restored from generation 4, ' "$STATE/py.out"
	run cat "$STATE/py.out"
	assert_line "restored from generation 4, count $at"
	# It serves on, its count going on from the checkpoint.
	wait_for 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT"
	run "$CRYO_PYTHON" "$CRYO_TESTS/programs/client.py" "$PORT" 0 0.1 127.0.0.1
	assert_success
	assert_output --regexp "^ok [0-9]+ $((at + 1)) [0-9]+$"
	run "$CRYO" images py
	refute_output --partial " NO"
}

@test "python: pip installs the binding offline, into a venv and with --target; it imports and says ENOTCONN outside cryo" {
	binding_copy
	check='import cryo, errno
try:
    cryo.checkpoint()
except OSError as e:
    print(cryo.__file__, cryo.version(), errno.errorcode[e.errno])'
	# A plain venv: pip builds in isolation, from Debian's .whl files.
	"$CRYO_PYTHON" -m venv "$STATE/venv"
	run offline_pip "$STATE/venv/bin/pip" install --find-links /usr/share/python-wheels "$STATE/src"
	assert_success
	run "$STATE/venv/bin/python" -c "$check"
	assert_success
	assert_output --regexp "^$STATE/venv/lib/python3[.0-9]*/site-packages/cryo/__init__.py [0-9.]+ ENOTCONN$"
	compgen -G "$STATE/venv/lib/python3*/site-packages/cryo/py.typed"
	# The system's python3, into a directory of its own: pip builds with the
	# setuptools and wheel that python3 has (python3-setuptools, python3-wheel).
	run offline_pip "$CRYO_PYTHON" -m pip install --no-build-isolation --target "$STATE/target" "$STATE/src"
	assert_success
	run env PYTHONPATH="$STATE/target" "$CRYO_PYTHON" -c "$check"
	assert_success
	assert_output --regexp "^$STATE/target/cryo/__init__.py [0-9.]+ ENOTCONN$"
	[ -f "$STATE/target/cryo/py.typed" ]
}

@test "python: meson install puts the binding where python3 imports packages under the prefix, and it loads libcryo" {
	dest=$STATE/dest
	DESTDIR=$dest meson install -C "$CRYO_BUILD_DIR" --quiet --no-rebuild >/dev/null
	init=$(find "$dest" -path '*/cryo/__init__.py')
	[ -n "$init" ]
	site=${init%/cryo/__init__.py}
	site=${site#"$dest"}
	[ -f "$dest$site/cryo/py.typed" ]
	# The python3 meson installed it for reads packages there.
	run "$CRYO_PYTHON" -c 'import site; print("\n".join(site.getsitepackages()))'
	assert_line "$site"
	# It knows where meson put libcryo.
	lib=$(sed -n 's/^LIBCRYO = "\(.*\)"$/\1/p' "$dest$site/cryo/_install.py")
	[ -e "$dest$lib" ]
	# It loads the installed libcryo (found as the loader's cache would find
	# it after ldconfig), unless that one is sanitized: python3 cannot load
	# it, and the build's unsanitized one stands in (CRYO_LIBRARY).
	sanitize=$(meson introspect "$CRYO_BUILD_DIR" --buildoptions |
		python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "b_sanitize"))')
	loader=(env -u CRYO_LIBRARY LD_LIBRARY_PATH="$dest${lib%/*}")
	expected=libcryo.so.0
	if [ "$sanitize" != none ]; then
		loader=(env)
		expected=$CRYO_LIBRARY
	fi
	run "${loader[@]}" PYTHONPATH="$dest$site" "$CRYO_PYTHON" -c '
import cryo, errno
try:
    cryo.checkpoint()
except OSError as e:
    print(cryo.__file__, cryo._libcryo.path, errno.errorcode[e.errno])'
	assert_success
	assert_output "$dest$site/cryo/__init__.py $expected ENOTCONN"
}
