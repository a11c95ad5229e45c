//! Browsing and reading through a real mount of a real `midasfs serve`, or of the real Midas
//! Server the environment names (see `common::real`), with data put there by pydas, the official
//! client.

use crate::common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::mount::{getxattr, listxattr, Mount, MountOptions};
use common::server::TestServer;
use common::tree::{diff_r, make_tree};

fn upload(server: &TestServer, local: &Path, destination: &str, leaf_items: bool) {
    let mut args = vec![local.to_str().unwrap(), destination];
    if leaf_items {
        args.push("--leaf");
    }
    let out = server.pydas("mount_upload.py", &args);
    assert!(
        out.status.success(),
        "pydas upload failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test tree (see `make_tree`), made in a new local directory and uploaded by pydas into
/// the test's folder in the admin's Private folder. The local copy is at `<dir>/tree`.
fn upload_tree(server: &TestServer) -> tempfile::TempDir {
    let local = tempfile::tempdir().unwrap();
    make_tree(local.path());
    upload(
        server,
        &local.path().join("tree"),
        &server.private_path(),
        false,
    );
    local
}

/// The test's own folder in the admin's Private folder, in a mount of the whole server.
fn private(server: &TestServer, mount: &Mount) -> PathBuf {
    server.private_in(&mount.path)
}

/// `diff -r` of the tree [`upload_tree`] uploaded from `local` and the mount's copy of it.
fn diff_uploaded_tree(local: &tempfile::TempDir, server: &TestServer, mount: &Mount) {
    diff_r(
        &local.path().join("tree"),
        &private(server, mount).join("tree"),
    );
}

#[test]
fn mounted_tree_equals_the_tree_pydas_uploaded() {
    require_fuse!();
    let server = TestServer::any();
    let local = upload_tree(&server);
    let multi = tempfile::tempdir().unwrap();
    std::fs::create_dir(multi.path().join("multi")).unwrap();
    std::fs::write(multi.path().join("multi/a.txt"), b"first\n").unwrap();
    std::fs::write(multi.path().join("multi/b.txt"), b"second\n").unwrap();
    upload(
        &server,
        &multi.path().join("multi"),
        &server.private_path(),
        true,
    );

    let mount = Mount::admin(&server, &["--cache-size", "1"]);
    diff_uploaded_tree(&local, &server, &mount);
    // A leaf folder uploaded as one item of two bitstreams is a directory of two files.
    assert!(private(&server, &mount).join("multi").is_dir());
    diff_r(
        &multi.path().join("multi"),
        &private(&server, &mount).join("multi"),
    );
    // home points at the logged-in user's folder.
    let home = std::fs::read_link(mount.path.join("home")).unwrap();
    assert_eq!(home, Path::new("users").join(server.home()));
    let via_home = mount.path.join("home").join(server.private());
    assert!(via_home.join("tree/hello.txt").is_file());
    let status = mount.unmount();
    assert!(
        status.success(),
        "daemon exit status after unmount: {status}"
    );
}

#[test]
fn random_reads_match_and_attributes_come_from_the_server() {
    require_fuse!();
    let server = TestServer::any();
    let local = upload_tree(&server);
    let mount = Mount::admin(&server, &["--cache-size", "1", "--ttl", "1"]);

    let expected = std::fs::read(local.path().join("tree/big.bin")).unwrap();
    let file = std::fs::File::open(private(&server, &mount).join("tree/big.bin")).unwrap();
    assert_eq!(file.metadata().unwrap().len(), expected.len() as u64);
    let mut offset = 12_345u64;
    for i in 0..200u64 {
        offset = offset
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407 + i)
            % expected.len() as u64;
        let mut buf = vec![0u8; 4096 + (i as usize % 3) * 70_000];
        let n = file.read_at(&mut buf, offset).unwrap();
        let end = (offset as usize + buf.len()).min(expected.len());
        assert_eq!(n, end - offset as usize, "short read at {offset}");
        assert_eq!(
            &buf[..n],
            &expected[offset as usize..end],
            "bytes at {offset}"
        );
    }
    // Reading past the end gives nothing.
    let mut buf = [0u8; 10];
    assert_eq!(
        file.read_at(&mut buf, expected.len() as u64 + 5).unwrap(),
        0
    );

    // xattrs match what the server says about the item.
    let path = private(&server, &mount).join("tree/hello.txt");
    let id: String = getxattr(&path, "user.midas.id").expect("user.midas.id");
    let item = server.call("midas.item.get", &[("token", &server.token()), ("id", &id)]);
    let bitstream = &item["data"]["revisions"][0]["bitstreams"][0];
    assert_eq!(getxattr(&path, "user.midas.type").as_deref(), Some("item"));
    assert_eq!(
        getxattr(&path, "user.midas.md5"),
        bitstream["checksum"].as_str().map(String::from)
    );
    assert_eq!(
        getxattr(&path, "user.midas.uuid"),
        item["data"]["uuid"].as_str().map(String::from)
    );
    assert_eq!(getxattr(&path, "user.midas.revision").as_deref(), Some("1"));
    assert_eq!(
        getxattr(&path, "user.midas.url"),
        Some(format!("{}/item/{id}", server.url))
    );
    let set = server.call(
        "midas.item.setmetadata",
        &[
            ("token", &server.token()),
            ("itemId", &id),
            ("element", "contributor"),
            ("qualifier", "author"),
            ("value", "Ada Lovelace"),
        ],
    );
    assert_eq!(set["stat"], "ok", "{set}");
    // Metadata is cached for the TTL (1 s here): wait it out, then it shows.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        getxattr(&path, "user.midas.meta.contributor.author").as_deref(),
        Some("Ada Lovelace")
    );
    assert!(listxattr(&path).contains(&"user.midas.meta.contributor.author".to_owned()));
    assert_eq!(getxattr(&path, "user.midas.meta.nothing"), None);
    // Sizes and times: mtime is the server's date, not the mount time.
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 20);
    assert!(meta.modified().unwrap() <= std::time::SystemTime::now());
    drop(mount);
}

#[test]
fn others_private_data_is_invisible_and_anonymous_sees_only_public() {
    require_fuse!();
    let server = TestServer::any();
    let jane_key = server.add_user("jane@example.com", "janepassword1", "Jane", "Doe");
    let local = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(local.path().join("secret")).unwrap();
    std::fs::write(local.path().join("secret/plans.txt"), b"private\n").unwrap();
    std::fs::create_dir_all(local.path().join("shared")).unwrap();
    std::fs::write(local.path().join("shared/notes.txt"), b"public\n").unwrap();
    upload(
        &server,
        &local.path().join("secret"),
        &server.private_path(),
        false,
    );
    let public = server.fresh(&server.email, &server.api_key, "Public");
    let public_path = format!("/users/{}/{public}", server.home());
    upload(&server, &local.path().join("shared"), &public_path, false);

    let jane = Mount::start(
        &server.url,
        MountOptions {
            email: Some("jane@example.com"),
            api_key: Some(&jane_key),
            extra: &[],
        },
    );
    let admin_home = jane.path.join("users").join(server.home());
    assert!(admin_home.join(&public).join("shared/notes.txt").is_file());
    assert!(
        !admin_home.join("Private").exists(),
        "Jane sees the admin's Private folder"
    );
    let secret = format!("{}/secret/plans.txt", server.private());
    assert!(!admin_home.join(secret).exists());
    let anonymous = Mount::start(
        &server.url,
        MountOptions {
            email: None,
            api_key: None,
            extra: &[],
        },
    );
    let admin_home = anonymous.path.join("users").join(server.home());
    assert_eq!(
        std::fs::read(admin_home.join(&public).join("shared/notes.txt")).unwrap(),
        b"public\n"
    );
    assert!(!admin_home.join("Private").exists());
    assert!(
        !anonymous.path.join("home").exists(),
        "an anonymous mount has no home"
    );
    let names: Vec<_> = std::fs::read_dir(&admin_home)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["Public"]);
    // Read-only to everyone who may not write: Jane cannot write into the admin's folders.
    let shared = jane.path.join("users").join(server.home()).join(&public);
    let mode = std::fs::metadata(shared.join("shared")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o222,
        0
    );
}

#[test]
fn bad_credentials_and_bad_urls_fail_before_mounting() {
    require_fuse!();
    let server = TestServer::any();
    let mountpoint = common::mount::unique_mountpoint();
    let run = |url: &str, key: &str| {
        Command::new(env!("CARGO_BIN_EXE_midasfs"))
            .args(["mount", url])
            .arg(&mountpoint)
            .args([
                "--email",
                "admin@example.com",
                "--timeout",
                "5",
                "--connect-timeout",
                "2",
            ])
            .env("MIDAS_API_KEY", key)
            .output()
            .expect("run midasfs mount")
    };
    let cases = [
        (server.url.clone(), "wrongwrongwrongwrongwrongwrong00"),
        ("http://127.0.0.1:9".to_owned(), server.api_key.as_str()),
        (format!("{}/not-midas", server.url), server.api_key.as_str()),
        ("ftp://example".to_owned(), server.api_key.as_str()),
    ];
    for (url, key) in cases {
        let started = Instant::now();
        let out = run(&url, key);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "mount of {url} with {key} succeeded");
        assert!(
            stderr.starts_with("midasfs: "),
            "unclear error for {url}: {stderr}"
        );
        assert!(
            !stderr.contains(key) || key == server.api_key,
            "key leaked: {stderr}"
        );
        assert!(
            !common::mount::is_fuse_mount(&mountpoint),
            "mount left behind"
        );
        assert!(started.elapsed() < Duration::from_secs(60));
    }
    let busy = mountpoint.join("file");
    std::fs::write(&busy, b"x").unwrap();
    let out = run(&server.url, &server.api_key);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    std::fs::remove_file(busy).unwrap();
    std::fs::remove_dir(&mountpoint).unwrap();
}

#[test]
fn background_mount_returns_when_ready_and_unmounts_on_sigterm() {
    require_fuse!();
    let server = TestServer::any();
    let mountpoint = common::mount::unique_mountpoint();
    let log = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_midasfs"))
        .arg("mount")
        .arg(&server.url)
        .arg(&mountpoint)
        .args(["--email", &server.email, "--log-file"])
        .arg(log.path())
        .env("MIDAS_API_KEY", &server.api_key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Ready means ready: no polling needed.
    assert!(common::mount::is_fuse_mount(&mountpoint));
    assert!(mountpoint
        .join("users")
        .join(server.home())
        .join("Public")
        .is_dir());
    let pid = daemon_pid(&mountpoint);
    // SAFETY: sending a signal to the daemon we started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::mount::is_fuse_mount(&mountpoint) {
        assert!(
            Instant::now() < deadline,
            "still mounted 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::remove_dir(&mountpoint).unwrap();
    let logged = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        !logged.contains(&server.api_key),
        "the API key is in the log"
    );
}

/// The pid of the `midasfs mount` daemon serving `mountpoint`, from /proc.
fn daemon_pid(mountpoint: &Path) -> i32 {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<_> = cmdline
            .split(|b| *b == 0)
            .map(String::from_utf8_lossy)
            .collect();
        if args.iter().any(|a| a == "mount")
            && args.iter().any(|a| a == "--foreground")
            && args.iter().any(|a| Path::new(a.as_ref()) == mountpoint)
        {
            return pid;
        }
    }
    panic!("no daemon for {}", mountpoint.display());
}

#[test]
fn token_expiry_mid_walk_is_invisible() {
    require_fuse!();
    let server = TestServer::any_expiring();
    let local = upload_tree(&server);
    let mount = Mount::admin(&server, &["--ttl", "1"]);
    diff_uploaded_tree(&local, &server, &mount);
    server.expire_tokens();
    std::thread::sleep(Duration::from_millis(1100));
    diff_uploaded_tree(&local, &server, &mount);
}

#[test]
fn a_dead_server_gives_an_error_within_the_timeout_and_recovery_after_restart() {
    require_fuse!();
    let mut server = TestServer::any();
    let local = upload_tree(&server);
    let mount = Mount::admin(
        &server,
        &["--ttl", "1", "--timeout", "3", "--connect-timeout", "2"],
    );
    let hello = private(&server, &mount).join("tree/hello.txt");
    assert_eq!(std::fs::read(&hello).unwrap(), b"Hello from midasfs!\n");
    server.stop();
    std::thread::sleep(Duration::from_millis(1100));
    let started = Instant::now();
    let err = std::fs::read_dir(private(&server, &mount).join("tree/nested")).map(|d| d.count());
    assert!(err.is_err(), "listing a folder of a dead server succeeded");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the error took {:?}",
        started.elapsed()
    );
    server.restart();
    diff_uploaded_tree(&local, &server, &mount);
}

#[test]
fn a_second_walk_within_the_ttl_sends_no_requests() {
    require_fuse!();
    let server = TestServer::start(); // serve only: its request counters
    upload_tree(&server);
    let mount = Mount::admin(&server, &["--ttl", "60"]);
    let walk = || {
        let out = Command::new("find")
            .arg(&mount.path)
            .arg("-ls")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let first = walk();
    assert!(first > 10, "the walk saw only {first} entries");
    let requests = || server.stats()["requests"].as_u64().unwrap();
    let before = requests();
    assert_eq!(walk(), first);
    // The stats call itself is the only request in between.
    assert_eq!(requests() - before, 1, "the warm walk sent requests");

    // The kernel forgets inodes it no longer caches; the listings stay.
    std::fs::write("/proc/sys/vm/drop_caches", "2").expect("drop_caches (the tests run as root)");
    let before = requests();
    assert_eq!(walk(), first);
    assert_eq!(
        requests() - before,
        1,
        "the walk after the kernel forgot its inodes sent requests"
    );
}

/// Requests of one method the server answered so far.
fn method_count(server: &TestServer, method: &str) -> u64 {
    server.stats()["methods"][method].as_u64().unwrap_or(0)
}

#[test]
fn a_new_listing_asks_only_for_the_items_that_changed() {
    require_fuse!();
    let server = TestServer::start(); // serve only: its request counters
    upload_tree(&server);
    let reader = Mount::admin(&server, &["--ttl", "1"]);
    let writer = Mount::admin(&server, &[]);
    let seen = private(&server, &reader).join("tree/hello.txt");
    assert_eq!(std::fs::read(&seen).unwrap(), b"Hello from midasfs!\n");
    let list = || {
        let sizes: Vec<_> = std::fs::read_dir(private(&server, &reader).join("tree"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .collect();
        assert_eq!(sizes.len(), 6);
    };
    list();

    // The TTL ran out, nothing changed: one folder.children, no item.get.
    std::thread::sleep(Duration::from_millis(1200));
    let (children, items) = (
        method_count(&server, "midas.folder.children"),
        method_count(&server, "midas.item.get"),
    );
    list();
    assert_eq!(method_count(&server, "midas.item.get") - items, 0);
    assert!(method_count(&server, "midas.folder.children") > children);

    // Another client changed one file: only that item is asked for, and its content shows.
    std::fs::write(
        private(&server, &writer).join("tree/hello.txt"),
        b"changed elsewhere\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let items = method_count(&server, "midas.item.get");
    list();
    assert_eq!(method_count(&server, "midas.item.get") - items, 1);
    assert_eq!(std::fs::read(&seen).unwrap(), b"changed elsewhere\n");
}

#[test]
fn root_option_mounts_a_subtree_and_items_as_dirs_shows_every_item_as_a_directory() {
    require_fuse!();
    let server = TestServer::any();
    let local = upload_tree(&server);
    let root = format!("{}/tree", server.private_path());
    let mount = Mount::admin(&server, &["--root", &root]);
    diff_r(&local.path().join("tree"), &mount.path);
    drop(mount);
    let mount = Mount::admin(&server, &["--items-as-dirs"]);
    let hello = private(&server, &mount).join("tree/hello.txt");
    assert!(hello.is_dir());
    assert_eq!(
        std::fs::read(hello.join("hello.txt")).unwrap(),
        b"Hello from midasfs!\n"
    );
}

/// Reading two subfolders of one folder in a row (a walk: `ls -R`, `find`, `du`) lists the
/// next subfolders ahead, in the background, and the walk then finds them in memory. Reading a
/// folder and one subfolder (a file manager opening them) lists nothing ahead.
///
/// It waits on the mount's own count of listings ahead (`midasfs status --json`), not on time:
/// a walk step starts them before its readdir is answered.
#[test]
fn a_walk_through_subfolders_lists_the_next_ones_ahead() {
    require_fuse!();
    let server = TestServer::start(); // serve only: its request counters
    let local = tempfile::tempdir().unwrap();
    let top = local.path().join("top");
    for i in 0..6 {
        let dir = top.join(format!("sub{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f.txt"), format!("file {i}\n")).unwrap();
    }
    upload(&server, &top, "Private", false);
    let mount = Mount::admin(&server, &["--ttl", "60"]);
    let top_dir = private(&server, &mount).join("top");
    // A listing here is a folder.children, and an item.get for the folder's one item.
    let listings = || {
        (
            method_count(&server, "midas.folder.children"),
            method_count(&server, "midas.item.get"),
        )
    };
    // Listings the mount started ahead of walks, and those still running.
    let ahead = || {
        let status = mount.status();
        let walk = &status["walk_ahead"];
        (
            walk["started"].as_u64().unwrap(),
            walk["running"].as_u64().unwrap(),
        )
    };
    let list = |dir: &Path| std::fs::read_dir(dir).unwrap().count();

    assert_eq!(list(&top_dir), 6);
    assert_eq!(list(&top_dir.join("sub0")), 1);
    assert_eq!(
        ahead(),
        (0, 0),
        "opening a folder and one subfolder listed others ahead"
    );
    let (folders, items) = listings();

    assert_eq!(list(&top_dir.join("sub1")), 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (started, running) = ahead();
        assert_eq!(started, 4, "the next subfolders listed ahead");
        if running == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "listings ahead still running after 30 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        listings(),
        (folders + 5, items + 5),
        "sub1's listing and the four ahead"
    );
    let requests = || server.stats()["requests"].as_u64().unwrap();
    let before = requests();
    for i in 2..6 {
        assert_eq!(list(&top_dir.join(format!("sub{i}"))), 1);
    }
    // The stats call itself is the only request in between.
    assert_eq!(requests() - before, 1, "the walk fetched listings itself");
}

/// The kernel's readahead can send the READ of a later block before the first one (both are in
/// flight at once). A reader that then starts its stream at the later block and restarts it for
/// the first opens two downloads where one would do: on a real Midas each is a PHP request that
/// keeps sending until it notices the abort. One stream, from the first block, serves both.
#[test]
fn a_read_ahead_of_the_first_block_does_not_open_a_second_download() {
    require_fuse!();
    let server = TestServer::start(); // serve only: its count of download requests
    let local = upload_tree(&server);
    let mount = Mount::admin(&server, &[]);
    let expected = std::fs::read(local.path().join("tree/big.bin")).unwrap();
    let file = std::fs::File::open(private(&server, &mount).join("tree/big.bin")).unwrap();
    let downloads = || server.stats()["download_requests"].as_u64().unwrap();
    let before = downloads();
    let mut buf = vec![0u8; 128 * 1024];
    let n = file.read_at(&mut buf, 1024 * 1024).unwrap();
    assert_eq!(&buf[..n], &expected[1024 * 1024..1024 * 1024 + n]);
    let mut whole = vec![0u8; expected.len()];
    let mut at = 0;
    while at < whole.len() {
        let n = file.read_at(&mut whole[at..], at as u64).unwrap();
        assert!(n > 0, "short file at {at}");
        at += n;
    }
    assert!(whole == expected, "the content read back differs");
    assert_eq!(downloads() - before, 1, "downloads for one sequential read");
}

/// A cold sequential read reaches the mount in READs of 1 MiB (the kernel's limit of 256 pages
/// per request, which fuser asks for, and the mount's readahead of 1 MiB, which only root may
/// set): each READ is a round trip through the daemon, and with the kernel's defaults (128 KiB)
/// a `cat` costs eight times as many.
#[test]
fn a_cold_sequential_read_comes_in_reads_of_a_mebibyte() {
    require_fuse!();
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: only root may set the mount's readahead");
        return;
    }
    let server = TestServer::start();
    let local = upload_tree(&server);
    let mount = Mount::admin(&server, &[]);
    let expected = std::fs::read(local.path().join("tree/big.bin")).unwrap();
    let path = private(&server, &mount).join("tree/big.bin");
    let reads = || mount.status()["reads"].as_u64().unwrap();
    let before = reads();
    let file = std::fs::File::open(&path).unwrap();
    let mut whole = vec![0u8; expected.len()];
    let mut at = 0;
    while at < whole.len() {
        let end = (at + 1024 * 1024).min(whole.len());
        let n = file.read_at(&mut whole[at..end], at as u64).unwrap();
        assert!(n > 0, "short file at {at}");
        at += n;
    }
    assert!(whole == expected, "the content read back differs");
    let made = reads() - before;
    // 3 MiB and a bit: four READs of at most 1 MiB, and some slack for the kernel's order.
    assert!(made <= 6, "{made} READs for a file of 3 MiB");
}

/// A fresh mount lists the top of the tree in the background (`users/`, the user's own folder
/// and its subfolders), so the first access to a file does not wait for a round trip per folder
/// on its path: here only for the listing of the file's own folder (which the file's lookup
/// joins, answered once the file's `item.get` is).
#[test]
fn the_first_access_after_mounting_finds_the_top_of_the_tree_listed() {
    require_fuse!();
    let server = TestServer::start(); // serve only: its request counters
    upload_tree(&server);
    let children = || method_count(&server, "midas.folder.children");
    let users = || method_count(&server, "midas.user.list");
    let before = children();
    let mount = Mount::admin(&server, &["--ttl", "60"]);
    // The user's folder, then its Public and Private folders.
    let deadline = Instant::now() + Duration::from_secs(30);
    while children() < before + 3 {
        assert!(
            Instant::now() < deadline,
            "the mount did not list the top of the tree ({} folder.children)",
            children() - before
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (before, users_before) = (children(), users());
    assert_eq!(users_before, 1, "users/ was listed once");
    let hello = private(&server, &mount).join("tree/hello.txt");
    assert_eq!(std::fs::read(&hello).unwrap(), b"Hello from midasfs!\n");
    assert_eq!(
        (children() - before, users() - users_before),
        (1, 0),
        "folder.children and user.list sent by the first access"
    );
}
