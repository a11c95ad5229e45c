//! What reads cost on the wire, and the persistent data cache (`--cache-dir`), through real
//! mounts of a real `midasfs serve`, counted by the server's download statistics.

use crate::common;

use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::mount::Mount;
use common::server::{md5_hex, TestServer};
use common::tree::pseudo_random;

const MIB: usize = 1024 * 1024;

struct Setup {
    server: TestServer,
    token: String,
    private: String,
    cache: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let server = TestServer::start();
        let token = server.token();
        let private = server.folder_named(Some(&token), &server.email, "Private");
        Setup {
            server,
            token,
            private,
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn upload(&self, name: &str, content: &[u8]) {
        self.server
            .upload_item(&self.token, &self.private, name, content);
    }

    fn mount(&self, extra: &[&str]) -> Mount {
        Mount::admin(&self.server, extra)
    }

    /// A mount with the data cache in this setup's directory.
    fn cached_mount(&self, extra: &[&str]) -> Mount {
        let dir = self.cache_dir();
        let mut args = vec!["--cache-dir", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.mount(&args)
    }

    fn cache_dir(&self) -> PathBuf {
        self.cache.path().join("cache")
    }

    /// Bytes the server handed to its sockets: its count includes what sat in a socket's send
    /// buffer when the mount dropped the connection.
    fn downloaded(&self) -> u64 {
        self.server.stats()["bytes_downloaded"].as_u64().unwrap()
    }

    /// The cache's entry for this content, once its fill has finished (it is checked and
    /// renamed into place in the background after the last block arrived).
    fn wait_for_entry(&self, content: &[u8]) -> PathBuf {
        let md5 = md5_hex(content);
        let path = self.cache_dir().join("data").join(&md5[..2]).join(&md5);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !path.exists() {
            assert!(
                Instant::now() < deadline,
                "no cache entry {} after 30 s",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        path
    }

    /// Bytes of every entry in the cache.
    fn entries(&self) -> Vec<(PathBuf, u64)> {
        let mut found = Vec::new();
        for shard in std::fs::read_dir(self.cache_dir().join("data")).unwrap() {
            for file in std::fs::read_dir(shard.unwrap().path()).unwrap() {
                let file = file.unwrap();
                found.push((file.path(), file.metadata().unwrap().len()));
            }
        }
        found
    }
}

/// Bytes of file content that reached the mount over the wire (read, or waiting in a socket's
/// receive buffer when a download was dropped).
fn wire_bytes(mount: &Mount) -> u64 {
    mount.status()["requests"]["download_bytes"]
        .as_u64()
        .unwrap()
}

fn private(mount: &Mount) -> PathBuf {
    mount.path.join("users/Admin_User/Private")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn sniffing_the_first_4_kib_of_many_files_downloads_about_what_was_read() {
    require_fuse!();
    let setup = Setup::new();
    for i in 0..8 {
        setup.upload(&format!("f{i}.dat"), &pseudo_random(5 * MIB, i));
    }
    let mount = setup.mount(&[]);
    let before = wire_bytes(&mount);
    for i in 0..8 {
        let path = private(&mount).join(format!("f{i}.dat"));
        let mut head = [0u8; 4096];
        std::fs::File::open(&path)
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
        assert_eq!(&head[..], &pseudo_random(4096, i)[..], "{}", path.display());
    }
    // Content only reaches the status once its stream is dropped.
    let deadline = Instant::now() + Duration::from_secs(10);
    while wire_bytes(&mount) - before < 8 * 4096 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let downloaded = wire_bytes(&mount) - before;
    // The kernel's own readahead turns a 4 KiB read into 16 KiB; the receive buffer lets a
    // little more arrive before the connection is dropped. Before, each sniff started a 1 MiB
    // block and 4 MiB of read-ahead.
    let read = 8 * 4096;
    assert!(
        downloaded <= 16 * read,
        "{downloaded} bytes downloaded for {read} bytes read"
    );
}

#[test]
fn a_program_sniffing_a_folder_finds_the_files_read_ahead_and_downloads_under_twice_what_it_reads()
{
    require_fuse!();
    let setup = Setup::new();
    let files = 20u64;
    for i in 0..files {
        setup.upload(&format!("s{i}.dat"), &pseudo_random(MIB, 100 + i));
    }
    setup.upload("other.bin", &pseudo_random(MIB, 99));
    let mount = setup.mount(&[]);
    // A file manager lists the folder, then reads the first 4 KiB of each file in turn.
    let mut names: Vec<String> = std::fs::read_dir(private(&mount))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".dat"))
        .collect();
    names.sort_by_key(|name| name[1..name.len() - 4].parse::<u64>().unwrap());
    let before = wire_bytes(&mount);
    for name in &names {
        let seed = 100 + name[1..name.len() - 4].parse::<u64>().unwrap();
        let mut head = [0u8; 4096];
        std::fs::File::open(private(&mount).join(name))
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
        assert_eq!(&head[..], &pseudo_random(4096, seed)[..], "{name}");
    }
    let read = files * 4096;
    let deadline = Instant::now() + Duration::from_secs(10);
    while wire_bytes(&mount) - before < read && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each file's first read alone is a 16 KiB READ (the kernel's readahead) and a receive
    // buffer more: about 6x what was read. After two files, the others' first page is fetched
    // ahead into the page cache, with the smallest receive buffer.
    let downloaded = wire_bytes(&mount) - before;
    assert!(
        downloaded <= 2 * read,
        "{downloaded} bytes downloaded for {read} bytes read"
    );
    // The page stored ahead and the READs after it make the whole file.
    let whole = std::fs::read(private(&mount).join("s17.dat")).unwrap();
    assert!(whole == pseudo_random(MIB, 117), "s17.dat read whole");
    let other = std::fs::read(private(&mount).join("other.bin")).unwrap();
    assert!(other == pseudo_random(MIB, 99), "other.bin read whole");
}

#[test]
fn random_reads_from_several_threads_fetch_only_what_they_read() {
    require_fuse!();
    let setup = Setup::new();
    let content = pseudo_random(64 * MIB, 3);
    setup.upload("r.bin", &content);
    let mount = setup.mount(&[]);
    let file = std::sync::Arc::new(std::fs::File::open(private(&mount).join("r.bin")).unwrap());
    let before = wire_bytes(&mount);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let file = std::sync::Arc::clone(&file);
            let content = content.clone();
            std::thread::spawn(move || {
                for k in 0..4u64 {
                    // Scattered over the file's 16,384 pages (a multiplicative hash). Fewer
                    // reads than the file has blocks: whole blocks are not worth fetching yet.
                    let page = (t * 4 + k + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 50;
                    let offset = page * 4096;
                    let mut buf = [0u8; 4096];
                    file.read_exact_at(&mut buf, offset).unwrap();
                    let at = offset as usize;
                    assert_eq!(&buf[..], &content[at..at + 4096], "at {offset}");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let downloaded = wire_bytes(&mount) - before;
    assert!(
        downloaded < 32 * 64 * 1024,
        "32 random 4 KiB reads downloaded {downloaded} bytes"
    );
}

#[test]
fn paths_through_home_do_not_ask_for_the_user_list_after_every_ttl() {
    require_fuse!();
    let setup = Setup::new();
    let mount = setup.mount(&["--ttl", "1"]);
    let user_lists = || {
        setup.server.stats()["methods"]["midas.user.list"]
            .as_u64()
            .unwrap_or(0)
    };
    let home = mount.path.join("home/Private");
    assert!(home.is_dir());
    let first = user_lists();
    // Past the TTL (semantics, not a wait for something to finish): the listings are fetched
    // again, the list of users is not.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(home.is_dir());
    assert!(mount.path.join("users/Admin_User/Public").is_dir());
    assert_eq!(user_lists(), first, "midas.user.list asked again");
}

#[test]
fn a_file_read_once_is_read_from_the_cache_dir_after_a_remount_without_downloading() {
    require_fuse!();
    let setup = Setup::new();
    let content = pseudo_random(3 * MIB + 123, 7);
    setup.upload("data.bin", &content);

    let mount = setup.cached_mount(&[]);
    assert_eq!(
        std::fs::read(private(&mount).join("data.bin")).unwrap(),
        content
    );
    let entry = setup.wait_for_entry(&content);
    drop(mount);
    assert_eq!(mode(&setup.cache_dir()), 0o700);
    assert_eq!(mode(entry.parent().unwrap()), 0o700);
    assert_eq!(mode(&entry), 0o600);

    let mount = setup.cached_mount(&[]);
    let before = setup.downloaded();
    assert_eq!(
        std::fs::read(private(&mount).join("data.bin")).unwrap(),
        content
    );
    assert_eq!(
        setup.downloaded() - before,
        0,
        "bytes downloaded on re-read"
    );

    let answer = mount.status();
    assert_eq!(answer["disk_cache"]["files"], 1, "{answer}");
    assert!(
        answer["disk_cache"]["hits"].as_u64().unwrap() >= 1,
        "{answer}"
    );
}

#[test]
fn another_item_with_the_same_content_is_read_from_the_cache_dir() {
    require_fuse!();
    let setup = Setup::new();
    let content = pseudo_random(2 * MIB, 11);
    setup.upload("first.bin", &content);
    setup.upload("second copy.bin", &content);
    let mount = setup.cached_mount(&[]);
    assert_eq!(
        std::fs::read(private(&mount).join("first.bin")).unwrap(),
        content
    );
    setup.wait_for_entry(&content);

    let before = setup.downloaded();
    assert_eq!(
        std::fs::read(private(&mount).join("second copy.bin")).unwrap(),
        content
    );
    assert_eq!(setup.downloaded() - before, 0);
}

#[test]
fn a_damaged_cache_entry_read_through_the_mount_is_dropped_and_the_file_comes_from_the_server() {
    require_fuse!();
    let setup = Setup::new();
    let content = pseudo_random(3 * MIB, 5);
    setup.upload("d.bin", &content);
    // Read through the mount, every block is checked: a damaged middle block is found.
    let mount = setup.cached_mount(&["--no-passthrough"]);
    assert_eq!(
        std::fs::read(private(&mount).join("d.bin")).unwrap(),
        content
    );
    let entry = setup.wait_for_entry(&content);
    drop(mount);

    let damaged = std::fs::OpenOptions::new()
        .write(true)
        .open(&entry)
        .unwrap();
    damaged
        .write_all_at(&[!content[MIB + 10]], (MIB + 10) as u64)
        .unwrap();
    drop(damaged);

    let mount = setup.cached_mount(&["--no-passthrough"]);
    let before = setup.downloaded();
    let read = std::fs::read(private(&mount).join("d.bin")).unwrap();
    assert!(read == content, "the damaged byte was served");
    assert!(setup.downloaded() > before, "nothing came from the server");
    let answer = mount.status();
    assert_eq!(answer["disk_cache"]["passthrough_opens"], 0, "{answer}");
    assert!(answer["reads"].as_u64().unwrap() > 0, "{answer}");
    // The damaged entry is gone (a new, sound one may have taken its place).
    if let Ok(now) = std::fs::read(&entry) {
        assert_eq!(now[MIB + 10], content[MIB + 10]);
    }
}

/// Whether the kernel can read cache entries itself here (passthrough needs root).
fn passthrough_possible() -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIPPED: FUSE passthrough needs root");
    }
    root
}

#[test]
fn a_file_whole_in_the_cache_dir_is_read_by_the_kernel_itself_after_a_remount() {
    require_fuse!();
    if !passthrough_possible() {
        return;
    }
    let setup = Setup::new();
    let content = pseudo_random(5 * MIB + 77, 31);
    setup.upload("pass.bin", &content);
    setup.upload("same content.bin", &content);
    let mount = setup.cached_mount(&[]);
    assert_eq!(
        std::fs::read(private(&mount).join("pass.bin")).unwrap(),
        content
    );
    let entry = setup.wait_for_entry(&content);
    // The entry is exactly the content: the kernel reads it up to its end.
    assert_eq!(
        std::fs::metadata(&entry).unwrap().len(),
        content.len() as u64
    );
    drop(mount);

    let mount = setup.cached_mount(&[]);
    let before = setup.downloaded();
    let path = private(&mount).join("pass.bin");
    // Two opens of one file at once share the entry; a second item of the same content too.
    let first = std::fs::File::open(&path).unwrap();
    let mut second = std::fs::File::open(&path).unwrap();
    let mut tail = vec![0u8; 1000];
    first
        .read_exact_at(&mut tail, content.len() as u64 - 1000)
        .unwrap();
    assert_eq!(&tail[..], &content[content.len() - 1000..]);
    let mut whole = Vec::new();
    second.read_to_end(&mut whole).unwrap();
    assert!(whole == content, "the second open read other bytes");
    drop((first, second));
    assert_eq!(
        std::fs::read(private(&mount).join("same content.bin")).unwrap(),
        content
    );

    let answer = mount.status();
    assert_eq!(answer["reads"], 0, "READs reached the mount: {answer}");
    assert_eq!(answer["disk_cache"]["passthrough_opens"], 3, "{answer}");
    assert_eq!(
        setup.downloaded() - before,
        0,
        "bytes downloaded on re-read"
    );
}

#[test]
fn a_truncated_or_damaged_entry_is_not_handed_to_the_kernel() {
    require_fuse!();
    if !passthrough_possible() {
        return;
    }
    let setup = Setup::new();
    let cut = pseudo_random(3 * MIB + 5, 41);
    let damaged = pseudo_random(3 * MIB + 5, 42);
    let last = pseudo_random(3 * MIB + 5, 43);
    setup.upload("cut.bin", &cut);
    setup.upload("damaged.bin", &damaged);
    setup.upload("last.bin", &last);
    let mount = setup.cached_mount(&[]);
    for name in ["cut.bin", "damaged.bin", "last.bin"] {
        std::fs::read(private(&mount).join(name)).unwrap();
    }
    let entries = [&cut, &damaged, &last].map(|c| setup.wait_for_entry(c));
    drop(mount);

    let file = |path: &Path| std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file(&entries[0]).set_len(cut.len() as u64 - 1).unwrap();
    file(&entries[1]).write_all_at(&[!damaged[10]], 10).unwrap();
    let at = last.len() - 3;
    file(&entries[2])
        .write_all_at(&[!last[at]], at as u64)
        .unwrap();

    let mount = setup.cached_mount(&[]);
    let before = setup.downloaded();
    for (name, content) in [
        ("cut.bin", &cut),
        ("damaged.bin", &damaged),
        ("last.bin", &last),
    ] {
        let read = std::fs::read(private(&mount).join(name)).unwrap();
        assert!(&read == content, "{name}: the entry's bytes were served");
    }
    assert!(setup.downloaded() > before, "nothing came from the server");
    let answer = mount.status();
    assert_eq!(answer["disk_cache"]["passthrough_opens"], 0, "{answer}");
    assert_eq!(answer["disk_cache"]["dropped"], 3, "{answer}");
}

#[test]
fn a_file_the_kernel_reads_from_the_cache_dir_is_written_once_closed() {
    require_fuse!();
    if !passthrough_possible() {
        return;
    }
    let setup = Setup::new();
    let content = pseudo_random(2 * MIB, 51);
    setup.upload("w.bin", &content);
    let mount = setup.cached_mount(&[]);
    std::fs::read(private(&mount).join("w.bin")).unwrap();
    setup.wait_for_entry(&content);
    drop(mount);

    let mount = setup.cached_mount(&[]);
    let path = private(&mount).join("w.bin");
    let reader = std::fs::File::open(&path).unwrap();
    let err = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect_err("opened for writing while the kernel reads the entry");
    assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "{err}");
    let mut head = [0u8; 16];
    reader.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(&head[..], &content[..16]);
    drop(reader);
    // Right after the close (the kernel's release comes after it), as a script does.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"more")
        .unwrap();
    let mut longer = content.clone();
    longer.extend_from_slice(b"more");
    assert!(
        std::fs::read(&path).unwrap() == longer,
        "the append was lost"
    );
}

#[test]
fn the_cache_dir_stays_within_its_size_dropping_the_least_recently_used() {
    require_fuse!();
    let setup = Setup::new();
    let files: Vec<Vec<u8>> = (0..3).map(|i| pseudo_random(2 * MIB, 20 + i)).collect();
    for (i, content) in files.iter().enumerate() {
        setup.upload(&format!("e{i}.bin"), content);
    }
    let mount = setup.cached_mount(&["--cache-size-disk", "5M"]);
    for (i, content) in files.iter().enumerate() {
        assert_eq!(
            &std::fs::read(private(&mount).join(format!("e{i}.bin"))).unwrap(),
            content
        );
        setup.wait_for_entry(content);
    }
    let entries = setup.entries();
    let total: u64 = entries.iter().map(|e| e.1).sum();
    assert!(total <= 5 * MIB as u64, "{total} bytes in {entries:?}");
    let md5 = |c: &[u8]| md5_hex(c);
    let names: Vec<String> = entries
        .iter()
        .map(|e| e.0.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.contains(&md5(&files[0])),
        "the oldest stayed: {names:?}"
    );
    assert!(
        names.contains(&md5(&files[2])),
        "the newest went: {names:?}"
    );
}

#[test]
fn two_mounts_share_one_cache_dir() {
    require_fuse!();
    let setup = Setup::new();
    let content = pseudo_random(4 * MIB, 9);
    setup.upload("shared.bin", &content);
    let first = setup.cached_mount(&[]);
    let second = setup.cached_mount(&[]);
    // Both read at once: both may fill the entry, one rename wins, both are whole.
    let path = private(&first).join("shared.bin");
    let reader = std::thread::spawn(move || std::fs::read(path).unwrap());
    assert_eq!(
        std::fs::read(private(&second).join("shared.bin")).unwrap(),
        content
    );
    assert_eq!(reader.join().unwrap(), content);
    setup.wait_for_entry(&content);
    drop(first);

    let third = setup.cached_mount(&[]);
    let before = setup.downloaded();
    assert_eq!(
        std::fs::read(private(&third).join("shared.bin")).unwrap(),
        content
    );
    assert_eq!(setup.downloaded() - before, 0);
    drop(second);
    drop(third);
    assert!(
        std::fs::read_dir(setup.cache_dir().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "a temporary file was left"
    );
}
