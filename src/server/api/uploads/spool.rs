//! The disk-writer thread: received chunks appended to the temporary file, written back as
//! they come, while another thread hashes them.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use md5::{Digest, Md5};
use tokio::sync::mpsc;

use super::writers::WriterSlot;
use crate::server::conn::{spawn_transfer, Transfer};

/// Chunks queued for the writing (or hashing) thread before the network side waits: a bound
/// on the memory one upload holds (hyper's chunks are at most a few hundred KiB). Enough to
/// ride out jitter; 32 measured no faster.
pub(super) const SPOOL_QUEUE: usize = 8;

/// The writing thread starts writeback of every window of this many bytes as soon as it is
/// written, and waits for the window before, so the final fsync finds little left to do and
/// the page cache never holds a whole upload dirty.
pub(super) const WRITEBACK_WINDOW: u64 = 8 << 20;

/// Why received bytes did not all reach the disk.
#[derive(Debug, thiserror::Error)]
pub(super) enum SpoolError {
    /// A write failed; the file was cut back to the `kept` bytes it held before that chunk.
    #[error("write failed with {kept} bytes kept: {source}")]
    Write { kept: u64, source: std::io::Error },
    #[error("fsync failed: {0}")]
    Sync(std::io::Error),
    #[error("the writing thread stopped")]
    Stopped,
}

/// An upload's temporary file being appended to by one thread while, from byte 0, another
/// computes the MD5: the network, the disk and the hash proceed side by side.
pub(super) struct Spool {
    to_writer: mpsc::Sender<Bytes>,
    to_hasher: Option<mpsc::Sender<Bytes>>,
    writer: Transfer<Result<(), SpoolError>>,
    hasher: Option<Transfer<Md5>>,
}

impl Spool {
    /// `held` is the file's current length, and `hash` the MD5 state of those bytes if known.
    /// The writing thread keeps the token's `slot` until it has stopped, even if the request
    /// is dropped before.
    pub(super) fn start(
        file: std::fs::File,
        held: u64,
        hash: Option<Md5>,
        slot: Arc<WriterSlot>,
    ) -> std::io::Result<Spool> {
        let (to_writer, chunks) = mpsc::channel(SPOOL_QUEUE);
        let writer = spawn_transfer(move || {
            let written = write_chunks(file, held, chunks);
            drop(slot);
            written
        })?;
        let (to_hasher, hasher) = match hash {
            Some(md5) => {
                let (tx, chunks) = mpsc::channel(SPOOL_QUEUE);
                (
                    Some(tx),
                    Some(spawn_transfer(move || hash_chunks(md5, chunks))?),
                )
            }
            None => (None, None),
        };
        Ok(Spool {
            to_writer,
            to_hasher,
            writer,
            hasher,
        })
    }

    /// Queue one chunk (shared, not copied); false once the writer has stopped on an error.
    pub(super) async fn push(&mut self, chunk: Bytes) -> bool {
        if let Some(to_hasher) = &self.to_hasher {
            // The hasher only stops when its queue closes, which this side does.
            let _ = to_hasher.send(chunk.clone()).await;
        }
        self.to_writer.send(chunk).await.is_ok()
    }

    /// Wait until everything queued is written and fsynced; then the MD5 state of all of it
    /// comes from the returned task, when hashing.
    pub(super) async fn finish(self) -> Result<Option<Transfer<Md5>>, SpoolError> {
        drop(self.to_writer);
        drop(self.to_hasher);
        self.writer.await.map_err(|_| SpoolError::Stopped)??;
        Ok(self.hasher)
    }
}

pub(super) fn write_chunks(
    mut file: std::fs::File,
    held: u64,
    mut chunks: mpsc::Receiver<Bytes>,
) -> Result<(), SpoolError> {
    let mut written = held;
    let mut writeback_from = held;
    let mut previous_window = None;
    while let Some(chunk) = chunks.blocking_recv() {
        if let Err(source) = file.write_all(&chunk) {
            // Drop whatever part of this chunk may have landed: the file stays resumable.
            let _ = file.set_len(written);
            let _ = file.sync_all();
            return Err(SpoolError::Write {
                kept: written,
                source,
            });
        }
        written += chunk.len() as u64;
        if written - writeback_from >= WRITEBACK_WINDOW {
            let window = (writeback_from, written);
            writeback(&file, window, previous_window);
            previous_window = Some(window);
            writeback_from = written;
        }
    }
    file.sync_all().map_err(SpoolError::Sync)
}

/// Start writing `window` (a byte range) to disk and wait until `previous` is written. Only
/// a head start for the final fsync, which reports any error, so failures here are ignored.
#[cfg(target_os = "linux")]
pub(super) fn writeback(file: &std::fs::File, window: (u64, u64), previous: Option<(u64, u64)>) {
    use std::os::fd::AsRawFd;
    let range = |(from, to): (u64, u64)| {
        Some((
            libc::off64_t::try_from(from).ok()?,
            libc::off64_t::try_from(to - from).ok()?,
        ))
    };
    if let Some((start, len)) = range(window) {
        // SAFETY: a plain syscall on an open descriptor.
        unsafe { libc::sync_file_range(file.as_raw_fd(), start, len, libc::SYNC_FILE_RANGE_WRITE) };
    }
    if let Some((start, len)) = previous.and_then(range) {
        let wait = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        // SAFETY: as above.
        unsafe { libc::sync_file_range(file.as_raw_fd(), start, len, wait) };
    }
}

/// Without sync_file_range(2), the final fsync does all the work.
#[cfg(not(target_os = "linux"))]
pub(super) fn writeback(_file: &std::fs::File, _window: (u64, u64), _previous: Option<(u64, u64)>) {
}

pub(super) fn hash_chunks(mut md5: Md5, mut chunks: mpsc::Receiver<Bytes>) -> Md5 {
    while let Some(chunk) = chunks.blocking_recv() {
        md5.update(&chunk);
    }
    md5
}
