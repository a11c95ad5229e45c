//! The filesystem: inodes keyed by Midas ids, names, listings cached with a TTL, readers.
//!
//! Everything here is in terms of Midas objects and POSIX results; the HTTP details stay in
//! [`crate::midas`] and the kernel protocol in [`crate::fuse`]. Methods that may need the network
//! are `async`; the `cached_*` methods answer from memory only, so the FUSE loop can reply inline
//! when it can and hand the rest to a worker.
//!
//! This file holds [`MidasFs`] and its state. One concern per module: `listing` (directory
//! listings, open directory handles, walk-ahead), [`read`] (file content), [`write`] (files being
//! written and their uploads), `ops` (lookup, mkdir, rmdir, unlink, rename, setattr, xattrs),
//! `access` (privacy after moves), [`tasks`] (background work unmount waits for or cancels);
//! what Midas has that other stores lack: `history` (`NAME@rN`, `user.midas.revisions`),
//! `privacy` (chmod o±r), [`search`] (`.search/`), [`statfs`] and `trash` (none on the mount);
//! [`inode`], [`names`], [`time`] and [`error`] are shared by all. See ARCHITECTURE.md for who
//! owns which state and the lock order.

mod access;
pub mod disk_cache;
pub mod error;
mod give_back;
mod history;
pub mod inode;
pub mod item_dirs;
pub mod kernel;
mod listing;
pub mod names;
mod ops;
mod privacy;
pub mod read;
pub mod search;
pub mod statfs;
pub mod tasks;
pub mod time;
mod trash;
pub mod write;

#[cfg(test)]
mod fake_tests;
#[cfg(test)]
mod memory_tests;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use disk_cache::{DiskCache, DiskCacheStatus};
pub use error::{FsError, FsResult};
use inode::{Attr, Checksum, NodeData, NodeKind, Shared, ROOT};
use listing::{bitstream_info, walk, DirHandles, Listings};
pub use ops::xattr::XATTR_PREFIX;
use read::reader::{BlockCache, FileReader};
use tasks::Tasks;
pub use write::early::EarlyStart;
pub use write::spool;
use write::spool::SpoolConfig;
use write::Writes;

use crate::fs::error::Kind;
use crate::midas::types::{Id, MetadataValue, User};
use crate::midas::Api;

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
    /// Shared with the node of the same inode while neither changes.
    pub data: Shared<NodeData>,
}

impl Entry {
    pub fn attr(&self) -> Attr {
        self.data.attr(self.ino)
    }
}

struct Node {
    data: Shared<NodeData>,
    parent: u64,
    /// Lookups the kernel holds (each readdirplus entry and lookup reply counts one).
    lookups: u64,
    /// Checksum of the content the kernel may still cache for this inode, for FOPEN_KEEP_CACHE.
    kernel_cached_md5: Option<Checksum>,
    metadata: Option<(Instant, Arc<Vec<MetadataValue>>)>,
}

/// An open file: which inode, and how to read it.
pub struct OpenFile {
    pub fh: u64,
    /// The content is what the kernel cached at the last open: keep its page cache.
    pub keep_cache: bool,
    /// The kernel reads this backing file itself (FUSE passthrough: see `read::passthrough`).
    pub backing: Option<read::passthrough::Backing>,
    /// With `backing`: reads and writes still come to the mount (only `mmap` uses the backing).
    pub direct_io: bool,
}

impl OpenFile {
    /// A handle whose reads come to the mount.
    pub fn of_mount(fh: u64, keep_cache: bool) -> OpenFile {
        OpenFile {
            fh,
            keep_cache,
            backing: None,
            direct_io: false,
        }
    }
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
    /// Directories listed ahead of walks since the mount, and those being listed now.
    pub listed_ahead: u64,
    pub listing_ahead: usize,
    /// READ requests the kernel sent since the mount (none for a file it reads from the data
    /// cache itself).
    pub reads: u64,
}

pub struct MidasFs {
    client: Api,
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
    /// Folders whose files a program sniffs (see [`read::sniff`]).
    sniffs: read::sniff::Sniffs,
    /// Which opens the kernel reads from the data cache by itself (passthrough).
    passthrough: Arc<read::passthrough::Passthrough>,
    /// READ requests answered (see [`FsStatus::reads`]).
    reads: AtomicU64,
    /// The last answer of `midas.user.list`, and when it came.
    user_list: Mutex<Option<(Instant, Vec<User>)>>,
    next_fh: AtomicU64,
    mounted_at: SystemTime,
    writes: Writes,
    walk: walk::WalkAhead,
    /// What each open directory handle reads.
    dirs: DirHandles,
    /// Work started in the background, which unmount waits for or cancels.
    tasks: Tasks,
    /// What the filesystem tells the kernel about its caches (see [`MidasFs::tell_kernel`]).
    kernel: std::sync::OnceLock<Arc<dyn kernel::KernelCaches>>,
    /// `--leaf-dirs-as-items` (see [`item_dirs`]).
    leaf_dirs: item_dirs::LeafDirs,
    /// Whether the server lists the `solr` module, once asked (see [`search`]).
    solr: tokio::sync::OnceCell<bool>,
}

impl MidasFs {
    /// `me` is the logged-in user (None for an anonymous mount). Background work runs on the
    /// tokio runtime this is called in, if any, else on the runtime of the call that starts it.
    pub fn new(client: Api, me: Option<User>, config: FsConfig) -> MidasFs {
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
            }
            .into(),
            parent: ROOT,
            lookups: 1,
            kernel_cached_md5: None,
            metadata: None,
        };
        let times_file = write::set_times::times_path(
            &config.spool.dir,
            client.base_url(),
            me.as_ref().map(|user| user.user_id),
        );
        MidasFs {
            cache: Arc::new(BlockCache::new(config.cache_bytes)),
            disk: None,
            writes: Writes::new(&config.spool, times_file),
            walk: walk::WalkAhead::new(),
            dirs: DirHandles::default(),
            tasks: Tasks::new(tokio::runtime::Handle::try_current().ok()),
            kernel: std::sync::OnceLock::new(),
            leaf_dirs: item_dirs::LeafDirs::default(),
            solr: tokio::sync::OnceCell::new(),
            client,
            config,
            me,
            nodes: Mutex::new(HashMap::from([(ROOT, root)])),
            listings: Listings::new(),
            listing_locks: Mutex::new(HashMap::new()),
            readers: Mutex::new(HashMap::new()),
            sniffs: Default::default(),
            passthrough: Arc::default(),
            reads: AtomicU64::new(0),
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

    /// The kernel takes passthrough: opens of files whole in the data cache may be answered
    /// with the entry (see `read::passthrough`).
    pub fn enable_passthrough(&self) {
        if self.disk.is_some() {
            self.passthrough.enable();
        }
    }

    /// Whether passthrough is possible now (a data cache, and the kernel took it).
    pub fn wants_passthrough(&self) -> bool {
        self.disk.is_some()
    }

    pub fn ttl(&self) -> Duration {
        self.config.ttl
    }

    /// Files open for writing or still uploading, and the bytes they hold in the spool: what a
    /// wait for uploads polls (cheaper than [`MidasFs::status`], which also reads the recovery
    /// directory).
    pub fn uploads_in_flight(&self) -> (usize, u64) {
        self.writes.in_flight()
    }

    /// What `midasfs status` shows of the filesystem.
    pub fn status(&self) -> FsStatus {
        let (files_being_written, spool_bytes) = self.writes.in_flight();
        let (cache_bytes, cache_capacity) = self.cache.usage();
        let (listed_ahead, listing_ahead) = self.walk_ahead_counts();
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
            listed_ahead,
            listing_ahead,
            reads: self.reads.load(std::sync::atomic::Ordering::Relaxed),
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
}

fn unknown_inode(ino: u64) -> FsError {
    FsError::new(Kind::Stale, format!("inode {ino} is not known"))
}
