//! Files open for writing: create and open (the spool, shared by every handle of an inode),
//! write, read back, truncate, and close by the process that opened the handle, which saves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use super::early::{EarlyStart, EarlyUpload};
use super::spool::{self, SpoolFile};
use super::{Container, FileData, Sends, Target, WriteFile, WriteHandle};
use crate::fs::error::Kind;
use crate::fs::inode::{Attr, BitstreamInfo, NodeData, NodeKind};
use crate::fs::tasks::Work;
use crate::fs::{unknown_inode, Entry, FsError, FsResult, MidasFs};
use crate::midas::types::Id;

/// The files open for writing, locked (see [`super::Writes::files`]).
type OpenFiles<'a> = MutexGuard<'a, HashMap<u64, Arc<WriteFile>>>;

impl MidasFs {
    /// Creates a new file (local until its first flush) and opens it for writing, for the
    /// process `opener`.
    pub fn create(&self, parent: u64, name: &str, opener: u32) -> FsResult<(Attr, u64)> {
        self.check_writable()?;
        self.refuse_in_search(parent, name)?;
        let container = self.container(parent)?;
        if let Some(entries) = self.cached_listing(parent) {
            if entries.iter().any(|e| e.name == name) {
                return Err(FsError::new(Kind::Exists, format!("{name} exists")));
            }
        }
        let early = match container {
            Container::Folder(_) => {
                // Any listing will do, however old: it is a guess at what the file is.
                EarlyUpload::for_new_file(name, |target| self.may_hold(parent, target))
            }
            Container::Item(_) => EarlyUpload::Off,
        };
        let spool = self.writes.spool.create()?;
        let local = self
            .writes
            .next_local
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let kind = NodeKind::NewFile { local };
        let ino = kind.ino(None);
        let now = SystemTime::now();
        let entry = Entry {
            name: name.to_owned(),
            ino,
            data: NodeData {
                kind,
                mtime: now,
                writable: true,
                // Its item will get the folder's policies.
                public: self.is_public(parent),
            }
            .into(),
        };
        let file = Arc::new(WriteFile {
            identity: spool::new_file_identity(),
            data: Mutex::new(FileData {
                spool,
                // Even an empty new file must reach the server.
                dirty: true,
                unlinked: false,
                failed_write: None,
                handles: 1,
                target: Target::New {
                    local,
                    parent_ino: parent,
                    container,
                    name: name.to_owned(),
                },
                mtime: now,
                empty_upload: false,
                early,
                sends: Sends::default(),
            }),
            upload: Arc::default(),
        });
        self.describe_spool(ino, &file);
        let mut files = self.writes.files();
        files.insert(ino, file);
        let fh = self.new_handle(files, ino, Some(opener));
        self.remember(parent, &entry);
        let attr = entry.attr();
        self.listings.patch(parent, |entries| entries.push(entry));
        Ok((attr, fh))
    }

    /// A new handle on the file kept under `ino` among `files` (the locked map of the files
    /// open for writing), recorded before that lock is let go: a save by rename that sets the
    /// file aside (`set_aside`, which renumbers its handles under that lock) finds it then.
    fn new_handle(&self, files: OpenFiles<'_>, ino: u64, saver: Option<u32>) -> u64 {
        let fh = self.record_handle(&files, ino, saver);
        drop(files);
        self.passthrough.opened_by_mount(ino, fh);
        fh
    }

    /// The handle of [`MidasFs::new_handle`], recorded in the map of handles only.
    fn record_handle(&self, _files: &OpenFiles<'_>, ino: u64, saver: Option<u32>) -> u64 {
        let fh = self
            .next_fh
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.writes.handles().insert(fh, WriteHandle { ino, saver });
        fh
    }

    /// Opens an existing file for writing, for the process `opener`. Unless `truncate`, its
    /// content is downloaded into the spool first (so that partial writes and appends keep the
    /// rest).
    pub async fn open_write(&self, ino: u64, truncate: bool, opener: u32) -> FsResult<u64> {
        self.check_writable()?;
        self.refuse_revision_change(ino)?;
        // Not while the kernel reads the file from the data cache by itself.
        let _opening = self.passthrough.writer_opening(ino).await?;
        if let Some(fh) = self.join_open_file(ino, truncate, Some(opener))? {
            return Ok(fh);
        }
        if !truncate {
            // Its current content is needed: that takes its bitstream.
            self.resolve_saved_file(ino).await?;
        }
        let data = self.node_data(ino)?;
        if !data.writable {
            return Err(FsError::new(
                Kind::Denied,
                format!("{}: no write permission", self.describe(ino)),
            ));
        }
        let parent_ino = self.parent(ino);
        let old_size = data.kind.content_size().unwrap_or(0);
        let (target, content) = match data.kind {
            NodeKind::ItemFile { item, bitstream } => {
                (Target::ItemFile { item, parent_ino }, Some(bitstream))
            }
            // Only opened with O_TRUNC here (see above): the content is not needed.
            NodeKind::SavedFile { item, .. } => (Target::ItemFile { item, parent_ino }, None),
            NodeKind::Bitstream { item, bitstream } => (
                Target::Bitstream {
                    item,
                    bitstream: bitstream.clone(),
                    parent_ino,
                },
                Some(bitstream),
            ),
            NodeKind::NewFile { .. } => {
                return Err(FsError::not_found(self.describe(ino)));
            }
            _ => return Err(FsError::new(Kind::IsDir, "is a directory")),
        };
        let mut spool = self.writes.spool.create()?;
        if !truncate {
            let bitstream = content.ok_or_else(|| unknown_inode(ino))?;
            self.download_into(&mut spool, &bitstream).await?;
        }
        let file = Arc::new(WriteFile {
            identity: spool::new_file_identity(),
            data: Mutex::new(FileData {
                spool,
                dirty: truncate && old_size > 0,
                unlinked: false,
                failed_write: None,
                handles: 1,
                target,
                mtime: data.mtime,
                empty_upload: false,
                early: EarlyUpload::Off,
                sends: Sends::default(),
            }),
            upload: Arc::default(),
        });
        self.describe_spool(ino, &file);
        // Another open may have set the file up while this one downloaded: share its spool.
        // Looked for under the lock that adds the file, so that two opens never add one each
        // (the second would replace the first, whose handles then lost the file at its close).
        let mut files = match self.join_among(self.writes.files(), ino, truncate, Some(opener)) {
            Ok(joined) => return joined,
            Err(files) => files,
        };
        files.insert(ino, file);
        Ok(self.new_handle(files, ino, Some(opener)))
    }

    /// A new handle on a file already open for writing.
    pub(in crate::fs) fn join_open_file(
        &self,
        ino: u64,
        truncate: bool,
        saver: Option<u32>,
    ) -> FsResult<Option<u64>> {
        match self.join_among(self.writes.files(), ino, truncate, saver) {
            Ok(joined) => joined.map(Some),
            Err(_not_open) => Ok(None),
        }
    }

    /// A new handle on the file open for writing that `ino` stands for, found among `files`
    /// (the locked map of them); when there is none, `files` back, still locked, so that the
    /// caller can add the file before another open looks.
    fn join_among<'a>(
        &self,
        files: OpenFiles<'a>,
        ino: u64,
        truncate: bool,
        saver: Option<u32>,
    ) -> Result<FsResult<u64>, OpenFiles<'a>> {
        let Some((key, file)) = self.find_open_file(&files, ino) else {
            return Err(files);
        };
        // Counted while the file is still among the open ones: the last release of its other
        // handles (`release_write`, which takes both locks in this order) then keeps it.
        // Counted after, the file could be gone by then, and the handle with it.
        let mut data = file.lock();
        data.handles += 1;
        let fh = self.record_handle(&files, key, saver);
        // Not under the lock of every file: a resize may make a spool file and sync.
        drop(files);
        if truncate && !data.spool.is_empty() {
            if let Err(err) = data.resize(&self.writes.spool, 0) {
                data.handles -= 1;
                drop(data);
                self.writes.handles().remove(&fh);
                return Ok(Err(err));
            }
        }
        drop(data);
        self.passthrough.opened_by_mount(key, fh);
        Ok(Ok(fh))
    }

    /// The file open for writing that inode `ino` stands for, and the number it is kept under:
    /// `ino` itself, or the inode a new file was created as when `ino` is the item its upload
    /// made (its handles keep the number they were opened with; a lookup by name gives the
    /// item's), or the other way: the item's own inode when `ino` stands for it under another
    /// number (the renamed file's after a save by rename, see `replace::show_replaced`).
    pub(in crate::fs) fn open_file(&self, ino: u64) -> Option<(u64, Arc<WriteFile>)> {
        self.find_open_file(&self.writes.files(), ino)
    }

    /// [`MidasFs::open_file`] among `files`, the locked map of the files open for writing.
    fn find_open_file(
        &self,
        files: &HashMap<u64, Arc<WriteFile>>,
        ino: u64,
    ) -> Option<(u64, Arc<WriteFile>)> {
        if let Some(file) = files.get(&ino) {
            return Some((ino, Arc::clone(file)));
        }
        if files.is_empty() {
            return None;
        }
        let root = self.root_folder();
        let nodes = self.nodes();
        let stands_for = nodes.get(&ino).map(|node| node.data.kind.ino(root));
        if let Some((key, file)) = stands_for.and_then(|key| Some((key, files.get(&key)?))) {
            return Some((key, Arc::clone(file)));
        }
        files
            .iter()
            .find(|(key, _)| {
                nodes
                    .get(key)
                    .is_some_and(|node| node.data.kind.ino(root) == ino)
            })
            .map(|(key, file)| (*key, Arc::clone(file)))
    }

    /// A file open for writing whose name now holds another file (saved over it by a rename):
    /// it uploads nothing any more, and is kept under a number of its own, which its handles
    /// follow, so that the name's inode no longer stands for it (a stat or an open by the name
    /// sees what the name holds).
    pub(in crate::fs) fn set_aside(&self, file: &Arc<WriteFile>) {
        file.mark_unlinked();
        let local = self
            .writes
            .next_local
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let aside = NodeKind::NewFile { local }.ino(None);
        let mut files = self.writes.files();
        let Some(key) = file.number_among(&files, None) else {
            return;
        };
        files.remove(&key);
        files.insert(aside, Arc::clone(file));
        let mut handles = self.writes.handles();
        for handle in handles.values_mut().filter(|h| h.ino == key) {
            handle.ino = aside;
        }
    }

    pub(in crate::fs) async fn download_into(
        &self,
        spool: &mut SpoolFile,
        bitstream: &BitstreamInfo,
    ) -> FsResult<()> {
        let mut stream = self
            .client
            .download(bitstream.id, 0, bitstream.size)
            .await?;
        let mut offset = 0;
        while let Some(chunk) = stream.next_chunk().await? {
            spool.write_at(offset, &chunk)?;
            offset += chunk.len() as u64;
        }
        Ok(())
    }

    /// A read handle on a file open for writing shares its spool (and sees what is written).
    pub fn join_if_writing(&self, ino: u64) -> Option<u64> {
        self.join_open_file(ino, false, None).ok().flatten()
    }

    /// Whether the handle is one of a file open for writing.
    pub fn is_write_handle(&self, fh: u64) -> bool {
        self.writes.handles().contains_key(&fh)
    }

    /// What a close or fsync of handle `fh` needs, when that is known at once: nothing for a
    /// handle that writes nothing. None when the file may need saving: see [`MidasFs::flush`].
    pub fn cached_flush(&self, fh: u64) -> Option<FsResult<()>> {
        (!self.is_write_handle(fh)).then_some(Ok(()))
    }

    /// The kernel's release of any handle: a reader's goes now; a writer's last release may
    /// upload, in the background (see [`MidasFs::release_write`]), which unmount waits for.
    pub fn release_handle(self: &Arc<Self>, fh: u64) {
        if let Some(reader) = self.release(fh) {
            self.after_read(&reader);
        }
        if self.is_write_handle(fh) {
            let fs = Arc::clone(self);
            self.tasks
                .spawn(Work::Needed, async move { fs.release_write(fh).await });
        }
    }

    /// A write from the kernel (see [`MidasFs::write`]); when the file has just become large
    /// enough to be sent while it is written, that starts in the background.
    pub fn handle_write(self: &Arc<Self>, fh: u64, offset: u64, bytes: &[u8]) -> FsResult<u32> {
        let (written, early) = self.write(fh, offset, bytes)?;
        if let Some(early) = early {
            let fs = Arc::clone(self);
            self.tasks
                .spawn(Work::Needed, async move { fs.send_early(early).await });
        }
        Ok(written)
    }

    /// A write into the spool. When the file has just become large enough to be sent while it
    /// is written, the answer carries the sender to start (see [`MidasFs::send_early`]).
    pub fn write(&self, fh: u64, offset: u64, bytes: &[u8]) -> FsResult<(u32, Option<EarlyStart>)> {
        let (_, file) = self.writes.file_of_handle(fh).ok_or_else(|| {
            FsError::new(
                Kind::BadHandle,
                format!("handle {fh} is not open for writing"),
            )
        })?;
        let written = u32::try_from(bytes.len())
            .map_err(|_| FsError::new(Kind::Invalid, "write too large"))?;
        let mut data = file.lock();
        let appending = offset == data.spool.len();
        let keep = data.spool.len();
        // A copy that fails (ENOSPC) leaves the content as it was: only this write fails.
        let spool = data.spool_to_change(&self.writes.spool, keep)?;
        if let Err(err) = spool.write_at(offset, bytes) {
            data.failed_write = Some(err.clone());
            data.early.spoil();
            return Err(err);
        }
        data.dirty = true;
        data.mtime = SystemTime::now();
        let FileData {
            early,
            target,
            spool,
            ..
        } = &mut *data;
        let start = early.wrote(appending, spool.len(), || match target {
            Target::New {
                container: Container::Folder(folder),
                name,
                ..
            } => Some((*folder, name.clone(), spool.path().to_owned())),
            _ => None,
        });
        if start.is_some() {
            // Sent before its MD5 is known: nothing asks for it (see `early`), and the
            // hashing would take a CPU from the writing and the sending.
            spool.stop_hashing();
        }
        Ok((written, start))
    }

    /// Reads through a write handle: from the spool, which holds the current content.
    pub fn read_written(&self, fh: u64, offset: u64, size: u32) -> Option<FsResult<Vec<u8>>> {
        let (_, file) = self.writes.file_of_handle(fh)?;
        let data = file.lock();
        Some(data.spool.read_at(offset, size))
    }

    /// `close` by the process `closer`, and `fsync` (no closer): uploads the file if it
    /// changed; the upload's error is the answer. A close by another process than the one that
    /// opened the handle uploads nothing: that is a child which inherited the descriptor and
    /// closes it as it starts another program or exits, while the opener may still be writing.
    /// The opener's close uploads, or else the last release.
    pub async fn flush(&self, fh: u64, closer: Option<u32>) -> FsResult<()> {
        let saver = match self.writes.handles().get(&fh) {
            Some(handle) => handle.saver,
            None => return Ok(()),
        };
        if closer.is_some() && closer != saver {
            return Ok(());
        }
        match self.writes.file_of_handle(fh) {
            Some((ino, file)) => self.save(ino, &file).await,
            None => Ok(()),
        }
    }

    /// The last close of a handle. A file still dirty (written after its last flush, which
    /// `close` normally prevents) is uploaded here; its error can only be logged.
    pub async fn release_write(&self, fh: u64) {
        // The handle and its file, taken under the lock that `set_aside` renumbers both under.
        let (ino, file) = {
            let files = self.writes.files();
            let Some(WriteHandle { ino, .. }) = self.writes.handles().remove(&fh) else {
                return;
            };
            let Some(file) = files.get(&ino).cloned() else {
                return;
            };
            (ino, file)
        };
        let last = {
            let mut data = file.lock();
            data.handles = data.handles.saturating_sub(1);
            data.handles == 0
        };
        if !last {
            return;
        }
        // Its upload after close (write-back) comes first.
        self.settle_write_back(ino).await;
        let retry = {
            let data = file.lock();
            // A handle that joined meanwhile may be writing: its own last close uploads.
            data.handles == 0 && data.dirty && !data.unlinked && !data.spool.is_recovered()
        };
        if retry {
            if let Err(err) = self.save_through(ino, &file).await {
                log::warn!("{}: {err}", self.describe(ino));
            }
        }
        let _one_at_a_time = file.upload.lock().await;
        let leftover = {
            let mut data = file.lock();
            (data.handles == 0).then(|| (data.early.take(), data.spool.path().to_owned()))
        };
        if let Some((early, path)) = leftover {
            // Sent early and then unlinked: nothing of it stays on the server.
            self.discard_early(early.stop().await, &path).await;
        }
        let mut files = self.writes.files();
        let mut data = file.lock();
        if data.handles > 0 {
            return;
        }
        if data.dirty && !data.unlinked && !data.spool.is_recovered() {
            // Neither saved nor in the recovery directory: the spool file is all there is.
            data.spool.keep();
        }
        // Under the number it has now: a save by rename may have set it aside meanwhile, and
        // its old number may hold another file by now.
        let Some(key) = file.number_among(&files, Some(ino)) else {
            return;
        };
        files.remove(&key);
        if let Target::New { parent_ino, .. } = &data.target {
            // Never made it to the server (the data is in the recovery directory).
            let parent = *parent_ino;
            drop(data);
            drop(files);
            self.listings
                .patch(parent, |entries| entries.retain(|e| e.ino != key));
        }
    }

    pub(in crate::fs) async fn truncate(&self, ino: u64, size: u64) -> FsResult<()> {
        // A file open for writing: truncated through a handle of its own, so that its last
        // close, which may be under way, cannot miss the change. If this handle is the last
        // one, its release saves the change.
        if let Some(fh) = self.join_open_file(ino, false, None)? {
            let truncated = match self.writes.file_of_handle(fh) {
                Some((_, file)) => {
                    let mut data = file.lock();
                    if data.spool.len() == size {
                        Ok(())
                    } else {
                        data.resize(&self.writes.spool, size)
                    }
                }
                None => Ok(()),
            };
            self.release_write(fh).await;
            return truncated;
        }
        let current = self.node_data(ino)?;
        if current.kind.content_size() == Some(size) {
            return Ok(());
        }
        // A closed file: open, truncate and save it as a close would.
        let fh = self.open_write(ino, size == 0, std::process::id()).await?;
        let result = async {
            if let Some((_, file)) = self.writes.file_of_handle(fh) {
                file.lock().resize(&self.writes.spool, size)?;
            }
            self.flush(fh, None).await
        }
        .await;
        self.release_write(fh).await;
        result
    }

    /// The entry `name` of `dir` for a rename or an unlink, once no upload of it is running.
    /// A new file, or a file of an item directory, may be uploading under this name (another
    /// thread's close): its upload finishes first, the entry is what the file became, and the
    /// guard keeps further uploads of it off until the caller is done.
    pub(in crate::fs) async fn settled_child(
        &self,
        dir: u64,
        name: &str,
    ) -> FsResult<(Entry, Option<tokio::sync::OwnedMutexGuard<()>>)> {
        let entry = self
            .child(dir, name)
            .await?
            .ok_or_else(|| FsError::not_found(name))?;
        let file = match entry.data.kind {
            NodeKind::NewFile { .. } => self.writes.files().get(&entry.ino).cloned(),
            NodeKind::Bitstream { .. } => self.open_file_of(&entry).1,
            _ => None,
        };
        let Some(file) = file else {
            return Ok((entry, None));
        };
        let guard = Arc::clone(&file.upload).lock_owned().await;
        let entry = self
            .child(dir, name)
            .await?
            .ok_or_else(|| FsError::not_found(name))?;
        Ok((entry, Some(guard)))
    }

    /// A file removed while open for writing is not uploaded any more.
    pub(in crate::fs) fn mark_unlinked(&self, ino: u64) {
        if let Some(file) = self.writes.files().get(&ino) {
            file.mark_unlinked();
        }
    }

    /// The files open for writing whose close makes a new revision of the single-file item
    /// `item_id`, whatever inode they were opened by.
    /// (Each with the number it is kept under.)
    pub(in crate::fs) fn files_writing_item(&self, item_id: Id) -> Vec<(u64, Arc<WriteFile>)> {
        self.writes
            .open_files()
            .into_iter()
            .filter(|(_, file)| {
                matches!(&file.lock().target, Target::ItemFile { item, .. } if item.id == item_id)
            })
            .collect()
    }
}

impl WriteFile {
    /// The file is under no name any more: its close uploads nothing (its handles still read
    /// what they wrote until the last close).
    pub(in crate::fs) fn mark_unlinked(&self) {
        let mut data = self.lock();
        data.unlinked = true;
        data.early.spoil();
        // No later mount may send it either.
        data.spool.clear_record();
        data.sends.replaced().for_each(SpoolFile::clear_record);
    }
}
