//! What `statfs` (`df`, a file manager's "Free space") reports: the room left for writes.
//!
//! Midas reports no capacity, and every byte written through the mount waits in the spool until
//! its upload is done, so what can be written now is bounded by the spool: its cap
//! (`--spool-size`) less what files being written hold, and the free space of the disk it is on
//! less what writes leave free there.
//! A read-only mount has no room for writes at all.

use super::MidasFs;

/// The block size `statfs` counts in.
pub const BLOCK: u64 = 4096;

/// The figures of `statfs`, in [`BLOCK`]s and files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
}

/// Files: Midas has no limit, and `df -i` should not show a full filesystem.
const FILES: u64 = 1 << 30;

/// The total size and the space an unprivileged writer may use on the filesystem of `dir`.
pub(in crate::fs) fn disk_space(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is a valid C string and `stat` a plain struct statvfs fills in.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let unit = stat.f_frsize as u64;
    Some((
        (stat.f_blocks as u64).saturating_mul(unit),
        (stat.f_bavail as u64).saturating_mul(unit),
    ))
}

impl MidasFs {
    /// The mount's size is the spool's (its cap, or its disk if that is smaller); what is free is
    /// what a new write can still put in the spool.
    pub fn statfs(&self) -> StatFs {
        let spool = &self.config.spool;
        let used = self.writes.in_flight().1;
        let (disk_total, disk_free) = disk_space(&spool.dir).unwrap_or((spool.max_bytes, 0));
        let total = spool.max_bytes.min(disk_total);
        let free = if self.config.read_only {
            0
        } else {
            spool
                .max_bytes
                .saturating_sub(used)
                .min(disk_free.saturating_sub(spool.keep_free))
        };
        StatFs {
            blocks: total / BLOCK,
            bfree: free / BLOCK,
            bavail: free / BLOCK,
            files: FILES,
            ffree: FILES,
        }
    }
}
