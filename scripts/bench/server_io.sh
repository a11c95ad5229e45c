#!/usr/bin/env bash
# How fast `midasfs serve` moves bytes, side by side with nginx on loopback:
#   - download: `curl` of one bitstream from the server vs the same blob from nginx (sendfile on)
#   - upload:   `curl -T` into midas.upload.perform (temp file, MD5, fsync, rename, commit)
#   - memory:   the server's peak RSS (VmHWM) while uploading and, in a fresh server, while serving
# Each number is the median of --runs runs; downloads are interleaved so both sides see the same
# machine load. Files are served from the page cache (warm), which is what the server controls.
#
#   scripts/bench/server_io.sh [--mib N] [--runs N] [--bin PATH] [--dir DIR] [--keep]
set -euo pipefail

MIB=1024
RUNS=5
BIN=""
BASE_DIR=${TMPDIR:-/var/tmp}
KEEP=0
while (($#)); do
	case $1 in
	--mib) MIB=${2:?--mib needs a number}; shift ;;
	--runs) RUNS=${2:?--runs needs a number}; shift ;;
	--bin) BIN=${2:?--bin needs a path}; shift ;;
	--dir) BASE_DIR=${2:?--dir needs a directory}; shift ;;
	--keep) KEEP=1 ;;
	-h | --help)
		sed -n '2,10p' "$0"
		exit 0
		;;
	*)
		echo "unknown argument $1 (see --help)" >&2
		exit 2
		;;
	esac
	shift
done
[[ $MIB =~ ^[1-9][0-9]*$ && $RUNS =~ ^[1-9][0-9]*$ ]] || {
	echo "--mib and --runs need positive numbers" >&2
	exit 2
}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [[ -z $BIN ]]; then
	BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/midasfs
fi
[[ -x $BIN ]] || {
	echo "no release binary at $BIN (cargo build --release, or --bin PATH)" >&2
	exit 2
}
for tool in curl nginx python3 md5sum; do
	command -v "$tool" >/dev/null || {
		echo "$tool is required (nginx: apt-get install -y nginx-light)" >&2
		exit 2
	}
done

BYTES=$((MIB * 1024 * 1024))
WORK=$(mktemp -d "$BASE_DIR/midasfs-server-io.XXXXXX")
SERVER_PID=""
NGINX_PID=""
cleanup() {
	[[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
	[[ -n $NGINX_PID ]] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
	if ((KEEP)); then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

say() { echo "$*" >&2; }

# A free loopback port.
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# One value out of the `data` of a JSON answer, by a Python expression on `d`.
json_get() {
	python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["stat"]=="ok", d; d=d["data"]; print(eval(sys.argv[1]))' "$1"
}

median() {
	python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"
}

# Wall seconds of a command.
timed() {
	local start end
	start=$(date +%s.%N)
	"$@"
	end=$(date +%s.%N)
	python3 -c "print(f'{$end - $start:.3f}')"
}

# User+system CPU seconds a process has used so far.
cpu_seconds() {
	python3 -c '
import os, sys
fields = open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split()
print((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))' "$1"
}

vmhwm_mib() {
	awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

start_server() {
	SERVER_PORT=$(free_port)
	"$BIN" serve --data "$WORK/data" --listen "127.0.0.1:$SERVER_PORT" --admin-password-stdin \
		<<<bench >"$WORK/server.out" 2>>"$WORK/server.log" &
	SERVER_PID=$!
	URL=http://127.0.0.1:$SERVER_PORT
	local tries=0
	until curl -s -o /dev/null "$URL/api/json?method=midas.version"; do
		((++tries < 100)) || {
			say "the server did not start; see $WORK/server.log"
			exit 1
		}
		sleep 0.1
	done
	local apikey
	apikey=$(sed -n 's/^admin api key: //p' "$WORK/server.out")
	TOKEN=$(curl -s "$URL/api/json?method=midas.login&email=admin@example.com&appname=Default&apikey=$apikey" | json_get 'd["token"]')
}

stop_server() {
	kill "$SERVER_PID"
	wait "$SERVER_PID" 2>/dev/null || true
	SERVER_PID=""
}

say "generating a $MIB MiB test file"
head -c "$BYTES" /dev/urandom >"$WORK/big.bin"

# ---------------------------------------------------------------- uploads
start_server
FOLDER=$(curl -s "$URL/api/json?method=midas.user.folders&token=$TOKEN" | json_get '[f["folder_id"] for f in d if f["name"]=="Private"][0]')
upload_runs=()
for ((r = 1; r <= RUNS; r++)); do
	# New content each run (first bytes changed), so every run stores a new asset.
	head -c 16 /dev/urandom | dd of="$WORK/big.bin" conv=notrunc status=none
	upload=$(curl -s "$URL/api/json?method=midas.upload.generatetoken&token=$TOKEN&folderid=$FOLDER&filename=big-$r.bin" | json_get 'd["token"]')
	seconds=$(timed curl -sS -o "$WORK/upload.json" -T "$WORK/big.bin" \
		"$URL/api/json?method=midas.upload.perform&uploadtoken=$upload&filename=big-$r.bin&length=$BYTES")
	ITEM=$(json_get 'd["item_id"]' <"$WORK/upload.json")
	upload_runs+=("$seconds")
	say "  upload run $r: $seconds s"
done
UPLOAD_HWM=$(vmhwm_mib "$SERVER_PID")
MD5=$(md5sum "$WORK/big.bin" | cut -d' ' -f1)
BITSTREAM=$(curl -s "$URL/api/json?method=midas.item.get&token=$TOKEN&id=$ITEM" | json_get 'd["revisions"][-1]["bitstreams"][0]["bitstream_id"]')
stop_server

# ---------------------------------------------------------------- downloads, fresh server
start_server
NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx/tmp"
{
	((EUID == 0)) && echo "user root;"
	cat <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 64; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path $WORK/nginx/tmp;
    proxy_temp_path $WORK/nginx/tmp;
    fastcgi_temp_path $WORK/nginx/tmp;
    uwsgi_temp_path $WORK/nginx/tmp;
    scgi_temp_path $WORK/nginx/tmp;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $WORK/data/assetstore;
    }
}
EOF
} >"$WORK/nginx/nginx.conf"
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" 2>>"$WORK/nginx/error.log" &
NGINX_PID=$!
SERVE_URL="$URL/download/?bitstream=$BITSTREAM&offset=0&authToken=$TOKEN"
NGINX_URL="http://127.0.0.1:$NGINX_PORT/${MD5:0:2}/${MD5:2:2}/$MD5"
tries=0
until curl -s -o /dev/null "$NGINX_URL"; do
	((++tries < 100)) || {
		say "nginx did not start; see $WORK/nginx/error.log"
		exit 1
	}
	sleep 0.1
done
# Both answers must be the file itself.
for url in "$SERVE_URL" "$NGINX_URL"; do
	got=$(curl -sS "$url" | md5sum | cut -d' ' -f1)
	[[ $got == "$MD5" ]] || {
		say "wrong bytes from $url: md5 $got, want $MD5"
		exit 1
	}
done
serve_runs=()
nginx_runs=()
serve_cpu=0
nginx_cpu=0
NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -n1)
for ((r = 1; r <= RUNS; r++)); do
	start=$(cpu_seconds "$SERVER_PID")
	serve_runs+=("$(timed curl -sS -o /dev/null "$SERVE_URL")")
	serve_cpu=$(python3 -c "print($serve_cpu + $(cpu_seconds "$SERVER_PID") - $start)")
	start=$(cpu_seconds "$NGINX_WORKER")
	nginx_runs+=("$(timed curl -sS -o /dev/null "$NGINX_URL")")
	nginx_cpu=$(python3 -c "print($nginx_cpu + $(cpu_seconds "$NGINX_WORKER") - $start)")
	say "  download run $r: serve ${serve_runs[-1]} s, nginx ${nginx_runs[-1]} s"
done
SERVE_HWM=$(vmhwm_mib "$SERVER_PID")

serve_s=$(median "${serve_runs[@]}")
nginx_s=$(median "${nginx_runs[@]}")
upload_s=$(median "${upload_runs[@]}")
python3 - "$MIB" "$RUNS" "$serve_s" "$nginx_s" "$upload_s" "$serve_cpu" "$nginx_cpu" "$UPLOAD_HWM" "$SERVE_HWM" <<'EOF'
import sys
mib, runs = int(sys.argv[1]), int(sys.argv[2])
serve, nginx, upload, serve_cpu, nginx_cpu = map(float, sys.argv[3:8])
upload_hwm, serve_hwm = sys.argv[8:10]
mb = mib * 1024 * 1024 / 1e6
gib = mib / 1024 * runs
print(f"file: {mib} MiB, medians of {runs} runs")
print(f"download  serve  {serve:7.3f} s  {mb / serve:7.0f} MB/s")
print(f"download  nginx  {nginx:7.3f} s  {mb / nginx:7.0f} MB/s")
print(f"download  serve/nginx throughput ratio: {nginx / serve:.2f} (target >= 0.70)")
print(f"download  CPU per GiB sent: serve {serve_cpu / gib:.2f} s, nginx worker {nginx_cpu / gib:.2f} s")
print(f"upload    serve  {upload:7.3f} s  {mb / upload:7.0f} MB/s (curl -T, incl. MD5, fsync, commit)")
print(f"server VmHWM: {upload_hwm} MiB after uploads, {serve_hwm} MiB in a fresh server after downloads (target < 100)")
EOF
