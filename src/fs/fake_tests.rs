//! The filesystem on the in-memory Midas ([`crate::midas::fake`]), without FUSE: the seam
//! works both ways (what the server holds is listed, what is written reaches the server).

use std::sync::Arc;
use std::time::Duration;

use super::inode::{FileKind, ROOT};
use super::spool::SpoolConfig;
use super::{FsConfig, MidasFs, MountRoot};
use crate::midas::fake::{FakeMidas, Fault};

/// A mount of the user's Public folder, and the directory its spool lives in.
fn mount(midas: &Arc<FakeMidas>) -> (MidasFs, tempfile::TempDir) {
    let spool = tempfile::tempdir().expect("spool dir");
    let config = FsConfig {
        ttl: Duration::from_secs(60),
        items_as_dirs: false,
        read_only: false,
        cache_bytes: 16 << 20,
        stall_timeout: Duration::from_millis(300),
        root: MountRoot::Folder {
            id: midas.public_folder(),
            writable: true,
        },
        spool: SpoolConfig {
            dir: spool.path().to_owned(),
            max_bytes: 1 << 30,
        },
    };
    let api: crate::midas::Api = Arc::clone(midas) as _;
    (MidasFs::new(api, midas.me(), config), spool)
}

#[tokio::test]
async fn a_file_on_the_server_is_listed_and_read() {
    let midas = Arc::new(FakeMidas::new(Duration::from_millis(300)));
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
    let midas = Arc::new(FakeMidas::new(Duration::from_millis(300)));
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
    let midas = Arc::new(FakeMidas::new(Duration::from_millis(300)));
    let (fs, _spool) = mount(&midas);
    let (_, fh) = fs.create(ROOT, "lost.txt", 42).expect("create");
    fs.write(fh, 0, b"keep me").expect("write");
    midas.fail_always("midas.upload.*", Fault::Http(503));
    let err = fs.flush(fh, Some(42)).await.expect_err("the upload fails");
    assert_eq!(err.errno, libc::EIO);
    fs.release_write(fh).await;
    let kept: Vec<_> = std::fs::read_dir(fs.status().recovery_dir)
        .expect("recovery dir")
        .filter_map(|e| e.ok())
        .filter(|e| std::fs::read(e.path()).is_ok_and(|c| c == b"keep me"))
        .collect();
    assert_eq!(kept.len(), 1, "the data is in the recovery directory");
}
