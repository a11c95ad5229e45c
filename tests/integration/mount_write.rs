//! Writing through a real mount of a real `midasfs serve`, or of the real Midas Server the
//! environment names (see `common::real`): cp, rsync, mv, rm, mkdir, overwrite, metadata,
//! read-only mounts and failed uploads; checked with pydas, the official client, and with the
//! server's own answers.

use crate::common;

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::mount::{getxattr, Mount};
use common::server::{md5_hex, TestServer};
use common::tree::{diff_r, fresh_seed, make_tree, pseudo_random};
use serde_json::Value;

fn run(command: &mut Command) -> String {
    let out = command.output().expect("run command");
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// pydas does not repair Midas's double-encoded names (real Midas gives it `cafÃ©.txt`), so its
/// downloads are compared on the entries with ASCII names only.
fn remove_non_ascii(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if !entry.file_name().to_string_lossy().is_ascii() {
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        } else if path.is_dir() {
            remove_non_ascii(&path);
        }
    }
}

fn diff_pydas_download(expected: &Path, downloaded: &Path) {
    let ascii = tempfile::tempdir().unwrap();
    run(Command::new("cp").arg("-r").arg(expected).arg(ascii.path()));
    let name = expected.file_name().unwrap();
    remove_non_ascii(&ascii.path().join(name));
    remove_non_ascii(downloaded);
    diff_r(&ascii.path().join(name), &downloaded.join(name));
}

/// A mount with its own spool directory (so the recovery directory can be inspected).
struct Setup {
    server: TestServer,
    mount: Mount,
    spool: tempfile::TempDir,
}

impl Setup {
    /// On the server under test (see [`TestServer::any`]).
    fn new(extra: &[&str]) -> Setup {
        Setup::with(TestServer::any(), extra)
    }

    /// On a `midasfs serve`, for what only it offers (each caller says what).
    fn on_serve(extra: &[&str]) -> Setup {
        Setup::with(TestServer::start(), extra)
    }

    /// On the server under test, whose test folder holds the file `name` (its item id
    /// returned), uploaded before the mount starts: a mount that lists the folder between the
    /// item's creation and its upload shows it, still without a revision, as a directory
    /// until its listing's TTL passes, and the test would act on that directory.
    fn with_file(name: &str, content: &[u8]) -> (Setup, String) {
        let server = TestServer::any();
        let token = server.token();
        let folder = server.folder_at(&token, &server.email, server.private());
        let item_id = server.upload_item(&token, &folder, name, content);
        (Setup::with(server, &[]), item_id)
    }

    fn with(server: TestServer, extra: &[&str]) -> Setup {
        let spool = tempfile::tempdir().unwrap();
        let mount = mount_with_spool(&server, spool.path(), extra);
        Setup {
            server,
            mount,
            spool,
        }
    }

    /// The test's own folder in the admin's Private folder, in the mount.
    fn private(&self) -> PathBuf {
        self.server.private_in(&self.mount.path)
    }

    /// A path below the test's own folder, as pydas names it.
    fn pydas_path(&self, below: &str) -> String {
        format!("{}/{below}", self.server.private_path())
    }

    /// The recovered files (not their sidecars).
    fn recovered(&self) -> Vec<PathBuf> {
        data_files(&self.spool.path().join("recovery"))
    }

    /// The spool files left in the spool directory (not their sidecars).
    fn spooled(&self) -> Vec<PathBuf> {
        data_files(self.spool.path())
            .into_iter()
            .filter(|p| p.is_file())
            .collect()
    }

    /// pydas.download of a server path into a fresh local directory.
    fn pydas_download(&self, server_path: &str) -> tempfile::TempDir {
        let local = tempfile::tempdir().unwrap();
        let out = self.server.pydas(
            "mount_download.py",
            &[server_path, local.path().to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "pydas download failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        local
    }

    /// After a failed upload of `big.bin`: its data, and only it, is in the recovery
    /// directory, and the mount shows no such file.
    fn assert_recovered(&self, content: &[u8]) {
        let recovered = self.recovered();
        assert_eq!(recovered.len(), 1, "{recovered:?}");
        assert!(recovered[0].to_string_lossy().ends_with("big.bin"));
        assert!(std::fs::read(&recovered[0]).unwrap() == content);
        assert_eq!(
            errno_of(std::fs::symlink_metadata(self.private().join("big.bin"))),
            libc::ENOENT
        );
    }

    /// `midas.folder.children` of the admin's Private folder, asked of the server.
    fn private_children(&self) -> Value {
        let private_id = getxattr(&self.private(), "user.midas.id").unwrap();
        self.server.call_ok(
            "midas.folder.children",
            &[("token", &self.server.token()), ("id", &private_id)],
        )
    }

    fn item(&self, path: &Path) -> Value {
        let id = getxattr(path, "user.midas.item_id").expect("user.midas.item_id");
        self.server.call_ok(
            "midas.item.get",
            &[("token", &self.server.token()), ("id", &id)],
        )
    }
}

/// The files in `dir` that are not the sidecar (`NAME.target`) of another.
fn data_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|path| {
            let name = path.to_string_lossy();
            !name
                .strip_suffix(".target")
                .is_some_and(|data| Path::new(data).exists())
        })
        .collect()
}

/// What the sidecar of a spool or recovered file says.
fn sidecar(path: &Path) -> Value {
    let mut name = path.as_os_str().to_owned();
    name.push(".target");
    let text =
        std::fs::read(&name).unwrap_or_else(|err| panic!("{}: no sidecar: {err}", path.display()));
    serde_json::from_slice(&text).unwrap()
}

fn mount_with_spool(server: &TestServer, spool: &Path, extra: &[&str]) -> Mount {
    let mut args = vec!["--spool-dir", spool.to_str().unwrap()];
    args.extend_from_slice(extra);
    Mount::admin(server, &args)
}

/// Every item below the folder has one revision holding one bitstream named like the item,
/// which is what `pydas.upload` makes of a file. Returns how many items there were.
fn assert_pydas_layout(server: &TestServer, folder_id: &str) -> usize {
    let token = server.token();
    let children = server.call_ok(
        "midas.folder.children",
        &[("token", &token), ("id", folder_id)],
    );
    let mut items = 0;
    for item in children["items"].as_array().unwrap() {
        let id = item["item_id"].as_str().unwrap();
        let full = server.call_ok("midas.item.get", &[("token", &token), ("id", id)]);
        let revisions = full["revisions"].as_array().unwrap();
        assert_eq!(revisions.len(), 1, "item {id}: {full}");
        let bitstreams = revisions[0]["bitstreams"].as_array().unwrap();
        assert_eq!(bitstreams.len(), 1, "item {id}: {full}");
        assert_eq!(bitstreams[0]["name"], full["name"], "item {id}: {full}");
        items += 1;
    }
    for folder in children["folders"].as_array().unwrap() {
        items += assert_pydas_layout(server, folder["folder_id"].as_str().unwrap());
    }
    items
}

fn errno_of(result: std::io::Result<impl Sized>) -> i32 {
    match result {
        Ok(_) => 0,
        Err(err) => err.raw_os_error().unwrap_or(-1),
    }
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

fn rename_noreplace(from: &Path, to: &Path) -> i32 {
    let (from, to) = (c_path(from), c_path(to));
    // SAFETY: renameat2 with two valid C strings.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    }
}

fn setxattr(path: &Path, name: &str, value: &str) -> i32 {
    let (path, name) = (c_path(path), CString::new(name).unwrap());
    // SAFETY: valid C strings and a buffer we own, with its length.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    }
}

fn removexattr(path: &Path, name: &str) -> i32 {
    let (path, name) = (c_path(path), CString::new(name).unwrap());
    // SAFETY: valid C strings.
    let rc = unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) };
    if rc == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    }
}

#[test]
fn cp_r_makes_what_pydas_upload_makes() {
    require_fuse!();
    let setup = Setup::new(&[]);
    let local = tempfile::tempdir().unwrap();
    make_tree(local.path());
    run(Command::new("cp")
        .arg("-r")
        .arg(local.path().join("tree"))
        .arg(setup.private()));
    diff_r(&local.path().join("tree"), &setup.private().join("tree"));

    let downloaded = setup.pydas_download(&setup.pydas_path("tree"));
    diff_pydas_download(&local.path().join("tree"), downloaded.path());
    let tree_id = getxattr(&setup.private().join("tree"), "user.midas.id").unwrap();
    assert_eq!(assert_pydas_layout(&setup.server, &tree_id), 6);
    assert!(setup.recovered().is_empty());
}

#[test]
fn rsync_twice_transfers_nothing_the_second_time_and_delete_follows() {
    require_fuse!();
    let setup = Setup::new(&[]);
    let local = tempfile::tempdir().unwrap();
    make_tree(local.path());
    let source = format!("{}/", local.path().join("tree").display());
    let target = format!("{}/", setup.private().join("synced").display());
    let rsync = |extra: &[&str]| {
        run(Command::new("rsync")
            .arg("-a")
            .arg("--stats")
            .args(extra)
            .arg(&source)
            .arg(&target))
    };
    let first = rsync(&[]);
    assert!(
        first.contains("Number of regular files transferred: 6"),
        "{first}"
    );
    let second = rsync(&[]);
    assert!(
        second.contains("Number of regular files transferred: 0"),
        "{second}"
    );

    let tree = local.path().join("tree");
    std::fs::write(tree.join("hello.txt"), b"changed\n").unwrap();
    std::fs::remove_file(tree.join("empty.txt")).unwrap();
    std::fs::rename(tree.join("nested/a"), tree.join("nested/renamed")).unwrap();
    std::fs::write(tree.join("nested/new.txt"), b"new\n").unwrap();
    let third = rsync(&["--delete"]);
    assert!(
        third.contains("Number of regular files transferred: 3"),
        "{third}"
    );
    diff_r(&tree, &setup.private().join("synced"));
    let downloaded = setup.pydas_download(&setup.pydas_path("synced"));
    let expected = local.path().join("synced");
    std::fs::rename(&tree, &expected).unwrap();
    diff_pydas_download(&expected, downloaded.path());
    std::fs::rename(&expected, &tree).unwrap();
    let again = rsync(&["--delete"]);
    assert!(
        again.contains("Number of regular files transferred: 0"),
        "{again}"
    );
}

#[test]
fn a_time_set_through_the_mount_survives_a_killed_daemon() {
    require_fuse!();
    let mut setup = Setup::new(&[]);
    let path = setup.private().join("dated.txt");
    std::fs::write(&path, b"dated\n").unwrap();
    // 2001-02-03 04:05:06 UTC, set as `touch -d` does (through a descriptor, as `cp -p` does)
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(981_173_106);
    std::fs::File::open(&path)
        .unwrap()
        .set_modified(time)
        .unwrap();
    // The mount writes the times down within a second; then the daemon dies (SIGKILL), which
    // leaves it no time to do so at unmount.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    std::mem::replace(&mut setup.mount, Mount::placeholder()).kill();
    setup.mount = mount_with_spool(&setup.server, setup.spool.path(), &[]);
    let shown = std::fs::metadata(setup.private().join("dated.txt"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(shown, time);
}

/// The times `rsync -a` set are kept from one mount to the next (in the spool directory), so
/// that the same rsync after a remount finds every file up to date; a file changed since shows
/// the server's date, and is sent.
#[test]
fn rsync_after_a_remount_finds_the_times_it_set_and_transfers_only_what_changed() {
    require_fuse!();
    let setup = Setup::new(&[]);
    let local = tempfile::tempdir().unwrap();
    make_tree(local.path());
    let tree = local.path().join("tree");
    let spool = tempfile::tempdir().unwrap();
    let rsync = |mount: &Mount| {
        let target = setup.server.private_in(&mount.path).join("kept");
        run(Command::new("rsync")
            .args(["-a", "--stats"])
            .arg(format!("{}/", tree.display()))
            .arg(format!("{}/", target.display())))
    };
    let first = mount_with_spool(&setup.server, spool.path(), &[]);
    let copied = rsync(&first);
    assert!(
        copied.contains("Number of regular files transferred: 6"),
        "{copied}"
    );
    assert!(first.unmount().success());

    let second = mount_with_spool(&setup.server, spool.path(), &[]);
    let hello = setup.server.private_in(&second.path).join("kept/hello.txt");
    assert_eq!(
        std::fs::metadata(&hello).unwrap().modified().unwrap(),
        std::fs::metadata(tree.join("hello.txt"))
            .unwrap()
            .modified()
            .unwrap(),
        "the time rsync set, after the remount"
    );
    std::fs::write(tree.join("hello.txt"), b"changed\n").unwrap();
    let again = rsync(&second);
    assert!(
        again.contains("Number of regular files transferred: 1"),
        "{again}"
    );
    diff_r(&tree, &setup.server.private_in(&second.path).join("kept"));
    assert!(second.unmount().success());
}

#[test]
fn mkdir_mv_rm_rmdir_and_rename_over() {
    require_fuse!();
    let setup = Setup::new(&[]);
    let private = setup.private();
    std::fs::create_dir(private.join("a")).unwrap();
    assert_eq!(
        errno_of(std::fs::create_dir(private.join("a"))),
        libc::EEXIST
    );
    std::fs::create_dir(private.join("b")).unwrap();
    std::fs::write(private.join("a/one.txt"), b"one\n").unwrap();
    std::fs::write(private.join("a/two.txt"), b"two\n").unwrap();

    // Within a folder, across folders, and a directory with its content.
    std::fs::rename(private.join("a/one.txt"), private.join("a/uno.txt")).unwrap();
    std::fs::rename(private.join("a/uno.txt"), private.join("b/eins.txt")).unwrap();
    std::fs::rename(private.join("b"), private.join("a/b2")).unwrap();
    assert_eq!(
        std::fs::read(private.join("a/b2/eins.txt")).unwrap(),
        b"one\n"
    );
    let moved = setup.item(&private.join("a/b2/eins.txt"));
    assert_eq!(moved["name"], "eins.txt");
    assert_eq!(moved["revisions"][0]["bitstreams"][0]["name"], "eins.txt");

    // Rename over an existing file replaces it; RENAME_NOREPLACE refuses.
    std::fs::write(private.join("a/three.txt"), b"three\n").unwrap();
    assert_eq!(
        rename_noreplace(&private.join("a/three.txt"), &private.join("a/two.txt")),
        libc::EEXIST
    );
    std::fs::rename(private.join("a/three.txt"), private.join("a/two.txt")).unwrap();
    assert_eq!(
        std::fs::read(private.join("a/two.txt")).unwrap(),
        b"three\n"
    );
    let mut names: Vec<String> = std::fs::read_dir(private.join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["b2", "two.txt"]);

    // rmdir only when empty; unlink of files.
    assert_eq!(
        errno_of(std::fs::remove_dir(private.join("a/b2"))),
        libc::ENOTEMPTY
    );
    std::fs::remove_file(private.join("a/b2/eins.txt")).unwrap();
    std::fs::remove_dir(private.join("a/b2")).unwrap();
    std::fs::remove_file(private.join("a/two.txt")).unwrap();
    std::fs::remove_dir(private.join("a")).unwrap();

    // The server agrees: Private is empty again.
    let children = setup.private_children();
    assert_eq!(children["folders"], Value::Array(vec![]), "{children}");
    assert_eq!(children["items"], Value::Array(vec![]), "{children}");
}

#[test]
fn overwrite_append_and_offset_writes_make_new_revisions() {
    require_fuse!();
    let setup = Setup::new(&[]);
    let path = setup.private().join("notes.txt");
    std::fs::write(&path, b"first version\n").unwrap();
    let ino = std::fs::metadata(&path).unwrap();
    let item_id = getxattr(&path, "user.midas.item_id").unwrap();

    // Overwrite (O_TRUNC): a new revision, the old one kept.
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(b"second version\n").unwrap();
    drop(file);
    assert_eq!(std::fs::read(&path).unwrap(), b"second version\n");

    // Append, then a write at an offset.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(b"appended\n").unwrap();
    drop(file);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(b"SECOND", 0).unwrap();
    drop(file);
    let expected = b"SECOND version\nappended\n";
    assert_eq!(std::fs::read(&path).unwrap(), expected);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), expected.len() as u64);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.ino(), ino.ino(), "the file keeps its inode");

    let all = setup.server.call_ok(
        "midas.item.get",
        &[("token", &setup.server.token()), ("id", &item_id)],
    );
    let revisions = all["revisions"].as_array().unwrap();
    assert!(revisions.len() >= 4, "one revision per save: {all}");
    let first = &revisions[0]["bitstreams"][0];
    assert_eq!(first["sizebytes"], "14", "{all}");
    let head = revisions.last().unwrap();
    let bitstreams = head["bitstreams"].as_array().unwrap();
    assert_eq!(bitstreams.len(), 1, "{all}");
    assert_eq!(bitstreams[0]["name"], "notes.txt");
    assert_eq!(bitstreams[0]["sizebytes"], expected.len().to_string());

    // What pydas downloads is the new content.
    let downloaded = setup.pydas_download(&setup.pydas_path("notes.txt"));
    assert_eq!(
        std::fs::read(downloaded.path().join("notes.txt")).unwrap(),
        expected
    );

    // Truncating a closed file also goes through a new revision.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(6).unwrap();
    drop(file);
    assert_eq!(std::fs::read(&path).unwrap(), b"SECOND");
    // And so does truncate(2) of a file nobody has open.
    run(Command::new("truncate").arg("-s").arg("3").arg(&path));
    assert_eq!(std::fs::read(&path).unwrap(), b"SEC");
    let item = setup.item(&path);
    let head = item["revisions"].as_array().unwrap().last().unwrap();
    assert_eq!(head["bitstreams"][0]["sizebytes"], "3", "{item}");
}

#[test]
fn metadata_is_set_and_removed_through_xattrs() {
    require_fuse!();
    let setup = Setup::new(&[]);
    let path = setup.private().join("data.csv");
    std::fs::write(&path, b"a,b\n").unwrap();
    assert_eq!(
        setxattr(&path, "user.midas.meta.contributor.author", "Ada"),
        0
    );
    assert_eq!(setxattr(&path, "user.midas.meta.keywords", "fuse"), 0);
    assert_eq!(
        getxattr(&path, "user.midas.meta.contributor.author").as_deref(),
        Some("Ada")
    );
    let item_id = getxattr(&path, "user.midas.item_id").unwrap();
    let metadata = setup.server.call_ok(
        "midas.item.getmetadata",
        &[("token", &setup.server.token()), ("id", &item_id)],
    );
    let has =
        |element: &str, qualifier: &str, value: &str| {
            metadata.as_array().unwrap().iter().any(|m| {
                m["element"] == element && m["qualifier"] == qualifier && m["value"] == value
            })
        };
    assert!(has("contributor", "author", "Ada"), "{metadata}");
    assert!(has("keywords", "", "fuse"), "{metadata}");

    assert_eq!(removexattr(&path, "user.midas.meta.keywords"), 0);
    assert_eq!(getxattr(&path, "user.midas.meta.keywords"), None);
    assert_eq!(
        removexattr(&path, "user.midas.meta.keywords"),
        libc::ENODATA
    );
    // Fixed attributes are read-only (removing one changes nothing); other names are not
    // supported.
    assert_eq!(setxattr(&path, "user.midas.md5", "x"), libc::EPERM);
    assert_eq!(setxattr(&path, "user.other", "x"), libc::ENOTSUP);
    let md5 = getxattr(&path, "user.midas.md5").unwrap();
    assert_eq!(removexattr(&path, "user.midas.md5"), 0);
    assert_eq!(getxattr(&path, "user.midas.md5"), Some(md5));

    // So rsync -X, which removes what its source lacks, works.
    let local = tempfile::tempdir().unwrap();
    make_tree(local.path());
    let source = format!("{}/", local.path().join("tree").display());
    run(Command::new("rsync")
        .arg("-aX")
        .arg(&source)
        .arg(setup.private().join("xattrs")));
    diff_r(&local.path().join("tree"), &setup.private().join("xattrs"));
}

#[test]
fn a_read_only_mount_refuses_every_write() {
    require_fuse!();
    let server = TestServer::any();
    let spool = tempfile::tempdir().unwrap();
    {
        let rw = mount_with_spool(&server, spool.path(), &[]);
        let kept = server.private_in(&rw.path).join("kept.txt");
        std::fs::write(kept, b"kept\n").unwrap();
    }
    let mount = mount_with_spool(&server, spool.path(), &["--read-only"]);
    let private = server.private_in(&mount.path);
    let kept = private.join("kept.txt");
    assert_eq!(std::fs::read(&kept).unwrap(), b"kept\n");
    assert_eq!(
        errno_of(std::fs::write(private.join("new.txt"), b"x")),
        libc::EROFS
    );
    assert_eq!(
        errno_of(std::fs::OpenOptions::new().append(true).open(&kept)),
        libc::EROFS
    );
    assert_eq!(
        errno_of(std::fs::create_dir(private.join("d"))),
        libc::EROFS
    );
    assert_eq!(errno_of(std::fs::remove_file(&kept)), libc::EROFS);
    assert_eq!(
        errno_of(std::fs::rename(&kept, private.join("moved.txt"))),
        libc::EROFS
    );
    assert_eq!(
        setxattr(&kept, "user.midas.meta.keywords", "x"),
        libc::EROFS
    );
    assert_eq!(std::fs::read(&kept).unwrap(), b"kept\n");
}

#[test]
fn a_failed_upload_fails_cp_keeps_the_data_and_shows_nothing() {
    require_fuse!();
    // serve only: a dead server; a frozen real one carries out the calls that timed out when it
    // is thawed, and the item.create then leaves an empty item behind
    let mut setup = Setup::on_serve(&["--timeout", "5", "--ttl", "3"]);
    let (_local, big, content) = local_big_bin(8 * 1024 * 1024, 3);

    // The folder's listing is fresh in the mount, so the file can be created with the server
    // down: only its upload at close fails.
    assert_eq!(std::fs::read_dir(setup.private()).unwrap().count(), 0);
    setup.server.stop();
    let out = Command::new("cp")
        .arg(&big)
        .arg(setup.private())
        .output()
        .unwrap();
    assert!(!out.status.success(), "cp succeeded with the server down");
    // Nothing half-made is visible, on the mount (at once)…
    setup.assert_recovered(&content);

    // …or on the server.
    setup.server.restart();
    let children = setup.private_children();
    assert_eq!(children["items"], Value::Array(vec![]), "{children}");

    run(Command::new("cp").arg(&big).arg(setup.private()));
    assert_eq!(
        std::fs::read(setup.private().join("big.bin")).unwrap(),
        content
    );
}

#[test]
fn writers_of_one_file_share_it_and_a_full_spool_gives_enospc() {
    require_fuse!();
    let setup = Setup::new(&["--spool-size", "1"]);
    let path = setup.private().join("shared.txt");
    std::fs::write(&path, b"..........\n").unwrap();
    // Two handles on one file see each other's writes; each close saves what is there.
    let first = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let second = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    first.write_all_at(b"AAAA", 0).unwrap();
    second.write_all_at(b"BBBB", 6).unwrap();
    drop(first);
    drop(second);
    assert_eq!(std::fs::read(&path).unwrap(), b"AAAA..BBBB\n");
    let item = setup.item(&path);
    let head = item["revisions"].as_array().unwrap().last().unwrap();
    assert_eq!(head["bitstreams"][0]["sizebytes"], "11", "{item}");

    // --spool-size 1: a file larger than 1 MiB cannot be written.
    let local = tempfile::tempdir().unwrap();
    let big = local.path().join("big.bin");
    std::fs::write(&big, pseudo_random(2 * 1024 * 1024, 5)).unwrap();
    let out = Command::new("cp")
        .arg(&big)
        .arg(setup.private())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("No space left on device"), "{stderr}");
    // The incomplete file is never uploaded: what was written is in the recovery directory.
    assert_eq!(
        errno_of(std::fs::symlink_metadata(setup.private().join("big.bin"))),
        libc::ENOENT
    );
    let recovered = setup.recovered();
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert!(recovered[0].to_string_lossy().ends_with("big.bin"));
}

#[test]
fn a_copy_linked_to_content_the_server_has_lost_is_sent_or_kept() {
    require_fuse!();
    let setup = Setup::new(&[]);
    let content = pseudo_random(2 * 1024 * 1024, fresh_seed());
    let token = setup.server.token();
    let folder = getxattr(&setup.private(), "user.midas.id").unwrap();
    let original = setup
        .server
        .upload_item(&token, &folder, "original.bin", &content);
    // What Midas's delete leaves when it races a link of the same content: the stored file is
    // gone, and a bitstream points at it.
    let stored = setup.server.asset_path(&md5_hex(&content));
    std::fs::remove_file(&stored).expect("remove the stored file");

    // Midas links a copy of that content to the lost file: the mount sees that the server
    // cannot serve it, and sends the bytes.
    let copy = setup.private().join("big.bin");
    let save = |path: &Path| {
        let mut file = std::fs::File::create(path)?;
        file.write_all(&content)?;
        file.sync_all()
    };
    if setup.server.is_real() {
        // Midas links even the bytes received to the lost file while another bitstream points
        // at it: the save fails, and its bytes are kept.
        assert_eq!(errno_of(save(&copy)), libc::EIO);
        setup.assert_recovered(&content);
        // Once that bitstream is gone, the bytes are stored.
        setup
            .server
            .call_ok("midas.item.delete", &[("token", &token), ("id", &original)]);
    }
    save(&copy).expect("save the copy");
    assert!(std::fs::read(&copy).unwrap() == content);
    assert!(stored.exists());
}

#[test]
fn a_name_taken_on_the_server_meanwhile_fails_the_upload_with_eexist() {
    require_fuse!();
    let setup = Setup::new(&["--ttl", "60"]);
    // The mount's listing of Private is fresh and empty; then another client takes two names.
    assert_eq!(std::fs::read_dir(setup.private()).unwrap().count(), 0);
    let private_id = getxattr(&setup.private(), "user.midas.id").unwrap();
    let token = setup.server.token();
    for name in ["small.txt", "large.bin"] {
        setup.server.call_ok(
            "midas.item.create",
            &[("token", &token), ("name", name), ("parentid", &private_id)],
        );
    }

    // Both upload paths: a small file (generatetoken creates the item) and a large one
    // (item.create, then the checksum). Midas would name the new item "<name> (1)".
    for (name, len) in [("small.txt", 100), ("large.bin", 2 * 1024 * 1024)] {
        let mut file = std::fs::File::create(setup.private().join(name)).unwrap();
        file.write_all(&pseudo_random(len, 5)).unwrap();
        assert_eq!(errno_of(file.sync_all()), libc::EEXIST, "{name}");
    }
    let children = setup.private_children();
    let mut names: Vec<&str> = children["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["large.bin", "small.txt"], "{children}");
    assert_eq!(setup.recovered().len(), 2, "{:?}", setup.recovered());
}

#[test]
fn a_shell_redirection_makes_one_revision_and_touch_an_empty_file() {
    require_fuse!();
    let setup = Setup::new(&[]);
    let private = setup.private();
    // The shell closes a duplicate of the file's descriptor before echo writes to it.
    run(Command::new("sh")
        .arg("-c")
        .arg(
            "echo first > redirected.txt && echo second >> redirected.txt \
             && echo third > redirected.txt",
        )
        .current_dir(&private));
    run(Command::new("touch").arg(private.join("empty.txt")));
    assert_eq!(
        std::fs::read(private.join("redirected.txt")).unwrap(),
        b"third\n"
    );
    let revisions = |name: &str| -> Vec<Vec<(String, String)>> {
        setup.item(&private.join(name))["revisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|revision| {
                revision["bitstreams"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| {
                        let field = |key: &str| b[key].as_str().unwrap().to_owned();
                        (field("name"), field("sizebytes"))
                    })
                    .collect()
            })
            .collect()
    };
    let file = |name: &str, size: &str| vec![(name.to_owned(), size.to_owned())];
    // Creation, append and overwrite are one revision each, with no empty one before them.
    assert_eq!(
        revisions("redirected.txt"),
        [
            file("redirected.txt", "6"),
            file("redirected.txt", "13"),
            file("redirected.txt", "6")
        ]
    );
    assert_eq!(revisions("empty.txt"), [file("empty.txt", "0")]);
}

#[test]
fn token_expiry_between_writes_is_invisible() {
    require_fuse!();
    let server = TestServer::any_expiring();
    let spool = tempfile::tempdir().unwrap();
    let mount = mount_with_spool(&server, spool.path(), &["--ttl", "1"]);
    let private = server.private_in(&mount.path);
    let local = tempfile::tempdir().unwrap();
    make_tree(local.path());
    // Each copy outlives the token of the one before (small files and the checksum path).
    for copy in ["first", "second"] {
        run(Command::new("cp")
            .arg("-r")
            .arg(local.path().join("tree"))
            .arg(private.join(copy)));
        server.expire_tokens();
    }
    for copy in ["first", "second"] {
        diff_r(&local.path().join("tree"), &private.join(copy));
    }
    assert!(std::fs::read_dir(spool.path().join("recovery")).is_err());
}

/// A local `big.bin` of `len` pseudo-random bytes: its directory (deleted on drop), its path
/// and its content.
fn local_big_bin(len: usize, seed: u64) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let local = tempfile::tempdir().unwrap();
    let big = local.path().join("big.bin");
    let content = pseudo_random(len, seed);
    std::fs::write(&big, &content).unwrap();
    (local, big, content)
}

/// Whether any file below `dir` holds bytes.
fn holds_bytes(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| {
            let path = entry.path();
            if path.is_dir() {
                holds_bytes(&path)
            } else {
                entry.metadata().is_ok_and(|m| m.len() > 0)
            }
        })
}

#[test]
fn a_server_killed_during_an_upload_fails_cp_and_a_new_cp_succeeds_after_restart() {
    require_fuse!();
    // A long TTL: the mount's own view is checked while the server is down.
    let mut setup = Setup::on_serve(&["--timeout", "5", "--ttl", "60"]); // serve only: killed, and its store looked into
    let (_local, big, content) = local_big_bin(256 * 1024 * 1024, 9);
    assert_eq!(std::fs::read_dir(setup.private()).unwrap().count(), 0);

    let mut cp = Command::new("cp")
        .arg(&big)
        .arg(setup.private())
        .spawn()
        .unwrap();
    // The server's partial upload is where its bytes arrive: kill it once some did.
    let uploads = setup.server.data_dir.join("uploads");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !holds_bytes(&uploads) {
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // Someone looks while it is copied (`ls -l`): the kernel must not keep the name past the
    // failure, since the mount no longer shows it then.
    let seen = std::fs::symlink_metadata(setup.private().join("big.bin")).is_ok();
    let listed = std::fs::read_dir(setup.private()).unwrap().count();
    setup.server.kill();
    assert!(
        !cp.wait().unwrap().success(),
        "cp succeeded without a server"
    );
    assert!(seen && listed == 1, "big.bin not shown while copied");
    setup.assert_recovered(&content);

    // After a restart the half-made item is removed and a new copy goes through.
    setup.server.restart();
    run(Command::new("cp").arg(&big).arg(setup.private()));
    assert!(std::fs::read(setup.private().join("big.bin")).unwrap() == content);
    let children = setup.private_children();
    let items = children["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{children}");
    assert_eq!(items[0]["name"], "big.bin");
    assert_eq!(items[0]["sizebytes"], content.len().to_string());
}

#[test]
fn git_clone_and_commit_work_in_the_mount() {
    require_fuse!();
    let setup = Setup::new(&[]);
    let git = |dir: &Path, args: &[&str]| {
        run(Command::new("git")
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(args)
            .current_dir(dir))
    };
    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("source");
    make_tree(&source);
    git(&source, &["init", "-q"]);
    git(&source, &["add", "."]);
    git(&source, &["commit", "-qm", "first"]);

    // Lock files: created with O_EXCL, often left empty, renamed over their target or removed
    // right after close.
    let private = setup.private();
    git(
        &private,
        &["clone", "-q", source.to_str().unwrap(), "cloned"],
    );
    let cloned = private.join("cloned");
    diff_r(&source.join("tree"), &cloned.join("tree"));
    std::fs::write(cloned.join("tree/hello.txt"), b"changed\n").unwrap();
    git(&cloned, &["commit", "-qam", "second"]);
    assert_eq!(git(&cloned, &["log", "--format=%s"]), "second\nfirst\n");
    assert_eq!(git(&cloned, &["status", "--porcelain"]), "");
    git(&cloned, &["fsck", "--strict"]);
    assert!(setup.recovered().is_empty(), "{:?}", setup.recovered());
}

#[test]
fn copying_content_the_server_has_sends_no_bytes() {
    require_fuse!();
    let setup = Setup::on_serve(&[]); // serve only: its count of bytes received
    let (_local, big, content) = local_big_bin(2 * 1024 * 1024, 11);
    let uploaded = || setup.server.stats()["bytes_uploaded"].as_u64().unwrap();
    run(Command::new("cp")
        .arg(&big)
        .arg(setup.private().join("first.bin")));
    let before = uploaded();
    assert!(before >= content.len() as u64);
    // The checksum dedup: Midas links the content it has to the new item.
    run(Command::new("cp")
        .arg(&big)
        .arg(setup.private().join("second.bin")));
    assert_eq!(uploaded(), before);
    assert!(std::fs::read(setup.private().join("second.bin")).unwrap() == content);
    let second = setup.item(&setup.private().join("second.bin"));
    assert_eq!(
        second["revisions"][0]["bitstreams"][0]["name"], "second.bin",
        "{second}"
    );
    // Copied over itself again (cp of a large file too): no bytes, and no new revision.
    let (_large_dir, large, large_content) = local_big_bin(70 * MIB, 12);
    run(Command::new("cp").arg(&large).arg(setup.private()));
    let before = uploaded();
    for (source, name) in [(&big, "second.bin"), (&large, "big.bin")] {
        run(Command::new("cp")
            .arg(source)
            .arg(setup.private().join(name)));
    }
    assert_eq!(uploaded(), before);
    for (name, content) in [("second.bin", &content), ("big.bin", &large_content)] {
        let path = setup.private().join(name);
        assert_eq!(setup.item(&path)["revisions"].as_array().unwrap().len(), 1);
        assert!(std::fs::read(&path).unwrap() == *content);
    }
}

/// The bytes the server received for uploads so far, and its `upload.perform` calls.
fn uploads_so_far(server: &TestServer) -> (u64, u64) {
    let stats = server.stats();
    (
        stats["bytes_uploaded"].as_u64().unwrap(),
        stats["methods"]["midas.upload.perform"]
            .as_u64()
            .unwrap_or(0),
    )
}

/// Waits until the server received `bytes` more than `before` (a sender at work).
fn wait_for_upload_past(server: &TestServer, before: u64, bytes: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while uploads_so_far(server).0 < before + bytes {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing was sent while the file was written"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Every bitstream in the Private folder's items, as (item name, bitstream name, size,
/// checksum), sorted.
fn server_files(setup: &Setup) -> Vec<(String, String, String, String)> {
    let children = setup.private_children();
    let mut files = Vec::new();
    for item in children["items"].as_array().unwrap() {
        let id = item["item_id"].as_str().unwrap();
        let got = setup.server.call_ok(
            "midas.item.get",
            &[("token", &setup.server.token()), ("id", id)],
        );
        for revision in got["revisions"].as_array().unwrap() {
            for b in revision["bitstreams"].as_array().unwrap() {
                files.push((
                    item["name"].as_str().unwrap().to_owned(),
                    b["name"].as_str().unwrap().to_owned(),
                    b["sizebytes"].as_str().unwrap().to_owned(),
                    b["checksum"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    files.sort();
    files
}

/// The Private folder holds one item, `name`, whose one bitstream of that name is `content`.
fn assert_server_holds_only(setup: &Setup, name: &str, content: &[u8]) {
    assert_eq!(
        server_files(setup),
        [(
            name.to_owned(),
            name.to_owned(),
            content.len().to_string(),
            common::server::md5_hex(content)
        )]
    );
}

const MIB: usize = 1024 * 1024;

#[test]
fn a_large_new_file_is_sent_while_it_is_written() {
    require_fuse!();
    let setup = Setup::on_serve(&[]); // serve only: its count of bytes received
    let content = pseudo_random(100 * MIB, 21);
    let (_, performs_before) = uploads_so_far(&setup.server);
    let mut file = std::fs::File::create(setup.private().join("big.bin")).unwrap();
    file.write_all(&content).unwrap();
    // Parts of 32 MiB once 64 MiB are written, before the file is closed.
    wait_for_upload_past(&setup.server, 0, 32 * MIB as u64);
    drop(file);
    let (sent, performs) = uploads_so_far(&setup.server);
    // The rest went at close, and every byte once.
    assert!(performs - performs_before >= 2, "{performs} performs");
    assert_eq!(sent, content.len() as u64);
    assert_server_holds_only(&setup, "big.bin", &content);
    assert!(std::fs::read(setup.private().join("big.bin")).unwrap() == content);
    assert!(setup.recovered().is_empty());
}

#[test]
fn a_large_file_changed_behind_what_was_sent_is_sent_whole_at_close() {
    require_fuse!();
    let setup = Setup::on_serve(&[]); // serve only: its count of bytes received
    let mut content = pseudo_random(80 * MIB, 22);
    let path = setup.private().join("big.bin");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(&content).unwrap();
    wait_for_upload_past(&setup.server, 0, 32 * MIB as u64);
    // As a format that fills in its header last does.
    file.write_all_at(b"HEADER", 0).unwrap();
    content[..6].copy_from_slice(b"HEADER");
    drop(file);
    assert_server_holds_only(&setup, "big.bin", &content);
    // Nothing of the abandoned upload stays: neither an item nor a partial file.
    assert!(!holds_bytes(&setup.server.data_dir.join("uploads")));
    assert!(setup.recovered().is_empty());
}

#[test]
fn a_large_file_renamed_or_removed_while_written_leaves_nothing_under_its_first_name() {
    require_fuse!();
    let setup = Setup::on_serve(&[]); // serve only: its count of bytes received
    let content = pseudo_random(80 * MIB, 23);

    let mut renamed = std::fs::File::create(setup.private().join("first.bin")).unwrap();
    renamed.write_all(&content[..70 * MIB]).unwrap();
    wait_for_upload_past(&setup.server, 0, 32 * MIB as u64);
    std::fs::rename(
        setup.private().join("first.bin"),
        setup.private().join("second.bin"),
    )
    .unwrap();
    renamed.write_all(&content[70 * MIB..]).unwrap();
    drop(renamed);

    let before = uploads_so_far(&setup.server).0;
    let mut removed = std::fs::File::create(setup.private().join("gone.bin")).unwrap();
    removed.write_all(&content).unwrap();
    wait_for_upload_past(&setup.server, before, 32 * MIB as u64);
    std::fs::remove_file(setup.private().join("gone.bin")).unwrap();
    drop(removed);

    assert_server_holds_only(&setup, "second.bin", &content);
    assert!(!holds_bytes(&setup.server.data_dir.join("uploads")));
    assert_eq!(
        std::fs::read_dir(setup.private())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>(),
        ["second.bin"]
    );
}

/// rsync's temporary file for a name that exists is likely the same content: it is not sent
/// early, so the checksum dedup still spares the bytes (here after a remount, where rsync
/// copies again: the new mount starts before the old one ends, so the times the old one keeps
/// for the next mount are not there yet).
#[test]
fn rsync_of_large_content_the_server_has_sends_no_bytes_after_a_remount() {
    require_fuse!();
    let mut setup = Setup::on_serve(&[]); // serve only: its count of bytes received
    let (local, big, content) = local_big_bin(70 * MIB, 24);
    // An hour old: the server's date of the copy (the time it was saved) is never in the same
    // second, so that rsync always copies the file again after the remount (rsync compares
    // whole seconds; a file written just now would be skipped in some runs, unchecked).
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&big)
        .unwrap()
        .set_modified(an_hour_ago)
        .unwrap();
    let source = format!("{}/", local.path().display());
    run(Command::new("rsync")
        .arg("-a")
        .arg(&source)
        .arg(setup.private()));
    let (sent, _) = uploads_so_far(&setup.server);
    assert_eq!(sent, content.len() as u64);

    let old = std::mem::replace(
        &mut setup.mount,
        mount_with_spool(&setup.server, setup.spool.path(), &[]),
    );
    assert!(old.unmount().success());
    run(Command::new("rsync")
        .arg("-a")
        .arg(&source)
        .arg(setup.private()));
    assert_eq!(uploads_so_far(&setup.server).0, sent);
    assert!(std::fs::read(setup.private().join("big.bin")).unwrap() == content);
    assert_eq!(server_files(&setup).len(), 1, "{:?}", server_files(&setup));
}

/// A child that inherited the writer's descriptor (`true`, run by the Python script writing the
/// file) closes it as it exits: that close uploads nothing; the writer's own close uploads, once.
#[test]
fn closes_by_children_that_inherited_the_descriptor_upload_nothing() {
    require_fuse!();
    let setup = Setup::on_serve(&[]); // serve only: its count of bytes received
    let path = setup.private().join("log.txt");
    let script = r#"
import os, subprocess, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.set_inheritable(fd, True)
for line in (b"first\n", b"second\n"):
    os.write(fd, line)
    subprocess.run(["true"], close_fds=False, check=True)
os.close(fd)
"#;
    run(Command::new("python3").args(["-c", script]).arg(&path));
    assert_eq!(std::fs::read(&path).unwrap(), b"first\nsecond\n");
    let item = setup.item(&path);
    assert_eq!(item["revisions"].as_array().unwrap().len(), 1, "{item}");
    assert_eq!(setup.server.stats()["bytes_uploaded"], 13);
}

/// A name of 244 bytes: too long for the recovery directory's `<time>-<pid>-<n>-NAME`.
fn long_name() -> String {
    format!("{}.csv", "measurement-".repeat(20))
}

/// Creates an item named `name` in the Private folder behind the mount's back (its listing
/// stays fresh and empty in the mount), so that saving a new file of that name fails (EEXIST).
fn take_name_on_the_server(setup: &Setup, name: &str) {
    assert_eq!(std::fs::read_dir(setup.private()).unwrap().count(), 0);
    let private_id = getxattr(&setup.private(), "user.midas.id").unwrap();
    setup.server.call_ok(
        "midas.item.create",
        &[
            ("token", &setup.server.token()),
            ("name", name),
            ("parentid", &private_id),
        ],
    );
}

/// Writes `content` as a new file `name` in Private; returns the errno of its close.
fn write_new_file(setup: &Setup, name: &str, content: &[u8]) -> i32 {
    let mut file = std::fs::File::create(setup.private().join(name)).unwrap();
    file.write_all(content).unwrap();
    errno_of(file.sync_all())
}

/// The recovered file holds `content` and its sidecar the whole name it was saved under.
fn assert_recovered_with_target(setup: &Setup, name: &str, content: &[u8], reason: &str) {
    let recovered = setup.recovered();
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    let file_name = recovered[0].file_name().unwrap().len();
    assert!(file_name <= 240, "{file_name} bytes: {recovered:?}");
    assert!(std::fs::read(&recovered[0]).unwrap() == content);
    let about = sidecar(&recovered[0]);
    assert_eq!(about["name"], name, "{about}");
    assert_eq!(about["server"], setup.server.url, "{about}");
    let private_id = getxattr(&setup.private(), "user.midas.id").unwrap();
    assert_eq!(about["folder_id"].to_string(), private_id, "{about}");
    let why = about["reason"].as_str().unwrap_or_default();
    assert!(why.contains(reason), "{about}");
    assert!(setup.spooled().is_empty(), "{:?}", setup.spooled());
}

#[test]
fn a_long_name_whose_upload_fails_is_recovered_under_a_name_that_fits() {
    require_fuse!();
    let setup = Setup::new(&["--ttl", "60"]);
    let name = long_name();
    assert_eq!(name.len(), 244);
    take_name_on_the_server(&setup, &name);
    let content = pseudo_random(1000, 31);
    assert_eq!(write_new_file(&setup, &name, &content), libc::EEXIST);
    assert_recovered_with_target(&setup, &name, &content, "exists");
}

/// Runs `mount` (the test runs as root, as mounting FUSE does).
fn mount_command(args: &[&str]) {
    run(Command::new("mount").args(args));
}

/// A filesystem mounted on a directory for the test, detached when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIPPED: needs root to mount the recovery directory");
    }
    root
}

/// A new file whose upload fails while the recovery directory cannot take it (`break_recovery`
/// mounts something there) stays in the spool directory, with its sidecar, through the
/// release and the unmount; the next mount moves it to the recovery directory.
fn an_unwritable_recovery_dir_keeps_the_spool_file(break_recovery: impl Fn(&Path) -> Mounted) {
    let mut setup = Setup::new(&["--ttl", "60"]);
    let recovery = setup.spool.path().join("recovery");
    std::fs::create_dir(&recovery).unwrap();
    let broken = break_recovery(&recovery);
    let name = long_name();
    take_name_on_the_server(&setup, &name);
    let content = pseudo_random(64 * 1024, 32);
    assert_eq!(write_new_file(&setup, &name, &content), libc::EEXIST);

    let old = std::mem::replace(&mut setup.mount, Mount::placeholder());
    assert!(old.unmount().success());
    let spooled = setup.spooled();
    assert_eq!(spooled.len(), 1, "{spooled:?}");
    assert!(std::fs::read(&spooled[0]).unwrap() == content);
    assert_eq!(sidecar(&spooled[0])["name"], name.as_str());

    drop(broken);
    setup.mount = mount_with_spool(&setup.server, setup.spool.path(), &[]);
    assert_recovered_with_target(&setup, &name, &content, "ended before saving it");
}

#[test]
fn a_full_recovery_dir_keeps_the_spool_file_for_the_next_mount() {
    require_fuse!();
    if !is_root() {
        return;
    }
    an_unwritable_recovery_dir_keeps_the_spool_file(|recovery| {
        mount_command(&[
            "-t",
            "tmpfs",
            "-o",
            "size=4k",
            "tmpfs",
            recovery.to_str().unwrap(),
        ]);
        let mounted = Mounted(recovery.to_owned());
        // Full: another byte gives ENOSPC.
        let filler = std::fs::write(recovery.join("filler"), vec![0u8; 8192]);
        assert_eq!(errno_of(filler), libc::ENOSPC);
        mounted
    });
}

#[test]
fn a_read_only_recovery_dir_keeps_the_spool_file_for_the_next_mount() {
    require_fuse!();
    if !is_root() {
        return;
    }
    an_unwritable_recovery_dir_keeps_the_spool_file(|recovery| {
        let path = recovery.to_str().unwrap();
        mount_command(&["--bind", path, path]);
        let mounted = Mounted(recovery.to_owned());
        mount_command(&["-o", "remount,bind,ro", path]);
        // Even root cannot write there.
        assert_eq!(
            errno_of(std::fs::write(recovery.join("x"), b"x")),
            libc::EROFS
        );
        mounted
    });
}

#[test]
fn a_killed_mount_leaves_its_spool_file_with_its_target_for_the_next_mount() {
    require_fuse!();
    let mut setup = Setup::new(&[]);
    let name = long_name();
    let content = pseudo_random(100_000, 33);
    let mut file = std::fs::File::create(setup.private().join(&name)).unwrap();
    file.write_all(&content).unwrap();
    let old = std::mem::replace(&mut setup.mount, Mount::placeholder());
    old.kill();
    drop(file);
    setup.mount = mount_with_spool(&setup.server, setup.spool.path(), &[]);
    assert_recovered_with_target(&setup, &name, &content, "ended before saving it");
    // Nothing of it reached the server.
    let children = setup.private_children();
    assert_eq!(children["items"], Value::Array(vec![]), "{children}");
}

/// An item `measurements.csv` made by another client, with metadata set through the mount;
/// `save` then writes `content` over it the way some program saves. The item keeps its id, its
/// metadata and its first revision, gets one more holding the content, and the temporary
/// file leaves nothing behind, on the server and in the mount.
fn assert_saving_keeps_the_item(save: impl FnOnce(&Path, &Path, &[u8])) {
    require_fuse!();
    let (setup, item_id) = Setup::with_file("measurements.csv", b"day,value\n1,10\n");
    let token = setup.server.token();
    let path = setup.private().join("measurements.csv");
    assert_eq!(
        setxattr(&path, "user.midas.meta.contributor.author", "Ada"),
        0
    );
    assert_eq!(setxattr(&path, "user.midas.meta.date.issued", "2026"), 0);

    let mut content = b"day,value\n".to_vec();
    for day in 1..500 {
        content.extend_from_slice(format!("{day},{}\n", day * 10).as_bytes());
    }
    // The bytes sent are counted on serve only (its stats endpoint).
    let counted = !setup.server.is_real();
    let before = counted.then(|| uploads_so_far(&setup.server).0);
    save(&setup.private(), &path, &content);
    if let Some(before) = before {
        // The content went to the server once (a lock file may add a few bytes).
        let sent = uploads_so_far(&setup.server).0 - before;
        assert!(sent < 2 * content.len() as u64, "{sent} bytes sent");
    }

    assert_eq!(std::fs::read(&path).unwrap(), content);
    assert_eq!(
        getxattr(&path, "user.midas.item_id").as_deref(),
        Some(item_id.as_str())
    );
    assert_eq!(
        getxattr(&path, "user.midas.meta.contributor.author").as_deref(),
        Some("Ada")
    );
    let item = setup
        .server
        .call_ok("midas.item.get", &[("token", &token), ("id", &item_id)]);
    let revisions = item["revisions"].as_array().unwrap();
    assert_eq!(revisions.len(), 2, "{item}");
    let head = &revisions[1]["bitstreams"];
    assert_eq!(head.as_array().unwrap().len(), 1, "{item}");
    assert_eq!(head[0]["name"], "measurements.csv", "{item}");
    assert_eq!(
        head[0]["checksum"],
        common::server::md5_hex(&content),
        "{item}"
    );
    let metadata = setup.server.call_ok(
        "midas.item.getmetadata",
        &[("token", &token), ("id", &item_id)],
    );
    let has =
        |element: &str, qualifier: &str, value: &str| {
            metadata.as_array().unwrap().iter().any(|m| {
                m["element"] == element && m["qualifier"] == qualifier && m["value"] == value
            })
        };
    assert!(has("contributor", "author", "Ada"), "{metadata}");
    assert!(has("date", "issued", "2026"), "{metadata}");
    let children = setup.private_children();
    let items = children["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{children}");
    assert_eq!(items[0]["item_id"], item_id.as_str(), "{children}");
    let listed: Vec<_> = std::fs::read_dir(setup.private())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(listed, ["measurements.csv"]);
    assert!(setup.recovered().is_empty(), "{:?}", setup.recovered());
}

#[test]
fn saving_as_gtk_does_keeps_the_item() {
    // g_file_replace: a temporary file, fsync'ed, renamed over the target, then closed.
    assert_saving_keeps_the_item(|dir, path, content| {
        let temp = dir.join(".goutputstream-4RT2X1");
        let mut file = std::fs::File::create(&temp).unwrap();
        file.write_all(content).unwrap();
        file.sync_all().unwrap();
        std::fs::rename(&temp, path).unwrap();
        drop(file);
    });
}

#[test]
fn saving_as_vim_does_keeps_the_item() {
    // vim: a probe file, the file renamed to its backup, a new file written, the backup removed.
    assert_saving_keeps_the_item(|dir, path, content| {
        std::fs::File::create(dir.join("4913")).unwrap();
        std::fs::remove_file(dir.join("4913")).unwrap();
        let backup = dir.join("measurements.csv~");
        std::fs::rename(path, &backup).unwrap();
        let mut file = std::fs::File::create(path).unwrap();
        file.write_all(content).unwrap();
        file.sync_all().unwrap();
        drop(file);
        std::fs::remove_file(&backup).unwrap();
    });
}

#[test]
fn saving_with_rsync_keeps_the_item() {
    assert_saving_keeps_the_item(|dir, _path, content| {
        let local = tempfile::tempdir().unwrap();
        std::fs::write(local.path().join("measurements.csv"), content).unwrap();
        run(Command::new("rsync")
            .arg(local.path().join("measurements.csv"))
            .arg(format!("{}/", dir.display())));
    });
}

#[test]
fn saving_as_libreoffice_does_keeps_the_item() {
    // A lock file, a temporary file renamed over the document, the lock removed.
    assert_saving_keeps_the_item(|dir, path, content| {
        let lock = dir.join(".~lock.measurements.csv#");
        std::fs::write(
            &lock,
            b",Ada,host,06.12.2026 12:00,file:///home/ada/.config;",
        )
        .unwrap();
        let temp = dir.join("lu8422zq1k.tmp");
        std::fs::write(&temp, content).unwrap();
        std::fs::rename(&temp, path).unwrap();
        std::fs::remove_file(&lock).unwrap();
    });
}

#[test]
fn mv_f_of_a_fresh_file_over_an_item_keeps_the_item() {
    assert_saving_keeps_the_item(|dir, path, content| {
        let fresh = dir.join("fresh.csv");
        std::fs::write(&fresh, content).unwrap();
        run(Command::new("mv").arg("-f").arg(&fresh).arg(path));
    });
}

#[test]
fn a_mount_killed_mid_upload_leaves_no_empty_item_once_the_next_mount_starts() {
    require_fuse!();
    let mut setup = Setup::on_serve(&[]); // serve only: its count of bytes received
    let content = pseudo_random(70 * MIB, 41);
    let mut file = std::fs::File::create(setup.private().join("big.bin")).unwrap();
    file.write_all(&content).unwrap();
    // Sent while written: its item is on the server, empty.
    wait_for_upload_past(&setup.server, 0, 32 * MIB as u64);
    let children = setup.private_children();
    let items = children["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{children}");
    let item_id = items[0]["item_id"].as_str().unwrap().to_owned();

    let old = std::mem::replace(&mut setup.mount, Mount::placeholder());
    old.kill();
    drop(file);
    setup.mount = mount_with_spool(&setup.server, setup.spool.path(), &[]);
    let children = setup.private_children();
    assert_eq!(children["items"], Value::Array(vec![]), "{children}");
    let recovered = setup.recovered();
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert!(std::fs::read(&recovered[0]).unwrap() == content);
    let about = sidecar(&recovered[0]);
    assert_eq!(about["name"], "big.bin", "{about}");
    assert_eq!(about["made_item_id"].to_string(), item_id, "{about}");
}

#[test]
fn a_save_by_rename_over_a_file_open_for_writing_is_not_overwritten_by_its_close() {
    require_fuse!();
    let setup = Setup::new(&[]);
    let (a, b) = (setup.private().join("a.txt"), setup.private().join("b.txt"));
    std::fs::write(&a, b"from a").unwrap();
    std::fs::write(&b, b"from b").unwrap();
    let mut open = std::fs::File::create(&a).unwrap();
    std::fs::rename(&b, &a).unwrap();
    // The open file is no longer under any name: what it writes goes nowhere.
    open.write_all(b"orphan").unwrap();
    drop(open);
    let checksums: Vec<String> = server_files(&setup)
        .into_iter()
        .map(|(_, _, _, md5)| md5)
        .collect();
    assert!(checksums.contains(&common::server::md5_hex(b"from b")));
    assert!(!checksums.contains(&common::server::md5_hex(b"orphan")));
    assert_eq!(std::fs::read(&a).unwrap(), b"from b");
}
