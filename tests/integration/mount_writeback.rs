//! Write-back (`--write-back`) through the kernel against a real `midasfs serve`, behind a proxy
//! that holds back, refuses or lets through the upload calls: `close` returns while the server
//! has nothing yet, the mount shows the local copy, `fsync` and `sync DIR` wait and report,
//! unmount waits, and a killed daemon's uploads are sent by the next mount.

use crate::common;

use std::fs::File;
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::mount::{Mount, MountOptions};
use common::proxy::{Answer, Proxy};
use common::server::{md5_hex, text, TestServer, ADMIN_EMAIL};
use serde_json::Value;

/// What the proxy does with the upload calls (`midas.upload.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Uploads {
    /// Held until the state changes.
    Hold,
    Pass,
    /// Answered with HTTP 503.
    Refuse,
}

struct Gate {
    state: Mutex<(Uploads, usize)>,
    changed: Condvar,
}

impl Gate {
    fn new(state: Uploads) -> Arc<Gate> {
        Arc::new(Gate {
            state: Mutex::new((state, 0)),
            changed: Condvar::new(),
        })
    }

    fn set(&self, uploads: Uploads) {
        self.state.lock().unwrap().0 = uploads;
        self.changed.notify_all();
    }

    /// Waits while uploads are held; whether this one goes through.
    fn pass(&self) -> bool {
        let mut state = self.state.lock().unwrap();
        state.1 += 1;
        while state.0 == Uploads::Hold {
            state = self.changed.wait(state).unwrap();
        }
        state.1 -= 1;
        self.changed.notify_all();
        state.0 == Uploads::Pass
    }

    /// Requests held now.
    fn held(&self) -> usize {
        self.state.lock().unwrap().1
    }

    /// Waits until the server holds an upload back; fails the test after 20 s.
    fn wait_until_held(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.held() == 0 {
            assert!(
                Instant::now() < deadline,
                "the upload never reached the server"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Refuses the requests held (those of a daemon that is gone), then lets uploads through.
    fn refuse_held_then_pass(&self) {
        self.set(Uploads::Refuse);
        let mut state = self.state.lock().unwrap();
        while state.1 > 0 {
            state = self.changed.wait(state).unwrap();
        }
        state.0 = Uploads::Pass;
        self.changed.notify_all();
    }
}

fn gated_proxy(server: &TestServer, gate: &Arc<Gate>) -> Proxy {
    let gate = Arc::clone(gate);
    Proxy::start(server.addr(), move |request| {
        if !request.method().starts_with("midas.upload.") || gate.pass() {
            return Answer::Forward;
        }
        Answer::Own(Box::new(|client| {
            let _ =
                client.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
        }))
    })
}

struct Setup {
    server: TestServer,
    token: String,
    private_id: String,
    spool: tempfile::TempDir,
    logs: tempfile::TempDir,
}

fn setup() -> Setup {
    let server = TestServer::start();
    let token = server.token();
    let private_id = server.folder_named(Some(&token), ADMIN_EMAIL, "Private");
    Setup {
        server,
        token,
        private_id,
        spool: tempfile::tempdir().unwrap(),
        logs: tempfile::tempdir().unwrap(),
    }
}

impl Setup {
    /// A write-back mount of `url` with the setup's spool, logging to `log` (in the setup's
    /// log directory).
    fn mount(&self, url: &str, log: &str, extra: &[&str]) -> Mount {
        let mut args = vec![
            "--write-back",
            "--spool-dir",
            self.spool.path().to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Mount::start_logging(
            url,
            MountOptions {
                email: Some(&self.server.email),
                api_key: Some(&self.server.api_key),
                extra: &args,
            },
            Some(&self.logs.path().join(log)),
        )
    }

    fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.logs.path().join(log)).unwrap_or_default()
    }

    /// The MD5 of each revision of the item `name` in Private, oldest first (none if no such
    /// item).
    fn revisions(&self, name: &str) -> Option<Vec<String>> {
        let children = self.server.call_ok(
            "midas.folder.children",
            &[("token", &self.token), ("id", &self.private_id)],
        );
        let item = children["items"]
            .as_array()?
            .iter()
            .find(|item| item["name"] == name)?;
        let item = self.server.call_ok(
            "midas.item.get",
            &[("token", &self.token), ("id", text(&item["item_id"]))],
        );
        let mut revisions: Vec<&Value> = item["revisions"].as_array()?.iter().collect();
        revisions.sort_by_key(|r| text(&r["revision"]).parse::<i64>().unwrap_or(0));
        Some(
            revisions
                .iter()
                .map(|r| text(&r["bitstreams"][0]["checksum"]).to_owned())
                .collect(),
        )
    }

    fn head_md5(&self, name: &str) -> Option<String> {
        self.revisions(name)?.pop()
    }

    /// Waits until the server holds `content` as `name` in Private.
    fn wait_for(&self, name: &str, content: &[u8], limit: Duration) {
        let deadline = Instant::now() + limit;
        let want = md5_hex(content);
        while self.head_md5(name).as_deref() != Some(&want) {
            assert!(
                Instant::now() < deadline,
                "{name} not on the server after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn private(mount: &Mount) -> PathBuf {
    mount.path.join("users/Admin_User/Private")
}

/// Runs `work` on a thread and fails if it takes longer than `limit`: the closes under test
/// must not wait for a server that holds their uploads back.
fn within<T: Send + 'static>(limit: Duration, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(work());
    });
    result
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("still waiting after {limit:?} (for the server?)"))
}

fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap_or_else(|e| panic!("write {name}: {e}"));
    }
}

fn files(count: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            (
                format!("wb-{i}.txt"),
                format!("content of file {i}\n").into_bytes(),
            )
        })
        .collect()
}

#[test]
fn close_returns_while_the_server_holds_uploads_back_and_the_mount_shows_the_local_copy() {
    require_fuse!();
    let setup = setup();
    let gate = Gate::new(Uploads::Hold);
    let proxy = gated_proxy(&setup.server, &gate);
    let mount = setup.mount(&proxy.url, "mount.log", &[]);
    let dir = private(&mount);
    let written = files(5);
    let (target, to_write) = (dir.clone(), written.clone());
    within(Duration::from_secs(20), move || {
        write_files(&target, &to_write)
    });
    assert!(gate.held() > 0, "no upload started");
    for (name, content) in &written {
        assert_eq!(setup.head_md5(name), None, "{name} reached the held server");
        let path = dir.join(name);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            content.len() as u64
        );
        assert_eq!(
            &std::fs::read(&path).unwrap(),
            content,
            "{name} reads its local copy"
        );
    }
    let listed: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    for (name, _) in &written {
        assert!(listed.contains(name), "{name} not listed in {listed:?}");
    }
    gate.set(Uploads::Pass);
    // `sync DIR`: an fsync of a directory waits for every upload.
    within(Duration::from_secs(30), move || {
        File::open(&dir)
            .unwrap()
            .sync_all()
            .expect("sync of the folder")
    });
    for (name, content) in &written {
        assert_eq!(setup.head_md5(name), Some(md5_hex(content)), "{name}");
    }
}

#[test]
fn fsync_returns_the_error_of_an_upload_that_failed_after_the_close() {
    require_fuse!();
    let setup = setup();
    let gate = Gate::new(Uploads::Refuse);
    let proxy = gated_proxy(&setup.server, &gate);
    let mount = setup.mount(&proxy.url, "mount.log", &[]);
    let path = private(&mount).join("refused.txt");
    let mut file = File::create(&path).unwrap();
    file.write_all(b"the server refuses this").unwrap();
    // A close of a duplicate descriptor saves the file, as the last close would.
    let duplicate = file.try_clone().unwrap().into_raw_fd();
    // SAFETY: closing a descriptor this test owns.
    assert_eq!(
        unsafe { libc::close(duplicate) },
        0,
        "close waited for the upload"
    );
    let err = file
        .sync_all()
        .expect_err("fsync reports the failed upload");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    drop(file);
    let recovered: Vec<Vec<u8>> = std::fs::read_dir(setup.spool.path().join("recovery"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().ends_with(".target"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(recovered, vec![b"the server refuses this".to_vec()]);
    drop(mount);
    assert!(
        setup.log("mount.log").contains("write-back: uploading"),
        "the failure is in the log"
    );
}

#[test]
fn closes_of_one_file_reach_the_server_in_order_and_the_last_content_wins() {
    require_fuse!();
    let setup = setup();
    setup
        .server
        .upload_item(&setup.token, &setup.private_id, "order.txt", b"v0");
    let gate = Gate::new(Uploads::Hold);
    let proxy = gated_proxy(&setup.server, &gate);
    let mount = setup.mount(&proxy.url, "mount.log", &[]);
    let path = private(&mount).join("order.txt");
    let target = path.clone();
    within(Duration::from_secs(20), move || {
        for version in ["v1", "v2", "v3"] {
            std::fs::write(&target, version).unwrap();
        }
    });
    assert_eq!(std::fs::read(&path).unwrap(), b"v3");
    gate.set(Uploads::Pass);
    let dir = private(&mount);
    within(Duration::from_secs(30), move || {
        File::open(&dir).unwrap().sync_all().unwrap()
    });
    let revisions = setup.revisions("order.txt").unwrap();
    let versions: Vec<String> = ["v0", "v1", "v2", "v3"]
        .iter()
        .map(|v| md5_hex(v.as_bytes()))
        .collect();
    let order: Vec<usize> = revisions
        .iter()
        .map(|md5| versions.iter().position(|v| v == md5).expect("a version"))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]) && order.last() == Some(&3),
        "revisions out of order: {order:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"v3");
}

#[test]
fn unmount_waits_for_the_pending_uploads_and_says_so() {
    require_fuse!();
    let setup = setup();
    let gate = Gate::new(Uploads::Hold);
    let proxy = gated_proxy(&setup.server, &gate);
    let mut mount = setup.mount(&proxy.url, "mount.log", &[]);
    let written = files(2);
    let (dir, to_write) = (private(&mount), written.clone());
    within(Duration::from_secs(20), move || {
        write_files(&dir, &to_write)
    });
    let log = setup.logs.path().join("mount.log");
    let said = |text: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(text)
    };
    assert!(mount.daemon_running());
    let unmounting = std::thread::spawn(move || mount.unmount_waiting(Duration::from_secs(60)));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !said("waiting for 2 upload(s)") {
        assert!(Instant::now() < deadline, "unmount did not say it waits");
        assert!(
            !unmounting.is_finished(),
            "the daemon left with uploads pending"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !unmounting.is_finished(),
        "the daemon left with uploads pending"
    );
    gate.set(Uploads::Pass);
    let status = unmounting
        .join()
        .unwrap()
        .expect("the daemon exits after the uploads");
    assert!(status.success(), "{status}");
    for (name, content) in &written {
        assert_eq!(setup.head_md5(name), Some(md5_hex(content)), "{name}");
    }
}

#[test]
fn a_killed_daemon_leaves_its_uploads_in_the_spool_and_the_next_mount_sends_them() {
    require_fuse!();
    let setup = setup();
    let gate = Gate::new(Uploads::Hold);
    let proxy = gated_proxy(&setup.server, &gate);
    let mount = setup.mount(&proxy.url, "first.log", &[]);
    let written = files(3);
    let (dir, to_write) = (private(&mount), written.clone());
    within(Duration::from_secs(20), move || {
        write_files(&dir, &to_write)
    });
    mount.kill();
    // The killed daemon's held requests go nowhere.
    gate.refuse_held_then_pass();
    for (name, _) in &written {
        assert_eq!(setup.head_md5(name), None, "{name}");
    }
    let mount = setup.mount(&proxy.url, "second.log", &[]);
    for (name, content) in &written {
        setup.wait_for(name, content, Duration::from_secs(30));
    }
    assert!(
        setup.log("second.log").contains("resuming 3 upload(s)"),
        "{}",
        setup.log("second.log")
    );
    let dir = private(&mount);
    for (name, content) in &written {
        assert_eq!(&std::fs::read(dir.join(name)).unwrap(), content);
    }
    let leftovers: Vec<_> = std::fs::read_dir(setup.spool.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".spool"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(
        std::fs::read_dir(setup.spool.path().join("recovery"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "nothing failed"
    );
}

#[test]
fn a_killed_daemons_closes_resume_from_the_record_in_each_spool_file_alone() {
    require_fuse!();
    let setup = setup();
    let gate = Gate::new(Uploads::Hold);
    let proxy = gated_proxy(&setup.server, &gate);
    let mount = setup.mount(&proxy.url, "first.log", &[]);
    let written = files(2);
    let (dir, to_write) = (private(&mount), written.clone());
    within(Duration::from_secs(20), move || {
        write_files(&dir, &to_write)
    });
    mount.kill();
    gate.refuse_held_then_pass();
    // The sidecars are descriptions, never synced: the record that counts is in the file.
    let spool_files = |suffix: &str| -> Vec<PathBuf> {
        std::fs::read_dir(setup.spool.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect()
    };
    for sidecar in spool_files(".target") {
        std::fs::remove_file(sidecar).unwrap();
    }
    let closed: Vec<_> = spool_files(".spool")
        .into_iter()
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .collect();
    assert_eq!(closed.len(), 2, "{closed:?}");
    let _mount = setup.mount(&proxy.url, "second.log", &[]);
    for (name, content) in &written {
        setup.wait_for(name, content, Duration::from_secs(30));
    }
    assert!(
        setup.log("second.log").contains("resuming 2 upload(s)"),
        "{}",
        setup.log("second.log")
    );
    // Each resumed file goes once its upload returned, just after the server has it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !spool_files(".spool").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        spool_files(".spool"),
        Vec::<PathBuf>::new(),
        "the dead daemon's spool files made ahead are gone too"
    );
}

#[test]
fn an_unmount_that_gives_up_leaves_the_uploads_to_the_next_mount() {
    require_fuse!();
    let setup = setup();
    let gate = Gate::new(Uploads::Hold);
    let proxy = gated_proxy(&setup.server, &gate);
    let mount = setup.mount(&proxy.url, "first.log", &["--write-back-wait", "1"]);
    let written = files(2);
    let (dir, to_write) = (private(&mount), written.clone());
    within(Duration::from_secs(20), move || {
        write_files(&dir, &to_write)
    });
    let status = mount
        .unmount_waiting(Duration::from_secs(20))
        .expect("the daemon gives up and exits");
    assert!(
        setup
            .log("first.log")
            .contains("gave up waiting for 2 upload(s)"),
        "{}",
        setup.log("first.log")
    );
    eprintln!("daemon exited: {status}");
    gate.refuse_held_then_pass();
    let _mount = setup.mount(&proxy.url, "second.log", &[]);
    for (name, content) in &written {
        setup.wait_for(name, content, Duration::from_secs(30));
    }
}

#[test]
fn rename_and_rm_of_files_still_uploading_act_on_what_their_uploads_make() {
    require_fuse!();
    let setup = setup();
    setup
        .server
        .upload_item(&setup.token, &setup.private_id, "old.txt", b"old");
    let gate = Gate::new(Uploads::Hold);
    let proxy = gated_proxy(&setup.server, &gate);
    let mount = setup.mount(&proxy.url, "mount.log", &[]);
    let dir = private(&mount);
    let target = dir.clone();
    within(Duration::from_secs(20), move || {
        std::fs::write(target.join("moved.txt"), b"moved").unwrap();
        std::fs::write(target.join("dropped.txt"), b"dropped").unwrap();
        std::fs::write(target.join("old.txt"), b"overwritten then removed").unwrap();
    });
    // A rename waits for an upload that runs: on another thread, while the server holds it.
    let target = dir.clone();
    let changes = std::thread::spawn(move || {
        std::fs::rename(target.join("moved.txt"), target.join("renamed.txt")).unwrap();
        std::fs::remove_file(target.join("dropped.txt")).unwrap();
        std::fs::remove_file(target.join("old.txt")).unwrap();
    });
    gate.set(Uploads::Pass);
    changes.join().unwrap();
    let synced = dir.clone();
    within(Duration::from_secs(30), move || {
        File::open(&synced).unwrap().sync_all().unwrap()
    });
    assert_eq!(setup.head_md5("renamed.txt"), Some(md5_hex(b"moved")));
    for gone in ["moved.txt", "dropped.txt", "old.txt"] {
        assert_eq!(setup.head_md5(gone), None, "{gone} is on the server");
    }
    assert_eq!(std::fs::read(dir.join("renamed.txt")).unwrap(), b"moved");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["renamed.txt"]);
}

/// A killed daemon's new file whose item was made but not filled (the upload call was held):
/// the next mount shows it in its folder as a file of the spooled size, which reads as what was
/// written, from the moment it resumes the upload, not the empty item (a directory) the server
/// lists; once uploaded it is the server's file, under the item the upload filled.
#[test]
fn a_resumed_upload_is_a_file_in_its_folder_at_once_and_the_servers_file_after() {
    require_fuse!();
    let setup = setup();
    let gate = Gate::new(Uploads::Hold);
    // Only the content is held: the item is made (`generatetoken` with a folder makes it).
    let held = Arc::clone(&gate);
    let proxy = Proxy::start(setup.server.addr(), move |request| {
        if request.method() != "midas.upload.perform" || held.pass() {
            return Answer::Forward;
        }
        Answer::Own(Box::new(|client| {
            let _ =
                client.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
        }))
    });
    let mount = setup.mount(&proxy.url, "first.log", &[]);
    let content = common::tree::pseudo_random(300 << 10, 7);
    let (dir, to_write) = (private(&mount), content.clone());
    within(Duration::from_secs(20), move || {
        std::fs::write(dir.join("resumed.bin"), to_write).unwrap()
    });
    gate.wait_until_held();
    mount.kill();
    // The dead daemon's held request is refused; the next mount's wait.
    gate.set(Uploads::Refuse);
    while gate.held() > 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    gate.set(Uploads::Hold);
    assert!(
        setup.revisions("resumed.bin").is_some(),
        "the empty item is there"
    );

    let mount = setup.mount(&proxy.url, "second.log", &[]);
    let path = private(&mount).join("resumed.bin");
    let meta = std::fs::metadata(&path).expect("listed while its upload waits");
    assert!(meta.is_file(), "shown as {:?}", meta.file_type());
    assert_eq!(meta.len(), content.len() as u64);
    assert!(
        std::fs::read(&path).expect("read the local copy") == content,
        "reads what was written"
    );
    assert!(
        std::fs::read_dir(private(&mount))
            .unwrap()
            .any(|e| e.unwrap().file_name() == "resumed.bin"),
        "in the folder's listing"
    );

    gate.set(Uploads::Pass);
    setup.wait_for("resumed.bin", &content, Duration::from_secs(30));
    let children = setup.server.call_ok(
        "midas.folder.children",
        &[("token", &setup.token), ("id", &setup.private_id)],
    );
    let items: Vec<&Value> = children["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["name"] == "resumed.bin")
        .collect();
    assert_eq!(items.len(), 1, "{children}");
    let item_id = text(&items[0]["item_id"]).to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = common::mount::getxattr(&path, "user.midas.item_id");
        if shown.as_deref() == Some(item_id.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the mount shows item {shown:?}, the server holds {item_id}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.is_file());
    assert_eq!(std::fs::read(&path).unwrap(), content);
}

/// SIGTERM while the server holds an upload back (it never answers): the daemon ends once the
/// upload has not moved for 10 s, not after `--write-back-wait`, says where the data stays, and
/// the file's bytes stay in the spool, which the next mount uploads.
#[test]
fn sigterm_while_an_upload_hangs_ends_the_daemon_once_it_stalls_and_keeps_the_file_for_the_next_mount(
) {
    require_fuse!();
    let setup = setup();
    let gate = Gate::new(Uploads::Hold);
    let proxy = gated_proxy(&setup.server, &gate);
    let mut mount = setup.mount(&proxy.url, "first.log", &[]);
    let written = files(1);
    let (dir, to_write) = (private(&mount), written.clone());
    within(Duration::from_secs(20), move || {
        write_files(&dir, &to_write)
    });
    gate.wait_until_held();
    let signalled = Instant::now();
    // SAFETY: sending a signal to the daemon this test started.
    unsafe { libc::kill(mount.pid() as libc::pid_t, libc::SIGTERM) };
    while mount.daemon_running() && signalled.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = signalled.elapsed();
    assert!(
        !mount.daemon_running(),
        "the daemon still runs {took:?} after SIGTERM"
    );
    let log = setup.log("first.log");
    assert!(log.contains("not uploaded"), "{log}");
    let (name, content) = &written[0];
    let kept = std::fs::read_dir(setup.spool.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .any(|p| std::fs::read(&p).is_ok_and(|c| c == *content));
    assert!(kept, "the file's bytes are in the spool");
    drop(mount);
    gate.refuse_held_then_pass();
    let _mount = setup.mount(&proxy.url, "second.log", &[]);
    setup.wait_for(name, content, Duration::from_secs(30));
}
