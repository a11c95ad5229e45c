//! setattr: chmod changes the access on the server (see [`crate::fs::privacy`]), chown changes
//! nothing, times are kept in memory while they matter, a size change goes through the spool.

use std::time::SystemTime;

use crate::fs::inode::Attr;
use crate::fs::write::set_times::revision_of;
use crate::fs::{FsResult, MidasFs};

impl MidasFs {
    /// A mode's others' read bit is the access on the server (chmod, see
    /// [`MidasFs::chmod`]); its other bits and chown are accepted and change nothing (Midas has
    /// no such fields); times are kept in memory while they matter (see
    /// `write::set_times`); a size change goes through the spool.
    pub async fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        size: Option<u64>,
        mtime: Option<SystemTime>,
    ) -> FsResult<Attr> {
        if let Some(mode) = mode {
            self.chmod(ino, mode).await?;
            if size.is_none() && mtime.is_none() {
                return self.getattr(ino);
            }
        }
        self.check_writable()?;
        self.refuse_read_only_node(ino)?;
        if let Some(size) = size {
            self.truncate(ino, size).await?;
        }
        if let Some(mtime) = mtime {
            let shown_revision = || {
                self.node_data(ino)
                    .ok()
                    .and_then(|data| revision_of(&data.kind))
            };
            let canonical = self.canonical_ino(ino);
            self.writes.mtimes().set(canonical, mtime, shown_revision());
            // An upload that ended meanwhile gave the file another inode: the time goes with
            // it (see `SetTimes::carry`).
            let now = self.canonical_ino(ino);
            if now != canonical {
                self.writes
                    .mtimes()
                    .carry(canonical, now, shown_revision(), None);
            }
            let parent = self.parent(ino);
            self.listings.patch(parent, |entries| {
                for entry in entries
                    .iter_mut()
                    .filter(|e| e.ino == canonical || e.ino == now || e.ino == ino)
                {
                    entry.data.mtime = mtime;
                }
            });
        }
        self.getattr(ino)
    }
}
