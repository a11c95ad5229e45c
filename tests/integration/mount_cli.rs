//! midasfs as Linux mounts it: `mount -t fuse.midasfs URL DIR -o OPTS` and an fstab entry
//! mounted with `mount DIR` (both through mount.fuse3, which runs `midasfs URL DIR -o OPTS`),
//! profiles written by `midasfs login`, `midasfs status` and `midasfs unmount` — against a real
//! `midasfs serve`.
//!
//! mount(8) runs its helpers without PATH, so `/bin/sh` finds `midasfs` on its default PATH: the
//! tests that go through mount(8) link the binary under test as /usr/local/sbin/midasfs for
//! their duration (root only; they say SKIPPED otherwise).

use crate::common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::mount::{is_fuse_mount, unique_mountpoint, Mount};
use common::server::TestServer;

const BIN: &str = env!("CARGO_BIN_EXE_midasfs");
/// Where the tests link the binary for mount.fuse3's `/bin/sh -c midasfs …`.
const LINK: &str = "/usr/local/sbin/midasfs";
const FSTAB: &str = "/etc/fstab";

/// The link and /etc/fstab are machine-wide: one test at a time touches them.
static MACHINE: Mutex<()> = Mutex::new(());

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Root, /dev/fuse and mount.fuse3; otherwise prints why the test is skipped.
fn can_use_mount8(test: &str) -> bool {
    if !common::mount::fuse_available() {
        return false;
    }
    if !is_root() {
        eprintln!("SKIPPED {test}: mount -t fuse.midasfs and fstab mounts need root");
        return false;
    }
    if !Path::new("/sbin/mount.fuse3").exists() && !Path::new("/usr/sbin/mount.fuse3").exists() {
        eprintln!("SKIPPED {test}: mount.fuse3 is missing (apt-get install fuse3)");
        return false;
    }
    true
}

/// `/usr/local/sbin/midasfs` -> the binary under test, removed on drop (also on panic).
struct Link {
    _machine: MutexGuard<'static, ()>,
}

impl Link {
    fn install() -> Option<Link> {
        let machine = MACHINE.lock().unwrap_or_else(|p| p.into_inner());
        match std::fs::read_link(LINK) {
            Ok(target) if target != Path::new(BIN) => {
                eprintln!("SKIPPED: {LINK} exists and is not this build's midasfs");
                return None;
            }
            Ok(_) => {}
            Err(_) => {
                std::fs::create_dir_all("/usr/local/sbin").unwrap();
                std::os::unix::fs::symlink(BIN, LINK).expect("link midasfs into /usr/local/sbin");
            }
        }
        Some(Link { _machine: machine })
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if std::fs::read_link(LINK).is_ok_and(|t| t == Path::new(BIN)) {
            let _ = std::fs::remove_file(LINK);
        }
    }
}

/// One line added to /etc/fstab, removed on drop (also on panic); the file is removed if the
/// test created it.
struct FstabLine {
    line: String,
    created: bool,
}

impl FstabLine {
    fn add(line: String) -> FstabLine {
        let created = !Path::new(FSTAB).exists();
        let mut text = std::fs::read_to_string(FSTAB).unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&line);
        text.push('\n');
        std::fs::write(FSTAB, text).expect("write /etc/fstab");
        FstabLine { line, created }
    }
}

impl Drop for FstabLine {
    fn drop(&mut self) {
        if self.created {
            let _ = std::fs::remove_file(FSTAB);
            return;
        }
        if let Ok(text) = std::fs::read_to_string(FSTAB) {
            let kept: String = text
                .lines()
                .filter(|l| *l != self.line)
                .map(|l| format!("{l}\n"))
                .collect();
            let _ = std::fs::write(FSTAB, kept);
        }
    }
}

/// Unmounts (lazily if need be) and removes the mountpoint when dropped.
struct Mountpoint(PathBuf);

impl Drop for Mountpoint {
    fn drop(&mut self) {
        if is_fuse_mount(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A config directory for profiles (XDG_CONFIG_HOME), private as a real one would be.
fn config_home() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn midasfs(args: &[&str], config: &Path, stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("XDG_CONFIG_HOME", config)
        .env_remove("MIDAS_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run midasfs");
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().expect("wait for midasfs")
}

fn text(output: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `midasfs login` for the test server's administrator, as profile `lab`.
fn login(server: &TestServer, config: &Path) {
    let out = midasfs(
        &[
            "login",
            &server.url,
            "--profile",
            "lab",
            "--email",
            &server.email,
        ],
        config,
        Some(&format!("{}\n", server.password)),
    );
    assert!(out.status.success(), "login failed: {}", text(&out));
}

/// What a mount(8) test needs: midasfs linked where mount.fuse3 finds it, a server, a config
/// home logged in to it as profile `lab`, and a fresh mountpoint; `None` when the link cannot be
/// made (the test is skipped).
fn logged_in_as_lab() -> Option<(Link, TestServer, tempfile::TempDir, Mountpoint)> {
    let link = Link::install()?;
    let server = TestServer::any();
    let config = config_home();
    login(&server, config.path());
    Some((link, server, config, Mountpoint(unique_mountpoint())))
}

/// `midasfs unmount DIR`, which must succeed.
fn midasfs_unmount(dir: &Path, config: &Path) {
    let out = midasfs(&["unmount", dir.to_str().unwrap()], config, None);
    assert!(out.status.success(), "midasfs unmount: {}", text(&out));
}

#[test]
fn login_stores_the_api_key_in_a_private_file_and_never_the_password() {
    let server = TestServer::any();
    let config = config_home();
    login(&server, config.path());
    let dir = config.path().join("midasfs");
    let toml = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(toml.contains("[lab]"), "{toml}");
    assert!(
        toml.contains(&format!("url = \"{}\"", server.url)),
        "{toml}"
    );
    assert!(
        !toml.contains(&server.password),
        "the password is in config.toml"
    );
    let key = std::fs::read_to_string(dir.join("lab.key")).unwrap();
    assert_eq!(key.trim(), server.api_key);
    for file in ["config.toml", "lab.key"] {
        let mode = std::fs::metadata(dir.join(file)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file} has mode {mode:o}");
    }
    // A wrong password writes nothing.
    let out = midasfs(
        &[
            "login",
            &server.url,
            "--profile",
            "other",
            "--email",
            &server.email,
        ],
        config.path(),
        Some("wrong-password\n"),
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!dir.join("other.key").exists());
}

#[test]
fn help_completions_and_man_page_come_from_one_definition() {
    let config = config_home();
    let help = midasfs(&["--help"], config.path(), None);
    let help = text(&help);
    for wanted in [
        "Examples:",
        "midasfs unmount",
        "fuse.midasfs",
        "Exit status",
    ] {
        assert!(help.contains(wanted), "--help lacks {wanted:?}: {help}");
    }
    let mount_help = text(&midasfs(&["help", "mount"], config.path(), None));
    for wanted in ["-o read_only", "--uid", "--umask", "_netdev"] {
        assert!(mount_help.contains(wanted), "help mount lacks {wanted:?}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = midasfs(&["completions", shell], config.path(), None);
        assert!(out.status.success(), "{}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("unmount") && script.contains("spool-dir"),
            "{shell}"
        );
    }
    let man = midasfs(&["man"], config.path(), None);
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH midasfs 1"));
    let man = midasfs(&["man", "mount"], config.path(), None);
    assert!(String::from_utf8_lossy(&man.stdout).contains("\\-\\-spool\\-dir"));
    // -v before the mount form still means `midasfs mount`.
    let out = midasfs(
        &["-v", "http://127.0.0.1:9", "/nonexistent", "-o", "bogus"],
        config.path(),
        None,
    );
    assert!(
        text(&out).contains("unknown mount option \"bogus\""),
        "{}",
        text(&out)
    );
}

#[test]
fn unknown_mount_options_and_profiles_are_usage_errors_that_name_them() {
    let config = config_home();
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().to_str().unwrap();
    let out = midasfs(
        &[
            "http://127.0.0.1:9/midas",
            mountpoint,
            "-o",
            "ro,colour=red",
        ],
        config.path(),
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown mount option \"colour\""),
        "{}",
        text(&out)
    );
    let out = midasfs(&["mount", "nosuchprofile", mountpoint], config.path(), None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no profile \"nosuchprofile\""),
        "{}",
        text(&out)
    );
    // A config file other users can change is refused.
    let config_dir = config.path().join("midasfs");
    std::fs::create_dir(&config_dir).unwrap();
    let file = config_dir.join("config.toml");
    std::fs::write(&file, "[lab]\nurl = \"http://127.0.0.1:9\"\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = midasfs(&["mount", "lab", mountpoint], config.path(), None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod go-w"),
        "{}",
        text(&out)
    );
}

#[test]
fn mount_t_fuse_midasfs_mounts_with_o_options_and_midasfs_unmount_unmounts() {
    if !can_use_mount8("mount -t fuse.midasfs") {
        return;
    }
    let Some((_link, server, config, mountpoint)) = logged_in_as_lab() else {
        return;
    };
    let out = Command::new("mount")
        .args(["-t", "fuse.midasfs", &server.url])
        .arg(&mountpoint.0)
        .args([
            "-o",
            "ro,_netdev,profile=lab,uid=4242,gid=4343,umask=027,ttl=2",
        ])
        .env("XDG_CONFIG_HOME", config.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount -t fuse.midasfs: {}",
        text(&out)
    );
    // mount(8) returns once midasfs says the mount is ready.
    assert!(is_fuse_mount(&mountpoint.0));

    let private = mountpoint.0.join("home/Private");
    let meta = std::fs::metadata(&private).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
    // The administrator may write there, but ro leaves no write bit at all; Private is the
    // owner's alone (0700 before ro), and umask=027 takes other's bits from Public (0755).
    assert_eq!(meta.mode() & 0o777, 0o500, "mode {:o}", meta.mode());
    let public = std::fs::metadata(mountpoint.0.join("home/Public")).unwrap();
    assert_eq!(public.mode() & 0o777, 0o550, "mode {:o}", public.mode());
    let err = std::fs::write(private.join("new.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");

    let status = midasfs(
        &["status", mountpoint.0.to_str().unwrap()],
        config.path(),
        None,
    );
    let shown = text(&status);
    assert!(status.status.success(), "{shown}");
    assert!(shown.contains(&server.url), "{shown}");
    assert!(shown.contains("(profile lab)"), "{shown}");
    assert!(shown.contains("<admin@example.com>"), "{shown}");
    assert!(shown.contains("read-only"), "{shown}");
    let json = midasfs(&["status", "--json"], config.path(), None);
    let answers: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let mine = answers
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["mountpoint"] == mountpoint.0.to_str().unwrap())
        .unwrap_or_else(|| panic!("not in status --json: {answers}"));
    assert!(mine["requests"]["calls"].as_u64().unwrap() > 0, "{mine}");
    assert_eq!(mine["uploads"]["files_being_written"], 0, "{mine}");

    midasfs_unmount(&mountpoint.0, config.path());
    assert!(!is_fuse_mount(&mountpoint.0));
    // unmount returns once the daemon is gone: its control socket is gone too.
    let after = midasfs(&["status", "--json"], config.path(), None);
    assert!(
        !String::from_utf8_lossy(&after.stdout).contains(mountpoint.0.to_str().unwrap()),
        "{}",
        text(&after)
    );
}

#[test]
fn an_fstab_entry_with_a_profile_mounts_with_mount_dir_and_uploads_before_unmount_returns() {
    if !can_use_mount8("fstab") {
        return;
    }
    let Some((_link, server, config, mountpoint)) = logged_in_as_lab() else {
        return;
    };
    let _fstab = FstabLine::add(format!(
        "{} {} fuse.midasfs noauto,user,_netdev,profile=lab,x-systemd.automount,comment=test 0 0",
        server.url,
        mountpoint.0.display()
    ));
    let out = Command::new("mount")
        .arg(&mountpoint.0)
        .env("XDG_CONFIG_HOME", config.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "mount DIR: {}", text(&out));
    assert!(is_fuse_mount(&mountpoint.0));

    // Writable (no ro): a file copied in reaches the server.
    let target = mountpoint
        .0
        .join("home")
        .join(server.private())
        .join("from-fstab.txt");
    std::fs::write(&target, b"written through an fstab mount\n").unwrap();
    midasfs_unmount(&mountpoint.0, config.path());
    assert!(!is_fuse_mount(&mountpoint.0));
    let token = server.token();
    let private = server.folder_at(&token, &server.email, server.private());
    let children = server.call_ok(
        "midas.folder.children",
        &[("token", &token), ("id", &private)],
    );
    assert!(
        children.to_string().contains("from-fstab.txt"),
        "the file is not on the server: {children}"
    );
}

/// SIGTERM while a `cp` waits for an upload that moves slowly (every answer takes 3 s, so the
/// upload outlasts the 3 s a daemon with nothing to upload waits): the daemon finishes the
/// upload before it ends, and the `cp` succeeds.
#[test]
fn sigterm_during_an_upload_that_moves_waits_for_it_and_the_copy_succeeds() {
    require_fuse!();
    let server = TestServer::start_with(&["--latency", "3000"]);
    let mut mount = Mount::admin(&server, &[]);
    let source = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(source.path(), b"slow but sure\n").unwrap();
    let target = mount.path.join("home/Private/slow.txt");
    let token = server.token();
    let private = server.folder_named(Some(&token), &server.email, "Private");
    let mut cp = Command::new("cp")
        .arg(source.path())
        .arg(&target)
        .spawn()
        .unwrap();
    // The signal comes while the copy writes or its close uploads (each of the upload's three
    // calls takes 3 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    while mount.status()["uploads"]["files_being_written"] != 1 {
        assert!(Instant::now() < deadline, "the copy never began");
        std::thread::sleep(Duration::from_millis(50));
    }
    let signalled = Instant::now();
    // SAFETY: sending a signal to the daemon this test started.
    unsafe { libc::kill(mount.pid() as libc::pid_t, libc::SIGTERM) };
    let copied = cp.wait().unwrap();
    let took = signalled.elapsed();
    assert!(
        copied.success(),
        "cp failed {took:?} after SIGTERM: {copied}"
    );
    while mount.daemon_running() && signalled.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!mount.daemon_running(), "the daemon never ended");
    let children = server.call_ok(
        "midas.folder.children",
        &[("token", &token), ("id", &private)],
    );
    assert!(
        children.to_string().contains("slow.txt"),
        "the file is not on the server: {children}"
    );
    assert!(
        took > Duration::from_secs(3),
        "the upload ended {took:?} after the signal, within the grace: this checks nothing"
    );
}

#[test]
fn midasfs_unmount_returns_after_an_upload_that_was_still_running_has_finished() {
    require_fuse!();
    // Every answer takes 1.5 s, so an upload takes several seconds.
    let server = TestServer::start_with(&["--latency", "1500"]);
    let mount = Mount::admin(&server, &[]);
    let file = mount.path.join("home/Private/late.txt");
    let fifo = tempfile::tempdir().unwrap();
    let go = fifo.path().join("go");
    assert!(Command::new("mkfifo").arg(&go).status().unwrap().success());
    // The shell opens the file and writes; a child that inherited the descriptor writes more
    // after the shell's close (which uploaded the first line). The child's close is not the
    // opener's: its content is uploaded on release, after the close has returned.
    let script = r#"
        exec 3>"$1"
        echo first >&3
        ( read go < "$2"; echo second >&3 ) &
        exec 3>&-
        echo go > "$2"
        wait
    "#;
    let status = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(&file)
        .arg(&go)
        .status()
        .unwrap();
    assert!(status.success());

    let config = config_home();
    midasfs_unmount(&mount.path, config.path());

    let token = server.token();
    let private = server.folder_named(Some(&token), &server.email, "Private");
    let children = server.call_ok(
        "midas.folder.children",
        &[("token", &token), ("id", &private)],
    );
    let item = children["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "late.txt")
        .unwrap_or_else(|| panic!("late.txt is not on the server: {children}"));
    let item_id = item["item_id"].as_str().unwrap();
    let got = server.call_ok("midas.item.get", &[("token", &token), ("id", item_id)]);
    let expected = common::server::md5_hex(b"first\nsecond\n");
    assert!(
        got.to_string().contains(&expected),
        "the server lacks the content written last: {got}"
    );
}
