//! Spool files: the local copy of a file being written through the mount, until it is uploaded.
//!
//! Every file open for writing has one spool file in the spool directory, named `<pid>-<n>.spool`
//! so that a later mount can tell the files of a dead mount from those of a live one. The total
//! size of all spool files is bounded (`--spool-size`): a write beyond gets ENOSPC. When an upload
//! fails, the spool file is moved into `<spool-dir>/recovery/` and stays there: nothing written
//! through the mount is ever silently lost.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};

use super::error::{FsError, FsResult};

const SUFFIX: &str = ".spool";
const RECOVERY: &str = "recovery";
/// The first bytes of a file are hashed by the writer itself; beyond, a thread of the file's own
/// does it beside the writes (MD5 costs more CPU than writing the spool, and would halve the
/// speed of a large copy).
const INLINE_HASH_BYTES: u64 = 1024 * 1024;
/// Writes queued for that thread at most: bounds its memory and how far it lags behind.
const HASH_QUEUE: usize = 16;

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Largest total size of all spool files.
    pub max_bytes: u64,
}

/// `$XDG_CACHE_HOME/midasfs/spool`, or `~/.cache/midasfs/spool`.
pub fn default_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("midasfs")
        .join("spool")
}

/// The spool directory and the bytes its files hold.
pub struct Spool {
    dir: PathBuf,
    budget: Arc<Budget>,
    next: AtomicU64,
}

struct Budget {
    max: u64,
    used: Mutex<u64>,
}

impl Budget {
    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reserve(&self, bytes: u64) -> FsResult<()> {
        let mut used = self.lock();
        if used.saturating_add(bytes) > self.max {
            return Err(FsError::new(
                libc::ENOSPC,
                format!(
                    "the spool is full ({} of {} bytes in files being written; see --spool-size)",
                    *used, self.max
                ),
            ));
        }
        *used += bytes;
        Ok(())
    }

    fn give_back(&self, bytes: u64) {
        let mut used = self.lock();
        *used = used.saturating_sub(bytes);
    }
}

impl Spool {
    pub fn new(config: &SpoolConfig) -> Spool {
        let spool = Spool {
            dir: config.dir.clone(),
            budget: Arc::new(Budget {
                max: config.max_bytes,
                used: Mutex::new(0),
            }),
            next: AtomicU64::new(1),
        };
        // A spool left by an older version may be open to others: close it now.
        if spool.dir.exists() {
            if let Err(err) = crate::private::dir(&spool.dir) {
                log::warn!("spool directory {}: {err}", spool.dir.display());
            }
        }
        spool.rescue_orphans();
        spool
    }

    /// Bytes held by files being written.
    pub fn used_bytes(&self) -> u64 {
        *self.budget.lock()
    }

    pub fn recovery_dir(&self) -> PathBuf {
        self.dir.join(RECOVERY)
    }

    /// A new, empty spool file.
    pub fn create(&self) -> FsResult<SpoolFile> {
        crate::private::dir(&self.dir)
            .map_err(|e| io_error("creating the spool directory", &self.dir, &e))?;
        let name = format!(
            "{}-{}{SUFFIX}",
            std::process::id(),
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.dir.join(name);
        let file = crate::private::file_options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_error("creating a spool file", &path, &e))?;
        Ok(SpoolFile {
            file,
            path,
            size: 0,
            hasher: Some(RunningMd5::new()),
            hashed: 0,
            budget: Arc::clone(&self.budget),
            recovered: false,
        })
    }

    /// Spool files of mounts that died (their pid is gone) go to the recovery directory.
    fn rescue_orphans(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_suffix(SUFFIX)
                .and_then(|stem| stem.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<i32>().ok())
            else {
                continue;
            };
            if process_alive(pid) {
                continue;
            }
            let target = unique_recovery_path(&self.recovery_dir(), &name);
            match crate::private::dir(&self.recovery_dir())
                .and_then(|()| std::fs::rename(entry.path(), &target))
            {
                Ok(()) => log::warn!(
                    "a previous midasfs (pid {pid}) left unsaved data: moved to {}",
                    target.display()
                ),
                Err(err) => log::warn!(
                    "a previous midasfs (pid {pid}) left unsaved data in {}; could not move it: {err}",
                    entry.path().display()
                ),
            }
        }
    }
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn io_error(doing: &str, path: &Path, err: &std::io::Error) -> FsError {
    FsError::new(
        err.raw_os_error().unwrap_or(libc::EIO),
        format!("{doing} {}: {err}", path.display()),
    )
}

/// `<recovery>/<unix seconds>-<n>-<name>`, a name no other recovered file has.
fn unique_recovery_path(recovery: &Path, name: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let safe: String = name
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = recovery.join(format!("{secs}-{}-{n}-{safe}", std::process::id()));
        if !path.exists() {
            return path;
        }
    }
}

/// The MD5 of the bytes written so far, in order from the start.
enum RunningMd5 {
    Inline(Md5),
    /// Hashed by a thread that ends when the queue is dropped.
    Threaded(SyncSender<HashJob>),
}

enum HashJob {
    Bytes(Vec<u8>),
    /// The digest of everything queued before.
    Digest(mpsc::Sender<String>),
}

impl RunningMd5 {
    fn new() -> RunningMd5 {
        RunningMd5::Inline(Md5::new())
    }

    /// Adds `data`, which ends at offset `end` of the file.
    fn update(&mut self, data: &[u8], end: u64) {
        if let RunningMd5::Inline(md5) = self {
            if end <= INLINE_HASH_BYTES {
                md5.update(data);
                return;
            }
            let (queue, jobs) = mpsc::sync_channel(HASH_QUEUE);
            let mut md5 = std::mem::take(md5);
            let spawned = std::thread::Builder::new()
                .name("spool-md5".into())
                .spawn(move || {
                    for job in jobs {
                        match job {
                            HashJob::Bytes(bytes) => md5.update(&bytes),
                            HashJob::Digest(reply) => {
                                let _ = reply.send(hex(&md5.clone().finalize()));
                            }
                        }
                    }
                });
            if let Err(err) = spawned {
                // The checksum is computed from the file when needed instead.
                log::warn!("no thread for a spool file's MD5: {err}");
            }
            *self = RunningMd5::Threaded(queue);
        }
        if let RunningMd5::Threaded(queue) = self {
            // A failed send (the thread is gone) shows as a missing digest later.
            let _ = queue.send(HashJob::Bytes(data.to_vec()));
        }
    }

    /// Lower-case hex; None if the hashing thread is gone.
    fn digest(&self) -> Option<String> {
        match self {
            RunningMd5::Inline(md5) => Some(hex(&md5.clone().finalize())),
            RunningMd5::Threaded(queue) => {
                let (reply, digest) = mpsc::channel();
                queue.send(HashJob::Digest(reply)).ok()?;
                digest.recv().ok()
            }
        }
    }
}

/// One file being written. Dropping it deletes the file, unless it was moved to recovery.
pub struct SpoolFile {
    file: File,
    path: PathBuf,
    size: u64,
    /// MD5 of bytes `[0, hashed)`, kept while the writes are sequential; `None` once they were
    /// not (the checksum is then computed from the file when needed).
    hasher: Option<RunningMd5>,
    hashed: u64,
    budget: Arc<Budget>,
    recovered: bool,
}

impl SpoolFile {
    pub fn len(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_recovered(&self) -> bool {
        self.recovered
    }

    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> FsResult<()> {
        let end = offset + data.len() as u64;
        let grow = end.saturating_sub(self.size);
        self.budget.reserve(grow)?;
        if let Err(err) = self.file.write_all_at(data, offset) {
            self.budget.give_back(grow);
            return Err(io_error("writing", &self.path, &err));
        }
        self.size += grow;
        match &mut self.hasher {
            Some(hasher) if offset == self.hashed => {
                hasher.update(data, end);
                self.hashed = end;
            }
            _ => self.hasher = None,
        }
        Ok(())
    }

    pub fn read_at(&self, offset: u64, len: u32) -> FsResult<Vec<u8>> {
        let end = (offset + u64::from(len)).min(self.size);
        let mut buf = vec![0; end.saturating_sub(offset) as usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| io_error("reading", &self.path, &e))?;
        Ok(buf)
    }

    pub fn set_len(&mut self, size: u64) -> FsResult<()> {
        if size > self.size {
            self.budget.reserve(size - self.size)?;
        }
        if let Err(err) = self.file.set_len(size) {
            if size > self.size {
                self.budget.give_back(size - self.size);
            }
            return Err(io_error("truncating", &self.path, &err));
        }
        if size < self.size {
            self.budget.give_back(self.size - size);
        }
        self.size = size;
        if size == 0 {
            self.hasher = Some(RunningMd5::new());
            self.hashed = 0;
        } else if size != self.hashed {
            self.hasher = None;
        }
        Ok(())
    }

    /// Stops computing the MD5 as the file is written (it is computed from the file if asked).
    pub fn stop_hashing(&mut self) {
        self.hasher = None;
    }

    /// Lower-case hex MD5 of the content if the writes were sequential (else see
    /// [`md5_of_file`]).
    pub fn running_md5(&self) -> Option<String> {
        self.hasher
            .as_ref()
            .filter(|_| self.hashed == self.size)?
            .digest()
    }

    /// Moves the file into the recovery directory (it stays open); returns where it went.
    /// `name` is the file's intended name, kept at the end of the recovered file's name.
    pub fn recover(&mut self, recovery: &Path, name: &str) -> FsResult<PathBuf> {
        if self.recovered {
            return Ok(self.path.clone());
        }
        crate::private::dir(recovery)
            .map_err(|e| io_error("creating the recovery directory", recovery, &e))?;
        let target = unique_recovery_path(recovery, name);
        std::fs::rename(&self.path, &target)
            .map_err(|e| io_error("moving to the recovery directory", &self.path, &e))?;
        self.path = target;
        self.recovered = true;
        Ok(self.path.clone())
    }

    /// After a successful upload of a recovered file: it is saved, so it leaves the recovery
    /// directory again (deleted on drop like any spool file).
    pub fn saved(&mut self) {
        self.recovered = false;
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        self.budget.give_back(self.size);
        if !self.recovered {
            if let Err(err) = std::fs::remove_file(&self.path) {
                log::debug!("removing spool file {}: {err}", self.path.display());
            }
        }
    }
}

/// Lower-case hex MD5 of a file's content.
pub fn md5_of_file(path: &Path) -> FsResult<String> {
    let mut hasher = Md5::new();
    let mut file = File::open(path).map_err(|e| io_error("reading", path, &e))?;
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| io_error("reading", path, &e))?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(dir: &Path, max: u64) -> Spool {
        Spool::new(&SpoolConfig {
            dir: dir.to_owned(),
            max_bytes: max,
        })
    }

    const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";

    #[test]
    fn running_and_recomputed_checksums_agree() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool(dir.path(), 1 << 20);
        let mut file = spool.create().unwrap();
        assert_eq!(file.running_md5().as_deref(), Some(EMPTY_MD5));
        file.write_at(0, b"hello ").unwrap();
        file.write_at(6, b"world").unwrap();
        let sequential = file.running_md5().unwrap();
        assert_eq!(sequential, "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert_eq!(md5_of_file(file.path()).unwrap(), sequential);
        // An out-of-order write drops the running hash; the file's checksum is still right.
        file.write_at(0, b"J").unwrap();
        assert_eq!(file.running_md5(), None);
        let mut fresh = spool.create().unwrap();
        fresh.write_at(0, b"Jello world").unwrap();
        assert_eq!(Some(md5_of_file(file.path()).unwrap()), fresh.running_md5());
        file.set_len(0).unwrap();
        assert_eq!(file.running_md5().as_deref(), Some(EMPTY_MD5));
    }

    #[test]
    fn a_large_file_is_hashed_on_a_thread_and_agrees_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool(dir.path(), 1 << 30);
        let mut file = spool.create().unwrap();
        let chunk: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut offset = 0;
        // Past the inline part, a digest in the middle, and on: each agrees with the file.
        for _ in 0..2 {
            for _ in 0..20 {
                file.write_at(offset, &chunk).unwrap();
                offset += chunk.len() as u64;
            }
            assert!(offset > INLINE_HASH_BYTES);
            assert!(matches!(file.hasher, Some(RunningMd5::Threaded(_))));
            assert_eq!(
                file.running_md5(),
                Some(md5_of_file(file.path()).unwrap()),
                "after {offset} bytes"
            );
        }
        file.set_len(0).unwrap();
        assert_eq!(file.running_md5().as_deref(), Some(EMPTY_MD5));
    }

    #[test]
    fn the_budget_refuses_growth_with_enospc_and_is_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool(dir.path(), 10);
        let mut a = spool.create().unwrap();
        a.write_at(0, b"12345678").unwrap();
        let mut b = spool.create().unwrap();
        assert_eq!(b.write_at(0, b"abc").unwrap_err().errno, libc::ENOSPC);
        // Overwriting inside the file needs no room.
        a.write_at(0, b"xx").unwrap();
        assert_eq!(a.set_len(20).unwrap_err().errno, libc::ENOSPC);
        drop(a);
        b.write_at(0, b"abc").unwrap();
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn dropping_deletes_but_recovered_files_stay() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool(dir.path(), 1 << 20);
        let plain = spool.create().unwrap();
        let plain_path = plain.path().to_owned();
        drop(plain);
        assert!(!plain_path.exists());
        let mut kept = spool.create().unwrap();
        kept.write_at(0, b"precious").unwrap();
        let at = kept.recover(&spool.recovery_dir(), "notes.txt").unwrap();
        kept.write_at(8, b"!").unwrap();
        drop(kept);
        assert!(at.starts_with(spool.recovery_dir()));
        assert!(at.to_string_lossy().ends_with("notes.txt"));
        assert_eq!(std::fs::read(&at).unwrap(), b"precious!");
    }

    #[test]
    fn files_of_dead_mounts_are_moved_to_recovery() {
        let dir = tempfile::tempdir().unwrap();
        // pid_max is far below this, so no such process exists.
        std::fs::write(dir.path().join("99999999-1.spool"), b"orphan").unwrap();
        let live = format!("{}-7.spool", std::process::id());
        std::fs::write(dir.path().join(&live), b"mine").unwrap();
        let spool = spool(dir.path(), 1 << 20);
        assert!(dir.path().join(&live).exists());
        let rescued: Vec<_> = std::fs::read_dir(spool.recovery_dir())
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(rescued.len(), 1);
        assert_eq!(std::fs::read(rescued[0].path()).unwrap(), b"orphan");
    }
}
