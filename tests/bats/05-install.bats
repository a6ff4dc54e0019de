#!/usr/bin/env bats
# meson install brings cryo, cryo-init, libcryo, cryo.h and cryo.pc, and a
# program builds against them with pkg-config.

load helpers

setup() { setup_state; }
teardown() { teardown_state; }

@test "installed: a program builds with pkg-config and runs with and without cryo" {
	dest=$STATE/dest
	DESTDIR=$dest meson install -C "$CRYO_BUILD_DIR" --quiet --no-rebuild >/dev/null
	pc=$(dirname "$(find "$dest" -name cryo.pc)")
	[ -x "$dest/usr/local/bin/cryo" ]
	[ -x "$dest/usr/local/libexec/cryo/cryo-init" ]
	[ -f "$dest/usr/local/include/cryo.h" ]
	libdir=$(dirname "$(find "$dest" -name 'libcryo.so.*' | head -n 1)")
	cat >"$STATE/prog.c" <<-'C'
		#include <cryo.h>
		#include <stdio.h>
		int main(void)
		{
			int r = cryo_checkpoint();
			printf("%s %d\n", r == CRYO_CHECKPOINTED ? "checkpointed" : "returned", r);
			return 0;
		}
	C
	# A sanitized libcryo needs a sanitized program.
	sanitize=$(meson introspect "$CRYO_BUILD_DIR" --buildoptions |
		python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "b_sanitize"))')
	flags=()
	if [ "$sanitize" != none ]; then flags=(-fsanitize="$sanitize"); fi
	# shellcheck disable=SC2046 # pkg-config's words are meant to split
	cc "${flags[@]}" "$STATE/prog.c" -o "$STATE/prog" $(PKG_CONFIG_PATH=$pc PKG_CONFIG_SYSROOT_DIR=$dest pkg-config --cflags --libs cryo)
	run env LD_LIBRARY_PATH="$libdir" "$STATE/prog"
	assert_success
	assert_output "returned -107"
	run env LD_LIBRARY_PATH="$libdir" CRYO_INIT="$dest/usr/local/libexec/cryo/cryo-init" \
		"$dest/usr/local/bin/cryo" run --name inst -- "$STATE/prog"
	assert_success
	assert_line "checkpointed 0"
	assert_line --partial "checkpoint 1 of 'inst' stored"
}
