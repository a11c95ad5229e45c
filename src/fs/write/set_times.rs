//! Modification times set through the mount (`touch`, `rsync -a`, `cp -p`). Midas has no such
//! field, so they are kept by the mount, by canonical inode, while they can matter: until the
//! object is removed through the mount, or its content is written after its time was set (its
//! time is then the write's, as POSIX says, and the server's date shows it); and only the
//! [`MAX_SET_TIMES`] set last (`rsync -a` of more files than that sees the others' server
//! dates, and sends them again).
//!
//! The times of files are written to a file of the spool directory, one per server and user,
//! with the item and revision each was set on: within a second of a change (so that a daemon
//! killed keeps all but the last second's), and at unmount. The next mount takes a time back
//! when the file's listing shows that same revision, so that `rsync -a` after a remount finds
//! its own times and sends nothing. A revision made since (on the server or by another
//! client) shows the server's date again.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lru::LruCache;

use crate::fs::inode::NodeKind;
use crate::midas::types::Id;

/// Times kept at most (some 50 bytes each).
pub(in crate::fs) const MAX_SET_TIMES: usize = 100_000;

/// The first line of the file the times are kept in between mounts.
const HEADER: &str = "# midasfs: modification times set through the mount (inode, item, revision, mtime, set at; nanoseconds since 1970)";

/// The content a time was set on: an item and the revision it showed.
pub(in crate::fs) type Revision = (Id, i64);

/// The revision a file node shows (none for what is not a file on the server yet).
pub(in crate::fs) fn revision_of(kind: &NodeKind) -> Option<Revision> {
    match kind {
        NodeKind::ItemFile { item, .. }
        | NodeKind::SavedFile { item, .. }
        | NodeKind::Bitstream { item, .. } => Some((item.id, item.revision)),
        _ => None,
    }
}

/// A time set through the mount, when it was set, and on which revision (once known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::fs) struct SetTime {
    pub(in crate::fs) mtime: SystemTime,
    pub(in crate::fs) set_at: SystemTime,
    pub(in crate::fs) revision: Option<Revision>,
}

pub(in crate::fs) struct SetTimes {
    times: LruCache<u64, SetTime>,
    /// Times an earlier mount kept, not seen in a listing yet.
    remembered: HashMap<u64, SetTime>,
    /// Counts the changes of what [`SetTimes::save`] writes.
    changes: u64,
}

/// What a save writes, taken out of [`SetTimes`] so that the file is written without holding
/// it (see [`SetTimes::to_keep`]).
pub(in crate::fs) struct ToKeep {
    ours: Vec<(u64, SetTime)>,
    set_here: usize,
    known: usize,
    max: usize,
}

impl SetTimes {
    pub(in crate::fs) fn new(max: usize) -> SetTimes {
        SetTimes {
            times: LruCache::new(NonZeroUsize::new(max).unwrap_or(NonZeroUsize::MIN)),
            remembered: HashMap::new(),
            changes: 0,
        }
    }

    /// How many changes there have been to what a save writes (to tell whether one is due).
    pub(in crate::fs) fn changes(&self) -> u64 {
        self.changes
    }

    /// `mtime` set now on `ino`, which shows `revision`.
    pub(in crate::fs) fn set(&mut self, ino: u64, mtime: SystemTime, revision: Option<Revision>) {
        let set_at = SystemTime::now();
        self.changes += 1;
        self.remembered.remove(&ino);
        self.times.put(
            ino,
            SetTime {
                mtime,
                set_at,
                revision,
            },
        );
    }

    /// The time set on `ino`, if any.
    pub(in crate::fs) fn get(&self, ino: u64) -> Option<SystemTime> {
        self.times.peek(&ino).map(|set| set.mtime)
    }

    /// The time to show for `ino`, listed as showing `revision`: one set in this mount, or one
    /// an earlier mount set on that same revision. A time set on an older revision than the
    /// one listed is dropped: someone else wrote the file since (a write through the mount
    /// moves the time to its new revision, or drops it).
    pub(in crate::fs) fn shown(
        &mut self,
        ino: u64,
        revision: Option<Revision>,
    ) -> Option<SystemTime> {
        if let Some(set) = self.times.peek_mut(&ino) {
            match (set.revision, revision) {
                (Some((item, known)), Some((listed_item, listed)))
                    if item == listed_item && listed > known =>
                {
                    self.times.pop(&ino);
                    self.changes += 1;
                    return None;
                }
                // A listing older than the time's revision (fetched before an upload) leaves it.
                (Some((item, known)), Some((listed_item, listed)))
                    if item == listed_item && listed < known => {}
                (_, Some(listed)) => {
                    if set.revision != Some(listed) {
                        set.revision = Some(listed);
                        self.changes += 1;
                    }
                }
                (_, None) => {}
            }
            return Some(set.mtime);
        }
        let kept = self.remembered.remove(&ino)?;
        if revision.is_none() || kept.revision != revision {
            return None;
        }
        self.times.put(ino, kept);
        self.changes += 1;
        Some(kept.mtime)
    }

    pub(in crate::fs) fn remove(&mut self, ino: u64) -> Option<SetTime> {
        let remembered = self.remembered.remove(&ino);
        let removed = self.times.pop(&ino);
        if remembered.is_some() || removed.is_some() {
            self.changes += 1;
        }
        removed
    }

    /// A time set before, now on `ino` (the file's inode changed), which shows `revision`.
    pub(in crate::fs) fn put(&mut self, ino: u64, mut set: SetTime, revision: Option<Revision>) {
        if revision.is_some() {
            set.revision = revision;
        }
        self.changes += 1;
        self.remembered.remove(&ino);
        self.times.put(ino, set);
    }

    /// The file of inode `from` is inode `to` now (or still, when they are equal): a time set
    /// on `from` goes to `to`, unless the file was written after it was set (`written_at`: its
    /// time is the write's then, and the set one is dropped), or `to` has one set later. When
    /// the inode stays, a kept time takes `revision`, the one the upload made. Called on both
    /// sides of a change of inode, and by a time set during one, so that a time set while the
    /// inode changes is carried whichever way the two interleave. Returns the time `to` has
    /// now, if one came from `from`.
    pub(in crate::fs) fn carry(
        &mut self,
        from: u64,
        to: u64,
        revision: Option<Revision>,
        written_at: Option<SystemTime>,
    ) -> Option<SystemTime> {
        let written_since = |set: &SetTime| written_at.is_some_and(|written| set.set_at < written);
        if from == to {
            if self.times.peek(&from).is_some_and(written_since) {
                self.remove(from);
            } else if let (Some(set), Some(_)) = (self.times.peek_mut(&from), revision) {
                // Kept: it is the time of the revision the upload made.
                if set.revision != revision {
                    set.revision = revision;
                    self.changes += 1;
                }
            }
            return None;
        }
        let set = self.remove(from)?;
        if written_since(&set) {
            return None;
        }
        if self
            .times
            .peek(&to)
            .is_some_and(|there| there.set_at > set.set_at)
        {
            return None;
        }
        self.put(to, set, revision);
        Some(set.mtime)
    }

    pub(in crate::fs) fn is_empty(&self) -> bool {
        self.times.is_empty() && self.remembered.is_empty()
    }

    #[cfg(test)]
    pub(in crate::fs) fn len(&self) -> usize {
        self.times.len()
    }

    /// Takes in the times kept in `path` by earlier mounts (a missing or unreadable file is no
    /// times; a line that does not parse is skipped).
    pub(in crate::fs) fn load(&mut self, path: &Path) {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
            Err(err) => {
                log::warn!(
                    "{}: not reading the times set earlier: {err}",
                    path.display()
                );
                return;
            }
        };
        let mut kept = parse(&text);
        let max = self.times.cap().get();
        if kept.len() > max {
            kept.sort_by_key(|(_, set)| std::cmp::Reverse(set.set_at));
            kept.truncate(max);
        }
        log::debug!("{}: {} times set earlier", path.display(), kept.len());
        self.remembered = kept.into_iter().collect();
    }

    /// Writes the times of files to `path` (see [`ToKeep::save`]).
    #[cfg(test)]
    pub(in crate::fs) fn save(&self, path: &Path) -> std::io::Result<()> {
        self.to_keep().save(path)
    }

    /// What a save writes: the times set in this mount and those of earlier mounts not seen
    /// again, on a known revision.
    pub(in crate::fs) fn to_keep(&self) -> ToKeep {
        let ours = self
            .remembered
            .iter()
            .chain(self.times.iter())
            .filter(|(_, set)| set.revision.is_some())
            .map(|(ino, set)| (*ino, *set))
            .collect();
        ToKeep {
            ours,
            set_here: self.times.len(),
            known: self
                .times
                .iter()
                .filter(|(_, set)| set.revision.is_some())
                .count(),
            max: self.times.cap().get(),
        }
    }
}

impl ToKeep {
    /// Writes these times and those another mount wrote to `path` meanwhile (the newest of each
    /// inode) to `path`, 0600, replacing it whole.
    pub(in crate::fs) fn save(self, path: &Path) -> std::io::Result<()> {
        let mut all: HashMap<u64, SetTime> = match std::fs::read_to_string(path) {
            Ok(text) => parse(&text).into_iter().collect(),
            Err(_) => HashMap::new(),
        };
        for (ino, set) in self.ours {
            match all.get(&ino) {
                Some(other) if other.set_at > set.set_at => {}
                _ => {
                    all.insert(ino, set);
                }
            }
        }
        log::debug!(
            "{}: keeping the times of {} files for the next mount ({} set in this mount, {} of them on a known revision)",
            path.display(),
            all.len(),
            self.set_here,
            self.known
        );
        let mut rows: Vec<(u64, SetTime)> = all.into_iter().collect();
        rows.sort_by_key(|(_, set)| std::cmp::Reverse(set.set_at));
        rows.truncate(self.max);
        if rows.is_empty() && !path.exists() {
            return Ok(());
        }
        let mut text = String::with_capacity(HEADER.len() + rows.len() * 64);
        text.push_str(HEADER);
        text.push('\n');
        for (ino, set) in rows {
            let Some((item, revision)) = set.revision else {
                continue;
            };
            text.push_str(&format!(
                "{ino}\t{item}\t{revision}\t{}\t{}\n",
                nanos(set.mtime),
                nanos(set.set_at)
            ));
        }
        let temp = temp_path(path);
        let written = crate::private::write(&temp, text.as_bytes())
            .and_then(|()| std::fs::rename(&temp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written
    }
}

impl Default for SetTimes {
    fn default() -> SetTimes {
        SetTimes::new(MAX_SET_TIMES)
    }
}

/// Where a mount of `server` as user `user` keeps its times, in the spool directory `dir`.
pub(in crate::fs) fn times_path(dir: &Path, server: &str, user: Option<Id>) -> PathBuf {
    use md5::{Digest, Md5};
    let key = Md5::digest(format!("{server}\n{}", user.unwrap_or(0)).as_bytes());
    let hex: String = key[..8].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("times-{hex}"))
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

fn parse(text: &str) -> Vec<(u64, SetTime)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let ino = fields.next()?.parse().ok()?;
            let item = fields.next()?.parse().ok()?;
            let revision = fields.next()?.parse().ok()?;
            let mtime = from_nanos(fields.next()?.parse().ok()?)?;
            let set_at = from_nanos(fields.next()?.parse().ok()?)?;
            fields.next().is_none().then_some((
                ino,
                SetTime {
                    mtime,
                    set_at,
                    revision: Some((item, revision)),
                },
            ))
        })
        .collect()
}

/// Nanoseconds since 1970 (negative before).
fn nanos(time: SystemTime) -> i128 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    }
}

fn from_nanos(nanos: i128) -> Option<SystemTime> {
    let abs = nanos.unsigned_abs();
    let span = Duration::new(
        u64::try_from(abs / 1_000_000_000).ok()?,
        (abs % 1_000_000_000) as u32,
    );
    if nanos >= 0 {
        UNIX_EPOCH.checked_add(span)
    } else {
        UNIX_EPOCH.checked_sub(span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn only_the_times_set_last_are_kept() {
        let mut times = SetTimes::new(2);
        times.set(1, at(1), None);
        times.set(2, at(2), None);
        times.set(3, at(3), None);
        assert_eq!(times.len(), 2);
        assert_eq!(
            (times.get(1), times.get(2), times.get(3)),
            (None, Some(at(2)), Some(at(3)))
        );
    }

    #[test]
    fn a_time_kept_by_an_earlier_mount_shows_on_the_same_revision_only() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("times");
        let before_1970 = UNIX_EPOCH - Duration::new(86_400, 5);
        let mut first = SetTimes::new(10);
        first.set(1, at(1_000), Some((10, 1)));
        first.set(2, before_1970, Some((20, 3)));
        first.set(3, at(3_000), None);
        first.save(&path).expect("save");
        let mode = std::fs::metadata(&path)
            .expect("saved")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let mut next = SetTimes::new(10);
        next.load(&path);
        assert_eq!(next.shown(1, Some((10, 1))), Some(at(1_000)));
        assert_eq!(next.shown(2, Some((20, 4))), None, "a newer revision");
        assert_eq!(
            next.shown(2, Some((20, 3))),
            None,
            "forgotten once seen newer"
        );
        assert_eq!(next.shown(3, None), None, "no revision known: not kept");
        assert_eq!(
            next.get(1),
            Some(at(1_000)),
            "taken back into this mount's times"
        );

        let mut again = SetTimes::new(10);
        again.load(&path);
        assert_eq!(
            again.shown(2, Some((20, 3))),
            Some(before_1970),
            "to the nanosecond"
        );
    }

    #[test]
    fn a_time_set_in_this_mount_goes_when_a_newer_revision_is_listed() {
        let mut times = SetTimes::new(10);
        times.set(1, at(1), Some((10, 2)));
        assert_eq!(
            times.shown(1, Some((10, 1))),
            Some(at(1)),
            "an older listing"
        );
        assert_eq!(times.shown(1, Some((10, 2))), Some(at(1)));
        times.set(2, at(2), None);
        assert_eq!(
            times.shown(2, Some((20, 1))),
            Some(at(2)),
            "its revision learnt"
        );
        assert_eq!(
            times.shown(2, Some((20, 2))),
            None,
            "written by someone else since"
        );
        assert_eq!(times.get(2), None);
        assert_eq!(times.shown(1, Some((10, 3))), None);
    }

    #[test]
    fn saving_keeps_the_newest_time_of_each_file_from_every_mount_and_at_most_the_maximum() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("times");
        let mut one = SetTimes::new(3);
        one.set(1, at(1), Some((1, 1)));
        one.set(2, at(2), Some((2, 1)));
        let mut other = SetTimes::new(3);
        other.set(2, at(22), Some((2, 1)));
        other.set(3, at(3), Some((3, 1)));
        other.set(4, at(4), Some((4, 1)));
        one.save(&path).expect("save");
        other.save(&path).expect("save");

        let mut next = SetTimes::new(3);
        next.load(&path);
        let shown: Vec<_> = (1..=4).map(|n| next.shown(n, Some((n as Id, 1)))).collect();
        assert_eq!(shown, vec![None, Some(at(22)), Some(at(3)), Some(at(4))]);
    }

    #[test]
    fn a_damaged_line_is_skipped_and_the_others_are_read() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("times");
        std::fs::write(
            &path,
            format!("{HEADER}\n1\t10\t1\t5000000000\t6000000000\n2\tten\t1\t1\t1\n3\t30\t1\t99999999999999999999999999999999999\t1\n"),
        )
        .expect("write");
        let mut times = SetTimes::new(10);
        times.load(&path);
        assert_eq!(times.shown(1, Some((10, 1))), Some(at(5)));
        assert_eq!(
            times.remembered.len(),
            0,
            "the damaged lines were not taken"
        );
    }
}
