//! What the filesystem tells the kernel about the caches the kernel keeps for the mount: that
//! an inode's attributes changed on their own, and content put in its page cache ahead of a
//! program. The mount gives an implementation over FUSE notifications once it is mounted; without
//! one (the tests without FUSE give a recording one, or none) nothing is told.

use std::io;

pub trait KernelCaches: Send + Sync {
    /// `ino`'s attributes changed on their own (not by the request the kernel is waiting for):
    /// the kernel forgets those it cached.
    fn attributes_changed(&self, ino: u64);

    /// The kernel forgets the content it cached of `ino` (and its attributes). Blocking.
    fn forget_content(&self, ino: u64) -> io::Result<()>;

    /// Puts `data` at `offset` of `ino`'s page cache, where a read finds it without a READ.
    /// Fails when the kernel does not hold the inode (nothing is stored then). Blocking: it may
    /// wait for a READ of the same pages in flight.
    fn store(&self, ino: u64, offset: u64, data: &[u8]) -> io::Result<()>;
}
