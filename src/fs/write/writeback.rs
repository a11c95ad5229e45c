//! Write-back (`--write-back`, opt-in): a `close` returns once the file is durable in the spool
//! (its data and a journal record saying its upload is due, made durable by one `fsync` of the
//! spool file: see `spool` for why one is enough), and the upload runs in the background, a
//! bounded number at once.
//!
//! - The record: set at close (the close is counted as pending first), kept while another close
//!   of the file waits for its upload (rewritten for what that upload now is: a new file's next
//!   upload is a revision of the item the first made), removed when the last upload ended or
//!   the file was removed.
//! - Order per file: every upload of a file goes through its upload lock (`save`) and sends the
//!   spool as it is then, so a second close while the first upload waits or runs makes one more
//!   upload after it, of the newest content, or none when the first already sent it: never two
//!   revisions out of order.
//! - `fsync` of a file waits for its background uploads and returns the error of one that
//!   failed (once), then uploads what is still unsaved as without write-back. An fsync of a
//!   directory waits for every background upload and returns the first error. `syncfs`/`sync`
//!   never reach a FUSE daemon (the kernel sends FUSE_SYNCFS to virtiofs only).
//! - A failed upload (after the retries of `upload`) moves the data to the recovery directory,
//!   as without write-back, and is counted for `midasfs status`.
//! - Unmount waits for the background uploads (saying how many) up to a bound; if it gives up,
//!   the spool files and their journal records stay, and the next mount resumes them.
//! - A mount that finds spool files of a dead mount with a pending journal record claims them
//!   and uploads them (see `Spool::take_resumable`); the upload is idempotent: content the
//!   server holds already (the item a dead upload made, the head revision) is not sent again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

use super::early::EarlyUpload;
use super::spool::{self, Resumable, JOURNAL_KEY, JOURNAL_PENDING};
use super::upload::{md5_of, NewFile};
use super::{Container, FileData, Sends, Target, WriteFile};
use crate::fs::error::Kind;
use crate::fs::inode::{ItemInfo, NodeData, NodeKind, ROOT};
use crate::fs::tasks::Work;
use crate::fs::{bitstream_info, names, Entry, FsError, FsResult, MidasFs};
use crate::midas::types::{Id, Item};

/// How write-back runs.
#[derive(Debug, Clone)]
pub struct WriteBackConfig {
    /// Background uploads at once.
    pub uploads: usize,
    /// How long unmount waits for the background uploads before it leaves them to the next
    /// mount.
    pub unmount_wait: Duration,
}

/// The background uploads of a mount with write-back.
pub struct WriteBack {
    config: WriteBackConfig,
    slots: Arc<Semaphore>,
    /// Closed files whose background upload has not ended, by inode.
    pending: Mutex<HashMap<u64, usize>>,
    /// Woken when a background upload ends.
    settled: Notify,
    /// Errors of background uploads no fsync returned yet, by inode.
    errors: Mutex<HashMap<u64, FsError>>,
    failed: AtomicUsize,
    last_error: Mutex<Option<String>>,
    /// Unmount gave up waiting: the uploads left stay in the spool for the next mount.
    abandoned: AtomicBool,
}

/// What `midasfs status` shows of write-back.
#[derive(Debug, Clone, Default)]
pub struct WriteBackStatus {
    pub pending: usize,
    pub failed: usize,
    pub last_error: Option<String>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl WriteBack {
    pub fn new(config: WriteBackConfig) -> WriteBack {
        WriteBack {
            slots: Arc::new(Semaphore::new(config.uploads.max(1))),
            config,
            pending: Mutex::default(),
            settled: Notify::new(),
            errors: Mutex::default(),
            failed: AtomicUsize::new(0),
            last_error: Mutex::default(),
            abandoned: AtomicBool::new(false),
        }
    }

    pub fn status(&self) -> WriteBackStatus {
        WriteBackStatus {
            pending: lock(&self.pending).values().sum(),
            failed: self.failed.load(Ordering::Acquire),
            last_error: lock(&self.last_error).clone(),
        }
    }

    pub fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }

    fn start(&self, ino: u64) {
        *lock(&self.pending).entry(ino).or_default() += 1;
    }

    fn end(&self, ino: u64, result: FsResult<()>) {
        {
            let mut pending = lock(&self.pending);
            if let Some(count) = pending.get_mut(&ino) {
                *count -= 1;
                if *count == 0 {
                    pending.remove(&ino);
                }
            }
            // Recorded before the count drops, as seen by a waiter.
            match result {
                Ok(()) => {}
                Err(err) => self.failed(Some(ino), err),
            }
        }
        self.settled.notify_waiters();
    }

    fn failed(&self, ino: Option<u64>, err: FsError) {
        self.failed.fetch_add(1, Ordering::AcqRel);
        *lock(&self.last_error) = Some(err.to_string());
        if let Some(ino) = ino {
            lock(&self.errors).insert(ino, err);
        }
    }

    /// Waits until `done` holds of the pending counts, or `limit` passed; true if it holds.
    async fn wait(&self, limit: Duration, done: impl Fn(&HashMap<u64, usize>) -> bool) -> bool {
        let wait = async {
            loop {
                let settled = self.settled.notified();
                tokio::pin!(settled);
                settled.as_mut().enable();
                if done(&lock(&self.pending)) {
                    return;
                }
                settled.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

/// What a journal record says the file's target was, for a later mount.
fn kind_of(target: &Target) -> &'static str {
    match target {
        Target::New {
            container: Container::Folder(_),
            ..
        } => "new_item",
        Target::New {
            container: Container::Item(_),
            ..
        } => "new_bitstream",
        Target::ItemFile { .. } => "revision",
        Target::Bitstream { .. } => "bitstream",
    }
}

/// No bound for an fsync's wait: every request has its own timeout.
const NO_LIMIT: Duration = Duration::from_secs(365 * 24 * 3600);

impl MidasFs {
    /// Uploads in the background after close (`--write-back`).
    pub fn with_write_back(mut self, config: Option<WriteBackConfig>) -> MidasFs {
        if config.is_some() {
            self.writes.spool.keep_names_durable();
        }
        self.writes.write_back = config.map(WriteBack::new);
        self
    }

    pub fn write_back_status(&self) -> Option<WriteBackStatus> {
        self.writes.write_back.as_ref().map(WriteBack::status)
    }

    /// Unmount gave up on background uploads (they stay in the spool for the next mount).
    pub fn uploads_abandoned(&self) -> bool {
        self.writes
            .write_back
            .as_ref()
            .is_some_and(WriteBack::abandoned)
    }

    /// `close` by the process `closer`, or `fsync` (no closer), of handle `fh` from the kernel:
    /// with write-back as the module says, else [`MidasFs::flush`].
    pub async fn close_or_sync(self: &Arc<Self>, fh: u64, closer: Option<u32>) -> FsResult<()> {
        let Some(wb) = &self.writes.write_back else {
            return self.flush(fh, closer).await;
        };
        let saver = match self.writes.handles().get(&fh) {
            Some(handle) => handle.saver,
            None => return Ok(()),
        };
        let Some((ino, file)) = self.writes.file_of_handle(fh) else {
            return Ok(());
        };
        if closer.is_none() {
            self.settle_write_back(ino).await;
            if let Some(err) = lock(&wb.errors).remove(&ino) {
                return Err(err);
            }
            return self.save_through(ino, &file).await;
        }
        if closer != saver {
            return Ok(());
        }
        let (due, failed_write) = {
            let data = file.lock();
            (data.dirty && !data.unlinked, data.failed_write.is_some())
        };
        if failed_write {
            // Nothing to send: `save` keeps the data and says why, at once.
            return self.save_through(ino, &file).await;
        }
        if !due {
            return Ok(());
        }
        // Counted before the record is written: an upload of this file that ends meanwhile
        // sees this one coming and keeps the record (see `settle_record`).
        wb.start(ino);
        if let Err(err) = self.journal(ino, &file) {
            wb.end(ino, Ok(()));
            log::warn!(
                "{}: {err}; uploading it before the close returns",
                self.describe(ino)
            );
            return self.save_through(ino, &file).await;
        }
        let fs = Arc::clone(self);
        self.tasks.spawn(Work::Needed, async move {
            fs.upload_behind(ino, file).await;
        });
        Ok(())
    }

    /// Makes the file durable in the spool with a journal record of its pending upload.
    /// From then on, a change goes into a copy: this close's upload sends what it saw (see
    /// `Sends`). Older content whose upload is still due or running loses its record: should
    /// the mount die, the next one sends the newest content only, and never the older after it
    /// (not even when a power cut brought an older record back: the records' sequence numbers
    /// say which is the newest).
    fn journal(&self, ino: u64, file: &WriteFile) -> FsResult<()> {
        let mut data = file.lock();
        // Under the file's lock, like every change of its target: a rename meanwhile cannot
        // leave this record naming the old place.
        let about = self.journal_record(ino, &file.identity, &data.target);
        data.spool.journal(&about)?;
        data.sends.due = true;
        data.sends
            .replaced()
            .for_each(spool::SpoolFile::clear_record);
        Ok(())
    }

    /// Writes `about` as the journal record of the file's newest content due, which is where
    /// `journal` puts a close's record, unless the record says that already; false if no
    /// content is due.
    pub(in crate::fs) fn journal_newest_due(
        &self,
        ino: u64,
        data: &FileData,
        about: &spool::About,
    ) -> bool {
        let Some(due) = data.newest_due() else {
            return false;
        };
        if due.record_says(about) {
            return true;
        }
        if let Err(err) = due.journal(about) {
            log::warn!("{}: {err}", self.describe(ino));
        }
        true
    }

    /// The journal record of a pending upload of the file `identity` to `target` (read under
    /// the file's lock, held until the record is written).
    pub(in crate::fs) fn journal_record(
        &self,
        ino: u64,
        identity: &str,
        target: &Target,
    ) -> spool::About {
        let mut about = self.spool_about(ino, target);
        about.insert(JOURNAL_KEY.into(), JOURNAL_PENDING.into());
        about.insert("kind".into(), kind_of(target).into());
        about.insert(spool::FILE_KEY.into(), identity.into());
        about
    }

    /// After a background upload of the file succeeded: its journal record goes, unless
    /// another close of it is waiting for its own upload, whose record then says what that
    /// upload is now (a new file's next upload is a revision of the item this one made).
    fn settle_record(&self, ino: u64, file: &WriteFile, wb: &WriteBack) {
        let data = file.lock();
        let more = lock(&wb.pending).get(&ino).copied().unwrap_or(0) > 1;
        if more && !data.unlinked {
            let about = self.journal_record(ino, &file.identity, &data.target);
            if self.journal_newest_due(ino, &data, &about) {
                return;
            }
        }
        // The record, if any, is on the newest content due (see `journal`).
        match data.newest_due() {
            Some(due) => due.clear_record(),
            None => data.spool.clear_record(),
        }
    }

    /// One background upload of a closed file.
    async fn upload_behind(&self, ino: u64, file: Arc<WriteFile>) {
        let Some(wb) = &self.writes.write_back else {
            return;
        };
        let result = match Arc::clone(&wb.slots).acquire_owned().await {
            Ok(_slot) => self.save(ino, &file).await,
            Err(_) => Err(FsError::new(Kind::Io, "the upload queue is closed")),
        };
        if let Err(err) = &result {
            log::error!(
                "write-back: uploading {} failed: {err} (its data is in {})",
                self.describe(ino),
                self.writes.recovery_dir().display()
            );
        } else {
            if file.lock().unlinked {
                // Removed before its upload: no later mount may send it.
                self.describe_spool(ino, &file);
            }
            self.settle_record(ino, &file, wb);
        }
        wb.end(ino, result);
    }

    /// Waits for the background uploads of inode `ino` (none without write-back).
    pub(in crate::fs) async fn settle_write_back(&self, ino: u64) {
        if let Some(wb) = &self.writes.write_back {
            wb.wait(NO_LIMIT, |pending| !pending.contains_key(&ino))
                .await;
        }
    }

    /// An fsync of a directory: waits for every background upload; the first error that no
    /// fsync returned yet is the answer.
    pub async fn sync_uploads(&self) -> FsResult<()> {
        let Some(wb) = &self.writes.write_back else {
            return Ok(());
        };
        wb.wait(NO_LIMIT, HashMap::is_empty).await;
        let errors: Vec<FsError> = lock(&wb.errors).drain().map(|(_, err)| err).collect();
        match errors.into_iter().next() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// At unmount: waits for the background uploads, saying how many, up to the configured
    /// bound. False if it gave up: the files left keep their spool and journal record, for the
    /// next mount with this spool directory to resume.
    pub(in crate::fs) async fn finish_write_back(&self) -> bool {
        let Some(wb) = &self.writes.write_back else {
            return true;
        };
        let pending = wb.status().pending;
        if pending == 0 {
            return true;
        }
        log::warn!(
            "waiting for {pending} upload(s) to finish (at most {:?})…",
            wb.config.unmount_wait
        );
        if wb.wait(wb.config.unmount_wait, HashMap::is_empty).await {
            log::warn!("all uploads finished");
            return true;
        }
        wb.abandoned.store(true, Ordering::Release);
        let mut left = 0;
        for (_, file) in self.writes.open_files() {
            file.lock().keep_all();
            left += 1;
        }
        log::error!(
            "gave up waiting for {} upload(s) after {:?}: their data stays in {}, and the next \
             mount with this spool directory uploads it",
            wb.status().pending.max(left),
            wb.config.unmount_wait,
            self.writes.spool_dir().display()
        );
        false
    }

    /// At mount: uploads the files a dead mount had closed with write-back and not uploaded,
    /// in the background.
    pub fn resume_uploads(self: &Arc<Self>) {
        let left = self.writes.spool.take_resumable();
        if left.is_empty() {
            return;
        }
        let pids: std::collections::BTreeSet<i32> = left.iter().map(|r| r.pid).collect();
        log::warn!(
            "resuming {} upload(s) a previous midasfs (pid {pids:?}) left in the spool",
            left.len()
        );
        let slots = match &self.writes.write_back {
            Some(wb) => Arc::clone(&wb.slots),
            None => Arc::new(Semaphore::new(4)),
        };
        for resumable in left {
            let fs = Arc::clone(self);
            let slots = Arc::clone(&slots);
            match self.show_resumed(&resumable) {
                Some((ino, file)) => self.tasks.spawn(Work::Needed, async move {
                    let _slot = slots.acquire_owned().await;
                    fs.resume_shown(ino, file, resumable.about).await;
                }),
                None => self.tasks.spawn(Work::Needed, async move {
                    let _slot = slots.acquire_owned().await;
                    fs.resume_upload(resumable).await;
                }),
            }
        }
    }

    /// A resumed new file is shown in its folder from now on, as write-back shows a file still
    /// uploading (a listing of the folder may already hold the item the dead mount made, still
    /// empty: a directory): the spool file becomes the file's local copy, of its size, which
    /// reads read; its upload then goes as a close's would ([`MidasFs::save`]), and the file
    /// becomes the server's. None for what is not a new file in a folder of this server (a
    /// revision, a file of an item directory), which is uploaded as it is and shows once the
    /// server has it.
    fn show_resumed(&self, resumable: &Resumable) -> Option<(u64, Arc<WriteFile>)> {
        let about = &resumable.about;
        let text = |key: &str| about.get(key).and_then(|v| v.as_str());
        if text("kind") != Some("new_item") || text("server") != Some(self.client.base_url()) {
            return None;
        }
        let folder = about.get("folder_id").and_then(serde_json::Value::as_i64)?;
        let name = text("name").filter(|n| !n.is_empty())?.to_owned();
        let spool = match self.writes.spool.adopt(&resumable.path) {
            Ok(spool) => spool,
            Err(err) => {
                log::debug!("{}: {err}; uploading it unseen", resumable.path.display());
                return None;
            }
        };
        let parent_ino = NodeKind::Folder {
            id: folder,
            uuid: String::new(),
        }
        .ino(self.root_folder());
        let local = self.writes.next_local.fetch_add(1, Ordering::Relaxed);
        let kind = NodeKind::NewFile { local };
        let ino = kind.ino(None);
        let mtime = std::fs::metadata(&resumable.path)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| std::time::SystemTime::now());
        let identity = resumable
            .about
            .get(spool::FILE_KEY)
            .and_then(|v| v.as_str())
            .map_or_else(spool::new_file_identity, str::to_owned);
        let file = Arc::new(WriteFile {
            identity,
            data: Mutex::new(FileData {
                spool,
                // Nothing may send it before its checks (`resume_shown`) passed.
                dirty: false,
                unlinked: false,
                failed_write: None,
                handles: 0,
                target: Target::New {
                    local,
                    parent_ino,
                    container: Container::Folder(folder),
                    name: name.clone(),
                },
                mtime,
                empty_upload: false,
                early: EarlyUpload::Off,
                sends: Sends::default(),
            }),
            upload: Arc::default(),
        });
        self.writes.files().insert(ino, Arc::clone(&file));
        let entry = Entry {
            name: name.clone(),
            ino,
            data: NodeData {
                kind,
                mtime,
                writable: true,
                public: self.is_public(parent_ino),
            }
            .into(),
        };
        self.listings.patch(parent_ino, |entries| {
            entries.retain(|e| e.name != name);
            entries.push(entry);
        });
        Some((ino, file))
    }

    /// The upload of a resumed new file [`MidasFs::show_resumed`] shows.
    async fn resume_shown(&self, ino: u64, file: Arc<WriteFile>, about: spool::About) {
        let shown = spool::describe_target(&about);
        let path = file.lock().spool.path().to_owned();
        let checked = {
            // No other save (an unmount's, a reader's last close) may send it meanwhile.
            let _one_at_a_time = file.upload.lock().await;
            let checked = self.resume_check_new(&path, &about).await;
            match &checked {
                // On the server already: nothing to send.
                Ok(Some(_)) => {}
                // To be sent (unless removed meanwhile).
                Ok(None) => file.lock().dirty = true,
                // Never sent: it goes to the recovery directory.
                Err(err) => self.keep_unsaved(ino, &file, err),
            }
            checked
        };
        let result = match checked {
            Ok(Some((item, size))) => {
                let target = file.lock().target.clone();
                let revision = item.head().map_or(0, |h| h.revision);
                let name = match &target {
                    Target::New { name, .. } => name.clone(),
                    _ => names::to_display(&item.name),
                };
                let uploaded = self.saved_file(&item, revision, size, name);
                self.saved(ino, &file, &target, uploaded);
                Ok(())
            }
            Ok(None) => self.save(ino, &file).await,
            Err(err) => Err(err),
        };
        match result {
            Ok(()) => log::warn!("resumed upload done{shown}"),
            Err(err) => {
                log::error!("resumed upload failed{shown}: {err}");
                if let Some(wb) = &self.writes.write_back {
                    wb.failed(None, err);
                }
            }
        }
        // As after the last release of a file (`release_write`), unless a program has it open.
        let mut files = self.writes.files();
        let data = file.lock();
        if data.handles > 0 || !files.get(&ino).is_some_and(|f| Arc::ptr_eq(f, &file)) {
            return;
        }
        files.remove(&ino);
        if let Target::New { parent_ino, .. } = &data.target {
            let parent = *parent_ino;
            drop(data);
            drop(files);
            self.listings
                .patch(parent, |entries| entries.retain(|e| e.ino != ino));
        }
    }

    /// Whether a resumed new file may be sent: its data is what its record says, and the item
    /// the dead mount made does not hold it already (Some: the item and the size, when it
    /// does; an item it left empty is deleted).
    async fn resume_check_new(
        &self,
        path: &std::path::Path,
        about: &spool::About,
    ) -> FsResult<Option<(Item, u64)>> {
        let (size, md5) = self.resume_check_data(path, about).await?;
        let made = about
            .get(spool::MADE_ITEM_KEY)
            .and_then(serde_json::Value::as_i64);
        let name = about.get("name").and_then(|v| v.as_str()).unwrap_or("");
        let midas_name = names::to_midas(name);
        if let Some(made) = made {
            if let Ok(item) = self.client.item_get(made).await {
                let holds = item.head().is_some_and(|head| {
                    head.bitstreams
                        .iter()
                        .any(|b| b.name == midas_name && b.checksum == md5)
                });
                if holds {
                    return Ok(Some((item, size)));
                }
                if item.head().is_none_or(|h| h.bitstreams.is_empty()) {
                    self.delete_quietly(made).await;
                }
            }
        }
        Ok(None)
    }

    async fn resume_upload(&self, resumable: Resumable) {
        let Resumable {
            path, mut about, ..
        } = resumable;
        let shown = spool::describe_target(&about);
        match self.resume_send(&path, &about).await {
            Ok(()) => {
                log::warn!("resumed upload done{shown}");
                let _ = std::fs::remove_file(spool::sidecar_of(&path));
                let _ = std::fs::remove_file(&path);
            }
            Err(err) => {
                log::error!("resumed upload failed{shown}: {err}");
                if let Some(wb) = &self.writes.write_back {
                    wb.failed(None, err.clone());
                }
                about.remove(JOURNAL_KEY);
                about.insert("reason".into(), err.to_string().into());
                let name = about
                    .get("name")
                    .and_then(|v| v.as_str())
                    .unwrap_or("file")
                    .to_owned();
                let recovery = self.writes.recovery_dir();
                match spool::move_to_recovery(&path, &recovery, &name, &about) {
                    Ok(kept) => log::warn!("its data is kept in {}", kept.display()),
                    Err(move_err) => log::warn!(
                        "its data stays in {} (moving it to the recovery directory failed: \
                         {move_err})",
                        path.display()
                    ),
                }
            }
        }
    }

    /// The size and MD5 of a file a dead mount left, checked against its journal record (and
    /// that the record is for this server).
    async fn resume_check_data(
        &self,
        path: &std::path::Path,
        about: &spool::About,
    ) -> FsResult<(u64, String)> {
        let text = |key: &str| about.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        if text("server").as_deref() != Some(self.client.base_url()) {
            return Err(FsError::new(
                Kind::Invalid,
                "it was going to another server; upload it there by hand",
            ));
        }
        let size = std::fs::metadata(path)
            .map_err(|e| FsError::new(Kind::Io, format!("{}: {e}", path.display())))?
            .len();
        let md5 = md5_of(path).await?;
        let recorded_size = about.get("size").and_then(serde_json::Value::as_u64);
        let recorded_md5 = text("md5");
        if recorded_size.is_some_and(|s| s != size)
            || recorded_md5.as_ref().is_some_and(|m| *m != md5)
        {
            // The record reached the disk, not all the data it is for: never send that.
            return Err(FsError::new(
                Kind::Invalid,
                format!(
                    "its data did not all reach the disk before the crash (the file has {size} \
                     bytes, MD5 {md5}; its journal record says {} bytes, MD5 {})",
                    recorded_size.map_or_else(|| "?".to_owned(), |s| s.to_string()),
                    recorded_md5.as_deref().unwrap_or("?")
                ),
            ));
        }
        Ok((size, md5))
    }

    /// Sends a file a dead mount left, unless the server holds it already.
    async fn resume_send(&self, path: &std::path::Path, about: &spool::About) -> FsResult<()> {
        let text = |key: &str| about.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        let id = |key: &str| about.get(key).and_then(serde_json::Value::as_i64);
        let name = text("name").unwrap_or_default();
        let (size, md5) = self.resume_check_data(path, about).await?;
        let holds = |item: &Item, file_name: &str| {
            item.head().is_some_and(|head| {
                head.bitstreams
                    .iter()
                    .any(|b| b.name == file_name && b.checksum == md5)
            })
        };
        let midas_name = names::to_midas(&name);
        let missing = || FsError::new(Kind::Invalid, "its journal record is incomplete");
        match text("kind").as_deref() {
            Some("new_item") => {
                let folder = id("folder_id").ok_or_else(missing)?;
                if let Some(made) = id(spool::MADE_ITEM_KEY) {
                    if let Ok(item) = self.client.item_get(made).await {
                        if holds(&item, &midas_name) {
                            return Ok(());
                        }
                        if item.head().is_none_or(|h| h.bitstreams.is_empty()) {
                            self.delete_quietly(made).await;
                        }
                    }
                }
                let file = NewFile {
                    parent_ino: ROOT,
                    name: &name,
                    path,
                    size,
                    running_md5: Some(md5.clone()),
                };
                self.upload_new(&file, &Container::Folder(folder), None)
                    .await
                    .map(|_| ())
                    .map_err(|err| self.resume_error(about, err))
            }
            Some("new_bitstream") => {
                let item = self
                    .current_item(id("item_id").ok_or_else(missing)?)
                    .await?;
                if holds(&item.1, &midas_name) {
                    return Ok(());
                }
                let file = NewFile {
                    parent_ino: ROOT,
                    name: &name,
                    path,
                    size,
                    running_md5: Some(md5.clone()),
                };
                self.upload_new(&file, &Container::Item(item.0), None)
                    .await
                    .map(|_| ())
            }
            Some("revision") => {
                let (info, _) = self
                    .current_item(id("item_id").ok_or_else(missing)?)
                    .await?;
                // Content the head holds already makes no revision (see `upload_revision`).
                self.upload_revision(&info, path, size, Some(&md5), false)
                    .await
                    .map(|_| ())
            }
            Some("bitstream") => {
                let (info, item) = self
                    .current_item(id("item_id").ok_or_else(missing)?)
                    .await?;
                let old_id: Id = id("bitstream_id").ok_or_else(missing)?;
                let old = item
                    .head()
                    .and_then(|h| h.bitstreams.iter().find(|b| b.bitstream_id == old_id));
                match old {
                    Some(old) => self
                        .replace_bitstream(&info, &bitstream_info(old), path, size)
                        .await
                        .map(|_| ()),
                    // Replaced already by the dead mount's upload, if it holds this content.
                    None if holds(&item, &midas_name) => Ok(()),
                    None => Err(FsError::not_found(format!(
                        "the file it replaces (bitstream {old_id})"
                    ))),
                }
            }
            _ => Err(missing()),
        }
    }

    async fn current_item(&self, item_id: Id) -> FsResult<(ItemInfo, Item)> {
        let item = self.client.item_get(item_id).await?;
        let revision = item.head().map_or(0, |h| h.revision);
        Ok((ItemInfo::new(&item, revision), item))
    }

    fn resume_error(&self, about: &spool::About, err: FsError) -> FsError {
        if err.kind != Kind::Exists {
            return err;
        }
        let path = about.get("path").and_then(|v| v.as_str()).unwrap_or("?");
        FsError::new(
            Kind::Exists,
            format!("{path}: an item of that name exists on the server now"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::midas::fake::{FakeMidas, Fault};

    /// A write-back mount of the user's Public folder on the fake, uploading two at once.
    fn mount(midas: &Arc<FakeMidas>, spool: &std::path::Path) -> Arc<MidasFs> {
        let fs = crate::fs::fake_tests::fake_mount(midas, spool).with_write_back(Some(
            WriteBackConfig {
                uploads: 2,
                unmount_wait: Duration::from_secs(30),
            },
        ));
        Arc::new(fs)
    }

    /// Every upload slot of the mount: no background upload, and no check of a resumed file,
    /// starts until the permits are dropped.
    async fn hold_upload_slots(fs: &MidasFs) -> tokio::sync::OwnedSemaphorePermit {
        let wb = fs.writes.write_back.as_ref().expect("write-back");
        let all = u32::try_from(wb.config.uploads.max(1)).unwrap();
        Arc::clone(&wb.slots).acquire_many_owned(all).await.unwrap()
    }

    /// The kernel's release of a handle, which waits for the handle's file's upload.
    fn release(fs: &Arc<MidasFs>, fh: u64) -> tokio::task::JoinHandle<()> {
        let fs = Arc::clone(fs);
        tokio::spawn(async move { fs.release_write(fh).await })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_close_returns_before_a_refused_upload_whose_error_fsync_returns_once() {
        let midas = Arc::new(FakeMidas::new(Duration::from_millis(300)));
        let spool = tempfile::tempdir().unwrap();
        let fs = mount(&midas, spool.path());
        midas.fail_always("midas.upload.*", Fault::Http(503));
        let (_, fh) = fs.create(ROOT, "refused.txt", 42).unwrap();
        fs.write(fh, 0, b"keep me").unwrap();
        fs.close_or_sync(fh, Some(42))
            .await
            .expect("the close returns before the upload");
        let err = fs
            .close_or_sync(fh, None)
            .await
            .expect_err("fsync returns the upload's error");
        assert_eq!(err.errno(), libc::EIO, "{err}");
        release(&fs, fh).await.unwrap();
        let status = fs.write_back_status().unwrap();
        assert_eq!((status.pending, status.failed), (0, 1));
        assert!(status.last_error.is_some());
        let kept: Vec<_> = std::fs::read_dir(fs.status().recovery_dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| std::fs::read(e.path()).is_ok_and(|c| c == b"keep me"))
            .collect();
        assert_eq!(kept.len(), 1, "the data is in the recovery directory");
        assert!(midas
            .child_item(midas.public_folder(), "refused.txt")
            .is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closes_of_one_file_upload_in_order_while_the_first_is_still_running() {
        let midas = Arc::new(FakeMidas::new(Duration::from_millis(300)));
        let item = midas.add_file(midas.public_folder(), "order.txt", b"v0");
        let spool = tempfile::tempdir().unwrap();
        let fs = mount(&midas, spool.path());
        midas.fail_always(
            "midas.upload.perform",
            Fault::Delay(Duration::from_millis(500)),
        );
        let ino = fs.lookup(ROOT, "order.txt").await.unwrap().ino;
        let mut releases = Vec::new();
        for version in ["v1", "v2", "v3"] {
            let fh = fs.open_write(ino, true, 42).await.unwrap();
            fs.write(fh, 0, version.as_bytes()).unwrap();
            fs.close_or_sync(fh, Some(42)).await.unwrap();
            releases.push(release(&fs, fh));
        }
        assert!(
            fs.write_back_status().unwrap().pending > 0,
            "the closes returned before their uploads"
        );
        fs.sync_uploads().await.expect("every upload succeeds");
        for release in releases {
            release.await.unwrap();
        }
        assert_eq!(
            revision_contents(&midas, item),
            ["v0", "v1", "v2", "v3"],
            "each close's content, in order"
        );
        assert_eq!(midas.content(item).unwrap(), b"v3");
    }

    /// How many entries the mount's recovery directory holds (sidecars included).
    fn recovery_entries(fs: &MidasFs) -> usize {
        std::fs::read_dir(fs.status().recovery_dir).map_or(0, Iterator::count)
    }

    /// The contents of the item's revisions, oldest first, as text.
    fn revision_contents(midas: &FakeMidas, item: Id) -> Vec<String> {
        midas
            .revision_contents(item)
            .into_iter()
            .map(|c| String::from_utf8(c).unwrap())
            .collect()
    }

    /// Closes a rewrite of order.txt with `v1` and returns its handle once its upload waits
    /// in `generatetoken`, having taken what it sends.
    async fn upload_waiting(fs: &Arc<MidasFs>, midas: &FakeMidas) -> (u64, u64) {
        midas.fail_times(
            "midas.upload.generatetoken",
            1,
            Fault::Delay(Duration::from_millis(600)),
        );
        let ino = fs.lookup(ROOT, "order.txt").await.unwrap().ino;
        let fh = fs.open_write(ino, true, 42).await.unwrap();
        fs.write(fh, 0, b"v1").unwrap();
        fs.close_or_sync(fh, Some(42)).await.unwrap();
        while midas.count("midas.upload.generatetoken") == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (ino, fh)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rewrite_that_truncates_while_the_last_close_uploads_leaves_that_upload_whole() {
        let midas = Arc::new(FakeMidas::new(Duration::from_millis(10)));
        let item = midas.add_file(midas.public_folder(), "order.txt", b"v0");
        let spool = tempfile::tempdir().unwrap();
        let fs = mount(&midas, spool.path());
        let (ino, first) = upload_waiting(&fs, &midas).await;
        let second = fs.open_write(ino, true, 42).await.unwrap();
        // The first upload reads what it sends now.
        tokio::time::sleep(Duration::from_millis(800)).await;
        fs.write(second, 0, b"v2").unwrap();
        fs.close_or_sync(second, Some(42)).await.unwrap();
        fs.sync_uploads().await.expect("both uploads succeed");
        release(&fs, first).await.unwrap();
        release(&fs, second).await.unwrap();
        assert_eq!(revision_contents(&midas, item), ["v0", "v1", "v2"]);
        assert_eq!(recovery_entries(&fs), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_while_the_last_close_uploads_goes_to_the_next_upload_only() {
        let midas = Arc::new(FakeMidas::new(Duration::from_millis(10)));
        let item = midas.add_file(midas.public_folder(), "order.txt", b"v0");
        let spool = tempfile::tempdir().unwrap();
        let fs = mount(&midas, spool.path());
        let (_, fh) = upload_waiting(&fs, &midas).await;
        fs.write(fh, 0, b"x").unwrap();
        assert_eq!(
            &fs.read(fh, 0, 10).await.unwrap()[..],
            b"x1",
            "the handle reads its write"
        );
        fs.close_or_sync(fh, Some(42)).await.unwrap();
        fs.sync_uploads().await.expect("both uploads succeed");
        release(&fs, fh).await.unwrap();
        assert_eq!(revision_contents(&midas, item), ["v0", "v1", "x1"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upload_that_fails_after_a_rewrite_began_keeps_its_own_content() {
        let midas = Arc::new(FakeMidas::new(Duration::from_millis(10)));
        let item = midas.add_file(midas.public_folder(), "order.txt", b"v0");
        let spool = tempfile::tempdir().unwrap();
        let fs = mount(&midas, spool.path());
        midas.fail_times(
            "midas.upload.perform",
            1,
            Fault::Error {
                code: crate::midas::codes::UPLOAD_FAILED,
                message: "refused by the test".into(),
            },
        );
        let (ino, first) = upload_waiting(&fs, &midas).await;
        let second = fs.open_write(ino, true, 42).await.unwrap();
        fs.write(second, 0, b"v2").unwrap();
        let err = fs.sync_uploads().await.expect_err("the first upload fails");
        assert_eq!(err.errno(), libc::EIO, "{err}");
        fs.close_or_sync(second, Some(42)).await.unwrap();
        fs.sync_uploads().await.expect("the second upload succeeds");
        release(&fs, first).await.unwrap();
        release(&fs, second).await.unwrap();
        assert_eq!(revision_contents(&midas, item), ["v0", "v2"]);
        let kept: Vec<Vec<u8>> = std::fs::read_dir(fs.status().recovery_dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().ends_with(spool::SIDECAR))
            .map(|e| std::fs::read(e.path()).unwrap())
            .collect();
        assert_eq!(
            kept,
            [b"v1".to_vec()],
            "the failed upload's content is kept"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_file_removed_after_a_rewrite_began_is_not_sent_at_all() {
        let midas = Arc::new(FakeMidas::new(Duration::from_millis(10)));
        let spool = tempfile::tempdir().unwrap();
        let fs = mount(&midas, spool.path());
        let slots = hold_upload_slots(&fs).await;
        let (_, fh) = fs.create(ROOT, "gone.txt", 42).unwrap();
        fs.write(fh, 0, b"v1").unwrap();
        fs.close_or_sync(fh, Some(42)).await.unwrap();
        // A rewrite while the close's upload is due: "v1" waits in a spool file of its own.
        fs.write(fh, 0, b"v2").unwrap();
        fs.unlink(ROOT, "gone.txt").await.unwrap();
        drop(slots);
        fs.sync_uploads().await.expect("nothing fails");
        release(&fs, fh).await.unwrap();
        assert!(midas
            .child_item(midas.public_folder(), "gone.txt")
            .is_none());
        assert_eq!(midas.count("midas.upload.perform"), 0);
        assert!(fs.lookup(ROOT, "gone.txt").await.is_err());
        let left = || -> Vec<_> {
            std::fs::read_dir(spool.path())
                .unwrap()
                .filter_map(Result::ok)
                .filter(|e| e.path().is_file() && e.metadata().is_ok_and(|m| m.len() > 0))
                .map(|e| e.file_name())
                .collect()
        };
        // The last upload task lets go of the file just after its upload counts as done.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !left().is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(left().is_empty(), "spool files left: {:?}", left());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rewrite_of_a_new_file_sent_while_written_keeps_both_closes_in_one_item() {
        let midas = Arc::new(FakeMidas::new(Duration::from_millis(10)));
        let spool = tempfile::tempdir().unwrap();
        let fs = mount(&midas, spool.path());
        let content = crate::fs::fake_tests::large_content();
        let (_, fh) = fs.create(ROOT, "large.bin", 42).unwrap();
        for (at, chunk) in content.chunks(1 << 20).enumerate() {
            fs.handle_write(fh, (at << 20) as u64, chunk).unwrap();
        }
        let slots = hold_upload_slots(&fs).await;
        fs.close_or_sync(fh, Some(42)).await.unwrap();
        // While the close's upload waits: its content, partly sent already, is the old one.
        fs.write(fh, 0, b"X").unwrap();
        fs.close_or_sync(fh, Some(42)).await.unwrap();
        drop(slots);
        fs.sync_uploads().await.expect("both uploads succeed");
        release(&fs, fh).await.unwrap();
        let item = midas
            .child_item(midas.public_folder(), "large.bin")
            .expect("one item");
        let mut changed = content.clone();
        changed[0] = b'X';
        assert!(midas.revision_contents(item) == vec![content, changed]);
        assert_eq!(recovery_entries(&fs), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_with_no_room_for_its_copy_fails_alone_and_the_due_upload_still_goes() {
        let midas = Arc::new(FakeMidas::new(Duration::from_millis(10)));
        let item = midas.add_file(midas.public_folder(), "order.txt", b"v0");
        let spool = tempfile::tempdir().unwrap();
        // Room for the file once, not twice.
        let fs = crate::fs::fake_tests::fake_mount_spooling(&midas, spool.path(), 3 << 20)
            .with_write_back(Some(WriteBackConfig {
                uploads: 2,
                unmount_wait: Duration::from_secs(30),
            }));
        let fs = Arc::new(fs);
        let content = vec![7u8; 2 << 20];
        let ino = fs.lookup(ROOT, "order.txt").await.unwrap().ino;
        let fh = fs.open_write(ino, true, 42).await.unwrap();
        fs.write(fh, 0, &content).unwrap();
        let slots = hold_upload_slots(&fs).await;
        fs.close_or_sync(fh, Some(42)).await.unwrap();
        let Err(err) = fs.write(fh, 0, b"X") else {
            panic!("a write with no room for a copy succeeded");
        };
        assert_eq!(err.errno(), libc::ENOSPC, "{err}");
        drop(slots);
        fs.sync_uploads()
            .await
            .expect("the close's upload succeeds");
        fs.close_or_sync(fh, Some(42))
            .await
            .expect("nothing changed since: nothing to send, no error");
        release(&fs, fh).await.unwrap();
        assert!(midas.content(item).unwrap() == content);
        assert_eq!(recovery_entries(&fs), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_save_by_rename_during_the_upload_of_the_renamed_file_saves_what_it_last_held() {
        let midas = Arc::new(FakeMidas::new(Duration::from_millis(10)));
        let target = midas.add_file(midas.public_folder(), "target.txt", b"v0");
        let spool = tempfile::tempdir().unwrap();
        let fs = mount(&midas, spool.path());
        let (_, fh) = fs.create(ROOT, "tmp", 42).unwrap();
        fs.write(fh, 0, b"A").unwrap();
        fs.close_or_sync(fh, Some(42)).await.unwrap();
        fs.sync_uploads().await.expect("the first upload succeeds");
        // Written again through the open handle, closed, and its upload running when the
        // rename comes.
        fs.write(fh, 0, b"B").unwrap();
        midas.fail_times(
            "midas.upload.generatetoken",
            1,
            Fault::Delay(Duration::from_millis(500)),
        );
        let asked = midas.count("midas.upload.generatetoken");
        fs.close_or_sync(fh, Some(42)).await.unwrap();
        while midas.count("midas.upload.generatetoken") == asked {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        fs.rename(ROOT, "tmp", ROOT, "target.txt", false)
            .await
            .expect("rename");
        fs.sync_uploads().await.expect("nothing fails");
        release(&fs, fh).await.unwrap();
        assert_eq!(midas.content(target).unwrap(), b"B");
        assert!(midas.child_item(midas.public_folder(), "tmp").is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_close_whose_upload_is_due_when_a_save_by_rename_lands_over_the_file_still_counts() {
        let midas = Arc::new(FakeMidas::new(Duration::from_millis(10)));
        let item = midas.add_file(midas.public_folder(), "doc.txt", b"v0");
        let spool = tempfile::tempdir().unwrap();
        let fs = mount(&midas, spool.path());
        let ino = fs.lookup(ROOT, "doc.txt").await.unwrap().ino;
        midas.fail_times(
            "midas.upload.generatetoken",
            1,
            Fault::Delay(Duration::from_millis(500)),
        );
        let mine = fs.open_write(ino, true, 42).await.unwrap();
        fs.write(mine, 0, b"mine").unwrap();
        fs.close_or_sync(mine, Some(42)).await.unwrap();
        // Another program saves the file by rename while that upload is due.
        let (_, tmp) = fs.create(ROOT, "doc.txt.tmp", 43).unwrap();
        fs.write(tmp, 0, b"saved").unwrap();
        fs.rename(ROOT, "doc.txt.tmp", ROOT, "doc.txt", false)
            .await
            .expect("rename");
        fs.close_or_sync(tmp, Some(43)).await.unwrap();
        fs.sync_uploads().await.expect("nothing fails");
        release(&fs, mine).await.unwrap();
        release(&fs, tmp).await.unwrap();
        assert_eq!(revision_contents(&midas, item), ["v0", "mine", "saved"]);
    }

    fn md5_hex(text: &str) -> String {
        format!("{:x}", <md5::Md5 as md5::Digest>::digest(text.as_bytes()))
    }

    /// A spool file a dead mount left, closed with write-back and not uploaded: its journal
    /// record says `kind` of upload into the Public folder as `name`, plus `extra`.
    fn left_by_a_dead_mount(
        spool: &std::path::Path,
        midas: &FakeMidas,
        name: &str,
        content: &[u8],
        extra: &[(&str, serde_json::Value)],
    ) {
        std::fs::create_dir_all(spool).unwrap();
        // pid_max is far below this, so no such process exists.
        let path = spool.join(format!("99999999-{}.spool", md5_hex(name)));
        std::fs::write(&path, content).unwrap();
        let mut about = serde_json::json!({
            "server": crate::midas::MidasApi::base_url(midas),
            "path": format!("Public/{name}"),
            "name": name,
            "folder_id": midas.public_folder(),
            "kind": "new_item",
            JOURNAL_KEY: JOURNAL_PENDING,
        });
        for (key, value) in extra {
            about[*key] = value.clone();
        }
        std::fs::write(spool::sidecar_of(&path), about.to_string()).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_next_mount_sends_what_a_dead_one_left_and_not_what_the_server_holds() {
        let midas = Arc::new(FakeMidas::new(Duration::from_millis(300)));
        let spool = tempfile::tempdir().unwrap();
        let done = midas.add_file(midas.public_folder(), "done.txt", b"sent before the crash");
        left_by_a_dead_mount(spool.path(), &midas, "left.txt", b"left behind", &[]);
        left_by_a_dead_mount(
            spool.path(),
            &midas,
            "done.txt",
            b"sent before the crash",
            &[("made_item_id", done.into())],
        );
        let fs = mount(&midas, spool.path());
        fs.resume_uploads();
        assert!(fs.tasks.wait_needed(Duration::from_secs(30)).await);
        let left = midas.child_item(midas.public_folder(), "left.txt").unwrap();
        assert_eq!(midas.content(left).unwrap(), b"left behind");
        assert_eq!(midas.revision_count(done), 1, "sent again");
        assert_eq!(
            midas.count("midas.upload.perform"),
            1,
            "only the file the server lacked was sent"
        );
        let names = midas.names_in(midas.public_folder());
        assert_eq!(
            names.iter().filter(|n| n.starts_with("done")).count(),
            1,
            "{names:?}"
        );
        let spool_files: Vec<_> = std::fs::read_dir(spool.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name())
            .collect();
        assert!(spool_files.is_empty(), "left in the spool: {spool_files:?}");
        assert!(
            !spool.path().join("recovery").exists()
                || std::fs::read_dir(spool.path().join("recovery"))
                    .unwrap()
                    .next()
                    .is_none()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_whose_data_did_not_all_reach_the_disk_sends_nothing_and_keeps_the_file() {
        let midas = Arc::new(FakeMidas::new(Duration::from_millis(300)));
        let spool = tempfile::tempdir().unwrap();
        // The record of a close of 28 bytes; a crash left the file with only the first 5.
        let path = spool.path().join("99999999-1.spool");
        std::fs::write(&path, b"short").unwrap();
        let record = serde_json::json!({
            "server": crate::midas::MidasApi::base_url(&*midas),
            "name": "torn.txt",
            "folder_id": midas.public_folder(),
            "kind": "new_item",
            JOURNAL_KEY: JOURNAL_PENDING,
            "size": 28,
            "md5": md5_hex("short, and then the rest too"),
        });
        let file = std::fs::File::open(&path).unwrap();
        spool::set_xattr(&file, spool::RECORD_XATTR, record.to_string().as_bytes()).unwrap();
        let fs = mount(&midas, spool.path());
        fs.resume_uploads();
        assert!(fs.tasks.wait_needed(Duration::from_secs(30)).await);
        assert_eq!(midas.count("midas.upload.perform"), 0, "sent");
        assert!(midas
            .child_item(midas.public_folder(), "torn.txt")
            .is_none());
        let recovery = fs.status().recovery_dir;
        let kept: Vec<_> = std::fs::read_dir(&recovery)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| !p.to_string_lossy().ends_with(spool::SIDECAR))
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(std::fs::read(&kept[0]).unwrap(), b"short");
        let reason = spool::read_sidecar(&kept[0])["reason"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(reason.contains("did not all reach the disk"), "{reason}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_resumed_file_is_shown_at_once_and_no_save_sends_it_before_its_checks() {
        let midas = Arc::new(FakeMidas::new(Duration::from_millis(300)));
        let spool = tempfile::tempdir().unwrap();
        // A record whose data is not all there: never to be sent, by anyone.
        left_by_a_dead_mount(
            spool.path(),
            &midas,
            "torn.txt",
            b"short",
            &[("size", 28.into())],
        );
        let fs = mount(&midas, spool.path());
        // Its checks (local: its size is not its record's) wait for an upload slot, held
        // until the lookup and the save have run: else they may finish first, and the file
        // is rightly gone to the recovery directory before anyone looked.
        let checks = hold_upload_slots(&fs).await;
        fs.resume_uploads();
        let entry = fs.lookup(ROOT, "torn.txt").await.expect("shown at once");
        assert_eq!(entry.size, 5);
        // An unmount right away saves every file still unsaved.
        fs.save_all().await;
        assert_eq!(
            midas.count("midas.upload.perform"),
            0,
            "sent before its checks"
        );
        drop(checks);
        assert!(fs.tasks.wait_needed(Duration::from_secs(30)).await);
        assert_eq!(midas.count("midas.upload.perform"), 0, "sent");
        assert!(midas
            .child_item(midas.public_folder(), "torn.txt")
            .is_none());
        let kept = std::fs::read_dir(fs.status().recovery_dir)
            .unwrap()
            .flatten()
            .filter(|e| std::fs::read(e.path()).is_ok_and(|c| c == b"short"))
            .count();
        assert_eq!(kept, 1, "kept in the recovery directory");
    }

    /// A write-back mount whose journal records are in the sidecars (`sidecars`), as on a
    /// spool filesystem without extended attributes, or in the spool files' attributes.
    fn mount_recording(
        midas: &Arc<FakeMidas>,
        spool: &std::path::Path,
        sidecars: bool,
    ) -> Arc<MidasFs> {
        let fs = mount(midas, spool);
        if sidecars {
            fs.writes.spool.records_in_sidecars();
        }
        fs
    }

    /// The journal record of the spool file `path` as the next mount reads it; None if no
    /// upload is due.
    fn due_record(path: &std::path::Path) -> Option<spool::About> {
        assert!(spool::read_record(path).is_ok(), "a torn record");
        spool::pending_record(path)
    }

    /// The spool file of the handle's file, which holds the content due now (a write during an
    /// upload goes into a new one).
    fn spool_path(fs: &MidasFs, fh: u64) -> std::path::PathBuf {
        let file = fs.writes.file_of_handle(fh).unwrap().1;
        let path = file.lock().spool.path().to_owned();
        path
    }

    async fn renamed_new_file_due(sidecars: bool) {
        let midas = Arc::new(FakeMidas::new(Duration::from_millis(300)));
        let spool = tempfile::tempdir().unwrap();
        let fs = mount_recording(&midas, spool.path(), sidecars);
        let held = hold_upload_slots(&fs).await;
        let (_, fh) = fs.create(ROOT, "draft.txt", 42).unwrap();
        fs.write(fh, 0, b"the text").unwrap();
        fs.close_or_sync(fh, Some(42)).await.unwrap();
        let path = spool_path(&fs, fh);
        assert_eq!(
            spool::read_record(&path).unwrap().is_some(),
            !sidecars,
            "where the record is"
        );
        let file = due_record(&path).unwrap()[spool::FILE_KEY].clone();
        assert!(file.is_string(), "{file:?}");
        fs.rename(ROOT, "draft.txt", ROOT, "final.txt", false)
            .await
            .unwrap();
        let record = due_record(&path).expect("still due");
        assert_eq!(record["name"], "final.txt");
        assert_eq!(record[spool::FILE_KEY], file, "the same file's record");
        drop(held);
        fs.sync_uploads().await.unwrap();
        assert_eq!(due_record(&path), None, "nothing is due any more");
        release(&fs, fh).await.unwrap();
        assert!(midas
            .child_item(midas.public_folder(), "final.txt")
            .is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_renamed_new_file_whose_upload_is_due_is_resumed_under_its_new_name() {
        renamed_new_file_due(false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_extended_attributes_a_renamed_new_file_is_resumed_under_its_new_name() {
        renamed_new_file_due(true).await;
    }

    async fn saved_by_rename_due(sidecars: bool) {
        let midas = Arc::new(FakeMidas::new(Duration::from_millis(10)));
        let item = midas.add_file(midas.public_folder(), "doc.txt", b"v0");
        let spool = tempfile::tempdir().unwrap();
        let fs = mount_recording(&midas, spool.path(), sidecars);
        fs.lookup(ROOT, "doc.txt").await.unwrap();
        let held = hold_upload_slots(&fs).await;
        let (_, tmp) = fs.create(ROOT, "doc.txt.tmp", 42).unwrap();
        fs.write(tmp, 0, b"saved").unwrap();
        fs.close_or_sync(tmp, Some(42)).await.unwrap();
        let path = spool_path(&fs, tmp);
        // An editor's save: the temporary file, closed, is renamed over the file.
        fs.rename(ROOT, "doc.txt.tmp", ROOT, "doc.txt", false)
            .await
            .expect("rename");
        let record = due_record(&path).expect("still due");
        assert_eq!(record["kind"], "revision", "{record:?}");
        assert_eq!(record["item_id"], item);
        assert_eq!(record["name"], "doc.txt");
        drop(held);
        fs.sync_uploads().await.expect("nothing fails");
        assert_eq!(due_record(&path), None, "nothing is due any more");
        release(&fs, tmp).await.unwrap();
        assert_eq!(revision_contents(&midas, item), ["v0", "saved"]);
        assert!(midas
            .child_item(midas.public_folder(), "doc.txt.tmp")
            .is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_due_file_saved_by_rename_is_resumed_as_a_revision_of_the_file_it_replaced() {
        saved_by_rename_due(false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_extended_attributes_a_due_file_saved_by_rename_keeps_its_record() {
        saved_by_rename_due(true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_saved_by_rename_while_its_first_upload_runs_becomes_a_revision_of_the_file() {
        let midas = Arc::new(FakeMidas::new(Duration::from_millis(300)));
        let item = midas.add_file(midas.public_folder(), "doc.txt", b"v0");
        let spool = tempfile::tempdir().unwrap();
        let fs = mount_recording(&midas, spool.path(), false);
        fs.lookup(ROOT, "doc.txt").await.unwrap();
        midas.fail_always(
            "midas.upload.perform",
            Fault::Delay(Duration::from_millis(200)),
        );
        let (_, tmp) = fs.create(ROOT, "doc.txt.tmp", 42).unwrap();
        fs.write(tmp, 0, b"saved").unwrap();
        fs.close_or_sync(tmp, Some(42)).await.unwrap();
        an_upload_runs(&midas).await;
        // An editor's save, renamed over the file while the upload that makes its item runs:
        // the rename waits for that upload, and then saves what it made over the file.
        let renamed = fs.rename(ROOT, "doc.txt.tmp", ROOT, "doc.txt", false);
        tokio::time::timeout(Duration::from_secs(10), renamed)
            .await
            .expect("the rename returns")
            .expect("rename");
        fs.sync_uploads().await.expect("nothing fails");
        release(&fs, tmp).await.unwrap();
        assert_eq!(revision_contents(&midas, item), ["v0", "saved"]);
        assert!(midas
            .child_item(midas.public_folder(), "doc.txt.tmp")
            .is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_renamed_file_of_an_item_directory_keeps_its_due_record_under_its_new_name() {
        let midas = Arc::new(FakeMidas::new(Duration::from_millis(10)));
        let item = midas.add_item(midas.public_folder(), "data");
        midas.add_bitstream(item, "a.csv", b"a0");
        midas.add_bitstream(item, "b.csv", b"b0");
        let spool = tempfile::tempdir().unwrap();
        let fs = mount(&midas, spool.path());
        let dir = fs.lookup(ROOT, "data").await.unwrap().ino;
        let ino = fs.lookup(dir, "a.csv").await.unwrap().ino;
        let held = hold_upload_slots(&fs).await;
        let fh = fs.open_write(ino, true, 42).await.unwrap();
        fs.write(fh, 0, b"a1").unwrap();
        fs.close_or_sync(fh, Some(42)).await.unwrap();
        let path = spool_path(&fs, fh);
        assert_eq!(due_record(&path).unwrap()["name"], "a.csv");
        fs.rename(dir, "a.csv", dir, "c.csv", false).await.unwrap();
        let record = due_record(&path).expect("still due");
        assert_eq!(record["name"], "c.csv", "{record:?}");
        drop(held);
        fs.sync_uploads().await.unwrap();
        release(&fs, fh).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_time_set_while_a_new_files_upload_ends_is_the_files_time() {
        // `rsync -a` with write-back: the temporary file's time is set right after its close,
        // often while its upload ends and the file takes its item's inode.
        let midas = Arc::new(FakeMidas::new(Duration::from_millis(300)));
        let spool = tempfile::tempdir().unwrap();
        let fs = mount(&midas, spool.path());
        let (mut lost, mut raced) = (Vec::new(), 0);
        for round in 0..60u64 {
            let name = format!("f{round}.txt");
            let (attr, fh) = fs.create(ROOT, &name, 42).unwrap();
            fs.write(fh, 0, b"x").unwrap();
            fs.close_or_sync(fh, Some(42)).await.unwrap();
            // Times set one after the other until the upload has given the file its item.
            let mut last = std::time::UNIX_EPOCH;
            for step in 1u64.. {
                if fs.canonical_ino(attr.ino) != attr.ino {
                    break;
                }
                last = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000 * (round + 1) + step);
                fs.setattr(attr.ino, None, None, Some(last)).await.unwrap();
            }
            fs.sync_uploads().await.expect("the upload succeeds");
            release(&fs, fh).await.unwrap();
            if last == std::time::UNIX_EPOCH {
                // The upload had ended before the first time was set.
                continue;
            }
            raced += 1;
            let shown = fs.getattr(attr.ino).unwrap().mtime;
            let listed = fs.lookup(ROOT, &name).await.unwrap().mtime;
            if shown != last || listed != last {
                lost.push(format!("{name}: {shown:?} and {listed:?}, not {last:?}"));
            }
        }
        assert!(lost.is_empty(), "times lost: {lost:?}");
        assert!(raced > 0, "no time was set during an upload");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_time_set_while_a_new_revision_uploads_is_the_time_of_that_revision() {
        let (midas, _spool, fs) = slow_uploads(false);
        let item = midas.add_file(midas.public_folder(), "doc.txt", b"v0");
        let ino = fs.lookup(ROOT, "doc.txt").await.unwrap().ino;
        let fh = fs.open_write(ino, true, 42).await.unwrap();
        fs.write(fh, 0, b"version 1").unwrap();
        fs.close_or_sync(fh, Some(42)).await.unwrap();
        an_upload_runs(&midas).await;
        // `cp -p` over the file: its time is set while the close's upload runs.
        let when = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        fs.setattr(ino, None, None, Some(when)).await.unwrap();
        fs.sync_uploads().await.expect("the upload succeeds");
        release(&fs, fh).await.unwrap();
        // A new listing shows the revision the upload made, with the time set on it.
        fs.listings.expire(ROOT);
        let listed = fs.listing(ROOT).await.unwrap();
        let doc = listed.iter().find(|e| e.name == "doc.txt").unwrap();
        assert_eq!(doc.data.mtime, when);
        assert_eq!(fs.getattr(ino).unwrap().mtime, when);
        // And the next mount takes it back on that revision (item, revision 2, the time).
        fs.writes.save_times(false);
        let kept = std::fs::read_to_string(&fs.writes.times_file).unwrap();
        let row = format!("\t{item}\t2\t{}\t", 1_000_000_000u64 * 1_000_000_000);
        assert!(kept.contains(&row), "{kept}");
    }

    /// A mount recording its closes, whose uploads each take 400 ms.
    fn slow_uploads(sidecars: bool) -> (Arc<FakeMidas>, tempfile::TempDir, Arc<MidasFs>) {
        let midas = Arc::new(FakeMidas::new(Duration::from_millis(300)));
        let spool = tempfile::tempdir().unwrap();
        let fs = mount_recording(&midas, spool.path(), sidecars);
        midas.fail_always(
            "midas.upload.perform",
            Fault::Delay(Duration::from_millis(400)),
        );
        (midas, spool, fs)
    }

    /// Once an upload's `upload.perform` has begun.
    async fn an_upload_runs(midas: &FakeMidas) {
        while midas.count("midas.upload.perform") == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn close_during_upload(sidecars: bool) {
        let (midas, _spool, fs) = slow_uploads(sidecars);
        let (_, fh) = fs.create(ROOT, "twice.txt", 42).unwrap();
        fs.write(fh, 0, b"v1").unwrap();
        fs.close_or_sync(fh, Some(42)).await.unwrap();
        let record = || due_record(&spool_path(&fs, fh));
        assert_eq!(record().unwrap()["kind"], "new_item");
        an_upload_runs(&midas).await;
        // The first upload is running.
        fs.write(fh, 0, b"v2, longer").unwrap();
        fs.close_or_sync(fh, Some(42)).await.unwrap();
        // From this close on, a record of it is there at every moment: first as a new file,
        // then, once the first upload made the item, as a revision of that item.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let item = loop {
            let due = record().expect("the second close's record, at every moment");
            if let Some(item) = midas.child_item(midas.public_folder(), "twice.txt") {
                if due["kind"] == "revision" {
                    break item;
                }
            }
            assert!(std::time::Instant::now() < deadline, "{due:?}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let due = record().unwrap();
        assert_eq!(due["item_id"], item);
        if !sidecars {
            // (No MD5: the rewrite from offset 0 stopped the running one.)
            assert_eq!(due["size"], 10);
        }
        fs.sync_uploads().await.expect("both uploads succeed");
        assert_eq!(midas.content(item).unwrap(), b"v2, longer");
        assert_eq!(record(), None, "nothing is due any more");
        release(&fs, fh).await.unwrap();
    }

    /// An fsync's save (not a background upload) makes a new file's item while a later close
    /// of the file is due: that close's record becomes a revision of the item at once.
    async fn close_during_fsync(sidecars: bool) {
        let (midas, _spool, fs) = slow_uploads(sidecars);
        let (_, fh) = fs.create(ROOT, "synced.txt", 42).unwrap();
        fs.write(fh, 0, b"v1").unwrap();
        let syncing = tokio::spawn({
            let fs = fs.clone();
            async move { fs.close_or_sync(fh, None).await }
        });
        an_upload_runs(&midas).await;
        // The fsync's upload is running, and it makes the item.
        fs.write(fh, 0, b"v2, longer").unwrap();
        fs.close_or_sync(fh, Some(42)).await.unwrap();
        let record = || due_record(&spool_path(&fs, fh));
        assert_eq!(record().unwrap()["kind"], "new_item");
        syncing.await.unwrap().expect("the fsync's save succeeds");
        let item = midas
            .child_item(midas.public_folder(), "synced.txt")
            .expect("the fsync made the item");
        // The second close's upload waits for the fsync's and takes 400 ms: its record is
        // still due, and says where it goes now.
        let due = record().expect("the second close is still due");
        assert_eq!(due["kind"], "revision", "{due:?}");
        assert_eq!(due["item_id"], item);
        fs.sync_uploads().await.expect("the second upload succeeds");
        assert_eq!(midas.content(item).unwrap(), b"v2, longer");
        assert_eq!(record(), None, "nothing is due any more");
        release(&fs, fh).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_close_due_while_an_fsync_makes_the_item_becomes_a_revision_of_it() {
        close_during_fsync(false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_extended_attributes_a_close_due_while_an_fsync_makes_the_item_follows_it() {
        close_during_fsync(true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_close_during_the_upload_of_the_last_keeps_the_record_as_what_is_due_now() {
        close_during_upload(false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_extended_attributes_a_close_during_an_upload_keeps_its_record_throughout() {
        close_during_upload(true).await;
    }
}
