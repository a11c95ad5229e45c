//! What midasfs leaves on the local disk and in the process table is the user's alone: the
//! server's store and the mount's spool, recovery files and log are 0700/0600 whatever the
//! umask (and tightened when they exist already), the mount daemon's environment holds no API
//! key, and no password is taken from the command line.

// the integration tests' helpers, of which this binary uses a part
#[allow(dead_code)]
#[path = "integration/common/mod.rs"]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::mount::{is_fuse_mount, unique_mountpoint, Mount, MountOptions};
use common::server::{text, TestServer};
use common::tree::pseudo_random;

/// Every test here wants the most permissive umask (it is per process, so all share it).
fn umask_zero() {
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(0) };
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Every directory and file below `dir` (itself included), with its mode.
fn modes_below(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut found = vec![(dir.to_owned(), mode(dir))];
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(modes_below(&path));
        } else {
            found.push((path.clone(), mode(&path)));
        }
    }
    found
}

fn assert_private_tree(dir: &Path) {
    for (path, mode) in modes_below(dir) {
        let wanted = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, wanted, "{} is {mode:04o}", path.display());
    }
}

#[test]
fn the_servers_store_is_its_users_alone_whatever_the_umask_and_tightened_when_loose() {
    umask_zero();
    let mut server = TestServer::start();
    let token = server.token();
    let folder = server.folder_named(Some(&token), &server.email, "Public");
    server.upload_item(&token, &folder, "data.bin", &pseudo_random(5000, 3));
    let store = server.data_dir.clone();
    let database = store.join("midas.sqlite3");
    assert!(store.join("midas.sqlite3-wal").exists());
    assert!(store
        .join("assetstore")
        .read_dir()
        .unwrap()
        .next()
        .is_some());
    assert_private_tree(&store);

    // A store made by an older version, or copied with loose modes: tightened at the next start.
    server.stop();
    for dir in [&store, &store.join("assetstore"), &store.join("uploads")] {
        chmod(dir, 0o755);
    }
    chmod(&database, 0o644);
    server.restart();
    for dir in [&store, &store.join("assetstore"), &store.join("uploads")] {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    assert_eq!(mode(&database), 0o600);
}

/// `midasfs mount` without `--foreground`: the daemon it leaves behind, unmounted on drop.
struct Daemon {
    mountpoint: PathBuf,
}

impl Daemon {
    fn start(server: &TestServer, extra: &[&str]) -> Daemon {
        let mountpoint = unique_mountpoint();
        let output = common::real::scrub(&mut Command::new(env!("CARGO_BIN_EXE_midasfs")))
            .arg("mount")
            .arg(&server.url)
            .arg(&mountpoint)
            .args(["--email", &server.email])
            .args(extra)
            .env("MIDAS_API_KEY", &server.api_key)
            .env("RUST_LOG", "midasfs=debug")
            .stdin(Stdio::null())
            .output()
            .expect("run midasfs mount");
        assert!(
            output.status.success(),
            "midasfs mount failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(is_fuse_mount(&mountpoint));
        Daemon { mountpoint }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if is_fuse_mount(&self.mountpoint) {
            let _ = Command::new("umount").arg(&self.mountpoint).status();
        }
        if is_fuse_mount(&self.mountpoint) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .status();
        }
        let _ = std::fs::remove_dir(&self.mountpoint);
    }
}

/// The pids of the processes whose arguments name `mountpoint`.
fn pids_serving(mountpoint: &Path) -> Vec<u32> {
    let wanted = mountpoint.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == wanted))
        })
        .collect()
}

#[test]
fn the_mounts_spool_recovery_files_and_log_are_the_users_alone() {
    require_fuse!();
    umask_zero();
    let server = TestServer::any();
    let local = tempfile::tempdir().expect("tempdir");
    let spool = local.path().join("spool");
    std::fs::create_dir(&spool).expect("mkdir spool");
    chmod(&spool, 0o755);
    let log = local.path().join("mount.log");
    std::fs::write(&log, b"an older log\n").expect("old log");
    chmod(&log, 0o644);
    let daemon = Daemon::start(
        &server,
        &[
            "--spool-dir",
            spool.to_str().unwrap(),
            "--spool-size",
            "1",
            "--log-file",
            log.to_str().unwrap(),
        ],
    );
    assert_eq!(mode(&log), 0o600, "the log file");

    // A file being written waits in the spool.
    let private = daemon.mountpoint.join("home").join(server.private());
    let open = std::fs::File::create(private.join("open.txt")).expect("create open.txt");
    std::io::Write::write_all(&mut &open, b"being written\n").expect("write");
    let spooled: Vec<_> = modes_below(&spool)
        .into_iter()
        .filter(|(path, _)| path.extension().is_some_and(|e| e == "spool"))
        .collect();
    assert!(!spooled.is_empty(), "no spool file in {}", spool.display());
    drop(open);

    // A file that cannot be saved (larger than --spool-size) goes to the recovery directory.
    let big = local.path().join("big.bin");
    std::fs::write(&big, pseudo_random(2 * 1024 * 1024, 9)).expect("big file");
    let copied = Command::new("cp")
        .arg(&big)
        .arg(&private)
        .status()
        .expect("cp");
    assert!(
        !copied.success(),
        "cp of a file over --spool-size succeeded"
    );
    assert!(
        std::fs::read_dir(spool.join("recovery"))
            .expect("recovery dir")
            .next()
            .is_some(),
        "nothing recovered"
    );
    assert_private_tree(&spool);
    drop(daemon);
}

#[test]
fn no_mount_process_keeps_the_api_key_in_its_environment() {
    require_fuse!();
    let server = TestServer::any();
    let key = server.api_key.as_bytes();
    let contains_key = |pid: u32| {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        environ.windows(key.len()).any(|w| w == key)
            || environ
                .split(|b| *b == 0)
                .any(|v| v.starts_with(b"MIDAS_API_KEY="))
    };

    let daemon = Daemon::start(&server, &[]);
    let pids = pids_serving(&daemon.mountpoint);
    assert!(!pids.is_empty(), "no daemon found");
    for pid in pids {
        assert!(
            !contains_key(pid),
            "daemon {pid} has the key in /proc/{pid}/environ"
        );
    }
    assert!(std::fs::read_dir(daemon.mountpoint.join("home/Private")).is_ok());
    drop(daemon);

    // In the foreground too (the tests' own mounts are started with the key in the environment).
    let mount = Mount::start(
        &server.url,
        MountOptions {
            email: Some(&server.email),
            api_key: Some(&server.api_key),
            extra: &[],
        },
    );
    let pids = pids_serving(&mount.path);
    assert!(!pids.is_empty(), "no foreground mount found");
    for pid in pids {
        assert!(
            !contains_key(pid),
            "mount {pid} has the key in /proc/{pid}/environ"
        );
    }
    assert!(std::fs::read_dir(mount.path.join("home/Private")).is_ok());
    drop(mount);
}

#[test]
fn passwords_come_from_a_file_or_standard_input_never_from_the_arguments() {
    let server = TestServer::start();
    let run = |args: &[&str], input: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_midasfs"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run midasfs");
        let mut stdin = child.stdin.take().expect("stdin");
        std::io::Write::write_all(&mut stdin, input.as_bytes()).expect("input");
        drop(stdin);
        child.wait_with_output().expect("wait for midasfs")
    };
    let data = server.data_dir.to_str().unwrap().to_owned();

    // In the arguments: refused, with the way to do it, and nothing is created.
    let refused = run(
        &[
            "admin",
            "--data",
            &data,
            "add-user",
            "--email",
            "eve@example.com",
            "--password",
            "visible-pw",
            "--firstname",
            "Eve",
            "--lastname",
            "Argv",
        ],
        "",
    );
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("--password-file"), "{said}");
    let eve = server.call(
        "midas.user.apikey.default",
        &[("email", "eve@example.com"), ("password", "visible-pw")],
    );
    assert_eq!(eve["stat"], "fail", "{eve}");
    let other = tempfile::tempdir().expect("tempdir");
    let serve = run(
        &[
            "serve",
            "--data",
            other.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin-password",
            "visible-pw",
        ],
        "",
    );
    assert!(!serve.status.success());
    let said = String::from_utf8_lossy(&serve.stderr);
    assert!(said.contains("--admin-password-file"), "{said}");
    assert!(
        !other.path().join("midas.sqlite3").exists(),
        "a store was made"
    );

    // From a file and from standard input: the user can log in with that password.
    let file = other.path().join("pw");
    std::fs::write(&file, "file-pw-123\n").expect("password file");
    let users = [
        (
            "file@example.com",
            "file-pw-123",
            vec!["--password-file", file.to_str().unwrap()],
            "",
        ),
        (
            "stdin@example.com",
            "stdin-pw-123",
            vec!["--password-stdin"],
            "stdin-pw-123\n",
        ),
    ];
    for (email, password, how, input) in users {
        let mut args = vec!["admin", "--data", &data, "add-user", "--email", email];
        args.extend(how);
        args.extend(["--firstname", "Pat", "--lastname", "Word"]);
        let added = run(&args, input);
        assert!(
            added.status.success(),
            "{}",
            String::from_utf8_lossy(&added.stderr)
        );
        let key = server.call_ok(
            "midas.user.apikey.default",
            &[("email", email), ("password", password)],
        );
        assert!(!text(&key["apikey"]).is_empty());
    }
}
