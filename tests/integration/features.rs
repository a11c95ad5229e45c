//! What only Midas has, through a real mount of a real `midasfs serve`: every revision of a file
//! by name (`data.csv@r2`), privacy by `chmod` (checked by an anonymous caller over HTTP),
//! search as a directory (`.search/<name>/`), and what file managers ask of a mount: `statfs`
//! figures that mean something, and a trash that fails cleanly instead of filling the server.

use crate::common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::files::{chmod, errno, id_of, mode, names_in, setfattr};
use common::mount::{getxattr, listxattr};
use common::server::{text, TestServer};
use common::users::TwoUsers;

fn statvfs(path: &Path) -> libc::statvfs {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    // SAFETY: a plain struct statvfs fills in, and a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) }, 0);
    stat
}

// ---- statfs and the trash ----

#[test]
fn df_shows_the_room_the_spool_leaves_for_writes_and_none_when_read_only() {
    require_fuse!();
    let setup = TwoUsers::start();
    let mount = setup.mount(&["--spool-size", "64"]);
    let stat = statvfs(&mount.path);
    let unit = stat.f_frsize;
    assert_eq!(stat.f_blocks * unit, 64 << 20, "size: the spool's cap");
    assert_eq!(stat.f_bavail * unit, 64 << 20, "free: all of it");
    assert_eq!(stat.f_namemax, 255);
    drop(mount);

    let read_only = setup.mount(&["--spool-size", "64", "--read-only"]);
    let stat = statvfs(&read_only.path);
    assert_eq!(stat.f_bavail, 0, "a read-only mount has no room for writes");
    assert_eq!(stat.f_bfree, 0);
}

#[test]
fn moving_to_the_trash_fails_so_file_managers_offer_to_delete_and_the_server_keeps_no_trash() {
    require_fuse!();
    let setup = TwoUsers::start();
    let public = setup.owners("Public");
    setup
        .server
        .upload_item(&setup.owner_token, &public, "keep.txt", b"still here\n");
    // The folder as the mount's top: the one place a trash directory could be made.
    let mount = setup.mount(&["--root", "users/Alice_Owner/Public"]);

    let err = std::fs::create_dir(mount.path.join(".Trash-0")).expect_err("no trash directory");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    let err = std::fs::create_dir(mount.path.join(".Trash")).expect_err("no trash directory");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    // Other names that start with a dot are ordinary folders.
    std::fs::create_dir(mount.path.join(".Trashy")).expect("an ordinary hidden folder");

    if Path::new("/usr/bin/gio").exists() {
        let trash = Command::new("gio")
            .arg("trash")
            .arg(mount.path.join("keep.txt"))
            .env("HOME", std::env::temp_dir())
            .output()
            .expect("run gio trash");
        assert!(
            !trash.status.success(),
            "gio trash must fail: {}",
            String::from_utf8_lossy(&trash.stderr)
        );
        // What file managers look at: G_IO_ERROR_NOT_SUPPORTED (15) makes Nautilus, pcmanfm
        // and Thunar offer to delete permanently instead.
        let code = Command::new("python3")
            .arg("-c")
            .arg(G_FILE_TRASH)
            .arg(mount.path.join("keep.txt"))
            .env("HOME", std::env::temp_dir())
            .output()
            .expect("run python3");
        assert_eq!(
            String::from_utf8_lossy(&code.stdout).trim(),
            "15",
            "{}",
            String::from_utf8_lossy(&code.stderr)
        );
    } else {
        eprintln!("gio is not installed: the trash is checked by mkdir alone");
    }
    assert_eq!(
        std::fs::read(mount.path.join("keep.txt")).expect("the file is still there"),
        b"still here\n"
    );
    let names = setup.anyone_lists(&public);
    assert!(names.contains(&"keep.txt".to_owned()), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with(".Trash-") || n == ".Trash"),
        "a trash folder reached the server: {names:?}"
    );
}

/// Prints the GIOErrorEnum code of `g_file_trash(argv[1])` (or `ok`), through GLib itself.
const G_FILE_TRASH: &str = r#"
import ctypes, sys
gio = ctypes.CDLL("libgio-2.0.so.0")
class GError(ctypes.Structure):
    _fields_ = [("domain", ctypes.c_uint32), ("code", ctypes.c_int), ("message", ctypes.c_char_p)]
gio.g_file_new_for_path.restype = ctypes.c_void_p
gio.g_file_trash.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.POINTER(GError))]
error = ctypes.POINTER(GError)()
trashed = gio.g_file_trash(gio.g_file_new_for_path(sys.argv[1].encode()), None, ctypes.byref(error))
print("ok" if trashed else error.contents.code)
"#;

// ---- history ----

/// The owner's `data.csv` in her Public folder, in two revisions: `1,2`, then `1,3`.
fn data_csv_in_two_revisions() -> TwoUsers {
    let setup = TwoUsers::start();
    let public = setup.owners("Public");
    let token = &setup.owner_token;
    let item = setup
        .server
        .upload_item(token, &public, "data.csv", b"a,b\n1,2\n");
    setup
        .server
        .upload_to(token, &item, "data.csv", b"a,b\n1,3\n", None);
    setup
}

#[test]
fn every_revision_reads_by_name_read_only_and_no_listing_shows_them() {
    require_fuse!();
    let setup = data_csv_in_two_revisions();
    let mount = setup.mount(&[]);
    let dir = mount.path.join("home/Public");
    std::fs::write(dir.join("data.csv"), b"a,b\n1,4\n").expect("a third revision");

    assert_eq!(
        std::fs::read(dir.join("data.csv@r1")).unwrap(),
        b"a,b\n1,2\n"
    );
    assert_eq!(
        std::fs::read(dir.join("data.csv@r2")).unwrap(),
        b"a,b\n1,3\n"
    );
    assert_eq!(
        std::fs::read(dir.join("data.csv@r3")).unwrap(),
        b"a,b\n1,4\n"
    );
    let diff = Command::new("diff")
        .arg(dir.join("data.csv@r2"))
        .arg(dir.join("data.csv"))
        .output()
        .expect("run diff");
    assert_eq!(diff.status.code(), Some(1), "the files differ");
    assert_eq!(
        String::from_utf8_lossy(&diff.stdout),
        "2c2\n< 1,3\n---\n> 1,4\n"
    );
    assert_eq!(
        std::fs::metadata(dir.join("data.csv@r9"))
            .expect_err("no revision 9")
            .raw_os_error(),
        Some(libc::ENOENT)
    );

    // Read-only: no write, truncate, chmod or metadata.
    assert_eq!(mode(&dir.join("data.csv@r1")), 0o444);
    let write = std::fs::write(dir.join("data.csv@r1"), b"changed history");
    assert_eq!(
        write.expect_err("read-only").raw_os_error(),
        Some(libc::EROFS)
    );
    let change = chmod(&["666"], &dir.join("data.csv@r1"));
    assert!(!change.status.success());
    assert_eq!(
        std::fs::read(dir.join("data.csv@r1")).unwrap(),
        b"a,b\n1,2\n"
    );
    assert_eq!(
        getxattr(&dir.join("data.csv@r1"), "user.midas.revision").as_deref(),
        Some("1")
    );

    // Not in any walk.
    assert_eq!(names_in(&dir), ["data.csv"]);
    let find = Command::new("find").arg(&mount.path).output().unwrap();
    assert!(!String::from_utf8_lossy(&find.stdout).contains('@'));

    // The list: number, date, author and size, oldest first.
    assert!(listxattr(&dir.join("data.csv")).contains(&"user.midas.revisions".to_owned()));
    let revisions = getxattr(&dir.join("data.csv"), "user.midas.revisions").expect("revisions");
    let lines: Vec<Vec<&str>> = revisions.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 3, "{revisions}");
    for (n, line) in lines.iter().enumerate() {
        assert_eq!(line[0], format!("r{}", n + 1), "{revisions}");
        assert_eq!(
            line[1].len(),
            "2026-12-06 14:03:57".len(),
            "a date: {revisions}"
        );
        assert_eq!(line[2], "Alice Owner", "{revisions}");
        assert_eq!(line[3], "8 bytes", "{revisions}");
    }
}

/// `truncate(2)` of a path (a size change without opening the file).
fn truncate(path: &Path, size: i64) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    // SAFETY: a valid C string.
    if unsafe { libc::truncate(c_path.as_ptr(), size) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn removing_renaming_or_changing_a_revision_or_anything_in_the_search_is_erofs() {
    require_fuse!();
    let setup = data_csv_in_two_revisions();
    let mount = setup.mount(&[]);
    let dir = mount.path.join("home/Public");
    let old = dir.join("data.csv@r1");
    assert_eq!(std::fs::read(&old).unwrap(), b"a,b\n1,2\n");

    // History: like a snapshot's files, there but read-only.
    assert_eq!(
        errno(std::fs::remove_file(&old), "rm data.csv@r1"),
        Some(libc::EROFS)
    );
    assert_eq!(
        errno(std::fs::rename(&old, dir.join("old.csv")), "mv data.csv@r1"),
        Some(libc::EROFS)
    );
    std::fs::write(dir.join("new.csv"), b"new\n").unwrap();
    assert_eq!(
        errno(
            std::fs::rename(dir.join("new.csv"), &old),
            "mv over data.csv@r1"
        ),
        Some(libc::EROFS)
    );
    assert_eq!(errno(truncate(&old, 0), "truncate"), Some(libc::EROFS));
    assert_eq!(
        errno(
            std::fs::OpenOptions::new().append(true).open(&old),
            "open for append"
        ),
        Some(libc::EROFS)
    );
    assert_eq!(
        errno(setfattr(&old, "user.midas.meta.note", "x"), "setfattr"),
        Some(libc::EROFS)
    );
    assert_eq!(std::fs::read(&old).unwrap(), b"a,b\n1,2\n");
    assert_eq!(std::fs::read(dir.join("data.csv")).unwrap(), b"a,b\n1,3\n");
    assert_eq!(
        getxattr(&dir.join("data.csv"), "user.midas.revisions")
            .unwrap()
            .lines()
            .count(),
        2
    );
    // A name that is no revision is still just missing.
    assert_eq!(
        errno(std::fs::remove_file(dir.join("data.csv@r9")), "rm @r9"),
        Some(libc::ENOENT)
    );

    // The search directory, the same.
    let search = mount.path.join(".search");
    let results = search.join("data.csv");
    assert_eq!(std::fs::read_dir(&results).unwrap().count(), 1);
    let link = results.join("data.csv");
    for (what, result) in [
        (
            "write a new file",
            std::fs::write(results.join("new.txt"), b"x").map(|_| ()),
        ),
        ("rm a result", std::fs::remove_file(&link)),
        ("mkdir", std::fs::create_dir(results.join("sub"))),
        ("rmdir a query", std::fs::remove_dir(&results)),
        ("rmdir .search", std::fs::remove_dir(&search)),
        (
            "mv a result out",
            std::fs::rename(&link, dir.join("moved.csv")),
        ),
        (
            "mv a file in",
            std::fs::rename(dir.join("new.csv"), results.join("new.csv")),
        ),
        ("setfattr", setfattr(&results, "user.midas.meta.note", "x")),
    ] {
        assert_eq!(errno(result, what), Some(libc::EROFS), "{what}");
    }
    assert_eq!(
        std::fs::read(&link).unwrap(),
        b"a,b\n1,3\n",
        "the result still leads to the file"
    );
    assert!(dir.join("new.csv").exists());
}

// ---- privacy by chmod ----

#[test]
fn chmod_o_plus_r_makes_a_file_public_and_o_minus_r_private_again() {
    require_fuse!();
    let setup = TwoUsers::start();
    let private = setup.owners("Private");
    let item = setup
        .server
        .upload_item(&setup.owner_token, &private, "report.txt", b"draft\n");
    let mount = setup.mount(&[]);
    let file = mount.path.join("home/Private/report.txt");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(
        getxattr(&file, "user.midas.privacy").as_deref(),
        Some("Private")
    );
    assert!(!setup.anyone_gets("item", &item));

    assert!(chmod(&["o+r"], &file).status.success());
    assert!(setup.anyone_gets("item", &item), "public after chmod o+r");
    assert_eq!(mode(&file), 0o644);
    assert_eq!(
        getxattr(&file, "user.midas.privacy").as_deref(),
        Some("Public")
    );

    assert!(chmod(&["o-r"], &file).status.success());
    assert!(!setup.anyone_gets("item", &item), "private after chmod o-r");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(
        getxattr(&file, "user.midas.privacy").as_deref(),
        Some("Private")
    );
    // Bits that are not access change nothing, and are not an error.
    assert!(chmod(&["u+x"], &file).status.success());
    assert!(!setup.anyone_gets("item", &item));
}

#[test]
fn chmod_recursive_o_plus_rx_makes_a_folder_and_everything_in_it_public() {
    require_fuse!();
    let setup = TwoUsers::start();
    let private = setup.owners("Private");
    let token = &setup.owner_token;
    let project =
        text(&setup.server.create_folder(token, &private, "project")["folder_id"]).to_owned();
    let inner = text(&setup.server.create_folder(token, &project, "raw")["folder_id"]).to_owned();
    let top_file = setup
        .server
        .upload_item(token, &project, "notes.txt", b"n\n");
    let inner_file = setup.server.upload_item(token, &inner, "scan.dat", b"s\n");
    let mount = setup.mount(&[]);
    let dir = mount.path.join("home/Private/project");
    assert!(!setup.anyone_gets("folder", &project));

    let output = chmod(&["-R", "o+rX"], &dir);
    assert!(output.status.success(), "{output:?}");
    for (kind, id) in [
        ("folder", &project),
        ("folder", &inner),
        ("item", &top_file),
        ("item", &inner_file),
    ] {
        assert!(setup.anyone_gets(kind, id), "{kind} {id} is not public");
    }
    assert_eq!(setup.anyone_lists(&project), ["raw", "notes.txt"]);
    assert_eq!(mode(&dir), 0o755);
    assert_eq!(mode(&dir.join("raw/scan.dat")), 0o644);
    // The folder it is in stays as it was.
    assert!(!setup.anyone_gets("folder", &private));

    // o-r on the folder alone: the folder goes private, what is in it stays public.
    assert!(chmod(&["o-r"], &dir).status.success());
    assert!(!setup.anyone_gets("folder", &project));
    assert!(setup.anyone_gets("item", &top_file));
}

#[test]
fn chmod_of_what_the_user_may_not_administer_is_refused_with_eperm() {
    require_fuse!();
    let setup = TwoUsers::start();
    let bobs = setup.others("Public");
    let item = setup
        .server
        .upload_item(&setup.other_token, &bobs, "shared.txt", b"bob's\n");
    let mount = setup.mount(&[]);
    let file = mount.path.join("users/Bob_Other/Public/shared.txt");
    assert_eq!(std::fs::read(&file).unwrap(), b"bob's\n");

    let output = chmod(&["o-r"], &file);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Operation not permitted"),
        "{output:?}"
    );
    assert!(setup.anyone_gets("item", &item), "still public");
    assert_eq!(mode(&file) & 0o004, 0o004);
}

#[test]
fn files_copied_in_with_their_modes_keep_the_privacy_of_their_folder() {
    require_fuse!();
    let setup = TwoUsers::start();
    let private = setup.owners("Private");
    let mount = setup.mount(&[]);
    let source = tempfile::tempdir().expect("temp dir");
    std::fs::write(source.path().join("a.txt"), b"from home\n").unwrap();
    std::fs::set_permissions(
        source.path().join("a.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let dest = mount.path.join("home/Private");
    let cp = Command::new("cp")
        .arg("-p")
        .arg(source.path().join("a.txt"))
        .arg(&dest)
        .output()
        .expect("run cp");
    assert!(cp.status.success(), "{cp:?}");
    let rsync = Command::new("rsync")
        .arg("-a")
        .arg(source.path().join("a.txt"))
        .arg(dest.join("b.txt"))
        .output()
        .expect("run rsync");
    assert!(rsync.status.success(), "{rsync:?}");

    for name in ["a.txt", "b.txt"] {
        let item = id_of(&dest.join(name));
        assert!(
            !setup.anyone_gets("item", &item),
            "{name} copied into Private became public"
        );
    }
    assert!(setup.anyone_lists(&private).is_empty());
}

// ---- search ----

#[test]
fn the_search_directory_links_to_every_readable_item_of_that_name_and_walks_skip_it() {
    require_fuse!();
    let setup = TwoUsers::start();
    let (mine, bobs_public, bobs_private) = (
        setup.owners("Private"),
        setup.others("Public"),
        setup.others("Private"),
    );
    let server = &setup.server;
    server.upload_item(&setup.owner_token, &mine, "scan.nii", b"mine\n");
    let bobs = server.upload_item(
        &setup.other_token,
        &bobs_public,
        "scan.nii",
        b"bob's public\n",
    );
    server.upload_item(
        &setup.other_token,
        &bobs_private,
        "scan.nii",
        b"bob's private\n",
    );
    server.upload_item(&setup.owner_token, &mine, "other.nii", b"other\n");
    let mount = setup.mount(&[]);

    let results = mount.path.join(".search/scan.nii");
    let mut found: Vec<(String, String, Vec<u8>)> = std::fs::read_dir(&results)
        .expect("list the search")
        .map(|entry| {
            let entry = entry.unwrap();
            assert!(entry.file_type().unwrap().is_symlink());
            let target = std::fs::read_link(entry.path()).unwrap();
            let content = std::fs::read(entry.path()).expect("follow the link");
            (
                entry.file_name().to_string_lossy().into_owned(),
                target.to_string_lossy().into_owned(),
                content,
            )
        })
        .collect();
    found.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        found,
        [
            (
                // Same names are told apart as in any folder: the lower id keeps the name.
                "scan.nii".to_owned(),
                "../../users/Alice_Owner/Private/scan.nii".to_owned(),
                b"mine\n".to_vec()
            ),
            (
                format!("scan (item {bobs}).nii"),
                "../../users/Bob_Other/Public/scan.nii".to_owned(),
                b"bob's public\n".to_vec()
            ),
        ]
    );
    // The links lead to the files themselves.
    assert_eq!(
        std::fs::metadata(results.join("scan.nii")).unwrap().ino(),
        std::fs::metadata(mount.path.join("home/Private/scan.nii"))
            .unwrap()
            .ino()
    );
    assert_eq!(
        std::fs::read_dir(mount.path.join(".search/nothing-is-called-this"))
            .unwrap()
            .count(),
        0
    );

    // Not listed, so walks do not enter it; read-only.
    let top = names_in(&mount.path);
    assert!(!top.contains(&".search".to_owned()), "{top:?}");
    let find = Command::new("find")
        .arg(&mount.path)
        .args(["-name", "scan.nii"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&find.stdout).lines().count(), 2);
    let err = std::fs::write(results.join("new.txt"), b"x").expect_err("read-only");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    let err = std::fs::remove_file(results.join("scan.nii")).expect_err("read-only");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
}

/// The names and link targets in a search directory, sorted by target.
fn search_results(dir: &Path) -> std::io::Result<Vec<(String, String)>> {
    let entries = std::fs::read_dir(dir)?.collect::<std::io::Result<Vec<_>>>()?;
    let mut found: Vec<(String, String)> = entries
        .iter()
        .map(|entry| {
            let target = std::fs::read_link(entry.path()).expect("a symlink");
            (
                entry.file_name().to_string_lossy().into_owned(),
                target.to_string_lossy().into_owned(),
            )
        })
        .collect();
    found.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(found)
}

#[test]
fn a_metadata_query_in_the_search_directory_finds_the_readable_items_whose_metadata_matches() {
    require_fuse!();
    let setup = TwoUsers::on(TestServer::start_with(&["--modules", "solr"]));
    let bobs_private = setup.others("Private");
    let server = &setup.server;
    let secret = server.upload_item(&setup.other_token, &bobs_private, "head.nii", b"bob\n");
    server.call_ok(
        "midas.item.setmetadata",
        &[
            ("token", setup.other_token.as_str()),
            ("itemId", secret.as_str()),
            ("element", "modality"),
            ("value", "CT"),
        ],
    );
    let mount = setup.mount(&[]);
    let home = mount.path.join("home");
    for (path, modality) in [
        ("Public/head.nii", "CT"),
        ("Private/chest.nii", "CT"),
        ("Public/knee.nii", "MR"),
    ] {
        let file = home.join(path);
        std::fs::write(&file, path).expect("write");
        setfattr(&file, "user.midas.meta.modality", modality).expect("setfattr");
    }
    setfattr(
        &home.join("Public/head.nii"),
        "user.midas.meta.contributor.author",
        "Jane Doe",
    )
    .expect("setfattr");

    let search = mount.path.join(".search");
    assert_eq!(
        search_results(&search.join("modality:CT")).expect("list the query"),
        [
            (
                "chest.nii".to_owned(),
                "../../users/Alice_Owner/Private/chest.nii".to_owned()
            ),
            (
                "head.nii".to_owned(),
                "../../users/Alice_Owner/Public/head.nii".to_owned()
            ),
        ],
        "Bob's private CT is not found, nor the MR"
    );
    assert_eq!(
        search_results(&search.join("modality:CT AND contributor.author:\"jane doe\""))
            .expect("list the query"),
        [(
            "head.nii".to_owned(),
            "../../users/Alice_Owner/Public/head.nii".to_owned()
        )]
    );
    // The links lead to the files.
    assert_eq!(
        std::fs::read(search.join("modality:MR/knee.nii")).expect("follow the link"),
        b"Public/knee.nii"
    );
    // Plain names are still item names.
    assert_eq!(search_results(&search.join("knee.nii")).unwrap().len(), 1);
    // A query the server cannot parse.
    let err = search_results(&search.join("modality:(CT")).expect_err("a syntax error");
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
}

#[test]
fn without_the_solr_module_a_metadata_query_does_not_exist() {
    require_fuse!();
    let setup = TwoUsers::start();
    let mount = setup.mount(&[]);
    let file = mount.path.join("home/Public/head.nii");
    std::fs::write(&file, b"x").expect("write");
    setfattr(&file, "user.midas.meta.modality", "CT").expect("setfattr");
    let search = mount.path.join(".search");
    let err = std::fs::metadata(search.join("modality:CT")).expect_err("no solr module");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    assert_eq!(search_results(&search.join("head.nii")).unwrap().len(), 1);
}

// ---- serve ----

#[test]
fn serve_changes_a_folder_alone_with_folder_policygroup_as_midas_does() {
    let setup = TwoUsers::start();
    let server = &setup.server;
    let token = setup.owner_token.as_str();
    let private = setup.owners("Private");
    let inside = server.upload_item(token, &private, "in.txt", b"x");
    let add = server.call_ok(
        "midas.folder.add.policygroup",
        &[
            ("token", token),
            ("folder_id", &private),
            ("group_id", "0"),
            ("policy", "Read"),
        ],
    );
    assert_eq!(add, serde_json::json!({"success": "1", "failure": "0"}));
    assert!(setup.anyone_gets("folder", &private));
    assert!(!setup.anyone_gets("item", &inside), "not recursive");

    let remove = server.call_ok(
        "midas.folder.remove.policygroup",
        &[("token", token), ("folder_id", &private), ("group_id", "0")],
    );
    assert_eq!(remove, serde_json::json!({"success": "1", "failure": "0"}));
    assert!(!setup.anyone_gets("folder", &private));

    // With `recursive`, the folder's policies go down to what is in it.
    let add = server.call_ok(
        "midas.folder.add.policygroup",
        &[
            ("token", token),
            ("folder_id", &private),
            ("group_id", "0"),
            ("policy", "Read"),
            ("recursive", ""),
        ],
    );
    assert_eq!(add, serde_json::json!({"success": "2", "failure": "0"}));
    assert!(setup.anyone_gets("item", &inside));

    // Only an admin of the folder.
    let (code, message) = server.call_fail(
        "midas.folder.remove.policygroup",
        &[
            ("token", &setup.other_token),
            ("folder_id", &private),
            ("group_id", "0"),
        ],
    );
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("-151", "Admin privileges required on the folder.")
    );
}
