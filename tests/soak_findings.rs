//! Bugs that `scripts/soak.sh` found, each cut down to the few operations that show it, through a
//! real mount of a real `midasfs serve`. A test of a bug not fixed yet is `#[ignore]`d with the
//! reason; `cargo test --release --test soak_findings -- --ignored` runs it.

mod common;

use std::path::Path;

use common::mount::Mount;
use common::server::TestServer;

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// What the server holds in a folder of the administrator's Private folder: (folders, items).
fn on_server(server: &TestServer, path: &[&str]) -> (Vec<String>, Vec<String>) {
    let token = server.token();
    let mut folder = server.folder_named(Some(&token), &server.email, "Private");
    let mut children = server.call_ok(
        "midas.folder.children",
        &[("token", &token), ("id", &folder)],
    );
    for part in path {
        let found = children["folders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == *part)
            .unwrap_or_else(|| panic!("no folder {part} on the server: {children}"));
        folder = found["folder_id"].as_str().unwrap().to_owned();
        children = server.call_ok(
            "midas.folder.children",
            &[("token", &token), ("id", &folder)],
        );
    }
    let listed = |kind: &str| -> Vec<String> {
        let mut names: Vec<String> = children[kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    (listed("folders"), listed("items"))
}

/// Saves `name` in `dir` the way editors and rsync do: a new temporary file renamed over it. The
/// kernel then keeps the temporary file's inode under the name, beside the item's own inode.
fn save_by_rename(dir: &Path, name: &str, content: &[u8]) {
    let temp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temp, content).unwrap();
    std::fs::rename(&temp, dir.join(name)).unwrap();
}

// Found by `scripts/soak.sh --workers 1 --seconds 40 --seed 1` (the listing of w0/ kept `m76`
// after `mv r46 d69/m76`; the server had it in d69 only), and in every longer run, also as `rm`
// failing with EACCES and a read seeing another size than the file's.
#[test]
fn a_saved_file_moved_then_overwritten_is_listed_only_in_its_new_folder() {
    require_fuse!();
    let server = TestServer::start();
    let mount = Mount::as_admin(&server.url, &server.email, &server.api_key, &[]);
    let private = mount.path.join("users/Admin_User/Private");
    std::fs::create_dir(private.join("d")).unwrap();
    std::fs::write(private.join("f"), b"first\n").unwrap();
    save_by_rename(&private, "f", b"saved\n");
    std::fs::rename(private.join("f"), private.join("d/g")).unwrap();
    std::fs::write(private.join("d/g"), b"overwritten\n").unwrap();

    assert_eq!(names(&private.join("d")), ["g"]);
    assert_eq!(names(&private), ["d"], "g is in d only");
    assert_eq!(on_server(&server, &[]), (vec!["d".to_owned()], vec![]));
    assert_eq!(on_server(&server, &["d"]), (vec![], vec!["g".to_owned()]));
}

// The same bug loses data: `rm` of the name the old folder still shows deletes the item, which
// is the moved file. (With `rm -r` of the old folder the moved file is gone too, and removing it
// afterwards fails with EACCES, as the soak saw; a 15-second soak lost a file this way: rsync
// over r158, `mv d150/r158 m179`, `mv m179 d152/c175`, overwrite, `rm -r d150`.)
#[test]
fn removing_what_the_old_folder_shows_of_a_moved_saved_file_keeps_the_file() {
    require_fuse!();
    let server = TestServer::start();
    let mount = Mount::as_admin(&server.url, &server.email, &server.api_key, &[]);
    let private = mount.path.join("users/Admin_User/Private");
    std::fs::create_dir_all(private.join("a/b")).unwrap();
    std::fs::write(private.join("a/b/f"), b"first\n").unwrap();
    save_by_rename(&private.join("a/b"), "f", b"saved\n");
    std::fs::rename(private.join("a/b/f"), private.join("a/g")).unwrap();
    std::fs::write(private.join("a/g"), b"overwritten\n").unwrap();

    // what `rm -r a` does first: remove what a/b lists
    let removed = names(&private.join("a/b"));
    for name in &removed {
        std::fs::remove_file(private.join("a/b").join(name)).unwrap();
    }
    let content = std::fs::read(private.join("a/g"));
    assert!(
        matches!(&content, Ok(c) if c == b"overwritten\n"),
        "a/g after removing {removed:?} from a/b: {content:?}"
    );
    assert_eq!(on_server(&server, &["a"]).1, ["g"]);
}

// Found by `scripts/soak.sh --workers 4 --seconds 60 --seed 1`: a worker reading another's file
// got EIO while its writer was removing the folder (`rm -r d391` during `cross-read d391/f444`).
// A file removed on the server while open is gone, not a failing server: real Midas answers its
// download with HTTP 404, which the mount retried and then called an I/O error.
#[test]
fn reading_a_file_removed_while_open_says_stale_not_io_error() {
    use std::io::Read;
    require_fuse!();
    let server = TestServer::start();
    let mount = Mount::as_admin(&server.url, &server.email, &server.api_key, &[]);
    let private = mount.path.join("users/Admin_User/Private");
    std::fs::write(private.join("f"), b"content\n").unwrap();
    assert_eq!(on_server(&server, &[]).1, ["f"]);

    let mut file = std::fs::File::open(private.join("f")).unwrap();
    std::fs::remove_file(private.join("f")).unwrap();
    assert_eq!(on_server(&server, &[]).1, Vec::<String>::new());
    let mut content = Vec::new();
    let err = file.read_to_end(&mut content).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "{err}");
}
