//! Giving memory back to the system after the mount has dropped many entries at once: glibc keeps
//! freed pages for reuse, so without asking, the RSS stays at its highest after a large walk.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Entries made or dropped between two requests to the C allocator to give back the memory it
/// holds free.
pub(in crate::fs) const EVERY: usize = 10_000;

/// Entries made or dropped since the last such request.
static SINCE: AtomicUsize = AtomicUsize::new(0);

#[cfg(test)]
thread_local! {
    /// Requests made on this thread (tests read it; other tests' threads do not touch it).
    pub(in crate::fs) static ASKED_HERE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts `churned` entries and, every [`EVERY`] of them, asks glibc to return its free pages
/// (`malloc_trim`: some milliseconds for a heap of 100 MiB).
///
/// Two kinds of work leave free pages behind:
/// - a listing decodes far more than it keeps (the `folder.children` answer, an `item.get`
///   answer per item) on several threads while its entries are made; the RSS stayed about
///   twice what the mount held;
/// - the kernel forgetting the inodes of a large walk (memory pressure, `drop_caches`) drops
///   their nodes: 180,000 of them left the RSS at 95 MiB, the walk's high point.
pub(in crate::fs) fn after(churned: usize) {
    if churned == 0 {
        return;
    }
    let since = SINCE.fetch_add(churned, Ordering::Relaxed) + churned;
    if since < EVERY {
        return;
    }
    SINCE.store(0, Ordering::Relaxed);
    #[cfg(test)]
    ASKED_HERE.with(|asked| asked.set(asked.get() + 1));
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists, under its own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
