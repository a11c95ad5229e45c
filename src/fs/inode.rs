//! Inode numbers derived from Midas ids, and what each inode stands for.
//!
//! An inode number is a kind tag in the top bits and the Midas id below, so the same object has
//! the same number on every mount, and an item that turns from a file into a directory (a second
//! bitstream arrived) gets a new number instead of confusing the kernel with a changed type.
//! An id that does not fit below the tag (negative, or 2^56 and above) gets a number allocated
//! for this mount instead, under a tag of its own, so that two objects never share a number.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use super::search::SearchNode;
use crate::midas::types::{Id, Item};

pub const ROOT: u64 = 1;
pub const COMMUNITIES: u64 = 2;
pub const USERS: u64 = 3;
pub const HOME: u64 = 4;
/// `.search` at the top of the mount (see [`super::search`]).
pub const SEARCH: u64 = 5;

const TAG_SHIFT: u32 = 56;
const TAG_FOLDER: u64 = 1;
const TAG_ITEM_FILE: u64 = 2;
const TAG_ITEM_DIR: u64 = 3;
const TAG_BITSTREAM: u64 = 4;
const TAG_NEW_FILE: u64 = 5;
const TAG_SEARCH_RESULTS: u64 = 6;
const TAG_SEARCH_LINK: u64 = 7;
/// Numbers allocated for ids that do not fit below the tag (kept below 2^63 for programs that
/// read inode numbers as signed).
const TAG_ALLOCATED: u64 = 0x7f;
const ID_LIMIT: u64 = 1 << TAG_SHIFT;

/// The numbers allocated so far, by tag and id.
static ALLOCATED: Mutex<Option<HashMap<(u64, Id), u64>>> = Mutex::new(None);

fn tagged(tag: u64, id: Id) -> u64 {
    match u64::try_from(id) {
        Ok(fits) if fits < ID_LIMIT => (tag << TAG_SHIFT) | fits,
        _ => allocated(tag, id),
    }
}

/// The number of an id too large (or negative) to be tagged: allocated once, then the same for
/// the life of the mount.
fn allocated(tag: u64, id: Id) -> u64 {
    let mut table = ALLOCATED.lock().unwrap_or_else(PoisonError::into_inner);
    let table = table.get_or_insert_with(HashMap::new);
    let next = (TAG_ALLOCATED << TAG_SHIFT) | (table.len() as u64 + 1);
    *table.entry((tag, id)).or_insert(next)
}

/// The item and revision a file or item directory shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemInfo {
    pub id: Id,
    pub uuid: Box<str>,
    pub revision: i64,
    pub description: Box<str>,
    pub stamp: ItemStamp,
}

impl ItemInfo {
    /// `item` as `item.get` or `upload.perform` answered, showing revision `revision`.
    pub fn new(item: &Item, revision: i64) -> ItemInfo {
        ItemInfo {
            id: item.item_id,
            uuid: item.uuid.as_str().into(),
            revision,
            description: item.description.as_str().into(),
            stamp: ItemStamp::of(item),
        }
    }
}

/// What `folder.children` shows of an item when its details were read. Every save of an item
/// (upload, rename, metadata) changes its `date_update`, so while the listing shows the same
/// stamp, the revisions and bitstreams read with it are still right, and a new listing need not
/// ask `item.get` again.
///
/// Only a 64-bit hash of the name, date and size is kept (every listed item has a stamp, and
/// their strings would cost more than the rest of the entry): two different stamps hash alike
/// once in 2^64, and then only until `max_age` (see [`ItemStamp::still_describes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemStamp {
    fingerprint: u64,
    read_at: Instant,
}

impl ItemStamp {
    fn of(item: &Item) -> ItemStamp {
        ItemStamp {
            fingerprint: Self::fingerprint(item),
            read_at: Instant::now(),
        }
    }

    fn fingerprint(item: &Item) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        (&item.name, &item.date_update, item.sizebytes).hash(&mut hasher);
        hasher.finish()
    }

    /// Whether `listed` (from `folder.children`) is the item as it was when these details were
    /// read. Dates have whole seconds, so two saves in one second look the same: `max_age`
    /// bounds how long such a change can go unseen.
    pub fn still_describes(&self, listed: &Item, max_age: std::time::Duration) -> bool {
        self.read_at.elapsed() < max_age && self.fingerprint == Self::fingerprint(listed)
    }
}

/// One bitstream: immutable content, so its id is a cache key for its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitstreamInfo {
    pub id: Id,
    pub size: u64,
    pub md5: Checksum,
    pub mimetype: Mime,
}

/// A bitstream's checksum as Midas gives it: an MD5 in 32 lowercase hex digits is kept as its
/// 16 bytes, anything else (an empty checksum, another spelling) as it came.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Checksum {
    Md5([u8; 16]),
    Other(Box<str>),
}

impl Checksum {
    pub fn new(text: &str) -> Checksum {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let bytes = text.as_bytes();
        if bytes.len() == 32 {
            let mut md5 = [0u8; 16];
            let packed = md5
                .iter_mut()
                .zip(bytes.chunks_exact(2))
                .all(|(out, pair)| match (digit(pair[0]), digit(pair[1])) {
                    (Some(high), Some(low)) => {
                        *out = (high << 4) | low;
                        true
                    }
                    _ => false,
                });
            if packed {
                return Checksum::Md5(md5);
            }
        }
        Checksum::Other(text.into())
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Checksum::Md5(bytes) => bytes.iter().try_for_each(|b| write!(f, "{b:02x}")),
            Checksum::Other(text) => f.write_str(text),
        }
    }
}

impl std::fmt::Debug for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// A MIME type, shared by every bitstream of that type: a store holds few distinct ones.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Mime(Arc<str>);

/// Distinct MIME types shared at most; beyond that (a server that makes them up) each
/// bitstream keeps its own.
const MIME_TYPES_SHARED: usize = 256;

static MIME_TYPES: Mutex<Option<HashSet<Arc<str>>>> = Mutex::new(None);

impl Mime {
    pub fn new(text: &str) -> Mime {
        let mut known = MIME_TYPES.lock().unwrap_or_else(PoisonError::into_inner);
        let known = known.get_or_insert_with(HashSet::new);
        if let Some(shared) = known.get(text) {
            return Mime(Arc::clone(shared));
        }
        let new: Arc<str> = text.into();
        if known.len() < MIME_TYPES_SHARED {
            known.insert(Arc::clone(&new));
        }
        Mime(new)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Mime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Mime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// A node's data, shared by the listing that produced it and the node the kernel holds: a clone
/// is one more reference, and a change copies it first (copy on write), so that a change made
/// through one never shows through the other.
#[derive(Clone, PartialEq, Eq)]
pub struct Shared<T>(Arc<T>);

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Clone> std::ops::DerefMut for Shared<T> {
    fn deref_mut(&mut self) -> &mut T {
        Arc::make_mut(&mut self.0)
    }
}

impl<T> From<T> for Shared<T> {
    fn from(value: T) -> Shared<T> {
        Shared(Arc::new(value))
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// The top of the mount: `communities`, `users` and `home`.
    Root,
    Communities,
    Users,
    /// `home`: a symlink to the logged-in user's folder.
    Home {
        target: String,
    },
    Folder {
        id: Id,
        uuid: String,
    },
    /// An item whose head revision holds one bitstream of the item's own name.
    ItemFile {
        item: ItemInfo,
        bitstream: BitstreamInfo,
    },
    /// Any other item: a directory of its head revision's bitstreams.
    ItemDir {
        item: ItemInfo,
    },
    /// A bitstream inside an item directory.
    Bitstream {
        item: ItemInfo,
        bitstream: BitstreamInfo,
    },
    /// An item file this mount uploaded: Midas's answer to the upload does not name the new
    /// bitstream, so `item.get` is asked for it only when it is needed (to read the file).
    SavedFile {
        item: ItemInfo,
        size: u64,
    },
    /// A file created through the mount and not uploaded yet; `local` numbers it for this mount.
    NewFile {
        local: u64,
    },
    /// `.search` and what is in it: read-only, made by the mount.
    Search(SearchNode),
}

impl NodeKind {
    /// The inode number for this node; `root_folder` is the folder mounted at the top, if any.
    pub fn ino(&self, root_folder: Option<Id>) -> u64 {
        match self {
            NodeKind::Root => ROOT,
            NodeKind::Communities => COMMUNITIES,
            NodeKind::Users => USERS,
            NodeKind::Home { .. } => HOME,
            NodeKind::Folder { id, .. } if Some(*id) == root_folder => ROOT,
            NodeKind::Folder { id, .. } => tagged(TAG_FOLDER, *id),
            NodeKind::ItemFile { item, .. } | NodeKind::SavedFile { item, .. } => {
                tagged(TAG_ITEM_FILE, item.id)
            }
            NodeKind::ItemDir { item } => tagged(TAG_ITEM_DIR, item.id),
            NodeKind::Bitstream { bitstream, .. } => tagged(TAG_BITSTREAM, bitstream.id),
            NodeKind::NewFile { local } => tagged(TAG_NEW_FILE, *local as Id),
            NodeKind::Search(SearchNode::Top) => SEARCH,
            NodeKind::Search(SearchNode::Results { number, .. }) => {
                tagged(TAG_SEARCH_RESULTS, *number as Id)
            }
            NodeKind::Search(SearchNode::Link { number, .. }) => {
                tagged(TAG_SEARCH_LINK, *number as Id)
            }
        }
    }

    pub fn is_dir(&self) -> bool {
        !matches!(
            self,
            NodeKind::ItemFile { .. }
                | NodeKind::SavedFile { .. }
                | NodeKind::Bitstream { .. }
                | NodeKind::Home { .. }
                | NodeKind::NewFile { .. }
                | NodeKind::Search(SearchNode::Link { .. })
        )
    }

    /// An item without any revision, shown as an empty directory: perhaps one another client
    /// is uploading, between its `item.create` and its `upload.perform`, and about to be a
    /// file. A lookup, a rename or a removal asks for it again rather than trust what was
    /// listed (see `MidasFs::settle_unsettled`).
    pub fn is_unsettled(&self) -> bool {
        matches!(self, NodeKind::ItemDir { item } if item.revision == 0)
    }

    /// Where a symlink points.
    pub fn link_target(&self) -> Option<&str> {
        match self {
            NodeKind::Home { target } | NodeKind::Search(SearchNode::Link { target, .. }) => {
                Some(target)
            }
            _ => None,
        }
    }

    /// The bitstream whose bytes this node's file content is.
    pub fn bitstream(&self) -> Option<&BitstreamInfo> {
        match self {
            NodeKind::ItemFile { bitstream, .. } | NodeKind::Bitstream { bitstream, .. } => {
                Some(bitstream)
            }
            _ => None,
        }
    }

    /// The size of a file's content on the server (None for directories and new files).
    pub fn content_size(&self) -> Option<u64> {
        match self {
            NodeKind::SavedFile { size, .. } => Some(*size),
            kind => kind.bitstream().map(|b| b.size),
        }
    }

    pub fn item(&self) -> Option<&ItemInfo> {
        match self {
            NodeKind::ItemFile { item, .. }
            | NodeKind::SavedFile { item, .. }
            | NodeKind::ItemDir { item }
            | NodeKind::Bitstream { item, .. } => Some(item),
            _ => None,
        }
    }
}

/// The kind of file the kernel sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    File,
    Symlink,
}

/// What `stat` shows, in the filesystem's own terms (the adapter turns it into a `FileAttr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileKind,
    pub size: u64,
    pub mtime: SystemTime,
    /// Permission bits (the owner is the mounting user).
    pub perm: u16,
}

/// Everything known about one node, as a listing produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeData {
    pub kind: NodeKind,
    pub mtime: SystemTime,
    /// Whether the logged-in user may change it (shown as write permission bits).
    pub writable: bool,
    /// Whether anyone may read it on the server (anonymous READ, `privacy_status` 0): only
    /// then do the group and others get read (and search) permission bits.
    pub public: bool,
}

impl NodeData {
    /// `full` (0o755 or 0o644) without the write bit when the user may not change it, and
    /// without the group's and others' bits when it is private.
    fn mode(&self, full: u16) -> u16 {
        let mut mode = full;
        if !self.writable {
            mode &= !0o222;
        }
        if !self.public {
            mode &= 0o700;
        }
        mode
    }

    pub fn attr(&self, ino: u64) -> Attr {
        let (kind, size, perm) = match &self.kind {
            NodeKind::Home { target } | NodeKind::Search(SearchNode::Link { target, .. }) => {
                (FileKind::Symlink, target.len() as u64, 0o777)
            }
            k if k.is_dir() => (FileKind::Directory, 0, self.mode(0o755)),
            k => {
                let size = k.content_size().unwrap_or(0);
                (FileKind::File, size, self.mode(0o644))
            }
        };
        Attr {
            ino,
            kind,
            size,
            mtime: self.mtime,
            perm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_numbers_are_stable_and_distinct_per_kind() {
        let folder = NodeKind::Folder {
            id: 7,
            uuid: String::new(),
        };
        let item = ItemInfo::new(
            &Item {
                item_id: 7,
                name: "a".into(),
                description: String::new(),
                sizebytes: Some(1),
                date_creation: String::new(),
                date_update: String::new(),
                privacy_status: 0,
                uuid: String::new(),
                folder_id: None,
                revisions: Vec::new(),
            },
            1,
        );
        let bs = BitstreamInfo {
            id: 7,
            size: 1,
            md5: Checksum::new(""),
            mimetype: Mime::new(""),
        };
        let file = NodeKind::ItemFile {
            item: item.clone(),
            bitstream: bs.clone(),
        };
        let saved = NodeKind::SavedFile {
            item: item.clone(),
            size: 1,
        };
        // An uploaded file keeps its inode when its bitstream becomes known.
        assert_eq!(saved.ino(None), file.ino(None));
        let dir = NodeKind::ItemDir { item: item.clone() };
        let inner = NodeKind::Bitstream {
            item,
            bitstream: bs,
        };
        let inos = [
            folder.ino(None),
            file.ino(None),
            dir.ino(None),
            inner.ino(None),
        ];
        for (i, a) in inos.iter().enumerate() {
            assert!(*a > HOME);
            for b in &inos[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(folder.ino(Some(7)), ROOT);
    }

    #[test]
    fn ids_beyond_the_tag_never_share_a_number() {
        let folder = |id| {
            NodeKind::Folder {
                id,
                uuid: String::new(),
            }
            .ino(None)
        };
        let big = 7 + (1 << 56);
        assert_ne!(folder(7), folder(big));
        assert_ne!(folder(big), folder(big + (1 << 56)));
        assert_ne!(folder(-1), folder((1 << 56) - 1));
        assert_eq!(folder(big), folder(big), "stable for the mount");
        for ino in [folder(big), folder(-1), folder(i64::MAX)] {
            assert!(ino < 1 << 63 && ino > HOME);
            assert_ne!(ino >> 56, TAG_FOLDER);
        }
    }
}
