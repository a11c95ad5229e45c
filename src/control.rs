//! The control socket: each mount daemon answers `midasfs status` and `midasfs unmount` on a
//! Unix socket in `$XDG_RUNTIME_DIR/midasfs/` (0700 directory, 0600 socket), with a JSON object
//! of what it is doing.
//!
//! A socket rather than a file in the mount: it works when the mount hangs, and it is visible to
//! nobody but the mounting user.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a client waits for a daemon's answer (a hung mount must not hang `status`).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// `$XDG_RUNTIME_DIR/midasfs`, or `/run/user/UID/midasfs`, or `/tmp/midasfs-UID`.
pub fn socket_dir() -> PathBuf {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("midasfs");
    }
    let run_user = PathBuf::from(format!("/run/user/{uid}"));
    if run_user.is_dir() {
        return run_user.join("midasfs");
    }
    std::env::temp_dir().join(format!("midasfs-{uid}"))
}

/// The socket directory, created 0700, refused if someone else owns it or can enter it.
fn private_dir() -> Result<PathBuf, BoxError> {
    let dir = socket_dir();
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(format!("{}: {err}", dir.display()).into()),
    }
    let meta = std::fs::symlink_metadata(&dir)?;
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} is not a private directory of this user (mode 0700); remove it",
            dir.display()
        )
        .into());
    }
    Ok(dir)
}

/// A listening control socket; removed when dropped.
pub struct ControlSocket {
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listens on a new socket for this process and answers every connection with `status()`.
pub fn listen(status: impl Fn() -> Value + Send + 'static) -> Result<ControlSocket, BoxError> {
    let dir = private_dir()?;
    let path = dir.join(format!("mount-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("midasfs-control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(ANSWER_TIMEOUT));
                let _ = stream.set_write_timeout(Some(ANSWER_TIMEOUT));
                let mut request = String::new();
                let _ = BufReader::new(&stream).read_line(&mut request);
                if request.trim() == "status" {
                    let _ = writeln!(stream, "{}", status());
                }
            }
        })?;
    Ok(ControlSocket { path })
}

/// The status of every running daemon of this user, by socket; sockets of daemons that are gone
/// are removed.
pub fn query_all() -> Vec<Value> {
    let dir = socket_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut answers = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "sock") {
            continue;
        }
        match query(&path) {
            Ok(answer) => answers.push(answer),
            Err(QueryError::Gone) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(QueryError::Other(err)) => {
                log::warn!("{}: {err}", path.display());
            }
        }
    }
    answers.sort_by(|a, b| a["mountpoint"].as_str().cmp(&b["mountpoint"].as_str()));
    answers
}

/// The status of the daemon serving `mountpoint`, if one of this user's does.
pub fn query_mount(mountpoint: &Path) -> Option<Value> {
    let wanted = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_owned());
    query_all()
        .into_iter()
        .find(|answer| answer["mountpoint"].as_str() == Some(&*wanted.to_string_lossy()))
}

enum QueryError {
    Gone,
    Other(String),
}

fn query(path: &Path) -> Result<Value, QueryError> {
    let mut stream = UnixStream::connect(path).map_err(|err| match err.kind() {
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => QueryError::Gone,
        _ => QueryError::Other(err.to_string()),
    })?;
    let other = |err: std::io::Error| QueryError::Other(err.to_string());
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(other)?;
    stream.write_all(b"status\n").map_err(other)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(other)?;
    serde_json::from_str(&answer).map_err(|err| QueryError::Other(err.to_string()))
}
