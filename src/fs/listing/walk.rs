//! Walk-ahead: a program that walks a tree (`ls -R`, `find`, `du`, `rsync` of a folder) reads
//! one directory after the other, and each listing costs a round trip or two. Once a program
//! has read two subdirectories of one directory in a row, the next ones are listed in the
//! background, a few at a time, so that they are in memory when the walk gets there.
//!
//! Opening one folder after another (a file manager) starts nothing: only a second sibling read
//! shortly after the first does. What is listed ahead never starts more listing ahead by itself;
//! only the walk going on does.
//!
//! Listing ahead is bounded, since nobody asked for it yet: a folder whose `folder.children`
//! answer is over [`AHEAD_ANSWER_LIMIT`] bytes, or that holds over [`AHEAD_MAX_ENTRIES`]
//! entries, is left for the walk to list when it gets there.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lru::LruCache;
use tokio::sync::Semaphore;

use super::Purpose;
use crate::fs::inode::NodeData;
use crate::fs::MidasFs;

/// Two subdirectories of one directory read this close together make a walk.
const WALK_WINDOW: Duration = Duration::from_secs(10);
/// Subdirectories listed ahead per step of the walk, and listings fetched at once for that.
const AHEAD_PER_STEP: usize = 32;
const AHEAD_AT_ONCE: usize = 4;
/// The largest `folder.children` answer read ahead of a walk (about 3,000 entries).
pub(in crate::fs) const AHEAD_ANSWER_LIMIT: usize = 1 << 20;
/// The most entries of a folder listed ahead (each item of it costs an `item.get`).
pub(in crate::fs) const AHEAD_MAX_ENTRIES: usize = 1000;
/// Directories whose last subdirectory read is remembered.
const REMEMBERED: usize = 1024;

pub(in crate::fs) struct WalkAhead {
    /// For each directory, the subdirectory a program read last, and when.
    last_read: Mutex<LruCache<u64, (u64, Instant)>>,
    /// Directories being listed ahead.
    pending: Mutex<HashSet<u64>>,
    /// Listings started ahead since the mount.
    started: AtomicU64,
    permits: Arc<Semaphore>,
}

impl WalkAhead {
    pub fn new() -> WalkAhead {
        WalkAhead {
            last_read: Mutex::new(LruCache::new(
                NonZeroUsize::new(REMEMBERED).expect("not zero"),
            )),
            pending: Mutex::new(HashSet::new()),
            started: AtomicU64::new(0),
            permits: Arc::new(Semaphore::new(AHEAD_AT_ONCE)),
        }
    }

    fn last_read(&self) -> MutexGuard<'_, LruCache<u64, (u64, Instant)>> {
        self.last_read.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pending(&self) -> MutexGuard<'_, HashSet<u64>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl MidasFs {
    /// A program starts reading directory `dir`. When it read another subdirectory of the same
    /// parent just before, the parent's next subdirectories not in memory are returned (with
    /// what the parent lists of them), to be listed ahead with [`MidasFs::list_ahead`].
    pub fn walk_step(&self, dir: u64) -> Vec<(u64, NodeData)> {
        let now = Instant::now();
        let parent = self.parent(dir);
        if parent == dir {
            return Vec::new();
        }
        let previous = self.walk.last_read().put(parent, (dir, now));
        let walking = previous
            .is_some_and(|(sibling, at)| sibling != dir && now.duration_since(at) < WALK_WINDOW);
        if !walking {
            return Vec::new();
        }
        let Some(siblings) = self.listings.last(parent) else {
            return Vec::new();
        };
        // Listed from the parent's listing, not from the inodes the kernel holds: under memory
        // pressure the kernel forgets the subdirectories it has not used yet. Only the next
        // [`AHEAD_PER_STEP`] subdirectories after this one: the lead stays bounded, so what is
        // listed ahead is still kept when the walk gets there (each step used to queue up to
        // that many more, until every sibling was listed, past what the listings keep).
        let after = siblings
            .iter()
            .position(|entry| entry.ino == dir)
            .map_or(0, |at| at + 1);
        let mut ahead = Vec::new();
        for entry in siblings[after..]
            .iter()
            .filter(|entry| entry.data.kind.is_dir())
            .take(AHEAD_PER_STEP)
        {
            if self.cached_listing(entry.ino).is_none() && self.walk.pending().insert(entry.ino) {
                self.walk.started.fetch_add(1, Ordering::Relaxed);
                ahead.push((entry.ino, NodeData::clone(&entry.data)));
            }
        }
        ahead
    }

    /// Listings started ahead of walks since the mount, and those still running.
    pub fn walk_ahead_counts(&self) -> (u64, usize) {
        (
            self.walk.started.load(Ordering::Relaxed),
            self.walk.pending().len(),
        )
    }

    /// Lists `dir` in the background (a few at a time); a failure only means the walk fetches
    /// it itself when it gets there.
    pub async fn list_ahead(&self, dir: u64, listed: NodeData) {
        let permits = Arc::clone(&self.walk.permits);
        if let Ok(_permit) = permits.acquire().await {
            if let Err(err) = self.listing_for(dir, Purpose::Ahead, Some(&listed)).await {
                log::debug!("listing inode {dir} ahead of a walk: {err}");
            }
        }
        self.walk.pending().remove(&dir);
    }
}
