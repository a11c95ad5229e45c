//! Spool files: the local copy of a file being written through the mount, until it is uploaded.
//!
//! Every file open for writing has one spool file in the spool directory, named `<pid>-<n>.spool`
//! so that a later mount can tell the files of a dead mount from those of a live one. The total
//! size of all spool files is bounded (`--spool-size`): a write beyond gets ENOSPC. When an upload
//! fails, the spool file is moved into `<spool-dir>/recovery/` and stays there: nothing written
//! through the mount is ever silently lost.
//!
//! Beside each spool file, `<file>.target` (JSON) says where its data is going: the server, the
//! folder or item, the name. It follows the file into the recovery directory, with the reason,
//! so that a recovered file whose name had to be shortened (names are at most 255 bytes) or that
//! a dead mount left still says what it was. A spool file is deleted only when its data reached
//! the server (or nobody wants it any more) or the recovery directory: if moving it there fails,
//! it stays where it is, and the next mount moves it.
//!
//! With write-back, a `close` makes the file durable with its journal record (the upload is due)
//! in ONE `fsync` of the spool file (see [`SpoolFile::journal`]):
//! - The record is an extended attribute of the spool file itself ([`RECORD_XATTR`]), not a file
//!   of its own: `fsync` writes a file's data and its metadata, extended attributes included
//!   (they are the inode's: ext4, XFS and btrfs journal them with it), so one `fsync` makes both
//!   durable, and no second name has to survive a power cut. `setxattr` replaces the value
//!   whole, so there is no torn record; a record that does not parse is no record.
//! - The record holds the size and MD5 of the content it is for, and the next mount resumes the
//!   upload only when the file still matches: before the `fsync`, the filesystem may write the
//!   record (its periodic journal commit) ahead of the data, and a record must never send data
//!   that did not reach the disk. Without a running MD5 (writes out of order) the data is
//!   synced first, then the record is set and synced.
//! - The file's NAME must survive a power cut too, and that takes an `fsync` of the directory
//!   after the name was made. So a write-back mount makes spool files ahead ([`SPARES`] at a
//!   time, empty), syncs the directory once for all of them, and hands them out to the files it
//!   opens: each close then syncs only its file. One directory sync per [`SPARES`] files. An
//!   empty spool file of a dead mount with no sidecar and no record is such a spare, unused: it
//!   is removed. If the spool's filesystem has no extended attributes, or no spare could be
//!   made, the record goes into the sidecar as before: the file, the sidecar and the directory
//!   are synced (three `fsync`s).

use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};

use crate::fs::error::Kind;
use crate::fs::error::{FsError, FsResult};

const SUFFIX: &str = ".spool";
const RECOVERY: &str = "recovery";
/// The suffix of the file that says where a spool or recovered file's data was going.
pub const SIDECAR: &str = ".target";
/// The sidecar's key for the item an upload of the file made, for a later mount to use or
/// remove (see [`add_to_sidecar`]).
pub const MADE_ITEM_KEY: &str = "made_item_id";
/// The suffix of a sidecar being written (see [`write_sidecar`]).
const UNFINISHED: &str = ".new";
/// The sidecar's key that makes it a write-back journal record: with [`JOURNAL_PENDING`], the
/// file was closed and its upload is still due (a later mount resumes it).
pub const JOURNAL_KEY: &str = "write_back";
pub const JOURNAL_PENDING: &str = "pending";
/// The extended attribute of a spool file that holds its write-back journal record (JSON, the
/// sidecar's keys with [`JOURNAL_KEY`], plus the `size` and `md5` of the content it is for).
pub const RECORD_XATTR: &CStr = c"user.midasfs.write_back";
/// Spool files a write-back mount makes ahead at a time, with one sync of the directory.
pub const SPARES: usize = 32;
/// The longest name of a recovered file: with [`SIDECAR`] it stays below `NAME_MAX` (255).
const RECOVERED_NAME_MAX: usize = 240;
/// The first bytes of a file are hashed by the writer itself; beyond, a thread of the file's own
/// does it from the file, behind the writes and at the lowest priority (see [`Behind`]): MD5
/// costs more CPU than writing the spool, and would slow a large copy down.
const INLINE_HASH_BYTES: u64 = 1024 * 1024;

/// The bytes of one read and write when a spool file is copied (see [`Spool::copy_of`]).
const COPY_CHUNK: u32 = 1 << 20;

/// What a sidecar says.
pub type About = serde_json::Map<String, serde_json::Value>;

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Largest total size of all spool files (`u64::MAX`: as much as the disk allows).
    pub max_bytes: u64,
    /// What writes leave free on the disk under the spool (see [`keep_free_on`]).
    pub keep_free: u64,
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
    /// What the sidecars of the files rescued from dead mounts said.
    rescued: Mutex<Vec<serde_json::Map<String, serde_json::Value>>>,
    /// Files a dead mount had closed with write-back and not uploaded yet (their journal record
    /// says so): claimed by this mount, to upload (see `writeback`).
    resumable: Mutex<Vec<Resumable>>,
    /// Spool files are taken from `spares`, whose names are durable (write-back).
    durable_names: AtomicBool,
    /// Empty spool files made ahead, whose names a sync of the directory made durable.
    spares: Mutex<Vec<(PathBuf, File)>>,
}

/// A closed file a dead mount still had to upload (write-back), now a spool file of this one.
pub struct Resumable {
    pub path: PathBuf,
    pub about: serde_json::Map<String, serde_json::Value>,
    /// The pid of the mount that left it.
    pub pid: i32,
}

struct Budget {
    max: u64,
    dir: PathBuf,
    /// What the disk under the spool keeps free: writes stop before they take it.
    keep_free: u64,
    used: Mutex<u64>,
    /// `used` when the disk's free space was last checked.
    checked_at: AtomicU64,
}

/// How much the spool may grow between two looks at its disk's free space.
const DISK_CHECK_EVERY: u64 = 16 << 20;

/// What the disk under the spool keeps free at least: 1 GiB, or a twentieth of a small disk.
pub fn keep_free_on(dir: &Path) -> u64 {
    let total = crate::fs::statfs::disk_space(dir).map_or(0, |(total, _)| total);
    (1u64 << 30).min(total / 20)
}

impl Budget {
    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reserve(&self, bytes: u64) -> FsResult<()> {
        let mut used = self.lock();
        if used.saturating_add(bytes) > self.max {
            return Err(FsError::new(
                Kind::NoSpace,
                format!(
                    "the spool is full ({} of {} bytes in files being written; see --spool-size)",
                    *used, self.max
                ),
            ));
        }
        let since_check = used.saturating_sub(self.checked_at.load(Ordering::Relaxed));
        if self.keep_free > 0 && (bytes >= DISK_CHECK_EVERY || since_check >= DISK_CHECK_EVERY) {
            if let Some((_, free)) = crate::fs::statfs::disk_space(&self.dir) {
                if free < bytes.saturating_add(self.keep_free) {
                    return Err(FsError::new(
                        Kind::NoSpace,
                        format!(
                            "the disk under the spool ({}) has {free} bytes free, and writes \
                             keep {} free for the rest of the system (see --spool-dir)",
                            self.dir.display(),
                            self.keep_free
                        ),
                    ));
                }
            }
            self.checked_at.store(*used + bytes, Ordering::Relaxed);
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
                dir: config.dir.clone(),
                keep_free: config.keep_free,
                used: Mutex::new(0),
                checked_at: AtomicU64::new(0),
            }),
            next: AtomicU64::new(1),
            rescued: Mutex::default(),
            resumable: Mutex::default(),
            durable_names: AtomicBool::new(false),
            spares: Mutex::default(),
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

    /// What the sidecars of the files rescued from dead mounts at start said (once).
    pub fn take_rescued(&self) -> Vec<serde_json::Map<String, serde_json::Value>> {
        std::mem::take(&mut *self.rescued.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn recovery_dir(&self) -> PathBuf {
        self.dir.join(RECOVERY)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new, empty spool file.
    pub fn create(&self) -> FsResult<SpoolFile> {
        crate::private::dir(&self.dir)
            .map_err(|e| io_error("creating the spool directory", &self.dir, &e))?;
        if self.durable_names.load(Ordering::Acquire) {
            if let Some((path, file)) = self.take_spare() {
                return Ok(self.spool_file(file, path, true));
            }
        }
        let path = self.new_path();
        let file = crate::private::file_options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_error("creating a spool file", &path, &e))?;
        Ok(self.spool_file(file, path, false))
    }

    /// A new spool file holding the first `len` bytes of `from`, and its sidecar.
    pub fn copy_of(&self, from: &SpoolFile, len: u64) -> FsResult<SpoolFile> {
        let mut copy = self.create()?;
        let mut about = read_sidecar(&from.path);
        // Due for upload is the old content; a close of the copy journals it anew.
        about.remove(JOURNAL_KEY);
        if !about.is_empty() {
            copy.describe(&about);
        }
        let mut offset = 0;
        while offset < len {
            let chunk = u32::try_from(len - offset)
                .unwrap_or(u32::MAX)
                .min(COPY_CHUNK);
            let bytes = from.read_at(offset, chunk)?;
            if bytes.is_empty() {
                break;
            }
            copy.write_at(offset, &bytes)?;
            offset += bytes.len() as u64;
        }
        Ok(copy)
    }

    fn spool_file(&self, file: File, path: PathBuf, name_durable: bool) -> SpoolFile {
        SpoolFile {
            file,
            path,
            size: 0,
            hasher: Some(RunningMd5::new()),
            hashed: 0,
            budget: Arc::clone(&self.budget),
            recovered: false,
            unsaved: false,
            name_durable,
        }
    }

    /// Takes over a spool file a dead mount left (see [`Spool::take_resumable`]) as the spool
    /// of a file this mount shows while it uploads it. Its sidecar and journal record stay
    /// until the upload ends, so that the next mount resumes it should this one die too.
    pub fn adopt(&self, path: &Path) -> FsResult<SpoolFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io_error("opening a spool file", path, &e))?;
        let size = file
            .metadata()
            .map_err(|e| io_error("reading a spool file", path, &e))?
            .len();
        self.budget.reserve(size)?;
        Ok(SpoolFile {
            file,
            path: path.to_owned(),
            size,
            // Its MD5 is computed from the file when it is sent.
            hasher: None,
            hashed: 0,
            budget: Arc::clone(&self.budget),
            recovered: false,
            unsaved: false,
            name_durable: true,
        })
    }

    /// From now on, spool files have names that survive a power cut before they are handed out
    /// (write-back: see the module's documentation).
    pub fn keep_names_durable(&self) {
        self.durable_names.store(true, Ordering::Release);
    }

    /// For tests: journal records go into the sidecars, as on a filesystem without extended
    /// attributes.
    #[cfg(test)]
    pub(in crate::fs) fn records_in_sidecars(&self) {
        self.durable_names.store(false, Ordering::Release);
    }

    /// A spare spool file, making [`SPARES`] more if there is none; None if that failed.
    fn take_spare(&self) -> Option<(PathBuf, File)> {
        let mut spares = self.spares.lock().unwrap_or_else(|p| p.into_inner());
        if spares.is_empty() {
            match self.make_spares() {
                Ok(made) => *spares = made,
                Err(err) => {
                    log::warn!(
                        "making spool files ahead in {}: {err}; each close syncs the directory \
                         instead",
                        self.dir.display()
                    );
                    return None;
                }
            }
        }
        spares.pop()
    }

    /// [`SPARES`] new empty spool files, and then one sync of the directory that makes all
    /// their names durable.
    fn make_spares(&self) -> std::io::Result<Vec<(PathBuf, File)>> {
        let mut made = Vec::with_capacity(SPARES);
        let made_all = (|| {
            for _ in 0..SPARES {
                let path = self.new_path();
                let file = crate::private::file_options()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)?;
                made.push((path, file));
            }
            sync_dir(&self.dir)
        })();
        match made_all {
            Ok(()) => Ok(made),
            Err(err) => {
                for (path, _) in made {
                    let _ = std::fs::remove_file(path);
                }
                Err(err)
            }
        }
    }

    /// Removes the spool files made ahead and not used (at unmount).
    pub fn remove_spares(&self) {
        let spares = std::mem::take(&mut *self.spares.lock().unwrap_or_else(|p| p.into_inner()));
        for (path, _) in spares {
            if let Err(err) = std::fs::remove_file(&path) {
                log::debug!("removing spare spool file {}: {err}", path.display());
            }
        }
    }

    /// The files a dead mount left to upload (write-back), claimed at start (once).
    pub fn take_resumable(&self) -> Vec<Resumable> {
        std::mem::take(&mut *self.resumable.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A path for a spool file of this process.
    fn new_path(&self) -> PathBuf {
        self.dir.join(format!(
            "{}-{}{SUFFIX}",
            std::process::id(),
            self.next.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Takes over the spool file `path` of a dead mount, which its journal record says was
    /// closed with write-back and not uploaded: renamed to a name of this process (with its
    /// sidecar), so that no other mount sharing the directory takes it too, and so that it is
    /// resumed again should this one die as well. None if another mount took it first.
    fn claim(&self, path: &Path) -> Option<PathBuf> {
        let claimed = self.new_path();
        std::fs::rename(path, &claimed).ok()?;
        if let Err(err) = std::fs::rename(sidecar_of(path), sidecar_of(&claimed)) {
            log::debug!("{}: moving its sidecar: {err}", path.display());
        }
        Some(claimed)
    }

    /// Spool files of mounts that died (their pid is gone) go to the recovery directory, but
    /// those closed with write-back and not uploaded yet are claimed to be uploaded now: of one
    /// file, the newest close's content alone (see [`newest_per_file`]).
    fn rescue_orphans(&self) {
        // Mounts that share the directory rescue one at a time: else one could scan after
        // another claimed a file's newest record and before it moved the older one away, and
        // send that older one.
        let _one_at_a_time = self.lock_for_rescue();
        self.remove_unfinished_sidecars();
        let mut pending = Vec::new();
        for (path, pid) in self.orphans() {
            let sidecar = read_sidecar(&path);
            let mut about = sidecar.clone();
            let record = read_record(&path);
            let mut unreadable = None;
            match &record {
                Ok(Some(record)) => about.extend(record.clone()),
                Ok(None) => {}
                Err(err) => {
                    // Not a record: the file is kept, not sent.
                    about.remove(JOURNAL_KEY);
                    unreadable = Some(err.clone());
                }
            }
            if sidecar.is_empty()
                && matches!(record, Ok(None))
                && std::fs::metadata(&path).is_ok_and(|m| m.len() == 0)
            {
                // A spare the dead mount made ahead and never used: nothing to keep.
                if let Err(err) = std::fs::remove_file(&path) {
                    log::debug!("removing {}: {err}", path.display());
                }
                continue;
            }
            if about.get(JOURNAL_KEY).and_then(|v| v.as_str()) == Some(JOURNAL_PENDING) {
                pending.push(Resumable { path, about, pid });
                continue;
            }
            let mut reason =
                format!("the midasfs that was writing it (pid {pid}) ended before saving it");
            if let Some(err) = unreadable {
                reason.push_str(&format!("; its write-back record is unreadable ({err})"));
            }
            self.rescue(&path, pid, about, reason);
        }
        // The sequence numbers of this mount's records come after all of these, whatever the
        // clock says now (it may have gone back, e.g. after a power cut).
        let latest = pending
            .iter()
            .filter_map(|r| r.about.get(SEQUENCE_KEY)?.as_u64())
            .max();
        if let Some(latest) = latest {
            LAST_SEQUENCE.fetch_max(latest, Ordering::Relaxed);
        }
        let (newest, superseded) = newest_per_file(pending);
        for Resumable {
            path,
            mut about,
            pid,
        } in superseded
        {
            about.remove(JOURNAL_KEY);
            let reason = format!(
                "the midasfs that was writing it (pid {pid}) ended before saving it, and a later \
                 close of the same file is sent instead"
            );
            self.rescue(&path, pid, about, reason);
        }
        for Resumable { path, about, pid } in newest {
            if let Some(claimed) = self.claim(&path) {
                self.resumable
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Resumable {
                        path: claimed,
                        about,
                        pid,
                    });
            }
        }
    }

    /// Moves the spool file `path` a dead mount (`pid`) left into the recovery directory, with
    /// `reason` in its sidecar.
    fn rescue(&self, path: &Path, pid: i32, mut about: About, reason: String) {
        let name = about
            .get("name")
            .and_then(|n| n.as_str())
            .map_or_else(|| file_name(path), str::to_owned);
        about.insert("reason".into(), reason.into());
        self.rescued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(about.clone());
        match move_to_recovery(path, &self.recovery_dir(), &name, &about) {
            Ok(target) => log::warn!(
                "a previous midasfs (pid {pid}) left unsaved data{}: moved to {}",
                describe_target(&about),
                target.display()
            ),
            Err(err) => log::warn!(
                "a previous midasfs (pid {pid}) left unsaved data{} in {}; could not move it: {err}",
                describe_target(&about),
                path.display()
            ),
        }
    }

    /// An exclusive lock on the directory itself (`flock` of the directory), held until the
    /// returned descriptor is dropped: it waits for another mount's rescue. None if the
    /// filesystem refuses it (the rescue then runs unlocked, as before such locks).
    fn lock_for_rescue(&self) -> Option<File> {
        let locked = File::open(&self.dir).and_then(|dir| {
            // SAFETY: flock on a descriptor this function owns; it touches no memory.
            let rc = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) };
            match rc {
                0 => Ok(dir),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
        locked
            .inspect_err(|err| log::debug!("locking {}: {err}", self.dir.display()))
            .ok()
    }

    /// Removes the sidecars that dead mounts began to write (their old sidecars stand).
    fn remove_unfinished_sidecars(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((spool_file, _)) = name.split_once(SIDECAR) else {
                continue;
            };
            if name.ends_with(UNFINISHED)
                && spool_name(spool_file).is_some_and(|(pid, _)| !process_alive(pid))
            {
                if let Err(err) = std::fs::remove_file(entry.path()) {
                    log::debug!("removing {}: {err}", entry.path().display());
                }
            }
        }
    }

    /// The spool files of mounts that died, with their pids.
    fn orphans(&self) -> Vec<(PathBuf, i32)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let (pid, _) = spool_name(&entry.file_name().to_string_lossy())?;
                (!process_alive(pid)).then(|| (entry.path(), pid))
            })
            .collect()
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.remove_spares();
    }
}

/// What a sidecar says, as ` (for PATH on SERVER)` for log lines.
pub fn describe_target(about: &serde_json::Map<String, serde_json::Value>) -> String {
    let text = |key: &str| about.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    match (text("path").or_else(|| text("name")), text("server")) {
        (Some(path), Some(server)) => format!(" (for {path} on {server})"),
        (Some(path), None) => format!(" (for {path})"),
        _ => String::new(),
    }
}

/// The key of a journal record that says the order of the closes: larger is later (see
/// [`next_sequence`]).
pub const SEQUENCE_KEY: &str = "sequence";

/// The key of a journal record that names the file it is of, whatever its place then: one
/// file's records share it through renames (see [`new_file_identity`]).
pub const FILE_KEY: &str = "file";

/// A name for a file written through the mount, unique across mounts: the pid and a number
/// larger than every one this process gave (see [`next_sequence`]).
pub fn new_file_identity() -> String {
    format!("{}-{}", std::process::id(), next_sequence())
}

/// The last sequence number given, or found in a dead mount's records (see [`next_sequence`]).
static LAST_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A number larger than every one this process gave before or found in a dead mount's records,
/// and, unless the clock went back, than every one a mount gave before it: the time in
/// nanoseconds, or one more than the last.
fn next_sequence() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let previous = LAST_SEQUENCE
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(0);
    now.max(previous + 1)
}

/// Which file of the server a journal record's upload goes to: records that share a key are
/// closes of one file. A new file's record has two once its first upload made its item (an
/// early upload, `made_item_id`): the later closes' records name the item, or still the folder
/// and the name when they were written before the item was made.
fn file_keys(about: &About) -> Vec<String> {
    let text = |key: &str| about.get(key).and_then(|v| v.as_str());
    let id = |key: &str| about.get(key).and_then(serde_json::Value::as_i64);
    let Some(server) = text("server") else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    match text("kind") {
        Some("new_item") => {
            if let (Some(folder), Some(name)) = (id("folder_id"), text("name")) {
                keys.push(format!("{server} folder {folder} {name}"));
            }
            if let Some(item) = id(MADE_ITEM_KEY) {
                keys.push(format!("{server} item {item}"));
            }
        }
        Some("revision") => keys.extend(id("item_id").map(|item| format!("{server} item {item}"))),
        Some("bitstream" | "new_bitstream") => {
            if let (Some(item), Some(name)) = (id("item_id"), text("name")) {
                keys.push(format!("{server} item {item} file {name}"));
            }
        }
        _ => {}
    }
    keys
}

/// Of the pending uploads a dead mount left, the newest close of each file, and the older
/// ones. A close clears the records of the file's older content (they are never sent after
/// it), without a sync: after a power cut such a record may be back, and sending it, after
/// the newest or not at all in order, could leave the older content as the file's. Records
/// without a sequence (an older midasfs) count as older than those with one, then by their
/// spool files' names (the dead mount's pid, then the number it counted up).
///
/// Two steps: records that name one file ([`FILE_KEY`]) are that file's, wherever each says
/// it goes (it may have been renamed between them). Then records that go to one place are
/// one file's: content closed there later replaced what was closed there before (a new file
/// made under the name of one removed or renamed away, the records of an older midasfs).
fn newest_per_file(pending: Vec<Resumable>) -> (Vec<Resumable>, Vec<Resumable>) {
    let by_file = |r: &Resumable| {
        let text = |key: &str| r.about.get(key).and_then(|v| v.as_str());
        let server = text("server").unwrap_or_default();
        text(FILE_KEY).map_or_else(Vec::new, |file| vec![format!("{server} file {file}")])
    };
    let (kept, mut older) = newest_by(pending, by_file);
    let (kept, by_place) = newest_by(kept, |r| file_keys(&r.about));
    older.extend(by_place);
    (kept, older)
}

/// Of `pending`, the newest of each group of records that share a key of `keys_of`, directly
/// or through others (a union-find), and the others.
fn newest_by(
    pending: Vec<Resumable>,
    keys_of: impl Fn(&Resumable) -> Vec<String>,
) -> (Vec<Resumable>, Vec<Resumable>) {
    let order = |r: &Resumable| {
        let sequence = r
            .about
            .get(SEQUENCE_KEY)
            .and_then(serde_json::Value::as_u64);
        let n = spool_name(&file_name(&r.path)).and_then(|(_, n)| n);
        (sequence, r.pid, n)
    };
    let mut group: Vec<usize> = (0..pending.len()).collect();
    fn root(group: &mut [usize], mut at: usize) -> usize {
        while group[at] != at {
            group[at] = group[group[at]];
            at = group[at];
        }
        at
    }
    let mut first_with: HashMap<String, usize> = HashMap::new();
    for (at, resumable) in pending.iter().enumerate() {
        for key in keys_of(resumable) {
            match first_with.get(&key) {
                Some(&other) => {
                    let (a, b) = (root(&mut group, at), root(&mut group, other));
                    group[a] = b;
                }
                None => {
                    first_with.insert(key, at);
                }
            }
        }
    }
    let mut newest_of: HashMap<usize, usize> = HashMap::new();
    for at in 0..pending.len() {
        let file = root(&mut group, at);
        match newest_of.get(&file) {
            Some(&best) if order(&pending[best]) >= order(&pending[at]) => {}
            _ => {
                newest_of.insert(file, at);
            }
        }
    }
    let newest: std::collections::HashSet<usize> = newest_of.into_values().collect();
    let (mut kept, mut older) = (Vec::new(), Vec::new());
    for (at, resumable) in pending.into_iter().enumerate() {
        if newest.contains(&at) {
            kept.push(resumable);
        } else {
            older.push(resumable);
        }
    }
    (kept, older)
}

/// The pid and the number of a spool file's name, `<pid>-<n>.spool` (see [`Spool::new_path`]);
/// None for a name of another kind (sidecars, files of other programs).
fn spool_name(name: &str) -> Option<(i32, Option<u64>)> {
    let (pid, n) = name.strip_suffix(SUFFIX)?.split_once('-')?;
    Some((pid.parse().ok()?, n.parse().ok()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| "file".to_owned(), |n| n.to_string_lossy().into_owned())
}

/// `<path>.target`.
pub fn sidecar_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(SIDECAR);
    PathBuf::from(name)
}

/// Adds `key` to the sidecar of `path` (e.g. the item an upload made, for a later mount to
/// remove if this one dies).
pub fn add_to_sidecar(path: &Path, key: &str, value: serde_json::Value) {
    let _one_writer = sidecar_writes(path);
    let mut about = read_sidecar(path);
    about.insert(key.to_owned(), value);
    if let Err(err) = write_sidecar(path, &about, false) {
        log::debug!("{}: writing its sidecar: {err}", path.display());
    }
}

/// What the sidecar of `path` says (empty if there is none or it is unreadable).
pub fn read_sidecar(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    std::fs::read(sidecar_of(path))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// The journal record of an upload still due of the spool file `path`, as the next mount reads
/// it: its sidecar, with the record of its extended attribute over it (a record in the sidecar
/// alone on a filesystem without them); None if no upload is due (or the attribute is torn).
pub fn pending_record(path: &Path) -> Option<About> {
    let mut about = read_sidecar(path);
    about.extend(read_record(path).ok()?.unwrap_or_default());
    (about.get(JOURNAL_KEY).and_then(|v| v.as_str()) == Some(JOURNAL_PENDING)).then_some(about)
}

/// The write-back journal record of the spool file `path` (its [`RECORD_XATTR`]): None if it
/// has none, an error if it cannot be read or is not a JSON object.
pub fn read_record(path: &Path) -> Result<Option<About>, String> {
    let bytes = match get_xattr(path, RECORD_XATTR) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Ok(None),
        Err(err) => return Err(err.to_string()),
    };
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(record)) => Ok(Some(record)),
        Ok(_) => Err("not a JSON object".into()),
        Err(err) => Err(format!("{} bytes of invalid JSON: {err}", bytes.len())),
    }
}

fn c_path(path: &Path) -> std::io::Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)
}

/// The value of the extended attribute `name` of `path`; None if it has none (or the
/// filesystem has no extended attributes).
fn get_xattr(path: &Path, name: &CStr) -> std::io::Result<Option<Vec<u8>>> {
    let c_path = c_path(path)?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: both strings are NUL-terminated; buf is valid for buf.len() bytes.
        let n = unsafe {
            libc::getxattr(
                c_path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
}

/// Sets the extended attribute `name` of the open `file` to `value`, replacing it whole.
pub(in crate::fs) fn set_xattr(file: &File, name: &CStr, value: &[u8]) -> std::io::Result<()> {
    // SAFETY: the name is NUL-terminated; value is valid for value.len() bytes.
    let rc = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Removes the journal record of `path`, if it has one.
fn remove_record(path: &Path) {
    let Ok(c_path) = c_path(path) else {
        return;
    };
    // SAFETY: both strings are NUL-terminated.
    let rc = unsafe { libc::removexattr(c_path.as_ptr(), RECORD_XATTR.as_ptr()) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if !matches!(
            err.raw_os_error(),
            Some(libc::ENODATA) | Some(libc::ENOTSUP)
        ) {
            log::debug!("{}: removing its write-back record: {err}", path.display());
        }
    }
}

/// `fsync` of a directory: the names made in it survive a power cut.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    count_sync();
    File::open(dir)?.sync_all()
}

/// `fsync` (or `fdatasync`, `data_only`) of a spool file.
fn sync_file(file: &File, data_only: bool) -> std::io::Result<()> {
    count_sync();
    if data_only {
        file.sync_data()
    } else {
        file.sync_all()
    }
}

#[cfg(test)]
thread_local! {
    /// The syncs this thread made (tests count those of a close).
    static SYNCS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn count_sync() {
    #[cfg(test)]
    SYNCS.with(|syncs| syncs.set(syncs.get() + 1));
}

fn sidecar_text(about: &serde_json::Map<String, serde_json::Value>) -> std::io::Result<String> {
    let mut text = serde_json::to_string_pretty(about).map_err(std::io::Error::other)?;
    text.push('\n');
    Ok(text)
}

/// Held by whoever writes a sidecar, across its read when the write keeps what it read: one
/// writer at a time, so that none loses another's keys (the item an upload made, a journal
/// record).
/// (Striped by the path: a journal record's write holds it across an `fsync`.)
static SIDECAR_WRITES: [Mutex<()>; 16] = [const { Mutex::new(()) }; 16];

fn sidecar_writes(path: &Path) -> std::sync::MutexGuard<'static, ()> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut hasher);
    let stripe = (hasher.finish() % SIDECAR_WRITES.len() as u64) as usize;
    SIDECAR_WRITES[stripe]
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Writes the sidecar of `path` whole, into a new file renamed over it: a reader, or a mount
/// that dies meanwhile, finds the old sidecar or the new one, never a part of one (with
/// write-back the sidecar may be the journal record). `sync`: the new file's data reaches the
/// disk before the rename, for a record that must survive a power cut (the caller syncs the
/// directory after).
fn write_sidecar(
    path: &Path,
    about: &serde_json::Map<String, serde_json::Value>,
    sync: bool,
) -> std::io::Result<()> {
    let text = sidecar_text(about)?;
    let sidecar = sidecar_of(path);
    // Unique: two threads may describe one file at once.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let mut fresh = sidecar.as_os_str().to_owned();
    fresh.push(format!(
        ".{}{UNFINISHED}",
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let fresh = PathBuf::from(fresh);
    // It names the user's files and where they go: the user's alone, like the spool file.
    let written = crate::private::write(&fresh, text.as_bytes())
        .and_then(|()| match sync {
            true => sync_file(&File::open(&fresh)?, true),
            false => Ok(()),
        })
        .and_then(|()| std::fs::rename(&fresh, &sidecar));
    if written.is_err() {
        let _ = std::fs::remove_file(&fresh);
    }
    written
}

/// Moves (or, across filesystems, copies) `path` into the recovery directory under a name made
/// of `name`, and its sidecar, with `about`, beside it. On failure nothing moved: the file is
/// still at `path`.
pub fn move_to_recovery(
    path: &Path,
    recovery: &Path,
    name: &str,
    about: &serde_json::Map<String, serde_json::Value>,
) -> std::io::Result<PathBuf> {
    crate::private::dir(recovery)?;
    let target = unique_recovery_path(recovery, name);
    // (The recovered file's sidecar is new: written in place, so that no unfinished sidecar
    // is ever left among the recovered files.)
    match std::fs::rename(path, &target) {
        Ok(()) => {}
        Err(err) if err.raw_os_error() == Some(libc::EXDEV) => {
            let copied = std::fs::copy(path, &target)
                .and_then(|_| File::open(&target))
                .and_then(|file| {
                    crate::private::file(&file, &target)?;
                    file.sync_all()
                });
            if let Err(err) = copied {
                let _ = std::fs::remove_file(&target);
                return Err(err);
            }
            if let Err(err) = std::fs::remove_file(path) {
                log::debug!("removing {} after copying it: {err}", path.display());
            }
        }
        Err(err) => return Err(err),
    }
    // A recovered file is nobody's upload any more.
    remove_record(&target);
    let written = sidecar_text(about)
        .and_then(|text| crate::private::write(&sidecar_of(&target), text.as_bytes()));
    if let Err(err) = written {
        log::warn!(
            "{}: could not write what it is ({err}): it was {}",
            target.display(),
            serde_json::Value::Object(about.clone())
        );
    }
    let _ = std::fs::remove_file(sidecar_of(path));
    Ok(target)
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn io_error(doing: &str, path: &Path, err: &std::io::Error) -> FsError {
    FsError::new(
        err.raw_os_error().map_or(Kind::Io, Kind::Local),
        format!("{doing} {}: {err}", path.display()),
    )
}

/// `<recovery>/<unix seconds>-<pid>-<n>-<name>`, a name no other recovered file has. A name too
/// long for that is shortened (its start, a hash of it, its extension); the sidecar keeps it.
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
        let prefix = format!("{secs}-{}-{n}-", std::process::id());
        let fitted = fit_name(&safe, RECOVERED_NAME_MAX.saturating_sub(prefix.len()));
        let path = recovery.join(format!("{prefix}{fitted}"));
        if !path.exists() {
            return path;
        }
    }
}

/// `name` if it has at most `room` bytes; else its start, `~`, a hash of the whole name and
/// its extension (if short), in `room` bytes.
fn fit_name(name: &str, room: usize) -> String {
    if name.len() <= room {
        return name.to_owned();
    }
    let hash = &hex(&Md5::digest(name.as_bytes()))[..12];
    let ext = name
        .rsplit_once('.')
        .map(|(_, ext)| ext)
        .filter(|ext| !ext.is_empty() && ext.len() <= 16)
        .map_or_else(String::new, |ext| format!(".{ext}"));
    let mut keep = room.saturating_sub(hash.len() + 1 + ext.len());
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}~{hash}{ext}", &name[..keep])
}

/// The MD5 of the bytes written so far, in order from the start.
enum RunningMd5 {
    Inline(Md5),
    /// Past [`INLINE_HASH_BYTES`]: hashed from the spool file, behind the writes.
    Behind(Behind),
    /// No thread could be made for it.
    Failed,
}

/// A thread that hashes a spool file's bytes from the file itself, as far as they are
/// written, at the lowest CPU priority: writes never wait for it (nothing is copied or queued
/// for it), and on a busy machine it uses only CPU time nobody else wants. A file that goes on
/// to be sent early stops it, often before it did much: that MD5 is never needed. A file
/// written on past that point without being sent early needs it at close (an overwrite's
/// dedup question): a thread at normal priority takes over from there. A digest takes the
/// state and hashes what the threads have not reached yet itself.
struct Behind {
    shared: Arc<BehindShared>,
    /// The spool file, for the bytes a digest hashes itself.
    file: File,
    /// A thread at normal priority hashes now.
    promoted: bool,
}

struct BehindShared {
    state: Mutex<BehindState>,
    wake: std::sync::Condvar,
}

struct BehindState {
    /// The MD5 of bytes `[0, done)`; taken by the thread while it hashes a chunk.
    md5: Option<Md5>,
    done: u64,
    /// Bytes `[0, target)` are written, to be hashed.
    target: u64,
    /// A digest is being made: the thread starts no chunk.
    paused: bool,
    /// The file is gone or no longer written in order: the threads end.
    stop: bool,
    /// The niced thread ends: one at normal priority has taken over.
    niced_retired: bool,
    /// A read failed: no digest (it is computed from the file when needed).
    failed: bool,
}

/// The most the hashing thread reads at once.
const BEHIND_CHUNK: usize = 1 << 20;
/// A file written on from here without being sent early (which stops its hashing) will need
/// its MD5: it is hashed at normal priority from then on.
const HASH_AT_FULL_PRIORITY: u64 = super::early::EARLY_MIN_SIZE;

impl BehindShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, BehindState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Behind {
    /// Hashes `[done, target)` of `file` onwards from `md5`, the MD5 of `[0, done)`.
    fn start(file: &File, md5: Md5, done: u64, target: u64) -> std::io::Result<Behind> {
        let shared = Arc::new(BehindShared {
            state: Mutex::new(BehindState {
                md5: Some(md5),
                done,
                target,
                paused: false,
                stop: false,
                niced_retired: false,
                failed: false,
            }),
            wake: std::sync::Condvar::new(),
        });
        let own = file.try_clone()?;
        spawn_hasher(&shared, file, true)?;
        Ok(Behind {
            shared,
            file: own,
            promoted: false,
        })
    }

    /// Bytes `[0, target)` are written; `from` is where the last write began.
    fn advance(&mut self, from: u64, target: u64) {
        if !self.promoted && from >= HASH_AT_FULL_PRIORITY {
            // The file was not sent early when it reached the size for it.
            match spawn_hasher(&self.shared, &self.file, false) {
                Ok(()) => self.shared.lock().niced_retired = true,
                Err(err) => log::debug!("no thread to hash a spool file at full priority: {err}"),
            }
            self.promoted = true;
        }
        self.shared.lock().target = target;
        self.shared.wake.notify_all();
    }

    /// The MD5 of everything written so far: what the thread has not hashed yet is hashed
    /// here, and the thread goes on from there.
    fn digest(&self) -> Option<String> {
        let mut state = self.shared.lock();
        state.paused = true;
        while state.md5.is_none() && !state.failed {
            state = self
                .shared
                .wake
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        let digest = (|| {
            if state.failed {
                return None;
            }
            let mut md5 = state.md5.clone()?;
            let mut buf = vec![0; BEHIND_CHUNK];
            let (mut at, target) = (state.done, state.target);
            while at < target {
                let want = usize::try_from(target - at)
                    .unwrap_or(BEHIND_CHUNK)
                    .min(BEHIND_CHUNK);
                self.file.read_exact_at(&mut buf[..want], at).ok()?;
                md5.update(&buf[..want]);
                at += want as u64;
            }
            state.md5 = Some(md5.clone());
            state.done = target;
            Some(hex(&md5.finalize()))
        })();
        state.paused = false;
        drop(state);
        self.shared.wake.notify_all();
        digest
    }
}

impl Drop for Behind {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
    }
}

/// Marks the hashing as failed if a thread panics, which may take the state with it, so
/// that a digest never waits for it in vain.
struct EndsBehind<'a>(&'a BehindShared);

impl Drop for EndsBehind<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        if std::thread::panicking() && state.md5.is_none() {
            state.failed = true;
        }
        drop(state);
        self.0.wake.notify_all();
    }
}

/// Starts a hashing thread of a [`Behind`], at the lowest priority if `niced`.
fn spawn_hasher(shared: &Arc<BehindShared>, file: &File, niced: bool) -> std::io::Result<()> {
    let reader = file.try_clone()?;
    let shared = Arc::clone(shared);
    std::thread::Builder::new()
        .name("spool-md5".into())
        .spawn(move || {
            let _ends = EndsBehind(&shared);
            hash_behind(&shared, &reader, niced);
        })?;
    Ok(())
}

/// A hashing thread of a [`Behind`]. Two may run for a moment (the niced one and the one that
/// takes over): whichever holds the state hashes the next chunk.
fn hash_behind(shared: &BehindShared, file: &File, niced: bool) {
    if niced {
        // The nice value is a thread's own on Linux: only this thread yields.
        // SAFETY: a plain syscall about the calling thread.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    }
    // Smaller steps at the lowest priority: a digest waits for the step under way.
    let step = if niced {
        BEHIND_CHUNK / 4
    } else {
        BEHIND_CHUNK
    };
    let mut buf = vec![0; step];
    loop {
        let (mut md5, at, want) = {
            let mut state = shared.lock();
            loop {
                if state.stop || (niced && state.niced_retired) {
                    return;
                }
                // Without the state, the other thread is hashing a chunk.
                if !state.paused && state.done < state.target && state.md5.is_some() {
                    break;
                }
                state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            let want = usize::try_from(state.target - state.done)
                .unwrap_or(step)
                .min(step);
            let Some(md5) = state.md5.take() else { return };
            (md5, state.done, want)
        };
        let read = file.read_exact_at(&mut buf[..want], at);
        if read.is_ok() {
            md5.update(&buf[..want]);
        }
        let mut state = shared.lock();
        state.md5 = Some(md5);
        match read {
            Ok(()) => state.done = at + want as u64,
            Err(_) => state.failed = true,
        }
        drop(state);
        // A digest may wait for the state.
        shared.wake.notify_all();
        if read.is_err() {
            return;
        }
    }
}

impl RunningMd5 {
    fn new() -> RunningMd5 {
        RunningMd5::Inline(Md5::new())
    }

    /// Adds `data`, which ends at offset `end` of `file` and is written there already.
    fn update(&mut self, file: &File, data: &[u8], end: u64) {
        match self {
            RunningMd5::Inline(md5) if end <= INLINE_HASH_BYTES => md5.update(data),
            RunningMd5::Inline(md5) => {
                let md5 = std::mem::take(md5);
                let done = end - data.len() as u64;
                match Behind::start(file, md5, done, end) {
                    Ok(behind) => *self = RunningMd5::Behind(behind),
                    Err(err) => {
                        // Never set: the checksum is computed from the file when needed.
                        log::warn!("no thread for a spool file's MD5: {err}");
                        *self = RunningMd5::Failed;
                    }
                }
            }
            RunningMd5::Behind(behind) => behind.advance(end - data.len() as u64, end),
            RunningMd5::Failed => {}
        }
    }

    /// Lower-case hex; None if the hashing failed.
    fn digest(&self) -> Option<String> {
        match self {
            RunningMd5::Inline(md5) => Some(hex(&md5.clone().finalize())),
            RunningMd5::Behind(behind) => behind.digest(),
            RunningMd5::Failed => None,
        }
    }
}

/// One file being written. Dropping it deletes the file (and its sidecar), unless it was moved
/// to recovery or holds data that is nowhere else ([`SpoolFile::keep`]).
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
    /// Holds data that is neither on the server nor in the recovery directory: never deleted.
    unsaved: bool,
    /// The file's name survives a power cut already (a spare: see the module's documentation).
    name_durable: bool,
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
        if data.is_empty() {
            // As pwrite(2): writing nothing past the end does not make the file longer.
            return Ok(());
        }
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
                hasher.update(&self.file, data, end);
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

    /// Records where the data is going, in the sidecar (see the module's documentation).
    pub fn describe(&self, about: &serde_json::Map<String, serde_json::Value>) {
        let _one_writer = sidecar_writes(&self.path);
        if let Err(err) = write_sidecar(&self.path, about, false) {
            log::debug!("{}: writing its sidecar: {err}", self.path.display());
        }
    }

    /// Makes the content and `about` (the journal record: the upload is due) durable before it
    /// returns. A file whose name is durable already gets the record as an extended attribute
    /// and ONE `fsync` (two if its writes were out of order); else, or if the filesystem has no
    /// extended attributes, the record goes into the sidecar, and the file, the sidecar and
    /// the directory are synced. See the module's documentation for why that is enough.
    pub fn journal(&self, about: &About) -> FsResult<()> {
        let mut about = about.clone();
        about.insert(SEQUENCE_KEY.into(), next_sequence().into());
        let about = &about;
        if self.name_durable {
            let mut record = about.clone();
            record.insert("size".into(), self.size.into());
            match self.running_md5() {
                Some(md5) => {
                    record.insert("md5".into(), md5.into());
                }
                // Nothing to tell a record written ahead of the data from one written after:
                // the data first.
                None => {
                    sync_file(&self.file, true).map_err(|e| io_error("syncing", &self.path, &e))?
                }
            }
            let text = serde_json::to_vec(&record).map_err(|e| {
                FsError::new(
                    Kind::Io,
                    format!("the journal record of {}: {e}", self.path.display()),
                )
            })?;
            match set_xattr(&self.file, RECORD_XATTR, &text) {
                Ok(()) => {
                    return sync_file(&self.file, false)
                        .map_err(|e| io_error("syncing", &self.path, &e));
                }
                Err(err) => log::debug!(
                    "{}: no journal record in an extended attribute ({err}): in the sidecar",
                    self.path.display()
                ),
            }
        }
        sync_file(&self.file, true).map_err(|e| io_error("syncing", &self.path, &e))?;
        {
            let _one_writer = sidecar_writes(&self.path);
            // The item an early upload of this new file made stays known (in the extended
            // attributes' case the sidecar keeps it beside the record).
            let mut about = about.clone();
            if about.get("kind").and_then(|v| v.as_str()) == Some("new_item") {
                if let Some(made) = read_sidecar(&self.path).remove(MADE_ITEM_KEY) {
                    about.entry(MADE_ITEM_KEY).or_insert(made);
                }
            }
            write_sidecar(&self.path, &about, true)
                .map_err(|e| io_error("writing the journal record of", &self.path, &e))?;
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        sync_dir(dir).map_err(|e| io_error("syncing", dir, &e))
    }

    /// Whether the file's journal record says all that `about` says (its sequence aside): no
    /// need to write it again.
    pub fn record_says(&self, about: &About) -> bool {
        pending_record(&self.path).is_some_and(|record| {
            about
                .iter()
                .all(|(key, value)| key == SEQUENCE_KEY || record.get(key) == Some(value))
        })
    }

    /// Whether the file's journal record, of an upload still due, is in its sidecar (a
    /// filesystem without extended attributes: see [`SpoolFile::journal`]).
    pub fn record_in_sidecar(&self) -> bool {
        read_sidecar(&self.path)
            .get(JOURNAL_KEY)
            .and_then(|v| v.as_str())
            == Some(JOURNAL_PENDING)
    }

    /// Removes the file's journal record (its upload is done, or nobody wants it), without a
    /// sync: a record that comes back after a power cut makes the next mount check the server,
    /// which holds the content already, and send nothing (or keep the file in `recovery/`); one
    /// of older content than another record of the file is not sent ([`newest_per_file`]).
    pub fn clear_record(&self) {
        if self.name_durable {
            remove_record(&self.path);
        }
        // A record in the sidecar (a filesystem without extended attributes).
        let _one_writer = sidecar_writes(&self.path);
        let mut about = read_sidecar(&self.path);
        if about.remove(JOURNAL_KEY).is_some() {
            if let Err(err) = write_sidecar(&self.path, &about, false) {
                log::debug!("{}: writing its sidecar: {err}", self.path.display());
            }
        }
    }

    /// The file holds data that is nowhere else (it could not be saved nor moved to the
    /// recovery directory): dropping it keeps it, for the next mount to move to recovery.
    pub fn keep(&mut self) {
        self.unsaved = true;
    }

    /// Moves the file into the recovery directory (it stays open); returns where it went.
    /// `name` is the file's intended name, kept at the end of the recovered file's name
    /// (shortened if need be); `about` goes into its sidecar. On failure the file stays where it
    /// was.
    pub fn recover(
        &mut self,
        recovery: &Path,
        name: &str,
        about: &serde_json::Map<String, serde_json::Value>,
    ) -> FsResult<PathBuf> {
        if self.recovered {
            return Ok(self.path.clone());
        }
        let target = move_to_recovery(&self.path, recovery, name, about)
            .map_err(|e| io_error("moving to the recovery directory", &self.path, &e))?;
        // A copy (across filesystems) is another file: go on with it.
        match OpenOptions::new().read(true).write(true).open(&target) {
            Ok(file) => self.file = file,
            Err(err) => log::debug!("reopening {}: {err}", target.display()),
        }
        self.path = target;
        self.recovered = true;
        Ok(self.path.clone())
    }

    /// After a successful upload of a recovered file: it is saved, so it leaves the recovery
    /// directory again (deleted on drop like any spool file).
    pub fn saved(&mut self) {
        self.recovered = false;
        self.unsaved = false;
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        self.budget.give_back(self.size);
        if !self.recovered && !self.unsaved {
            if let Err(err) = std::fs::remove_file(&self.path) {
                log::debug!("removing spool file {}: {err}", self.path.display());
            }
            let _ = std::fs::remove_file(sidecar_of(&self.path));
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
    use std::os::unix::fs::MetadataExt;

    fn spool(dir: &Path, max: u64) -> Spool {
        Spool::new(&SpoolConfig {
            dir: dir.to_owned(),
            max_bytes: max,
            keep_free: 0,
        })
    }

    /// A spool in `dir` whose writes leave `keep_free` bytes free on its disk, with no cap of its
    /// own.
    fn keeping_free(dir: &Path, keep_free: u64) -> Spool {
        Spool::new(&SpoolConfig {
            dir: dir.to_owned(),
            max_bytes: u64::MAX,
            keep_free,
        })
    }

    /// The refusal of a write for the disk's free space, of which nothing is kept.
    #[track_caller]
    fn assert_refused_for_the_disk(file: &SpoolFile, result: FsResult<()>) {
        let err = result.expect_err("refused");
        assert_eq!(err.kind, Kind::NoSpace, "{err}");
        assert!(
            err.to_string().contains("the disk under the spool"),
            "{err}"
        );
        assert_eq!(file.len(), 0, "nothing of the refused write is kept");
    }

    #[test]
    fn writes_stop_before_the_disk_under_the_spool_is_full() {
        // Other processes fill and free the disk meanwhile, by gigabytes: its free space is
        // known only to be between nothing and its size, so every write here is decided the
        // same way anywhere in that range.
        let dir = tempfile::tempdir().unwrap();
        let (disk_size, _) = crate::fs::statfs::disk_space(dir.path()).unwrap();
        // Keeping the whole disk free: even 16 MiB, which it has room for, are refused.
        let keeps_all = keeping_free(&dir.path().join("all"), disk_size);
        let mut refused = keeps_all.create().unwrap();
        let result = refused.write_at(0, &vec![1u8; 16 << 20]);
        assert_refused_for_the_disk(&refused, result);
        // Keeping 16 MiB free: 16 MiB fit (on a disk with 32 MiB free); a file reaching past
        // the end of the disk does not.
        let keeps_some = keeping_free(&dir.path().join("some"), 16 << 20);
        let mut small = keeps_some.create().unwrap();
        small.write_at(0, &vec![1u8; 16 << 20]).unwrap();
        let mut large = keeps_some.create().unwrap();
        let result = large.write_at(disk_size, b"past the end of the disk");
        assert_refused_for_the_disk(&large, result);
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
    fn a_large_file_rewritten_behind_its_hash_has_no_running_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool(dir.path(), 1 << 30);
        let mut file = spool.create().unwrap();
        let chunk = vec![7u8; 1 << 20];
        for i in 0..4 {
            file.write_at(i << 20, &chunk).unwrap();
        }
        assert!(matches!(file.hasher, Some(RunningMd5::Behind(_))));
        // Whether or not the thread has hashed that far yet.
        file.write_at(5, b"changed").unwrap();
        assert_eq!(file.running_md5(), None);
        assert_eq!(file.len(), 4 << 20);
    }

    #[test]
    fn a_file_written_on_past_the_early_size_is_hashed_at_full_priority_and_agrees() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool(dir.path(), 1 << 30);
        let mut file = spool.create().unwrap();
        let chunk: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8).collect();
        let mut offset = 0;
        while offset < HASH_AT_FULL_PRIORITY + (2 << 20) {
            file.write_at(offset, &chunk).unwrap();
            offset += chunk.len() as u64;
        }
        assert!(matches!(
            &file.hasher,
            Some(RunningMd5::Behind(Behind { promoted: true, .. }))
        ));
        assert_eq!(file.running_md5(), Some(md5_of_file(file.path()).unwrap()));
        file.write_at(offset, b"tail").unwrap();
        assert_eq!(file.running_md5(), Some(md5_of_file(file.path()).unwrap()));
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
            assert!(matches!(file.hasher, Some(RunningMd5::Behind(_))));
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
        assert_eq!(b.write_at(0, b"abc").unwrap_err().errno(), libc::ENOSPC);
        // Overwriting inside the file needs no room.
        a.write_at(0, b"xx").unwrap();
        assert_eq!(a.set_len(20).unwrap_err().errno(), libc::ENOSPC);
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
        let at = kept
            .recover(&spool.recovery_dir(), "notes.txt", &Default::default())
            .unwrap();
        kept.write_at(8, b"!").unwrap();
        drop(kept);
        assert!(at.starts_with(spool.recovery_dir()));
        assert!(at.to_string_lossy().ends_with("notes.txt"));
        assert_eq!(std::fs::read(&at).unwrap(), b"precious!");
    }

    #[test]
    fn recovered_names_always_fit_and_the_sidecar_keeps_the_whole_name() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool(dir.path(), 1 << 20);
        let name = format!("{}.csv", "é".repeat(200));
        let mut file = spool.create().unwrap();
        file.write_at(0, b"data").unwrap();
        let mut about = serde_json::Map::new();
        about.insert("name".into(), name.clone().into());
        let at = file.recover(&spool.recovery_dir(), &name, &about).unwrap();
        let fitted = at.file_name().unwrap().to_str().unwrap();
        assert!(fitted.len() <= RECOVERED_NAME_MAX, "{fitted}");
        assert!(
            fitted.ends_with(".csv") && fitted.contains("éé"),
            "{fitted}"
        );
        assert_eq!(read_sidecar(&at)["name"], name.as_str());
        assert_eq!(std::fs::read(&at).unwrap(), b"data");
    }

    #[test]
    fn a_kept_file_is_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool(dir.path(), 1 << 20);
        let mut file = spool.create().unwrap();
        file.write_at(0, b"only copy").unwrap();
        file.keep();
        let path = file.path().to_owned();
        drop(file);
        assert_eq!(std::fs::read(path).unwrap(), b"only copy");
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
            .map(|e| e.path())
            .filter(|p| !p.to_string_lossy().ends_with(SIDECAR))
            .collect();
        assert_eq!(rescued.len(), 1);
        assert_eq!(std::fs::read(&rescued[0]).unwrap(), b"orphan");
        assert!(read_sidecar(&rescued[0])["reason"]
            .as_str()
            .unwrap()
            .contains("pid 99999999"));
    }

    fn syncs() -> usize {
        SYNCS.with(std::cell::Cell::get)
    }

    /// A spool of a write-back mount: its files' names are made durable ahead.
    fn durable_spool(dir: &Path) -> Spool {
        let spool = spool(dir, 1 << 20);
        spool.keep_names_durable();
        spool
    }

    fn pending_record(name: &str) -> About {
        let mut about = About::new();
        about.insert("server".into(), "http://midas.example".into());
        about.insert("name".into(), name.into());
        about.insert("folder_id".into(), 7.into());
        about.insert("kind".into(), "new_item".into());
        about.insert(JOURNAL_KEY.into(), JOURNAL_PENDING.into());
        about
    }

    /// Moves `file`'s spool file to a name of a process that does not exist, as if the mount
    /// that wrote it had died; returns the new path.
    fn as_if_dead(file: SpoolFile, dir: &Path, n: u32) -> PathBuf {
        let dead = dir.join(format!("99999999-{n}.spool"));
        std::fs::rename(file.path(), &dead).unwrap();
        let _ = std::fs::remove_file(sidecar_of(file.path()));
        // Its name is gone: dropping it deletes nothing.
        drop(file);
        dead
    }

    #[test]
    fn a_write_back_close_syncs_once_and_its_record_lives_in_the_spool_file() {
        let dir = tempfile::tempdir().unwrap();
        let spool = durable_spool(dir.path());
        let before = syncs();
        let mut file = spool.create().unwrap();
        assert_eq!(syncs() - before, 1, "one directory sync for the spares");
        let spares = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(spares, SPARES, "made ahead, the first one handed out");
        for _ in 1..SPARES {
            drop(spool.create().unwrap());
        }
        assert_eq!(syncs() - before, 1, "the spares made ahead needed no more");
        file.write_at(0, b"durable").unwrap();
        let before = syncs();
        file.journal(&pending_record("a.txt")).unwrap();
        assert_eq!(syncs() - before, 1, "one fsync per close");
        assert!(!sidecar_of(file.path()).exists(), "no second file to sync");
        let record = read_record(file.path()).unwrap().expect("a record");
        assert_eq!(record[JOURNAL_KEY], JOURNAL_PENDING);
        assert_eq!(record["kind"], "new_item");
        assert_eq!(record["size"], 7);
        assert_eq!(record["md5"], md5_of_file(file.path()).unwrap().as_str());
        file.clear_record();
        assert_eq!(read_record(file.path()).unwrap(), None);
    }

    #[test]
    fn writes_out_of_order_sync_the_data_before_the_record_which_then_has_no_md5() {
        let dir = tempfile::tempdir().unwrap();
        let spool = durable_spool(dir.path());
        let mut file = spool.create().unwrap();
        file.write_at(4, b"tail").unwrap();
        file.write_at(0, b"head").unwrap();
        let before = syncs();
        file.journal(&pending_record("b.txt")).unwrap();
        assert_eq!(syncs() - before, 2);
        let record = read_record(file.path()).unwrap().unwrap();
        assert_eq!(record["size"], 8);
        assert!(record.get("md5").is_none(), "{record:?}");
    }

    #[test]
    fn without_durable_names_the_record_goes_into_the_synced_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool(dir.path(), 1 << 20);
        let mut file = spool.create().unwrap();
        file.write_at(0, b"x").unwrap();
        let before = syncs();
        file.journal(&pending_record("c.txt")).unwrap();
        assert_eq!(syncs() - before, 3, "file, sidecar, directory");
        assert_eq!(read_record(file.path()).unwrap(), None);
        assert_eq!(read_sidecar(file.path())[JOURNAL_KEY], JOURNAL_PENDING);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no spares"
        );
    }

    #[test]
    fn the_next_mount_resumes_a_file_from_its_record_alone() {
        let dir = tempfile::tempdir().unwrap();
        let spool = durable_spool(dir.path());
        let mut file = spool.create().unwrap();
        file.write_at(0, b"closed, not uploaded").unwrap();
        file.journal(&pending_record("d.txt")).unwrap();
        as_if_dead(file, dir.path(), 1);
        drop(spool);
        let next = durable_spool(dir.path());
        let resumable = next.take_resumable();
        assert_eq!(resumable.len(), 1);
        assert_eq!(resumable[0].pid, 99999999);
        assert_eq!(resumable[0].about["name"], "d.txt");
        assert_eq!(resumable[0].about["size"], 20);
        assert_eq!(
            std::fs::read(&resumable[0].path).unwrap(),
            b"closed, not uploaded"
        );
        assert!(
            read_record(&resumable[0].path).unwrap().is_some(),
            "the claimed file keeps its record, should this mount die too"
        );
    }

    #[test]
    fn after_a_power_cut_the_next_mount_resumes_the_newest_close_of_each_file_alone() {
        let record = |name: &str, extra: &[(&str, serde_json::Value)]| {
            let mut about = pending_record(name);
            for (key, value) in extra {
                about.insert((*key).into(), value.clone());
            }
            about
        };
        // In the order of the closes: each file's older content kept its record (a close
        // clears them without a sync, and a power cut can undo that). The names of the dead
        // mount's files say the opposite order.
        let closes = [
            ("a.txt", b"a, first".as_slice(), record("a.txt", &[])),
            ("b.txt", b"b, alone", record("b.txt", &[])),
            // a new file whose first upload made item 42, and its next close: a revision of it
            (
                "c.txt",
                b"c, first",
                record("c.txt", &[("made_item_id", 42.into())]),
            ),
            (
                "c.txt",
                b"c, second",
                record(
                    "c.txt",
                    &[("kind", "revision".into()), ("item_id", 42.into())],
                ),
            ),
            // a new file whose first upload made item 43, while its next close was recorded
            // as a new file still
            (
                "d.txt",
                b"d, first",
                record("d.txt", &[("made_item_id", 43.into())]),
            ),
            ("d.txt", b"d, second", record("d.txt", &[])),
            ("a.txt", b"a, second", record("a.txt", &[])),
        ];
        let closes = closes.map(|(_, content, about)| (content, about));
        let (resumed, kept) = after_a_power_cut(&closes);
        let resumed: Vec<&[u8]> = resumed.iter().map(|(c, _)| c.as_slice()).collect();
        assert_eq!(
            resumed,
            [&b"a, second"[..], b"b, alone", b"c, second", b"d, second"],
            "what is sent"
        );
        let contents: Vec<&[u8]> = kept.iter().map(|(c, _)| c.as_slice()).collect();
        assert_eq!(contents, [&b"a, first"[..], b"c, first", b"d, first"]);
        assert!(kept[0].1.contains("a later close"), "{}", kept[0].1);
    }

    #[test]
    fn a_mount_numbers_its_closes_after_those_a_dead_mount_left_whatever_the_clock_says() {
        let dir = tempfile::tempdir().unwrap();
        let spool = durable_spool(dir.path());
        let mut file = spool.create().unwrap();
        file.write_at(0, b"from the future").unwrap();
        file.journal(&pending_record("f.txt")).unwrap();
        // as if the clock had been far ahead when it was written
        let mut record = read_record(file.path()).unwrap().unwrap();
        let ahead = next_sequence() + 3_600_000_000_000;
        record.insert(SEQUENCE_KEY.into(), ahead.into());
        set_xattr(
            &file.file,
            RECORD_XATTR,
            &serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
        as_if_dead(file, dir.path(), 1);
        drop(spool);
        let next = durable_spool(dir.path());
        assert_eq!(next.take_resumable().len(), 1);
        assert!(next_sequence() > ahead);
    }

    #[test]
    fn a_dead_mounts_unused_spares_go_and_a_torn_record_keeps_its_file_in_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let spool = durable_spool(dir.path());
        let mut torn = spool.create().unwrap();
        torn.write_at(0, b"half").unwrap();
        let text = serde_json::to_vec(&pending_record("e.txt")).unwrap();
        set_xattr(&torn.file, RECORD_XATTR, &text[..text.len() / 2]).unwrap();
        as_if_dead(torn, dir.path(), 1);
        let spare = spool.create().unwrap();
        as_if_dead(spare, dir.path(), 2);
        drop(spool);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "the spool's own unused spares went with it"
        );
        let next = spool_at(dir.path());
        assert!(
            next.take_resumable().is_empty(),
            "a torn record sends nothing"
        );
        assert!(
            !dir.path().join("99999999-2.spool").exists(),
            "the unused spare"
        );
        let recovered: Vec<PathBuf> = std::fs::read_dir(next.recovery_dir())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| !p.to_string_lossy().ends_with(SIDECAR))
            .collect();
        assert_eq!(recovered.len(), 1, "{recovered:?}");
        assert_eq!(std::fs::read(&recovered[0]).unwrap(), b"half");
        assert_eq!(read_record(&recovered[0]).unwrap(), None);
        let reason = read_sidecar(&recovered[0])["reason"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(reason.contains("record is unreadable"), "{reason}");
    }

    #[test]
    fn after_a_power_cut_a_renamed_files_older_close_is_not_sent_to_its_old_name() {
        let record = |name: &str, file: &str| {
            let mut about = pending_record(name);
            about.insert(FILE_KEY.into(), file.into());
            about
        };
        // In the order of the closes, each older record back after a power cut:
        let closes = [
            // a file closed, closed again, and renamed (its record rewritten) ...
            (b"e, first".as_slice(), record("e.txt", "100-1")),
            (b"e, second", record("e2.txt", "100-1")),
            // ... and a new file made under the name it left
            (b"new e", record("e.txt", "100-2")),
            // a file closed, closed again and renamed, with nothing at its old name after it
            (b"h, first", record("h.txt", "100-3")),
            (b"h, second", record("h2.txt", "100-3")),
        ];
        let (resumed, kept) = after_a_power_cut(&closes);
        let resumed: Vec<(&[u8], &str)> = resumed
            .iter()
            .map(|(c, about)| (c.as_slice(), about["name"].as_str().unwrap()))
            .collect();
        assert_eq!(
            resumed,
            [
                (&b"e, second"[..], "e2.txt"),
                (b"h, second", "h2.txt"),
                (b"new e", "e.txt")
            ],
            "what is sent, and where"
        );
        let kept: Vec<&[u8]> = kept.iter().map(|(c, _)| c.as_slice()).collect();
        assert_eq!(kept, [&b"e, first"[..], b"h, first"]);
    }

    /// Journals `closes` (content, record), in order, as a dead mount's files that a power cut
    /// left with all their records, and starts the next mount's spool: what it resumes
    /// (content, record) and what it keeps in recovery (content, reason), each sorted.
    #[allow(clippy::type_complexity)]
    fn after_a_power_cut(
        closes: &[(&[u8], About)],
    ) -> (Vec<(Vec<u8>, About)>, Vec<(Vec<u8>, String)>) {
        let dir = tempfile::tempdir().unwrap();
        let spool = durable_spool(dir.path());
        // The names of the dead mount's files say the opposite order.
        let count = closes.len() as u32;
        for (n, (content, about)) in closes.iter().enumerate() {
            let mut file = spool.create().unwrap();
            file.write_at(0, content).unwrap();
            file.journal(about).unwrap();
            as_if_dead(file, dir.path(), count - n as u32);
        }
        drop(spool);
        let next = durable_spool(dir.path());
        let mut resumed: Vec<(Vec<u8>, About)> = next
            .take_resumable()
            .into_iter()
            .map(|r| (std::fs::read(&r.path).unwrap(), r.about))
            .collect();
        resumed.sort_by(|a, b| a.0.cmp(&b.0));
        let mut kept: Vec<(Vec<u8>, String)> = std::fs::read_dir(next.recovery_dir())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| !p.to_string_lossy().ends_with(SIDECAR))
            .map(|p| {
                let reason = read_sidecar(&p)["reason"].as_str().unwrap().to_owned();
                (std::fs::read(&p).unwrap(), reason)
            })
            .collect();
        kept.sort();
        (resumed, kept)
    }

    #[test]
    fn mounts_sharing_a_spool_rescue_a_dead_mounts_files_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let spool = durable_spool(dir.path());
        let mut file = spool.create().unwrap();
        file.write_at(0, b"due").unwrap();
        file.journal(&pending_record("g.txt")).unwrap();
        let dead = as_if_dead(file, dir.path(), 5);
        drop(spool);
        // Another mount is rescuing.
        let held = File::open(dir.path()).unwrap();
        // SAFETY: flock on a descriptor the test owns.
        assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
        let path = dir.path().to_owned();
        let next = std::thread::spawn(move || durable_spool(&path).take_resumable().len());
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(dead.exists(), "claimed while another mount rescues");
        drop(held);
        assert_eq!(next.join().unwrap(), 1, "claimed once the other is done");
        assert!(!dead.exists());
    }

    #[test]
    fn a_record_that_says_it_all_already_is_not_written_again() {
        for durable in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let spool = if durable {
                durable_spool(dir.path())
            } else {
                spool(dir.path(), 1 << 20)
            };
            let mut file = spool.create().unwrap();
            file.write_at(0, b"x").unwrap();
            let about = pending_record("h.txt");
            assert!(!file.record_says(&about), "no record yet");
            file.journal(&about).unwrap();
            assert!(file.record_says(&about));
            let mut moved = about.clone();
            moved.insert("name".into(), "i.txt".into());
            assert!(!file.record_says(&moved), "another place");
            file.clear_record();
            assert!(!file.record_says(&about), "cleared");
        }
    }

    #[test]
    fn a_sidecar_is_replaced_whole_and_one_a_dead_mount_began_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool(dir.path(), 1 << 20);
        let mut file = spool.create().unwrap();
        file.write_at(0, b"due").unwrap();
        file.journal(&pending_record("f.txt")).unwrap();
        // A rewrite of the sidecar replaces it: it never exists in part, for a reader or
        // for the next mount.
        let sidecar = sidecar_of(file.path());
        let before = std::fs::metadata(&sidecar).unwrap().ino();
        add_to_sidecar(file.path(), "made_item_id", 12.into());
        assert_ne!(std::fs::metadata(&sidecar).unwrap().ino(), before);
        assert_eq!(read_sidecar(file.path())["made_item_id"], 12);
        let dead = dir.path().join("99999999-3.spool");
        std::fs::rename(file.path(), &dead).unwrap();
        std::fs::rename(&sidecar, sidecar_of(&dead)).unwrap();
        drop(file);
        // The dead mount was writing its sidecar anew when it died.
        let unfinished = dir
            .path()
            .join(format!("99999999-3.spool{SIDECAR}.4{UNFINISHED}"));
        std::fs::write(&unfinished, b"{\"serv").unwrap();
        drop(spool);
        let next = spool_at(dir.path());
        let resumed = next.take_resumable();
        assert_eq!(resumed.len(), 1, "resumed by its whole record");
        assert_eq!(resumed[0].about["name"], "f.txt");
        assert!(!unfinished.exists(), "the part a dead mount wrote");
    }

    fn spool_at(dir: &Path) -> Spool {
        spool(dir, 1 << 20)
    }
}
