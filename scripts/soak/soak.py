#!/usr/bin/env python3
"""The load and the checker of scripts/soak.sh: workers that use mounts like people do, a model of
what each of them wrote, and a check of every file against that model through the Midas API.

soak.sh starts the server and the mounts; this file does what needs a model and a clock:
  setup  URL EMAIL KEYFILE NAME         makes the run's folder in the user's Private, prints its id
  work   --mount DIR... --pid PID...    runs the workers, prints progress and RSS, writes the model
  check  URL EMAIL KEYFILE FOLDER_ID MODEL   compares the server with the model
  remove URL EMAIL KEYFILE FOLDER_ID    deletes the run's folder after a passed soak
  mount-pid MOUNTPOINT                  the pid of the mount's daemon (for its RSS)
Only the standard library is used: the check talks to /api/json with urllib, not with midasfs.

Each worker owns one directory (w0, w1, ...) and writes only there, through one mount (with two
mounts, workers alternate between them), so there is exactly one writer per path and the model of
each directory is exact. Workers also read other workers' files, through their own mount: with two
mounts that is a read of what the other mount wrote; those reads are not compared (the other
writer may change the file meanwhile) but their errors are counted.
"""

import argparse
import errno
import hashlib
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

KIB = 1024
MIB = 1024 * KIB
META_ELEMENT = "soak"
MAX_FILES = 40  # per worker: beyond it, workers remove more than they create
MAX_DIRS = 6


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------- the Midas API (urllib only)


class ApiError(Exception):
    pass


class Api:
    def __init__(self, url, email, keyfile):
        self.url = url.rstrip("/")
        with open(keyfile) as f:
            key = f.readline().strip()
        self.token = None
        self.token = self.call("midas.login", email=email, apikey=key, appname="Default")["token"]

    def _get(self, method, params, raw=False):
        query = urllib.parse.urlencode({"method": method, **params})
        if self.token is not None:
            query += "&" + urllib.parse.urlencode({"token": self.token})
        req = urllib.request.Request(f"{self.url}/api/json?{query}", method="POST", data=b"")
        for attempt in range(3):
            try:
                with urllib.request.urlopen(req, timeout=120) as resp:
                    body = resp.read()
                break
            except (OSError, http.client.HTTPException) as err:
                if attempt == 2:
                    raise ApiError(f"{method}: {err}") from err
                time.sleep(1)
        if raw:
            return body
        try:
            envelope = json.loads(body)
        except ValueError as err:
            raise ApiError(f"{method}: not JSON: {body[:200]!r}") from err
        if envelope.get("stat") != "ok":
            raise ApiError(f"{method}: code {envelope.get('code')}: {envelope.get('message')}")
        return envelope["data"]

    def call(self, method, **params):
        return self._get(method, params)

    def download(self, bitstream_id):
        """The bytes of a bitstream (midas.bitstream.download redirects; urllib follows)."""
        query = urllib.parse.urlencode(
            {"method": "midas.bitstream.download", "id": bitstream_id, "token": self.token}
        )
        with urllib.request.urlopen(f"{self.url}/api/json?{query}", timeout=300) as resp:
            return resp.read()


def cmd_setup(args):
    api = Api(args.url, args.email, args.keyfile)
    private = [f for f in api.call("midas.user.folders") if f["name"] == "Private"]
    if not private:
        sys.exit("soak: the user has no Private folder")
    data = api.call(
        "midas.folder.create", name=args.name, parentid=private[0]["folder_id"], description=""
    )
    print(data["folder_id"])


# ---------------------------------------------------------------- the model


def under(path, prefix):
    """path is prefix or lies inside it ("" is the worker's root, above everything)."""
    return prefix == "" or path == prefix or path.startswith(prefix + "/")


class FileState:
    __slots__ = ("data", "meta", "fresh")

    def __init__(self, data, meta, fresh):
        self.data = data  # bytes
        self.meta = meta  # dict qualifier -> value, or None when the rules leave it open
        self.fresh = fresh  # made by this mount and not renamed since (save-by-rename source)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = {}
        self.errors = {}
        self.error_samples = []
        self.bytes_written = 0
        self.bytes_read = 0
        self.hangs = 0
        self.hang_samples = []
        self.wrong_reads = 0
        self.wrong_samples = []
        self.cross_errors = 0
        self.slowest = (0.0, "")

    def op(self, name, seconds):
        with self.lock:
            self.ops[name] = self.ops.get(name, 0) + 1
            if seconds > self.slowest[0]:
                self.slowest = (seconds, name)

    def error(self, name, text):
        with self.lock:
            self.errors[name] = self.errors.get(name, 0) + 1
            if len(self.error_samples) < 30:
                self.error_samples.append(f"{name}: {text}")
            log(f"  error: {name}: {text}")

    def wrong(self, text):
        with self.lock:
            self.wrong_reads += 1
            if len(self.wrong_samples) < 30:
                self.wrong_samples.append(text)
            log(f"  WRONG: {text}")


class OpFailed(Exception):
    pass


class Worker(threading.Thread):
    def __init__(self, index, mount, mount_index, base, src, deadline, stop_at, stats, seed, peers):
        super().__init__(name=f"w{index}", daemon=True)
        self.trace_path = os.path.join(src, f"trace-w{index}.log")
        self.index = index
        self.mount = mount
        self.mount_index = mount_index
        self.root_rel = f"w{index}"
        self.root = os.path.join(mount, base, self.root_rel)
        self.src = os.path.join(src, f"w{index}")
        self.deadline = deadline
        self.stop_at = stop_at
        self.stats = stats
        self.rng = random.Random(seed)
        self.peers = peers  # every worker, for cross reads
        self.api = None  # for a second opinion on wrong listings (set by cmd_work)
        self.api_folder = None
        self.names = ()  # the files' paths after the last op, for peers' cross reads
        self.files = {}  # path relative to the worker root -> FileState
        self.dirs = {""}
        self.uncertain = set()  # paths (files or directories) whose state an error left open
        self.counter = 0
        self.current = None  # (op name, start time) while an op runs, for the watchdog
        self.hung = False

    # --- helpers

    def instead(self, op):
        """Runs another op in place of the one drawn (nothing to remove, too many files, ...)."""
        self.op_name = {"rmdir": "rm-r", "mvdir": "mv-dir", "cross_read": "cross-read"}.get(op, op)
        return getattr(self, f"op_{op}")()

    def wrong(self, text):
        self.note += " WRONG: " + text
        self.stats.wrong(text)

    def new_name(self, prefix):
        self.counter += 1
        return f"{prefix}{self.counter}"

    def path(self, rel):
        return os.path.join(self.root, rel) if rel else self.root

    def content(self):
        r = self.rng.random()
        if r < 0.05:
            size = 0
        elif r < 0.85:
            size = self.rng.randint(1, 64 * KIB)
        elif r < 0.97:
            size = self.rng.randint(64 * KIB, 512 * KIB)
        else:
            size = self.rng.randint(1 * MIB, 3 * MIB)  # past 1 MiB: item.create + MD5 path
        return self.rng.randbytes(size)

    def pick_dir(self):
        return self.rng.choice(sorted(self.dirs))

    def pick_file(self):
        if not self.files:
            return None
        return self.rng.choice(sorted(self.files))

    def forget(self, rel):
        """An op on rel failed: its state (and that of anything under it) is open from now on."""
        self.uncertain.add(rel)
        for f in [f for f in self.files if under(f, rel)]:
            del self.files[f]
        for d in [d for d in self.dirs if under(d, rel)]:
            self.dirs.discard(d)

    def is_open(self, rel):
        return any(under(rel, u) for u in self.uncertain)

    def run_cmd(self, argv):
        """Runs a command with the op deadline; a command past it is killed and counted a hang."""
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _, err = proc.communicate(timeout=self.deadline)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                pass  # stuck in the kernel; abandoned
            raise OpFailed(f"{argv[0]} still running after {self.deadline} s (killed)")
        if proc.returncode != 0:
            raise OpFailed(f"{' '.join(argv[:1])} exit {proc.returncode}: {err.decode()[-300:]}")

    def write_file(self, rel, data, mode="wb"):
        with open(self.path(rel), mode) as f:
            f.write(data)
        with self.stats.lock:
            self.stats.bytes_written += len(data)

    def local_source(self, data, name):
        os.makedirs(self.src, exist_ok=True)
        p = os.path.join(self.src, name)
        with open(p, "wb") as f:
            f.write(data)
        return p

    # --- operations: each returns the paths it touched (forgotten if it fails)

    def op_create(self):
        if len(self.files) >= MAX_FILES:
            return self.instead("rm")
        rel = os.path.join(self.pick_dir(), self.new_name("f")).lstrip("/")
        data = self.content()
        self.current_paths = [rel]
        self.write_file(rel, data)
        self.files[rel] = FileState(data, {}, True)

    def op_cp(self):
        existing = self.pick_file()
        if existing and (len(self.files) >= MAX_FILES or self.rng.random() < 0.4):
            rel = existing
        else:
            rel = os.path.join(self.pick_dir(), self.new_name("c")).lstrip("/")
        data = self.content()
        src = self.local_source(data, "cp-src")
        self.current_paths = [rel]
        self.run_cmd(["cp", src, self.path(rel)])
        with self.stats.lock:
            self.stats.bytes_written += len(data)
        old = self.files.get(rel)
        self.files[rel] = FileState(data, old.meta if old else {}, old.fresh if old else True)

    def op_rsync(self):
        """rsync -a of a local directory of 1-3 files into a directory of the worker: new files and
        rsync's temporary files renamed over existing ones (save by rename keeps the items)."""
        target = self.pick_dir()
        existing = [f for f in self.files if os.path.dirname(f) == target]
        names = []
        for _ in range(self.rng.randint(1, 3)):
            if existing and (len(self.files) >= MAX_FILES or self.rng.random() < 0.5):
                names.append(os.path.basename(self.rng.choice(existing)))
            else:
                names.append(self.new_name("r"))
        names = sorted(set(names))
        srcdir = os.path.join(self.src, "rsync-src")
        shutil.rmtree(srcdir, ignore_errors=True)
        os.makedirs(srcdir)
        contents = {}
        for n in names:
            contents[n] = self.content()
            with open(os.path.join(srcdir, n), "wb") as f:
                f.write(contents[n])
        rels = [os.path.join(target, n).lstrip("/") for n in names]
        self.current_paths = rels
        # -I: always sent, also when a new content happens to have the old size and mtime
        argv = ["rsync", "-a", "-I", "--no-owner", "--no-group", srcdir + "/"]
        argv.append(self.path(target) + "/")
        self.run_cmd(argv)
        for n, rel in zip(names, rels):
            old = self.files.get(rel)
            # rsync's temporary file renamed over an old file: the item and its metadata stay
            # (SEMANTICS.md, saving by rename); a new file was renamed, so it is not "just written"
            meta, fresh = (old.meta, old.fresh) if old else ({}, False)
            self.files[rel] = FileState(contents[n], meta, fresh)
            with self.stats.lock:
                self.stats.bytes_written += len(contents[n])

    def op_mv(self):
        src = self.pick_file()
        if src is None:
            return self.instead("create")
        r = self.rng.random()
        if r < 0.3 and len(self.files) > 1:
            dst = self.rng.choice([f for f in sorted(self.files) if f != src])  # over a file
        else:
            dst = os.path.join(self.pick_dir(), self.new_name("m")).lstrip("/")
        self.current_paths = [src, dst]
        self.run_cmd(["mv", self.path(src), self.path(dst)])
        moved = self.files.pop(src)
        old = self.files.get(dst)
        if old is None:
            meta = moved.meta
        elif moved.fresh and not moved.meta:
            meta = old.meta  # save by rename: the target keeps its item and metadata
        elif moved.meta == old.meta:
            meta = moved.meta
        else:
            meta = None  # which item survives depends on rules the model does not repeat
        self.files[dst] = FileState(moved.data, meta, False)

    def op_rm(self):
        rel = self.pick_file()
        if rel is None:
            return self.instead("create")
        self.current_paths = [rel]
        os.unlink(self.path(rel))
        del self.files[rel]

    def op_mkdir(self):
        if len(self.dirs) >= MAX_DIRS:
            return self.instead("rmdir")
        parent = self.rng.choice([d for d in sorted(self.dirs) if d.count("/") < 1])
        rel = os.path.join(parent, self.new_name("d")).lstrip("/")
        self.current_paths = [rel]
        os.mkdir(self.path(rel))
        self.dirs.add(rel)

    def op_rmdir(self):
        candidates = [d for d in sorted(self.dirs) if d]
        if not candidates:
            return self.instead("mkdir")
        rel = self.rng.choice(candidates)
        self.current_paths = [rel]
        self.run_cmd(["rm", "-rf", self.path(rel)])
        for f in [f for f in self.files if f.startswith(rel + "/")]:
            del self.files[f]
        for d in [d for d in self.dirs if d == rel or d.startswith(rel + "/")]:
            self.dirs.discard(d)

    def op_mvdir(self):
        candidates = [d for d in sorted(self.dirs) if d]
        if not candidates:
            return self.instead("mkdir")
        rel = self.rng.choice(candidates)
        parents = [d for d in sorted(self.dirs) if d != rel and not d.startswith(rel + "/")]
        parents = [d for d in parents if d.count("/") + rel.count("/") < 2] or [""]
        dst = os.path.join(self.rng.choice(parents), self.new_name("d")).lstrip("/")
        self.current_paths = [rel, dst]
        self.run_cmd(["mv", self.path(rel), self.path(dst)])
        for f in [f for f in sorted(self.files) if f.startswith(rel + "/")]:
            st = self.files.pop(f)
            self.files[dst + f[len(rel) :]] = st
        for d in [d for d in sorted(self.dirs) if under(d, rel)]:
            self.dirs.discard(d)
            self.dirs.add(dst + d[len(rel) :])
        for u in [u for u in sorted(self.uncertain) if under(u, rel)]:
            self.uncertain.add(dst + u[len(rel) :])

    def op_overwrite(self):
        rel = self.pick_file()
        if rel is None:
            return self.instead("create")
        data = self.content()
        self.current_paths = [rel]
        self.write_file(rel, data)
        self.files[rel].data = data

    def op_append(self):
        rel = self.pick_file()
        if rel is None:
            return self.instead("create")
        data = self.rng.randbytes(self.rng.randint(1, 16 * KIB))
        self.current_paths = [rel]
        self.write_file(rel, data, "ab")
        self.files[rel].data += data

    def op_xattr(self):
        rel = self.pick_file()
        if rel is None:
            return self.instead("create")
        key = f"k{self.rng.randint(1, 3)}"
        value = f"v{self.rng.randint(0, 10**6)}"
        name = f"user.midas.meta.{META_ELEMENT}.{key}"
        self.current_paths = [rel]
        self.note = f"{key}={value}"
        os.setxattr(self.path(rel), name, value.encode())
        st = self.files[rel]
        if st.meta is not None:
            st.meta[key] = value
        got = os.getxattr(self.path(rel), name).decode()
        if got != value:
            self.wrong(f"getxattr {self.root_rel}/{rel} {name}: {got!r}, set {value!r}")

    def op_read(self):
        rel = self.pick_file()
        if rel is None:
            return self.instead("create")
        want = self.files[rel].data
        self.current_paths = []  # a failed read leaves the file as it was
        self.note = rel
        with open(self.path(rel), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size != len(want):
                self.wrong(f"size of {self.root_rel}/{rel}: {size}, model {len(want)}")
                return
            if self.rng.random() < 0.3 or not want:
                got = f.read()
                offset = 0
            else:
                offset = self.rng.randrange(len(want))
                length = self.rng.randint(1, 128 * KIB)
                got = os.pread(f.fileno(), length, offset)
                want = want[offset : offset + length]
        with self.stats.lock:
            self.stats.bytes_read += len(got)
        if got != want:
            self.wrong(
                f"read of {self.root_rel}/{rel} at {offset}: "
                f"{len(got)} bytes unlike the model's {len(want)}"
            )

    def op_ls(self):
        rel = self.pick_dir()
        self.current_paths = []
        self.note = rel or "."
        got = set(os.listdir(self.path(rel)))
        want = {os.path.basename(f) for f in self.files if os.path.dirname(f) == rel}
        want |= {os.path.basename(d) for d in self.dirs if d and os.path.dirname(d) == rel}
        got = {n for n in got if not self.is_open(os.path.join(rel, n).lstrip("/"))}
        if got != want:
            self.wrong(
                f"listing of {self.root_rel}/{rel}: "
                f"extra {sorted(got - want)}, missing {sorted(want - got)}"
                + self.server_view(rel, got ^ want)
            )

    def server_view(self, rel, names):
        """What the server holds of names in rel, to tell a stale mount from a wrong server."""
        if self.api is None:
            return ""
        try:
            folder = self.api_folder
            for part in [self.root_rel] + [p for p in rel.split("/") if p]:
                children = self.api.call("midas.folder.children", id=folder)
                folder = next(f["folder_id"] for f in children["folders"] if f["name"] == part)
            children = self.api.call("midas.folder.children", id=folder)
        except (ApiError, StopIteration) as err:
            return f" (server: cannot list it: {err!r})"
        there = {c["name"] for c in children["folders"] + children["items"]}
        present = sorted(n for n in names if n in there)
        absent = sorted(n for n in names if n not in there)
        return f" (on the server: {present} there, {absent} not)"

    def op_cross_read(self):
        peer = self.rng.choice(self.peers)
        if peer is self:
            return self.instead("read")
        names = peer.names
        self.current_paths = []
        if not names:
            return
        p = os.path.join(self.mount, os.path.relpath(peer.root, peer.mount), self.rng.choice(names))
        self.note = os.path.relpath(p, os.path.dirname(os.path.dirname(p)))
        try:
            with open(p, "rb") as f:
                got = f.read()
        except OSError as err:
            if err.errno in (errno.ENOENT, errno.ESTALE):
                return  # removed or renamed by its writer meanwhile
            with self.stats.lock:
                self.stats.cross_errors += 1
            raise OpFailed(f"cross read {p}: {err}") from None
        with self.stats.lock:
            self.stats.bytes_read += len(got)

    OPS = [
        ("create", op_create, 10),
        ("cp", op_cp, 10),
        ("rsync", op_rsync, 5),
        ("mv", op_mv, 8),
        ("rm", op_rm, 5),
        ("mkdir", op_mkdir, 3),
        ("rm-r", op_rmdir, 1),
        ("mv-dir", op_mvdir, 2),
        ("overwrite", op_overwrite, 8),
        ("append", op_append, 6),
        ("xattr", op_xattr, 6),
        ("read", op_read, 18),
        ("ls", op_ls, 4),
        ("cross-read", op_cross_read, 4),
    ]

    def run(self):
        self.trace = open(self.trace_path, "w", buffering=1) if self.trace_path else None
        self.current_paths = [""]  # the worker's own directory, made like any other op
        self.current = ("mkdir", time.monotonic())
        try:
            os.mkdir(self.root)
        except OSError as err:
            self.stats.error("mkdir", f"{self.root_rel}: {err}")
            self.forget("")
            return
        finally:
            self.current = None
        names = [o[0] for o in self.OPS]
        weights = [o[2] for o in self.OPS]
        funcs = {o[0]: o[1] for o in self.OPS}
        while time.monotonic() < self.stop_at:
            name = self.rng.choices(names, weights)[0]
            self.current_paths = []
            self.note = ""
            self.op_name = name
            start = time.monotonic()
            self.current = (name, start)
            result = "ok"
            try:
                funcs[name](self)
            except (OSError, OpFailed) as err:
                result = f"ERROR {err}"
                self.stats.error(self.op_name, f"{self.root_rel}: {err}")
                for rel in self.current_paths:
                    self.forget(rel)
            finally:
                self.current = None
                if self.trace:
                    self.trace.write(
                        f"{time.time():.3f} {time.monotonic() - start:6.3f}s {self.op_name} "
                        f"{' '.join(self.current_paths)} {self.note} {result}\n"
                    )
            self.names = tuple(sorted(self.files))
            self.stats.op(self.op_name, time.monotonic() - start)


def watchdog(workers, stats, deadline, stop_event):
    while not stop_event.wait(1):
        now = time.monotonic()
        for w in workers:
            cur = w.current
            if cur and not w.hung and now - cur[1] > deadline:
                w.hung = True
                with stats.lock:
                    stats.hangs += 1
                    text = f"{w.root_rel}: {cur[0]} running for over {deadline} s"
                    stats.hang_samples.append(text)
                log(f"  HANG: {text}")
            elif not cur:
                w.hung = False


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cmd_work(args):
    stats = Stats()
    os.makedirs(args.src, exist_ok=True)
    start = time.monotonic()
    stop_at = start + args.seconds
    workers = []
    for i in range(args.workers):
        m = i % len(args.mount)
        workers.append(
            Worker(i, args.mount[m], m, args.base, args.src, args.deadline, stop_at, stats,
                   args.seed * 1000 + i, workers)
        )
    if args.url:
        for w in workers:
            w.api = Api(args.url, args.email, args.keyfile)
            w.api_folder = args.folder
    stop_event = threading.Event()
    dog = threading.Thread(
        target=watchdog, args=(workers, stats, args.deadline, stop_event), daemon=True
    )
    dog.start()
    for w in workers:
        w.start()
    rss_series = {pid: [] for pid in args.pid}
    labels = {pid: f"mount{n + 1}" for n, pid in enumerate(args.pid)}
    if args.server_pid:
        rss_series[args.server_pid] = []
        labels[args.server_pid] = "serve"
    last_print = -args.every

    def sample(now):
        parts = []
        for pid, series in rss_series.items():
            value = rss_mib(pid)
            series.append((round(now - start), value))
            shown = "gone" if value is None else f"{value:.1f} MiB"
            parts.append(f"{labels[pid]} {shown}")
        with stats.lock:
            ops = sum(stats.ops.values())
            errs = sum(stats.errors.values())
            wb, rb = stats.bytes_written, stats.bytes_read
        log(
            f"[{now - start:5.0f}s] ops {ops}, written {wb / MIB:.1f} MiB, "
            f"read {rb / MIB:.1f} MiB, errors {errs}, wrong {stats.wrong_reads}, "
            f"hangs {stats.hangs}; RSS " + ", ".join(parts)
        )

    while any(w.is_alive() for w in workers) and time.monotonic() < stop_at + 2 * args.deadline:
        now = time.monotonic()
        if now - start - last_print >= args.every:
            last_print = now - start
            sample(now)
        time.sleep(0.5)
    sample(time.monotonic())
    stop_event.set()
    stuck = [w.root_rel for w in workers if w.is_alive()]
    if stuck:
        with stats.lock:
            # (a worker the watchdog saw hang is one hang, not two)
            stats.hangs += sum(1 for w in workers if w.is_alive() and not w.hung)
            stats.hang_samples.append(f"still running at the end: {', '.join(stuck)}")
        log(f"  HANG: workers still running at the end: {', '.join(stuck)}")

    model = {
        "workers": {
            w.root_rel: {
                "files": {
                    rel: {
                        "md5": hashlib.md5(st.data).hexdigest(),
                        "size": len(st.data),
                        "meta": st.meta,
                    }
                    for rel, st in sorted(w.files.items())
                },
                "dirs": sorted(d for d in w.dirs if d),
                # a worker still stuck in an op: what that op touches is open as well
                "uncertain": sorted(w.uncertain | set(w.current_paths if w.current else ())),
            }
            for w in workers
        },
        "stats": {
            "seconds": round(time.monotonic() - start),
            "ops": stats.ops,
            "ops_total": sum(stats.ops.values()),
            "errors": stats.errors,
            "errors_total": sum(stats.errors.values()),
            "error_samples": stats.error_samples,
            "bytes_written": stats.bytes_written,
            "bytes_read": stats.bytes_read,
            "hangs": stats.hangs,
            "hang_samples": stats.hang_samples,
            "wrong_reads": stats.wrong_reads,
            "wrong_samples": stats.wrong_samples,
            "cross_read_errors": stats.cross_errors,
            "slowest_op": {"seconds": round(stats.slowest[0], 2), "op": stats.slowest[1]},
            "rss_mib": {labels[p]: s for p, s in rss_series.items()},
            "stuck": stuck,
        },
    }
    with open(args.model, "w") as f:
        json.dump(model, f, indent=1)
    if stuck:
        os._exit(3)  # threads stuck in the kernel cannot be joined


# ---------------------------------------------------------------- the check


def server_tree(api, folder_id, prefix, out_files, out_dirs, problems):
    children = api.call("midas.folder.children", id=folder_id)
    for folder in children["folders"]:
        rel = f"{prefix}{folder['name']}"
        if rel in out_dirs or rel in out_files:
            problems.append(f"{rel}: two entries of that name on the server")
        out_dirs[rel] = folder["folder_id"]
        server_tree(api, folder["folder_id"], rel + "/", out_files, out_dirs, problems)
    for item in children["items"]:
        rel = f"{prefix}{item['name']}"
        if rel in out_dirs or rel in out_files:
            problems.append(f"{rel}: two entries of that name on the server")
        out_files[rel] = item["item_id"]


def row(label, value, samples=()):
    """One line of the result, with up to 10 examples under it."""
    log(f"  {label:<13} {value}")
    for sample in samples[:10]:
        log(" " * 18 + str(sample))


def cmd_check(args):
    with open(args.model) as f:
        model = json.load(f)
    api = Api(args.url, args.email, args.keyfile)
    server_files, server_dirs, dupes = {}, {}, []
    server_tree(api, args.folder, "", server_files, server_dirs, dupes)

    lost, wrong, extra = [], list(dupes), []
    checked_files = checked_bytes = skipped = 0
    want_files, want_dirs, open_prefixes = {}, set(), []
    for wname, w in model["workers"].items():
        want_dirs.add(wname)
        want_dirs.update(f"{wname}/{d}" for d in w["dirs"])
        want_files.update({f"{wname}/{rel}": st for rel, st in w["files"].items()})
        open_prefixes.extend(f"{wname}/{u}" if u else wname for u in w["uncertain"])

    def is_open(rel):
        return any(rel == p or rel.startswith(p + "/") for p in open_prefixes)

    for d in sorted(want_dirs):
        if d not in server_dirs and not is_open(d):
            lost.append(f"{d}/ (directory)")
    for d in sorted(server_dirs):
        if d not in want_dirs and not is_open(d):
            extra.append(f"{d}/ (directory)")
    for rel in sorted(server_files):
        if rel not in want_files:
            if is_open(rel):
                skipped += 1
            else:
                extra.append(rel)
    for rel, st in sorted(want_files.items()):
        item_id = server_files.get(rel)
        if item_id is None:
            if not is_open(rel):
                lost.append(rel)
            continue
        item = api.call("midas.item.get", id=item_id)
        revisions = item.get("revisions") or []
        bitstreams = revisions[-1]["bitstreams"] if revisions else []
        name = rel.rsplit("/", 1)[-1]
        if len(bitstreams) != 1 or bitstreams[0]["name"] != name:
            held = [b["name"] for b in bitstreams]
            wrong.append(f"{rel}: head revision holds {held}, not one '{name}'")
            continue
        bs = bitstreams[0]
        data = api.download(bs["bitstream_id"])
        checked_files += 1
        checked_bytes += len(data)
        md5 = hashlib.md5(data).hexdigest()
        if len(data) != st["size"] or md5 != st["md5"]:
            wrong.append(
                f"{rel}: server has {len(data)} bytes (md5 {md5}), "
                f"model {st['size']} bytes (md5 {st['md5']})"
            )
            continue
        if str(bs.get("checksum", md5)) != md5 or int(bs.get("sizebytes", len(data))) != len(data):
            wrong.append(
                f"{rel}: bitstream says {bs.get('sizebytes')} bytes (md5 {bs.get('checksum')}), "
                f"its download {len(data)} (md5 {md5})"
            )
            continue
        if st["meta"] is not None:
            values = api.call("midas.item.getmetadata", id=item_id)
            got = {v["qualifier"]: v["value"] for v in values if v["element"] == META_ELEMENT}
            if got != st["meta"]:
                wrong.append(f"{rel}: metadata {got}, model {st['meta']}")

    s = model["stats"]
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s["ops"].items()))
    errors = ", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items()))
    slowest = s["slowest_op"]
    log("")
    log(f"soak result ({args.label})")
    row("ran", f"{s['seconds']} s, {len(model['workers'])} workers")
    row("ops", f"{s['ops_total']}: {counts}")
    written, read = s["bytes_written"] / MIB, s["bytes_read"] / MIB
    row("bytes", f"written {written:.1f} MiB, read {read:.1f} MiB")
    row("errors", f"{s['errors_total']}" + (f": {errors}" if errors else ""), s["error_samples"])
    row(
        "hangs",
        f"{s['hangs']} (ops past the deadline); "
        f"slowest op {slowest['seconds']} s ({slowest['op']})",
        s["hang_samples"],
    )
    row(
        "wrong reads",
        f"{s['wrong_reads']} (reads, listings, xattrs through the mount unlike the model)",
        s["wrong_samples"],
    )
    row("cross reads", f"{s['cross_read_errors']} errors reading other workers' files")
    row(
        "checked",
        f"{checked_files} files ({checked_bytes / MIB:.1f} MiB downloaded), "
        f"{len(want_dirs)} directories; {skipped} left open by errors",
    )
    row("lost", len(lost), lost)
    row("wrong files", len(wrong), wrong)
    row("extra", f"{len(extra)} (on the server, not in the model: deleted or moved away)", extra)
    for label, series in s["rss_mib"].items():
        points = [(t, v) for t, v in series if v is not None]
        if points:
            first = points[min(1, len(points) - 1)]
            half = points[len(points) // 2][1]
            end = points[-1][1]
            row(
                f"RSS {label}",
                f"{first[1]:.1f} MiB after {first[0]} s, max {max(v for _, v in points):.1f} MiB, "
                f"end {end:.1f} MiB ({end - half:+.1f} MiB over the second half)",
            )
            texts = [f"{t}s:{v:.0f}" for t, v in points]
            for i in range(0, len(texts), 12):
                log(" " * 18 + " ".join(texts[i : i + 12]))
    wrong_count = len(wrong) + len(extra) + s["wrong_reads"]
    bad = len(lost) + wrong_count + s["hangs"]
    verdict = "PASS" if bad == 0 else "FAIL"
    row("verdict", f"{verdict}: {len(lost)} lost, {wrong_count} wrong, {s['hangs']} hangs")
    with open(args.model + ".result.json", "w") as f:
        json.dump({"lost": lost, "wrong": wrong, "extra": extra, "stats": s}, f, indent=1)
    sys.exit(0 if bad == 0 else 1)


def cmd_remove(args):
    api = Api(args.url, args.email, args.keyfile)
    api.call("midas.folder.delete", id=args.folder)


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
        if (
            words
            and os.path.basename(words[0]) == "midasfs"
            and "mount" in words[1:3]
            and any(os.path.realpath(w) == wanted for w in words if w.startswith("/"))
        ):
            print(entry)
            return
    sys.exit(f"soak: no midasfs mount daemon found for {wanted}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup")
    for a in ("url", "email", "keyfile", "name"):
        p.add_argument(a)
    p.set_defaults(handler=cmd_setup)
    p = sub.add_parser("work")
    p.add_argument("--mount", action="append", required=True)
    p.add_argument("--pid", action="append", type=int, default=[])
    p.add_argument("--server-pid", type=int)
    p.add_argument("--base", required=True, help="the run's folder, relative to each mount")
    p.add_argument("--src", required=True, help="a local scratch directory")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--deadline", type=float, default=60)
    p.add_argument("--every", type=float, default=10, help="seconds between progress lines")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--model", required=True)
    p.add_argument("--url", help="the server, asked about wrong listings (with the next three)")
    p.add_argument("--email")
    p.add_argument("--keyfile")
    p.add_argument("--folder", help="the run's folder id")
    p.set_defaults(handler=cmd_work)
    p = sub.add_parser("check")
    for a in ("url", "email", "keyfile"):
        p.add_argument(a)
    p.add_argument("folder")
    p.add_argument("model")
    p.add_argument("--label", default="")
    p.set_defaults(handler=cmd_check)
    p = sub.add_parser("remove")
    for a in ("url", "email", "keyfile", "folder"):
        p.add_argument(a)
    p.set_defaults(handler=cmd_remove)
    p = sub.add_parser("mount-pid")
    p.add_argument("mountpoint")
    p.set_defaults(handler=cmd_mount_pid)
    args = parser.parse_args()
    try:
        args.handler(args)
    except ApiError as err:
        sys.exit(f"soak {args.command}: {err}")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
