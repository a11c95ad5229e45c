#!/usr/bin/env bash
# What a file manager downloads when it opens a folder through a mount and thumbnails it.
#
# Starts `midasfs serve` (loopback, a store of its own), puts twenty 5 MB images (10 PNG, 10 JPEG,
# random pixels, so no two share an MD5) and twenty 5 MB `.dat` files into a folder, then opens
# that folder in pcmanfm under Xvfb, with and without `--cache-dir`, and prints the bytes that
# came over the wire (`midasfs status`: download_bytes) for each open:
#   1. a fresh mount, no thumbnails made yet;
#   2. pcmanfm started again on the same mount (its thumbnails are kept, as for a user);
#   3. the same mount, thumbnails deleted (pcmanfm must read every image again);
#   4. after a remount, thumbnails deleted.
# THUMBNAIL_MAX sets libfm's `thumbnail_max` (KB; default here and in Debian's libfm: 2048).
# Images larger than it go to the external thumbnailer (gdk-pixbuf-thumbnailer), which reads each
# once and saves its thumbnail; smaller ones pcmanfm loads itself.
# A screenshot of each first open goes to $WORK/shot-*.png. MODES (default "no-cache cache-dir")
# chooses the runs, MOUNT_OPTIONS adds mount options (e.g. -v, for a log of every download).
#
# Needs pcmanfm, xvfb (Xvfb), imagemagick (convert, import), fuse3, python3.
# usage: scripts/file-manager.sh [WORK_DIR]      (default: a new directory in /var/tmp)
set -euo pipefail

BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/midasfs}
# shellcheck source=lib/serve.sh
source "$(dirname "$0")/lib/serve.sh"
WORK=${1:-$(mktemp -d /var/tmp/midasfs-file-manager.XXXXXX)}
THUMBNAIL_MAX=${THUMBNAIL_MAX:-2048}
DISPLAY_NUMBER=${DISPLAY_NUMBER:-$((200 + RANDOM % 600))}
mkdir -p "$WORK"
MNT=$WORK/mnt
PIDS=()

say() { echo "$*" >&2; }

cleanup() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	if mountpoint -q "$MNT" 2>/dev/null; then fusermount3 -u "$MNT" || umount -l "$MNT" || true; fi
}
trap cleanup EXIT

# ---- the server and the files
say "server: $WORK/data"
serve_in_background "$WORK/serve.out" "$WORK/serve.log" --data "$WORK/data" --listen 127.0.0.1:0 \
	--admin-password-stdin <<<"file-manager-$RANDOM$RANDOM"
PIDS+=("$SERVER_PID")
URL=$(serve_said "$WORK/serve.out" url)
EMAIL=$(serve_said "$WORK/serve.out" email)
KEY=$(serve_said "$WORK/serve.out" key)

FILES=$WORK/files
if [[ ! -e $FILES/done ]]; then
	say "making 20 images and 20 .dat files of about 5 MB"
	mkdir -p "$FILES"
	for i in $(seq -w 1 10); do
		convert -size 1300x1300 xc: +noise Random -depth 8 "$FILES/photo-$i.png"
		convert -size 1600x1600 xc: +noise Random -quality 92 "$FILES/scan-$i.jpg"
		head -c 5000000 /dev/urandom >"$FILES/data-$i.dat"
		head -c 5000000 /dev/urandom >"$FILES/more-$i.dat"
	done
	touch "$FILES/done"
fi

mount_fs() {
	mkdir -p "$MNT"
	# shellcheck disable=SC2086 # MOUNT_OPTIONS: more options, split at spaces (e.g. -v)
	MIDAS_API_KEY=$KEY "$BIN" mount "$URL" "$MNT" --email "$EMAIL" --spool-dir "$WORK/spool" \
		--log-file "$WORK/mount.log" ${MOUNT_OPTIONS:-} "$@"
}

# Returns once the daemon has exited.
unmount_fs() { "$BIN" unmount "$MNT"; }

wire_bytes() {
	"$BIN" status --json "$MNT" | python3 -c '
import json, sys
answer = json.load(sys.stdin)
answer = answer[0] if isinstance(answer, list) else answer
print(answer["requests"]["download_bytes"])'
}

mount_fs
HOME_DIR=$(basename "$(readlink "$MNT/home")")
FOLDER=$MNT/users/$HOME_DIR/Private/photos
if [[ ! -d $FOLDER ]]; then
	say "uploading them through the mount"
	mkdir "$FOLDER"
	cp "$FILES"/*.png "$FILES"/*.jpg "$FILES"/*.dat "$FOLDER/"
fi
unmount_fs

# ---- the display and the file manager's own home (config, thumbnails)
Xvfb ":$DISPLAY_NUMBER" -screen 0 1280x900x24 -nolisten tcp >"$WORK/xvfb.log" 2>&1 &
PIDS+=($!)
sleep 1
FM_HOME=$WORK/fm-home
mkdir -p "$FM_HOME/.config/libfm"
printf '[config]\nthumbnail_local=1\nthumbnail_max=%s\n\n[ui]\nshow_thumbnail=1\nthumbnail_size=128\n' \
	"$THUMBNAIL_MAX" >"$FM_HOME/.config/libfm/libfm.conf"
mkdir -p "$FM_HOME/.config/pcmanfm/default"
printf '[ui]\nwin_width=1270\nwin_height=890\nview_mode=icon\n' \
	>"$FM_HOME/.config/pcmanfm/default/pcmanfm.conf"

# open LABEL: opens the folder in pcmanfm, waits until nothing more is downloaded for 8 s,
# prints the bytes downloaded meanwhile.
open_folder() {
	local label=$1 before now last stable=0 waited=0
	before=$(wire_bytes)
	last=$before
	HOME=$FM_HOME XDG_CONFIG_HOME=$FM_HOME/.config XDG_CACHE_HOME=$FM_HOME/.cache \
		XDG_DATA_HOME=$FM_HOME/.local/share DISPLAY=":$DISPLAY_NUMBER" NO_AT_BRIDGE=1 \
		pcmanfm --no-desktop "$FOLDER" >>"$WORK/pcmanfm.log" 2>&1 &
	local fm=$!
	while ((stable < 8 && waited < 180)); do
		sleep 1
		waited=$((waited + 1))
		now=$(wire_bytes)
		if ((now == last)); then stable=$((stable + 1)); else stable=0; fi
		last=$now
	done
	if [[ $label == *open-1 ]]; then
		DISPLAY=":$DISPLAY_NUMBER" import -window root "$WORK/shot-${label// /-}.png"
	fi
	kill "$fm" 2>/dev/null || true
	wait "$fm" 2>/dev/null || true
	local thumbs
	thumbs=$(find "$FM_HOME/.cache/thumbnails" -name '*.png' 2>/dev/null | wc -l)
	printf '%-22s %12d bytes  (%d MB; %d thumbnails on disk; %d s)\n' "$label" \
		$((last - before)) $(((last - before) / 1000000)) "$thumbs" "$waited"
}

for mode in ${MODES:-no-cache cache-dir}; do
	rm -rf "$FM_HOME/.cache" "$WORK/cache"
	options=()
	[[ $mode == cache-dir ]] && options=(--cache-dir "$WORK/cache")
	mount_fs "${options[@]}"
	open_folder "$mode open-1"
	open_folder "$mode open-2"
	rm -rf "$FM_HOME/.cache/thumbnails"
	open_folder "$mode open-3"
	unmount_fs
	rm -rf "$FM_HOME/.cache/thumbnails"
	mount_fs "${options[@]}"
	open_folder "$mode open-4"
	unmount_fs
done
say "files, screenshots and logs: $WORK"
