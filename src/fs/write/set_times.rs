//! Modification times set through the mount (`touch`, `rsync -a`, `cp -p`). Midas has no such
//! field, so they are kept in memory, by canonical inode, while they can matter: until the
//! object is removed through the mount, or its content is written after its time was set (its
//! time is then the write's, as POSIX says, and the server's date shows it); and only the
//! [`MAX_SET_TIMES`] set last (`rsync -a` of more files than that sees the others' server
//! dates, and sends them again).

use std::num::NonZeroUsize;
use std::time::SystemTime;

use lru::LruCache;

/// Times kept at most (some 50 bytes each).
pub(in crate::fs) const MAX_SET_TIMES: usize = 100_000;

/// A time set through the mount, and when it was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::fs) struct SetTime {
    pub(in crate::fs) mtime: SystemTime,
    pub(in crate::fs) set_at: SystemTime,
}

pub(in crate::fs) struct SetTimes {
    times: LruCache<u64, SetTime>,
}

impl SetTimes {
    pub(in crate::fs) fn new(max: usize) -> SetTimes {
        SetTimes {
            times: LruCache::new(NonZeroUsize::new(max).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    /// `mtime` set now on `ino`.
    pub(in crate::fs) fn set(&mut self, ino: u64, mtime: SystemTime) {
        let set_at = SystemTime::now();
        self.times.put(ino, SetTime { mtime, set_at });
    }

    /// The time set on `ino`, if any.
    pub(in crate::fs) fn get(&self, ino: u64) -> Option<SystemTime> {
        self.times.peek(&ino).map(|set| set.mtime)
    }

    pub(in crate::fs) fn remove(&mut self, ino: u64) -> Option<SetTime> {
        self.times.pop(&ino)
    }

    /// A time set before, now on `ino` (the file's inode changed).
    pub(in crate::fs) fn put(&mut self, ino: u64, set: SetTime) {
        self.times.put(ino, set);
    }

    pub(in crate::fs) fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    #[cfg(test)]
    pub(in crate::fs) fn len(&self) -> usize {
        self.times.len()
    }
}

impl Default for SetTimes {
    fn default() -> SetTimes {
        SetTimes::new(MAX_SET_TIMES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_the_times_set_last_are_kept() {
        let mut times = SetTimes::new(2);
        let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        times.set(1, at(1));
        times.set(2, at(2));
        times.set(3, at(3));
        assert_eq!(times.len(), 2);
        assert_eq!(
            (times.get(1), times.get(2), times.get(3)),
            (None, Some(at(2)), Some(at(3)))
        );
    }
}
