//! Open directory handles: each reads the listing it started with, so that readdir offsets stay
//! valid across calls while the directory changes. A read from the start may be a step of a
//! walk, which lists the next directories ahead, in the background.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::tasks::Work;
use crate::fs::{Entry, FsResult, MidasFs};

/// The listing each open directory handle reads, by handle.
#[derive(Default)]
pub(in crate::fs) struct DirHandles {
    snapshots: Mutex<HashMap<u64, Arc<Vec<Entry>>>>,
}

impl DirHandles {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Vec<Entry>>>> {
        self.snapshots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keep(&self, fh: u64, entries: &Arc<Vec<Entry>>) {
        self.lock().insert(fh, Arc::clone(entries));
    }
}

impl MidasFs {
    /// A new directory handle.
    pub fn opendir(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().remove(&fh);
    }

    /// The entries a readdir of handle `fh` at `offset` reads, when they are in memory: the
    /// handle's own for a continued read, a fresh cached listing for a new one (kept for the
    /// handle's next reads). None when the listing must be fetched: see [`MidasFs::readdir`].
    pub fn cached_readdir(
        self: &Arc<Self>,
        ino: u64,
        fh: u64,
        offset: u64,
    ) -> Option<Arc<Vec<Entry>>> {
        if offset == 0 {
            for (dir, listed) in self.walk_step(ino) {
                let fs = Arc::clone(self);
                self.tasks.spawn(
                    Work::Optional,
                    async move { fs.list_ahead(dir, listed).await },
                );
            }
        }
        if offset > 0 {
            if let Some(entries) = self.dirs.lock().get(&fh).cloned() {
                return Some(entries);
            }
        }
        let entries = self.cached_listing(ino)?;
        self.listings.looked_at(ino);
        self.dirs.keep(fh, &entries);
        Some(entries)
    }

    /// The entries of directory `ino` fetched for handle `fh` (and kept for its next reads).
    pub async fn readdir(&self, ino: u64, fh: u64) -> FsResult<Arc<Vec<Entry>>> {
        let entries = self.listing(ino).await?;
        self.listings.looked_at(ino);
        self.dirs.keep(fh, &entries);
        Ok(entries)
    }
}
