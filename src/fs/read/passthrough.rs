//! FUSE passthrough of files whose content is whole in the data cache: which opens the kernel
//! may read from the entry by itself, and the rules it holds every open of an inode to.
//!
//! The kernel ties a backing file to the inode, not to the open: while one open of an inode
//! is passed through, every other open of it must be passed through to the same backing file
//! (answered otherwise, the open fails with EIO), and an inode with an open that is not passed
//! through (a reader of the server's stream, a writer) cannot be passed through (EIO again).
//! So every open of a mount with passthrough is counted here, per inode, and the decision for a
//! new one is taken under the same lock as the count. The kernel drops its own counts before it
//! sends RELEASE, so the counts here are never lower than the kernel's.
//!
//! What the kernel holds for a backing file is opaque here ([`Backing`]): the FUSE adapter
//! makes it, this module keeps it until the last passed-through open of the inode is released.

use std::any::Any;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::fs::error::Kind;
use crate::fs::{FsError, FsResult};

/// The kernel's handle of a backing file, kept while an open uses it.
pub type Backing = Arc<dyn Any + Send + Sync>;

/// Makes the kernel's handle of a backing file (the FUSE adapter's `open_backing`).
pub type MakeBacking<'a> = &'a (dyn Fn(&File) -> io::Result<Backing> + Send + Sync);

/// How a read open is answered.
pub(in crate::fs) enum Decision {
    /// The kernel reads the entry itself.
    Passthrough(Backing),
    /// The inode is passed through to an older content (a revision came since): reads come
    /// to the mount (direct I/O), which serves the new content; only `mmap` would see the
    /// backing file.
    DirectPassthrough(Backing),
    /// Reads come to the mount.
    Mount,
}

/// How long an open for writing waits for the kernel's reads from the data cache to be closed:
/// the kernel sends RELEASE after `close` returns, so `cat f; echo x >> f` would otherwise race.
const WRITER_WAIT: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(in crate::fs) struct Passthrough {
    /// The kernel accepted passthrough and no backing file was refused since.
    enabled: AtomicBool,
    state: Mutex<State>,
    /// Told when an inode stops being passed through.
    ended: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// Every open handle of the mount: its inode, and whether it is passed through.
    handles: HashMap<u64, (u64, bool)>,
    inodes: HashMap<u64, InodeOpens>,
}

#[derive(Default)]
struct InodeOpens {
    /// Open handles not passed through.
    mount: u32,
    /// Opens for writing under way (their handle is not counted yet).
    writers_opening: u32,
    passed: Option<Passed>,
}

struct Passed {
    handles: u32,
    md5: String,
    backing: Backing,
}

impl InodeOpens {
    fn is_unused(&self) -> bool {
        self.mount == 0 && self.writers_opening == 0 && self.passed.is_none()
    }
}

impl Passthrough {
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an open may need a decision here: passthrough is on, or an inode is still
    /// passed through from before it went off.
    pub fn active(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
            || self.state().inodes.values().any(|i| i.passed.is_some())
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Decides how handle `fh`, a read open of `ino` whose content has this `md5`, is answered,
    /// and counts it. `entry` is the data cache's sound entry of that content, if any.
    pub fn open_read(
        &self,
        ino: u64,
        fh: u64,
        md5: &str,
        entry: Option<(&File, MakeBacking<'_>)>,
    ) -> Decision {
        let mut state = self.state();
        let inode = state.inodes.entry(ino).or_default();
        let decision = match &mut inode.passed {
            Some(passed) => {
                passed.handles += 1;
                if passed.md5 == md5 {
                    Decision::Passthrough(Arc::clone(&passed.backing))
                } else {
                    Decision::DirectPassthrough(Arc::clone(&passed.backing))
                }
            }
            None => match entry {
                Some((file, make_backing))
                    if inode.mount == 0
                        && inode.writers_opening == 0
                        && self.enabled.load(Ordering::Relaxed) =>
                {
                    match make_backing(file) {
                        Ok(backing) => {
                            inode.passed = Some(Passed {
                                handles: 1,
                                md5: md5.to_owned(),
                                backing: Arc::clone(&backing),
                            });
                            Decision::Passthrough(backing)
                        }
                        Err(err) => {
                            log::warn!(
                                "the kernel refused a data cache entry for passthrough ({err}): \
                                 files are read through the mount from now on"
                            );
                            self.enabled.store(false, Ordering::Relaxed);
                            inode.mount += 1;
                            Decision::Mount
                        }
                    }
                }
                _ => {
                    inode.mount += 1;
                    Decision::Mount
                }
            },
        };
        let passed = !matches!(decision, Decision::Mount);
        state.handles.insert(fh, (ino, passed));
        decision
    }

    /// Counts handle `fh` of `ino`, which is not passed through (a handle of a file open for
    /// writing).
    pub fn opened_by_mount(&self, ino: u64, fh: u64) {
        let mut state = self.state();
        state.inodes.entry(ino).or_default().mount += 1;
        state.handles.insert(fh, (ino, false));
    }

    /// An open of `ino` for writing begins: refused (after a short wait) while the kernel reads
    /// the inode from the data cache (its handle could not be answered), else no passthrough
    /// starts on the inode until the returned guard is dropped (by then its handle is counted).
    pub async fn writer_opening(self: &Arc<Self>, ino: u64) -> FsResult<WriterOpening> {
        let deadline = tokio::time::Instant::now() + WRITER_WAIT;
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if let Some(opening) = self.try_writer_opening(ino) {
                return Ok(opening);
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return Err(FsError::new(
                    Kind::Busy,
                    format!(
                        "inode {ino} is open for reading from the data cache (passthrough); \
                         it can be written once that is closed"
                    ),
                ));
            }
        }
    }

    fn try_writer_opening(self: &Arc<Self>, ino: u64) -> Option<WriterOpening> {
        let mut state = self.state();
        let inode = state.inodes.entry(ino).or_default();
        if inode.passed.is_some() {
            return None;
        }
        inode.writers_opening += 1;
        Some(WriterOpening {
            table: Arc::clone(self),
            ino,
        })
    }

    /// The kernel released handle `fh` (any handle; unknown ones are ignored).
    pub fn release(&self, fh: u64) {
        let mut state = self.state();
        let Some((ino, passed)) = state.handles.remove(&fh) else {
            return;
        };
        let Some(inode) = state.inodes.get_mut(&ino) else {
            return;
        };
        if passed {
            if let Some(p) = &mut inode.passed {
                p.handles -= 1;
                if p.handles == 0 {
                    // Drops the kernel's backing file once nothing else holds it.
                    inode.passed = None;
                    self.ended.notify_waiters();
                }
            }
        } else {
            inode.mount = inode.mount.saturating_sub(1);
        }
        if inode.is_unused() {
            state.inodes.remove(&ino);
        }
    }
}

/// An open for writing under way (see [`Passthrough::writer_opening`]).
pub(in crate::fs) struct WriterOpening {
    table: Arc<Passthrough>,
    ino: u64,
}

impl Drop for WriterOpening {
    fn drop(&mut self) {
        let mut state = self.table.state();
        if let Some(inode) = state.inodes.get_mut(&self.ino) {
            inode.writers_opening -= 1;
            if inode.is_unused() {
                state.inodes.remove(&self.ino);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backing(_: &File) -> io::Result<Backing> {
        Ok(Arc::new(()))
    }

    fn refused(_: &File) -> io::Result<Backing> {
        Err(io::Error::from_raw_os_error(libc::EPERM))
    }

    fn table() -> Arc<Passthrough> {
        let table = Arc::new(Passthrough::default());
        table.enable();
        table
    }

    fn is_passthrough(decision: &Decision) -> bool {
        matches!(decision, Decision::Passthrough(_))
    }

    #[test]
    fn every_open_of_a_passed_through_inode_shares_its_backing_until_the_last_release() {
        let table = table();
        let entry = tempfile::tempfile().unwrap();
        let first = table.open_read(7, 1, "aa", Some((&entry, &backing)));
        let Decision::Passthrough(first) = first else {
            panic!("not passed through")
        };
        // A second open finds no entry (evicted meanwhile): the kernel still needs the same.
        let Decision::Passthrough(second) = table.open_read(7, 2, "aa", None) else {
            panic!("not passed through")
        };
        assert!(Arc::ptr_eq(&first, &second));
        table.release(1);
        assert!(
            table.try_writer_opening(7).is_none(),
            "written while passed through"
        );
        table.release(2);
        assert!(table.try_writer_opening(7).is_some());
        assert!(table.state().inodes.is_empty());
    }

    #[test]
    fn an_inode_read_or_written_through_the_mount_is_not_passed_through() {
        let table = table();
        let entry = tempfile::tempfile().unwrap();
        table.opened_by_mount(3, 1);
        assert!(!is_passthrough(&table.open_read(
            3,
            2,
            "aa",
            Some((&entry, &backing))
        )));
        table.release(1);
        table.release(2);
        let writing = table.try_writer_opening(3).unwrap();
        assert!(!is_passthrough(&table.open_read(
            3,
            3,
            "aa",
            Some((&entry, &backing))
        )));
        drop(writing);
        table.release(3);
        assert!(is_passthrough(&table.open_read(
            3,
            4,
            "aa",
            Some((&entry, &backing))
        )));
    }

    #[tokio::test]
    async fn a_writer_waits_for_the_passthrough_to_close_then_opens_or_gets_ebusy() {
        let table = table();
        let entry = tempfile::tempfile().unwrap();
        assert!(is_passthrough(&table.open_read(
            4,
            1,
            "aa",
            Some((&entry, &backing))
        )));
        let err = table.writer_opening(4).await.err().expect("busy");
        assert_eq!(err.errno(), libc::EBUSY);
        let waiting = tokio::spawn({
            let table = Arc::clone(&table);
            async move { table.writer_opening(4).await.is_ok() }
        });
        tokio::task::yield_now().await;
        table.release(1);
        assert!(
            waiting.await.unwrap(),
            "the writer opened once the reader closed"
        );
    }

    #[test]
    fn a_new_revision_opened_while_the_old_one_is_passed_through_is_read_through_the_mount() {
        let table = table();
        let entry = tempfile::tempfile().unwrap();
        assert!(is_passthrough(&table.open_read(
            5,
            1,
            "old",
            Some((&entry, &backing))
        )));
        assert!(matches!(
            table.open_read(5, 2, "new", Some((&entry, &backing))),
            Decision::DirectPassthrough(_)
        ));
    }

    #[test]
    fn a_refused_backing_turns_passthrough_off_and_the_open_reads_through_the_mount() {
        let table = table();
        let entry = tempfile::tempfile().unwrap();
        assert!(matches!(
            table.open_read(9, 1, "aa", Some((&entry, &refused))),
            Decision::Mount
        ));
        assert!(!table.enabled());
        table.release(1);
        assert!(matches!(
            table.open_read(9, 2, "aa", Some((&entry, &backing))),
            Decision::Mount
        ));
    }
}
