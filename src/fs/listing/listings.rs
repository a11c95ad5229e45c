//! Directory listings kept in memory, apart from the inodes: a listing outlives the kernel's
//! references to its directory (`forget` does not drop it), fresh listings answer lookups and
//! readdir, and older ones still spare `item.get` calls for the items that did not change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lru::LruCache;

use super::in_flight::Joinable;
use crate::fs::Entry;

/// Entries kept over all listings (a few hundred bytes each), least recently used dropped first.
const MAX_ENTRIES: usize = 100_000;

struct Listing {
    entries: Arc<Vec<Entry>>,
    fetched: Instant,
    /// Listed at mount, before anyone looked (see [`super::warm`]).
    warm: bool,
    /// To be fetched again before it answers (see [`Listings::expire`]).
    expired: bool,
}

struct Inner {
    listings: LruCache<u64, Listing>,
    entries: usize,
    /// The directories being fetched (one fetch per directory at a time), and whether the
    /// mount changed their listing meanwhile: then the server's answer may be older than the
    /// change (an upload that ended while the answer was on its way), and is not kept.
    fetching: HashMap<u64, bool>,
    /// Folder fetches under way that a lookup may join (see [`super::in_flight`]).
    joinable: HashMap<u64, Joinable>,
}

impl Inner {
    /// The directory's listing changed through the mount: a fetch under way is out of date.
    fn changed(&mut self, dir: u64) {
        if let Some(changed) = self.fetching.get_mut(&dir) {
            *changed = true;
        }
    }
}

pub struct Listings {
    inner: Mutex<Inner>,
}

impl Listings {
    pub fn new() -> Listings {
        Listings {
            inner: Mutex::new(Inner {
                listings: LruCache::unbounded(),
                entries: 0,
                fetching: HashMap::new(),
                joinable: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Only a cache: a panic elsewhere cannot leave it in a state that matters.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory's entries if they were fetched less than `ttl` ago.
    pub fn fresh(&self, dir: u64, ttl: Duration) -> Option<Arc<Vec<Entry>>> {
        let mut inner = self.lock();
        let listing = inner.listings.get(&dir)?;
        (!listing.expired && listing.fetched.elapsed() < ttl).then(|| Arc::clone(&listing.entries))
    }

    /// The directory's entries however old, to reuse what did not change.
    pub fn last(&self, dir: u64) -> Option<Arc<Vec<Entry>>> {
        self.lock()
            .listings
            .peek(&dir)
            .map(|listing| Arc::clone(&listing.entries))
    }

    /// A fetch of the directory's listing starts: changes made through the mount from now on
    /// make its answer out of date (see [`Listings::finish_fetch`]).
    pub fn start_fetch(&self, dir: u64) {
        self.lock().fetching.insert(dir, false);
    }

    /// Whether the directory's listing changed through the mount since its fetch started (or
    /// no fetch of it is under way).
    pub fn changed_during_fetch(&self, dir: u64) -> bool {
        self.lock().fetching.get(&dir).copied().unwrap_or(true)
    }

    /// The fetch of the directory's listing ended with `entries` (None: it failed). They are
    /// kept, and true returned, unless the listing changed through the mount since the fetch
    /// started: the server may have answered before that change reached it, and the answer
    /// would undo it (a file's new size, a name just made or removed).
    pub fn finish_fetch(&self, dir: u64, entries: Option<&Arc<Vec<Entry>>>) -> bool {
        let mut inner = self.lock();
        let changed = inner.fetching.remove(&dir).unwrap_or(true);
        match entries {
            Some(entries) if !changed => {
                Self::put(&mut inner, dir, Arc::clone(entries));
                true
            }
            _ => false,
        }
    }

    /// The directory's listing was made at mount, before anyone looked.
    pub(in crate::fs) fn mark_warm(&self, dir: u64) {
        if let Some(listing) = self.lock().listings.peek_mut(&dir) {
            listing.warm = true;
        }
    }

    /// A program read the directory: its listing is what it saw, whether made at mount or not.
    pub(in crate::fs) fn looked_at(&self, dir: u64) {
        if let Some(listing) = self.lock().listings.peek_mut(&dir) {
            listing.warm = false;
        }
    }

    /// Whether the directory's listing was made at mount and nobody read or fetched it since.
    pub(in crate::fs) fn is_warm(&self, dir: u64) -> bool {
        self.lock().listings.peek(&dir).is_some_and(|l| l.warm)
    }

    /// The directory's listing answers nothing until it is fetched again, as if its TTL were
    /// over, but stays the last one known: the fetch keeps the details of the items that did
    /// not change, and what guesses from any listing, however old, still has it (whether a new
    /// file is rsync's temporary for a name that exists: then it is not sent early, and
    /// Midas's checksum dedup can spare sending content the server holds).
    pub(in crate::fs) fn expire(&self, dir: u64) {
        if let Some(listing) = self.lock().listings.peek_mut(&dir) {
            listing.expired = true;
            listing.warm = false;
        }
    }

    /// A fetch of folder `dir` that lookups may join starts.
    pub(in crate::fs) fn share_fetch(&self, dir: u64, fetch: Joinable) {
        self.lock().joinable.insert(dir, fetch);
    }

    /// That fetch ended (a later one of the same folder stays).
    pub(in crate::fs) fn unshare_fetch(&self, dir: u64, fetch: &Joinable) {
        let mut inner = self.lock();
        if inner.joinable.get(&dir).is_some_and(|f| f.same(fetch)) {
            inner.joinable.remove(&dir);
        }
    }

    /// The fetch of folder `dir` under way, if any.
    pub(in crate::fs) fn joinable(&self, dir: u64) -> Option<Joinable> {
        self.lock().joinable.get(&dir).cloned()
    }

    /// Keeps a listing made just now (a new directory's).
    pub fn insert(&self, dir: u64, entries: Arc<Vec<Entry>>) {
        let mut inner = self.lock();
        inner.changed(dir);
        Self::put(&mut inner, dir, entries);
    }

    fn put(inner: &mut Inner, dir: u64, entries: Arc<Vec<Entry>>) {
        inner.entries += entries.len();
        let listing = Listing {
            entries,
            fetched: Instant::now(),
            warm: false,
            expired: false,
        };
        if let Some(old) = inner.listings.put(dir, listing) {
            inner.entries -= old.entries.len();
        }
        // The newest listing stays even when it alone is over the bound.
        while inner.entries > MAX_ENTRIES && inner.listings.len() > 1 {
            match inner.listings.pop_lru() {
                Some((_, old)) => inner.entries -= old.entries.len(),
                None => break,
            }
        }
    }

    /// Applies `change` to the directory's listing, if there is one (fresh or not).
    pub fn patch(&self, dir: u64, change: impl FnOnce(&mut Vec<Entry>)) {
        let mut inner = self.lock();
        inner.changed(dir);
        let Some(listing) = inner.listings.peek_mut(&dir) else {
            return;
        };
        let before = listing.entries.len();
        let entries = Arc::make_mut(&mut listing.entries);
        change(entries);
        let after = entries.len();
        inner.entries = inner.entries + after - before;
    }

    /// Forgets the directory's listing: the next lookup or readdir asks the server.
    pub fn remove(&self, dir: u64) {
        let mut inner = self.lock();
        inner.changed(dir);
        if let Some(old) = inner.listings.pop(&dir) {
            inner.entries -= old.entries.len();
        }
    }
}
