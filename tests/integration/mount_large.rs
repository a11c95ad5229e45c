//! Large and slow paths through a real mount, on `midasfs serve` and on the real Midas Server the
//! environment names (see `common::real`): a large file copied in (sent in parts while it is
//! written), read back at offsets by a fresh mount, renamed, and overwritten as a new revision;
//! a folder of 2,000 items listed whole.
//!
//! The large file is 160 MiB (past the 64 MiB from which parts go out while `cp` writes);
//! `MIDASFS_TEST_LARGE_MIB=1024` makes it 1 GiB. The folder holds 2,000 items on serve, 300 on a
//! real Midas, where making each takes about 0.15 s (`php -S`, SQLite); `MIDASFS_TEST_MANY_ITEMS`
//! sets the number. The times are printed (`--nocapture`).

use crate::common;

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::mount::{getxattr, Mount};
use common::server::{text, TestServer};
use common::tree::pseudo_random;
use md5::{Digest, Md5};

const MIB: usize = 1024 * 1024;

/// The size of the large file: `MIDASFS_TEST_LARGE_MIB` MiB, 160 by default.
fn large_size() -> usize {
    let mib = std::env::var("MIDASFS_TEST_LARGE_MIB")
        .ok()
        .map(|v| v.parse().expect("MIDASFS_TEST_LARGE_MIB: a number of MiB"))
        .unwrap_or(160);
    mib * MIB
}

/// A local file of `len` pseudo-random bytes (8 MiB pieces of their own seeds, never all in
/// memory at once); returns its path and MD5.
fn local_large(dir: &Path, name: &str, len: usize, seed: u64) -> (PathBuf, String) {
    let path = dir.join(name);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut md5 = Md5::new();
    let mut left = len;
    let mut piece = 0;
    while left > 0 {
        let bytes = pseudo_random((8 * MIB).min(left), seed * 100_000 + piece);
        file.write_all(&bytes).unwrap();
        md5.update(&bytes);
        left -= bytes.len();
        piece += 1;
    }
    file.flush().unwrap();
    (path, format!("{:x}", md5.finalize()))
}

fn run(command: &mut Command) {
    let out = command.output().expect("run command");
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mount(server: &TestServer, spool: &Path) -> Mount {
    let spool = spool.to_str().unwrap();
    Mount::admin(server, &["--spool-dir", spool])
}

/// The head revision's one bitstream of an item: (name, size, checksum), and how many revisions.
fn head_of(server: &TestServer, item_id: &str) -> ((String, u64, String), usize) {
    let item = server.call_ok(
        "midas.item.get",
        &[("token", &server.token()), ("id", item_id)],
    );
    let revisions = item["revisions"].as_array().unwrap();
    let bitstreams = revisions.last().unwrap()["bitstreams"].as_array().unwrap();
    assert_eq!(bitstreams.len(), 1, "{item}");
    let b = &bitstreams[0];
    (
        (
            text(&item["name"]).to_owned(),
            text(&b["sizebytes"]).parse().unwrap(),
            text(&b["checksum"]).to_owned(),
        ),
        revisions.len(),
    )
}

fn mib_per_s(bytes: usize, started: Instant) -> String {
    format!(
        "{:.0} MiB/s",
        bytes as f64 / MIB as f64 / started.elapsed().as_secs_f64()
    )
}

#[test]
fn a_large_file_is_copied_in_read_at_offsets_renamed_and_overwritten_as_a_revision() {
    require_fuse!();
    let server = TestServer::any();
    let len = large_size();
    let local = tempfile::tempdir().unwrap();
    let (first, first_md5) = local_large(local.path(), "first.bin", len, 1);
    let spool = tempfile::tempdir().unwrap();

    // Copied in: sent in parts while cp writes, then checked by the server's MD5.
    let writer = mount(&server, spool.path());
    let target = server.private_in(&writer.path).join("large.bin");
    let started = Instant::now();
    run(Command::new("cp").arg(&first).arg(&target));
    eprintln!("cp of {} MiB: {}", len / MIB, mib_per_s(len, started));
    let item_id = getxattr(&target, "user.midas.item_id").expect("an item id");
    let ((name, size, md5), revisions) = head_of(&server, &item_id);
    assert_eq!(
        (name.as_str(), size, revisions),
        ("large.bin", len as u64, 1)
    );
    assert_eq!(md5, first_md5, "the server's MD5 of the copy");
    drop(writer);

    // Read back by a fresh mount (nothing in its cache or the page cache), at offsets.
    let reader = mount(&server, spool.path());
    let path = server.private_in(&reader.path).join("large.bin");
    let file = std::fs::File::open(&path).unwrap();
    let original = std::fs::File::open(&first).unwrap();
    assert_eq!(file.metadata().unwrap().len(), len as u64);
    let mut offset = 7_777u64;
    let started = Instant::now();
    for i in 0..64u64 {
        let mut got = vec![0u8; 4096 + (i as usize % 4) * 300_000];
        let mut expected = got.clone();
        let n = file.read_at(&mut got, offset).unwrap();
        let m = original.read_at(&mut expected, offset).unwrap();
        assert_eq!(n, m, "read length at {offset}");
        assert!(got[..n] == expected[..m], "bytes at {offset}");
        offset = offset
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407)
            % len as u64;
    }
    let mut tail = [0u8; 100];
    assert_eq!(file.read_at(&mut tail, len as u64 - 10).unwrap(), 10);
    eprintln!("64 reads at offsets: {:?}", started.elapsed());
    drop(file);

    // Renamed: the same item under its new name.
    let renamed = server.private_in(&reader.path).join("renamed.bin");
    run(Command::new("mv").arg(&path).arg(&renamed));
    assert_eq!(
        getxattr(&renamed, "user.midas.item_id").as_deref(),
        Some(item_id.as_str())
    );
    assert_eq!(head_of(&server, &item_id).0 .0, "renamed.bin");

    // Overwritten: a new revision of the same item, with the new content.
    let (second, second_md5) = local_large(local.path(), "second.bin", len, 2);
    let started = Instant::now();
    run(Command::new("cp").arg(&second).arg(&renamed));
    eprintln!(
        "overwrite of {} MiB: {}",
        len / MIB,
        mib_per_s(len, started)
    );
    let ((name, size, md5), revisions) = head_of(&server, &item_id);
    assert_eq!(
        (name.as_str(), size, revisions),
        ("renamed.bin", len as u64, 2)
    );
    assert_eq!(md5, second_md5, "the server's MD5 of the new revision");
    assert!(
        std::fs::read_dir(spool.path().join("recovery")).is_err(),
        "something went to the recovery directory"
    );
}

/// How many items the folder holds: `MIDASFS_TEST_MANY_ITEMS`, or 2,000 on serve and 300 on a
/// real server.
fn many_items(server: &TestServer) -> usize {
    match std::env::var("MIDASFS_TEST_MANY_ITEMS") {
        Ok(n) => n.parse().expect("MIDASFS_TEST_MANY_ITEMS: a number"),
        Err(_) if server.is_real() => 300,
        Err(_) => 2000,
    }
}

#[test]
fn a_folder_of_2000_items_is_listed_whole() {
    require_fuse!();
    let server = TestServer::any();
    let count = many_items(&server);
    let token = server.token();
    let private = server.folder_at(&token, &server.email, server.private());
    let many = server.create_folder(&token, &private, "many");
    let many = text(&many["folder_id"]).to_owned();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for worker in 0..4 {
            let (server, token, many) = (&server, &token, &many);
            scope.spawn(move || {
                for i in (worker..count).step_by(4) {
                    server.create_item(token, many, &format!("item-{i:04}"));
                }
            });
        }
    });
    eprintln!("{count} item.create: {:?}", started.elapsed());

    let spool = tempfile::tempdir().unwrap();
    let mount = mount(&server, spool.path());
    let started = Instant::now();
    let mut names: Vec<String> = std::fs::read_dir(server.private_in(&mount.path).join("many"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            e.metadata().unwrap();
            e.file_name().to_string_lossy().into_owned()
        })
        .collect();
    eprintln!("ls -l of {count} items, cold: {:?}", started.elapsed());
    names.sort();
    let expected: Vec<String> = (0..count).map(|i| format!("item-{i:04}")).collect();
    assert_eq!(names, expected);
}
