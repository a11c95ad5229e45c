//! Errors of the filesystem layer: an errno for the kernel, and the story behind it for the log.

use crate::midas;

/// A failed filesystem operation. `errno` goes to the kernel; `detail` is logged, so that no EIO
/// reaches a user without the server's own words behind it in the log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail} (errno {errno})")]
pub struct FsError {
    pub errno: i32,
    pub detail: String,
}

pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    pub fn new(errno: i32, detail: impl Into<String>) -> FsError {
        FsError {
            errno,
            detail: detail.into(),
        }
    }

    pub fn not_found(what: impl std::fmt::Display) -> FsError {
        FsError::new(libc::ENOENT, format!("{what}: no such entry"))
    }

    /// Whether the kernel gets a generic I/O error, which must always be logged with its cause.
    pub fn is_io(&self) -> bool {
        self.errno == libc::EIO
    }
}

/// How a server answer becomes an errno. Midas says −151 both for "missing" and "forbidden";
/// objects we reached through a listing the caller could read are treated as gone (ENOENT).
impl From<midas::Error> for FsError {
    fn from(err: midas::Error) -> FsError {
        use midas::Error as E;
        let errno = match &err {
            E::Api { code: -151, .. } => libc::ENOENT,
            E::Api {
                code: -150,
                message,
                ..
            } if message.contains("not exist") => libc::ENOENT,
            E::Api { code: -101, .. } | E::Auth(_) => libc::EACCES,
            E::Timeout { .. } => libc::ETIMEDOUT,
            E::Io(io) => io.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EIO,
        };
        FsError::new(errno, err.to_string())
    }
}
