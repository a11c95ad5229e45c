//! `midasfs demo` as a new user runs it: it mounts outside the directory it is started in and
//! leaves nothing behind there or where it mounted.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::files::names_in;
use common::mount::is_fuse_mount;

/// The demo as a child process; killed and its mount detached if a test fails before it stops.
struct Demo {
    child: Child,
    mountpoint: PathBuf,
}

impl Demo {
    fn start(cwd: &Path, runtime_dir: Option<&Path>, args: &[&Path]) -> Child {
        let mut command = Command::new(env!("CARGO_BIN_EXE_midasfs"));
        command
            .arg("demo")
            .args(args)
            .current_dir(cwd)
            .env_remove("MIDAS_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match runtime_dir {
            Some(dir) => command.env("XDG_RUNTIME_DIR", dir),
            None => command.env_remove("XDG_RUNTIME_DIR"),
        };
        command.spawn().expect("start midasfs demo")
    }

    fn wait_until_mounted(child: Child, mountpoint: PathBuf) -> Demo {
        let mut demo = Demo { child, mountpoint };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !is_fuse_mount(&demo.mountpoint) {
            if let Ok(Some(status)) = demo.child.try_wait() {
                panic!("the demo exited with {status} before mounting");
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not mount {} within 60 s",
                demo.mountpoint.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        demo
    }

    /// Ctrl-C, as the demo tells its user to do; returns once the demo has exited.
    fn interrupt(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            assert!(Instant::now() < deadline, "the demo did not stop on SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if is_fuse_mount(&self.mountpoint) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.mountpoint)
                .status();
        }
    }
}

#[test]
fn the_demo_mounts_in_the_runtime_directory_and_leaves_nothing_behind() {
    require_fuse!();
    let cwd = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let child = Demo::start(cwd.path(), Some(runtime.path()), &[]);
    let mut demo = Demo::wait_until_mounted(child, runtime.path().join("midasfs-demo"));

    assert!(demo.mountpoint.join("communities/Demo").is_dir());
    assert_eq!(
        names_in(cwd.path()),
        Vec::<String>::new(),
        "nothing in the cwd"
    );

    demo.interrupt();
    assert!(!is_fuse_mount(&demo.mountpoint), "unmounted on Ctrl-C");
    // Only the directory of the mounts' control sockets may stay, and empty.
    let left = names_in(runtime.path());
    assert!(
        left.is_empty() || left == ["midasfs"],
        "left behind: {left:?}"
    );
    if !left.is_empty() {
        assert_eq!(
            names_in(&runtime.path().join("midasfs")),
            Vec::<String>::new()
        );
    }
    assert_eq!(names_in(cwd.path()), Vec::<String>::new());
}

#[test]
fn the_demo_mounts_in_a_given_directory_and_keeps_it() {
    require_fuse!();
    let cwd = tempfile::tempdir().unwrap();
    let place = tempfile::tempdir().unwrap();
    let mountpoint = place.path().join("here");
    let child = Demo::start(cwd.path(), None, &[&mountpoint]);
    let mut demo = Demo::wait_until_mounted(child, mountpoint.clone());

    assert!(mountpoint.join("communities/Demo").is_dir());

    demo.interrupt();
    assert!(!is_fuse_mount(&mountpoint), "unmounted on Ctrl-C");
    assert_eq!(names_in(&mountpoint), Vec::<String>::new());
    assert_eq!(names_in(cwd.path()), Vec::<String>::new());
}
