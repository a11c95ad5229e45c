//! Writing through the mount: new files, overwrites, mkdir, rmdir, unlink, rename, truncate,
//! times and metadata.
//!
//! Rules:
//! - A file open for writing is a local spool file; its content goes to Midas when the file is
//!   closed (flush) or fsync'ed, and the upload's error is what `close`/`fsync` return. Only the
//!   close by the process that opened the handle counts (see [`MidasFs::flush`]).
//! - A new file becomes an item holding one bitstream of the same name, as `pydas.upload` makes:
//!   `item.create` → `upload.generatetoken` (with the MD5: a known content is not sent again) →
//!   `upload.perform` into the head revision. Until then it is a local entry (`NodeKind::NewFile`).
//!   One that grows past 64 MiB in order is sent while it is written instead (`super::early`).
//! - Overwriting an existing file uploads a NEW revision without checksum (Midas keeps the
//!   history, and the dedup path, which silently does nothing when the name exists, is never
//!   taken). A bitstream of an item directory is replaced in the head revision instead.
//! - All handles of one inode share one spool file: they see each other's writes, and the
//!   close that finds the file dirty uploads what is there (the last close uploads last).
//! - A failed upload keeps the data: the spool file moves to `<spool-dir>/recovery/` and a
//!   warning names it and its intended place. A file whose write failed (ENOSPC) is never
//!   uploaded half-written.
//! - A rename over an existing entry renames first and deletes the old target after, so a
//!   failure in between leaves two entries rather than none; but a file just made through the
//!   mount renamed over a single-file item (a save by rename) becomes a new revision of that
//!   item instead (`replace`).

mod replace;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::early::{EarlyStart, EarlyUpload, Sent, Stopped};
use super::inode::{Attr, BitstreamInfo, ItemInfo, NodeData, NodeKind, ROOT};
use super::names;
use super::spool::{Spool, SpoolConfig, SpoolFile};
use super::{bitstream_info, unknown_inode, Entry, FsError, FsResult, MidasFs, META_PREFIX};
use crate::midas::types::{Id, Item, PRIVACY_PUBLIC};
use crate::midas::{self, UploadRevision};

/// How often an upload that broke is resumed (from the server's offset) before it fails.
const UPLOAD_RETRIES: u32 = 3;
const UPLOAD_BACKOFF: Duration = Duration::from_millis(500);
/// New files smaller than this are sent without asking Midas first whether it holds their
/// content (the checksum dedup): the question costs a round trip, more than sending them.
const CHECKSUM_MIN_SIZE: u64 = 1024 * 1024;

/// The write-side state of a mount.
pub struct Writes {
    spool: Spool,
    /// Files open for writing, by the inode they were opened through.
    files: Mutex<HashMap<u64, Arc<WriteFile>>>,
    /// Every open handle of the files open for writing.
    handles: Mutex<HashMap<u64, WriteHandle>>,
    /// Numbers for new files' inodes.
    next_local: AtomicU64,
    /// Modification times set through the mount, by canonical inode, kept for the mount's life
    /// (Midas has no such field; `rsync -a` needs to see the times it set).
    mtimes: Mutex<HashMap<u64, SystemTime>>,
    /// Items created for uploads that failed, whose removal failed too (server gone): hidden
    /// from listings, and removed at the next upload.
    orphans: Mutex<Vec<Id>>,
    /// Items this mount made of new files, until they are renamed or removed: a save by rename
    /// (a temporary file renamed over the file it replaces) turns such an item into a new
    /// revision of the item it replaces.
    fresh: Mutex<HashMap<Id, Instant>>,
    /// Items renamed to `NAME~` within a folder, by (folder inode, old name): vim renames the
    /// file it saves to `NAME~`, writes a new `NAME`, and removes `NAME~`; that removal makes the
    /// new content a revision of the renamed item instead.
    renamed_away: Mutex<HashMap<(u64, String), Id>>,
}

impl Writes {
    pub fn new(config: &SpoolConfig) -> Writes {
        Writes {
            spool: Spool::new(config),
            files: Mutex::default(),
            handles: Mutex::default(),
            next_local: AtomicU64::new(1),
            mtimes: Mutex::default(),
            orphans: Mutex::default(),
            fresh: Mutex::default(),
            renamed_away: Mutex::default(),
        }
    }

    fn files(&self) -> MutexGuard<'_, HashMap<u64, Arc<WriteFile>>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A snapshot of the files open for writing, by inode.
    fn open_files(&self) -> Vec<(u64, Arc<WriteFile>)> {
        self.files()
            .iter()
            .map(|(ino, file)| (*ino, Arc::clone(file)))
            .collect()
    }

    fn handles(&self) -> MutexGuard<'_, HashMap<u64, WriteHandle>> {
        self.handles.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn orphans(&self) -> MutexGuard<'_, Vec<Id>> {
        self.orphans.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fresh(&self) -> MutexGuard<'_, HashMap<Id, Instant>> {
        self.fresh.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long ago this mount made item `id` of a new file, if it is not renamed or removed.
    pub fn fresh_for(&self, id: Id) -> Option<Duration> {
        self.fresh().get(&id).map(Instant::elapsed)
    }

    fn renamed_away(&self) -> MutexGuard<'_, HashMap<(u64, String), Id>> {
        self.renamed_away.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mtimes(&self) -> MutexGuard<'_, HashMap<u64, SystemTime>> {
        self.mtimes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn file_of_handle(&self, fh: u64) -> Option<(u64, Arc<WriteFile>)> {
        let ino = self.handles().get(&fh)?.ino;
        let file = self.files().get(&ino).cloned()?;
        Some((ino, file))
    }

    /// Files open for writing or still uploading after their close, and the bytes they hold.
    pub fn in_flight(&self) -> (usize, u64) {
        (self.files().len(), self.spool.used_bytes())
    }

    pub fn recovery_dir(&self) -> std::path::PathBuf {
        self.spool.recovery_dir()
    }

    /// The modification time set through the mount for this canonical inode, if any.
    pub fn mtime_override(&self, canonical: u64) -> Option<SystemTime> {
        self.mtimes().get(&canonical).copied()
    }
}

/// A handle on a file open for writing.
struct WriteHandle {
    ino: u64,
    /// The process whose `close` of the handle uploads the file (see [`MidasFs::flush`]); none
    /// for a reader of a file being written.
    saver: Option<u32>,
}

/// One file open for writing.
struct WriteFile {
    data: Mutex<FileData>,
    /// One upload at a time per file.
    upload: Arc<tokio::sync::Mutex<()>>,
}

impl WriteFile {
    fn lock(&self) -> MutexGuard<'_, FileData> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct FileData {
    spool: SpoolFile,
    /// Changed since the last successful upload.
    dirty: bool,
    /// Removed while open: nothing is uploaded any more.
    unlinked: bool,
    /// A write failed (ENOSPC…): the content is incomplete, so it is never uploaded; closing
    /// returns this error and the data goes to the recovery directory.
    failed_write: Option<FsError>,
    handles: u32,
    target: Target,
    /// When the content last changed.
    mtime: SystemTime,
    /// The last upload of this open file was empty and made a revision (or the item) of its
    /// own: the next one replaces that empty bitstream in its revision. A shell redirection
    /// (`echo x > f`) closes a duplicate descriptor, so uploads, before the command writes;
    /// without this Midas would keep an empty revision before every such write.
    empty_upload: bool,
    /// A large new file's upload while it is written (see [`super::early`]).
    early: EarlyUpload,
}

/// Where a file's content goes.
#[derive(Debug, Clone)]
enum Target {
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
    fn parent_ino(&self) -> u64 {
        match self {
            Target::New { parent_ino, .. }
            | Target::ItemFile { parent_ino, .. }
            | Target::Bitstream { parent_ino, .. } => *parent_ino,
        }
    }
}

/// What a directory is on the server, for making things in it.
#[derive(Debug, Clone)]
enum Container {
    Folder(Id),
    Item(ItemInfo),
}

/// A new file being saved.
struct NewFile<'a> {
    parent_ino: u64,
    /// The name it is shown under.
    name: &'a str,
    path: &'a std::path::Path,
    size: u64,
    running_md5: Option<String>,
}

impl NewFile<'_> {
    /// Its upload into the new item `item_id`, as `midas_name`.
    fn upload<'a>(&'a self, item_id: Id, midas_name: &'a str) -> Upload<'a> {
        Upload {
            item_id,
            file_name: midas_name,
            path: self.path,
            size: self.size,
            revision: UploadRevision::Head,
            md5: self.running_md5.as_deref(),
        }
    }
}

/// The bytes of one upload: a spool file of `size` bytes, into item `item_id` as `file_name`.
struct Upload<'a> {
    item_id: Id,
    file_name: &'a str,
    path: &'a std::path::Path,
    size: u64,
    revision: UploadRevision,
    /// The file's MD5, if known (else computed when needed).
    md5: Option<&'a str>,
}

/// Where a `perform` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UploadFrom {
    Start,
    /// Where parts sent before left it.
    Offset(u64),
    /// Where the server says it is (`getoffset`).
    ServerOffset,
}

/// What an upload produced: the node data for the file, and the entry for its directory.
struct Uploaded {
    node: NodeData,
    entry: Entry,
}

/// How a failed server call becomes an errno when it was a change. Midas says −151 for both
/// "missing" and "forbidden"; for a change to an object the caller could list, it is the right.
pub(super) fn write_error(err: midas::Error) -> FsError {
    let errno = match &err {
        midas::Error::Api { code: -151, .. } => libc::EACCES,
        midas::Error::Api {
            code: -150,
            message,
            ..
        } if message.contains("already exists") => libc::EEXIST,
        midas::Error::Api {
            code: 0, message, ..
        } if message.contains("already used") => libc::EEXIST,
        _ => return FsError::from(err),
    };
    FsError::new(errno, err.to_string())
}

fn read_only_error() -> FsError {
    FsError::new(libc::EROFS, "the mount is read-only")
}

impl MidasFs {
    fn check_writable(&self) -> FsResult<()> {
        if self.config.read_only {
            return Err(read_only_error());
        }
        Ok(())
    }

    fn node_data(&self, ino: u64) -> FsResult<NodeData> {
        self.nodes()
            .get(&ino)
            .map(|n| n.data.clone())
            .ok_or_else(|| unknown_inode(ino))
    }

    /// The node's inode number as listings give it (a written new file's node keeps the number
    /// the kernel knows, but its data is the item it became).
    fn canonical_ino(&self, ino: u64) -> u64 {
        self.nodes()
            .get(&ino)
            .map_or(ino, |n| n.data.kind.ino(self.root_folder()))
    }

    fn container(&self, dir: u64) -> FsResult<Container> {
        let data = self.node_data(dir)?;
        if !data.writable {
            return Err(FsError::new(
                libc::EACCES,
                format!("inode {dir}: no write permission"),
            ));
        }
        match data.kind {
            NodeKind::Folder { id, .. } => Ok(Container::Folder(id)),
            NodeKind::ItemDir { item } => Ok(Container::Item(item)),
            NodeKind::Root | NodeKind::Communities | NodeKind::Users | NodeKind::Search(_) => Err(
                FsError::new(libc::EACCES, "only folders and items can hold new entries"),
            ),
            NodeKind::Home { .. }
            | NodeKind::ItemFile { .. }
            | NodeKind::SavedFile { .. }
            | NodeKind::Bitstream { .. }
            | NodeKind::NewFile { .. } => Err(FsError::new(libc::ENOTDIR, "not a directory")),
        }
    }

    async fn child(&self, dir: u64, name: &str) -> FsResult<Option<Entry>> {
        let entries = self.listing(dir).await?;
        Ok(entries.iter().find(|e| e.name == name).cloned())
    }

    /// The entry `name` of `dir` for a rename or an unlink, once no upload of it is running.
    /// A new file may be uploading under this name (another thread's close): its upload
    /// finishes first, the entry is what the file became, and the guard keeps further uploads
    /// of it off until the caller is done.
    async fn settled_child(
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

    /// What a fetched listing lacks: new files not uploaded yet, and times set through the mount.
    pub(super) fn add_local_state(&self, dir: u64, entries: &mut Vec<Entry>) {
        {
            let orphans = self.writes.orphans();
            if !orphans.is_empty() {
                entries.retain(|e| {
                    !matches!(&e.data.kind, NodeKind::ItemDir { item } if orphans.contains(&item.id))
                });
            }
        }
        {
            let mtimes = self.writes.mtimes();
            if !mtimes.is_empty() {
                for entry in entries.iter_mut() {
                    if let Some(mtime) = mtimes.get(&entry.ino) {
                        entry.data.mtime = *mtime;
                    }
                }
            }
        }
        let files = self.writes.open_files();
        let public = self.is_public(dir);
        for (ino, file) in files {
            let data = file.lock();
            if let (
                Target::New {
                    local,
                    parent_ino,
                    name,
                    ..
                },
                false,
            ) = (&data.target, data.unlinked || data.spool.is_recovered())
            {
                if *parent_ino == dir {
                    entries.retain(|e| e.name != *name);
                    entries.push(Entry {
                        name: name.clone(),
                        ino,
                        data: NodeData {
                            kind: NodeKind::NewFile { local: *local },
                            mtime: data.mtime,
                            writable: true,
                            public,
                        },
                    });
                }
            }
        }
    }

    /// The size and time of a file open for writing, and times set through the mount.
    pub(super) fn adjust_attr(&self, ino: u64, attr: &mut Attr) {
        if let Some(file) = self.writes.files().get(&ino) {
            let data = file.lock();
            attr.size = data.spool.len();
            attr.mtime = data.mtime;
        }
        if let Some(mtime) = self.writes.mtime_override(self.canonical_ino(ino)) {
            attr.mtime = mtime;
        }
    }

    /// A path for messages: the names of the node and its parents as the listings show them.
    fn describe(&self, ino: u64) -> String {
        let nodes = self.nodes();
        let mut parts = Vec::new();
        let mut current = ino;
        while current != ROOT && parts.len() < 64 {
            let Some(node) = nodes.get(&current) else {
                parts.push(format!("(inode {current})"));
                break;
            };
            let name = self
                .listings
                .last(node.parent)
                .and_then(|entries| {
                    let entry = entries.iter().find(|e| e.ino == current)?;
                    Some(entry.name.clone())
                })
                .unwrap_or_else(|| format!("(inode {current})"));
            parts.push(name);
            current = node.parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    /// What the sidecar of a file's spool says: where its data is going (see `super::spool`).
    fn spool_about(&self, ino: u64, target: &Target) -> serde_json::Map<String, serde_json::Value> {
        let mut about = serde_json::Map::new();
        about.insert("server".into(), self.client.base_url().into());
        match target {
            Target::New {
                parent_ino,
                container,
                name,
                ..
            } => {
                about.insert(
                    "path".into(),
                    format!("{}/{name}", self.describe(*parent_ino)).into(),
                );
                about.insert("name".into(), name.clone().into());
                match container {
                    Container::Folder(id) => about.insert("folder_id".into(), (*id).into()),
                    Container::Item(item) => about.insert("item_id".into(), item.id.into()),
                };
            }
            Target::ItemFile { item, .. } | Target::Bitstream { item, .. } => {
                let path = self.describe(ino);
                let name = path.rsplit('/').next().unwrap_or_default().to_owned();
                about.insert("path".into(), path.into());
                about.insert("name".into(), name.into());
                about.insert("item_id".into(), item.id.into());
                if let Target::Bitstream { bitstream, .. } = target {
                    about.insert("bitstream_id".into(), bitstream.id.into());
                }
            }
        }
        about
    }

    /// Writes the sidecar of a file's spool for its current target.
    fn describe_spool(&self, ino: u64, file: &WriteFile) {
        let target = file.lock().target.clone();
        let about = self.spool_about(ino, &target);
        file.lock().spool.describe(&about);
    }

    // ---- files ----

    /// Creates a new file (local until its first flush) and opens it for writing, for the
    /// process `opener`.
    pub fn create(&self, parent: u64, name: &str, opener: u32) -> FsResult<(Attr, u64)> {
        self.check_writable()?;
        let container = self.container(parent)?;
        if let Some(entries) = self.cached_listing(parent) {
            if entries.iter().any(|e| e.name == name) {
                return Err(FsError::new(libc::EEXIST, format!("{name} exists")));
            }
        }
        let early = match container {
            Container::Folder(_) => {
                // Any listing will do, however old: it is a guess at what the file is.
                let siblings = self.listings.last(parent);
                let names = siblings.iter().flat_map(|entries| entries.iter());
                EarlyUpload::for_new_file(name, names.map(|e| e.name.as_str()))
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
            },
        };
        let file = Arc::new(WriteFile {
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
            }),
            upload: Arc::default(),
        });
        self.describe_spool(ino, &file);
        self.writes.files().insert(ino, file);
        let fh = self.new_handle(ino, Some(opener));
        self.remember(parent, &entry);
        let attr = entry.attr();
        self.listings.patch(parent, |entries| entries.push(entry));
        Ok((attr, fh))
    }

    fn new_handle(&self, ino: u64, saver: Option<u32>) -> u64 {
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
                libc::EACCES,
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
            _ => return Err(FsError::new(libc::EISDIR, "is a directory")),
        };
        let mut spool = self.writes.spool.create()?;
        if !truncate {
            let bitstream = content.ok_or_else(|| unknown_inode(ino))?;
            self.download_into(&mut spool, &bitstream).await?;
        }
        // Another open may have set the file up while this one downloaded: share its spool.
        if let Some(fh) = self.join_open_file(ino, truncate, Some(opener))? {
            return Ok(fh);
        }
        let file = Arc::new(WriteFile {
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
            }),
            upload: Arc::default(),
        });
        self.describe_spool(ino, &file);
        self.writes.files().insert(ino, file);
        Ok(self.new_handle(ino, Some(opener)))
    }

    /// A new handle on a file already open for writing.
    fn join_open_file(
        &self,
        ino: u64,
        truncate: bool,
        saver: Option<u32>,
    ) -> FsResult<Option<u64>> {
        let Some(file) = self.writes.files().get(&ino).cloned() else {
            return Ok(None);
        };
        {
            let mut data = file.lock();
            if truncate && !data.spool.is_empty() {
                data.spool.set_len(0)?;
                data.early.spoil();
                data.dirty = true;
                data.mtime = SystemTime::now();
            }
            data.handles += 1;
        }
        Ok(Some(self.new_handle(ino, saver)))
    }

    async fn download_into(
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

    /// A write into the spool. When the file has just become large enough to be sent while it
    /// is written, the answer carries the sender to start (see [`MidasFs::send_early`]).
    pub fn write(&self, fh: u64, offset: u64, bytes: &[u8]) -> FsResult<(u32, Option<EarlyStart>)> {
        let (_, file) = self.writes.file_of_handle(fh).ok_or_else(|| {
            FsError::new(libc::EBADF, format!("handle {fh} is not open for writing"))
        })?;
        let written = u32::try_from(bytes.len())
            .map_err(|_| FsError::new(libc::EINVAL, "write too large"))?;
        let mut data = file.lock();
        let appending = offset == data.spool.len();
        if let Err(err) = data.spool.write_at(offset, bytes) {
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
            // Sent before its MD5 is known: nothing asks for it (see `super::early`), and the
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
        let Some(WriteHandle { ino, .. }) = self.writes.handles().remove(&fh) else {
            return;
        };
        let Some(file) = self.writes.files().get(&ino).cloned() else {
            return;
        };
        let last = {
            let mut data = file.lock();
            data.handles = data.handles.saturating_sub(1);
            data.handles == 0
        };
        if !last {
            return;
        }
        let retry = {
            let data = file.lock();
            data.dirty && !data.unlinked && !data.spool.is_recovered()
        };
        if retry {
            if let Err(err) = self.save(ino, &file).await {
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
        files.remove(&ino);
        if let Target::New { parent_ino, .. } = &data.target {
            // Never made it to the server (the data is in the recovery directory).
            let parent = *parent_ino;
            drop(data);
            drop(files);
            self.listings
                .patch(parent, |entries| entries.retain(|e| e.ino != ino));
        }
    }

    /// Uploads the file if dirty; on failure moves the spool to the recovery directory.
    async fn save(&self, ino: u64, file: &WriteFile) -> FsResult<()> {
        let _one_at_a_time = file.upload.lock().await;
        // Whatever happens next, nothing more is sent early.
        let early = file.lock().early.take();
        let early = early.stop().await;
        let (nothing_to_send, failed_write, path) = {
            let data = file.lock();
            (
                !data.dirty || data.unlinked,
                data.failed_write.clone(),
                data.spool.path().to_owned(),
            )
        };
        if nothing_to_send || failed_write.is_some() {
            self.discard_early(early, &path).await;
            return match failed_write {
                Some(err) => {
                    self.keep_unsaved(ino, file, &err);
                    Err(err)
                }
                None => Ok(()),
            };
        }
        let (target, size, running_md5, replace_empty) = {
            let mut data = file.lock();
            // Writes during the upload make the file dirty again, for the next flush.
            data.dirty = false;
            (
                data.target.clone(),
                data.spool.len(),
                data.spool.running_md5(),
                data.empty_upload,
            )
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
            Err(err) => {
                file.lock().dirty = true;
                self.keep_unsaved(ino, file, &err);
                Err(err)
            }
        }
    }

    /// Moves the spool of a file that could not be saved into the recovery directory, loudly.
    fn keep_unsaved(&self, ino: u64, file: &WriteFile, err: &FsError) {
        let target = file.lock().target.clone();
        if let Target::New { parent_ino, .. } = &target {
            // Not on the server: the name goes away with the failure.
            self.listings
                .patch(*parent_ino, |entries| entries.retain(|e| e.ino != ino));
        }
        let intended = match &target {
            Target::New {
                parent_ino, name, ..
            } => format!("{}/{name}", self.describe(*parent_ino)),
            _ => self.describe(ino),
        };
        let mut data = file.lock();
        let mut about = self.spool_about(ino, &data.target);
        about.insert("reason".into(), err.to_string().into());
        let file_name = about
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or("file")
            .to_owned();
        match data
            .spool
            .recover(&self.writes.spool.recovery_dir(), &file_name, &about)
        {
            Ok(kept) => log::warn!(
                "saving {intended} to Midas failed ({err}); its data is kept in {}",
                kept.display()
            ),
            Err(move_err) => {
                // Never deleted then: the next mount moves it to the recovery directory.
                data.spool.keep();
                log::warn!(
                    "saving {intended} to Midas failed ({err}); its data stays in {} \
                     (moving it to the recovery directory failed: {move_err})",
                    data.spool.path().display()
                );
            }
        }
    }

    /// Records a successful upload: the node shows the new content, the listing the entry.
    fn saved(&self, ino: u64, file: &WriteFile, target: &Target, uploaded: Uploaded) {
        let old_canonical = self.canonical_ino(ino);
        let new_canonical = uploaded.entry.ino;
        {
            let mut data = file.lock();
            if data.spool.is_recovered() {
                data.spool.saved();
            }
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
        }
        {
            let mut mtimes = self.writes.mtimes();
            if let Some(mtime) = mtimes.remove(&old_canonical) {
                mtimes.insert(new_canonical, mtime);
            }
        }
        {
            let mut nodes = self.nodes();
            if let Some(node) = nodes.get_mut(&ino) {
                node.data = uploaded.node.clone();
                // The kernel's pages of this inode may be older than what was uploaded.
                node.kernel_cached_md5 = None;
                node.metadata = None;
            }
        }
        if let (Target::New { .. }, NodeKind::SavedFile { item, .. }) =
            (target, &uploaded.node.kind)
        {
            self.writes.fresh().insert(item.id, Instant::now());
        }
        self.describe_spool(ino, file);
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
    }

    async fn upload_new(
        &self,
        file: &NewFile<'_>,
        container: &Container,
        early: Option<Stopped>,
    ) -> FsResult<Uploaded> {
        let midas_name = names::to_midas(file.name);
        match container {
            Container::Folder(folder) => {
                let (item_id, item) = match early {
                    Some(Stopped {
                        sent:
                            Sent {
                                item_id: Some(item_id),
                                token: Some(token),
                                held,
                            },
                        spoiled: false,
                    }) => {
                        // Sent early: only the rest goes now.
                        let from = held.map_or(UploadFrom::ServerOffset, UploadFrom::Offset);
                        let upload = file.upload(item_id, &midas_name);
                        let item = self.perform_resuming(&token, &upload, from).await;
                        (item_id, item)
                    }
                    early => {
                        self.discard_early(early, file.path).await;
                        let (item_id, token) = self.new_item_token(*folder, file).await?;
                        // Should this mount die now, the next one removes the item.
                        super::spool::add_to_sidecar(file.path, "made_item_id", item_id.into());
                        let item = match token {
                            Some(token) => {
                                let upload = file.upload(item_id, &midas_name);
                                self.perform_resuming(&token, &upload, UploadFrom::Start)
                                    .await
                            }
                            // Deduplicated: Midas copied the content it holds; no bytes were
                            // sent.
                            None => self.client.item_get(item_id).await.map_err(FsError::from),
                        };
                        (item_id, item)
                    }
                };
                let item = match item {
                    Ok(item) if item.name == midas_name => item,
                    other => {
                        // Nothing half-made stays visible.
                        self.delete_quietly(item_id).await;
                        return Err(other
                            .err()
                            .unwrap_or_else(|| self.name_taken(file.parent_ino, file.name)));
                    }
                };
                // A new item's first revision.
                Ok(self.saved_file(&item, 1, file.size, file.name.to_owned()))
            }
            Container::Item(item) => {
                self.discard_early(early, file.path).await;
                // Without checksum: a stale listing could hide a bitstream of this name in the
                // head revision, and the dedup path would then silently do nothing.
                self.send_file(
                    item.id,
                    &midas_name,
                    file.path,
                    file.size,
                    None,
                    UploadRevision::Head,
                )
                .await?;
                self.bitstream_uploaded(item.id, &midas_name, file.name)
                    .await
            }
        }
    }

    /// A new item named `name` in `folder` and a token to upload into it; no token when Midas
    /// deduplicated the content by its MD5 (it then copied it into the item).
    async fn new_item_token(
        &self,
        folder: Id,
        file: &NewFile<'_>,
    ) -> FsResult<(Id, Option<String>)> {
        let (parent_ino, name) = (file.parent_ino, file.name);
        let midas_name = names::to_midas(name);
        if file.size < CHECKSUM_MIN_SIZE {
            let (item_id, token) = self
                .client
                .upload_token_new_item(folder, &midas_name)
                .await
                .map_err(write_error)?;
            return Ok((item_id, Some(token)));
        }
        let md5 = match &file.running_md5 {
            Some(md5) => md5.clone(),
            None => md5_of(file.path).await?,
        };
        let created = self
            .client
            .item_create(folder, &midas_name)
            .await
            .map_err(write_error)?;
        if created.name != midas_name {
            // Midas renamed it: an item of that name appeared (or is hidden from us).
            self.delete_quietly(created.item_id).await;
            return Err(self.name_taken(parent_ino, name));
        }
        // A new item has no bitstream yet, so the dedup cannot skip the upload.
        match self
            .client
            .upload_token(created.item_id, &midas_name, Some(&md5))
            .await
        {
            Ok(token) => Ok((created.item_id, token)),
            Err(err) => {
                self.delete_quietly(created.item_id).await;
                Err(write_error(err))
            }
        }
    }

    fn name_taken(&self, parent_ino: u64, name: &str) -> FsError {
        FsError::new(
            libc::EEXIST,
            format!(
                "{}/{name}: an item of that name exists on the server",
                self.describe(parent_ino)
            ),
        )
    }

    /// A new revision holding the file, for an item shown as a file. After an empty upload of
    /// the same open file (`replace_empty`, see `FileData::empty_upload`), into that revision
    /// instead, whose empty bitstream then goes; if someone else changed the item meanwhile, a
    /// new revision as usual. Content the item holds already (its `md5`, when known, is the
    /// head's) is not sent again, and makes no revision.
    async fn upload_revision(
        &self,
        item: &ItemInfo,
        path: &std::path::Path,
        size: u64,
        md5: Option<&str>,
        replace_empty: bool,
    ) -> FsResult<Uploaded> {
        let current = self.client.item_get(item.id).await?;
        let head = current.head();
        let only = current.only_bitstream();
        if let (true, Some(head), Some(empty)) =
            (replace_empty, head, only.filter(|b| b.sizebytes == 0))
        {
            let updated = self
                .send_file(item.id, &empty.name, path, size, None, UploadRevision::Head)
                .await?
                .ok_or_else(|| skipped_upload(item.id))?;
            self.client
                .bitstream_delete(empty.bitstream_id)
                .await
                .map_err(write_error)?;
            let shown = names::to_display(&updated.name);
            return Ok(self.saved_file(&updated, head.revision, size, shown));
        }
        if let (false, Some(head), Some(only), Some(md5)) = (replace_empty, head, only, md5) {
            if only.checksum == md5 && u64::try_from(only.sizebytes) == Ok(size) {
                log::debug!("item {}: unchanged content, not sent again", item.id);
                let shown = names::to_display(&current.name);
                return Ok(self.saved_file(&current, head.revision, size, shown));
            }
        }
        let file_name = only.map_or_else(|| current.name.clone(), |only| only.name.clone());
        let revision = head.map_or(0, |head| head.revision) + 1;
        // Midas keeps metadata per revision: the new one gets the old one's.
        let metadata = self.client.item_get_metadata(item.id).await?;
        let updated = self
            .send_file(item.id, &file_name, path, size, None, UploadRevision::New)
            .await?
            .ok_or_else(|| skipped_upload(item.id))?;
        self.carry_metadata(item.id, &metadata).await?;
        Ok(self.saved_file(&updated, revision, size, names::to_display(&updated.name)))
    }

    /// An item file just uploaded, as the upload's answer describes it (see
    /// [`NodeKind::SavedFile`]).
    fn saved_file(&self, item: &Item, revision: i64, size: u64, shown: String) -> Uploaded {
        let kind = NodeKind::SavedFile {
            item: ItemInfo::new(item, revision),
            size,
        };
        // The user could upload it, so the user may change it.
        let public = item.privacy_status == PRIVACY_PUBLIC;
        let entry = self.entry(shown, kind, &item.date_update, true, public);
        Uploaded {
            node: entry.data.clone(),
            entry,
        }
    }

    async fn replace_bitstream(
        &self,
        item: &ItemInfo,
        old: &BitstreamInfo,
        path: &std::path::Path,
        size: u64,
    ) -> FsResult<Uploaded> {
        let current = self.client.item_get(item.id).await?;
        let file_name = current
            .head()
            .and_then(|h| h.bitstreams.iter().find(|b| b.bitstream_id == old.id))
            .map(|b| b.name.clone())
            .ok_or_else(|| FsError::not_found(format!("bitstream {}", old.id)))?;
        self.send_file(item.id, &file_name, path, size, None, UploadRevision::Head)
            .await?;
        self.client
            .bitstream_delete(old.id)
            .await
            .map_err(write_error)?;
        self.bitstream_uploaded(item.id, &file_name, &names::to_display(&file_name))
            .await
    }

    /// The newest bitstream of that name in the item's head, as a file of an item directory.
    async fn bitstream_uploaded(
        &self,
        item_id: Id,
        file_name: &str,
        shown: &str,
    ) -> FsResult<Uploaded> {
        let item = self.client.item_get(item_id).await?;
        let head = item.head().ok_or_else(|| {
            FsError::new(
                libc::EIO,
                format!("item {item_id} has no revision after an upload"),
            )
        })?;
        let bitstream = head
            .bitstreams
            .iter()
            .filter(|b| b.name == file_name)
            .max_by_key(|b| b.bitstream_id)
            .ok_or_else(|| {
                FsError::new(
                    libc::EIO,
                    format!("item {item_id}: the uploaded {file_name:?} is missing"),
                )
            })?;
        let info = ItemInfo::new(&item, head.revision);
        let entry = self.entry(
            shown.to_owned(),
            NodeKind::Bitstream {
                item: info,
                bitstream: bitstream_info(bitstream),
            },
            &bitstream.date,
            true,
            item.privacy_status == PRIVACY_PUBLIC,
        );
        Ok(Uploaded {
            node: entry.data.clone(),
            entry,
        })
    }

    /// `generatetoken` then `perform` (see [`MidasFs::perform_resuming`]): the item after the
    /// upload, or None when Midas deduplicated it by `checksum`.
    async fn send_file(
        &self,
        item_id: Id,
        file_name: &str,
        path: &std::path::Path,
        size: u64,
        checksum: Option<&str>,
        revision: UploadRevision,
    ) -> FsResult<Option<Item>> {
        let token = self
            .client
            .upload_token(item_id, file_name, checksum)
            .await
            .map_err(write_error)?;
        let Some(token) = token else {
            if checksum.is_none() {
                return Err(skipped_upload(item_id));
            }
            log::debug!("item {item_id}: {file_name:?} is already on the server; not sent again");
            return Ok(None);
        };
        let upload = Upload {
            item_id,
            file_name,
            path,
            size,
            revision,
            md5: None,
        };
        self.perform_resuming(&token, &upload, UploadFrom::Start)
            .await
            .map(Some)
    }

    /// `perform` from `from`, resuming from the server's offset after a transient failure (a
    /// bounded number of times). The answer is the item after the upload. An upload that went
    /// on from an offset the server gave after a failure is checked against the server's MD5.
    /// (Parts sent early each went on from the count the server answered the last one with, as
    /// one request's bytes do: those are not checked.)
    async fn perform_resuming(
        &self,
        token: &str,
        upload: &Upload<'_>,
        from: UploadFrom,
    ) -> FsResult<Item> {
        let Upload {
            item_id,
            file_name,
            path,
            size,
            revision,
            ..
        } = *upload;
        let mut attempts = 0;
        // Whether the server's copy may not be what was sent (see `verify_resumed`).
        let mut resumed = from == UploadFrom::ServerOffset;
        let mut offset = match from {
            UploadFrom::Start => Some(0),
            UploadFrom::Offset(offset) => Some(offset),
            UploadFrom::ServerOffset => None,
        };
        loop {
            let from_here = match offset {
                Some(offset) => offset,
                None => self.server_offset(token, size, &mut attempts).await?,
            };
            match self
                .client
                .upload_perform(token, item_id, file_name, path, from_here, size, revision)
                .await
            {
                Ok(item) if !resumed => return Ok(item),
                Ok(item) => {
                    self.verify_resumed(upload).await?;
                    return Ok(item);
                }
                Err(err) if err.is_transient() && attempts < UPLOAD_RETRIES => {
                    log::debug!("upload of {file_name:?} into item {item_id}: {err}; resuming");
                    resumed = true;
                    attempts += 1;
                    tokio::time::sleep(UPLOAD_BACKOFF * attempts).await;
                }
                Err(err) => return Err(write_error(err)),
            }
            // Midas appends whatever arrives to what it holds: only its own offset is a safe
            // place to go on from, so without an answer nothing is sent again.
            offset = None;
        }
    }

    /// How many bytes of an upload of `size` the server holds (`getoffset`), asked again after
    /// transient errors while `attempts` allows.
    async fn server_offset(&self, token: &str, size: u64, attempts: &mut u32) -> FsResult<u64> {
        loop {
            match self.client.upload_offset(token).await {
                Ok(held) if held <= size => return Ok(held),
                Ok(held) => {
                    return Err(FsError::new(
                        libc::EIO,
                        format!("the server holds {held} bytes of an upload of {size}"),
                    ))
                }
                Err(err) if err.is_transient() && *attempts < UPLOAD_RETRIES => {
                    *attempts += 1;
                    tokio::time::sleep(UPLOAD_BACKOFF * *attempts).await;
                }
                Err(err) => return Err(write_error(err)),
            }
        }
    }

    /// After a resumed upload, checks that the server's copy is what was sent. Midas appends
    /// what arrives to what it holds, so a broken request that it handled only after the
    /// `getoffset` the resume went on from leaves a corrupt file: that one is deleted, and the
    /// upload fails (its data goes to the recovery directory like any failed upload's).
    async fn verify_resumed(&self, upload: &Upload<'_>) -> FsResult<()> {
        let (item_id, file_name) = (upload.item_id, upload.file_name);
        let md5 = match upload.md5 {
            Some(md5) => md5.to_owned(),
            None => md5_of(upload.path).await?,
        };
        let item = self.client.item_get(item_id).await?;
        let stored = item.head().and_then(|head| {
            head.bitstreams
                .iter()
                .filter(|b| b.name == file_name)
                .max_by_key(|b| b.bitstream_id)
        });
        let Some(stored) = stored else {
            return Err(FsError::new(
                libc::EIO,
                format!("item {item_id}: the uploaded {file_name:?} is missing"),
            ));
        };
        if stored.checksum == md5 {
            return Ok(());
        }
        if let Err(err) = self.client.bitstream_delete(stored.bitstream_id).await {
            log::warn!(
                "could not remove the corrupt bitstream {}: {err}",
                stored.bitstream_id
            );
        }
        Err(FsError::new(
            libc::EIO,
            format!(
                "item {item_id}: the server's copy of {file_name:?} after a resumed upload \
                 differs from what was sent"
            ),
        ))
    }

    /// Removes an item made for an upload that failed; if the server cannot be reached, the
    /// item is hidden and removed later.
    pub(super) async fn delete_quietly(&self, item_id: Id) {
        if let Err(err) = self.client.item_delete(item_id).await {
            log::warn!(
                "could not remove the unfinished item {item_id} ({err}); trying again later"
            );
            self.writes.orphans().push(item_id);
        }
    }

    async fn remove_orphans(&self) {
        let orphans = std::mem::take(&mut *self.writes.orphans());
        for item_id in orphans {
            match self.client.item_delete(item_id).await {
                Ok(()) => log::info!("removed the unfinished item {item_id}"),
                Err(err) if err.api_code() == Some(-151) => {}
                Err(err) => {
                    log::debug!("unfinished item {item_id}: {err}");
                    self.writes.orphans().push(item_id);
                }
            }
        }
    }

    /// At mount, before anything else: the items a mount that died had made for files it did not
    /// finish sending (their data went to the recovery directory as the spool opened) are
    /// removed while they are still empty, so that no half-made object stays on the server.
    pub async fn roll_back_previous(&self) {
        for about in self.writes.spool.take_rescued() {
            let Some(item_id) = about.get("made_item_id").and_then(|v| v.as_i64()) else {
                continue;
            };
            let name = about.get("path").and_then(|v| v.as_str()).unwrap_or("?");
            if about.get("server").and_then(|v| v.as_str()) != Some(self.client.base_url()) {
                log::warn!(
                    "a previous midasfs left item {item_id} ({name}) unfinished on another \
                     server; remove it there"
                );
                continue;
            }
            match self.client.item_get(item_id).await {
                Ok(item) if item.head().is_none_or(|h| h.bitstreams.is_empty()) => {
                    match self.client.item_delete(item_id).await {
                        Ok(()) => log::warn!(
                            "removed the empty item {item_id} a previous midasfs made for \
                             {name} and did not finish (its data is in the recovery directory)"
                        ),
                        Err(err) => log::warn!(
                            "could not remove the unfinished item {item_id} ({name}): {err}"
                        ),
                    }
                }
                Ok(_) => log::info!("item {item_id} ({name}) holds content now: kept"),
                Err(err) => log::debug!("unfinished item {item_id}: {err}"),
            }
        }
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
                if let Err(err) = self.save(ino, &file).await {
                    log::warn!("{}: {err}", self.describe(ino));
                }
            }
        }
        let left = self.writes.orphans().clone();
        if !left.is_empty() {
            log::warn!("unfinished empty items stay on the server (remove them by hand): {left:?}");
        }
    }

    // ---- attributes ----

    /// chmod and chown are accepted and change nothing (Midas has no such fields); times are
    /// kept in memory for the mount's life; a size change goes through the spool.
    pub async fn setattr(
        &self,
        ino: u64,
        size: Option<u64>,
        mtime: Option<SystemTime>,
    ) -> FsResult<Attr> {
        self.check_writable()?;
        self.refuse_revision_change(ino)?;
        if let Some(size) = size {
            self.truncate(ino, size).await?;
        }
        if let Some(mtime) = mtime {
            let canonical = self.canonical_ino(ino);
            self.writes.mtimes().insert(canonical, mtime);
            let parent = self.parent(ino);
            self.listings.patch(parent, |entries| {
                for entry in entries
                    .iter_mut()
                    .filter(|e| e.ino == canonical || e.ino == ino)
                {
                    entry.data.mtime = mtime;
                }
            });
        }
        self.getattr(ino)
    }

    async fn truncate(&self, ino: u64, size: u64) -> FsResult<()> {
        if let Some(file) = self.writes.files().get(&ino).cloned() {
            let mut data = file.lock();
            if data.spool.len() != size {
                data.spool.set_len(size)?;
                data.early.spoil();
                data.dirty = true;
                data.mtime = SystemTime::now();
            }
            return Ok(());
        }
        let current = self.node_data(ino)?;
        if current.kind.content_size() == Some(size) {
            return Ok(());
        }
        // A closed file: open, truncate and save it as a close would.
        let fh = self.open_write(ino, size == 0, std::process::id()).await?;
        let result = async {
            if let Some((_, file)) = self.writes.file_of_handle(fh) {
                let mut data = file.lock();
                data.spool.set_len(size)?;
                data.dirty = true;
                data.mtime = SystemTime::now();
            }
            self.flush(fh, None).await
        }
        .await;
        self.release_write(fh).await;
        result
    }

    // ---- directories ----

    pub async fn mkdir(&self, parent: u64, name: &str) -> FsResult<Attr> {
        self.check_writable()?;
        super::trash::refuse_trash_dir(parent == ROOT, name)?;
        let folder = match self.container(parent)? {
            Container::Folder(id) => id,
            Container::Item(_) => {
                return Err(FsError::new(
                    libc::EPERM,
                    "an item directory holds files only",
                ))
            }
        };
        if self.child(parent, name).await?.is_some() {
            return Err(FsError::new(libc::EEXIST, format!("{name} exists")));
        }
        let created = self
            .client
            .folder_create(folder, &names::to_midas(name))
            .await
            .map_err(write_error)?;
        let entry = self.entry(
            name.to_owned(),
            NodeKind::Folder {
                id: created.folder_id,
                uuid: created.uuid.clone(),
            },
            &created.date_update,
            true,
            created.privacy_status == PRIVACY_PUBLIC,
        );
        self.remember(parent, &entry);
        // A new folder is empty: lookups in it need not ask the server.
        self.listings.insert(entry.ino, Arc::new(Vec::new()));
        let attr = entry.attr();
        self.listings.patch(parent, |entries| entries.push(entry));
        Ok(attr)
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.check_writable()?;
        let entry = self
            .child(parent, name)
            .await?
            .ok_or_else(|| FsError::not_found(name))?;
        if !entry.data.kind.is_dir() {
            return Err(FsError::new(
                libc::ENOTDIR,
                format!("{name} is not a directory"),
            ));
        }
        self.ensure_empty(&entry).await?;
        self.remove_entry(&entry).await?;
        self.listings
            .patch(parent, |entries| entries.retain(|e| e.ino != entry.ino));
        self.listings.remove(entry.ino);
        Ok(())
    }

    /// Checks with the server (not a cached listing) that a directory holds nothing.
    async fn ensure_empty(&self, entry: &Entry) -> FsResult<()> {
        let has_new_files = self.writes.files().values().any(|f| {
            let data = f.lock();
            matches!(&data.target, Target::New { parent_ino, .. } if *parent_ino == entry.ino)
                && !data.unlinked
        });
        let empty = !has_new_files
            && match &entry.data.kind {
                NodeKind::Folder { id, .. } => {
                    let children = self.client.folder_children(*id).await?;
                    children.folders.is_empty() && children.items.is_empty()
                }
                NodeKind::ItemDir { item } => {
                    let item = self.client.item_get(item.id).await?;
                    item.head().is_none_or(|h| h.bitstreams.is_empty())
                }
                _ => false,
            };
        if empty {
            Ok(())
        } else {
            Err(FsError::new(
                libc::ENOTEMPTY,
                format!("{} is not empty", entry.name),
            ))
        }
    }

    /// Deletes what an entry stands for on the server.
    async fn remove_entry(&self, entry: &Entry) -> FsResult<()> {
        let result = match &entry.data.kind {
            NodeKind::Folder { id, .. } => self.client.folder_delete(*id).await,
            NodeKind::ItemDir { item }
            | NodeKind::ItemFile { item, .. }
            | NodeKind::SavedFile { item, .. } => self.client.item_delete(item.id).await,
            NodeKind::Bitstream { bitstream, .. } => {
                self.client.bitstream_delete(bitstream.id).await
            }
            NodeKind::NewFile { .. } => {
                self.mark_unlinked(entry.ino);
                Ok(())
            }
            NodeKind::Root
            | NodeKind::Communities
            | NodeKind::Users
            | NodeKind::Home { .. }
            | NodeKind::Search(_) => {
                return Err(FsError::new(
                    libc::EPERM,
                    format!("{} cannot be removed", entry.name),
                ))
            }
        };
        result.map_err(write_error)?;
        if let Some(item) = entry.data.kind.item() {
            self.writes.fresh().remove(&item.id);
        }
        self.mark_unlinked(entry.ino);
        Ok(())
    }

    /// A file removed while open for writing is not uploaded any more.
    fn mark_unlinked(&self, ino: u64) {
        if let Some(file) = self.writes.files().get(&ino) {
            let mut data = file.lock();
            data.unlinked = true;
            data.early.spoil();
        }
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        self.check_writable()?;
        let (entry, _no_upload_meanwhile) = self.settled_child(parent, name).await?;
        if entry.data.kind.is_dir() {
            return Err(FsError::new(libc::EISDIR, format!("{name} is a directory")));
        }
        if self.unlink_renamed_away(parent, &entry).await? {
            return Ok(());
        }
        self.remove_entry(&entry).await?;
        self.listings
            .patch(parent, |entries| entries.retain(|e| e.ino != entry.ino));
        Ok(())
    }

    /// Renames or moves; an existing target is replaced (after the move, so that a failed
    /// move loses nothing), unless `no_replace`.
    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        no_replace: bool,
    ) -> FsResult<()> {
        self.check_writable()?;
        let (source, _no_upload_meanwhile) = self.settled_child(parent, name).await?;
        if parent == new_parent && name == new_name {
            return Ok(());
        }
        let target = self.child(new_parent, new_name).await?;
        if let Some(target) = &target {
            if no_replace {
                return Err(FsError::new(libc::EEXIST, format!("{new_name} exists")));
            }
            match (source.data.kind.is_dir(), target.data.kind.is_dir()) {
                (true, false) => {
                    return Err(FsError::new(
                        libc::ENOTDIR,
                        format!("{new_name} is not a directory"),
                    ))
                }
                (false, true) => {
                    return Err(FsError::new(
                        libc::EISDIR,
                        format!("{new_name} is a directory"),
                    ))
                }
                (true, true) => self.ensure_empty(target).await?,
                (false, false) => {}
            }
        }
        let destination = self.container(new_parent)?;
        if let (Some(target), Container::Folder(_)) = (&target, &destination) {
            if self.save_over(&source, target, new_parent).await? {
                let source_ino = source.ino;
                self.listings
                    .patch(parent, |entries| entries.retain(|e| e.ino != source_ino));
                return Ok(());
            }
        }
        let midas_name = names::to_midas(new_name);
        // Whether a move into another folder left the object public.
        let mut now_public = None;
        if let Some(item) = source.data.kind.item() {
            self.writes.fresh().remove(&item.id);
            // Only vim's backup name (`NAME~`): other renames keep their POSIX meaning.
            if parent == new_parent
                && !source.data.kind.is_dir()
                && new_name.strip_suffix('~') == Some(name)
            {
                self.writes
                    .renamed_away()
                    .insert((parent, name.to_owned()), item.id);
            }
        }
        match &source.data.kind {
            NodeKind::NewFile { .. } => {
                let file = self.writes.files().get(&source.ino).cloned();
                if let Some(file) = file {
                    let mut data = file.lock();
                    // What was sent early went under the old name.
                    data.early.spoil();
                    if let Target::New {
                        parent_ino,
                        container,
                        name,
                        ..
                    } = &mut data.target
                    {
                        *parent_ino = new_parent;
                        *container = destination;
                        *name = new_name.to_owned();
                    }
                    drop(data);
                    self.describe_spool(source.ino, &file);
                }
            }
            NodeKind::ItemFile { item, .. }
            | NodeKind::SavedFile { item, .. }
            | NodeKind::ItemDir { item } => {
                let Container::Folder(to) = destination else {
                    return Err(cross_device(name));
                };
                let is_file = !source.data.kind.is_dir();
                let mut current_name = names::to_midas(name);
                if parent != new_parent {
                    let Container::Folder(from) = self.container(parent)? else {
                        return Err(cross_device(name));
                    };
                    let moved = self
                        .client
                        .item_move(item.id, from, to)
                        .await
                        .map_err(write_error)?;
                    current_name = moved.name;
                    let matched = self
                        .match_item_access(item.id, moved.privacy_status, to)
                        .await;
                    now_public = Some(self.moved_access(matched, parent, new_parent, name)?);
                }
                if current_name != midas_name {
                    self.client
                        .item_rename(&item.uuid, &midas_name, is_file)
                        .await
                        .map_err(write_error)?;
                }
            }
            NodeKind::Folder { id, uuid } => {
                let Container::Folder(to) = destination else {
                    return Err(cross_device(name));
                };
                let uuid = if uuid.is_empty() {
                    self.client.folder_get(*id).await?.uuid
                } else {
                    uuid.clone()
                };
                let old_name = names::to_midas(name);
                // Renamed first: `folder.move` refuses a clash with the old name.
                if old_name != midas_name {
                    self.client
                        .folder_rename(&uuid, &midas_name)
                        .await
                        .map_err(write_error)?;
                }
                if parent != new_parent {
                    let moved = match self.client.folder_move(*id, to).await {
                        Ok(moved) => moved,
                        Err(err) => {
                            if old_name != midas_name {
                                if let Err(back) = self.client.folder_rename(&uuid, &old_name).await
                                {
                                    log::warn!("folder {id}: could not restore its name: {back}");
                                }
                            }
                            return Err(write_error(err));
                        }
                    };
                    let matched = self
                        .match_folder_access(*id, moved.privacy_status, to)
                        .await;
                    now_public = Some(self.moved_access(matched, parent, new_parent, name)?);
                }
            }
            NodeKind::Bitstream { bitstream, .. } => {
                if parent != new_parent {
                    return Err(cross_device(name));
                }
                self.client
                    .bitstream_rename(bitstream.id, &midas_name)
                    .await
                    .map_err(write_error)?;
            }
            NodeKind::Root
            | NodeKind::Communities
            | NodeKind::Users
            | NodeKind::Home { .. }
            | NodeKind::Search(_) => {
                return Err(FsError::new(
                    libc::EPERM,
                    format!("{name} cannot be renamed"),
                ))
            }
        }
        if let Some(target) = &target {
            if target.ino != source.ino {
                self.remove_entry(target).await?;
            }
        }
        let mut moved = source.clone();
        moved.name = new_name.to_owned();
        if let Some(public) = now_public {
            moved.data.public = public;
        }
        let source_ino = source.ino;
        self.listings
            .patch(parent, |entries| entries.retain(|e| e.ino != source_ino));
        self.listings.patch(new_parent, |entries| {
            entries.retain(|e| e.name != moved.name && e.ino != moved.ino);
            entries.push(moved);
        });
        if let Some(node) = self.nodes().get_mut(&source_ino) {
            node.parent = new_parent;
        }
        if let Some(public) = now_public {
            self.mark_access_below(source_ino, public);
        }
        Ok(())
    }

    // ---- metadata ----

    /// `user.midas.meta.<element>[.<qualifier>]` sets a metadata value of the item's head
    /// revision. Other `user.midas.*` names are read-only (EPERM); anything else is not
    /// supported (ENOTSUP, which `cp -a` and `rsync -X` tolerate).
    pub async fn setxattr(&self, ino: u64, name: &str, value: &[u8], flags: i32) -> FsResult<()> {
        self.check_writable()?;
        self.refuse_revision_change(ino)?;
        let (item, element, qualifier) = self.metadata_target(ino, name)?;
        let value = std::str::from_utf8(value).map_err(|_| {
            FsError::new(libc::EINVAL, format!("{name}: the value is not UTF-8 text"))
        })?;
        if flags & (libc::XATTR_CREATE | libc::XATTR_REPLACE) != 0 {
            let exists = self.getxattr(ino, name).await.is_ok();
            if exists && flags & libc::XATTR_CREATE != 0 {
                return Err(FsError::new(libc::EEXIST, format!("{name} exists")));
            }
            if !exists && flags & libc::XATTR_REPLACE != 0 {
                return Err(FsError::new(libc::ENODATA, format!("no attribute {name}")));
            }
        }
        self.client
            .item_set_metadata(item.id, element, qualifier, value)
            .await
            .map_err(write_error)?;
        self.forget_metadata(item.id);
        Ok(())
    }

    pub async fn removexattr(&self, ino: u64, name: &str) -> FsResult<()> {
        self.check_writable()?;
        self.refuse_revision_change(ino)?;
        if !name.starts_with(META_PREFIX) {
            self.resolve_saved_file(ino).await?;
            if self
                .fixed_xattrs(ino)?
                .iter()
                .any(|(fixed, _)| fixed == name)
                || (name == super::history::REVISIONS_XATTR && self.has_revisions_xattr(ino))
            {
                // Derived from the server (id, md5, …), so they stay; refusing would fail
                // `rsync -X`, which removes every attribute its source lacks.
                return Ok(());
            }
        }
        let (item, element, qualifier) = self.metadata_target(ino, name)?;
        // Midas answers the same for a value that was not there: ask first, for ENODATA.
        self.getxattr(ino, name).await?;
        self.client
            .item_delete_metadata(item.id, element, qualifier)
            .await
            .map_err(write_error)?;
        self.forget_metadata(item.id);
        Ok(())
    }

    fn metadata_target<'n>(
        &self,
        ino: u64,
        name: &'n str,
    ) -> FsResult<(ItemInfo, &'n str, &'n str)> {
        let Some(rest) = name.strip_prefix(META_PREFIX) else {
            return Err(if name.starts_with("user.midas.") {
                FsError::new(libc::EPERM, format!("{name} is read-only"))
            } else {
                FsError::new(
                    libc::ENOTSUP,
                    format!("{name}: only {META_PREFIX}* can be set"),
                )
            });
        };
        let (element, qualifier) = rest.split_once('.').unwrap_or((rest, ""));
        if element.is_empty() {
            return Err(FsError::new(
                libc::EINVAL,
                format!("{name}: no metadata element"),
            ));
        }
        let item = self.item_of(ino).ok_or_else(|| {
            FsError::new(
                libc::ENOTSUP,
                format!("{}: only items have metadata", self.describe(ino)),
            )
        })?;
        Ok((item, element, qualifier))
    }

    fn forget_metadata(&self, item_id: Id) {
        for node in self.nodes().values_mut() {
            if node.data.kind.item().is_some_and(|i| i.id == item_id) {
                node.metadata = None;
            }
        }
    }
}

/// Midas issues no upload token, without a checksum, only when it kept nothing (a bug).
fn skipped_upload(item_id: Id) -> FsError {
    FsError::new(
        libc::EIO,
        format!("item {item_id}: the server skipped an upload sent without checksum"),
    )
}

fn cross_device(name: &str) -> FsError {
    FsError::new(
        libc::EXDEV,
        format!("{name} cannot move there in Midas (copy it instead)"),
    )
}

/// The MD5 of a file, computed off the async workers.
async fn md5_of(path: &std::path::Path) -> FsResult<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || super::spool::md5_of_file(&path))
        .await
        .map_err(|err| FsError::new(libc::EIO, format!("checksum task failed: {err}")))?
}
