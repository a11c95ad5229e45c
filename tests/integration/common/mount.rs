//! A real mount through the kernel for tests: `midasfs mount --foreground` as a child process,
//! unmounted and cleaned up in `Drop` (which also runs while a failing test unwinds).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::server::TestServer;

const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Whether this machine can mount FUSE filesystems. With `MIDASFS_REQUIRE_FUSE=1` (set by CI) a
/// machine that cannot is an error, so that skipped mount tests never pass for green.
pub fn fuse_available() -> bool {
    let available = Path::new("/dev/fuse").exists();
    if !available {
        assert!(
            std::env::var("MIDASFS_REQUIRE_FUSE").is_err(),
            "MIDASFS_REQUIRE_FUSE is set but /dev/fuse is missing"
        );
        eprintln!("SKIPPED: /dev/fuse is missing, mount tests cannot run here");
    }
    available
}

/// Returns early from a test when FUSE is not available (see [`fuse_available`]).
#[macro_export]
macro_rules! require_fuse {
    () => {
        if !common::mount::fuse_available() {
            return;
        }
    };
}

pub struct Mount {
    pub path: PathBuf,
    child: Option<Child>,
}

pub struct MountOptions<'a> {
    pub email: Option<&'a str>,
    pub api_key: Option<&'a str>,
    pub extra: &'a [&'a str],
}

impl Mount {
    /// Mounts `url` as the given user (or anonymously) and waits until the kernel shows the mount.
    pub fn start(url: &str, options: MountOptions<'_>) -> Mount {
        Mount::start_logging(url, options, None)
    }

    /// Like [`Mount::start`], the daemon's log (its stderr) going to the file `log`.
    pub fn start_logging(url: &str, options: MountOptions<'_>, log: Option<&Path>) -> Mount {
        let path = unique_mountpoint();
        let mut command = Command::new(env!("CARGO_BIN_EXE_midasfs"));
        super::real::scrub(&mut command)
            .arg("mount")
            .arg(url)
            .arg(&path)
            .arg("--foreground")
            .args(options.extra)
            .env("RUST_LOG", "midasfs=debug")
            .env_remove("MIDAS_API_KEY")
            .stdin(Stdio::null());
        if let Some(email) = options.email {
            command.arg("--email").arg(email);
        }
        if let Some(key) = options.api_key {
            command.env("MIDAS_API_KEY", key);
        }
        if let Some(log) = log {
            command.stderr(std::fs::File::create(log).expect("create the daemon's log"));
        }
        let child = command.spawn().expect("start midasfs mount");
        let mut mount = Mount {
            path,
            child: Some(child),
        };
        mount.wait_until_mounted();
        mount
    }

    /// A mount of the whole of `server` as its administrator.
    pub fn admin(server: &TestServer, extra: &[&str]) -> Mount {
        Mount::as_admin(&server.url, &server.email, &server.api_key, extra)
    }

    /// A mount of `url` (the server itself or a proxy in front of it) as the user `email`.
    pub fn as_admin(url: &str, email: &str, api_key: &str, extra: &[&str]) -> Mount {
        Mount::start(
            url,
            MountOptions {
                email: Some(email),
                api_key: Some(api_key),
                extra,
            },
        )
    }

    fn wait_until_mounted(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_fuse_mount(&self.path) {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("midasfs mount exited before mounting: {status}");
            }
            assert!(Instant::now() < deadline, "mount not ready after 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id of the daemon.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running daemon").id()
    }

    /// What `midasfs status --json` says of this mount (its own entry when several are listed).
    pub fn status(&self) -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_midasfs"))
            .args(["status", "--json", self.path.to_str().unwrap()])
            .output()
            .unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        match answer.as_array() {
            Some(all) => all[0].clone(),
            None => answer,
        }
    }

    /// Unmounts the way a user would and waits for the daemon to exit.
    pub fn unmount(mut self) -> std::process::ExitStatus {
        self.cleanup().expect("daemon status")
    }

    /// No mount: stands in for one taken out of a struct to be unmounted or killed.
    pub fn placeholder() -> Mount {
        Mount {
            path: PathBuf::new(),
            child: None,
        }
    }

    /// Unmounts as a user would (the kernel lets go at once) and waits up to `limit` for the
    /// daemon to exit by itself; None if it still runs then (it is then killed).
    pub fn unmount_waiting(mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        if is_fuse_mount(&self.path) && !umount(&self.path, 0) {
            umount(&self.path, libc::MNT_DETACH);
        }
        let mut child = self.child.take()?;
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = std::fs::remove_dir(&self.path);
        status
    }

    /// Whether the daemon still runs.
    pub fn daemon_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills the daemon with SIGKILL, as a crash would, and clears the dead mount away.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A dead FUSE mount answers nothing (ENOTCONN) until it is detached.
        umount(&self.path, libc::MNT_DETACH);
        self.cleanup();
    }

    fn cleanup(&mut self) -> Option<std::process::ExitStatus> {
        if is_fuse_mount(&self.path) && !umount(&self.path, 0) {
            umount(&self.path, libc::MNT_DETACH);
        }
        let status = self.child.take().map(|mut child| {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    break status;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break child.wait().expect("wait for midasfs");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        // Only an unmounted, empty directory is removed: never descend into a live mount.
        let _ = std::fs::remove_dir(&self.path);
        status
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.cleanup();
    }
}

pub fn unique_mountpoint() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "midasfs-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&path).expect("create mountpoint");
    path
}

pub fn is_fuse_mount(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let target = path.to_string_lossy();
    if !mounts
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(target.as_ref()))
    {
        return false;
    }
    let c_path = c_path(path);
    // SAFETY: statfs fills the struct we own from a valid C string.
    unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut stat) == 0 && stat.f_type as i64 == FUSE_SUPER_MAGIC
    }
}

fn umount(path: &Path, flags: i32) -> bool {
    let c_path = c_path(path);
    // SAFETY: umount2 with a valid C string.
    unsafe { libc::umount2(c_path.as_ptr(), flags) == 0 }
}

fn c_path(path: &Path) -> std::ffi::CString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

/// An extended attribute of a file in the mount, as text.
pub fn getxattr(path: &Path, name: &str) -> Option<String> {
    let c_path = c_path(path);
    let c_name = std::ffi::CString::new(name).expect("name without NUL");
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: the buffer is ours and its length is passed along.
    let len = unsafe {
        libc::getxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (len >= 0).then(|| String::from_utf8_lossy(&buf[..len as usize]).into_owned())
}

/// The names of a file's extended attributes.
pub fn listxattr(path: &Path) -> Vec<String> {
    let c_path = c_path(path);
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: the buffer is ours and its length is passed along.
    let len = unsafe { libc::listxattr(c_path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len <= 0 {
        return Vec::new();
    }
    buf[..len as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}
