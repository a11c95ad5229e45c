//! Saving a file: one upload at a time per file, what the mount shows after it, and the saves
//! of everything still unsaved at unmount.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::early::{EarlyUpload, Stopped};
use super::spool::SpoolFile;
use super::upload::{NewFile, Uploaded};
use super::{set_times, FileData, Target, WriteFile};
use crate::fs::inode::{NodeData, NodeKind};
use crate::fs::tasks::Work;
use crate::fs::{FsError, FsResult, MidasFs};

/// How long unmount waits for background uploads at most: a bound against a bug only, since
/// every request has its own timeout.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// How soon after a change the times of files set through the mount are written for the next
/// mount (see `set_times`).
const TIMES_SAVE_DELAY: Duration = Duration::from_secs(1);

/// What one upload sends: a spool file's bytes as they were when it began.
struct Sending {
    path: PathBuf,
    size: u64,
    running_md5: Option<String>,
}

impl Sending {
    fn of(spool: &SpoolFile) -> Sending {
        Sending {
            path: spool.path().to_owned(),
            size: spool.len(),
            running_md5: spool.running_md5(),
        }
    }
}

/// What a save sends (see [`MidasFs::save`]).
enum What {
    /// Nothing: the file is saved, or removed (its spool file's path).
    Nothing(PathBuf),
    /// Nothing, for a write failed: the content is incomplete (its spool file's path).
    Failed(FsError, PathBuf),
    /// Content a change replaced after its close.
    Older(Sending),
    /// The current spool file.
    Current(Sending),
}

/// What the next save of the file sends, and the early upload of that content; marks it, so
/// that a change from now on goes into a copy (see `Sends`).
fn next_to_send(data: &mut FileData) -> (What, EarlyUpload) {
    if let Some(older) = data.sends.older.front_mut() {
        return (What::Older(Sending::of(&older.spool)), older.early.take());
    }
    data.sends.due = false;
    let early = data.early.take();
    let what = if let Some(err) = data.failed_write.clone() {
        What::Failed(err, data.spool.path().to_owned())
    } else if !data.dirty || data.unlinked {
        What::Nothing(data.spool.path().to_owned())
    } else {
        // Writes during the upload make the file dirty again, for the next flush.
        data.dirty = false;
        data.sends.running = true;
        What::Current(Sending::of(&data.spool))
    };
    (what, early)
}

impl MidasFs {
    /// Uploads the file if dirty; on failure moves the spool to the recovery directory. With
    /// write-back, content that a change replaced after its close goes first (see `Sends`):
    /// one save sends one close's content.
    pub(in crate::fs) async fn save(&self, ino: u64, file: &WriteFile) -> FsResult<()> {
        let _one_at_a_time = file.upload.lock().await;
        // One look decides what this save sends, and from then on no change touches it.
        let (what, early, removed) = {
            let mut data = file.lock();
            // Removed: nothing of it is sent any more (dropping deletes the files).
            let removed: Vec<_> = if data.unlinked {
                data.sends.older.drain(..).collect()
            } else {
                Vec::new()
            };
            // Left by a save of another kind (a save by rename), long over.
            data.sends.replaced_running = None;
            let (what, early) = next_to_send(&mut data);
            (what, early, removed)
        };
        for mut older in removed {
            let early = older.early.take().stop().await;
            self.discard_early(early, older.spool.path()).await;
        }
        // Whatever happens next, nothing more is sent early.
        let early = early.stop().await;
        match what {
            What::Nothing(path) => {
                self.discard_early(early, &path).await;
                Ok(())
            }
            What::Failed(err, path) => {
                self.discard_early(early, &path).await;
                self.keep_unsaved(ino, file, &err);
                Err(err)
            }
            What::Older(sending) => {
                let result = self.send(ino, file, sending, early).await;
                let older = file.lock().sends.older.pop_front();
                if let Some(mut older) = older {
                    self.sent(ino, file, &mut older.spool, result.as_ref().err());
                }
                result
            }
            What::Current(sending) => {
                let result = self.send(ino, file, sending, early).await;
                let replaced = {
                    let mut data = file.lock();
                    data.sends.running = false;
                    data.sends.replaced_running.take()
                };
                match (replaced, &result) {
                    (Some(mut sent), _) => {
                        self.sent(ino, file, &mut sent, result.as_ref().err());
                    }
                    (None, Ok(())) => {
                        let mut data = file.lock();
                        if data.spool.is_recovered() {
                            data.spool.saved();
                        }
                    }
                    (None, Err(err)) => {
                        file.lock().dirty = true;
                        self.keep_unsaved(ino, file, err);
                    }
                }
                result
            }
        }
    }

    /// Saves until the file's own content is sent: first what changes replaced after earlier
    /// closes (`Sends`), each on its own. The first error is the answer.
    pub(in crate::fs) async fn save_through(&self, ino: u64, file: &WriteFile) -> FsResult<()> {
        let mut first_error = None;
        loop {
            let older_left = !file.lock().sends.older.is_empty();
            let result = self.save(ino, file).await;
            if !older_left {
                return match first_error {
                    Some(err) => Err(err),
                    None => result,
                };
            }
            if let Err(err) = result {
                first_error.get_or_insert(err);
            }
        }
    }

    /// After sending `sent`, content a change replaced (`Sends`): saved, it goes; failed, it
    /// goes to the recovery directory, while the file, which holds newer content, stays open
    /// and dirty.
    fn sent(&self, ino: u64, file: &WriteFile, sent: &mut SpoolFile, failed: Option<&FsError>) {
        match failed {
            None => {
                if sent.is_recovered() {
                    sent.saved();
                }
            }
            Some(err) => {
                let target = file.lock().target.clone();
                let about = self.spool_about(ino, &target);
                self.keep_in_recovery(&self.describe(ino), sent, about, err);
            }
        }
    }

    /// Sends what `sending` took of a spool file as the file's target wants; on success the
    /// mount shows what was sent.
    async fn send(
        &self,
        ino: u64,
        file: &WriteFile,
        sending: Sending,
        early: Option<Stopped>,
    ) -> FsResult<()> {
        let Sending {
            path,
            size,
            running_md5,
        } = sending;
        let (target, replace_empty) = {
            let data = file.lock();
            (data.target.clone(), data.empty_upload)
        };
        self.remove_orphans().await;
        let started = Instant::now();
        let result = match &target {
            Target::New {
                parent_ino,
                container,
                name,
                ..
            } => {
                let saving = NewFile {
                    parent_ino: *parent_ino,
                    name,
                    path: &path,
                    size,
                    running_md5,
                };
                self.upload_new(&saving, container, early).await
            }
            Target::ItemFile { item, .. } => {
                let md5 = running_md5.as_deref();
                self.upload_revision(item, &path, size, md5, replace_empty)
                    .await
            }
            Target::Bitstream {
                item, bitstream, ..
            } => self.replace_bitstream(item, bitstream, &path, size).await,
        };
        match result {
            Ok(uploaded) => {
                log::debug!(
                    "{}: {size} bytes saved in {:?}",
                    self.describe(ino),
                    started.elapsed()
                );
                self.saved(ino, file, &target, uploaded);
                // A file in an item directory replaces its bitstream anyway.
                file.lock().empty_upload = size == 0 && !matches!(target, Target::Bitstream { .. });
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// Records a successful upload: the node shows the new content, the listing the entry.
    pub(in crate::fs) fn saved(
        &self,
        ino: u64,
        file: &WriteFile,
        target: &Target,
        uploaded: Uploaded,
    ) {
        let old_canonical = self.canonical_ino(ino);
        let new_canonical = uploaded.entry.ino;
        let written_at = {
            let mut data = file.lock();
            data.target = match &uploaded.node.kind {
                NodeKind::ItemFile { item, .. } | NodeKind::SavedFile { item, .. } => {
                    Target::ItemFile {
                        item: item.clone(),
                        parent_ino: target.parent_ino(),
                    }
                }
                NodeKind::Bitstream { item, bitstream } => Target::Bitstream {
                    item: item.clone(),
                    bitstream: bitstream.clone(),
                    parent_ino: target.parent_ino(),
                },
                _ => data.target.clone(),
            };
            data.mtime
        };
        // Written after its time was set: the file's time is the write's now.
        let revision = set_times::revision_of(&uploaded.node.kind);
        self.writes
            .mtimes()
            .carry(old_canonical, new_canonical, revision, Some(written_at));
        if let (Target::New { .. }, NodeKind::SavedFile { item, .. }) =
            (target, &uploaded.node.kind)
        {
            self.writes.fresh().insert(item.id, Instant::now());
        }
        // The upload may have made the file's item: a close due meanwhile is for it now.
        self.retarget_spool(ino, file);
        let mut entry = uploaded.entry;
        if let Some(mtime) = self.writes.mtime_override(new_canonical) {
            entry.data.mtime = mtime;
        }
        let parent = target.parent_ino();
        let name = match target {
            Target::New { name, .. } => Some(name.clone()),
            _ => None,
        };
        self.listings.patch(parent, |entries| {
            let shown = name.unwrap_or_else(|| {
                entries
                    .iter()
                    .find(|e| e.ino == ino || e.ino == old_canonical)
                    .map_or_else(|| entry.name.clone(), |e| e.name.clone())
            });
            entries.retain(|e| e.ino != ino && e.ino != old_canonical && e.name != shown);
            entry.name = shown;
            entries.push(entry);
        });
        // After the listing: a listing fetched meanwhile is out of date then (see
        // `Listings::finish_fetch`), and cannot undo this.
        self.show_saved(ino, &[old_canonical, new_canonical], &uploaded.node);
        // A time set while the node changed went to the old inode (see `MidasFs::setattr`).
        let carried =
            self.writes
                .mtimes()
                .carry(old_canonical, new_canonical, revision, Some(written_at));
        if let Some(mtime) = carried {
            self.listings.patch(parent, |entries| {
                for entry in entries.iter_mut().filter(|e| e.ino == new_canonical) {
                    entry.data.mtime = mtime;
                }
            });
        }
    }

    /// Every inode the kernel may know a saved file by shows what was uploaded: `ino`, which
    /// it was written through, and `aliases`, the item's own inode (after a save by rename the
    /// kernel keeps the renamed file's inode under the name, and may know the item's too; see
    /// `replace::show_replaced`), and the inodes that stand for one of those under another
    /// number (the renamed file's, when the save was through the item's own). The kernel
    /// forgets what it cached of the aliases' attributes.
    pub(in crate::fs) fn show_saved(&self, ino: u64, aliases: &[u64], data: &NodeData) {
        let root = self.root_folder();
        let standing_for: Vec<u64> = {
            let tracked = self.writes.aliases();
            aliases
                .iter()
                .flat_map(|a| tracked.of(*a))
                .copied()
                .collect()
        };
        let mut changed = Vec::new();
        {
            let mut nodes = self.nodes();
            let others = aliases.iter().copied().chain(standing_for);
            for other in std::iter::once(ino).chain(others) {
                if let Some(node) = nodes.get_mut(&other) {
                    if other != ino && node.data.kind.ino(root) != data.kind.ino(root) {
                        continue;
                    }
                    node.data = data.clone().into();
                    // The kernel's pages of this inode may be older than what was uploaded.
                    node.kernel_cached_md5 = None;
                    node.metadata = None;
                    if other != ino && !changed.contains(&other) {
                        changed.push(other);
                    }
                }
            }
            if nodes.contains_key(&ino) {
                self.writes.aliases().set(ino, data.kind.ino(root));
            }
        }
        if let Some(kernel) = self.kernel.get() {
            for other in changed {
                kernel.attributes_changed(other);
            }
        }
    }

    /// Listings ahead and other optional work stop, and none starts any more (unmount is
    /// coming).
    pub fn cancel_optional_work(&self) {
        self.tasks.cancel_optional();
    }

    /// Unmounting: listings ahead stop, every file still unsaved is saved (or kept in the
    /// recovery directory), and the uploads still running in the background are waited for
    /// (every request has a timeout, so they end).
    pub async fn shutdown(&self) {
        self.tasks.cancel_optional();
        if !self.finish_write_back().await {
            // Left to the next mount (see `writeback`).
            self.writes.spool.remove_spares();
            self.save_times();
            return;
        }
        self.save_all().await;
        let (uploading, _) = self.tasks.running();
        if uploading > 0 {
            log::info!("waiting for {uploading} upload(s) still running in the background");
        }
        if !self.tasks.wait_needed(SHUTDOWN_LIMIT).await {
            log::warn!("background uploads still running after {SHUTDOWN_LIMIT:?}; leaving");
        }
        self.writes.spool.remove_spares();
        self.save_times();
    }

    /// The times of files set through the mount, for the next mount (none of a read-only one).
    fn save_times(&self) {
        if !self.config.read_only {
            self.writes.save_times(false);
        }
    }

    /// Writes the times of files set through the mount again within [`TIMES_SAVE_DELAY`] of a
    /// change, until unmount (which writes them once more): a daemon killed keeps all but the
    /// last moment's (see `set_times`).
    pub fn keep_times_saved(self: &Arc<Self>) {
        if self.config.read_only {
            return;
        }
        let fs = Arc::downgrade(self);
        self.tasks.spawn(Work::Optional, async move {
            loop {
                tokio::time::sleep(TIMES_SAVE_DELAY).await;
                let Some(fs) = fs.upgrade() else {
                    return;
                };
                let saved = tokio::task::spawn_blocking(move || fs.writes.save_times(true));
                if saved.await.is_err() {
                    return;
                }
            }
        });
    }

    /// On unmount: every file still dirty is uploaded, or kept in the recovery directory.
    pub async fn save_all(&self) {
        self.remove_orphans().await;
        let files = self.writes.open_files();
        for (ino, file) in files {
            let pending = {
                let data = file.lock();
                data.dirty && !data.unlinked
            };
            if pending {
                log::warn!(
                    "unmounting with {} unsaved: saving it now",
                    self.describe(ino)
                );
                if let Err(err) = self.save_through(ino, &file).await {
                    log::warn!("{}: {err}", self.describe(ino));
                }
            }
        }
        let left = self.writes.orphans().clone();
        if !left.is_empty() {
            log::warn!("unfinished empty items stay on the server (remove them by hand): {left:?}");
        }
    }
}
