//! The persistent data cache (`--cache-dir`): whole files on local disk, keyed by their MD5, so
//! that content read once is read from disk after a remount, after a TTL expiry, and for every
//! other item or revision with the same content.
//!
//! Midas gives every bitstream's MD5 (`checksum`), and a bitstream never changes, so the MD5
//! names the content for good. An entry is `data/<2 hex>/<md5>`, exactly the file's bytes (so
//! that the kernel can read it in place of the mount: FUSE passthrough), beside
//! `data/<2 hex>/<md5>.crc`, a CRC-32 of every 1 MiB block, the MD5 and the size. Both are
//! written under `tmp/`, checked against the MD5 once complete, and renamed into place, the
//! checksums first, so another mount (or this one after a crash) never sees half an entry.
//! Reads through the mount check each block's CRC before using it: a damaged entry is deleted
//! and the block comes from the server instead. A block is read into a buffer the block cache
//! lends (one an evicted or released block left), so that reading a cached file does not fault
//! in fresh memory for every block. An entry handed to the kernel is checked at open only (its
//! size, its checksums file, its first and last block: see [`DiskEntry::check_ends`]).
//!
//! Several mounts may share a directory: entries appear by rename, eviction runs under an
//! exclusive `flock` of `lock`, and a reader whose entry is evicted keeps reading its open file.
//! Least recently used goes first; "used" is the file's mtime, set on every open.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use md5::{Digest, Md5};

use super::read::reader::BLOCK_SIZE;
use crate::private;

const MAGIC: &[u8; 8] = b"MIDASFS2";
/// MD5 in hex, size, magic.
const TRAILER_FIXED: u64 = 32 + 8 + 8;
/// The name ending of an entry's checksums file.
const SUMS: &str = ".crc";
/// What `DIR/format` holds: entries of another format (the bytes and the checksums in one
/// file, before passthrough) are removed when a mount opens the directory.
const FORMAT: &str = "2\n";
/// A checksums file without its entry is left alone this long: its entry may be on its way.
const ORPHAN_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// Counters for `midasfs status`.
#[derive(Debug, Clone, Default)]
pub struct DiskCacheStatus {
    pub dir: PathBuf,
    pub bytes: u64,
    pub capacity: u64,
    pub entries: u64,
    pub hits: u64,
    pub fills: u64,
    pub dropped: u64,
    /// Opens answered by handing the entry to the kernel (FUSE passthrough).
    pub passthrough_opens: u64,
}

pub struct DiskCache {
    dir: PathBuf,
    capacity: u64,
    /// Bytes in `data/` at the last scan, plus what this mount added since.
    bytes: AtomicU64,
    entries: AtomicU64,
    hits: AtomicU64,
    fills: AtomicU64,
    /// Entries found damaged and deleted.
    dropped: AtomicU64,
    passthrough_opens: AtomicU64,
}

impl DiskCache {
    /// Opens (creating) the cache directory, removes temporary files nobody is writing, and
    /// evicts down to `capacity`.
    pub fn open(dir: &Path, capacity: u64) -> io::Result<DiskCache> {
        private::dir(dir)?;
        private::dir(&dir.join("data"))?;
        private::dir(&dir.join("tmp"))?;
        let cache = DiskCache {
            dir: dir.to_owned(),
            capacity,
            bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            fills: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            passthrough_opens: AtomicU64::new(0),
        };
        {
            let _lock = cache.lock()?;
            cache.remove_stale_temporaries();
            cache.remove_older_format()?;
        }
        cache.evict()?;
        Ok(cache)
    }

    pub fn status(&self) -> DiskCacheStatus {
        DiskCacheStatus {
            dir: self.dir.clone(),
            bytes: self.bytes.load(Ordering::Relaxed),
            capacity: self.capacity,
            entries: self.entries.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            fills: self.fills.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            passthrough_opens: self.passthrough_opens.load(Ordering::Relaxed),
        }
    }

    /// Counts an open the kernel reads from the entry itself.
    pub fn passed_through(&self) {
        self.passthrough_opens.fetch_add(1, Ordering::Relaxed);
    }

    fn path(&self, md5: &str) -> PathBuf {
        self.dir.join("data").join(&md5[..2]).join(md5)
    }

    /// Entries of an older format (see [`FORMAT`]) are deleted, once, by the first mount of
    /// this version that opens the directory (under the lock).
    fn remove_older_format(&self) -> io::Result<()> {
        let path = self.dir.join("format");
        if std::fs::read_to_string(&path).ok().as_deref() == Some(FORMAT) {
            return Ok(());
        }
        let mut removed = 0;
        for shard in std::fs::read_dir(self.dir.join("data"))?.flatten() {
            for file in std::fs::read_dir(shard.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if std::fs::remove_file(file.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            log::info!(
                "data cache {}: removed {removed} files of an older format",
                self.dir.display()
            );
        }
        let tmp = self.dir.join("format.tmp");
        private::write(&tmp, FORMAT.as_bytes())?;
        std::fs::rename(&tmp, &path)
    }

    /// The entry of this content, if the cache has a sound-looking one (its blocks are checked
    /// as they are read). Marks it used.
    pub fn get(&self, md5: &str, size: u64) -> Option<DiskEntry> {
        if !valid_md5(md5) {
            return None;
        }
        let path = self.path(md5);
        let file = File::open(&path).ok()?;
        match DiskEntry::open(file, &path, &sums_path(&path), md5, size) {
            Ok(entry) => {
                let _ = entry.file.set_modified(SystemTime::now());
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(entry)
            }
            Err(err) => {
                log::warn!("data cache entry {}: {err}; deleting it", path.display());
                self.drop_entry(&path);
                None
            }
        }
    }

    /// Deletes a damaged entry (its bytes, then its checksums).
    pub fn drop_entry(&self, path: &Path) {
        if std::fs::remove_file(path).is_ok() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        let _ = std::fs::remove_file(sums_path(path));
    }

    /// A filler for this content, when it is worth caching: its MD5 is known, it fits, and the
    /// cache does not hold it already.
    pub fn filler(self: &Arc<Self>, md5: &str, size: u64) -> Option<Filler> {
        if !valid_md5(md5) || size == 0 || size > self.capacity {
            return None;
        }
        if self.path(md5).exists() {
            return None;
        }
        match Filler::new(Arc::clone(self), md5, size) {
            Ok(filler) => Some(filler),
            Err(err) => {
                log::warn!(
                    "data cache {}: cannot start an entry: {err}",
                    self.dir.display()
                );
                None
            }
        }
    }

    fn lock(&self) -> io::Result<Flock> {
        let path = self.dir.join("lock");
        let file = private::file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        private::file(&file, &path)?;
        Flock::exclusive(file)
    }

    /// Temporary files of fills that ended without cleaning up (a crash): a live filler holds
    /// an exclusive lock on its file.
    fn remove_stale_temporaries(&self) {
        let Ok(dir) = std::fs::read_dir(self.dir.join("tmp")) else {
            return;
        };
        for entry in dir.flatten() {
            let Ok(file) = File::open(entry.path()) else {
                continue;
            };
            if Flock::try_exclusive(file).is_some() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Deletes the least recently used entries until the cache fits its capacity, and counts
    /// what is left. An entry's size counts its checksums file.
    fn evict(&self) -> io::Result<()> {
        let _lock = self.lock()?;
        let mut entries = Vec::new();
        let mut sums = Vec::new();
        for shard in std::fs::read_dir(self.dir.join("data"))?.flatten() {
            let Ok(files) = std::fs::read_dir(shard.path()) else {
                continue;
            };
            for file in files.flatten() {
                let Ok(meta) = file.metadata() else {
                    continue;
                };
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                if file.file_name().to_string_lossy().ends_with(SUMS) {
                    sums.push((used, meta.len(), file.path()));
                } else {
                    entries.push((used, meta.len(), file.path()));
                }
            }
        }
        let mut total: u64 = 0;
        for (used, len, path) in sums {
            let entry = path.with_extension("");
            if entry.exists() {
                total += len;
            } else if used.elapsed().is_ok_and(|age| age > ORPHAN_AGE) {
                let _ = std::fs::remove_file(&path);
            } else {
                total += len;
            }
        }
        entries.sort();
        total += entries.iter().map(|e| e.1).sum::<u64>();
        let mut count = entries.len() as u64;
        for (_, len, path) in &entries {
            if total <= self.capacity {
                break;
            }
            if std::fs::remove_file(path).is_ok() {
                log::debug!("data cache: evicted {}", path.display());
                total -= len + sums_len(*len);
                count -= 1;
            }
            let _ = std::fs::remove_file(sums_path(path));
        }
        self.bytes.store(total, Ordering::Relaxed);
        self.entries.store(count, Ordering::Relaxed);
        Ok(())
    }
}

/// Where an entry's checksums are.
fn sums_path(entry: &Path) -> PathBuf {
    let mut name = entry.as_os_str().to_owned();
    name.push(SUMS);
    PathBuf::from(name)
}

/// The size of the checksums file of content of `size` bytes.
fn sums_len(size: u64) -> u64 {
    4 * blocks_of(size) + TRAILER_FIXED
}

fn valid_md5(md5: &str) -> bool {
    md5.len() == 32 && md5.bytes().all(|b| b.is_ascii_hexdigit())
}

fn blocks_of(size: u64) -> u64 {
    size.div_ceil(BLOCK_SIZE)
}

/// An exclusive `flock`, released when dropped (with the file).
struct Flock(File);

impl Flock {
    fn exclusive(file: File) -> io::Result<Flock> {
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Flock(file))
    }

    /// A new file of the owner's only, at `path`, locked: a temporary file of the cache.
    fn create_new(path: &Path) -> io::Result<Flock> {
        let file = private::file_options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        private::file(&file, path)?;
        Flock::try_exclusive(file).ok_or_else(|| io::Error::other("locked"))
    }

    fn try_exclusive(file: File) -> Option<Flock> {
        // SAFETY: as above.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        locked.then_some(Flock(file))
    }
}

/// One entry opened for reading.
pub struct DiskEntry {
    file: File,
    path: PathBuf,
    size: u64,
    crcs: Vec<u32>,
}

impl DiskEntry {
    fn open(
        file: File,
        path: &Path,
        sums: &Path,
        md5: &str,
        size: u64,
    ) -> Result<DiskEntry, String> {
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        if len != size {
            return Err(format!("{len} bytes, not {size}"));
        }
        let trailer = std::fs::read(sums).map_err(|e| format!("its checksums: {e}"))?;
        let blocks = blocks_of(size);
        if trailer.len() as u64 != sums_len(size) {
            return Err(format!(
                "its checksums are {} bytes, not {}",
                trailer.len(),
                sums_len(size)
            ));
        }
        let (crcs, fixed) = trailer.split_at((4 * blocks) as usize);
        if &fixed[40..48] != MAGIC
            || &fixed[..32] != md5.to_ascii_lowercase().as_bytes()
            || fixed[32..40] != size.to_le_bytes()
        {
            return Err("its checksums do not match".into());
        }
        let crcs = crcs
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(DiskEntry {
            file,
            path: path.to_owned(),
            size,
            crcs,
        })
    }

    /// The open entry, exactly the content's bytes: what the kernel reads for passthrough.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The check before the kernel reads the entry by itself, which no CRC then checks: its
    /// size and checksums were checked at open, and now its first and last blocks (blocking:
    /// call it off the async workers). A truncated, emptied or zeroed entry fails; a bit
    /// flipped in a block between them does not (reads through the mount would find it).
    pub fn check_ends(&self) -> io::Result<()> {
        let blocks = blocks_of(self.size);
        self.block(0, BytesMut::new())?;
        if blocks > 1 {
            self.block(blocks - 1, BytesMut::new())?;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The length of block `index`.
    pub fn block_len(&self, index: u64) -> usize {
        BLOCK_SIZE.min(self.size.saturating_sub(index * BLOCK_SIZE)) as usize
    }

    /// Block `index`, read into `buffer` and checked against its CRC (blocking: call it off
    /// the async workers).
    pub fn block(&self, index: u64, mut buffer: BytesMut) -> io::Result<Bytes> {
        let Some(&expected) = self.crcs.get(index as usize) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("block {index} is past the end"),
            ));
        };
        buffer.clear();
        buffer.resize(self.block_len(index), 0);
        self.file.read_exact_at(&mut buffer, index * BLOCK_SIZE)?;
        if crc32fast::hash(&buffer) != expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("block {index} does not match its checksum"),
            ));
        }
        Ok(buffer.freeze())
    }
}

/// An entry being written by a stream that reads a whole file from its start.
pub struct Filler {
    cache: Arc<DiskCache>,
    md5: String,
    size: u64,
    tmp: PathBuf,
    lock: Option<Flock>,
    written: u64,
    crcs: Vec<u8>,
}

impl Filler {
    fn new(cache: Arc<DiskCache>, md5: &str, size: u64) -> io::Result<Filler> {
        let tmp = cache.dir.join("tmp").join(format!(
            "{md5}.{}.{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let lock = Flock::create_new(&tmp)?;
        Ok(Filler {
            cache,
            md5: md5.to_ascii_lowercase(),
            size,
            tmp,
            lock: Some(lock),
            written: 0,
            crcs: Vec::with_capacity(4 * blocks_of(size) as usize),
        })
    }

    /// Appends the next block (blocks come in order, each BLOCK_SIZE but the last).
    pub fn push(&mut self, block: &[u8]) -> io::Result<()> {
        let Some(lock) = &mut self.lock else {
            return Err(io::Error::other("already failed"));
        };
        let result = lock.0.write_all(block);
        if result.is_err() {
            self.lock = None;
        }
        result?;
        self.written += block.len() as u64;
        self.crcs
            .extend_from_slice(&crc32fast::hash(block).to_le_bytes());
        Ok(())
    }

    /// Checks the whole file against the MD5 and puts it in place, then evicts what no longer
    /// fits (blocking: call it off the async workers).
    pub fn finish(mut self) -> io::Result<()> {
        if self.written != self.size {
            return Err(io::Error::other(format!(
                "{} of {} bytes",
                self.written, self.size
            )));
        }
        let Some(lock) = self.lock.take() else {
            return Err(io::Error::other("a write failed"));
        };
        let file = lock.0;
        let mut hasher = Md5::new();
        let mut buffer = vec![0u8; BLOCK_SIZE as usize];
        let mut at = 0;
        while at < self.size {
            let len = BLOCK_SIZE.min(self.size - at) as usize;
            file.read_exact_at(&mut buffer[..len], at)?;
            hasher.update(&buffer[..len]);
            at += len as u64;
        }
        let got = format!("{:x}", hasher.finalize());
        if got != self.md5 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the content's MD5 is {got}, the server says {}", self.md5),
            ));
        }
        file.sync_data()?;
        let sums_tmp = sums_path(&self.tmp);
        // Locked: another mount opening the directory removes only unlocked temporary files.
        let mut sums = Flock::create_new(&sums_tmp)?;
        let written = (|| {
            sums.0.write_all(&self.crcs)?;
            sums.0.write_all(self.md5.as_bytes())?;
            sums.0.write_all(&self.size.to_le_bytes())?;
            sums.0.write_all(MAGIC)?;
            sums.0.sync_data()?;
            let path = self.cache.path(&self.md5);
            private::dir(path.parent().expect("a shard directory"))?;
            // The checksums first: an entry is never seen without them.
            std::fs::rename(&sums_tmp, sums_path(&path))?;
            std::fs::rename(&self.tmp, &path)?;
            Ok::<_, io::Error>(path)
        })();
        let path = match written {
            Ok(path) => path,
            Err(err) => {
                let _ = std::fs::remove_file(&sums_tmp);
                return Err(err);
            }
        };
        drop(sums);
        drop(file);
        let added = self.size + sums_len(self.size);
        self.cache.bytes.fetch_add(added, Ordering::Relaxed);
        self.cache.entries.fetch_add(1, Ordering::Relaxed);
        self.cache.fills.fetch_add(1, Ordering::Relaxed);
        log::debug!("data cache: added {}", path.display());
        if self.cache.bytes.load(Ordering::Relaxed) > self.cache.capacity {
            self.cache.evict()?;
        }
        Ok(())
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        // Renamed away when finished; otherwise an unfinished file.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// A cache size: a number of MiB, or a number with a K, M, G or T suffix (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "M"),
    };
    let shift = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{text:?}: give a size such as 512M, 20G or 1T")),
    };
    let number: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: give a size such as 512M, 20G or 1T"))?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md5_of(data: &[u8]) -> String {
        format!("{:x}", Md5::digest(data))
    }

    fn fill(cache: &Arc<DiskCache>, data: &[u8]) -> String {
        let md5 = md5_of(data);
        let mut filler = cache.filler(&md5, data.len() as u64).expect("a filler");
        for block in data.chunks(BLOCK_SIZE as usize) {
            filler.push(block).unwrap();
        }
        filler.finish().unwrap();
        md5
    }

    #[test]
    fn sizes_read_as_mib_unless_a_suffix_says_otherwise() {
        assert_eq!(parse_size("512"), Ok(512 << 20));
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert_eq!(parse_size("3GiB"), Ok(3 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12X").is_err());
    }

    #[test]
    fn a_filled_entry_reads_back_block_by_block_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(DiskCache::open(&dir.path().join("c"), 64 << 20).unwrap());
        let data: Vec<u8> = (0..(2 * BLOCK_SIZE + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        let md5 = fill(&cache, &data);
        let entry = cache.get(&md5, data.len() as u64).expect("cached");
        assert_eq!(
            &entry.block(0, BytesMut::new()).unwrap()[..],
            &data[..BLOCK_SIZE as usize]
        );
        assert_eq!(
            &entry.block(2, BytesMut::new()).unwrap()[..],
            &data[2 * BLOCK_SIZE as usize..]
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(entry.path()), 0o600);
        assert_eq!(mode(entry.path().parent().unwrap()), 0o700);
        assert_eq!(mode(&dir.path().join("c")), 0o700);
        assert_eq!(cache.status().entries, 1);
    }

    #[test]
    fn content_that_does_not_match_its_md5_never_becomes_an_entry() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(DiskCache::open(dir.path(), 64 << 20).unwrap());
        let md5 = md5_of(b"the real content");
        let mut filler = cache.filler(&md5, 16).unwrap();
        filler.push(b"not the content!").unwrap();
        assert!(filler.finish().is_err());
        assert!(cache.get(&md5, 16).is_none());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn an_entry_is_exactly_the_content_and_entries_of_the_older_format_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("data/ab/ab345678901234567890123456789012");
        std::fs::create_dir_all(old.parent().unwrap()).unwrap();
        std::fs::write(&old, b"bytes and a trailer").unwrap();
        let cache = Arc::new(DiskCache::open(dir.path(), 64 << 20).unwrap());
        assert!(!old.exists(), "an entry of the older format stayed");
        let data = vec![5u8; BLOCK_SIZE as usize + 3];
        let md5 = fill(&cache, &data);
        let entry = cache.get(&md5, data.len() as u64).unwrap();
        assert_eq!(std::fs::read(entry.path()).unwrap(), data);
        assert!(entry.check_ends().is_ok());
        // A mount opening the directory again keeps what is of its format.
        drop(DiskCache::open(dir.path(), 64 << 20).unwrap());
        assert!(cache.get(&md5, data.len() as u64).is_some());
    }

    #[test]
    fn the_check_before_passthrough_finds_a_damaged_first_or_last_block_and_a_lost_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(DiskCache::open(dir.path(), 64 << 20).unwrap());
        for at in [3, 3 * BLOCK_SIZE - 1] {
            let data: Vec<u8> = (0..3 * BLOCK_SIZE)
                .map(|i| (i % 241) as u8 ^ at as u8)
                .collect();
            let md5 = fill(&cache, &data);
            let entry = cache.get(&md5, data.len() as u64).unwrap();
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(entry.path())
                .unwrap();
            file.write_all_at(&[!data[at as usize]], at).unwrap();
            assert!(entry.check_ends().is_err(), "damage at {at} passed");
        }
        let data = vec![1u8; 100];
        let md5 = fill(&cache, &data);
        std::fs::remove_file(sums_path(&cache.path(&md5))).unwrap();
        assert!(cache.get(&md5, 100).is_none(), "an entry without checksums");
        assert!(!cache.path(&md5).exists());
    }

    #[test]
    fn a_damaged_block_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(DiskCache::open(dir.path(), 64 << 20).unwrap());
        let data = vec![7u8; 3 * BLOCK_SIZE as usize];
        let md5 = fill(&cache, &data);
        let entry = cache.get(&md5, data.len() as u64).unwrap();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(entry.path())
            .unwrap();
        file.write_all_at(b"X", BLOCK_SIZE + 5).unwrap();
        assert!(entry.block(0, BytesMut::new()).is_ok());
        assert!(entry.block(1, BytesMut::new()).is_err());
    }

    #[test]
    fn a_block_handed_out_stays_whole_after_its_entry_is_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(DiskCache::open(dir.path(), 3 << 20).unwrap());
        let data: Vec<u8> = (0..(2 * BLOCK_SIZE)).map(|i| (i % 253) as u8).collect();
        let md5 = fill(&cache, &data);
        let entry = cache.get(&md5, data.len() as u64).unwrap();
        let block = entry.block(1, BytesMut::new()).unwrap();
        // A second entry pushes the first out of the 3 MiB cache.
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        File::open(cache.path(&md5))
            .unwrap()
            .set_modified(old)
            .unwrap();
        fill(&cache, &vec![9u8; 2 << 20]);
        assert!(!cache.path(&md5).exists(), "the first entry was evicted");
        assert_eq!(&block[..], &data[BLOCK_SIZE as usize..]);
        assert_eq!(
            &entry.block(0, BytesMut::new()).unwrap()[..],
            &data[..BLOCK_SIZE as usize]
        );
        assert!(
            entry.block(2, BytesMut::new()).is_err(),
            "no block past the end"
        );
    }

    #[test]
    fn the_least_recently_used_entries_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(DiskCache::open(dir.path(), 5 << 20).unwrap());
        let a = fill(&cache, &vec![1u8; 2 << 20]);
        let b = fill(&cache, &vec![2u8; 2 << 20]);
        // `a` is used after `b` was added: `b` is now the least recently used.
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        File::open(cache.path(&b))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(cache.get(&a, 2 << 20).is_some());
        let c = fill(&cache, &vec![3u8; 2 << 20]);
        assert!(cache.path(&a).exists());
        assert!(!cache.path(&b).exists(), "b was evicted");
        assert!(cache.path(&c).exists());
        assert!(cache.status().bytes <= 5 << 20);
    }
}
