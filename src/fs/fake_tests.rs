//! The filesystem on the in-memory Midas ([`crate::midas::fake`]), without FUSE: the seam
//! works both ways (what the server holds is listed, what is written reaches the server).

use std::sync::Arc;
use std::time::Duration;

use super::inode::{FileKind, ROOT};
use super::spool::SpoolConfig;
use super::{FsConfig, MidasFs, MountRoot};
use crate::midas::fake::{FakeMidas, Fault};

/// How long the fake (and the mounts of it) take to give up on a call that stalls.
const STALL: Duration = Duration::from_millis(300);

/// Content one byte past the size at which a new file is sent while it is written: what rsync
/// copies in the tests of its temporary file.
pub(in crate::fs) fn large_content() -> Vec<u8> {
    let size = super::write::early::EARLY_MIN_SIZE + 1;
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// Writes `content` through handle `fh` as the kernel does (1 MiB at a time, starting an early
/// upload when the file becomes large enough), then closes the handle.
pub(in crate::fs) async fn write_and_close(fs: &Arc<MidasFs>, fh: u64, content: &[u8]) {
    for (at, chunk) in content.chunks(1 << 20).enumerate() {
        fs.handle_write(fh, (at << 20) as u64, chunk)
            .expect("write");
    }
    fs.flush(fh, Some(42)).await.expect("flush");
    fs.release_write(fh).await;
}

/// Item `name` of the public folder holds `content`, and no `upload.perform` sent it: Midas's
/// checksum dedup spared the bytes.
pub(in crate::fs) fn assert_saved_without_sending(midas: &FakeMidas, name: &str, content: &[u8]) {
    assert_eq!(
        midas.count("midas.upload.perform"),
        0,
        "{:?}",
        midas.calls()
    );
    let item = midas
        .child_item(midas.public_folder(), name)
        .expect("saved");
    assert!(midas.content(item).expect("content") == content);
}

/// The in-memory Midas the fake-based tests of `src/fs/` mount.
pub(in crate::fs) fn server() -> Arc<FakeMidas> {
    Arc::new(FakeMidas::new(STALL))
}

/// A mount of the user's Public folder on the fake, spooling in `spool` (the fake-based tests
/// of `src/fs/` all start from it).
pub(in crate::fs) fn fake_mount(midas: &Arc<FakeMidas>, spool: &std::path::Path) -> MidasFs {
    fake_mount_spooling(midas, spool, 1 << 30)
}

/// [`fake_mount`], with at most `max_bytes` in its spool files (`--spool-size`).
pub(in crate::fs) fn fake_mount_spooling(
    midas: &Arc<FakeMidas>,
    spool: &std::path::Path,
    max_bytes: u64,
) -> MidasFs {
    let config = FsConfig {
        ttl: Duration::from_secs(60),
        items_as_dirs: false,
        read_only: false,
        cache_bytes: 16 << 20,
        stall_timeout: STALL,
        root: MountRoot::Folder {
            id: midas.public_folder(),
            writable: true,
        },
        spool: SpoolConfig {
            dir: spool.to_owned(),
            max_bytes,
            keep_free: 0,
        },
    };
    let api: crate::midas::Api = Arc::clone(midas) as _;
    MidasFs::new(api, midas.me(), config)
}

/// A mount of the user's Public folder, and the directory its spool lives in.
pub(in crate::fs) fn mount(midas: &Arc<FakeMidas>) -> (Arc<MidasFs>, tempfile::TempDir) {
    let spool = tempfile::tempdir().expect("spool dir");
    (Arc::new(fake_mount(midas, spool.path())), spool)
}

#[tokio::test]
async fn a_file_on_the_server_is_listed_and_read() {
    let midas = server();
    midas.add_file(midas.public_folder(), "hello.txt", b"hello");
    let (fs, _spool) = mount(&midas);
    let attr = fs.lookup(ROOT, "hello.txt").await.expect("lookup");
    assert_eq!((attr.kind, attr.size), (FileKind::File, 5));
    let open = fs.open(attr.ino).await.expect("open");
    let bytes = fs.read(open.fh, 0, 100).await.expect("read");
    assert_eq!(&bytes[..], b"hello");
}

#[tokio::test]
async fn a_new_file_reaches_the_server_when_it_is_closed() {
    let midas = server();
    let (fs, _spool) = mount(&midas);
    let (_, fh) = fs.create(ROOT, "new.txt", 42).expect("create");
    fs.write(fh, 0, b"some bytes").expect("write");
    fs.flush(fh, Some(42)).await.expect("flush");
    fs.release_write(fh).await;
    let item = midas
        .child_item(midas.public_folder(), "new.txt")
        .expect("item");
    assert_eq!(midas.content(item).expect("content"), b"some bytes");
}

#[tokio::test]
async fn a_refused_upload_fails_the_close_and_keeps_the_data_for_recovery() {
    let midas = server();
    let (fs, _spool) = mount(&midas);
    let (_, fh) = fs.create(ROOT, "lost.txt", 42).expect("create");
    fs.write(fh, 0, b"keep me").expect("write");
    midas.fail_always("midas.upload.*", Fault::Http(503));
    let err = fs.flush(fh, Some(42)).await.expect_err("the upload fails");
    assert_eq!(err.errno(), libc::EIO);
    fs.release_write(fh).await;
    let kept: Vec<_> = std::fs::read_dir(fs.status().recovery_dir)
        .expect("recovery dir")
        .filter_map(|e| e.ok())
        .filter(|e| std::fs::read(e.path()).is_ok_and(|c| c == b"keep me"))
        .collect();
    assert_eq!(kept.len(), 1, "the data is in the recovery directory");
}

// ---- SEMANTICS.md's errno table, the rows no kernel test covers ----

/// The errno of a failed operation.
fn errno<T>(result: super::FsResult<T>) -> i32 {
    match result {
        Ok(_) => panic!("the operation succeeded"),
        Err(err) => err.errno(),
    }
}

#[tokio::test]
async fn unlinking_a_directory_is_eisdir() {
    let midas = server();
    midas.add_folder(midas.public_folder(), "dir");
    let (fs, _spool) = mount(&midas);
    assert_eq!(errno(fs.unlink(ROOT, "dir").await), libc::EISDIR);
}

#[tokio::test]
async fn renaming_a_file_over_a_directory_is_eisdir_and_the_reverse_enotdir() {
    let midas = server();
    midas.add_folder(midas.public_folder(), "dir");
    midas.add_file(midas.public_folder(), "file", b"x");
    let (fs, _spool) = mount(&midas);
    assert_eq!(
        errno(fs.rename(ROOT, "file", ROOT, "dir", false).await),
        libc::EISDIR
    );
    assert_eq!(
        errno(fs.rename(ROOT, "dir", ROOT, "file", false).await),
        libc::ENOTDIR
    );
}

#[tokio::test]
async fn removing_a_file_as_a_directory_is_enotdir() {
    let midas = server();
    midas.add_file(midas.public_folder(), "file", b"x");
    let (fs, _spool) = mount(&midas);
    assert_eq!(errno(fs.rmdir(ROOT, "file").await), libc::ENOTDIR);
}

#[tokio::test]
async fn a_change_midas_refuses_is_eacces() {
    let midas = server();
    midas.deny_writes(midas.public_folder());
    let (fs, _spool) = mount(&midas);
    assert_eq!(errno(fs.mkdir(ROOT, "dir").await), libc::EACCES);
}

#[tokio::test]
async fn moving_a_file_into_an_item_directory_is_exdev() {
    let midas = server();
    let item = midas.add_item(midas.public_folder(), "data");
    midas.add_bitstream(item, "a", b"a");
    midas.add_bitstream(item, "b", b"b");
    midas.add_file(midas.public_folder(), "file", b"x");
    let (fs, _spool) = mount(&midas);
    let data = fs.lookup(ROOT, "data").await.expect("item directory");
    assert_eq!(data.kind, FileKind::Directory);
    assert_eq!(
        errno(fs.rename(ROOT, "file", data.ino, "file", false).await),
        libc::EXDEV
    );
}

#[tokio::test]
async fn a_metadata_value_that_is_not_text_is_einval_and_so_is_readlink_of_a_file() {
    let midas = server();
    midas.add_file(midas.public_folder(), "file", b"x");
    let (fs, _spool) = mount(&midas);
    let file = fs.lookup(ROOT, "file").await.expect("file");
    let set = fs.setxattr(file.ino, "user.midas.meta.note", &[0xff, 0xfe], 0);
    assert_eq!(errno(set.await), libc::EINVAL);
    assert_eq!(errno(fs.readlink(file.ino)), libc::EINVAL);
}

#[tokio::test]
async fn metadata_of_a_folder_is_enotsup() {
    let midas = server();
    midas.add_folder(midas.public_folder(), "dir");
    let (fs, _spool) = mount(&midas);
    let dir = fs.lookup(ROOT, "dir").await.expect("dir");
    let set = fs.setxattr(dir.ino, "user.midas.meta.note", b"x", 0);
    assert_eq!(errno(set.await), libc::ENOTSUP);
}

#[tokio::test]
async fn an_inode_the_filesystem_does_not_know_is_estale() {
    let midas = server();
    let (fs, _spool) = mount(&midas);
    assert_eq!(errno(fs.getattr(0xdead_beef)), libc::ESTALE);
}

#[tokio::test]
async fn a_file_changed_on_the_server_since_this_mount_saved_it_is_estale() {
    let midas = server();
    let (fs, _spool) = mount(&midas);
    let (attr, fh) = fs.create(ROOT, "new", 42).expect("create");
    fs.write(fh, 0, b"mine").expect("write");
    fs.flush(fh, Some(42)).await.expect("flush");
    fs.release_write(fh).await;
    let item = midas
        .child_item(midas.public_folder(), "new")
        .expect("item");
    midas.add_bitstream(item, "another", b"theirs");
    assert_eq!(errno(fs.open(attr.ino).await), libc::ESTALE);
}

#[tokio::test]
async fn reading_a_file_removed_on_the_server_while_open_is_estale_without_retrying() {
    let midas = server();
    let item = midas.add_file(midas.public_folder(), "gone", &[7; 300 << 10]);
    let (fs, _spool) = mount(&midas);
    let attr = fs.lookup(ROOT, "gone").await.expect("lookup");
    let open = fs.open(attr.ino).await.expect("open");
    midas.remove_item(item);
    let downloads = midas.count("download");
    assert_eq!(errno(fs.read(open.fh, 0, 4096).await), libc::ESTALE);
    assert_eq!(errno(fs.read(open.fh, 200 << 10, 4096).await), libc::ESTALE);
    assert!(
        midas.count("download") - downloads <= 2,
        "a bitstream that is gone is not asked for again and again: {:?}",
        midas.calls()
    );
}

#[tokio::test]
async fn a_handle_that_is_not_open_is_ebadf() {
    let midas = server();
    let (fs, _spool) = mount(&midas);
    assert_eq!(errno(fs.read(0xbad, 0, 10).await), libc::EBADF);
    assert_eq!(errno(fs.write(0xbad, 0, b"x")), libc::EBADF);
}

#[tokio::test]
async fn a_server_that_stops_answering_is_etimedout() {
    let midas = server();
    midas.fail_always("*", Fault::Stall);
    let (fs, _spool) = mount(&midas);
    let started = std::time::Instant::now();
    assert_eq!(errno(fs.lookup(ROOT, "anything").await), libc::ETIMEDOUT);
    assert!(started.elapsed() < Duration::from_secs(5), "no hang");
}

#[tokio::test]
async fn a_server_error_is_eio() {
    let midas = server();
    midas.fail_always("midas.folder.children", Fault::Http(500));
    let (fs, _spool) = mount(&midas);
    assert_eq!(errno(fs.lookup(ROOT, "anything").await), libc::EIO);
}

// ---- state the FUSE adapter used to hold ----

#[tokio::test]
async fn a_directory_handle_reads_the_listing_it_started_with() {
    let midas = server();
    midas.add_file(midas.public_folder(), "a", b"a");
    let (fs, _spool) = mount(&midas);
    let fh = fs.opendir();
    let first = match fs.cached_readdir(ROOT, fh, 0) {
        Some(entries) => entries,
        None => fs.readdir(ROOT, fh).await.expect("readdir"),
    };
    assert_eq!(first.len(), 1);
    fs.mkdir(ROOT, "d").await.expect("mkdir");
    let continued = fs.cached_readdir(ROOT, fh, 1).expect("in memory");
    assert_eq!(
        continued.len(),
        1,
        "the handle goes on with its own listing"
    );
    let other = fs.opendir();
    let fresh = fs.cached_readdir(ROOT, other, 0).expect("in memory");
    assert_eq!(fresh.len(), 2, "a new handle sees the new directory");
    fs.releasedir(fh);
    fs.releasedir(other);
}

#[tokio::test]
async fn unmount_waits_for_an_upload_a_last_release_started() {
    let midas = server();
    let (fs, _spool) = mount(&midas);
    let (_, fh) = fs.create(ROOT, "late", 42).expect("create");
    fs.handle_write(fh, 0, b"written, never closed by its opener")
        .expect("write");
    midas.fail(
        "midas.upload.generatetoken",
        Fault::Delay(Duration::from_millis(200)),
    );
    // No flush: the last release uploads, in the background.
    fs.release_handle(fh);
    assert!(midas.child_item(midas.public_folder(), "late").is_none());
    fs.shutdown().await;
    let item = midas
        .child_item(midas.public_folder(), "late")
        .expect("item");
    assert_eq!(
        midas.content(item).expect("content"),
        b"written, never closed by its opener"
    );
}

#[tokio::test]
async fn a_reader_of_a_file_being_written_reads_what_is_written_so_far() {
    let midas = server();
    let (fs, _spool) = mount(&midas);
    let (attr, fh) = fs.create(ROOT, "growing", 42).expect("create");
    fs.write(fh, 0, b"so far").expect("write");
    let reader = fs.cached_open(attr.ino).expect("answered").expect("open");
    assert_eq!(
        &fs.read(reader.fh, 0, 100).await.expect("read")[..],
        b"so far"
    );
}

#[tokio::test]
async fn reading_a_second_subfolder_lists_the_next_ones_ahead_in_the_background() {
    let midas = server();
    let top = midas.add_folder(midas.public_folder(), "top");
    for i in 0..6 {
        let sub = midas.add_folder(top, &format!("sub{i}"));
        midas.add_file(sub, "f.txt", b"f");
    }
    let (fs, _spool) = mount(&midas);
    let top = fs.lookup(ROOT, "top").await.expect("top").ino;
    // As readdirplus does: the kernel now holds every entry.
    for entry in fs.listing(top).await.expect("listing").iter() {
        fs.remember(top, entry);
    }
    let read = |name: &'static str| {
        let fs = Arc::clone(&fs);
        async move {
            let dir = fs.lookup(top, name).await.expect("subfolder").ino;
            let fh = fs.opendir();
            if fs.cached_readdir(dir, fh, 0).is_none() {
                fs.readdir(dir, fh).await.expect("readdir");
            }
        }
    };
    read("sub0").await;
    let before = midas.count("midas.folder.children");
    read("sub1").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while midas.count("midas.folder.children") < before + 5 {
        assert!(std::time::Instant::now() < deadline, "nothing listed ahead");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---- history, chmod privacy and .search through the MidasApi seam ----

#[tokio::test]
async fn an_old_revision_opens_by_name_reads_as_it_was_and_cannot_change() {
    let midas = server();
    let item = midas.add_file(midas.public_folder(), "data.csv", b"one");
    midas.add_revision(item, "data.csv", b"two!");
    let (fs, _spool) = mount(&midas);
    let old = fs.lookup(ROOT, "data.csv@r1").await.expect("revision 1");
    assert_eq!(old.size, 3);
    let open = fs.open(old.ino).await.expect("open");
    assert_eq!(&fs.read(open.fh, 0, 100).await.expect("read")[..], b"one");
    assert_eq!(errno(fs.open_write(old.ino, true, 42).await), libc::EROFS);
    let head = fs.lookup(ROOT, "data.csv").await.expect("head").ino;
    let history = fs
        .getxattr(head, "user.midas.revisions")
        .await
        .expect("revisions");
    let history = String::from_utf8(history).expect("text");
    assert_eq!(history.lines().count(), 2, "{history}");
    assert!(history.contains("Test User"), "{history}");
    assert_eq!(errno(fs.lookup(ROOT, "data.csv@r3").await), libc::ENOENT);
}

#[tokio::test]
async fn chmod_of_a_folder_changes_its_access_alone_and_a_refusal_is_eperm() {
    let midas = server();
    let folder = midas.add_folder(midas.public_folder(), "shared");
    let item = midas.add_file(folder, "inside.txt", b"x");
    let (fs, _spool) = mount(&midas);
    let ino = fs.lookup(ROOT, "shared").await.expect("folder").ino;
    let attr = fs
        .setattr(ino, Some(0o750), None, None)
        .await
        .expect("chmod");
    assert_eq!(attr.perm & 0o004, 0, "shown private");
    assert_eq!(midas.is_public(folder), Some(false));
    assert_eq!(
        midas.is_public(item),
        Some(true),
        "what is in it keeps its own"
    );
    assert_eq!(midas.count("midas.folder.remove.policygroup"), 1);
    // Not an admin of it: Midas refuses the policy change.
    midas.deny_writes(folder);
    assert_eq!(
        errno(fs.setattr(ino, Some(0o755), None, None).await),
        libc::EPERM
    );
}

#[tokio::test]
async fn the_search_directory_links_each_item_of_that_name_to_where_it_is() {
    let midas = server();
    let sub = midas.add_folder(midas.public_folder(), "sub");
    midas.add_file(sub, "scan.nii", b"a");
    midas.add_file(midas.public_folder(), "scan.nii", b"b");
    let (fs, _spool) = mount(&midas);
    let top = fs.lookup(ROOT, ".search").await.expect(".search").ino;
    assert!(fs.listing(top).await.expect("listing").is_empty());
    let query = fs.lookup(top, "scan.nii").await.expect("query").ino;
    let mut targets: Vec<String> = fs
        .listing(query)
        .await
        .expect("results")
        .iter()
        .map(|e| e.data.kind.link_target().expect("a symlink").to_owned())
        .collect();
    targets.sort();
    assert_eq!(targets, ["../../scan.nii", "../../sub/scan.nii"]);
}

// ---- a save by rename's two inodes, and times set ----

/// Writes `content` into a new file `name` in the mount's top, and closes it.
async fn write_new(fs: &MidasFs, name: &str, content: &[u8]) -> u64 {
    let (attr, fh) = fs.create(ROOT, name, 42).expect("create");
    fs.write(fh, 0, content).expect("write");
    fs.flush(fh, Some(42)).await.expect("flush");
    fs.release_write(fh).await;
    attr.ino
}

#[tokio::test]
async fn a_write_through_the_items_own_inode_shows_in_the_inode_a_save_by_rename_left() {
    let midas = server();
    midas.add_file(midas.public_folder(), "a", b"old\n");
    let (fs, _spool) = mount(&midas);
    fs.lookup(ROOT, "a").await.expect("lookup");
    let renamed = write_new(&fs, ".a.tmp", b"saved\n").await;
    fs.rename(ROOT, ".a.tmp", ROOT, "a", false)
        .await
        .expect("save by rename");
    let own = fs.lookup(ROOT, "a").await.expect("lookup").ino;
    assert_ne!(own, renamed, "the kernel knows the file by two numbers");

    let fh = fs
        .open_write(own, true, 42)
        .await
        .expect("open by the name");
    fs.write(fh, 0, b"written by the name\n").expect("write");
    assert_eq!(fs.getattr(renamed).expect("stat").size, 20, "while open");
    fs.flush(fh, Some(42)).await.expect("flush");
    fs.release_write(fh).await;
    assert_eq!(fs.getattr(renamed).expect("stat").size, 20, "once saved");
    let open = fs.open(renamed).await.expect("open the renamed inode");
    let read = fs.read(open.fh, 0, 100).await.expect("read");
    assert_eq!(&read[..], b"written by the name\n");
}

#[tokio::test]
async fn times_set_on_files_removed_or_written_since_are_not_kept() {
    let midas = server();
    let (fs, _spool) = mount(&midas);
    let long_ago = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    for n in 0..20 {
        let name = format!("f{n}");
        let ino = write_new(&fs, &name, b"x").await;
        let attr = fs
            .setattr(ino, None, None, Some(long_ago))
            .await
            .expect("touch");
        assert_eq!(attr.mtime, long_ago);
        fs.unlink(ROOT, &name).await.expect("rm");
    }
    assert_eq!(fs.writes.mtimes().len(), 0, "removed files' times");

    let ino = write_new(&fs, "kept", b"x").await;
    fs.setattr(ino, None, None, Some(long_ago))
        .await
        .expect("touch");
    let own = fs.lookup(ROOT, "kept").await.expect("lookup");
    assert_eq!(own.mtime, long_ago, "a time set is kept");
    let fh = fs.open_write(own.ino, false, 42).await.expect("open");
    fs.write(fh, 1, b"appended").expect("append");
    fs.flush(fh, Some(42)).await.expect("flush");
    fs.release_write(fh).await;
    assert_eq!(
        fs.writes.mtimes().len(),
        0,
        "written since the time was set"
    );
    assert_ne!(fs.getattr(own.ino).expect("stat").mtime, long_ago);
}

#[tokio::test]
async fn times_set_through_the_mount_show_after_a_remount_until_the_file_gets_a_new_revision() {
    let midas = server();
    let folder = midas.public_folder();
    midas.add_file(folder, "same", b"same\n");
    let changed = midas.add_file(folder, "changed", b"before\n");
    let spool = tempfile::tempdir().expect("spool dir");
    let long_ago = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let later = long_ago + Duration::from_nanos(1_000_000_123);
    {
        let fs = Arc::new(fake_mount(&midas, spool.path()));
        for name in ["same", "changed"] {
            let ino = fs.lookup(ROOT, name).await.expect("lookup").ino;
            fs.setattr(ino, None, None, Some(long_ago))
                .await
                .expect("touch");
        }
        // As rsync saves a file: a temporary file, its time, a rename over the name.
        let temp = write_new(&fs, ".new.XXXXXX", b"new\n").await;
        fs.setattr(temp, None, None, Some(later))
            .await
            .expect("touch");
        fs.rename(ROOT, ".new.XXXXXX", ROOT, "new", false)
            .await
            .expect("rename");
        fs.shutdown().await;
    }
    midas.add_revision(changed, "changed", b"after, from another client\n");

    let fs = Arc::new(fake_mount(&midas, spool.path()));
    let mtime = |name: &'static str| {
        let fs = &fs;
        async move { fs.lookup(ROOT, name).await.expect("lookup").mtime }
    };
    assert_eq!(mtime("same").await, long_ago, "unchanged since");
    assert_eq!(mtime("new").await, later, "saved by rename");
    assert_ne!(
        mtime("changed").await,
        long_ago,
        "a new revision shows its own date"
    );
}

#[tokio::test]
async fn a_time_set_through_the_mount_goes_when_another_client_writes_the_file() {
    let midas = server();
    let item = midas.add_file(midas.public_folder(), "shared", b"first\n");
    let (fs, _spool) = mount(&midas);
    let long_ago = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let ino = fs.lookup(ROOT, "shared").await.expect("lookup").ino;
    fs.setattr(ino, None, None, Some(long_ago))
        .await
        .expect("touch");
    fs.listings.expire(ROOT);
    let listed = fs.lookup(ROOT, "shared").await.expect("lookup again");
    assert_eq!(listed.mtime, long_ago, "listed again, unchanged");

    midas.add_revision(item, "shared", b"second, from another client\n");
    fs.listings.expire(ROOT);
    let listed = fs
        .lookup(ROOT, "shared")
        .await
        .expect("lookup after the change");
    assert_eq!(listed.size, 28);
    assert_ne!(listed.mtime, long_ago, "the new revision's own date");
}
