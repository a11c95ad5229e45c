//! Directory listings: one fetch per directory at a time, kept in [`Listings`]; their entries
//! made from Midas objects ([`entries`]); listing ahead of a program walking a tree ([`walk`]).

mod entries;
mod handles;
mod in_flight;
mod listings;
mod one_name;
pub mod walk;
mod warm;

use std::sync::Arc;

use crate::fs::inode::NodeData;
use crate::fs::{unknown_inode, Entry, FsResult, MidasFs};
pub(in crate::fs) use entries::bitstream_info;
pub(in crate::fs) use handles::DirHandles;
pub use listings::Listings;
pub(in crate::fs) use one_name::Wanted;

/// How many times a listing is fetched when the mount changes it during each fetch.
const FETCH_ATTEMPTS: u32 = 3;

/// Why a directory is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::fs) enum Purpose {
    /// A program asked for it.
    Asked,
    /// A walk may get there soon: bounded in size, since nobody asked yet.
    Ahead,
    /// The top of the tree, listed at mount (see [`warm`]): bounded in items.
    Warm,
}

impl MidasFs {
    /// The directory's entries if a fresh listing is in memory.
    pub fn cached_listing(&self, ino: u64) -> Option<Arc<Vec<Entry>>> {
        self.listings.fresh(ino, self.config.ttl)
    }

    /// Whether directory `dir` may hold `name`, as far as the mount knows without asking: its
    /// last listing, however old, or the folder's answer of a fetch under way (a lookup that
    /// joined it was told what is not there before the fetch is kept). A guess, for what is
    /// cheaper to get right than to undo (see `write::early`).
    pub(in crate::fs) fn may_hold(&self, dir: u64, name: &str) -> bool {
        if let Some(entries) = self.listings.last(dir) {
            if entries.iter().any(|entry| entry.name == name) {
                return true;
            }
        }
        let published = self
            .listings
            .joinable(dir)
            .and_then(|fetch| fetch.published_now());
        published.is_some_and(|published| {
            let children = &published.children;
            let folders = children.folders.iter().map(|folder| &folder.name);
            let items = children.items.iter().map(|item| &item.name);
            folders
                .chain(items)
                .any(|shown| crate::fs::names::to_display(shown) == name)
        })
    }

    /// The directory's entries, fetched from the server when the cached ones are too old.
    pub async fn listing(&self, ino: u64) -> FsResult<Arc<Vec<Entry>>> {
        self.listing_for(ino, Purpose::Asked, None).await
    }

    /// [`MidasFs::listing`], for a program that asked or ahead of a walk (then bounded, see
    /// [`walk`]). `listed` is what the directory's parent lists of it, for a directory the
    /// kernel may not hold (else its node says what it is).
    pub(in crate::fs) async fn listing_for(
        &self,
        ino: u64,
        purpose: Purpose,
        listed: Option<&NodeData>,
    ) -> FsResult<Arc<Vec<Entry>>> {
        self.listing_with(ino, purpose, listed, None).await
    }

    /// [`MidasFs::listing_for`], answering `wanted` as soon as its entry is known (see
    /// [`one_name`]); left unanswered when the listing is not fetched.
    pub(in crate::fs) async fn listing_with(
        &self,
        ino: u64,
        purpose: Purpose,
        listed: Option<&NodeData>,
        mut wanted: Option<Wanted>,
    ) -> FsResult<Arc<Vec<Entry>>> {
        if let Some(entries) = self.cached_listing(ino) {
            return Ok(entries);
        }
        let lock = {
            let mut locks = self.listing_locks.lock().unwrap_or_else(|p| p.into_inner());
            ListingLock {
                fs: self,
                ino,
                lock: Arc::clone(locks.entry(ino).or_default()),
            }
        };
        let _one_at_a_time = lock.lock.lock().await;
        if let Some(entries) = self.cached_listing(ino) {
            return Ok(entries);
        }
        let (kind, writable) = {
            let nodes = self.nodes();
            let data = nodes
                .get(&ino)
                .map(|node| &*node.data)
                .or(listed)
                .ok_or_else(|| unknown_inode(ino))?;
            (data.kind.clone(), data.writable)
        };
        let mut attempt = 1;
        loop {
            self.listings.start_fetch(ino);
            let fetched = self
                .fetch_listing_with(ino, &kind, writable, purpose, wanted.take())
                .await;
            let mut entries = match fetched {
                Ok(entries) => entries,
                Err(err) => {
                    self.listings.finish_fetch(ino, None);
                    return Err(err);
                }
            };
            self.add_local_state(ino, &mut entries);
            let entries = Arc::new(entries);
            {
                let mut nodes = self.nodes();
                if self.listings.finish_fetch(ino, Some(&entries)) {
                    if purpose == Purpose::Warm {
                        self.listings.mark_warm(ino);
                    }
                    // Nodes the kernel holds see the new attributes (size, mtime) at once.
                    for entry in entries.iter() {
                        if let Some(node) = nodes.get_mut(&entry.ino) {
                            node.data = entry.data.clone();
                        }
                    }
                    crate::fs::give_back::after(entries.len());
                    return Ok(entries);
                }
            }
            // The listing changed through the mount while the server answered: the answer may
            // be from before the change. Asked again; a directory changing all the time gets
            // the listing as the mount last knew it.
            if attempt == FETCH_ATTEMPTS {
                log::debug!("inode {ino}: listing changed during {attempt} fetches");
                return Ok(self.listings.last(ino).unwrap_or(entries));
            }
            attempt += 1;
        }
    }
}

/// A directory's listing lock, taken out of `listing_locks` when the last one holding it is
/// done (else the map kept a lock for every directory ever listed).
struct ListingLock<'a> {
    fs: &'a MidasFs,
    ino: u64,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for ListingLock<'_> {
    fn drop(&mut self) {
        let mut locks = self
            .fs
            .listing_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Held by the map and by this one only (others clone it under the map's lock).
        let last = Arc::strong_count(&self.lock) == 2;
        if last
            && locks
                .get(&self.ino)
                .is_some_and(|l| Arc::ptr_eq(l, &self.lock))
        {
            locks.remove(&self.ino);
        }
    }
}
