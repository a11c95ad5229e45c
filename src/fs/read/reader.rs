//! Reading file content: a block cache shared by all files, and a prefetcher per open file.
//!
//! Midas ignores `Range`; a download starts at `offset` and runs to the end of the file. So a
//! sequential reader keeps ONE stream open and a task reads ahead of it into the block cache, with
//! a window that grows while the reads stay sequential. Any other read (a first small read, a
//! random one) fetches just the bytes asked for with a short-lived stream whose small receive
//! buffer keeps the server from sending much more, and runs beside the file's other reads.
//! With a persistent data cache (`--cache-dir`), blocks come from its entry when it has one, and a
//! stream that reads a whole file from its start fills it.
//!
//! Bitstreams are immutable in Midas (new content is a new bitstream), so blocks are keyed by
//! bitstream id and never go stale.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use lru::LruCache;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::fs::disk_cache::{DiskCache, DiskEntry, Filler};
use crate::fs::error::Kind;
use crate::fs::error::{FsError, FsResult};
use crate::midas::{types::Id, Api};

/// Unit of caching and of random reads. As large as the kernel's largest READ (1 MiB), so that a
/// READ is served from one block without copying.
pub const BLOCK_SIZE: u64 = 1024 * 1024;
/// Read-ahead window of a new sequential reader, and its ceiling, in blocks.
/// The ceiling is also at most an eighth of the cache, so that several readers' read-ahead fits
/// in it without evicting blocks before they are read.
const INITIAL_WINDOW: u64 = 2;
const MAX_WINDOW: u64 = 32;
/// A read this close to where the previous one ended continues it (the kernel's own readahead
/// sends READs slightly out of order). Two such reads in a row make a sequential reader: one
/// alone happens to random readers too often to start a read-ahead on it.
const SEQUENTIAL_SLACK: u64 = 256 * 1024;
const SEQUENTIAL_STREAK: u32 = 2;
/// How often a stream that breaks is restarted before the read fails. A stream that stalled
/// is not restarted: the server had its stall timeout, and the read fails at once.
const STREAM_RETRIES: u32 = 2;
/// Evicted block buffers kept for the next blocks. A streaming read evicts one block per block
/// it adds; reusing that memory spares the page faults of a fresh 1 MiB allocation every time.
const SPARE_BUFFERS: usize = 4;
/// A first read at least this large, at the start of the file, counts as sequential at once: the
/// kernel's readahead only asks this much for a reader that reads in large pieces (`cat`, `cp`).
/// A smaller first read (a file manager sniffing a file's type) fetches what it asks.
const FIRST_SEQUENTIAL_READ: u64 = 64 * 1024;
/// How far ahead of the start of the file the first READ may be and still count as the start of a
/// sequential read: the kernel's readahead sends the READs of the first blocks at once (up to
/// 1 MiB each), and the later one may arrive first.
const FIRST_READ_AHEAD: u64 = BLOCK_SIZE;
/// Reads smaller than this get a connection with a receive buffer of their size.
const SMALL_READ: u64 = 256 * 1024;
/// A sequential reader's blocks this far behind the one it reads are dropped from memory (the
/// kernel's page cache holds them now), so that their buffers carry the stream's next blocks:
/// reusing a few buffers spares the page faults and zeroing of fresh memory for every block.
/// Far enough behind for the kernel's READs, which arrive slightly out of order.
const RELEASE_BEHIND: u64 = 4;
/// Blocks of a data cache entry read and checked ahead of a sequential reader.
const LOCAL_READ_AHEAD: u64 = 2;
/// A handle whose reads all ended within this many bytes of the start of a larger file only
/// sniffed it: the kernel's readahead makes a program's first read of up to 16 KiB a READ of up
/// to four times that.
pub const SNIFF_READ: u64 = 64 * 1024;

type BlockKey = (Id, u64);

/// File content blocks in memory, bounded in bytes, shared by every open file.
pub struct BlockCache {
    inner: Mutex<CacheInner>,
    /// Woken whenever a block arrives or a prefetcher stops.
    arrived: Notify,
}

struct CacheInner {
    blocks: LruCache<BlockKey, Bytes>,
    bytes: u64,
    capacity: u64,
    /// Empty buffers of BLOCK_SIZE capacity, from evicted blocks nobody else held.
    spare: Vec<BytesMut>,
}

impl BlockCache {
    pub fn new(capacity_bytes: u64) -> BlockCache {
        BlockCache {
            inner: Mutex::new(CacheInner {
                blocks: LruCache::unbounded(),
                bytes: 0,
                capacity: capacity_bytes.max(4 * BLOCK_SIZE),
                spare: Vec::with_capacity(SPARE_BUFFERS),
            }),
            arrived: Notify::new(),
        }
    }

    /// Bytes cached and the capacity.
    pub fn usage(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.bytes, inner.capacity)
    }

    /// The largest read-ahead window, in blocks, that this cache can hold for one reader.
    fn max_window(&self) -> u64 {
        (self.lock().capacity / BLOCK_SIZE / 8).clamp(INITIAL_WINDOW, MAX_WINDOW)
    }

    fn get(&self, key: BlockKey) -> Option<Bytes> {
        self.lock().blocks.get(&key).cloned()
    }

    /// Drops a block nobody will ask for again soon, keeping its buffer for the next block.
    fn release(&self, key: BlockKey) {
        let mut inner = self.lock();
        if let Some(old) = inner.blocks.pop(&key) {
            inner.bytes -= old.len() as u64;
            inner.recycle(old);
        }
    }

    fn insert(&self, key: BlockKey, block: Bytes) {
        {
            let mut inner = self.lock();
            inner.bytes += block.len() as u64;
            if let Some(old) = inner.blocks.put(key, block) {
                inner.bytes -= old.len() as u64;
            }
            while inner.bytes > inner.capacity {
                match inner.blocks.pop_lru() {
                    Some((_, old)) => {
                        inner.bytes -= old.len() as u64;
                        inner.recycle(old);
                    }
                    None => break,
                }
            }
        }
        self.arrived.notify_waiters();
    }

    /// An empty buffer for a block of `len` bytes (at most BLOCK_SIZE), recycled when one is
    /// spare and the block is whole. The cache counts a block by its length: a short block (the
    /// end of a file) in a spare buffer would hold a whole block's memory uncounted, and spares
    /// come back with every eviction, so under a mix of small and large files the mount's
    /// memory grew past the cache's size without bound.
    fn buffer(&self, len: usize) -> BytesMut {
        let spare = if len as u64 == BLOCK_SIZE {
            self.lock().spare.pop()
        } else {
            None
        };
        spare.unwrap_or_else(|| BytesMut::with_capacity(len))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // A panic while holding this lock cannot leave the cache inconsistent in a way that
        // matters (it is only a cache), so a poisoned lock is used as is.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl CacheInner {
    /// Keeps an evicted block's memory for reuse, unless a reader still holds it or enough are
    /// kept already.
    fn recycle(&mut self, block: Bytes) {
        if self.spare.len() >= SPARE_BUFFERS {
            return;
        }
        if let Ok(mut buffer) = block.try_into_mut() {
            buffer.clear();
            if buffer.capacity() >= BLOCK_SIZE as usize {
                self.spare.push(buffer);
            }
        }
    }
}

/// The reading side of one open file.
pub struct FileReader {
    ino: u64,
    client: Api,
    cache: Arc<BlockCache>,
    bitstream: Id,
    size: u64,
    /// The content's MD5, as the server gives it.
    md5: String,
    disk: Option<Arc<DiskCache>>,
    /// The data cache's entry, once looked for.
    local: Mutex<Local>,
    /// One block read from the entry at a time: the kernel sends several READs of one block at
    /// once, and each would read (and check) the whole block. The next block is read ahead
    /// under the same lock.
    local_read: Arc<tokio::sync::Mutex<()>>,
    /// Where the last read from the entry ended: a read that continues it is read ahead of.
    local_next: AtomicU64,
    stall: Duration,
    max_window: u64,
    state: tokio::sync::Mutex<ReadState>,
    /// How many reads came, and where the furthest ended: see [`FileReader::sniffed`].
    seen: Mutex<(u32, u64)>,
}

#[derive(Clone)]
enum Local {
    NotLooked,
    Absent,
    Present(Arc<DiskEntry>),
}

/// Where a file's content comes from: the server's bitstream, and the data cache.
pub struct Source {
    /// The inode read.
    pub ino: u64,
    pub bitstream: Id,
    pub size: u64,
    pub md5: String,
    pub disk: Option<Arc<DiskCache>>,
}

struct ReadState {
    /// Where the next sequential read would start (None before the first read).
    next_offset: Option<u64>,
    /// Reads in a row that each continued the one before.
    streak: u32,
    /// Reads that were not sequential.
    random_reads: u64,
    window: u64,
    prefetch: Option<Prefetch>,
    /// When a stream last stalled: the kernel sends the failed READ again (one page), and
    /// within a stall timeout of the stall, that fails at once instead of waiting once more.
    stalled: Option<(Instant, FsError)>,
}

impl FileReader {
    pub fn new(client: Api, cache: Arc<BlockCache>, source: Source, stall: Duration) -> FileReader {
        FileReader {
            ino: source.ino,
            max_window: cache.max_window(),
            client,
            cache,
            bitstream: source.bitstream,
            size: source.size,
            local: Mutex::new(if source.disk.is_some() {
                Local::NotLooked
            } else {
                Local::Absent
            }),
            md5: source.md5,
            disk: source.disk,
            local_read: Arc::new(tokio::sync::Mutex::new(())),
            local_next: AtomicU64::new(0),
            stall,
            state: tokio::sync::Mutex::new(ReadState {
                next_offset: None,
                streak: 0,
                random_reads: 0,
                window: INITIAL_WINDOW,
                prefetch: None,
                stalled: None,
            }),
            seen: Mutex::new((0, 0)),
        }
    }

    /// Whether this handle only read the start of the file, as a program sniffing its type
    /// does: Some(where its furthest read ended) when every read ended within
    /// [`SNIFF_READ`] bytes and short of the end of the file, None for any other use (or none).
    pub fn sniffed(&self) -> Option<u64> {
        let (reads, end) = *self.seen.lock().unwrap_or_else(|p| p.into_inner());
        (reads > 0 && end <= SNIFF_READ && end < self.size).then_some(end)
    }

    /// The inode read.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// Whether this handle read anything.
    pub fn read_any(&self) -> bool {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).0 > 0
    }

    /// Bytes `[offset, offset + len)`, cut at the end of the file.
    pub async fn read(&self, offset: u64, len: u32) -> FsResult<Bytes> {
        let end = (offset + u64::from(len)).min(self.size);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            *seen = (seen.0.saturating_add(1), seen.1.max(end));
        }
        if offset >= end {
            return Ok(Bytes::new());
        }
        if let Some(local) = self.read_local(offset, end).await {
            return Ok(local);
        }
        let first = offset / BLOCK_SIZE;
        let last = (end - 1) / BLOCK_SIZE;
        let mut state = self.state.lock().await;
        if let Some((at, err)) = &state.stalled {
            if at.elapsed() < self.stall {
                return Err(err.clone());
            }
            state.stalled = None;
        }
        let continues = state
            .next_offset
            .is_some_and(|next| offset.abs_diff(next) <= SEQUENTIAL_SLACK);
        state.streak = if continues { state.streak + 1 } else { 0 };
        // The kernel's readahead sends the READs of a file's first blocks at once, and the one
        // after the first may come first: it, too, is a large first read.
        let large_first_read = state.next_offset.is_none()
            && offset <= FIRST_READ_AHEAD
            && end - offset >= FIRST_SEQUENTIAL_READ.min(self.size);
        let sequential = large_first_read
            || state.streak >= SEQUENTIAL_STREAK
            || state
                .prefetch
                .as_ref()
                .is_some_and(|p| p.covers(first, state.window));
        if !sequential {
            state.next_offset = Some(end);
            // A reader that has made as many random reads as the file has blocks will come
            // back to the same blocks: from then on, whole blocks are fetched and kept.
            let whole_blocks = state.random_reads >= self.size.div_ceil(BLOCK_SIZE);
            state.random_reads += 1;
            drop(state);
            let read = if whole_blocks {
                let block_end = ((last + 1) * BLOCK_SIZE).min(self.size);
                self.read_range(first * BLOCK_SIZE, block_end)
                    .await
                    .map(|blocks| {
                        blocks.slice(
                            (offset % BLOCK_SIZE) as usize..(end - first * BLOCK_SIZE) as usize,
                        )
                    })
            } else {
                self.read_range(offset, end).await
            };
            if let Err(err) = &read {
                if err.kind == Kind::TimedOut {
                    self.state.lock().await.stalled = Some((Instant::now(), err.clone()));
                }
            }
            return read;
        }
        state.window = (state.window * 2).min(self.max_window);
        let mut pieces = Vec::with_capacity((last - first + 1) as usize);
        for index in first..=last {
            let block = self.block(index, &mut state).await?;
            pieces.push(slice(&block, index, offset, end));
        }
        state.next_offset = Some(end);
        if let Some(prefetch) = &state.prefetch {
            prefetch.consumed(last, state.window);
        }
        drop(state);
        if let Some(behind) = first.checked_sub(RELEASE_BEHIND) {
            self.cache.release((self.bitstream, behind));
        }
        Ok(join(pieces))
    }

    /// Bytes `[offset, end)` from the data cache's entry, when there is one and it is sound.
    async fn read_local(&self, offset: u64, end: u64) -> Option<Bytes> {
        let entry = self.local_entry()?;
        let first = offset / BLOCK_SIZE;
        let last = (end - 1) / BLOCK_SIZE;
        let previous_end = self.local_next.swap(end, Ordering::Relaxed);
        let sequential = offset.abs_diff(previous_end) <= SEQUENTIAL_SLACK;
        let mut pieces = Vec::with_capacity((last - first + 1) as usize);
        for index in first..=last {
            let key = (self.bitstream, index);
            let mut block = self.cache.get(key);
            let _one_reader = match block {
                Some(_) => None,
                None => {
                    let held = self.local_read.lock().await;
                    block = self.cache.get(key);
                    Some(held)
                }
            };
            let block = match block {
                Some(block) => block,
                None => {
                    let from_disk = Arc::clone(&entry);
                    let buffer = self.cache.buffer(entry.block_len(index));
                    let read =
                        tokio::task::spawn_blocking(move || from_disk.block(index, buffer)).await;
                    match read {
                        Ok(Ok(block)) => {
                            self.cache.insert(key, block.clone());
                            block
                        }
                        Ok(Err(err)) => {
                            log::warn!(
                                "data cache entry {}: {err}; deleting it and reading from the server",
                                entry.path().display()
                            );
                            if let Some(disk) = &self.disk {
                                disk.drop_entry(entry.path());
                            }
                            *self.local.lock().unwrap_or_else(|p| p.into_inner()) = Local::Absent;
                            return None;
                        }
                        Err(_) => return None,
                    }
                }
            };
            pieces.push(slice(&block, index, offset, end));
        }
        if sequential {
            self.read_ahead_local(&entry, last + 1);
            if let Some(behind) = first.checked_sub(RELEASE_BEHIND) {
                self.cache.release((self.bitstream, behind));
            }
        }
        Some(join(pieces))
    }

    /// Reads the blocks from `index` on (up to LOCAL_READ_AHEAD of them) of the entry into the
    /// block cache in the background, so that a sequential reader finds them there and its
    /// READs do not wait for the check of each block in turn (a damaged block is left for the
    /// read that needs it).
    fn read_ahead_local(&self, entry: &Arc<DiskEntry>, index: u64) {
        let end = (index + LOCAL_READ_AHEAD).min(self.size.div_ceil(BLOCK_SIZE));
        if index >= end {
            return;
        }
        let (lock, cache, entry) = (
            Arc::clone(&self.local_read),
            Arc::clone(&self.cache),
            Arc::clone(entry),
        );
        let bitstream = self.bitstream;
        tokio::spawn(async move {
            let _one_reader = lock.lock_owned().await;
            for index in index..end {
                let key = (bitstream, index);
                if cache.get(key).is_some() {
                    continue;
                }
                let (entry, buffer) = (Arc::clone(&entry), cache.buffer(entry.block_len(index)));
                match tokio::task::spawn_blocking(move || entry.block(index, buffer)).await {
                    Ok(Ok(block)) => cache.insert(key, block),
                    _ => return,
                }
            }
        });
    }

    fn local_entry(&self) -> Option<Arc<DiskEntry>> {
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if let Local::NotLooked = *local {
            *local = match self.disk.as_ref().and_then(|d| d.get(&self.md5, self.size)) {
                Some(entry) => Local::Present(Arc::new(entry)),
                None => Local::Absent,
            };
        }
        match &*local {
            Local::Present(entry) => Some(Arc::clone(entry)),
            _ => None,
        }
    }

    /// A read that is not (yet) sequential: from memory when every block is there, else just
    /// these bytes from the server, without holding up the file's other reads.
    async fn read_range(&self, offset: u64, end: u64) -> FsResult<Bytes> {
        let first = offset / BLOCK_SIZE;
        let last = (end - 1) / BLOCK_SIZE;
        let cached: Option<Vec<Bytes>> = (first..=last)
            .map(|index| {
                let block = self.cache.get((self.bitstream, index))?;
                Some(slice(&block, index, offset, end))
            })
            .collect();
        if let Some(pieces) = cached {
            return Ok(join(pieces));
        }
        let len = end - offset;
        let wanted = (len < SMALL_READ).then_some(len);
        let mut stream = self
            .client
            .download_some(self.bitstream, offset, self.size, wanted)
            .await?;
        let mut bytes = BytesMut::with_capacity(len as usize);
        stream.fill(&mut bytes, len as usize).await?;
        drop(stream);
        let bytes = bytes.freeze();
        // Whole blocks are worth keeping for the next reads.
        for index in first..=last {
            let start = index * BLOCK_SIZE;
            let stop = (start + BLOCK_SIZE).min(self.size);
            if start >= offset && stop <= end {
                let block = bytes.slice((start - offset) as usize..(stop - offset) as usize);
                self.cache.insert((self.bitstream, index), block);
            }
        }
        if offset == 0 && end == self.size {
            if let Some(mut filler) = self.filler() {
                let whole = bytes.clone();
                tokio::task::spawn_blocking(move || {
                    let pushed = whole
                        .chunks(BLOCK_SIZE as usize)
                        .try_for_each(|block| filler.push(block));
                    if let Err(err) = pushed.and_then(|()| filler.finish()) {
                        log::warn!("data cache: not keeping a file: {err}");
                    }
                });
            }
        }
        Ok(bytes)
    }

    fn filler(&self) -> Option<Filler> {
        self.disk.as_ref()?.filler(&self.md5, self.size)
    }

    async fn block(&self, index: u64, state: &mut ReadState) -> FsResult<Bytes> {
        let key = (self.bitstream, index);
        let mut restarts = 0;
        loop {
            let arrived = self.cache.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(block) = self.cache.get(key) {
                return Ok(block);
            }
            let pending = state
                .prefetch
                .as_ref()
                .filter(|p| p.will_produce(index, state.window));
            match pending {
                Some(prefetch) => {
                    prefetch.consumed(index.saturating_sub(1), state.window);
                    if tokio::time::timeout(self.stall * 2, arrived).await.is_err() {
                        return Err(FsError::new(
                            Kind::TimedOut,
                            format!(
                                "bitstream {}: no data for {:?}",
                                self.bitstream,
                                self.stall * 2
                            ),
                        ));
                    }
                }
                None => {
                    if let Some(failed) = state.prefetch.as_ref().and_then(Prefetch::failure) {
                        if failed.kind == Kind::TimedOut {
                            state.prefetch = None;
                            state.stalled = Some((Instant::now(), failed.clone()));
                            return Err(failed);
                        }
                        restarts += 1;
                        // a bitstream gone from the server stays gone
                        if restarts > STREAM_RETRIES || failed.kind == Kind::Stale {
                            return Err(failed);
                        }
                        log::warn!(
                            "bitstream {}: {failed}; restarting the stream",
                            self.bitstream
                        );
                    }
                    // A READ ahead of the next one in order (the kernel's readahead sends both
                    // at once) starts the stream at the block that next one needs, so that it
                    // does not restart the stream: on a real Midas each is a PHP request.
                    let next = state.next_offset.unwrap_or(0);
                    let ahead = (index * BLOCK_SIZE).saturating_sub(next);
                    let slack = if state.next_offset.is_none() {
                        FIRST_READ_AHEAD
                    } else {
                        SEQUENTIAL_SLACK
                    };
                    let from = if ahead > 0 && ahead <= slack {
                        next / BLOCK_SIZE
                    } else {
                        index
                    };
                    state.prefetch = Some(self.start_prefetch(from, state.window));
                }
            }
        }
    }

    fn start_prefetch(&self, first_block: u64, window: u64) -> Prefetch {
        let shared = Arc::new(PrefetchShared {
            first_block,
            next_block: AtomicU64::new(first_block),
            wanted_until: AtomicU64::new(first_block + window),
            failure: Mutex::new(None),
            finished: AtomicBool::new(false),
            room: Notify::new(),
        });
        // A stream from the start that runs to the end has the whole file: keep it.
        let filler = if first_block == 0 {
            self.filler()
        } else {
            None
        };
        let task = tokio::spawn(prefetch(
            self.client.clone(),
            Arc::clone(&self.cache),
            self.bitstream,
            self.size,
            Arc::clone(&shared),
            filler,
        ));
        Prefetch { shared, task }
    }
}

/// The part of block `index` within `[offset, end)`.
fn slice(block: &Bytes, index: u64, offset: u64, end: u64) -> Bytes {
    let block_start = index * BLOCK_SIZE;
    let from = offset.max(block_start) - block_start;
    let to = (end.min(block_start + block.len() as u64) - block_start).max(from);
    block.slice(from as usize..to as usize)
}

fn join(pieces: Vec<Bytes>) -> Bytes {
    match <[Bytes; 1]>::try_from(pieces) {
        Ok([only]) => only,
        Err(pieces) => {
            let mut all = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
            for piece in pieces {
                all.extend_from_slice(&piece);
            }
            all.freeze()
        }
    }
}

/// A running read-ahead task of one open file; stopped when the file is closed.
struct Prefetch {
    shared: Arc<PrefetchShared>,
    task: JoinHandle<()>,
}

struct PrefetchShared {
    first_block: u64,
    /// The next block the task will put into the cache.
    next_block: AtomicU64,
    /// The task reads ahead up to (not including) this block, then waits for `room`.
    wanted_until: AtomicU64,
    failure: Mutex<Option<FsError>>,
    finished: AtomicBool,
    room: Notify,
}

impl Prefetch {
    fn alive(&self) -> bool {
        !self.shared.finished.load(Ordering::Acquire)
    }

    /// Whether the block is ahead of the stream and within reach of its window.
    fn will_produce(&self, index: u64, window: u64) -> bool {
        self.alive()
            && index >= self.shared.next_block.load(Ordering::Acquire)
            && index < self.shared.next_block.load(Ordering::Acquire) + window
    }

    fn covers(&self, index: u64, window: u64) -> bool {
        index >= self.shared.first_block
            && index <= self.shared.next_block.load(Ordering::Acquire) + window
    }

    /// The reader has used blocks up to `last`: let the task read `window` blocks beyond.
    fn consumed(&self, last: u64, window: u64) {
        let until = last + 1 + window;
        if self.shared.wanted_until.fetch_max(until, Ordering::AcqRel) < until {
            self.shared.room.notify_one();
        }
    }

    fn failure(&self) -> Option<FsError> {
        self.shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn prefetch(
    client: Api,
    cache: Arc<BlockCache>,
    bitstream: Id,
    size: u64,
    shared: Arc<PrefetchShared>,
    mut filler: Option<Filler>,
) {
    let streamed = stream_blocks(&client, &cache, bitstream, size, &shared, &mut filler).await;
    if let Err(err) = streamed {
        filler = None;
        *shared.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(err);
    }
    shared.finished.store(true, Ordering::Release);
    cache.arrived.notify_waiters();
    if let Some(filler) = filler {
        tokio::task::spawn_blocking(move || {
            if let Err(err) = filler.finish() {
                log::warn!("data cache: not keeping bitstream {bitstream}: {err}");
            }
        });
    }
}

async fn stream_blocks(
    client: &Api,
    cache: &BlockCache,
    bitstream: Id,
    size: u64,
    shared: &PrefetchShared,
    filler: &mut Option<Filler>,
) -> FsResult<()> {
    let mut index = shared.first_block;
    let mut stream = client.download(bitstream, index * BLOCK_SIZE, size).await?;
    while index * BLOCK_SIZE < size {
        loop {
            let room = shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if index < shared.wanted_until.load(Ordering::Acquire) {
                break;
            }
            room.await;
        }
        let len = BLOCK_SIZE.min(size - index * BLOCK_SIZE) as usize;
        let mut block = cache.buffer(len);
        let filled = stream.fill(&mut block, len).await;
        if filled.is_err() {
            *filler = None;
        }
        filled?;
        let block = block.freeze();
        if let Some(keeping) = filler {
            if let Err(err) = keeping.push(&block) {
                log::warn!("data cache: not keeping bitstream {bitstream}: {err}");
                *filler = None;
            }
        }
        cache.insert((bitstream, index), block);
        index += 1;
        shared.next_block.store(index, Ordering::Release);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_block(cache: &BlockCache, fill: u8) -> Bytes {
        let mut block = cache.buffer(BLOCK_SIZE as usize);
        block.resize(BLOCK_SIZE as usize, fill);
        block.freeze()
    }

    #[test]
    fn an_evicted_block_nobody_holds_lends_its_memory_to_the_next_block() {
        let cache = BlockCache::new(4 * BLOCK_SIZE);
        let first = full_block(&cache, 1);
        let first_memory = first.as_ptr();
        cache.insert((1, 0), first);
        for index in 1..=4 {
            cache.insert((1, index), full_block(&cache, 2));
        }
        assert!(cache.get((1, 0)).is_none(), "the first block was evicted");
        assert_eq!(cache.lock().spare.len(), 1);
        let reused = cache.buffer(BLOCK_SIZE as usize);
        assert_eq!(reused.as_ptr(), first_memory);
        assert!(reused.is_empty());
    }

    #[test]
    fn a_released_block_lends_its_memory_to_the_next_block_before_the_cache_is_full() {
        let cache = BlockCache::new(64 * BLOCK_SIZE);
        let first = full_block(&cache, 1);
        let first_memory = first.as_ptr();
        cache.insert((1, 0), first);
        cache.insert((1, 1), full_block(&cache, 2));
        cache.release((1, 0));
        cache.release((1, 7));
        assert!(cache.get((1, 0)).is_none());
        assert!(cache.get((1, 1)).is_some());
        assert_eq!(cache.usage().0, BLOCK_SIZE);
        assert_eq!(cache.buffer(BLOCK_SIZE as usize).as_ptr(), first_memory);
    }

    #[test]
    fn an_evicted_block_a_reader_still_holds_is_left_alone() {
        let cache = BlockCache::new(4 * BLOCK_SIZE);
        let held = full_block(&cache, 7);
        cache.insert((1, 0), held.clone());
        for index in 1..=4 {
            cache.insert((1, index), full_block(&cache, 2));
        }
        assert!(cache.get((1, 0)).is_none(), "the first block was evicted");
        assert!(cache.lock().spare.is_empty());
        assert!(held.iter().all(|&byte| byte == 7));
    }
}
