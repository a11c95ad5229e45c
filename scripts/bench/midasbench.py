#!/usr/bin/env python3
"""Measuring helpers for scripts/bench.sh: Midas API calls, timings, medians, the results table.

bash orchestrates (servers, mounts, cache drops, cleanup); this file does what bash is bad at:
precise timing, talking to the Midas API over a kept-alive connection, and arithmetic.
Only the standard library is needed, except for the pydas-* commands (pydas 0.3.6).
"""

import argparse
import csv
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request

MIB = 1024 * 1024


class ApiError(Exception):
    """A Midas answer with stat != ok, or something that is not a Midas answer at all."""


# Servers close kept-alive connections left idle (serve after 15 s, Apache after 5 s), and
# http.client would send on such a connection and get no answer ("Remote end closed connection
# without response"): one idle this long is replaced by a fresh one, as the mount's client does.
IDLE_REUSE = 4.0


class Api:
    """Midas /api/json over one kept-alive HTTP connection (seeding thousands of items fast)."""

    def __init__(self, url, token=None):
        parts = urllib.parse.urlsplit(url)
        self.base_path = parts.path.rstrip("/")
        self.token = token
        self.conn = http.client.HTTPConnection(
            parts.hostname, parts.port or 80, timeout=600, blocksize=MIB
        )
        self.idle_since = time.monotonic()

    def call(self, method, upload=None, upload_length=0, **params):
        """Every parameter goes in the query string (always honoured, whatever the verb)."""
        if self.token is not None and method != "midas.upload.perform":
            params.setdefault("token", self.token)
        query = urllib.parse.urlencode({"method": method, **params})
        verb = "PUT" if upload is not None else "POST"
        headers = {"Content-Length": str(upload_length)}
        if time.monotonic() - self.idle_since > IDLE_REUSE:
            self.conn.close()  # the next request opens a new connection
        self.conn.request(verb, f"{self.base_path}/api/json?{query}", body=upload, headers=headers)
        response = self.conn.getresponse()
        raw = response.read()
        self.idle_since = time.monotonic()
        try:
            envelope = json.loads(raw)
        except ValueError as err:
            raise ApiError(f"{method}: HTTP {response.status}, not JSON: {raw[:200]!r}") from err
        if envelope.get("stat") != "ok":
            raise ApiError(f"{method}: code {envelope.get('code')}: {envelope.get('message')}")
        return envelope["data"]

    def login(self, email, apikey):
        self.token = self.call("midas.login", email=email, apikey=apikey, appname="Default")[
            "token"
        ]
        return self.token

    def user_folder(self, name):
        for folder in self.call("midas.user.folders"):
            if folder["name"] == name:
                return folder["folder_id"]
        raise ApiError(f"the user has no top-level folder named {name!r}")

    def create_folder(self, parent_id, name):
        data = self.call("midas.folder.create", name=name, parentid=parent_id, description="")
        return data["folder_id"]

    def create_item(self, parent_id, name):
        return self.call("midas.item.create", name=name, parentid=parent_id)["item_id"]

    def upload(self, item_id, name, content, length):
        """generatetoken + perform (PUT, stream mode) into the item's head revision."""
        token = self.call("midas.upload.generatetoken", itemid=item_id, filename=name)["token"]
        self.call(
            "midas.upload.perform",
            upload=content,
            upload_length=length,
            uploadtoken=token,
            filename=name,
            length=length,
            revision="head",
        )

    def head_bitstream(self, item_id):
        revisions = self.call("midas.item.get", id=item_id)["revisions"]
        bitstreams = revisions[-1]["bitstreams"] if revisions else []
        if len(bitstreams) != 1:
            raise ApiError(f"item {item_id} has {len(bitstreams)} bitstreams in its head revision")
        return bitstreams[0]["bitstream_id"]

    def child_folder(self, parent_id, name):
        for folder in self.call("midas.folder.children", id=parent_id)["folders"]:
            if folder["name"] == name:
                return folder["folder_id"]
        return None


def logged_in(args):
    api = Api(args.url)
    api.login(args.email, args.apikey)
    return api


# ---------------------------------------------------------------- seeding


def cmd_login(args):
    print(logged_in(args).token)


def cmd_folder(args):
    """Print the id of PATH (Private/a/b), creating the missing folders."""
    api = logged_in(args)
    top, *rest = args.path.split("/")
    folder_id = api.user_folder(top)
    for name in rest:
        folder_id = api.child_folder(folder_id, name) or api.create_folder(folder_id, name)
    print(folder_id)


def cmd_put_file(args):
    """Upload a file as a one-bitstream item (as pydas.upload does); print its bitstream id."""
    api = logged_in(args)
    name = args.name or os.path.basename(args.file)
    item_id = api.create_item(args.folder_id, name)
    length = os.path.getsize(args.file)
    with open(args.file, "rb") as content:
        api.upload(item_id, name, content, length)
    print(api.head_bitstream(item_id))


def cmd_seed_tree(args):
    """FOLDERS sub-folders of FILES small files each, all with distinct content."""
    api = logged_in(args)
    rng = random.Random(args.seed)
    for f in range(args.folders):
        folder_id = api.create_folder(args.folder_id, f"dir-{f:03d}")
        for i in range(args.files):
            content = rng.randbytes(args.size)
            name = f"file-{i:03d}.dat"
            api.upload(api.create_item(folder_id, name), name, content, len(content))


def cmd_seed_empty(args):
    """COUNT empty items (item.create only): a big listing without file content."""
    api = logged_in(args)
    for i in range(args.count):
        api.create_item(args.folder_id, f"item-{i:05d}")


def cmd_curl_upload(args):
    """The baseline for a large write: generatetoken + `curl -T` to perform. Prints seconds."""
    api = logged_in(args)
    name = os.path.basename(args.name)
    length = os.path.getsize(args.file)
    start = time.perf_counter()
    token = api.call("midas.upload.generatetoken", folderid=args.folder_id, filename=name)["token"]
    query = urllib.parse.urlencode(
        {
            "method": "midas.upload.perform",
            "uploadtoken": token,
            "filename": name,
            "length": length,
        }
    )
    answer = subprocess.run(
        ["curl", "-sS", "-T", args.file, f"{args.url}/api/json?{query}"],
        check=True,
        capture_output=True,
    ).stdout
    elapsed = time.perf_counter() - start
    if json.loads(answer).get("stat") != "ok":
        raise ApiError(f"curl upload failed: {answer[:200]!r}")
    print(f"{elapsed:.6f}")


def stats(url):
    with urllib.request.urlopen(f"{url}/__midasfs/stats", timeout=30) as response:
        return json.load(response)


def requests_since(url, before):
    """Requests the server counted since `before`, not counting this stats request itself."""
    return stats(url)["requests"] - before - 1


def cmd_stat(args):
    print(stats(args.url)[args.field])


def cmd_copy_in(args):
    """`cp -r SOURCE DEST_DIR/NAME` into the mount, timed until the server holds every file.

    FOLDER_ID is the server folder behind DEST_DIR. The copy counts as done when cp returns and
    the server shows the items with their full sizes; if a mount uploaded after close, the wait
    for that is part of the time.
    """
    api = logged_in(args)
    name = args.name or os.path.basename(args.source.rstrip("/"))
    if os.path.isdir(args.source):
        sizes = {e.name: e.stat().st_size for e in os.scandir(args.source) if e.is_file()}
    else:
        sizes = {name: os.path.getsize(args.source)}

    def arrived():
        folder_id = args.folder_id
        if os.path.isdir(args.source):
            folder_id = api.child_folder(folder_id, name)
            if folder_id is None:
                return False
        items = api.call("midas.folder.children", id=folder_id)["items"]
        have = {i["name"]: int(i.get("sizebytes") or 0) for i in items if i["name"] in sizes}
        return have == sizes

    start = time.perf_counter()
    subprocess.run(["cp", "-r", args.source, os.path.join(args.dest_dir, name)], check=True)
    copied = time.perf_counter() - start
    if arrived():
        print(f"{copied:.6f}")
        return
    deadline = time.monotonic() + args.timeout
    while not arrived():
        if time.monotonic() > deadline:
            sys.exit(f"cp returned but the server did not get all of {args.source}")
        time.sleep(0.05)
    print(f"{time.perf_counter() - start:.6f}")


def cmd_make_files(args):
    """COUNT files of SIZE random bytes in DIRECTORY (fresh content: no deduplication)."""
    os.makedirs(args.directory, exist_ok=True)
    for i in range(args.count):
        with open(os.path.join(args.directory, f"file-{i:04d}.dat"), "wb") as out:
            out.write(os.urandom(args.size))


def cmd_stamp(args):
    """Overwrite the first bytes of FILE with TEXT: new content (and checksum) without a rewrite."""
    with open(args.file, "r+b") as out:
        out.write(args.text.encode().ljust(64, b"."))


# ---------------------------------------------------------------- timing


def cmd_time(args):
    """Run a command (through bash) and print its wall time in seconds; its output is discarded."""
    start = time.perf_counter()
    done = subprocess.run(
        ["bash", "-c", args.command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.stderr.buffer.write(done.stderr)
        sys.exit(f"command failed (exit {done.returncode}): {args.command}")
    print(f"{elapsed:.6f}")


def cmd_pread(args):
    """COUNT preads of SIZE bytes at random offsets (open included); print seconds."""
    rng = random.Random(args.seed)
    start = time.perf_counter()
    fd = os.open(args.file, os.O_RDONLY)
    try:
        file_size = os.fstat(fd).st_size
        for _ in range(args.count):
            offset = rng.randrange(0, file_size - args.size)
            if len(os.pread(fd, args.size, offset)) != args.size:
                sys.exit(f"short read at {offset} in {args.file}")
    finally:
        os.close(fd)
    print(f"{time.perf_counter() - start:.6f}")


def cmd_pread_offsets(args):
    """The reads of `pread` without the mount: one `offset` download per read (Midas ignores
    Range, so each answer is the rest of the file), its first SIZE bytes read and the connection
    closed. Raw sockets with a small receive buffer, the token in a POST body (from
    $MIDASBENCH_TOKEN, out of argv), as the mount asks. Prints seconds."""
    token = os.environ.get("MIDASBENCH_TOKEN", "")
    target = urllib.parse.urlsplit(args.url)
    host, port = target.hostname, target.port or 80
    body = urllib.parse.urlencode({"authToken": token}).encode() if token else b""
    rng = random.Random(args.seed)
    start = time.perf_counter()
    for _ in range(args.count):
        offset = rng.randrange(0, args.file_size - args.size)
        path = f"{target.path.rstrip('/')}/download/?bitstream={args.bitstream}&offset={offset}"
        head = (
            f"{'POST' if body else 'GET'} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Connection: close\r\n"
        )
        if body:
            head += "Content-Type: application/x-www-form-urlencoded\r\n"
            head += f"Content-Length: {len(body)}\r\n"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as conn:
            # A small receive buffer, as the mount uses: the server pushes little more than
            # the read before the connection is closed.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, max(args.size // 2, 4096))
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.connect((socket.gethostbyname(host), port))
            conn.sendall(head.encode() + b"\r\n" + body)
            got = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    sys.exit(f"offset {offset}: the answer ended early")
                got += chunk
                end = got.find(b"\r\n\r\n")
                if end >= 0 and len(got) - end - 4 >= args.size:
                    break
            status = got.split(b"\r\n", 1)[0]
            if status.split(b" ")[1:2] != [b"200"]:
                sys.exit(f"offset {offset}: {status!r}")
    print(f"{time.perf_counter() - start:.6f}")


def cmd_ttfb(args):
    """Open an unopened file and read its first 4 KiB; print seconds."""
    start = time.perf_counter()
    fd = os.open(args.file, os.O_RDONLY)
    try:
        if not os.pread(fd, 4096, 0):
            sys.exit(f"{args.file} is empty")
    finally:
        os.close(fd)
    print(f"{time.perf_counter() - start:.6f}")


def cmd_median(args):
    print(f"{statistics.median(args.values):.6f}")


# ---------------------------------------------------------------- pydas


def pydas_login(args):
    import pydas  # only these commands need it

    pydas.login(email=args.email, api_key=args.apikey, url=args.url)
    return pydas


def cmd_pydas_walk(args):
    """A pydas script listing a tree: folder_children, then item_get per item. Prints seconds."""
    pydas = pydas_login(args)
    communicator, token = pydas.session.communicator, pydas.session.token

    def walk(folder_id):
        children = communicator.folder_children(token, folder_id)
        for item in children["items"]:
            communicator.item_get(token, item["item_id"])
        for folder in children["folders"]:
            walk(folder["folder_id"])

    before = stats(args.url)["requests"]
    start = time.perf_counter()
    walk(args.folder_id)
    elapsed = time.perf_counter() - start
    print(f"{elapsed:.6f} {requests_since(args.url, before)}")


def cmd_pydas_upload(args):
    """pydas.upload of a local directory into the user's Private folder. Prints seconds."""
    pydas = pydas_login(args)
    before = stats(args.url)["requests"]
    start = time.perf_counter()
    with open(os.devnull, "w") as quiet:  # pydas prints a line per file
        stdout, sys.stdout = sys.stdout, quiet
        try:
            pydas.upload(args.directory, destination="Private")
        finally:
            sys.stdout = stdout
    elapsed = time.perf_counter() - start
    print(f"{elapsed:.6f} {requests_since(args.url, before)}")


# ---------------------------------------------------------------- processes


def cmd_mount_pid(args):
    """The pid of the `midasfs mount` daemon serving MOUNTPOINT (its command line names it)."""
    wanted = os.path.realpath(args.mountpoint)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                words = [w.decode(errors="replace") for w in cmdline.read().split(b"\0") if w]
        except OSError:
            continue
        if "mount" in words[1:3] and any(
            os.path.realpath(w) == wanted for w in words if w.startswith("/")
        ):
            if os.path.basename(words[0]) == "midasfs":
                print(entry)
                return
    sys.exit(f"no midasfs mount daemon found for {wanted}")


def cmd_peak_rss(args):
    """VmHWM of a process in MiB."""
    with open(f"/proc/{args.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                print(f"{int(line.split()[1]) / 1024:.1f}")
                return
    sys.exit(f"no VmHWM for pid {args.pid}")


def cmd_free_port(_args):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        print(probe.getsockname()[1])


# ---------------------------------------------------------------- the table


def fmt_seconds(seconds):
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_bytes(count):
    if count >= MIB:
        return f"{count / MIB:.1f} MiB"
    if count >= 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count:.0f} B"


def parse_runs(text):
    return [float(v) for v in text.split()] if text.strip() else []


class Row:
    """One measurement: midasfs and its baseline, each a list of runs, in one of four kinds.

    rate:  runs are seconds to move BYTES; shown as MiB/s; ratio = midasfs rate / baseline rate
    time:  runs are seconds; ratio = baseline time / midasfs time (> 1: midasfs is faster)
    mib:   runs are MiB (peak RSS; the largest run counts); ratio = midasfs / baseline
    bytes: runs are byte counts; ratio = midasfs / baseline
    """

    def __init__(self, record):
        self.key = record["key"]
        self.section = int(record["section"])
        self.label = record["label"]
        self.kind = record["kind"]
        self.size = float(record["bytes"] or 0)
        self.baseline = record["baseline"]
        self.mine_runs = parse_runs(record["mine"])
        self.base_runs = parse_runs(record["base"])
        self.mine_note = record["mine_note"]
        self.base_note = record["base_note"]
        self.missing = record["missing"]

    def value(self, runs):
        if not runs:
            return None
        if self.kind == "mib":
            return max(runs)
        median = statistics.median(runs)
        if self.kind == "rate":
            return self.size / median / MIB
        return median

    def figure(self, runs, note):
        value = self.value(runs)
        if value is None:
            return "—"
        if self.kind == "rate":
            text = f"{value:.0f} MiB/s"
        elif self.kind == "time":
            text = fmt_seconds(value)
        elif self.kind == "mib":
            text = f"{value:.0f} MiB"
        else:
            text = fmt_bytes(value)
        if len(runs) > 1:
            text += f" (n={len(runs)})"
        return f"{text}, {note}" if note else text

    def ratio(self):
        mine, base = self.value(self.mine_runs), self.value(self.base_runs)
        divisor = mine if self.kind == "time" else base
        if mine is None or base is None or divisor == 0:
            return None
        return base / mine if self.kind == "time" else mine / base

    def judged_value(self):
        """What a target looks at: the peak for RSS rows, the ratio otherwise (None: no data)."""
        if self.missing:
            return None
        return self.value(self.mine_runs) if self.kind == "mib" else self.ratio()

    def cells(self):
        if self.missing:
            return [self.label, self.missing, self.baseline, "n/a"]
        ratio = self.ratio()
        baseline = f"{self.baseline}: {self.figure(self.base_runs, self.base_note)}"
        if not self.baseline:
            baseline = "—"
        return [
            self.label,
            self.figure(self.mine_runs, self.mine_note),
            baseline,
            f"{ratio:.2f}×" if ratio is not None else "—",
        ]


# The promises, checked against rows by key: (title, keys, test on a row, what the test means).
TARGETS = [
    ("read ≥ 0.9× curl", ["read_dd", "read_cat", "read_parallel"], lambda v: v >= 0.9),
    (
        "cold walk ≥ 8× pydas",
        ["walk_ls_cold", "walk_find_cold", "list_small_cold", "list_big_cold"],
        lambda v: v >= 8,
    ),
    # A time ratio: baseline ÷ midasfs ≥ 1 is midasfs's time ≤ 1.0× pydas's.
    ("small-file copy ≤ 1.0× pydas's time", ["small_write"], lambda v: v >= 1.0),
    ("large write ≥ 0.6× curl", ["large_write"], lambda v: v >= 0.6),
    ("file manager sniff ≤ 2× the bytes read", ["sniff"], lambda v: v <= 2),
    (
        "data cache re-read ≥ 0.9× a local cat",
        ["read_remount", "read_same_content"],
        lambda v: v >= 0.9,
    ),
    ("re-copy of identical content sends no bytes", ["dedup"], lambda v: v == 0),
    ("server ≥ 0.7× nginx", ["serve_one", "serve_parallel"], lambda v: v >= 0.7),
    ("mount peak RSS < 256 MiB", ["rss_mount_read", "rss_mount_write"], lambda v: v < 256),
    ("server peak RSS < 100 MiB", ["rss_server_serving", "rss_server_run"], lambda v: v < 100),
]


def cmd_table(args):
    """Print the results (a TSV from bench.sh) as one Markdown table plus the target summary."""
    with open(args.results, newline="") as results:
        reader = csv.DictReader(results, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = sorted((Row(r) for r in reader), key=lambda row: row.section)
    print("| measurement | midasfs | baseline | ratio |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |")
    print()
    print("ratio: for speeds, midasfs ÷ baseline; for times, baseline time ÷ midasfs time;")
    print("so above 1 means midasfs is faster. Figures are medians of n runs.")
    print()
    by_key = {row.key: row for row in rows}
    for title, keys, test in TARGETS:
        judged = []
        for key in keys:
            row = by_key.get(key)
            value = row.judged_value() if row else None
            if value is None:
                continue
            shown = f"{value:.0f} MiB" if row.kind == "mib" else f"{value:.2f}×"
            judged.append((test(value), f"{row.label}: {shown}"))
        if not judged:
            print(f"- {title}: n/a")
            continue
        verdict = "PASS" if all(ok for ok, _ in judged) else "MISS"
        details = "; ".join(text + ("" if ok else " (miss)") for ok, text in judged)
        print(f"- {title}: **{verdict}** ({details})")


# ---------------------------------------------------------------- command line


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name, handler, *arguments, server=False):
        sub = commands.add_parser(name)
        if server:
            sub.add_argument("url")
            sub.add_argument("email")
            sub.add_argument("apikey")
        for argument in arguments:
            flags, options = argument if isinstance(argument, tuple) else (argument, {})
            sub.add_argument(flags, **options)
        sub.set_defaults(handler=handler)

    integer = {"type": int}
    command("login", cmd_login, server=True)
    command("folder", cmd_folder, "path", server=True)
    command("put-file", cmd_put_file, "folder_id", "file", ("--name", {}), server=True)
    command(
        "seed-tree",
        cmd_seed_tree,
        "folder_id",
        ("folders", integer),
        ("files", integer),
        ("size", integer),
        ("--seed", {"type": int, "default": 1}),
        server=True,
    )
    command("seed-empty", cmd_seed_empty, "folder_id", ("count", integer), server=True)
    command("curl-upload", cmd_curl_upload, "folder_id", "file", "name", server=True)
    command(
        "copy-in",
        cmd_copy_in,
        "folder_id",
        "source",
        "dest_dir",
        ("--name", {}),
        ("--timeout", {"type": float, "default": 600}),
        server=True,
    )
    command("make-files", cmd_make_files, "directory", ("count", integer), ("size", integer))
    command("stamp", cmd_stamp, "file", "text")
    command("stat", cmd_stat, "url", "field")
    command("time", cmd_time, "command")
    command(
        "pread",
        cmd_pread,
        "file",
        ("count", integer),
        ("size", integer),
        ("--seed", {"type": int, "default": 1}),
    )
    command(
        "pread-offsets",
        cmd_pread_offsets,
        "url",
        "bitstream",
        ("file_size", integer),
        ("count", integer),
        ("size", integer),
        ("--seed", {"type": int, "default": 1}),
    )
    command("ttfb", cmd_ttfb, "file")
    command("median", cmd_median, ("values", {"type": float, "nargs": "+"}))
    command("pydas-walk", cmd_pydas_walk, "folder_id", server=True)
    command("pydas-upload", cmd_pydas_upload, "directory", server=True)
    command("mount-pid", cmd_mount_pid, "mountpoint")
    command("peak-rss", cmd_peak_rss, "pid")
    command("free-port", cmd_free_port)
    command("table", cmd_table, "results")

    args = parser.parse_args()
    try:
        args.handler(args)
    except (
        ApiError,
        OSError,
        ValueError,
        http.client.HTTPException,
        subprocess.SubprocessError,
    ) as err:
        sys.exit(f"midasbench {args.command}: {err}")
    except KeyboardInterrupt:
        sys.exit(130)  # Ctrl-C: bench.sh cleans up; a traceback would only hide its messages


if __name__ == "__main__":
    main()
