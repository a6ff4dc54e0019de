# shellcheck shell=bash
# The services the remote suites (96-remote, 97-store, 98-lease, 99-failover)
# start themselves, as a user would from Debian's packages: OpenStack Swift's
# S3 API (scripts/lib/swift-s3) and etcd (scripts/lib/etcd-test), on free
# ports of loopback, or of $CRYO_SERVICE_IP when set; stopped by their PIDs.

# remote_up NAME SERVICE...: in setup_file. Makes $REMOTE_DIR
# (/tmp/cryo-NAME.XXXXXX), starts each SERVICE (swift, etcd) there, tells
# bats where they listen, sets TOOL (this build's remote-tool) and the
# services' environment (remote_env).
remote_up() {
	local name=$1 svc
	shift
	export REMOTE_DIR TOOL
	REMOTE_DIR=$(mktemp -d "/tmp/cryo-$name.XXXXXX")
	# The sanitizer build's own tool (test_programs_dir may name another build).
	TOOL=$CRYO_BUILD_DIR/tests/remote-tool
	for svc in "$@"; do
		if ! "$(remote_script "$svc")" up "$REMOTE_DIR/$svc" >"$REMOTE_DIR/$svc.out" 2>&1; then
			cat "$REMOTE_DIR/$svc.out" >&2
			remote_down
			return 1
		fi
		echo "# $(cat "$REMOTE_DIR/$svc.out")" >&3
	done
	remote_env
}

# remote_down: in teardown_file. Stops what remote_up started.
remote_down() {
	local svc
	for svc in etcd swift; do
		[ ! -d "$REMOTE_DIR/$svc" ] || "$(remote_script "$svc")" down "$REMOTE_DIR/$svc" || true
	done
	rm -rf "$REMOTE_DIR"
}

remote_script() {
	case $1 in
	swift) echo "$CRYO_TESTS/../scripts/lib/swift-s3" ;;
	etcd) echo "$CRYO_TESTS/../scripts/lib/etcd-test" ;;
	*) return 1 ;;
	esac
}

# The environment of the services started: AWS_ENDPOINT_URL and the
# credentials, SWIFT_S3_PROXY_PID; ETCD_ENDPOINT, ETCD_PID.
remote_env() {
	local svc
	for svc in swift etcd; do
		# shellcheck disable=SC1090
		[ ! -e "$REMOTE_DIR/$svc/env" ] || . "$REMOTE_DIR/$svc/env"
	done
}
