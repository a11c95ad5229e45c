//! Reading ahead of a program that sniffs a folder's files. A file manager opening a folder
//! reads the first bytes of every file whose name does not settle its type, one file after the
//! other, and each of those reads waits for a round trip: a folder of twenty `.dat` files stays
//! blank for twenty round trips. And the kernel's readahead makes each 4 KiB read a 16 KiB
//! download, which the server overshoots by its socket's buffer.
//!
//! So once two files of a folder in a row were only read at their start (their handles closed
//! with every read within [`SNIFF_READ`](super::reader::SNIFF_READ) bytes), the first bytes of the folder's other files of
//! the same extensions are fetched, several at once, each with the smallest receive buffer, and
//! put in the kernel's page cache: the program's next reads find them there and need no READ.
//! What is fetched of each file is what the program read: a quarter of the kernel's READ (its
//! readahead asks four times a small first read), whole pages.
//!
//! Bounded: [`AHEAD_FILES`] files per round, a round only after a sniff, files of the folder's
//! listing in memory only (no request to find them), nothing for a file being written or whose
//! content the kernel already holds. The content put in the page cache is what any read of the
//! file would have put there (the bitstream the listing names); the kernel checks each opener's
//! access as for any read. Optional work: unmount does not wait for it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::reader::FileReader;
use crate::fs::inode::{BitstreamInfo, NodeKind};
use crate::fs::tasks::Work;
use crate::fs::MidasFs;

/// Two sniffs of a folder's files, each this soon after the one before, make a sniffing program.
const SNIFF_STREAK: u32 = 2;
const SNIFF_GAP: Duration = Duration::from_secs(5);
/// A folder's sniffs are forgotten this long after the last one (the files it queued stay
/// queued: an open fetches their start).
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// The most files whose start one round fetches; the next round starts at the next sniff.
const AHEAD_FILES: usize = 64;
/// How many of them are fetched at once.
const AHEAD_CONCURRENCY: usize = 8;
const PAGE: u64 = 4096;

/// The sniffs seen in each folder lately, and the files whose start is to be fetched ahead.
#[derive(Default)]
pub(in crate::fs) struct Sniffs {
    dirs: Mutex<HashMap<u64, DirSniffs>>,
    heads: Mutex<Heads>,
}

struct DirSniffs {
    last: Instant,
    streak: u32,
    /// The extensions of the files sniffed in the streak ("" for none).
    extensions: HashSet<String>,
    /// What a program's read took of each file, in bytes (whole pages).
    head: u64,
    /// Files sniffed, or queued to be fetched ahead: not queued again.
    seen: HashSet<u64>,
}

/// Files whose start is to be fetched, by inode.
#[derive(Default)]
struct Heads {
    /// Not started: the bitstream, and how many bytes of its start.
    queued: HashMap<u64, (BitstreamInfo, u64)>,
    /// Started: becomes true when the start is in the page cache (or will not be).
    fetching: HashMap<u64, watch::Receiver<bool>>,
}

/// What to do about the start of a file: fetch it (nobody else does), wait for whoever does, or
/// nothing (it is not to be fetched ahead).
enum Claim {
    Fetch(BitstreamInfo, u64, watch::Sender<bool>),
    Wait(watch::Receiver<bool>),
    Nothing,
}

impl Sniffs {
    fn heads(&self) -> std::sync::MutexGuard<'_, Heads> {
        self.heads.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dirs(&self) -> std::sync::MutexGuard<'_, HashMap<u64, DirSniffs>> {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the start of `ino` is queued or being fetched ahead (its open then needs the
    /// network, or to wait).
    pub(in crate::fs) fn pending(&self, ino: u64) -> bool {
        let heads = self.heads();
        heads.queued.contains_key(&ino) || heads.fetching.contains_key(&ino)
    }

    fn claim(&self, ino: u64) -> Claim {
        let mut heads = self.heads();
        if let Some(fetched) = heads.fetching.get(&ino) {
            return Claim::Wait(fetched.clone());
        }
        match heads.queued.remove(&ino) {
            Some((bitstream, head)) => {
                let (done, fetched) = watch::channel(false);
                heads.fetching.insert(ino, fetched);
                Claim::Fetch(bitstream, head, done)
            }
            None => Claim::Nothing,
        }
    }
}

/// The extension of a file name, as a file manager would weigh it ("" for none).
fn extension(name: &str) -> &str {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext,
        _ => "",
    }
}

impl MidasFs {
    /// Before a file is opened for reading: when its start is queued to be fetched ahead, the
    /// open fetches it now, or waits for the fetch under way, rather than ask for it again
    /// with its first READ.
    pub(in crate::fs) async fn sniffed_start(&self, ino: u64) {
        match self.sniffs.claim(ino) {
            Claim::Fetch(bitstream, head, done) => {
                self.fetch_start(ino, &bitstream, head, done).await
            }
            Claim::Wait(mut fetched) => {
                let done = fetched.wait_for(|done| *done);
                let _ = tokio::time::timeout(self.config.stall_timeout, done).await;
            }
            Claim::Nothing => {}
        }
    }

    /// After a read handle is released: counts a sniff of its folder, and queues the start of
    /// the folder's other files when its sniffs make a streak (see the module's documentation).
    pub(in crate::fs) fn after_read(self: &Arc<Self>, reader: &FileReader) {
        let ino = reader.ino();
        let Some(dir) = self.nodes().get(&ino).map(|node| node.parent) else {
            return;
        };
        let sniffed = reader.sniffed();
        if sniffed.is_none() && !reader.read_any() {
            // A handle that read nothing (its reads came from the page cache): a file fetched
            // ahead is a sniff that did not need the network, anything else says nothing.
            let mut dirs = self.sniffs.dirs();
            if let Some(dir) = dirs.get_mut(&dir).filter(|d| d.seen.contains(&ino)) {
                dir.last = Instant::now();
            }
            return;
        }
        let Some(end) = sniffed else {
            // The program read more than the start: it is not sniffing this folder.
            self.sniffs.dirs().remove(&dir);
            return;
        };
        let Some(name) = self.listings.last(dir).and_then(|entries| {
            entries
                .iter()
                .find(|entry| entry.ino == ino)
                .map(|entry| entry.name.clone())
        }) else {
            return;
        };
        let head = (end / 4).div_ceil(PAGE).max(1) * PAGE;
        let wanted = {
            let mut dirs = self.sniffs.dirs();
            let now = Instant::now();
            // Folders nobody sniffed for a while are forgotten.
            dirs.retain(|_, state| now.duration_since(state.last) <= FORGET_AFTER);
            let state = dirs.entry(dir).or_insert_with(|| DirSniffs {
                last: now,
                streak: 0,
                extensions: HashSet::new(),
                head,
                seen: HashSet::new(),
            });
            if now.duration_since(state.last) > SNIFF_GAP {
                state.streak = 0;
                state.extensions.clear();
            }
            state.last = now;
            state.streak += 1;
            state.extensions.insert(extension(&name).to_string());
            state.head = state.head.max(head);
            state.seen.insert(ino);
            (state.streak >= SNIFF_STREAK).then(|| (state.extensions.clone(), state.head))
        };
        let Some((extensions, head)) = wanted else {
            return;
        };
        let mut files = self.sniff_candidates(dir, &extensions, head);
        {
            let mut dirs = self.sniffs.dirs();
            let Some(state) = dirs.get_mut(&dir) else {
                return;
            };
            files.retain(|(ino, _)| state.seen.insert(*ino));
            files.truncate(AHEAD_FILES);
        }
        if files.is_empty() {
            return;
        }
        // Queued now: an open of one of them from now on fetches it (or waits for it), even
        // before the task below has started (the program's next open comes right away).
        let order: Vec<u64> = files.iter().map(|(ino, _)| *ino).collect();
        {
            let mut heads = self.sniffs.heads();
            for (ino, bitstream) in files {
                heads.queued.insert(ino, (bitstream, head));
            }
        }
        let fs = Arc::clone(self);
        self.tasks.spawn(Work::Optional, async move {
            futures_util::stream::iter(order)
                .for_each_concurrent(AHEAD_CONCURRENCY, |ino| {
                    let fs = &fs;
                    async move {
                        if let Claim::Fetch(bitstream, head, done) = fs.sniffs.claim(ino) {
                            fs.fetch_start(ino, &bitstream, head, done).await;
                        }
                    }
                })
                .await;
        });
    }

    /// The files of folder `dir` whose start may be fetched ahead: those of its listing in
    /// memory with one of `extensions`, larger than `head`, that the kernel holds as inodes but
    /// with no content (as far as the mount knows), and that nobody writes.
    fn sniff_candidates(
        &self,
        dir: u64,
        extensions: &HashSet<String>,
        head: u64,
    ) -> Vec<(u64, BitstreamInfo)> {
        let Some(entries) = self.listings.last(dir) else {
            return Vec::new();
        };
        let writing: HashSet<u64> = self.writes.files().keys().copied().collect();
        let nodes = self.nodes();
        entries
            .iter()
            .filter_map(|entry| match &entry.data.kind {
                NodeKind::ItemFile { bitstream, .. } | NodeKind::Bitstream { bitstream, .. } => {
                    Some((entry, bitstream))
                }
                _ => None,
            })
            .filter(|(entry, bitstream)| {
                bitstream.size > head
                    && extensions.contains(extension(&entry.name))
                    && !writing.contains(&entry.ino)
                    && nodes
                        .get(&entry.ino)
                        .is_some_and(|node| node.kernel_cached_md5.is_none())
            })
            .map(|(entry, bitstream)| (entry.ino, bitstream.clone()))
            .take(AHEAD_FILES * 2)
            .collect()
    }

    /// Fetches the first `head` bytes of `ino` and puts them in the kernel's page cache, unless
    /// the file was opened or changed meanwhile; then tells whoever waits (`done`).
    async fn fetch_start(
        &self,
        ino: u64,
        bitstream: &BitstreamInfo,
        head: u64,
        done: watch::Sender<bool>,
    ) {
        // Opened meanwhile, or changed: the open's own reads are the ones to trust.
        let unchanged = |fs: &MidasFs| {
            fs.nodes().get(&ino).is_some_and(|node| {
                node.kernel_cached_md5.is_none()
                    && node.data.kind.bitstream().map(|b| &b.md5) == Some(&bitstream.md5)
            })
        };
        if let Some(kernel) = self.kernel.get().filter(|_| unchanged(self)) {
            let head = head.min(bitstream.size) as usize;
            let mut bytes = BytesMut::with_capacity(head);
            let fetched = match self
                .client
                .download_head(bitstream.id, bitstream.size)
                .await
            {
                Ok(mut stream) => stream.fill(&mut bytes, head).await,
                Err(err) => Err(err),
            };
            match fetched {
                Ok(()) if unchanged(self) => {
                    // Whatever the kernel may hold of the inode goes first (the mount may have
                    // written it), so that the page stored is all it holds.
                    let (kernel, bytes) = (Arc::clone(kernel), bytes.freeze());
                    let stored = tokio::task::spawn_blocking(move || {
                        kernel.forget_content(ino)?;
                        kernel.store(ino, 0, &bytes)
                    })
                    .await;
                    match stored {
                        Ok(Ok(())) => {
                            // Unless it changed meanwhile: the next open then has the kernel
                            // forget the page.
                            if let Some(node) = self.nodes().get_mut(&ino) {
                                let same = node.data.kind.bitstream().map(|b| &b.md5)
                                    == Some(&bitstream.md5);
                                if same && node.kernel_cached_md5.is_none() {
                                    node.kernel_cached_md5 = Some(bitstream.md5.clone());
                                }
                            }
                        }
                        Ok(Err(err)) => log::debug!("page cache of inode {ino:#x}: {err}"),
                        Err(_) => {}
                    }
                }
                Ok(()) => {}
                Err(err) => {
                    log::debug!("reading ahead of a sniffing program, inode {ino:#x}: {err}")
                }
            }
        }
        self.sniffs.heads().fetching.remove(&ino);
        let _ = done.send(true);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use crate::fs::fake_tests::{mount, server};
    use crate::fs::inode::ROOT;
    use crate::fs::kernel::KernelCaches;
    use crate::fs::MidasFs;

    /// What the filesystem told the kernel: content stored, by inode, and content forgotten.
    #[derive(Default)]
    struct Recorded {
        stored: Mutex<Vec<(u64, u64, Vec<u8>)>>,
        forgotten: Mutex<Vec<u64>>,
    }

    impl KernelCaches for Recorded {
        fn attributes_changed(&self, _ino: u64) {}

        fn forget_content(&self, ino: u64) -> std::io::Result<()> {
            self.forgotten.lock().unwrap().push(ino);
            Ok(())
        }

        fn store(&self, ino: u64, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.stored
                .lock()
                .unwrap()
                .push((ino, offset, data.to_vec()));
            Ok(())
        }
    }

    const SIZE: usize = 100_000;

    fn content(i: usize) -> Vec<u8> {
        (0..SIZE).map(|k| ((k * 7 + i * 13) % 251) as u8).collect()
    }

    /// A mount of a folder of `a0.dat`…`a5.dat`, `notes.txt` (as large) and `tiny.dat` (100
    /// bytes), each looked up (as a file manager's listing does), telling `kernel`.
    async fn folder(
        kernel: &Arc<Recorded>,
    ) -> (
        Arc<crate::midas::fake::FakeMidas>,
        Arc<MidasFs>,
        tempfile::TempDir,
        Vec<u64>,
    ) {
        let midas = server();
        for i in 0..6 {
            midas.add_file(midas.public_folder(), &format!("a{i}.dat"), &content(i));
        }
        midas.add_file(midas.public_folder(), "notes.txt", &content(9));
        midas.add_file(midas.public_folder(), "tiny.dat", &[7; 100]);
        let (fs, spool) = mount(&midas);
        fs.tell_kernel(Arc::clone(kernel) as _);
        let mut inos = Vec::new();
        for name in (0..6)
            .map(|i| format!("a{i}.dat"))
            .chain(["notes.txt".into(), "tiny.dat".into()])
        {
            inos.push(fs.lookup(ROOT, &name).await.expect(&name).ino);
        }
        (midas, fs, spool, inos)
    }

    /// Opens `ino`, reads what the kernel reads for a program's first 4 KiB (16 KiB), closes.
    async fn sniff(fs: &Arc<MidasFs>, ino: u64) {
        let open = fs.open(ino).await.expect("open");
        fs.read(open.fh, 0, 16384).await.expect("read");
        fs.release_handle(open.fh);
    }

    async fn settle(fs: &MidasFs) {
        for _ in 0..500 {
            if fs.tasks.running() == (0, 0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("background work still running");
    }

    #[tokio::test]
    async fn after_two_sniffs_the_start_of_the_folders_other_files_of_that_extension_is_in_the_page_cache(
    ) {
        let kernel = Arc::new(Recorded::default());
        let (midas, fs, _spool, inos) = folder(&kernel).await;
        sniff(&fs, inos[0]).await;
        settle(&fs).await;
        assert!(
            kernel.stored.lock().unwrap().is_empty(),
            "one sniff is no pattern"
        );
        sniff(&fs, inos[1]).await;
        // The program's next open, at once: it fetches the start (or waits for it) and keeps
        // it.
        let open = fs.open(inos[5]).await.expect("open");
        assert!(
            open.keep_cache,
            "the open of a file queued to be fetched ahead"
        );
        fs.release_handle(open.fh);
        settle(&fs).await;
        let mut stored = kernel.stored.lock().unwrap().clone();
        stored.sort();
        // a2…a5: not the two sniffed, not notes.txt, not tiny.dat (smaller than what is read).
        let expected: Vec<_> = (2..6)
            .map(|i| (inos[i], 0, content(i)[..4096].to_vec()))
            .collect();
        assert_eq!(
            stored.len(),
            expected.len(),
            "{:?}",
            stored.iter().map(|s| s.0).collect::<Vec<_>>()
        );
        assert!(
            stored == expected,
            "the first page of each file, as a quarter of the READ"
        );
        let mut forgotten = kernel.forgotten.lock().unwrap().clone();
        forgotten.sort();
        assert_eq!(forgotten, inos[2..6], "what the kernel held goes first");
        // Their opens keep what was stored; a third sniff fetches nothing again.
        let open = fs.open(inos[2]).await.expect("open");
        assert!(open.keep_cache);
        fs.release_handle(open.fh);
        sniff(&fs, inos[3]).await;
        settle(&fs).await;
        assert_eq!(kernel.stored.lock().unwrap().len(), 4);
        // Three sniffs (without a kernel, the third reads through the mount too) and four
        // starts, each fetched once.
        assert_eq!(midas.count("download"), 7, "{:?}", midas.calls());
    }

    #[tokio::test]
    async fn a_file_read_whole_between_two_sniffs_starts_no_read_ahead() {
        let kernel = Arc::new(Recorded::default());
        let (_midas, fs, _spool, inos) = folder(&kernel).await;
        sniff(&fs, inos[0]).await;
        let open = fs.open(inos[1]).await.expect("open");
        let mut at = 0;
        while at < SIZE as u64 {
            at += fs.read(open.fh, at, 65536).await.expect("read").len() as u64;
        }
        fs.release_handle(open.fh);
        sniff(&fs, inos[2]).await;
        settle(&fs).await;
        assert!(kernel.stored.lock().unwrap().is_empty());
    }
}
