//! `midasfs unmount` and `midasfs status`: talk to running mount daemons (through their control
//! sockets, see [`crate::control`]) and to the kernel's mount table.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::{StatusArgs, UnmountArgs};
use crate::control;
use crate::CliResult;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The file system type midasfs mounts show in /proc/self/mountinfo.
const FSTYPE: &str = "fuse.midasfs";
/// How often `unmount` says it is still waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The mountpoints of every midasfs mount in this mount namespace.
fn midasfs_mounts() -> Vec<PathBuf> {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            let target = fields.get(4)?;
            (fields.get(dash + 1) == Some(&FSTYPE)).then(|| PathBuf::from(unescape(target)))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal `\\NNN`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(code) = u8::from_str_radix(digits, 8) {
                out.push(code);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The absolute path of a mountpoint, also when the mount is stale (canonicalize fails there).
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_owned()))
}

pub fn unmount(args: UnmountArgs) -> CliResult {
    let path = absolute(&args.mountpoint);
    if !midasfs_mounts().contains(&path) {
        return Err(format!("{} is not a midasfs mount", path.display()).into());
    }
    let daemon = control::query_mount(&path);
    if let Some(status) = &daemon {
        let writing = status["uploads"]["files_being_written"]
            .as_u64()
            .unwrap_or(0);
        if writing > 0 {
            println!(
                "{writing} file(s) are being written or uploaded; unmounting waits for their \
                 uploads"
            );
        }
    }
    let detached = release(&path, args.lazy)?;
    let Some(pid) = daemon.as_ref().and_then(|s| s["pid"].as_u64()) else {
        println!("unmounted {}", path.display());
        return Ok(());
    };
    if detached {
        println!(
            "{} is detached: it goes away, and its uploads finish, once the programs using it \
             close their files (daemon pid {pid})",
            path.display()
        );
        return Ok(());
    }
    wait_for_exit(pid as libc::pid_t, &path);
    println!("unmounted {}", path.display());
    Ok(())
}

/// Unmounts; with `lazy`, detaches a busy mount (returns true then).
fn release(path: &Path, lazy: bool) -> Result<bool, BoxError> {
    let busy = || -> BoxError {
        format!(
            "{0} is busy: programs have files open there (`fuser -vm {0}` lists them); close \
             them, or `midasfs unmount --lazy {0}`",
            path.display()
        )
        .into()
    };
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: umount2 with a valid C string.
        if unsafe { libc::umount2(c_path.as_ptr(), 0) } == 0 {
            return Ok(false);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(format!("cannot unmount {}: {err}", path.display()).into());
        }
        if !lazy {
            return Err(busy());
        }
        // SAFETY: as above.
        if unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) } == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        return Err(format!("cannot unmount {}: {err}", path.display()).into());
    }
    let mut command = Command::new("fusermount3");
    command.arg("-u");
    if lazy {
        command.arg("-z");
    }
    let output = command.arg(path).output().map_err(|err| {
        if err.kind() == std::io::ErrorKind::NotFound {
            "fuse3 is not installed (fusermount3 is missing): apt-get install fuse3".to_owned()
        } else {
            format!("fusermount3: {err}")
        }
    })?;
    if output.status.success() {
        return Ok(lazy);
    }
    let message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if message.contains("busy") {
        return Err(busy());
    }
    Err(format!("cannot unmount {}: {message}", path.display()).into())
}

/// Whether a process runs: it exists and is not a zombie (a foreground daemon's parent may not
/// have reaped it yet).
fn is_running(pid: libc::pid_t) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses, which may itself hold ") ".
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// Waits until the daemon has finished its uploads and exited, saying what it waits for.
fn wait_for_exit(pid: libc::pid_t, path: &Path) {
    let started = Instant::now();
    let mut next_word = started + PROGRESS_EVERY;
    while is_running(pid) {
        if Instant::now() >= next_word {
            let writing = control::query_mount(path)
                .and_then(|s| s["uploads"]["files_being_written"].as_u64())
                .unwrap_or(0);
            println!(
                "still waiting for the daemon (pid {pid}) after {}s: {writing} upload(s) in flight",
                started.elapsed().as_secs()
            );
            next_word += PROGRESS_EVERY;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn status(args: StatusArgs) -> CliResult {
    let answers = match &args.mountpoint {
        Some(path) => {
            let answer = control::query_mount(path).ok_or_else(|| {
                format!(
                    "no midasfs mount of this user at {} answers",
                    absolute(path).display()
                )
            })?;
            vec![answer]
        }
        None => control::query_all(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answers)?);
        return Ok(());
    }
    for answer in &answers {
        print!("{}", describe(answer));
    }
    if args.mountpoint.is_none() {
        let known: Vec<&str> = answers
            .iter()
            .filter_map(|a| a["mountpoint"].as_str())
            .collect();
        let silent: Vec<PathBuf> = midasfs_mounts()
            .into_iter()
            .filter(|m| !known.contains(&&*m.to_string_lossy()))
            .collect();
        for mount in &silent {
            println!(
                "{}  (its daemon does not answer: another user's mount, or a midasfs without \
                 `status`)",
                mount.display()
            );
        }
        if answers.is_empty() && silent.is_empty() {
            println!("no midasfs mounts");
        }
    }
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A daemon's answer, for people.
fn describe(s: &Value) -> String {
    let num = |v: &Value| v.as_u64().unwrap_or(0);
    let mut out = format!(
        "{}  {}",
        s["mountpoint"].as_str().unwrap_or("?"),
        s["url"].as_str().unwrap_or("?")
    );
    if let Some(profile) = s["profile"].as_str() {
        out += &format!("  (profile {profile})");
    }
    out += "\n";
    let who = match &s["user"] {
        Value::Null => "anonymous (public data only)".to_owned(),
        user => format!(
            "{} <{}>{}",
            user["name"].as_str().unwrap_or(""),
            user["email"].as_str().unwrap_or(""),
            if user["admin"].as_bool() == Some(true) {
                ", administrator"
            } else {
                ""
            }
        ),
    };
    out += &format!("  as        {who}\n");
    let mut mode = if s["read_only"].as_bool() == Some(true) {
        "read-only".to_owned()
    } else {
        "read-write".to_owned()
    };
    if let Some(root) = s["root"].as_str() {
        mode += &format!(", root {root}");
    }
    out += &format!("  mode      {mode}\n");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let up = now.saturating_sub(num(&s["started"]));
    out += &format!(
        "  daemon    pid {}, up {}h{:02}m{:02}s\n",
        num(&s["pid"]),
        up / 3600,
        up / 60 % 60,
        up % 60
    );
    let uploads = &s["uploads"];
    out += &format!(
        "  uploads   {} file(s) being written or uploaded ({}); {} failed upload(s) kept in {}\n",
        num(&uploads["files_being_written"]),
        mib(num(&uploads["spool_bytes"])),
        num(&uploads["recovery_files"]),
        uploads["recovery_dir"].as_str().unwrap_or("?")
    );
    let write_back = &uploads["write_back"];
    if write_back.is_object() {
        out += &format!(
            "  write-back {} upload(s) pending after close; {} failed",
            num(&write_back["pending"]),
            num(&write_back["failed"])
        );
        if let Some(last) = write_back["last_error"].as_str() {
            out += &format!(" (last: {last})");
        }
        out += "\n";
    }
    out += &format!(
        "  cache     {} of {}\n",
        mib(num(&s["cache"]["bytes"])),
        mib(num(&s["cache"]["capacity"]))
    );
    let disk = &s["disk_cache"];
    if disk.is_object() {
        out += &format!(
            "  disk      {} of {} in {} file(s) in {}; {} hit(s) ({} read by the kernel itself), \
             {} filled, {} damaged and dropped\n",
            mib(num(&disk["bytes"])),
            mib(num(&disk["capacity"])),
            num(&disk["files"]),
            disk["dir"].as_str().unwrap_or("?"),
            num(&disk["hits"]),
            num(&disk["passthrough_opens"]),
            num(&disk["fills"]),
            num(&disk["dropped"])
        );
    }
    let requests = &s["requests"];
    out += &format!(
        "  requests  {} API calls, {} downloads ({}), {} upload parts ({}); {} failed",
        num(&requests["calls"]),
        num(&requests["downloads"]),
        mib(num(&requests["download_bytes"])),
        num(&requests["upload_parts"]),
        mib(num(&requests["upload_bytes"])),
        num(&requests["errors"])
    );
    if let Some(last) = requests["last_error"].as_str() {
        out += &format!(" (last: {last})");
    }
    out += "\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/x\\134y"), "/x\\y");
    }
}
