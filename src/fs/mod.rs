//! The filesystem: inodes keyed by Midas ids, names, listings cached with a TTL, readers.
//!
//! Everything here is in terms of Midas objects and POSIX results; the HTTP details stay in
//! [`crate::midas`] and the kernel protocol in [`crate::fuse`]. Methods that may need the network
//! are `async`; the `cached_*` methods answer from memory only, so the FUSE loop can reply inline
//! when it can and hand the rest to a worker.

mod access;
pub mod disk_cache;
mod early;
pub mod error;
pub mod inode;
mod listings;
pub mod names;
pub mod reader;
pub mod spool;
pub mod time;
mod walk;
pub mod write;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};

use disk_cache::{DiskCache, DiskCacheStatus};
pub use early::EarlyStart;
pub use error::{FsError, FsResult};
use inode::{Attr, BitstreamInfo, ItemInfo, NodeData, NodeKind, HOME, ROOT, USERS};
use listings::Listings;
use names::Origin;
use reader::{BlockCache, FileReader};
use spool::SpoolConfig;
use write::Writes;

use crate::midas::types::{Id, Item, MetadataValue, User, PRIVACY_PUBLIC};
use crate::midas::Client;

/// How many `item.get` calls one listing keeps in flight.
const ITEM_GET_CONCURRENCY: usize = 32;
/// How long an item's details are reused by new listings that show it unchanged; after that
/// it is asked for again (see [`inode::ItemStamp`]).
const ITEM_DETAILS_MAX_AGE: Duration = Duration::from_secs(600);
/// How long the answer of `midas.user.list` is used, however short the TTL: accounts come and go
/// rarely, every path through `home/` needs the list, and a user who is not in it yet is still
/// found by name (see [`MidasFs::lookup_unlisted_user`]).
const USER_LIST_TTL: Duration = Duration::from_secs(600);
/// `midas.user.list` needs a limit; the mount lists this many users at most.
const USER_LIST_LIMIT: u32 = 10_000;

/// Why a directory is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A program asked for it.
    Asked,
    /// A walk may get there soon: bounded in size, since nobody asked yet.
    Ahead,
}

/// What the mount shows at its top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountRoot {
    /// `communities/`, `users/` and `home`.
    Everything,
    /// One folder (`--root`).
    Folder { id: Id, writable: bool },
}

#[derive(Debug, Clone)]
pub struct FsConfig {
    /// How long listings and attributes are trusted.
    pub ttl: Duration,
    pub items_as_dirs: bool,
    pub read_only: bool,
    pub cache_bytes: u64,
    /// How long a read may wait for data before it fails.
    pub stall_timeout: Duration,
    pub root: MountRoot,
    /// Where files being written are kept until they are uploaded.
    pub spool: SpoolConfig,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub ino: u64,
    pub data: NodeData,
}

impl Entry {
    pub fn attr(&self) -> Attr {
        self.data.attr(self.ino)
    }
}

struct Node {
    data: NodeData,
    parent: u64,
    /// Lookups the kernel holds (each readdirplus entry and lookup reply counts one).
    lookups: u64,
    /// Checksum of the content the kernel may still cache for this inode, for FOPEN_KEEP_CACHE.
    kernel_cached_md5: Option<String>,
    metadata: Option<(Instant, Arc<Vec<MetadataValue>>)>,
}

/// An open file: which inode, and how to read it.
pub struct OpenFile {
    pub fh: u64,
    /// The content is what the kernel cached at the last open: keep its page cache.
    pub keep_cache: bool,
}

/// Counts of a mount's state, for `midasfs status` and for waiting on uploads at unmount.
#[derive(Debug, Clone)]
pub struct FsStatus {
    /// Files open for writing, or closed and still uploading.
    pub files_being_written: usize,
    /// Bytes those files hold in the spool.
    pub spool_bytes: u64,
    /// Where failed uploads' data is kept, and how many files are there.
    pub recovery_dir: std::path::PathBuf,
    pub recovery_files: usize,
    pub cache_bytes: u64,
    pub cache_capacity: u64,
    /// The persistent data cache, when there is one.
    pub disk_cache: Option<DiskCacheStatus>,
}

pub struct MidasFs {
    client: Client,
    config: FsConfig,
    me: Option<User>,
    nodes: Mutex<HashMap<u64, Node>>,
    listings: Listings,
    /// One listing request per directory at a time; others wait for its answer.
    listing_locks: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
    cache: Arc<BlockCache>,
    /// The persistent data cache (`--cache-dir`).
    disk: Option<Arc<DiskCache>>,
    readers: Mutex<HashMap<u64, Arc<FileReader>>>,
    /// The last answer of `midas.user.list`, and when it came.
    user_list: Mutex<Option<(Instant, Vec<User>)>>,
    next_fh: AtomicU64,
    mounted_at: SystemTime,
    writes: Writes,
    walk: walk::WalkAhead,
    /// Tells the kernel to forget the attributes it cached of an inode (see
    /// [`MidasFs::on_attr_change`]).
    attr_changed: std::sync::OnceLock<AttrChanged>,
}

/// Called with an inode number whose attributes changed on their own (not by the request the
/// kernel is waiting for).
pub type AttrChanged = Box<dyn Fn(u64) + Send + Sync>;

impl MidasFs {
    /// `me` is the logged-in user (None for an anonymous mount).
    pub fn new(client: Client, me: Option<User>, config: FsConfig) -> MidasFs {
        let now = SystemTime::now();
        let root_kind = match &config.root {
            MountRoot::Everything => NodeKind::Root,
            MountRoot::Folder { id, .. } => NodeKind::Folder {
                id: *id,
                uuid: String::new(),
            },
        };
        let root_writable =
            matches!(config.root, MountRoot::Folder { writable: true, .. }) && !config.read_only;
        let root = Node {
            data: NodeData {
                kind: root_kind,
                mtime: now,
                writable: root_writable,
                public: true,
            },
            parent: ROOT,
            lookups: 1,
            kernel_cached_md5: None,
            metadata: None,
        };
        MidasFs {
            cache: Arc::new(BlockCache::new(config.cache_bytes)),
            disk: None,
            writes: Writes::new(&config.spool),
            walk: walk::WalkAhead::new(),
            attr_changed: std::sync::OnceLock::new(),
            client,
            config,
            me,
            nodes: Mutex::new(HashMap::from([(ROOT, root)])),
            listings: Listings::new(),
            listing_locks: Mutex::new(HashMap::new()),
            readers: Mutex::new(HashMap::new()),
            user_list: Mutex::new(None),
            next_fh: AtomicU64::new(1),
            mounted_at: now,
        }
    }

    /// Reads through, and fills, a persistent data cache.
    pub fn with_disk_cache(mut self, disk: Option<Arc<DiskCache>>) -> MidasFs {
        self.disk = disk;
        self
    }

    pub fn ttl(&self) -> Duration {
        self.config.ttl
    }

    /// What `midasfs status` shows of the filesystem.
    pub fn status(&self) -> FsStatus {
        let (files_being_written, spool_bytes) = self.writes.in_flight();
        let (cache_bytes, cache_capacity) = self.cache.usage();
        let recovery_dir = self.writes.recovery_dir();
        let recovery_files = std::fs::read_dir(&recovery_dir)
            .map(|dir| dir.filter(|e| e.is_ok()).count())
            .unwrap_or(0);
        FsStatus {
            files_being_written,
            spool_bytes,
            recovery_dir,
            recovery_files,
            cache_bytes,
            cache_capacity,
            disk_cache: self.disk.as_ref().map(|disk| disk.status()),
        }
    }

    pub fn read_only(&self) -> bool {
        self.config.read_only
    }

    fn nodes(&self) -> MutexGuard<'_, HashMap<u64, Node>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn root_folder(&self) -> Option<Id> {
        match self.config.root {
            MountRoot::Folder { id, .. } => Some(id),
            MountRoot::Everything => None,
        }
    }

    // ---- metadata: lookup, getattr, readdir ----

    /// Answers a lookup from a fresh cached listing, or None when the listing must be fetched.
    pub fn cached_lookup(&self, parent: u64, name: &str) -> Option<FsResult<Attr>> {
        let entries = self.cached_listing(parent)?;
        Some(self.lookup_in(parent, &entries, name))
    }

    pub async fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        let entries = self.listing(parent).await?;
        match self.lookup_in(parent, &entries, name) {
            Err(err) if err.errno == libc::ENOENT && parent == USERS => {
                self.lookup_unlisted_user(name).await
            }
            other => other,
        }
    }

    fn lookup_in(&self, parent: u64, entries: &[Entry], name: &str) -> FsResult<Attr> {
        let entry = entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| FsError::not_found(name))?;
        self.remember(parent, entry);
        Ok(entry.attr())
    }

    /// Users that `user.list` does not show (private ones) can still be reached by name, as pydas
    /// does: `users/First_Last` → `user.get`.
    async fn lookup_unlisted_user(&self, name: &str) -> FsResult<Attr> {
        let (first, last) = names::to_midas(name)
            .split_once('_')
            .map(|(f, l)| (f.to_owned(), l.to_owned()))
            .ok_or_else(|| FsError::not_found(name))?;
        let user = self
            .client
            .user_get_by_name(&first, &last)
            .await?
            .ok_or_else(|| FsError::not_found(name))?;
        let entry = self.user_entry(&user, name.to_owned());
        self.remember(USERS, &entry);
        Ok(entry.attr())
    }

    /// Records that the kernel now holds a reference to this entry's inode.
    pub fn remember(&self, parent: u64, entry: &Entry) {
        let mut nodes = self.nodes();
        let node = nodes.entry(entry.ino).or_insert_with(|| Node {
            data: entry.data.clone(),
            parent,
            lookups: 0,
            kernel_cached_md5: None,
            metadata: None,
        });
        node.data = entry.data.clone();
        node.parent = parent;
        node.lookups += 1;
    }

    pub fn forget(&self, ino: u64, count: u64) {
        if ino == ROOT {
            return;
        }
        let mut nodes = self.nodes();
        if let Some(node) = nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(count);
            if node.lookups == 0 {
                nodes.remove(&ino);
            }
        }
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let nodes = self.nodes();
        let node = nodes.get(&ino).ok_or_else(|| unknown_inode(ino))?;
        let mut attr = node.data.attr(ino);
        if ino == ROOT && matches!(self.config.root, MountRoot::Everything) {
            attr.mtime = self.mounted_at;
        }
        drop(nodes);
        self.adjust_attr(ino, &mut attr);
        Ok(attr)
    }

    pub fn parent(&self, ino: u64) -> u64 {
        self.nodes().get(&ino).map_or(ROOT, |n| n.parent)
    }

    pub fn readlink(&self, ino: u64) -> FsResult<String> {
        match self.nodes().get(&ino).map(|n| &n.data.kind) {
            Some(NodeKind::Home { target }) => Ok(target.clone()),
            _ => Err(FsError::new(
                libc::EINVAL,
                format!("inode {ino} is not a symlink"),
            )),
        }
    }

    /// The directory's entries if a fresh listing is in memory.
    pub fn cached_listing(&self, ino: u64) -> Option<Arc<Vec<Entry>>> {
        self.listings.fresh(ino, self.config.ttl)
    }

    /// The directory's entries, fetched from the server when the cached ones are too old.
    pub async fn listing(&self, ino: u64) -> FsResult<Arc<Vec<Entry>>> {
        self.listing_for(ino, Purpose::Asked).await
    }

    /// [`MidasFs::listing`], for a program that asked or ahead of a walk (then bounded, see
    /// [`walk`]).
    async fn listing_for(&self, ino: u64, purpose: Purpose) -> FsResult<Arc<Vec<Entry>>> {
        if let Some(entries) = self.cached_listing(ino) {
            return Ok(entries);
        }
        let lock = {
            let mut locks = self.listing_locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(locks.entry(ino).or_default())
        };
        let _one_at_a_time = lock.lock().await;
        if let Some(entries) = self.cached_listing(ino) {
            return Ok(entries);
        }
        let (kind, writable) = {
            let nodes = self.nodes();
            let node = nodes.get(&ino).ok_or_else(|| unknown_inode(ino))?;
            (node.data.kind.clone(), node.data.writable)
        };
        let mut entries = self.fetch_listing(ino, &kind, writable, purpose).await?;
        self.add_local_state(ino, &mut entries);
        let entries = Arc::new(entries);
        {
            let mut nodes = self.nodes();
            // Nodes the kernel holds see the new attributes (size, mtime) at once.
            for entry in entries.iter() {
                if let Some(node) = nodes.get_mut(&entry.ino) {
                    node.data = entry.data.clone();
                }
            }
        }
        self.listings.insert(ino, Arc::clone(&entries));
        Ok(entries)
    }

    async fn fetch_listing(
        &self,
        ino: u64,
        kind: &NodeKind,
        writable: bool,
        purpose: Purpose,
    ) -> FsResult<Vec<Entry>> {
        match kind {
            NodeKind::Root => Ok(self.root_entries()),
            NodeKind::Communities => self.community_entries().await,
            NodeKind::Users => self.user_entries().await,
            NodeKind::Folder { id, .. } => self.folder_entries(ino, *id, writable, purpose).await,
            NodeKind::ItemDir { item } => self.item_dir_entries(item.id, writable).await,
            NodeKind::Home { .. }
            | NodeKind::ItemFile { .. }
            | NodeKind::SavedFile { .. }
            | NodeKind::Bitstream { .. }
            | NodeKind::NewFile { .. } => Err(FsError::new(libc::ENOTDIR, "not a directory")),
        }
    }

    fn virtual_dir(&self, kind: NodeKind, name: &str) -> Entry {
        Entry {
            name: name.to_owned(),
            ino: kind.ino(None),
            data: NodeData {
                kind,
                mtime: self.mounted_at,
                writable: false,
                public: true,
            },
        }
    }

    fn root_entries(&self) -> Vec<Entry> {
        let mut entries = vec![
            self.virtual_dir(NodeKind::Communities, "communities"),
            self.virtual_dir(NodeKind::Users, "users"),
        ];
        if let Some(me) = &self.me {
            let target = format!("users/{}", user_dir_name(me));
            entries.push(self.virtual_dir(NodeKind::Home { target }, "home"));
            debug_assert_eq!(entries[2].ino, HOME);
        }
        entries
    }

    async fn community_entries(&self) -> FsResult<Vec<Entry>> {
        let communities = self.client.community_list().await?;
        let writable = self.is_admin();
        let mut named: Vec<(String, Origin)> = communities
            .iter()
            .map(|c| (names::to_display(&c.name), Origin::Folder(c.folder_id)))
            .collect();
        names::disambiguate(&mut named);
        Ok(communities
            .iter()
            .zip(named)
            .map(|(c, (name, _))| {
                self.entry(
                    name,
                    NodeKind::Folder {
                        id: c.folder_id,
                        uuid: c.uuid.clone(),
                    },
                    &c.creation,
                    writable,
                    c.privacy == PRIVACY_PUBLIC,
                )
            })
            .collect())
    }

    async fn user_entries(&self) -> FsResult<Vec<Entry>> {
        let mut users = self.users().await?;
        if let Some(me) = &self.me {
            if !users.iter().any(|u| u.user_id == me.user_id) {
                users.push(me.clone());
            }
        }
        let mut named: Vec<(String, Origin)> = users
            .iter()
            .map(|u| (user_dir_name(u), Origin::Folder(u.folder_id)))
            .collect();
        names::disambiguate(&mut named);
        Ok(users
            .iter()
            .zip(named)
            .map(|(u, (name, _))| self.user_entry(u, name))
            .collect())
    }

    /// `midas.user.list`, asked again only after [`USER_LIST_TTL`].
    async fn users(&self) -> FsResult<Vec<User>> {
        let kept = match &*self.user_list.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((at, users)) if at.elapsed() < USER_LIST_TTL => Some(users.clone()),
            _ => None,
        };
        if let Some(users) = kept {
            return Ok(users);
        }
        let users = self.client.user_list(USER_LIST_LIMIT).await?;
        *self.user_list.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), users.clone()));
        Ok(users)
    }

    fn user_entry(&self, user: &User, name: String) -> Entry {
        let mine = self
            .me
            .as_ref()
            .is_some_and(|me| me.user_id == user.user_id);
        let writable = !self.config.read_only && (mine || self.is_admin());
        self.entry(
            name,
            NodeKind::Folder {
                id: user.folder_id,
                uuid: user.uuid.clone(),
            },
            "",
            writable,
            // A user's top folder is private, but anyone may list it (seeing only what they
            // may read) and must pass through it to reach its Public folder.
            true,
        )
    }

    fn is_admin(&self) -> bool {
        !self.config.read_only && self.me.as_ref().is_some_and(|me| me.admin)
    }

    fn entry(
        &self,
        name: String,
        kind: NodeKind,
        date: &str,
        writable: bool,
        public: bool,
    ) -> Entry {
        Entry {
            ino: kind.ino(self.root_folder()),
            name,
            data: NodeData {
                kind,
                mtime: time::parse_midas_date(date).unwrap_or(self.mounted_at),
                writable,
                public,
            },
        }
    }

    async fn folder_entries(
        &self,
        dir: u64,
        id: Id,
        writable: bool,
        purpose: Purpose,
    ) -> FsResult<Vec<Entry>> {
        let children = match purpose {
            Purpose::Asked => self.client.folder_children(id).await?,
            Purpose::Ahead => {
                let children = self
                    .client
                    .folder_children_within(id, walk::AHEAD_ANSWER_LIMIT)
                    .await?;
                let count = children.folders.len() + children.items.len();
                if count > walk::AHEAD_MAX_ENTRIES {
                    return Err(FsError::new(
                        libc::EFBIG,
                        format!("folder {id} has {count} entries: too many to list ahead"),
                    ));
                }
                children
            }
        };
        // A listing gives no bitstreams. Items that the last listing showed with the same stamp
        // keep their details; the others are asked for all at once (bounded), not one by one.
        let listed: HashMap<Id, &Item> = children.items.iter().map(|i| (i.item_id, i)).collect();
        let previous = self.listings.last(dir).unwrap_or_default();
        let mut details: HashMap<Id, Entry> = previous
            .iter()
            .filter_map(|entry| Some((entry.data.kind.item()?, entry)))
            .filter(|(item, _)| {
                listed
                    .get(&item.id)
                    .is_some_and(|listed| item.stamp.still_describes(listed, ITEM_DETAILS_MAX_AGE))
            })
            .map(|(item, entry)| (item.id, entry.clone()))
            .collect();
        let changed: Vec<Id> = children
            .items
            .iter()
            .map(|listed| listed.item_id)
            .filter(|id| !details.contains_key(id))
            .collect();
        let answers: Vec<_> = stream::iter(changed)
            .map(|id| {
                let client = self.client.clone();
                async move { client.item_get(id).await }
            })
            .buffer_unordered(ITEM_GET_CONCURRENCY)
            .collect()
            .await;
        for answer in answers {
            match answer {
                Ok(item) => {
                    let entry = self.item_entry(&item, String::new(), writable);
                    details.insert(item.item_id, entry);
                }
                // Deleted or hidden since the listing: not an entry any more.
                Err(err) if err.api_code() == Some(-151) => {}
                Err(err) => return Err(err.into()),
            }
        }
        let mut items: Vec<&Item> = children
            .items
            .iter()
            .filter(|listed| details.contains_key(&listed.item_id))
            .collect();
        items.sort_by(|a, b| (&a.name, a.item_id).cmp(&(&b.name, b.item_id)));
        let mut named: Vec<(String, Origin)> = children
            .folders
            .iter()
            .map(|f| (names::to_display(&f.name), Origin::Folder(f.folder_id)))
            .chain(
                items
                    .iter()
                    .map(|i| (names::to_display(&i.name), Origin::Item(i.item_id))),
            )
            .collect();
        names::disambiguate(&mut named);
        let mut named = named.into_iter().map(|(name, _)| name);
        let mut entries = Vec::with_capacity(named.len());
        for folder in &children.folders {
            let name = named.next().unwrap_or_default();
            let kind = NodeKind::Folder {
                id: folder.folder_id,
                uuid: folder.uuid.clone(),
            };
            let public = folder.privacy_status == PRIVACY_PUBLIC;
            entries.push(self.entry(name, kind, &folder.date_update, writable, public));
        }
        for item in items {
            if let Some(mut entry) = details.remove(&item.item_id) {
                entry.name = named.next().unwrap_or_default();
                // A change of policies leaves the item's stamp as it was: the listing tells.
                entry.data.public = item.privacy_status == PRIVACY_PUBLIC;
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// An item is a file when its head revision holds exactly one bitstream of its own name.
    fn item_entry(&self, item: &Item, name: String, writable: bool) -> Entry {
        let head = item.head();
        let info = ItemInfo::new(item, head.map_or(0, |r| r.revision));
        let kind = match head.map(|r| r.bitstreams.as_slice()) {
            Some([only]) if only.name == item.name && !self.config.items_as_dirs => {
                NodeKind::ItemFile {
                    item: info,
                    bitstream: bitstream_info(only),
                }
            }
            _ => NodeKind::ItemDir { item: info },
        };
        let public = item.privacy_status == PRIVACY_PUBLIC;
        self.entry(name, kind, &item.date_update, writable, public)
    }

    async fn item_dir_entries(&self, item_id: Id, writable: bool) -> FsResult<Vec<Entry>> {
        let item = self.client.item_get(item_id).await?;
        let Some(head) = item.head() else {
            return Ok(Vec::new());
        };
        let info = ItemInfo::new(&item, head.revision);
        let public = item.privacy_status == PRIVACY_PUBLIC;
        let mut named: Vec<(String, Origin)> = head
            .bitstreams
            .iter()
            .map(|b| {
                (
                    names::to_display(&b.name),
                    Origin::Bitstream(b.bitstream_id),
                )
            })
            .collect();
        names::disambiguate(&mut named);
        Ok(head
            .bitstreams
            .iter()
            .zip(named)
            .map(|(b, (name, _))| {
                let kind = NodeKind::Bitstream {
                    item: info.clone(),
                    bitstream: bitstream_info(b),
                };
                self.entry(name, kind, &b.date, writable, public)
            })
            .collect())
    }

    // ---- file content ----

    /// Opens a file for reading with what is in memory (the listing brought the bitstream), or
    /// None when the bitstream must be asked for first: see [`MidasFs::open`].
    pub fn cached_open(&self, ino: u64) -> Option<FsResult<OpenFile>> {
        let (bitstream, keep_cache) = {
            let mut nodes = self.nodes();
            let Some(node) = nodes.get_mut(&ino) else {
                return Some(Err(unknown_inode(ino)));
            };
            if matches!(node.data.kind, NodeKind::SavedFile { .. }) {
                return None;
            }
            let Some(bitstream) = node.data.kind.bitstream().cloned() else {
                return Some(Err(FsError::new(libc::EISDIR, "is a directory")));
            };
            let keep = node.kernel_cached_md5.as_deref() == Some(bitstream.md5.as_str());
            node.kernel_cached_md5 = Some(bitstream.md5.clone());
            (bitstream, keep)
        };
        let source = reader::Source {
            bitstream: bitstream.id,
            size: bitstream.size,
            md5: bitstream.md5.clone(),
            disk: self.disk.clone(),
        };
        let reader = FileReader::new(
            self.client.clone(),
            Arc::clone(&self.cache),
            source,
            self.config.stall_timeout,
        );
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Arc::new(reader));
        Some(Ok(OpenFile { fh, keep_cache }))
    }

    /// Opens a file for reading, first asking for the bitstream of a file this mount uploaded.
    pub async fn open(&self, ino: u64) -> FsResult<OpenFile> {
        self.resolve_saved_file(ino).await?;
        self.cached_open(ino)
            .unwrap_or_else(|| Err(unknown_inode(ino)))
    }

    /// Turns a file this mount uploaded into the item file `item.get` now describes, with its
    /// bitstream (the upload's answer does not name it).
    async fn resolve_saved_file(&self, ino: u64) -> FsResult<()> {
        let (item_id, writable, parent, canonical) = match self.nodes().get(&ino) {
            Some(Node {
                data:
                    NodeData {
                        kind: kind @ NodeKind::SavedFile { item, .. },
                        writable,
                        ..
                    },
                parent,
                ..
            }) => (item.id, *writable, *parent, kind.ino(self.root_folder())),
            _ => return Ok(()),
        };
        let item = self.client.item_get(item_id).await?;
        let entry = self.item_entry(&item, String::new(), writable);
        // (The kernel may know the file by the number it had while new: compare what listings
        // show.)
        if entry.ino != canonical {
            // Someone added a bitstream or renamed it: it is not this file any more.
            self.listings.remove(parent);
            return Err(FsError::new(
                libc::ESTALE,
                format!("item {item_id} changed on the server"),
            ));
        }
        // The kind changes, the times stay: they may have been set through the mount.
        let resolved = |data: &mut NodeData| data.kind = entry.data.kind.clone();
        if let Some(node) = self.nodes().get_mut(&ino) {
            resolved(&mut node.data);
        }
        self.listings.patch(parent, |entries| {
            entries
                .iter_mut()
                .filter(|e| e.ino == canonical)
                .for_each(|listed| resolved(&mut listed.data));
        });
        Ok(())
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        if let Some(written) = self.read_written(fh, offset, size) {
            return written.map(Bytes::from);
        }
        let reader = self
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
            .cloned()
            .ok_or_else(|| FsError::new(libc::EBADF, format!("file handle {fh} is not open")))?;
        reader.read(offset, size).await
    }

    pub fn release(&self, fh: u64) {
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh);
    }

    // ---- extended attributes ----

    /// Names of the `user.midas.*` attributes of a node.
    pub async fn listxattr(&self, ino: u64) -> FsResult<Vec<String>> {
        self.resolve_saved_file(ino).await?;
        let mut names: Vec<String> = self
            .fixed_xattrs(ino)?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        if let Some(item) = self.item_of(ino) {
            for value in self.item_metadata(ino, item.id).await?.iter() {
                names.push(metadata_xattr_name(value));
            }
        }
        Ok(names)
    }

    pub async fn getxattr(&self, ino: u64, name: &str) -> FsResult<Vec<u8>> {
        self.resolve_saved_file(ino).await?;
        if let Some((_, value)) = self.fixed_xattrs(ino)?.into_iter().find(|(n, _)| n == name) {
            return Ok(value.into_bytes());
        }
        if name.starts_with(META_PREFIX) {
            if let Some(item) = self.item_of(ino) {
                let metadata = self.item_metadata(ino, item.id).await?;
                if let Some(value) = metadata.iter().find(|v| metadata_xattr_name(v) == name) {
                    return Ok(value.value.clone().into_bytes());
                }
            }
        }
        Err(FsError::new(libc::ENODATA, format!("no attribute {name}")))
    }

    fn item_of(&self, ino: u64) -> Option<ItemInfo> {
        self.nodes().get(&ino)?.data.kind.item().cloned()
    }

    fn fixed_xattrs(&self, ino: u64) -> FsResult<Vec<(String, String)>> {
        let kind = self
            .nodes()
            .get(&ino)
            .map(|n| n.data.kind.clone())
            .ok_or_else(|| unknown_inode(ino))?;
        let base = self.client.base_url().to_owned();
        let mut attrs: Vec<(&str, String)> = Vec::new();
        match &kind {
            NodeKind::Folder { id, uuid } => {
                attrs.push(("id", id.to_string()));
                attrs.push(("type", "folder".into()));
                if !uuid.is_empty() {
                    attrs.push(("uuid", uuid.clone()));
                }
                attrs.push(("url", format!("{base}/folder/{id}")));
            }
            NodeKind::ItemFile { item, bitstream } | NodeKind::Bitstream { item, bitstream } => {
                let is_item = matches!(kind, NodeKind::ItemFile { .. });
                attrs.push((
                    "id",
                    if is_item { item.id } else { bitstream.id }.to_string(),
                ));
                attrs.push(("type", if is_item { "item" } else { "bitstream" }.into()));
                attrs.push(("item_id", item.id.to_string()));
                attrs.push(("bitstream_id", bitstream.id.to_string()));
                attrs.push(("md5", bitstream.md5.clone()));
                attrs.push(("mimetype", bitstream.mimetype.clone()));
                attrs.push(("uuid", item.uuid.clone()));
                attrs.push(("url", format!("{base}/item/{}", item.id)));
                attrs.push(("revision", item.revision.to_string()));
            }
            NodeKind::ItemDir { item } => {
                attrs.push(("id", item.id.to_string()));
                attrs.push(("type", "item".into()));
                attrs.push(("uuid", item.uuid.clone()));
                attrs.push(("url", format!("{base}/item/{}", item.id)));
                attrs.push(("revision", item.revision.to_string()));
            }
            // Callers resolve a saved file into an item file first.
            NodeKind::Root
            | NodeKind::Communities
            | NodeKind::Users
            | NodeKind::Home { .. }
            | NodeKind::SavedFile { .. }
            | NodeKind::NewFile { .. } => {}
        }
        Ok(attrs
            .into_iter()
            .map(|(name, value)| (format!("{XATTR_PREFIX}{name}"), value))
            .collect())
    }

    async fn item_metadata(&self, ino: u64, item_id: Id) -> FsResult<Arc<Vec<MetadataValue>>> {
        if let Some((fetched, values)) = self.nodes().get(&ino).and_then(|n| n.metadata.clone()) {
            if fetched.elapsed() < self.config.ttl {
                return Ok(values);
            }
        }
        let values = match self.client.item_get_metadata(item_id).await {
            Ok(values) => Arc::new(values),
            // An item without revisions cannot have metadata: Midas says −151.
            Err(err) if err.api_code() == Some(-151) => Arc::new(Vec::new()),
            Err(err) => return Err(err.into()),
        };
        if let Some(node) = self.nodes().get_mut(&ino) {
            node.metadata = Some((Instant::now(), Arc::clone(&values)));
        }
        Ok(values)
    }
}

/// Every extended attribute of the mount has a name starting with this.
pub const XATTR_PREFIX: &str = "user.midas.";
const META_PREFIX: &str = "user.midas.meta.";

fn unknown_inode(ino: u64) -> FsError {
    FsError::new(libc::ESTALE, format!("inode {ino} is not known"))
}

fn metadata_xattr_name(value: &MetadataValue) -> String {
    if value.qualifier.is_empty() {
        format!("{META_PREFIX}{}", value.element)
    } else {
        format!("{META_PREFIX}{}.{}", value.element, value.qualifier)
    }
}

/// `users/<First>_<Last>`, the pydas path scheme.
fn user_dir_name(user: &User) -> String {
    names::to_display(&format!("{}_{}", user.firstname, user.lastname))
}

fn bitstream_info(b: &crate::midas::types::Bitstream) -> BitstreamInfo {
    BitstreamInfo {
        id: b.bitstream_id,
        size: u64::try_from(b.sizebytes).unwrap_or(0),
        md5: b.checksum.clone(),
        mimetype: b.mimetype.clone(),
    }
}
