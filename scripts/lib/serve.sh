# shellcheck shell=bash
# Starting `midasfs serve` in the background, for the scripts that need a server of their own
# (bench, scale, soak, file-manager): one way to start it, wait for it, and read what it printed.
#
# Source it, with REPO set to the repository; midasfs_binary sets BIN, the midasfs binary.

# midasfs_binary: sets BIN to the binary MIDASFS_BIN names, or else builds one in REPO
# (cargo build --release) and sets BIN to it.
midasfs_binary() {
	if [[ -n ${MIDASFS_BIN:-} ]]; then
		BIN=$(realpath -- "$MIDASFS_BIN")
		return
	fi
	(cd "$REPO" && cargo build --release --quiet)
	BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/midasfs
	[[ $BIN == /* ]] || BIN=$REPO/$BIN
}

# serve_in_background OUT LOG ARGS...: runs `$BIN serve ARGS...` in the background with its
# standard output in OUT (emptied first) and its log appended to LOG; the caller's standard input
# is passed on (for --admin-password-stdin). Sets SERVER_PID, then waits until the server has
# printed its API key. A server that exits or has not started within 30 s ends the script
# (exit 1) with the last lines of LOG.
serve_in_background() {
	local out=$1 log=$2 tries=0
	shift 2
	: >"$out"
	"$BIN" serve "$@" <&0 >"$out" 2>>"$log" &
	SERVER_PID=$!
	until grep -q '^admin api key: ' "$out"; do
		if ! kill -0 "$SERVER_PID" 2>/dev/null || ((++tries > 300)); then
			echo "midasfs serve did not start:" >&2
			tail -n 20 "$log" >&2
			exit 1
		fi
		sleep 0.1
	done
}

# serve_said OUT WHAT: what the server started by serve_in_background printed: its `url`, the
# administrator's `email`, or the administrator's API `key`.
serve_said() {
	case $2 in
	url) sed -n 's/^midasfs serve listening on //p' "$1" ;;
	email) sed -n 's/^admin email: //p' "$1" ;;
	key) sed -n 's/^admin api key: //p' "$1" ;;
	*) echo "serve_said: no such field: $2" >&2 && return 1 ;;
	esac
}
