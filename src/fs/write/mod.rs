//! Writing files through the mount: the write-side state of a mount ([`Writes`]) and of each
//! file open for writing, and the rules all of `write/` follows. One concern per file:
//! [`handles`] (open, write, close), [`save`] (when a file goes to the server), [`upload`] (how),
//! [`early`] (while it is written), [`links`] (content the server linked instead of receiving
//! it), [`replace`] (saves by rename), [`overlay`] (what listings show before the server knows),
//! [`recovery`] (nothing lost), [`spool`] (the local copies), [`writeback`] (uploads after the
//! close returned, with `--write-back`).
//!
//! Rules:
//! - A file open for writing is a local spool file; its content goes to Midas when the file is
//!   closed (flush) or fsync'ed, and the upload's error is what `close`/`fsync` return. Only the
//!   close by the process that opened the handle counts (see [`MidasFs::flush`]).
//! - A new file becomes an item holding one bitstream of the same name, as `pydas.upload` makes:
//!   `item.create` → `upload.generatetoken` (with the MD5: a known content is not sent again) →
//!   `upload.perform` into the head revision. Until then it is a local entry (`NodeKind::NewFile`).
//!   One that grows past 64 MiB in order is sent while it is written instead (`early`).
//! - Overwriting an existing file uploads a NEW revision without checksum (Midas keeps the
//!   history, and the dedup path, which silently does nothing when the name exists, is never
//!   taken). A bitstream of an item directory is replaced in the head revision instead.
//! - All handles of one inode share one spool file: they see each other's writes, and the
//!   close that finds the file dirty uploads what is there (the last close uploads last). An
//!   upload sends the content as its close saw it: a change meanwhile goes into a new spool
//!   file ([`Sends`]).
//! - A failed upload keeps the data: the spool file moves to `<spool-dir>/recovery/` and a
//!   warning names it and its intended place. A file whose write failed (ENOSPC) is never
//!   uploaded half-written.
//! - A rename over an existing entry renames first and deletes the old target after, so a
//!   failure in between leaves two entries rather than none; but a file just made through the
//!   mount renamed over a single-file item (a save by rename) becomes a new revision of that
//!   item instead (`replace`).

mod aliases;
pub mod early;
mod handles;
mod links;
mod overlay;
mod recovery;
mod replace;
mod save;
pub(in crate::fs) mod set_times;
pub mod spool;
mod upload;
pub mod writeback;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::fs::error::Kind;
use crate::fs::inode::{BitstreamInfo, ItemInfo};
use crate::fs::{FsError, FsResult, MidasFs};
use crate::midas::types::Id;
use crate::midas::{self, codes};
use early::EarlyUpload;
use spool::{Spool, SpoolConfig, SpoolFile};

/// The write-side state of a mount.
pub struct Writes {
    pub(in crate::fs) spool: Spool,
    /// Files open for writing, by the inode they were opened through.
    pub(in crate::fs) files: Mutex<HashMap<u64, Arc<WriteFile>>>,
    /// Every open handle of the files open for writing.
    pub(in crate::fs) handles: Mutex<HashMap<u64, WriteHandle>>,
    /// Numbers for new files' inodes.
    pub(in crate::fs) next_local: AtomicU64,
    /// Modification times set through the mount, by canonical inode (Midas has no such field;
    /// `rsync -a` needs to see the times it set), while they can matter (see [`set_times`]).
    pub(in crate::fs) mtimes: Mutex<set_times::SetTimes>,
    /// Where the times of files are kept from one mount to the next (see [`set_times`]).
    times_file: std::path::PathBuf,
    /// The [`set_times::SetTimes::changes`] that the times file holds; held while it is
    /// written, so that one save at a time writes it.
    times_saved: Mutex<u64>,
    /// Items created for uploads that failed, whose removal failed too (server gone): hidden
    /// from listings, and removed at the next upload.
    pub(in crate::fs) orphans: Mutex<Vec<Id>>,
    /// Items this mount made of new files, until they are renamed or removed: a save by rename
    /// (a temporary file renamed over the file it replaces) turns such an item into a new
    /// revision of the item it replaces.
    pub(in crate::fs) fresh: Mutex<HashMap<Id, std::time::Instant>>,
    /// Items renamed to `NAME~` within a folder, by (folder inode, old name): vim renames the
    /// file it saves to `NAME~`, writes a new `NAME`, and removes `NAME~`; that removal makes the
    /// new content a revision of the renamed item instead.
    pub(in crate::fs) renamed_away: Mutex<HashMap<(u64, String), Id>>,
    /// Background uploads after close, with `--write-back`.
    pub(in crate::fs) write_back: Option<writeback::WriteBack>,
    /// Inodes the kernel holds that stand for a file under another number (a new file's after
    /// its upload, the renamed file's after a save by rename), until the kernel forgets them: a
    /// save through the file's own inode shows in them too (see `save::show_saved`).
    pub(in crate::fs) aliases: Mutex<aliases::Aliases>,
}

impl Writes {
    /// Writes spooled as `config` says; the times an earlier mount kept in `times_file` are
    /// taken in, and this mount's are kept there.
    pub fn new(config: &SpoolConfig, times_file: std::path::PathBuf) -> Writes {
        let mut mtimes = set_times::SetTimes::default();
        mtimes.load(&times_file);
        Writes {
            spool: Spool::new(config),
            files: Mutex::default(),
            handles: Mutex::default(),
            next_local: AtomicU64::new(1),
            mtimes: Mutex::new(mtimes),
            times_file,
            times_saved: Mutex::new(0),
            orphans: Mutex::default(),
            fresh: Mutex::default(),
            renamed_away: Mutex::default(),
            write_back: None,
            aliases: Mutex::default(),
        }
    }

    pub(in crate::fs) fn files(&self) -> MutexGuard<'_, HashMap<u64, Arc<WriteFile>>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A snapshot of the files open for writing, by inode.
    pub(in crate::fs) fn open_files(&self) -> Vec<(u64, Arc<WriteFile>)> {
        self.files()
            .iter()
            .map(|(ino, file)| (*ino, Arc::clone(file)))
            .collect()
    }

    pub(in crate::fs) fn handles(&self) -> MutexGuard<'_, HashMap<u64, WriteHandle>> {
        self.handles.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(in crate::fs) fn orphans(&self) -> MutexGuard<'_, Vec<Id>> {
        self.orphans.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(in crate::fs) fn fresh(&self) -> MutexGuard<'_, HashMap<Id, std::time::Instant>> {
        self.fresh.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long ago this mount made item `id` of a new file, if it is not renamed or removed.
    pub(in crate::fs) fn fresh_for(&self, id: Id) -> Option<std::time::Duration> {
        self.fresh().get(&id).map(std::time::Instant::elapsed)
    }

    pub(in crate::fs) fn renamed_away(&self) -> MutexGuard<'_, HashMap<(u64, String), Id>> {
        self.renamed_away.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(in crate::fs) fn mtimes(&self) -> MutexGuard<'_, set_times::SetTimes> {
        self.mtimes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the times of files set through the mount for the next mount (see [`set_times`]);
    /// when `only_if_changed`, only if they changed since the last write.
    pub(in crate::fs) fn save_times(&self, only_if_changed: bool) {
        let mut saved = self.times_saved.lock().unwrap_or_else(|p| p.into_inner());
        let (to_keep, changes) = {
            let mtimes = self.mtimes();
            if only_if_changed && mtimes.changes() == *saved {
                return;
            }
            (mtimes.to_keep(), mtimes.changes())
        };
        match to_keep.save(&self.times_file) {
            Ok(()) => *saved = changes,
            Err(err) => log::warn!(
                "{}: the times set through the mount are not kept for the next mount: {err}",
                self.times_file.display()
            ),
        }
    }

    pub(in crate::fs) fn aliases(&self) -> MutexGuard<'_, aliases::Aliases> {
        self.aliases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kernel forgot inode `ino`.
    pub(in crate::fs) fn forget_alias(&self, ino: u64) {
        self.aliases().forget(ino);
    }

    /// The file handle `fh` writes, and the number it is kept under. Both looked at under the
    /// lock of the files, which `set_aside` renumbers a file's handles under.
    pub(in crate::fs) fn file_of_handle(&self, fh: u64) -> Option<(u64, Arc<WriteFile>)> {
        let files = self.files();
        let ino = self.handles().get(&fh)?.ino;
        let file = files.get(&ino).cloned()?;
        Some((ino, file))
    }

    /// Files open for writing or still uploading after their close, and the bytes they hold.
    pub fn in_flight(&self) -> (usize, u64) {
        (self.files().len(), self.spool.used_bytes())
    }

    pub fn recovery_dir(&self) -> std::path::PathBuf {
        self.spool.recovery_dir()
    }

    pub fn spool_dir(&self) -> &std::path::Path {
        self.spool.dir()
    }

    /// The modification time set through the mount for this canonical inode, if any.
    pub fn mtime_override(&self, canonical: u64) -> Option<SystemTime> {
        self.mtimes().get(canonical)
    }
}

/// A handle on a file open for writing.
pub(in crate::fs) struct WriteHandle {
    pub(in crate::fs) ino: u64,
    /// The process whose `close` of the handle uploads the file (see [`MidasFs::flush`]); none
    /// for a reader of a file being written.
    pub(in crate::fs) saver: Option<u32>,
}

/// One file open for writing.
pub(in crate::fs) struct WriteFile {
    /// Names the file in its journal records, whatever its place (see
    /// [`spool::new_file_identity`]).
    pub(in crate::fs) identity: String,
    pub(in crate::fs) data: Mutex<FileData>,
    /// One upload at a time per file.
    pub(in crate::fs) upload: Arc<tokio::sync::Mutex<()>>,
}

impl WriteFile {
    pub(in crate::fs) fn lock(&self) -> MutexGuard<'_, FileData> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `guard` (a caller's, taken on some file's upload) is the one on this file's.
    pub(in crate::fs) fn upload_held_by(
        &self,
        guard: Option<&tokio::sync::OwnedMutexGuard<()>>,
    ) -> bool {
        guard.is_some_and(|guard| {
            Arc::ptr_eq(tokio::sync::OwnedMutexGuard::mutex(guard), &self.upload)
        })
    }

    /// The number `self` is kept under among `files` (the map of the files open for writing):
    /// `likely`, when it still is, or whatever a save by rename renumbered it to.
    pub(in crate::fs) fn number_among(
        self: &Arc<Self>,
        files: &HashMap<u64, Arc<WriteFile>>,
        likely: Option<u64>,
    ) -> Option<u64> {
        if let Some(ino) = likely.filter(|ino| files.get(ino).is_some_and(|f| Arc::ptr_eq(f, self)))
        {
            return Some(ino);
        }
        files
            .iter()
            .find(|(_, open)| Arc::ptr_eq(open, self))
            .map(|(key, _)| *key)
    }
}

pub(in crate::fs) struct FileData {
    pub(in crate::fs) spool: SpoolFile,
    /// Changed since the last successful upload.
    pub(in crate::fs) dirty: bool,
    /// Removed while open: nothing is uploaded any more.
    pub(in crate::fs) unlinked: bool,
    /// A write failed (ENOSPC…): the content is incomplete, so it is never uploaded; closing
    /// returns this error and the data goes to the recovery directory.
    pub(in crate::fs) failed_write: Option<FsError>,
    pub(in crate::fs) handles: u32,
    pub(in crate::fs) target: Target,
    /// When the content last changed.
    pub(in crate::fs) mtime: SystemTime,
    /// The last upload of this open file was empty and made a revision (or the item) of its
    /// own: the next one replaces that empty bitstream in its revision. A shell redirection
    /// (`echo x > f`) closes a duplicate descriptor, so uploads, before the command writes;
    /// without this Midas would keep an empty revision before every such write.
    pub(in crate::fs) empty_upload: bool,
    /// A large new file's upload while it is written (see [`early`]).
    pub(in crate::fs) early: EarlyUpload,
    /// Uploads still to read `spool` as it is (see [`Sends`]).
    pub(in crate::fs) sends: Sends,
}

/// Each upload sends the content its close (or fsync) saw: a change while an upload of the
/// spool file is due or running goes into a new spool file (a copy, unless the change is a
/// truncation to zero), and the upload keeps the old one. Without this, a program that
/// rewrites a file right after closing it would change the bytes under the running upload
/// (which then fails, or stores a mix of both), and with write-back under one not yet begun.
#[derive(Default)]
pub(in crate::fs) struct Sends {
    /// A write-back close made the spool due for upload, and its save has not begun.
    pub(in crate::fs) due: bool,
    /// A save reads the spool (or `replaced_running`, once a change replaced it).
    pub(in crate::fs) running: bool,
    /// The spool file the running save reads, once a change replaced it.
    pub(in crate::fs) replaced_running: Option<SpoolFile>,
    /// Spool files that changes replaced while their write-back closes' uploads were due,
    /// oldest first: the saves of those closes send them, in order, before the current one.
    /// The first stays here while its save sends it.
    pub(in crate::fs) older: std::collections::VecDeque<Older>,
}

/// Content a change replaced while its upload was due (see [`Sends`]).
pub(in crate::fs) struct Older {
    pub(in crate::fs) spool: SpoolFile,
    /// The upload that sent the start of it while it was written, if one ran.
    pub(in crate::fs) early: EarlyUpload,
}

impl Sends {
    /// Every spool file that an upload still has to read, besides the current one.
    pub(in crate::fs) fn replaced(&self) -> impl Iterator<Item = &SpoolFile> {
        self.replaced_running
            .iter()
            .chain(self.older.iter().map(|older| &older.spool))
    }

    fn replaced_mut(&mut self) -> impl Iterator<Item = &mut SpoolFile> {
        self.replaced_running
            .iter_mut()
            .chain(self.older.iter_mut().map(|older| &mut older.spool))
    }
}

impl FileData {
    /// Cuts or extends the file's content to `size` bytes (a truncate): a change that its next
    /// save sends, and an early upload of the old content stops.
    pub(in crate::fs) fn resize(&mut self, spools: &Spool, size: u64) -> FsResult<()> {
        self.spool_to_change(spools, size)?.set_len(size)?;
        self.early.spoil();
        self.dirty = true;
        self.mtime = SystemTime::now();
        Ok(())
    }

    /// The spool file, ready for a change that keeps its first `keep` bytes (the rest may go):
    /// while an upload must still read the spool as it is, it is replaced by a new one that
    /// holds those bytes (see [`Sends`]).
    pub(in crate::fs) fn spool_to_change(
        &mut self,
        spools: &Spool,
        keep: u64,
    ) -> FsResult<&mut SpoolFile> {
        if self.sends.running || self.sends.due {
            let fresh = spools.copy_of(&self.spool, keep.min(self.spool.len()))?;
            let old = std::mem::replace(&mut self.spool, fresh);
            if self.sends.running {
                // The running save took the early upload already.
                self.sends.replaced_running = Some(old);
                self.sends.running = false;
            } else {
                // What was sent while it was written is the old file's; the new one is never
                // sent early (taking leaves `Off`).
                let early = self.early.take();
                self.sends.older.push_back(Older { spool: old, early });
            }
            self.sends.due = false;
        }
        Ok(&mut self.spool)
    }

    /// Keeps every spool file of the file, for the next mount (see [`SpoolFile::keep`]).
    pub(in crate::fs) fn keep_all(&mut self) {
        self.spool.keep();
        self.sends.replaced_mut().for_each(SpoolFile::keep);
    }

    /// The spool file holding the newest content a write-back close made due, if any.
    pub(in crate::fs) fn newest_due(&self) -> Option<&SpoolFile> {
        if self.sends.due {
            return Some(&self.spool);
        }
        self.sends.older.back().map(|older| &older.spool)
    }
}

/// Where a file's content goes.
#[derive(Debug, Clone)]
pub(in crate::fs) enum Target {
    /// Not on the server yet.
    New {
        /// Numbers the file's inode (`NodeKind::NewFile`).
        local: u64,
        parent_ino: u64,
        container: Container,
        /// The display name in the parent directory.
        name: String,
    },
    /// The single bitstream of an item shown as a file: a new revision.
    ItemFile { item: ItemInfo, parent_ino: u64 },
    /// One bitstream of an item directory: replaced in the head revision.
    Bitstream {
        item: ItemInfo,
        bitstream: BitstreamInfo,
        parent_ino: u64,
    },
}

impl Target {
    pub(in crate::fs) fn parent_ino(&self) -> u64 {
        match self {
            Target::New { parent_ino, .. }
            | Target::ItemFile { parent_ino, .. }
            | Target::Bitstream { parent_ino, .. } => *parent_ino,
        }
    }
}

/// What a directory is on the server, for making things in it.
#[derive(Debug, Clone)]
pub(in crate::fs) enum Container {
    Folder(Id),
    Item(ItemInfo),
}

/// How a failed server call becomes an error when it was a change. Midas says −151 for both
/// "missing" and "forbidden"; for a change to an object the caller could list, it is the right.
pub(in crate::fs) fn write_error(err: midas::Error) -> FsError {
    let kind = match &err {
        midas::Error::Api {
            code: codes::INVALID_POLICY,
            ..
        } => Kind::Denied,
        midas::Error::Api {
            code: codes::INVALID_PARAMETER,
            message,
            ..
        } if message.contains("already exists") => Kind::Exists,
        midas::Error::Api {
            code: codes::MODEL_ERROR,
            message,
            ..
        } if message.contains("already used") => Kind::Exists,
        _ => return FsError::from(err),
    };
    FsError::from_midas(kind, err)
}

pub(in crate::fs) fn read_only_error() -> FsError {
    FsError::new(Kind::ReadOnly, "the mount is read-only")
}

impl MidasFs {
    // ---- files ----

    // ---- attributes ----

    // ---- directories ----

    // ---- metadata ----
}
