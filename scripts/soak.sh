#!/usr/bin/env bash
# midasfs soak test: load, not only faults. N workers spend M minutes doing what people do with a
# mount (cp, rsync, mv, rm, mkdir, overwrite, append, xattr set/get, random reads, listings)
# through one mount, or two mounts of the same server at once; then every file is checked against
# a model of what the workers wrote, through the Midas API (Python's urllib, not midasfs).
#
#   scripts/soak.sh [--workers N] [--minutes M | --seconds S] [--two-mounts] [--deadline SECS]
#                   [--url URL --email EMAIL --key-file FILE] [--latency MS] [--seed N]
#                   [-o MOUNT_OPTIONS] [--dir DIR] [--keep]
#
# It prints ops, bytes, errors, lost and wrong files, hangs (an op past --deadline) and the RSS of
# the mount daemons (and of `serve`) over time, and exits 1 on any lost or wrong file or hang
# (2 on a usage error). Each worker's operations are logged in WORKDIR/src/trace-wN.log. Needs
# fuse3, rsync and python3 (scripts/setup.sh installs them); nothing else.
# It builds midasfs (cargo build --release) unless MIDASFS_BIN names a midasfs binary to use.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: scripts/soak.sh [options]

  --workers N        workers, each writing in a directory of its own; default 8
  --minutes M        how long the workers run; default 1 (--seconds S for shorter runs)
  --seconds S        the same in seconds
  --two-mounts       mount the server twice; workers alternate between the mounts (each path
                     still has one writer), and read each other's files across the mounts
  --deadline SECS    an op running longer than this is a hang; default 60
  --url URL          soak a running Midas server (e.g. the real Midas) instead of starting
                     `midasfs serve`; needs --email and --key-file (an API key, first line)
  --email EMAIL      the account for --url
  --key-file FILE    its API key
  --latency MS       the started `serve`'s --latency; default 0
  --seed N           the workers' random seed (the same seed repeats the same choices); default 1
  -o OPTS            mount options for the mounts (e.g. -o cache_size=16,ttl=1); may be repeated
  --dir DIR          where the work directory goes; default ${TMPDIR:-/var/tmp}
  --keep             keep the work directory (logs, model, spool) and the run's folder on the
                     server even when the soak passes (a failed soak always keeps them)

Exit status: 0 no file lost or wrong, no hang; 1 otherwise (or the soak could not run); 2 usage.
EOF
}

WORKERS=8
SECONDS_TO_RUN=60
TWO_MOUNTS=0
DEADLINE=60
URL="" EMAIL="" KEY_FILE=""
LATENCY=0
SEED=1
BASE_DIR=${TMPDIR:-/var/tmp}
KEEP=0
MOUNT_OPTIONS=()
number() {
	[[ $2 =~ ^[0-9]+$ ]] || {
		echo "soak: $1 needs a number, not '$2'" >&2
		exit 2
	}
}
while (($#)); do
	case $1 in
	--workers | --minutes | --seconds | --deadline | --latency | --seed)
		(($# >= 2)) || {
			echo "soak: $1 needs a value" >&2
			exit 2
		}
		number "$1" "$2"
		case $1 in
		--workers) WORKERS=$2 ;;
		--minutes) SECONDS_TO_RUN=$(($2 * 60)) ;;
		--seconds) SECONDS_TO_RUN=$2 ;;
		--deadline) DEADLINE=$2 ;;
		--latency) LATENCY=$2 ;;
		--seed) SEED=$2 ;;
		esac
		shift
		;;
	--url | --email | --key-file | --dir | -o)
		(($# >= 2)) || {
			echo "soak: $1 needs a value" >&2
			exit 2
		}
		case $1 in
		--url) URL=$2 ;;
		--email) EMAIL=$2 ;;
		--key-file) KEY_FILE=$2 ;;
		--dir) BASE_DIR=$2 ;;
		-o) MOUNT_OPTIONS+=(-o "$2") ;;
		esac
		shift
		;;
	--two-mounts) TWO_MOUNTS=1 ;;
	--keep) KEEP=1 ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		echo "soak: unknown option '$1'" >&2
		usage >&2
		exit 2
		;;
	esac
	shift
done
((WORKERS >= 1 && SECONDS_TO_RUN >= 1 && DEADLINE >= 1)) || {
	echo "soak: --workers, the duration and --deadline must be at least 1" >&2
	exit 2
}
if [[ -n $URL || -n $EMAIL || -n $KEY_FILE ]]; then
	[[ -n $URL && -n $EMAIL && -n $KEY_FILE ]] || {
		echo "soak: --url, --email and --key-file go together" >&2
		exit 2
	}
	[[ -r $KEY_FILE ]] || {
		echo "soak: cannot read the key file $KEY_FILE" >&2
		exit 2
	}
	KEY_FILE=$(realpath "$KEY_FILE")
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/serve.sh
source "$REPO/scripts/lib/serve.sh"
cd "$REPO"
HELPER=$REPO/scripts/soak/soak.py
say() { printf '[soak %4ds] %s\n' "$SECONDS" "$*" >&2; }
for tool in python3 rsync cp mv fusermount3 mountpoint; do
	command -v "$tool" >/dev/null || {
		say "$tool is missing (see scripts/setup.sh)"
		exit 1
	}
done
helper() { python3 "$HELPER" "$@"; }

say "midasfs: ${MIDASFS_BIN:-building it (cargo build --release)}"
midasfs_binary

mkdir -p "$BASE_DIR"
WORK=$(mktemp -d "$BASE_DIR/midasfs-soak.XXXXXX")
MOUNTS=()
SERVER_PID=""
STATUS_FILE=$WORK/failed
cleanup() {
	local status=$?
	trap - EXIT INT TERM
	local mnt
	for mnt in "${MOUNTS[@]}"; do
		if mountpoint -q "$mnt"; then
			timeout 60 "$BIN" unmount "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt" 2>/dev/null ||
				umount -l "$mnt" || true
		fi
	done
	if [[ -n $SERVER_PID ]]; then
		kill -TERM "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	if ((KEEP || status != 0)); then say "kept $WORK (logs, model, spool)"; else rm -rf "$WORK"; fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- the server

if [[ -z $URL ]]; then
	out=$WORK/serve.out
	head -c 18 /dev/urandom | base64 >"$WORK/admin-password"
	serve_in_background "$out" "$WORK/serve.log" --data "$WORK/store" --listen 127.0.0.1:0 \
		--admin-password-file "$WORK/admin-password" --latency "$LATENCY" </dev/null
	URL=$(serve_said "$out" url)
	EMAIL=$(serve_said "$out" email)
	KEY_FILE=$WORK/api-key
	(umask 077 && serve_said "$out" key >"$KEY_FILE")
	SERVER_LABEL="midasfs serve"
else
	SERVER_LABEL="the Midas server"
fi
say "server: $SERVER_LABEL at $URL"

RUN_NAME=soak-$(date -u +%Y%m%d-%H%M%S)-$$
FOLDER_ID=$(helper setup "$URL" "$EMAIL" "$KEY_FILE" "$RUN_NAME")
say "the run's folder: Private/$RUN_NAME (folder $FOLDER_ID)"

# ---------------------------------------------------------------- the mounts

NMOUNTS=$((TWO_MOUNTS ? 2 : 1))
PIDS=()
for ((m = 1; m <= NMOUNTS; m++)); do
	mnt=$WORK/mnt-$m
	mkdir -p "$mnt"
	MOUNTS+=("$mnt")
	"$BIN" mount "$URL" "$mnt" --email "$EMAIL" --api-key-file "$KEY_FILE" \
		--spool-dir "$WORK/spool-$m" --log-file "$WORK/mount-$m.log" "${MOUNT_OPTIONS[@]}"
	PIDS+=("$(helper mount-pid "$mnt")")
done
[[ -d ${MOUNTS[0]}/home/Private/$RUN_NAME ]] || {
	say "the run's folder is not at home/Private/$RUN_NAME in the mount"
	exit 1
}
say "$NMOUNTS mount(s) (daemon pid ${PIDS[*]}); $WORKERS workers for $SECONDS_TO_RUN s," \
	"deadline $DEADLINE s per op"

# ---------------------------------------------------------------- the load

args=(work --base "home/Private/$RUN_NAME" --src "$WORK/src" --workers "$WORKERS"
	--seconds "$SECONDS_TO_RUN" --deadline "$DEADLINE" --seed "$SEED" --model "$WORK/model.json"
	--url "$URL" --email "$EMAIL" --keyfile "$KEY_FILE" --folder "$FOLDER_ID")
for ((m = 0; m < NMOUNTS; m++)); do args+=(--mount "${MOUNTS[m]}" --pid "${PIDS[m]}"); done
[[ -n $SERVER_PID ]] && args+=(--server-pid "$SERVER_PID")
work_status=0
helper "${args[@]}" || work_status=$?

# ---------------------------------------------------------------- unmount, then check

# cache use and request counts of each mount, for the figures
for mnt in "${MOUNTS[@]}"; do
	timeout 10 "$BIN" status "$mnt" || true
done

# `midasfs unmount` returns once the daemon has finished its uploads; one that does not within
# the deadline is a hang as well.
unmount_failed=0
for mnt in "${MOUNTS[@]}"; do
	if ! timeout "$((DEADLINE + 60))" "$BIN" unmount "$mnt"; then
		say "unmounting $mnt failed or took more than $((DEADLINE + 60)) s"
		unmount_failed=1
	fi
done
recovered=0
for ((m = 1; m <= NMOUNTS; m++)); do
	if [[ -d $WORK/spool-$m/recovery ]]; then
		n=$(find "$WORK/spool-$m/recovery" -type f ! -name '*.target' | wc -l)
		recovered=$((recovered + n))
	fi
done
log_warnings=$(cat "$WORK"/mount-*.log 2>/dev/null | grep -c -E ' (WARN|ERROR) ' || true)
log_panics=$(cat "$WORK"/mount-*.log "$WORK/serve.log" 2>/dev/null | grep -c 'panicked' || true)

if [[ ! -s $WORK/model.json ]]; then
	say "the workers did not finish (exit $work_status): no model to check"
	exit 1
fi
check_status=0
helper check "$URL" "$EMAIL" "$KEY_FILE" "$FOLDER_ID" "$WORK/model.json" \
	--label "$SERVER_LABEL, $NMOUNTS mount(s), seed $SEED" || check_status=$?
echo "  recovery      $recovered file(s) in the spool's recovery directories (failed uploads)"
echo "  mount logs    $log_warnings warnings or errors, $log_panics panics (in $WORK/mount-*.log)"
((unmount_failed)) && echo "  unmount       FAILED (counted as a hang)"
if ((check_status != 0 || work_status != 0 || unmount_failed || log_panics > 0)); then
	echo "  op logs       $WORK/src/trace-w*.log (time, duration, op, paths, result)"
	echo "soak FAILED"
	exit 1
fi
((KEEP)) && echo "  op logs       $WORK/src/trace-w*.log (time, duration, op, paths, result)"
if ((!KEEP)); then
	helper remove "$URL" "$EMAIL" "$KEY_FILE" "$FOLDER_ID" ||
		say "could not remove the run's folder Private/$RUN_NAME from the server"
fi
echo "soak passed"
