//! Bugs that `scripts/soak.sh` (and the property test, `fs_model.rs`) found, each cut down to the
//! few operations that show it, through a real mount of a real `midasfs serve`. A test of a bug
//! not fixed yet is `#[ignore]`d with the reason;
//! `cargo test --release --test integration soak_findings:: -- --ignored` runs it.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::files::names_in;
use common::mount::Mount;
use common::proxy::{Answer, Proxy, Request};
use common::server::TestServer;

/// A fresh `midasfs serve` mounted whole by its administrator, and the administrator's Private
/// folder in the mount. (The mount, bound after the server, is unmounted first.)
fn serve_mounted() -> (TestServer, Mount, PathBuf) {
    let server = TestServer::start();
    let mount = Mount::admin(&server, &[]);
    let private = mount.path.join("users/Admin_User/Private");
    (server, mount, private)
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
    let (server, _mount, private) = serve_mounted();
    std::fs::create_dir(private.join("d")).unwrap();
    std::fs::write(private.join("f"), b"first\n").unwrap();
    save_by_rename(&private, "f", b"saved\n");
    std::fs::rename(private.join("f"), private.join("d/g")).unwrap();
    std::fs::write(private.join("d/g"), b"overwritten\n").unwrap();

    assert_eq!(names_in(&private.join("d")), ["g"]);
    assert_eq!(names_in(&private), ["d"], "g is in d only");
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
    let (server, _mount, private) = serve_mounted();
    std::fs::create_dir_all(private.join("a/b")).unwrap();
    std::fs::write(private.join("a/b/f"), b"first\n").unwrap();
    save_by_rename(&private.join("a/b"), "f", b"saved\n");
    std::fs::rename(private.join("a/b/f"), private.join("a/g")).unwrap();
    std::fs::write(private.join("a/g"), b"overwritten\n").unwrap();

    // what `rm -r a` does first: remove what a/b lists
    let removed = names_in(&private.join("a/b"));
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
    let (server, _mount, private) = serve_mounted();
    std::fs::write(private.join("f"), b"content\n").unwrap();
    assert_eq!(on_server(&server, &[]).1, ["f"]);

    let mut file = std::fs::File::open(private.join("f")).unwrap();
    std::fs::remove_file(private.join("f")).unwrap();
    assert_eq!(on_server(&server, &[]).1, Vec::<String>::new());
    let mut content = Vec::new();
    let err = file.read_to_end(&mut content).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "{err}");
}

/// Holds back the server's answer to the next `midas.item.get` of an item once armed, until
/// released: a listing that asks for it has the folder's children from before what the test
/// does meanwhile.
struct LateListing {
    item: String,
    state: Mutex<(bool, bool, bool)>, // armed, held, released
    changed: Condvar,
}

impl LateListing {
    fn of(item: &str) -> Arc<LateListing> {
        Arc::new(LateListing {
            item: item.to_owned(),
            state: Mutex::default(),
            changed: Condvar::new(),
        })
    }

    fn arm(&self) {
        self.state.lock().unwrap().0 = true;
    }

    /// The proxy's answer to a request.
    fn answer(self: &Arc<Self>, request: &Request) -> Answer {
        let mut state = self.state.lock().unwrap();
        let listing =
            request.method() == "midas.item.get" && request.params.get("id") == Some(&self.item);
        if !listing || !state.0 {
            return Answer::Forward;
        }
        state.0 = false;
        let late = Arc::clone(self);
        Answer::Edit(Box::new(move |body| {
            let mut state = late.state.lock().unwrap();
            state.1 = true;
            late.changed.notify_all();
            // bounded, so that a test that fails cannot hang
            let _ = late
                .changed
                .wait_timeout_while(state, Duration::from_secs(30), |s| !s.2)
                .unwrap();
            body
        }))
    }

    fn wait_until_held(&self) {
        let state = self.state.lock().unwrap();
        let (state, timeout) = self
            .changed
            .wait_timeout_while(state, Duration::from_secs(30), |s| !s.1)
            .unwrap();
        assert!(state.1 && !timeout.timed_out(), "no listing was asked");
    }

    fn release(&self) {
        self.state.lock().unwrap().2 = true;
        self.changed.notify_all();
    }
}

// Found by the CI's `scripts/soak.sh --seconds 60 --two-mounts`: `w4/c587`'s stat showed its size
// before an overwrite (37,351 bytes instead of 63,968) though the server had the new content. A
// listing of the folder (another worker's lookup) had the folder's children from before the
// overwrite's upload ended, and was still asking for other items' details: kept as the fresh
// listing, it put the old size back on the file.
#[test]
fn a_listing_answered_before_an_overwrite_does_not_bring_the_old_size_back() {
    require_fuse!();
    let server = TestServer::start();
    let token = server.token();
    let private_id = server.folder_named(Some(&token), &server.email, "Private");
    let slot = Arc::new(Mutex::new(None::<Arc<LateListing>>));
    let hook = Arc::clone(&slot);
    let proxy = Proxy::start(server.addr(), move |request| {
        match hook.lock().unwrap().as_ref() {
            Some(late) => late.answer(request),
            None => Answer::Forward,
        }
    });
    let mount = Mount::as_admin(&proxy.url, &server.email, &server.api_key, &["--ttl", "1"]);
    let private = mount.path.join("users/Admin_User/Private");
    std::fs::write(private.join("f"), vec![1u8; 100]).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(private.join("f"))
        .unwrap();
    // an item another client made: the folder's next listing asks for its details
    let h = server.upload_item(&token, &private_id, "h", b"h");
    let late = LateListing::of(&h);
    *slot.lock().unwrap() = Some(Arc::clone(&late));
    // the folder's listing is out of date (the TTL), and another program looks a name up
    std::thread::sleep(Duration::from_millis(1100));
    late.arm();
    let lookup = {
        let path = private.join("g");
        std::thread::spawn(move || std::fs::metadata(path).is_err())
    };
    late.wait_until_held();
    {
        use std::io::Write;
        file.set_len(0).unwrap();
        file.write_all(&[2u8; 300]).unwrap();
        drop(file); // the close uploads it
    }
    late.release();
    assert!(lookup.join().unwrap(), "g does not exist");
    // the kernel's entry of f is out of date too (the TTL): stat asks the mount
    assert_eq!(std::fs::metadata(private.join("f")).unwrap().len(), 300);
    assert_eq!(std::fs::read(private.join("f")).unwrap(), vec![2u8; 300]);
}

// A save by rename over a file that another program still has open for writing left the open
// file under the name's inode: once the kernel looked the name up again (a listing), reading it
// gave the open file's bytes instead of what was saved.
#[test]
fn a_file_saved_over_while_open_elsewhere_reads_what_was_saved() {
    use std::io::Write;
    require_fuse!();
    let (server, _mount, private) = serve_mounted();
    std::fs::write(private.join("a"), b"old\n").unwrap();
    let mut open = std::fs::OpenOptions::new()
        .write(true)
        .open(private.join("a"))
        .unwrap();
    open.write_all(b"written by the open file\n").unwrap();
    save_by_rename(&private, "a", b"saved\n");
    // a listing gives the kernel the name's own inode, the one the open file has
    assert_eq!(names_in(&private), ["a"]);
    assert_eq!(std::fs::read(private.join("a")).unwrap(), b"saved\n");
    assert_eq!(std::fs::metadata(private.join("a")).unwrap().len(), 6);
    // its close changes nothing on the server
    drop(open);
    assert_eq!(on_server(&server, &[]).1, ["a"]);
    assert_eq!(std::fs::read(private.join("a")).unwrap(), b"saved\n");
}

// Found by the property test (`fs_model.rs`): `folder.move` refuses a name the new folder holds,
// so a folder renamed over an empty folder in another folder failed with EEXIST.
#[test]
fn a_folder_moved_over_an_empty_folder_elsewhere_replaces_it() {
    require_fuse!();
    let (server, _mount, private) = serve_mounted();
    std::fs::create_dir_all(private.join("a/sub")).unwrap();
    std::fs::write(private.join("a/sub/f"), b"in sub\n").unwrap();
    std::fs::create_dir(private.join("sub")).unwrap();
    std::fs::rename(private.join("a/sub"), private.join("sub")).unwrap();
    assert_eq!(names_in(&private), ["a", "sub"]);
    assert_eq!(names_in(&private.join("a")), Vec::<String>::new());
    assert_eq!(std::fs::read(private.join("sub/f")).unwrap(), b"in sub\n");
    assert_eq!(
        on_server(&server, &[]),
        (vec!["a".to_owned(), "sub".to_owned()], vec![])
    );
    assert_eq!(on_server(&server, &["sub"]), (vec![], vec!["f".to_owned()]));
}

// A save by rename leaves the kernel two inodes for the file: the renamed one (still held by a
// descriptor opened before the rename) and the item's own, which a lookup of the name gives. A
// write through the item's own inode left the other one showing the content before it.
#[test]
fn a_descriptor_opened_before_a_save_by_rename_sees_a_later_write_by_the_name() {
    use std::os::fd::AsRawFd;
    require_fuse!();
    let (server, _mount, private) = serve_mounted();
    std::fs::write(private.join("a"), b"old\n").unwrap();
    let temp = private.join(".a.tmp");
    std::fs::write(&temp, b"saved\n").unwrap();
    let early = std::fs::File::open(&temp).unwrap();
    std::fs::rename(&temp, private.join("a")).unwrap();
    // a listing gives the kernel the item's own inode under the name
    assert_eq!(names_in(&private), ["a"]);
    std::fs::write(private.join("a"), b"written by the name\n").unwrap();

    assert_eq!(
        early.metadata().unwrap().len(),
        20,
        "fstat of the early descriptor"
    );
    let again = format!("/proc/self/fd/{}", early.as_raw_fd());
    assert_eq!(std::fs::read(again).unwrap(), b"written by the name\n");
    assert_eq!(on_server(&server, &[]).1, ["a"]);
}
