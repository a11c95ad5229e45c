#!/usr/bin/env bash
# The scale rows of the benchmark: how the mount's time and memory grow with what it shows.
# Each row runs at a size and at twice that size, so the growth reads off the table:
#   - `ls -l` of a folder of ITEMS single-file items, cold (fresh mount): time, requests, daemon RSS
#   - `find` of a tree of TREE entries (folders of 500 files), cold: time, RSS per entry
#   - a FILE_GIB file written (dd into the mount, until the server holds it) and read back
#     (dd from a fresh mount): speed and the daemon's peak RSS, which must stay flat
#
#   scripts/bench/scale.sh [--items N] [--tree N] [--file-gib N] [--no-items] [--no-tree] [--no-file]
#                          [--dir DIR] [--keep]
#
# --no-items, --no-tree and --no-file leave out those rows (and their filling), so one kind of
# row can run alone, e.g. the file rows when the disk is free now and may not be later.
# Run by scripts/bench.sh in full mode, or by itself. The folders are filled straight into
# serve's database (scripts/bench/scalefill.py), copies of objects made through the API.
# The file rows write from /dev/zero (no source file) and need 2 × 2 × FILE_GIB GiB of free disk
# in DIR, plus the 1 GiB the spool leaves free: the spool and serve's assetstore;
# each file is deleted after its rows.
set -euo pipefail

ITEMS=100000
TREE=200000
FILE_GIB=10
DO_ITEMS=1
DO_TREE=1
DO_FILE=1
KEEP=0
BASE_DIR=${TMPDIR:-/var/tmp}
TREE_FILES_PER_FOLDER=500
while (($#)); do
	case $1 in
	--items) ITEMS=${2:?--items needs a number} && shift ;;
	--tree) TREE=${2:?--tree needs a number} && shift ;;
	--file-gib) FILE_GIB=${2:?--file-gib needs a number} && shift ;;
	--no-items) DO_ITEMS=0 ;;
	--no-tree) DO_TREE=0 ;;
	--no-file) DO_FILE=0 ;;
	--dir) BASE_DIR=${2:?--dir needs a directory} && shift ;;
	--keep) KEEP=1 ;;
	-h | --help)
		sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "unknown argument: $1 (see --help)" >&2
		exit 2
		;;
	esac
	shift
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../lib/serve.sh
source "$REPO/scripts/lib/serve.sh"
cd "$REPO"
HELPER=$REPO/scripts/bench/midasbench.py
FILL=$REPO/scripts/bench/scalefill.py
say() { printf '[scale %4ds] %s\n' "$SECONDS" "$*" >&2; }
helper() { python3 "$HELPER" "$@"; }

midasfs_binary

mkdir -p "$BASE_DIR"
WORK=$(mktemp -d "$BASE_DIR/midasfs-scale.XXXXXX")
DATA=$WORK/data
MNT=$WORK/mnt
ROWS=$WORK/rows.md
: >"$ROWS"
SERVER_PID=""
MOUNT_PID=""
ADMIN_PASSWORD=scale-$RANDOM$RANDOM

cleanup() {
	local status=$?
	trap - EXIT INT TERM
	if mountpoint -q "$MNT" 2>/dev/null; then fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT" || true; fi
	[[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
	if ((KEEP)); then say "kept $WORK"; else rm -rf "$WORK"; fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_server() {
	local out=$WORK/serve.out
	serve_in_background "$out" "$WORK/serve.log" --data "$DATA" --listen 127.0.0.1:0 \
		--admin-password-stdin <<<"$ADMIN_PASSWORD"
	URL=$(serve_said "$out" url)
	EMAIL=$(serve_said "$out" email)
	KEY=$(serve_said "$out" key)
}

stop_server() {
	kill -TERM "$SERVER_PID" 2>/dev/null || true
	wait "$SERVER_PID" 2>/dev/null || true
	SERVER_PID=""
}

api() { helper "$1" "$URL" "$EMAIL" "$KEY" "${@:2}"; }
requests() { helper stat "$URL" requests; }
sql() { python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])' "$DATA/midas.sqlite3" "$1"; }

mount_fs() {
	mkdir -p "$MNT"
	MIDAS_API_KEY=$KEY "$BIN" mount "$URL" "$MNT" --email "$EMAIL" --ttl 300 \
		--log-file "$WORK/mount.log" --spool-dir "$WORK/spool" "$@"
	MOUNT_PID=$(helper mount-pid "$MNT")
}

unmount_fs() {
	fusermount3 -u "$MNT" 2>/dev/null || umount "$MNT"
	local tries=0
	while kill -0 "$MOUNT_PID" 2>/dev/null && ((++tries < 100)); do sleep 0.1; done
}

# VmRSS or VmHWM of the mount daemon, in KiB.
kib() { awk -v field="$1:" '$1 == field { print $2 }' "/proc/$MOUNT_PID/status"; }

drop_caches() {
	sync
	[[ -w /proc/sys/vm/drop_caches ]] && echo 3 >/proc/sys/vm/drop_caches || true
}

# walk LABEL ENTRIES PATH COMMAND: one cold walk on a fresh mount, as a table row.
walk() {
	local label=$1 entries=$2 path=$3 command=$4
	mount_fs
	stat "$(dirname "$path")" >/dev/null
	local before_rss before_requests seconds after_requests after_rss peak
	before_rss=$(kib VmRSS)
	before_requests=$(requests)
	seconds=$(helper time "$command $(printf %q "$path") >/dev/null")
	after_requests=$(($(requests) - before_requests - 1))
	after_rss=$(kib VmRSS)
	peak=$(kib VmHWM)
	unmount_fs
	local per_entry=$(((after_rss - before_rss) * 1024 / entries))
	say "$label: $seconds s, $after_requests requests, RSS $((before_rss / 1024)) → $((after_rss / 1024)) MiB ($per_entry B per entry), peak $((peak / 1024)) MiB"
	printf '| %s | %s s | %s | %s → %s MiB | %s B | %s MiB |\n' "$label" "$seconds" "$after_requests" \
		"$((before_rss / 1024))" "$((after_rss / 1024))" "$per_entry" "$((peak / 1024))" >>"$ROWS"
}

# ---------------------------------------------------------------- seeding

start_server
say "server at $URL; making the templates"
head -c 1024 /dev/urandom >"$WORK/template.bin"
TEMPLATE_FOLDER=$(api folder Private/scale-template/dir-template)
api put-file "$TEMPLATE_FOLDER" "$WORK/template.bin" >/dev/null
TEMPLATE_ITEM=$(sql "SELECT item_id FROM item WHERE name = 'template.bin'")
LIST_1=$(api folder Private/list-1)
LIST_2=$(api folder Private/list-2)
TREE_1=$(api folder Private/tree-1)
TREE_2=$(api folder Private/tree-2)
api folder Private/files >/dev/null
stop_server
TREE_FOLDERS_1=$((TREE / (TREE_FILES_PER_FOLDER + 1)))
if ((DO_ITEMS)); then
	say "filling: $ITEMS and $((2 * ITEMS)) items"
	python3 "$FILL" "$DATA/midas.sqlite3" items "$LIST_1" "$TEMPLATE_ITEM" "$ITEMS"
	python3 "$FILL" "$DATA/midas.sqlite3" items "$LIST_2" "$TEMPLATE_ITEM" "$((2 * ITEMS))"
fi
if ((DO_TREE)); then
	say "filling: trees of $TREE_FOLDERS_1 and $((2 * TREE_FOLDERS_1)) folders × $TREE_FILES_PER_FOLDER files"
	python3 "$FILL" "$DATA/midas.sqlite3" tree "$TREE_1" "$TEMPLATE_FOLDER" "$TEMPLATE_ITEM" "$TREE_FOLDERS_1" "$TREE_FILES_PER_FOLDER"
	python3 "$FILL" "$DATA/midas.sqlite3" tree "$TREE_2" "$TEMPLATE_FOLDER" "$TEMPLATE_ITEM" "$((2 * TREE_FOLDERS_1))" "$TREE_FILES_PER_FOLDER"
fi
start_server
say "filled in ${SECONDS}s; server at $URL"
PRIVATE=$MNT/users/Admin_User/Private

# ---------------------------------------------------------------- rows

if ((DO_ITEMS || DO_TREE)); then
	{
		echo "| row | time | requests | daemon RSS before → after | RSS per entry | daemon peak RSS |"
		echo "| --- | --- | --- | --- | --- | --- |"
	} >>"$ROWS"
	drop_caches
fi
if ((DO_ITEMS)); then
	walk "ls -l of a folder of $ITEMS items, cold" "$ITEMS" "$PRIVATE/list-1" "ls -l"
	walk "ls -l of a folder of $((2 * ITEMS)) items, cold" "$((2 * ITEMS))" "$PRIVATE/list-2" "ls -l"
fi
if ((DO_TREE)); then
	TREE_ENTRIES_1=$((TREE_FOLDERS_1 * (TREE_FILES_PER_FOLDER + 1)))
	walk "find of a tree of $TREE_ENTRIES_1 entries, cold" "$TREE_ENTRIES_1" "$PRIVATE/tree-1" "find"
	walk "find of a tree of $((2 * TREE_ENTRIES_1)) entries, cold" "$((2 * TREE_ENTRIES_1))" "$PRIVATE/tree-2" "find"
fi

if ((DO_FILE)); then
	{
		echo
		echo "| row | speed | daemon peak RSS |"
		echo "| --- | --- | --- |"
	} >>"$ROWS"
	for gib in "$FILE_GIB" "$((2 * FILE_GIB))"; do
		# The spool holds the whole file until it is uploaded: it has no cap but the disk's.
		mount_fs
		target=$PRIVATE/files/big-$gib.bin
		seconds=$(helper time "dd if=/dev/zero of=$(printf %q "$target") bs=1M count=$((gib * 1024)) conv=fsync")
		peak=$(kib VmHWM)
		unmount_fs
		say "write of $gib GiB: $seconds s, peak RSS $((peak / 1024)) MiB"
		printf '| write of a %s GiB file (dd, until the server holds it) | %s MiB/s | %s MiB |\n' "$gib" \
			"$(python3 -c "print(round($gib * 1024 / $seconds))")" "$((peak / 1024))" >>"$ROWS"
		drop_caches
		mount_fs
		seconds=$(helper time "dd if=$(printf %q "$target") of=/dev/null bs=1M")
		peak=$(kib VmHWM)
		rm -f "$target"
		unmount_fs
		say "read of $gib GiB: $seconds s, peak RSS $((peak / 1024)) MiB"
		printf '| read of a %s GiB file (dd, cold) | %s MiB/s | %s MiB |\n' "$gib" \
			"$(python3 -c "print(round($gib * 1024 / $seconds))")" "$((peak / 1024))" >>"$ROWS"
		rm -rf "$WORK/spool/recovery"/* 2>/dev/null || true
	done
fi

echo "scale rows ($(nproc) CPUs, $(date -u '+%Y-%m-%d %H:%M UTC'), took ${SECONDS}s):"
cat "$ROWS"
