#!/usr/bin/env bash
# midasfs benchmarks: the mount, measured side by side in one run against what people use without
# it (curl, pydas, nginx), on loopback against `midasfs serve`. Prints one table of ratios.
# With --real DIR, the read and large-write rows (1, 2, 3, 6) run against the real Midas Server
# that ../shared/real-midas/start.sh started in DIR instead.
#
#   scripts/bench.sh [--quick] [--runs N] [--dir DIR] [--keep] [--real DIR]
#
# Needs (scripts/setup.sh installs them): fuse3, curl, nginx-light, python3, and pydas in
# .venv-pydas for the pydas rows. Run as root for honest cold-cache numbers (drop_caches).
# A missed target is reported, never an error: the exit status says whether the benchmark ran.
# It builds midasfs (cargo build --release) unless MIDASFS_BIN names a midasfs binary to use.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: scripts/bench.sh [--quick] [--runs N] [--dir DIR] [--keep] [--real DIR] [--only N,...]

  --quick    small sizes (64 MiB files, a 10x10 tree, 100/400-item folders, 100 small files);
             about 3 minutes instead of about 13 (plus the scale rows of
             scripts/bench/scale.sh, which only the full mode runs)
  --runs N   runs per measurement (the median is shown); default 3
  --dir DIR  where the servers' stores, test files and mountpoints go; default ${TMPDIR:-/var/tmp}
  --keep     keep that working directory (logs, stores) instead of deleting it
  --real DIR against the real Midas Server started by ../shared/real-midas/start.sh in DIR
             (its DIR/env): the read and large-write rows (1, 2, 3, 6) only, since the others
             need serve's counters, its --latency or a second server
  --only N,… only these sections (e.g. --only 5 for the small-file writes, rows 5 and 5b)
EOF
}

QUICK=0
RUNS=3
KEEP=0
REAL_DIR=
ONLY=
BASE_DIR=${TMPDIR:-/var/tmp}
while (($#)); do
	case $1 in
	--quick) QUICK=1 ;;
	--runs)
		RUNS=${2:?--runs needs a number}
		shift
		;;
	--dir)
		BASE_DIR=${2:?--dir needs a directory}
		shift
		;;
	--keep) KEEP=1 ;;
	--only)
		ONLY=,${2:?--only needs section numbers},
		shift
		;;
	--real)
		REAL_DIR=${2:?--real needs the directory of start.sh}
		[[ -f $REAL_DIR/env ]] || {
			echo "--real: no $REAL_DIR/env (start the server with ../shared/real-midas/start.sh DIR PORT)" >&2
			exit 2
		}
		shift
		;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		usage >&2
		exit 2
		;;
	esac
	shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || {
	echo "--runs needs a positive number" >&2
	exit 2
}

# SLOW_RUNS: runs of what is slow because every request waits for the latency (pydas walks,
# small-file writes). Their spread is small, and a third run would push the full mode past
# 20 minutes.
if ((QUICK)); then
	BIG_MIB=64
	TREE_FOLDERS=10 TREE_FILES=10
	LIST_SMALL=100 LIST_BIG=400
	SMALL_FILES=100
	SLOW_RUNS=1
else
	BIG_MIB=1024
	TREE_FOLDERS=50 TREE_FILES=40
	LIST_SMALL=1000 LIST_BIG=10000
	SMALL_FILES=500
	SLOW_RUNS=$((RUNS < 2 ? RUNS : 2))
fi
BIG_BYTES=$((BIG_MIB * 1024 * 1024))
if ((BIG_MIB % 1024 == 0)); then BIG_TEXT="$((BIG_MIB / 1024)) GiB"; else BIG_TEXT="$BIG_MIB MiB"; fi
TREE_FILE_SIZE=1024
SMALL_FILE_SIZE=4096
RANDOM_READS=1000
RANDOM_READ_SIZE=4096
LATENCY_MS=20
# The pydas walk of the big folder (10,000 requests at 20 ms) runs once.
PYDAS_BIG_RUNS=1
# Long enough that the warm walk, right after a slow cold one, is still inside the TTL.
META_TTL=300
ADMIN_PASSWORD=bench-$RANDOM$RANDOM
HOME_DIR=users/Admin_User

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/serve.sh
source "$REPO/scripts/lib/serve.sh"
cd "$REPO"
HELPER=$REPO/scripts/bench/midasbench.py
if [[ -x $REPO/.venv-pydas/bin/python ]]; then PYTHON=$REPO/.venv-pydas/bin/python; else PYTHON=python3; fi
HAVE_PYDAS=1
"$PYTHON" -c 'import pydas' 2>/dev/null || HAVE_PYDAS=0

# Progress goes to stderr with the seconds since the start; the results go to stdout.
say() { printf '[%4ds] %s\n' "$SECONDS" "$*" >&2; }
helper() { "$PYTHON" "$HELPER" "$@"; }

for tool in curl cp dd find mountpoint "$PYTHON"; do
	command -v "$tool" >/dev/null || {
		say "bench: $tool is missing (see scripts/setup.sh)"
		exit 1
	}
done
HAVE_NGINX=1
command -v nginx >/dev/null || HAVE_NGINX=0
CAN_DROP_CACHES=1
[[ -w /proc/sys/vm/drop_caches ]] || CAN_DROP_CACHES=0

# ---------------------------------------------------------------- the machine

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
mem_gib=$(awk '/^MemTotal:/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
MACHINE="$(nproc) CPUs (${cpu_model:-unknown model}), $mem_gib GiB RAM, Linux $(uname -r)"
echo "midasfs benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $MACHINE"
echo "mode: $( ((QUICK)) && echo quick || echo full), $RUNS runs per measurement ($SLOW_RUNS for pydas walks and small-file writes), median shown, files of $BIG_TEXT"
((CAN_DROP_CACHES)) || echo "note: not root, so the page cache cannot be dropped: 'cold' reads may be cached"
((HAVE_PYDAS)) || echo "note: pydas is not installed (.venv-pydas): the pydas rows are n/a"
((HAVE_NGINX)) || echo "note: nginx is not installed: the nginx rows are n/a"
echo

say "midasfs: ${MIDASFS_BIN:-building it (cargo build --release)}"
midasfs_binary

# ---------------------------------------------------------------- cleanup

mkdir -p "$BASE_DIR"
WORK=$(mktemp -d "$BASE_DIR/midasfs-bench.XXXXXX")
RESULTS=$WORK/results.tsv
# Files, not arrays: sections run in subshells, and cleanup must see what they started.
MOUNT_LIST=$WORK/mounts
PID_LIST=$WORK/pids
: >"$MOUNT_LIST"
: >"$PID_LIST"
printf 'key\tsection\tlabel\tkind\tbytes\tbaseline\tmine\tbase\tmine_note\tbase_note\tmissing\n' >"$RESULTS"

unmount_everything() {
	local mnt
	while read -r mnt; do
		if mountpoint -q "$mnt"; then
			fusermount3 -u "$mnt" 2>/dev/null || umount "$mnt" 2>/dev/null || umount -l "$mnt" || true
		fi
	done <"$MOUNT_LIST"
}

cleanup() {
	local status=$?
	trap - EXIT INT TERM
	unmount_everything
	local pid
	while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$PID_LIST"
	while read -r pid; do wait "$pid" 2>/dev/null || true; done <"$PID_LIST"
	if ((KEEP)); then say "kept $WORK"; else rm -rf "$WORK"; fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- servers and mounts

# start_server NAME DATA LATENCY: sets SERVER_URL, SERVER_EMAIL, SERVER_KEY, SERVER_PID.
# With --real: the real Midas of REAL_DIR instead (started already; SERVER_PID is empty).
start_server() {
	if [[ -n $REAL_DIR ]]; then
		SERVER_URL=$(sed -n 's/^export MIDAS_REAL_URL=//p' "$REAL_DIR/env")
		SERVER_EMAIL=$(sed -n 's/^export MIDAS_REAL_EMAIL=//p' "$REAL_DIR/env")
		SERVER_KEY=$(sed -n 's/^export MIDAS_REAL_APIKEY=//p' "$REAL_DIR/env")
		SERVER_PID=
		return
	fi
	local out=$WORK/$1.out
	serve_in_background "$out" "$WORK/$1.log" --data "$2" --listen 127.0.0.1:0 \
		--admin-password-stdin --latency "$3" <<<"$ADMIN_PASSWORD"
	echo "$SERVER_PID" >>"$PID_LIST"
	SERVER_URL=$(serve_said "$out" url)
	SERVER_EMAIL=$(serve_said "$out" email)
	SERVER_KEY=$(serve_said "$out" key)
}

stop_server() {
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# mount_fs MOUNTPOINT [options]: mounts the current server; sets MOUNT_PID (the daemon).
mount_fs() {
	local mnt=$1
	shift
	mkdir -p "$mnt"
	echo "$mnt" >>"$MOUNT_LIST"
	MIDAS_API_KEY=$SERVER_KEY "$BIN" mount "$SERVER_URL" "$mnt" --email "$SERVER_EMAIL" \
		--log-file "$WORK/mount.log" --spool-dir "$WORK/spool" "$@"
	MOUNT_PID=$(helper mount-pid "$mnt")
}

unmount_fs() {
	fusermount3 -u "$1" 2>/dev/null || umount "$1"
	# Let the daemon finish exiting, so it does not compete with the next measurement.
	local tries=0
	while kill -0 "$MOUNT_PID" 2>/dev/null && ((++tries < 100)); do sleep 0.1; done
}

drop_caches() {
	sync
	if ((CAN_DROP_CACHES)); then echo 3 >/proc/sys/vm/drop_caches; fi
}

timed() { helper time "$1"; }
median() { helper median "$@"; }
api() { helper "$1" "$SERVER_URL" "$SERVER_EMAIL" "$SERVER_KEY" "${@:2}"; }
requests() { helper stat "$SERVER_URL" requests; }
download_url() { echo "$SERVER_URL/download/?bitstream=$1&offset=0&authToken=$TOKEN"; }

# A bash command line that runs each argument (already quoted) at once and fails if any fails.
all_at_once() {
	local line="" cmd
	for cmd in "$@"; do line+="$cmd & "; done
	echo "${line}for job in \$(jobs -p); do wait \$job || exit 1; done"
}

# record KEY SECTION KIND BYTES LABEL BASELINE MINE_RUNS BASE_RUNS [MINE_NOTE BASE_NOTE MISSING]
record() {
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$5" "$3" "$4" "$6" "$7" "$8" \
		"${9:-}" "${10:-}" "${11:-}" >>"$RESULTS"
}

# run_section N TITLE FUNCTION: a failing section becomes an n/a row; the others still run.
run_section() {
	[[ -z $ONLY || $ONLY == *",$1,"* ]] || return 0
	say "== $1. $2"
	set +e
	("$3")
	local status=$?
	set -e
	unmount_everything
	if ((status != 0)); then
		say "bench: section $1 ($2) failed with exit $status; going on"
		record "failed_$1" "$1" time 0 "$1. $2" "" "" "" "" "" "failed (exit $status, see the output above)"
	fi
}

# The error text of a write into the mount, empty if writing works.
write_probe() {
	local probe="$1/.bench-write-probe-$RANDOM" err
	if err=$( (printf 'probe\n' >"$probe") 2>&1); then
		rm -f "$probe" 2>/dev/null || true
		echo ""
	else
		echo "${err##*: }"
	fi
}

# ---------------------------------------------------------------- the data

say "generating $BIG_TEXT test files"
mkdir -p "$WORK/src" "$WORK/spool"
declare -A BIG_MD5
for i in 1 2 3 4; do
	head -c "$BIG_BYTES" /dev/urandom >"$WORK/src/big-$i.bin"
	BIG_MD5[$i]=$(md5sum "$WORK/src/big-$i.bin" | cut -d' ' -f1)
done

start_server main "$WORK/data-main" 0
MAIN_DATA=$WORK/data-main
# On a real server that other runs used, in folders of this run's own.
RUN_TAG=
if [[ -n $REAL_DIR ]]; then
	RUN_TAG=-$(date +%s)-$$
	HOME_DIR=users/$(curl -sSf "$SERVER_URL/api/json?method=midas.user.get&email=$SERVER_EMAIL" |
		"$PYTHON" -c 'import json, sys; d = json.load(sys.stdin)["data"]; print(d["firstname"] + "_" + d["lastname"])')
	echo "server: the real Midas Server at $SERVER_URL (php -S with ${WORKERS:-4} workers, SQLite; $REAL_DIR)"
fi
say "main server at $SERVER_URL; uploading the test files"
READ_FOLDER=$(api folder "Private/bench-read$RUN_TAG")
declare -A BITSTREAM
for i in 1 2 3 4; do
	BITSTREAM[$i]=$(api put-file "$READ_FOLDER" "$WORK/src/big-$i.bin")
done
# big-1.bin stays as the source of the write tests; the others were only needed for the upload.
rm -f "$WORK"/src/big-{2,3,4}.bin
TOKEN=$(api login)
MNT=$WORK/mnt-main
READ_DIR=$MNT/$HOME_DIR/Private/bench-read$RUN_TAG

# ---------------------------------------------------------------- 1. sequential read

section_sequential_read() {
	local dd_runs="" cat_runs="" curl_runs="" r
	for ((r = 1; r <= RUNS; r++)); do
		mount_fs "$MNT"
		drop_caches
		dd_runs+=" $(timed "dd if=$(printf %q "$READ_DIR/big-1.bin") of=/dev/null bs=1M")"
		unmount_fs "$MNT"
		mount_fs "$MNT"
		drop_caches
		cat_runs+=" $(timed "cat $(printf %q "$READ_DIR/big-1.bin") >/dev/null")"
		unmount_fs "$MNT"
		drop_caches
		curl_runs+=" $(timed "curl -sSf -o /dev/null '$(download_url "${BITSTREAM[1]}")'")"
		say "  run $r: dd $(echo "$dd_runs" | awk '{print $NF}') s, cat $(echo "$cat_runs" | awk '{print $NF}') s, curl $(echo "$curl_runs" | awk '{print $NF}') s"
	done
	record read_dd 1 rate "$BIG_BYTES" "1. sequential read, dd bs=1M, $BIG_TEXT, cold" curl "$dd_runs" "$curl_runs"
	record read_cat 1 rate "$BIG_BYTES" "1. sequential read, cat, $BIG_TEXT, cold" curl "$cat_runs" "$curl_runs"
	echo "$curl_runs" >"$WORK/curl-runs"
}

# ---------------------------------------------------------------- 2. random read, first byte

section_random_read() {
	local pread_runs="" ttfb_runs="" curl_ttfb_runs="" script_runs="" r
	for ((r = 1; r <= RUNS; r++)); do
		mount_fs "$MNT"
		drop_caches
		ttfb_runs+=" $(helper ttfb "$READ_DIR/big-2.bin")"
		drop_caches
		pread_runs+=" $(helper pread "$READ_DIR/big-1.bin" "$RANDOM_READS" "$RANDOM_READ_SIZE" --seed "$r")"
		unmount_fs "$MNT"
		drop_caches
		curl_ttfb_runs+=" $(curl -sSf -o /dev/null -w '%{time_starttransfer}' "$(download_url "${BITSTREAM[2]}")")"
		drop_caches
		# The same reads without the mount: one `offset` request per read.
		script_runs+=" $(MIDASBENCH_TOKEN=$TOKEN helper pread-offsets "$SERVER_URL" "${BITSTREAM[1]}" \
			"$BIG_BYTES" "$RANDOM_READS" "$RANDOM_READ_SIZE" --seed "$r")"
		say "  run $r: first 4 KiB $(echo "$ttfb_runs" | awk '{print $NF}') s (curl $(echo "$curl_ttfb_runs" | awk '{print $NF}') s), $RANDOM_READS preads $(echo "$pread_runs" | awk '{print $NF}') s (script $(echo "$script_runs" | awk '{print $NF}') s)"
	done
	local curl_runs=""
	[[ -f $WORK/curl-runs ]] && curl_runs=$(cat "$WORK/curl-runs")
	record random_read 2 time 0 "2. random read, $RANDOM_READS preads of 4 KiB, $BIG_TEXT file, cold" \
		"curl of the whole file" "$pread_runs" "$curl_runs"
	record random_read_script 2 time 0 "2. random read, $RANDOM_READS preads of 4 KiB, $BIG_TEXT file, cold" \
		"a script, one offset request per read" "$pread_runs" "$script_runs"
	record first_byte 2 time 0 "2. first 4 KiB of an unopened file (open + pread)" \
		"curl, time to first byte" "$ttfb_runs" "$curl_ttfb_runs"
}

# ---------------------------------------------------------------- 3. parallel reads

section_parallel_read() {
	local mount_runs="" curl_runs="" rss_runs="" r i
	local cats=() curls=()
	for i in 1 2 3 4; do
		cats+=("cat $(printf %q "$READ_DIR/big-$i.bin") >/dev/null")
		curls+=("curl -sSf -o /dev/null '$(download_url "${BITSTREAM[$i]}")'")
	done
	for ((r = 1; r <= RUNS; r++)); do
		mount_fs "$MNT"
		drop_caches
		mount_runs+=" $(timed "$(all_at_once "${cats[@]}")")"
		rss_runs+=" $(helper peak-rss "$MOUNT_PID")"
		unmount_fs "$MNT"
		drop_caches
		curl_runs+=" $(timed "$(all_at_once "${curls[@]}")")"
		say "  run $r: mount $(echo "$mount_runs" | awk '{print $NF}') s (peak RSS $(echo "$rss_runs" | awk '{print $NF}') MiB), curl $(echo "$curl_runs" | awk '{print $NF}') s"
	done
	record read_parallel 3 rate $((4 * BIG_BYTES)) "3. four $BIG_TEXT files read at once (cat), cold" \
		"4 curls at once" "$mount_runs" "$curl_runs"
	record rss_mount_read 3 mib 0 "3. mount daemon peak RSS, reading four files at once" "" "$rss_runs" ""
}

# ---------------------------------------------------------------- 9. first reads, data cache

# Bytes of file content that came over the wire to a mount (its `midasfs status`).
mount_wire_bytes() {
	"$BIN" status --json "$1" | "$PYTHON" -c '
import json, sys
answer = json.load(sys.stdin)
answer = answer[0] if isinstance(answer, list) else answer
print(answer["requests"]["download_bytes"])'
}

# A cold cat of FILE; prints seconds.
cold_cat() {
	drop_caches
	timed "cat $(printf %q "$1") >/dev/null"
}

section_cache() {
	local sniff_folder sniff_dir=$MNT/$HOME_DIR/Private/bench-sniff i r f
	sniff_folder=$(api folder Private/bench-sniff)
	mkdir -p "$WORK/sniff"
	for ((i = 1; i <= 20; i++)); do
		head -c 5000000 /dev/urandom >"$WORK/sniff/f$i.dat"
		api put-file "$sniff_folder" "$WORK/sniff/f$i.dat" >/dev/null
	done
	rm -rf "$WORK/sniff"
	local read=$((20 * 4096)) sniff_runs="" server_runs="" before sbefore
	for ((r = 1; r <= RUNS; r++)); do
		mount_fs "$MNT"
		drop_caches
		before=$(mount_wire_bytes "$MNT")
		sbefore=$(helper stat "$SERVER_URL" bytes_downloaded)
		for f in "$sniff_dir"/*.dat; do head -c 4096 "$f" >/dev/null; done
		sniff_runs+=" $(($(mount_wire_bytes "$MNT") - before))"
		server_runs+=" $(($(helper stat "$SERVER_URL" bytes_downloaded) - sbefore))"
		unmount_fs "$MNT"
		say "  run $r: sniffing 20 files: $(echo "$sniff_runs" | awk '{print $NF}') bytes over the wire (server counted $(echo "$server_runs" | awk '{print $NF}'))"
	done
	record sniff 9 bytes "$read" "9. file manager sniff: first 4 KiB of twenty 5 MB .dat files, bytes over the wire" \
		"bytes read" "$sniff_runs" "$read" "server handed its sockets $(median $server_runs | cut -d. -f1) bytes" ""

	# The data cache: fill it with one cat, then re-read after a remount, and read a second item
	# of the same content. The baseline is a cold cat of the same file from the local disk.
	local cache=$WORK/datacache entry remount_runs="" local_runs="" same_runs="" remount_bytes="" same_bytes=""
	local same_folder
	entry=$cache/data/${BIG_MD5[1]:0:2}/${BIG_MD5[1]}
	mount_fs "$MNT" --cache-dir "$cache"
	cat "$READ_DIR/big-1.bin" >/dev/null
	for ((i = 0; i < 600; i++)); do [[ -f $entry ]] && break; sleep 0.1; done
	unmount_fs "$MNT"
	[[ -f $entry ]] || { say "bench: the data cache was not filled"; return 1; }
	same_folder=$(api folder Private/bench-same)
	api put-file "$same_folder" "$WORK/src/big-1.bin" >/dev/null
	for ((r = 1; r <= RUNS; r++)); do
		mount_fs "$MNT" --cache-dir "$cache"
		sbefore=$(helper stat "$SERVER_URL" bytes_downloaded)
		remount_runs+=" $(cold_cat "$READ_DIR/big-1.bin")"
		remount_bytes+=" $(($(helper stat "$SERVER_URL" bytes_downloaded) - sbefore))"
		sbefore=$(helper stat "$SERVER_URL" bytes_downloaded)
		same_runs+=" $(cold_cat "$MNT/$HOME_DIR/Private/bench-same/big-1.bin")"
		same_bytes+=" $(($(helper stat "$SERVER_URL" bytes_downloaded) - sbefore))"
		unmount_fs "$MNT"
		local_runs+=" $(cold_cat "$WORK/src/big-1.bin")"
		say "  run $r: re-read after remount $(echo "$remount_runs" | awk '{print $NF}') s ($(echo "$remount_bytes" | awk '{print $NF}') bytes downloaded), same content $(echo "$same_runs" | awk '{print $NF}') s, local cat $(echo "$local_runs" | awk '{print $NF}') s"
	done
	record read_remount 9 rate "$BIG_BYTES" "9. re-read after a remount, --cache-dir, $BIG_TEXT, cold" \
		"cat of the local file" "$remount_runs" "$local_runs" "downloaded: $(echo $remount_bytes | tr ' ' /) bytes" ""
	record read_same_content 9 rate "$BIG_BYTES" "9. a second item of the same content, --cache-dir, cold" \
		"cat of the local file" "$same_runs" "$local_runs" "downloaded: $(echo $same_bytes | tr ' ' /) bytes" ""
}

# ---------------------------------------------------------------- 6, 7. large write, dedup

section_large_write() {
	local folder source=$WORK/src/big-1.bin mount_runs="" curl_runs="" r problem
	folder=$(api folder "Private/bench-write$RUN_TAG")
	mount_fs "$MNT"
	local dest=$MNT/$HOME_DIR/Private/bench-write$RUN_TAG
	problem=$(write_probe "$dest")
	if [[ -n $problem ]]; then
		say "  writing into the mount fails ($problem)"
		record large_write 6 rate "$BIG_BYTES" "6. large write, cp of a $BIG_TEXT file" "curl -T" "" "" "" "" \
			"n/a (writes not supported yet: $problem)"
		record rss_mount_write 6 mib 0 "6. mount daemon peak RSS, large write" "" "" "" "" "" "n/a (writes not supported yet)"
		record dedup 7 bytes 0 "7. dedup: second cp of identical content, bytes sent" "" "" "" "" "" \
			"n/a (writes not supported yet)"
		return 0
	fi
	for ((r = 1; r <= RUNS; r++)); do
		# Fresh content for every upload, or the server's checksum dedup would skip the transfer.
		helper stamp "$source" "curl-run-$r-$RANDOM$RANDOM"
		drop_caches
		curl_runs+=" $(api curl-upload "$folder" "$source" "large-curl-$r.bin")"
		helper stamp "$source" "mount-run-$r-$RANDOM$RANDOM"
		drop_caches
		mount_runs+=" $(api copy-in "$folder" "$source" "$dest" --name "large-mount-$r.bin")"
		say "  run $r: cp $(echo "$mount_runs" | awk '{print $NF}') s, curl -T $(echo "$curl_runs" | awk '{print $NF}') s"
	done
	local rss
	rss=$(helper peak-rss "$MOUNT_PID")
	record large_write 6 rate "$BIG_BYTES" "6. large write, cp of a $BIG_TEXT file (until on the server)" \
		"generatetoken + curl -T" "$mount_runs" "$curl_runs"
	record rss_mount_write 6 mib 0 "6. mount daemon peak RSS, large writes" "" "$rss" ""
	# The bytes sent are counted by serve's stats endpoint: a real server has none.
	[[ -z $REAL_DIR ]] || return 0

	# The source still holds the content of the last mount run: the server has it already.
	# Copied over that file again, nothing is sent; under a new name it is sent while it is
	# written, before its MD5 is known (see SEMANTICS.md), so the bytes go again.
	local before after dedup_time
	before=$(helper stat "$SERVER_URL" bytes_uploaded)
	dedup_time=$(api copy-in "$folder" "$source" "$dest" --name "large-mount-$RUNS.bin")
	after=$(helper stat "$SERVER_URL" bytes_uploaded)
	say "  copy over the file of identical content: $((after - before)) bytes sent in $dedup_time s"
	record dedup 7 bytes "$BIG_BYTES" "7. dedup: cp of the same content over the file again, bytes sent" \
		"file size" "$((after - before))" "$BIG_BYTES" "in $(printf '%.2f' "$dedup_time") s" ""
	before=$after
	dedup_time=$(api copy-in "$folder" "$source" "$dest" --name "large-again.bin")
	after=$(helper stat "$SERVER_URL" bytes_uploaded)
	say "  copy of identical content under a new name: $((after - before)) bytes sent in $dedup_time s"
	record dedup_new_name 7 bytes "$BIG_BYTES" \
		"7. cp of the same content under a new name (sent while written: no dedup), bytes sent" \
		"file size" "$((after - before))" "$BIG_BYTES" "in $(printf '%.2f' "$dedup_time") s" ""
	unmount_fs "$MNT"
}

# ---------------------------------------------------------------- 8. server vs nginx

section_server() {
	if ! ((HAVE_NGINX)); then
		record serve_one 8 rate "$BIG_BYTES" "8. server: curl of a $BIG_TEXT bitstream" nginx "" "" "" "" "n/a (nginx is not installed)"
		return 0
	fi
	local conf=$WORK/nginx port nginx_pid worker_pid r i
	mkdir -p "$conf/tmp"
	port=$(helper free-port)
	{
		((EUID == 0)) && echo "user root;"
		cat <<EOF
worker_processes 1;
daemon off;
pid $conf/nginx.pid;
error_log $conf/error.log;
events { worker_connections 64; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path $conf/tmp;
    proxy_temp_path $conf/tmp;
    fastcgi_temp_path $conf/tmp;
    uwsgi_temp_path $conf/tmp;
    scgi_temp_path $conf/tmp;
    server {
        listen 127.0.0.1:$port;
        root $MAIN_DATA/assetstore;
    }
}
EOF
	} >"$conf/nginx.conf"
	nginx -p "$conf" -c "$conf/nginx.conf" 2>>"$conf/error.log" &
	nginx_pid=$!
	echo "$nginx_pid" >>"$PID_LIST"
	local tries=0
	until [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/") != 000 ]]; do
		((++tries < 100)) && kill -0 "$nginx_pid" 2>/dev/null || {
			say "nginx did not start:"
			cat "$conf/error.log" >&2
			return 1
		}
		sleep 0.1
	done
	local nginx_url="http://127.0.0.1:$port/${BIG_MD5[1]:0:2}/${BIG_MD5[1]:2:2}/${BIG_MD5[1]}"
	[[ $(curl -s -o /dev/null -w '%{http_code}' "$nginx_url") == 200 ]] || {
		say "nginx does not serve $nginx_url"
		return 1
	}
	# Both from a warm page cache: this compares the servers, not the disk.
	curl -sSf -o /dev/null "$(download_url "${BITSTREAM[1]}")"
	curl -sSf -o /dev/null "$nginx_url"
	local serve_runs="" nginx_runs=""
	for ((r = 1; r <= RUNS; r++)); do
		serve_runs+=" $(timed "curl -sSf -o /dev/null '$(download_url "${BITSTREAM[1]}")'")"
		nginx_runs+=" $(timed "curl -sSf -o /dev/null '$nginx_url'")"
		say "  run $r: midasfs serve $(echo "$serve_runs" | awk '{print $NF}') s, nginx $(echo "$nginx_runs" | awk '{print $NF}') s"
	done
	record serve_one 8 rate "$BIG_BYTES" "8. server: curl of a $BIG_TEXT bitstream, warm page cache" \
		nginx "$serve_runs" "$nginx_runs"
	local serve_curls=() nginx_curls=() md5
	for i in 1 2 3 4; do
		md5=${BIG_MD5[$i]}
		serve_curls+=("curl -sSf -o /dev/null '$(download_url "${BITSTREAM[$i]}")'")
		nginx_curls+=("curl -sSf -o /dev/null 'http://127.0.0.1:$port/${md5:0:2}/${md5:2:2}/$md5'")
	done
	timed "$(all_at_once "${serve_curls[@]}")" >/dev/null
	timed "$(all_at_once "${nginx_curls[@]}")" >/dev/null
	serve_runs="" nginx_runs=""
	for ((r = 1; r <= RUNS; r++)); do
		serve_runs+=" $(timed "$(all_at_once "${serve_curls[@]}")")"
		nginx_runs+=" $(timed "$(all_at_once "${nginx_curls[@]}")")"
	done
	record serve_parallel 8 rate $((4 * BIG_BYTES)) "8. server: 4 curls at once of $BIG_TEXT bitstreams, warm" \
		"nginx" "$serve_runs" "$nginx_runs"
	worker_pid=$(pgrep -P "$nginx_pid" | head -n1)
	record rss_server_serving 8 mib 0 "8. server peak RSS while serving (fresh server)" "nginx worker" \
		"$(helper peak-rss "$SERVER_PID")" "$(helper peak-rss "${worker_pid:-$nginx_pid}")"
	kill "$nginx_pid"
	wait "$nginx_pid" 2>/dev/null || true
}

# ---------------------------------------------------------------- 4. metadata

# walk_rows KEY LABEL COMMAND DIR PYDAS_RUNS PYDAS_REQUESTS: cold and warm rows; {} in COMMAND is DIR.
walk_rows() {
	local key=$1 label=$2 command=$3 dir=$4 pydas_runs=$5 pydas_requests=$6
	local cold_runs="" warm_runs="" cold_requests=0 warm_requests=0 before r
	local walk="${command//\{\}/$(printf %q "$dir")} >/dev/null"
	for ((r = 1; r <= RUNS; r++)); do
		mount_fs "$META_MNT" --ttl "$META_TTL"
		stat "$dir" >/dev/null # the path itself; pydas starts from a known folder id too
		before=$(requests)
		cold_runs+=" $(timed "$walk")"
		cold_requests=$(($(requests) - before - 1))
		before=$(requests)
		warm_runs+=" $(timed "$walk")"
		warm_requests=$(($(requests) - before - 1))
		unmount_fs "$META_MNT"
		say "  $label run $r: cold $(echo "$cold_runs" | awk '{print $NF}') s ($cold_requests requests), warm $(echo "$warm_runs" | awk '{print $NF}') s ($warm_requests requests)"
	done
	local pydas_note=""
	[[ -n $pydas_runs ]] && pydas_note="$pydas_requests requests"
	record "${key}_cold" 4 time 0 "4. $label, cold" "pydas walk" "$cold_runs" "$pydas_runs" \
		"$cold_requests requests" "$pydas_note"
	record "${key}_warm" 4 time 0 "4. $label, warm (within the TTL)" "pydas walk" "$warm_runs" "$pydas_runs" \
		"$warm_requests requests" "$pydas_note"
}

# pydas_walk FOLDER_ID RUNS: sets PYDAS_RUNS and PYDAS_REQUESTS.
pydas_walk() {
	PYDAS_RUNS="" PYDAS_REQUESTS=""
	((HAVE_PYDAS)) || return 0
	local r seconds
	for ((r = 1; r <= $2; r++)); do
		read -r seconds PYDAS_REQUESTS < <(api pydas-walk "$1")
		PYDAS_RUNS+=" $seconds"
		say "  pydas walk of folder $1, run $r: $seconds s ($PYDAS_REQUESTS requests)"
	done
}

section_metadata() {
	local private=$META_MNT/$HOME_DIR/Private
	pydas_walk "$TREE_FOLDER" "$SLOW_RUNS"
	local tree_runs=$PYDAS_RUNS tree_requests=$PYDAS_REQUESTS
	local tree_label="tree of $TREE_FOLDERS folders × $TREE_FILES files"
	walk_rows walk_ls "ls -lR, $tree_label" "ls -lR {}" "$private/tree" "$tree_runs" "$tree_requests"
	walk_rows walk_find "find -ls, $tree_label" "find {} -ls" "$private/tree" "$tree_runs" "$tree_requests"

	pydas_walk "$LIST_SMALL_FOLDER" "$SLOW_RUNS"
	walk_rows list_small "ls -l of a folder of $LIST_SMALL items" "ls -l {}" "$private/list-small" \
		"$PYDAS_RUNS" "$PYDAS_REQUESTS"
	pydas_walk "$LIST_BIG_FOLDER" "$PYDAS_BIG_RUNS"
	walk_rows list_big "ls -l of a folder of $LIST_BIG items" "ls -l {}" "$private/list-big" \
		"$PYDAS_RUNS" "$PYDAS_REQUESTS"
}

# ---------------------------------------------------------------- 5. small-file writes

section_small_writes() {
	local private_id private=$META_MNT/$HOME_DIR/Private problem
	private_id=$(api folder Private)
	local label="5. cp -r of $SMALL_FILES files of 4 KiB (until on the server), ${LATENCY_MS} ms latency"
	mount_fs "$META_MNT"
	problem=$(write_probe "$private")
	unmount_fs "$META_MNT"
	if [[ -n $problem ]]; then
		say "  writing into the mount fails ($problem)"
		record small_write 5 time 0 "$label" "pydas.upload" "" "" "" "" "n/a (writes not supported yet: $problem)"
		return 0
	fi
	local mount_runs="" pydas_runs="" mount_requests=0 pydas_requests="" before seconds r
	local wb_runs="" wb_requests=0
	for ((r = 1; r <= SLOW_RUNS; r++)); do
		# Fresh content each time: both pydas and the mount would skip content the server has.
		if ((HAVE_PYDAS)); then
			helper make-files "$WORK/small-pydas-$r" "$SMALL_FILES" "$SMALL_FILE_SIZE"
			read -r seconds pydas_requests < <(api pydas-upload "$WORK/small-pydas-$r")
			pydas_runs+=" $seconds"
		fi
		helper make-files "$WORK/small-mount-$r" "$SMALL_FILES" "$SMALL_FILE_SIZE"
		mount_fs "$META_MNT"
		before=$(requests)
		mount_runs+=" $(api copy-in "$private_id" "$WORK/small-mount-$r" "$private")"
		mount_requests=$(($(requests) - before - 1))
		unmount_fs "$META_MNT"
		# 5b: the same with --write-back: cp returns once the files are in the spool, and the
		# time runs until the server holds every one.
		helper make-files "$WORK/small-wb-$r" "$SMALL_FILES" "$SMALL_FILE_SIZE"
		mount_fs "$META_MNT" --write-back
		before=$(requests)
		wb_runs+=" $(api copy-in "$private_id" "$WORK/small-wb-$r" "$private")"
		wb_requests=$(($(requests) - before - 1))
		unmount_fs "$META_MNT"
		say "  run $r: cp -r $(echo "$mount_runs" | awk '{print $NF}') s, with --write-back $(echo "$wb_runs" | awk '{print $NF}') s, pydas.upload ${seconds:-n/a} s"
	done
	local pydas_note=""
	[[ -n $pydas_runs ]] && pydas_note="$pydas_requests requests"
	# The copy-in check after cp adds its own few requests to the count.
	record small_write 5 time 0 "$label" "pydas.upload" "$mount_runs" "$pydas_runs" \
		"≤ $mount_requests requests" "$pydas_note"
	record small_write_wb 5 time 0 "5b. the same with --write-back" "pydas.upload" "$wb_runs" "$pydas_runs" \
		"≤ $wb_requests requests" "$pydas_note"
}

# ---------------------------------------------------------------- run

run_section 1 "sequential read" section_sequential_read
run_section 2 "random read, first byte" section_random_read
run_section 3 "parallel reads" section_parallel_read
run_section 9 "first reads, data cache" section_cache
run_section 6 "large write, dedup (7)" section_large_write
if [[ -n $REAL_DIR ]]; then
	echo "command: scripts/bench.sh$( ((QUICK)) && echo " --quick") --real $REAL_DIR (runs: $RUNS), took $((SECONDS / 60)) min $((SECONDS % 60)) s"
	echo
	helper table "$RESULTS"
	exit 0
fi

# A fresh server process, so that its peak RSS is that of serving alone.
record rss_server_run 8 mib 0 "8. server peak RSS over sections 1–7 (uploads included)" "" \
	"$(helper peak-rss "$SERVER_PID")" ""
stop_server "$SERVER_PID"
start_server main "$MAIN_DATA" 0
TOKEN=$(api login)
run_section 8 "server vs nginx" section_server
stop_server "$SERVER_PID"

META_DATA=$WORK/data-meta
META_MNT=$WORK/mnt-meta
start_server meta "$META_DATA" 0
say "metadata server at $SERVER_URL: seeding a tree of $TREE_FOLDERS × $TREE_FILES files, $LIST_SMALL and $LIST_BIG empty items"
TREE_FOLDER=$(api folder Private/tree)
api seed-tree "$TREE_FOLDER" "$TREE_FOLDERS" "$TREE_FILES" "$TREE_FILE_SIZE"
LIST_SMALL_FOLDER=$(api folder Private/list-small)
api seed-empty "$LIST_SMALL_FOLDER" "$LIST_SMALL"
LIST_BIG_FOLDER=$(api folder Private/list-big)
api seed-empty "$LIST_BIG_FOLDER" "$LIST_BIG"
# Seeded fast; now the same store behind a WAN-like round trip.
stop_server "$SERVER_PID"
start_server meta "$META_DATA" "$LATENCY_MS"
say "restarted it with --latency $LATENCY_MS"
run_section 4 "metadata walks" section_metadata
run_section 5 "small-file writes" section_small_writes
stop_server "$SERVER_PID"

echo "command: scripts/bench.sh$( ((QUICK)) && echo " --quick") (runs: $RUNS), took $((SECONDS / 60)) min $((SECONDS % 60)) s"
echo
helper table "$RESULTS"

# Full mode: the scale rows (how time and memory grow with folder, tree and file size), in a
# script of their own that also runs by itself.
if ((!QUICK)); then
	echo
	"$REPO/scripts/bench/scale.sh" --dir "$WORK" || echo "scale rows: failed (exit $?), see the output above"
fi
