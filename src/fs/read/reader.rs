//! Reading file content: a block cache shared by all files, and a prefetcher per open file.
//!
//! Midas ignores `Range`; a download starts at `offset` and runs to the end of the file. So a
//! sequential reader keeps ONE stream open and a task reads ahead of it into the block cache, with
//! a window that grows while the reads stay sequential. A random read fetches the one block it
//! needs with a short-lived stream that is dropped as soon as the block is full.
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
/// A read this close to the previous one still counts as sequential (the kernel's own readahead
/// sends READs slightly out of order).
const SEQUENTIAL_SLACK: u64 = 2 * BLOCK_SIZE;
/// How often a stream that breaks is restarted before the read fails. A stream that stalled
/// is not restarted: the server had its stall timeout, and the read fails at once.
const STREAM_RETRIES: u32 = 2;
/// Evicted block buffers kept for the next blocks. A streaming read evicts one block per block
/// it adds; reusing that memory spares the page faults of a fresh 1 MiB allocation every time.
const SPARE_BUFFERS: usize = 4;

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
    /// spare.
    fn buffer(&self, len: usize) -> BytesMut {
        let spare = self.lock().spare.pop();
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
    client: Api,
    cache: Arc<BlockCache>,
    bitstream: Id,
    size: u64,
    stall: Duration,
    max_window: u64,
    state: tokio::sync::Mutex<ReadState>,
}

struct ReadState {
    /// Where the next sequential read would start.
    next_offset: u64,
    window: u64,
    prefetch: Option<Prefetch>,
    /// When a stream last stalled: the kernel sends the failed READ again (one page), and
    /// within a stall timeout of the stall, that fails at once instead of waiting once more.
    stalled: Option<(Instant, FsError)>,
}

impl FileReader {
    pub fn new(
        client: Api,
        cache: Arc<BlockCache>,
        bitstream: Id,
        size: u64,
        stall: Duration,
    ) -> FileReader {
        FileReader {
            max_window: cache.max_window(),
            client,
            cache,
            bitstream,
            size,
            stall,
            state: tokio::sync::Mutex::new(ReadState {
                next_offset: 0,
                window: INITIAL_WINDOW,
                prefetch: None,
                stalled: None,
            }),
        }
    }

    /// Bytes `[offset, offset + len)`, cut at the end of the file.
    pub async fn read(&self, offset: u64, len: u32) -> FsResult<Bytes> {
        let end = (offset + u64::from(len)).min(self.size);
        if offset >= end {
            return Ok(Bytes::new());
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
        let sequential = offset.abs_diff(state.next_offset) <= SEQUENTIAL_SLACK
            || state
                .prefetch
                .as_ref()
                .is_some_and(|p| p.covers(first, state.window));
        if sequential {
            state.window = (state.window * 2).min(self.max_window);
        }
        let mut pieces = Vec::with_capacity((last - first + 1) as usize);
        for index in first..=last {
            let block = self.block(index, sequential, &mut state).await?;
            let block_start = index * BLOCK_SIZE;
            let from = offset.max(block_start) - block_start;
            let to = (end.min(block_start + block.len() as u64) - block_start).max(from);
            pieces.push(block.slice(from as usize..to as usize));
        }
        state.next_offset = end;
        if let Some(prefetch) = &state.prefetch {
            prefetch.consumed(last, state.window);
        }
        drop(state);
        Ok(join(pieces))
    }

    async fn block(&self, index: u64, sequential: bool, state: &mut ReadState) -> FsResult<Bytes> {
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
                None if sequential => {
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
                    let ahead = (index * BLOCK_SIZE).saturating_sub(state.next_offset);
                    let from = if ahead > 0 && ahead <= SEQUENTIAL_SLACK {
                        state.next_offset / BLOCK_SIZE
                    } else {
                        index
                    };
                    state.prefetch = Some(self.start_prefetch(from, state.window));
                }
                None => {
                    let block = self.fetch_one(index).await;
                    if let Err(err) = &block {
                        if err.kind == Kind::TimedOut {
                            state.stalled = Some((Instant::now(), err.clone()));
                        }
                    }
                    return block;
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
        let task = tokio::spawn(prefetch(
            self.client.clone(),
            Arc::clone(&self.cache),
            self.bitstream,
            self.size,
            Arc::clone(&shared),
        ));
        Prefetch { shared, task }
    }

    /// A random read: one block through a stream that is dropped once the block is full.
    async fn fetch_one(&self, index: u64) -> FsResult<Bytes> {
        let start = index * BLOCK_SIZE;
        let len = BLOCK_SIZE.min(self.size - start);
        let mut stream = self
            .client
            .download(self.bitstream, start, self.size)
            .await?;
        let mut block = self.cache.buffer(len as usize);
        stream.fill(&mut block, len as usize).await?;
        let block = block.freeze();
        self.cache.insert((self.bitstream, index), block.clone());
        Ok(block)
    }
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
) {
    if let Err(err) = stream_blocks(&client, &cache, bitstream, size, &shared).await {
        *shared.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(err);
    }
    shared.finished.store(true, Ordering::Release);
    cache.arrived.notify_waiters();
}

async fn stream_blocks(
    client: &Api,
    cache: &BlockCache,
    bitstream: Id,
    size: u64,
    shared: &PrefetchShared,
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
        stream.fill(&mut block, len).await?;
        cache.insert((bitstream, index), block.freeze());
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
