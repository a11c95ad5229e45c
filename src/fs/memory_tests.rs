//! What the filesystem keeps in memory per listed entry, counted by the allocator: a folder of
//! 100,000 items must not cost the mount more than about 100 MiB (issue 14: ≤ 1 KiB per cached
//! entry beyond the data cache). Measured on the in-memory Midas, so it does not depend on the
//! machine's load or on how the C allocator hands memory back.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use super::MidasFs;
use crate::midas::fake::FakeMidas;
use crate::midas::MidasApi;

/// The system allocator, counting on the threads that ask for it the bytes they hold.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static HELD: Cell<isize> = const { Cell::new(0) };
}

/// What glibc's malloc takes for a request of `size` bytes: its 8-byte header, rounded up to 16,
/// 32 at least.
fn chunk(size: usize) -> isize {
    (size + 8).next_multiple_of(16).max(32) as isize
}

fn count(bytes: isize) {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = HELD.try_with(|held| held.set(held.get() + bytes));
        }
    });
}

// SAFETY: every call goes to `System` as it came; the counting only touches const-initialised
// thread locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(chunk(layout.size()));
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(chunk(layout.size()));
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-chunk(layout.size()));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(chunk(new_size) - chunk(layout.size()));
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The bytes `work` leaves allocated on this thread (a current-thread runtime runs every
/// future of a test on it).
async fn held_after<T>(work: impl std::future::Future<Output = T>) -> (T, isize) {
    let before = HELD.with(Cell::get);
    COUNTING.with(|on| on.set(true));
    let out = work.await;
    COUNTING.with(|on| on.set(false));
    (out, HELD.with(Cell::get) - before)
}

fn mount(midas: &Arc<FakeMidas>, spool: &std::path::Path) -> MidasFs {
    super::fake_tests::fake_mount(midas, spool)
}

#[tokio::test(flavor = "current_thread")]
async fn an_item_listed_by_ls_l_costs_the_mount_under_a_kibibyte() {
    const ITEMS: usize = 2000;
    let midas = super::fake_tests::server();
    let folder = midas.public_folder();
    for i in 0..ITEMS {
        midas.add_file(folder, &format!("measurement-{i:06}.dat"), b"some bytes");
    }
    // What the fake itself keeps of the calls a listing makes (its log of them).
    let ((), fake_share) = held_after(async {
        let children = midas.folder_children(folder).await.expect("children");
        for item in &children.items {
            midas.item_get(item.item_id).await.expect("item");
        }
    })
    .await;
    let spool = tempfile::tempdir().expect("spool dir");
    let fs = mount(&midas, spool.path());
    // `ls -l`: a listing, and a node for every entry (readdirplus hands each to the kernel).
    let (listed, held) = held_after(async {
        let entries = fs.listing(super::inode::ROOT).await.expect("listing");
        for entry in entries.iter() {
            fs.remember(super::inode::ROOT, entry);
        }
        entries.len()
    })
    .await;
    assert_eq!(listed, ITEMS);
    let per_item = (held - fake_share) / ITEMS as isize;
    eprintln!("{per_item} B per item ({held} B held, {fake_share} B of them the fake's)");
    assert!(
        per_item <= 1024,
        "an item listed and looked up holds {per_item} B"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_ends_of_files_read_between_large_ones_stay_within_the_block_cache() {
    const CACHE: u64 = 4 << 20;
    const ROUNDS: usize = 20;
    const SMALL: usize = 64 << 10;
    let midas = super::fake_tests::server();
    let folder = midas.public_folder();
    for round in 0..ROUNDS {
        midas.add_file(folder, &format!("large-{round:02}.bin"), &[b'L'; 2 << 20]);
        for i in 0..2 {
            midas.add_file(folder, &format!("small-{round:02}-{i}.txt"), &[b's'; SMALL]);
        }
    }
    let spool = tempfile::tempdir().expect("spool dir");
    let mut fs = mount(&midas, spool.path());
    fs.config.cache_bytes = CACHE;
    fs.cache = Arc::new(super::read::reader::BlockCache::new(CACHE));
    let fs = Arc::new(fs);
    let root = super::inode::ROOT;
    fs.listing(root).await.expect("listing");
    let read_whole = |name: String, size: usize| {
        let fs = &fs;
        async move {
            let attr = fs.lookup(root, &name).await.expect("lookup");
            let open = fs.open(attr.ino).await.expect("open");
            let mut read = 0;
            while read < size {
                let bytes = fs
                    .read(open.fh, read as u64, 128 << 10)
                    .await
                    .expect("read");
                assert!(!bytes.is_empty(), "{name} ends at {read} of {size}");
                read += bytes.len();
            }
            fs.release(open.fh);
        }
    };
    // Each large file evicts the last one's whole blocks; the small files read next (each one
    // block shorter than a whole one) come after them, and are read again and again.
    let ((), held) = held_after(async {
        for round in 0..ROUNDS {
            read_whole(format!("large-{round:02}.bin"), 2 << 20).await;
            for i in 0..2 {
                read_whole(format!("small-{round:02}-{i}.txt"), SMALL).await;
            }
            for again in 0..=round {
                for i in 0..2 {
                    read_whole(format!("small-{again:02}-{i}.txt"), SMALL).await;
                }
            }
        }
    })
    .await;
    let (cached, _) = fs.cache.usage();
    eprintln!("{held} B held, {cached} B of them counted by the cache");
    // The cache, and up to four evicted whole blocks kept for reuse.
    assert!(
        held < 2 * CACHE as isize + (1 << 20),
        "reading held {held} B, with a block cache of {CACHE} B"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn listing_directories_leaves_no_lock_behind() {
    let midas = super::fake_tests::server();
    let folder = midas.public_folder();
    for i in 0..50 {
        midas.add_folder(folder, &format!("dir-{i}"));
    }
    let spool = tempfile::tempdir().expect("spool dir");
    let fs = Arc::new(mount(&midas, spool.path()));
    let root = super::inode::ROOT;
    for i in 0..50 {
        let attr = fs.lookup(root, &format!("dir-{i}")).await.expect("lookup");
        fs.listing(attr.ino).await.expect("listing");
    }
    let locks = fs.listing_locks.lock().expect("locks").len();
    assert_eq!(locks, 0, "listing locks kept after the listings");
}

#[tokio::test(flavor = "current_thread")]
async fn the_kernel_forgetting_a_large_walk_gives_its_memory_back_to_the_system() {
    // Twice the threshold: other tests' listings count on the same global counter, and one of
    // them may be the one to cross it once.
    let items = 2 * super::give_back::EVERY;
    let midas = super::fake_tests::server();
    let folder = midas.public_folder();
    for i in 0..items {
        midas.add_file(folder, &format!("walked-{i:06}.dat"), b"x");
    }
    let spool = tempfile::tempdir().expect("spool dir");
    let fs = mount(&midas, spool.path());
    let root = super::inode::ROOT;
    let entries = fs.listing(root).await.expect("listing");
    for entry in entries.iter() {
        fs.remember(root, entry);
    }
    let asked_before = super::give_back::ASKED_HERE.with(std::cell::Cell::get);
    for entry in entries.iter() {
        fs.forget(entry.ino, 1);
    }
    let asked = super::give_back::ASKED_HERE.with(std::cell::Cell::get) - asked_before;
    assert!(
        asked >= 1,
        "forgetting {items} inodes never asked the allocator to give back their memory"
    );
}
