//! Errors of the filesystem layer: what went wrong as a [`Kind`], which alone decides the errno
//! the kernel gets ([`Kind::errno`], the one mapping) and how loudly it is logged; the story
//! behind it, for the log; and the Midas error it came from, kept as its source.

use std::sync::Arc;

use crate::midas::{self, codes};

/// What went wrong, as the kernel is told. SEMANTICS.md's errno table lists every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No such entry (ENOENT): missing, or gone from the server.
    NotFound,
    /// The name is taken (EEXIST).
    Exists,
    /// A directory to remove or replace is not empty (ENOTEMPTY).
    NotEmpty,
    /// A directory where a file is needed (EISDIR).
    IsDir,
    /// A file where a directory is needed (ENOTDIR).
    NotDir,
    /// Midas refused for lack of a right, or the entry is not writable (EACCES).
    Denied,
    /// Never possible on this entry (EPERM): removing `communities`, writing a read-only xattr.
    NotPermitted,
    /// The mount is read-only (EROFS).
    ReadOnly,
    /// Midas cannot move it there (EXDEV): `mv` then copies.
    CrossDevice,
    /// A bad argument (EINVAL).
    Invalid,
    /// Not supported here (ENOTSUP): xattrs outside `user.midas.meta.*`, metadata of folders.
    NotSupported,
    /// No such extended attribute (ENODATA, which is ENOATTR).
    NoAttribute,
    /// The inode or its object changed or is unknown (ESTALE).
    Stale,
    /// The handle is not open (EBADF).
    BadHandle,
    /// Too large to do this way (EFBIG).
    TooLarge,
    /// The server did not answer in time (ETIMEDOUT).
    TimedOut,
    /// The spool is full (ENOSPC).
    NoSpace,
    /// The server failed or answered what midasfs cannot use (EIO).
    Io,
    /// In use in a way that excludes this (EBUSY): writing a file the kernel reads from the
    /// data cache by itself (passthrough).
    Busy,
    /// The local disk failed: the spool's or an uploaded file's, with the system's own errno.
    Local(i32),
}

impl Kind {
    /// The errno the kernel gets: the only place where one is chosen.
    pub fn errno(self) -> i32 {
        match self {
            Kind::NotFound => libc::ENOENT,
            Kind::Exists => libc::EEXIST,
            Kind::NotEmpty => libc::ENOTEMPTY,
            Kind::IsDir => libc::EISDIR,
            Kind::NotDir => libc::ENOTDIR,
            Kind::Denied => libc::EACCES,
            Kind::NotPermitted => libc::EPERM,
            Kind::ReadOnly => libc::EROFS,
            Kind::CrossDevice => libc::EXDEV,
            Kind::Invalid => libc::EINVAL,
            Kind::NotSupported => libc::ENOTSUP,
            Kind::NoAttribute => libc::ENODATA,
            Kind::Stale => libc::ESTALE,
            Kind::BadHandle => libc::EBADF,
            Kind::TooLarge => libc::EFBIG,
            Kind::TimedOut => libc::ETIMEDOUT,
            Kind::NoSpace => libc::ENOSPC,
            Kind::Io => libc::EIO,
            Kind::Busy => libc::EBUSY,
            Kind::Local(errno) => errno,
        }
    }

    /// How loudly a failure of this kind is logged: the user cannot see an I/O error's or a
    /// timeout's cause otherwise; the others are the answers programs expect (ENOENT…).
    pub fn log_level(self) -> log::Level {
        match self {
            Kind::Io | Kind::TimedOut | Kind::Local(_) => log::Level::Warn,
            Kind::Busy => log::Level::Info,
            Kind::NotFound
            | Kind::Exists
            | Kind::NotEmpty
            | Kind::IsDir
            | Kind::NotDir
            | Kind::Denied
            | Kind::NotPermitted
            | Kind::ReadOnly
            | Kind::CrossDevice
            | Kind::Invalid
            | Kind::NotSupported
            | Kind::NoAttribute
            | Kind::Stale
            | Kind::BadHandle
            | Kind::TooLarge
            | Kind::NoSpace => log::Level::Debug,
        }
    }
}

/// A failed filesystem operation: its kind goes to the kernel; `detail` is logged, so that no
/// EIO reaches a user without the server's own words behind it in the log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail} (errno {})", kind.errno())]
pub struct FsError {
    pub kind: Kind,
    pub detail: String,
    #[source]
    source: Option<Arc<midas::Error>>,
}

pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    pub fn new(kind: Kind, detail: impl Into<String>) -> FsError {
        FsError {
            kind,
            detail: detail.into(),
            source: None,
        }
    }

    pub fn not_found(what: impl std::fmt::Display) -> FsError {
        FsError::new(Kind::NotFound, format!("{what}: no such entry"))
    }

    /// The errno the kernel gets.
    pub fn errno(&self) -> i32 {
        self.kind.errno()
    }

    /// The same failure, told with more words (the source stays).
    pub fn context(self, detail: impl Into<String>) -> FsError {
        FsError {
            detail: detail.into(),
            ..self
        }
    }

    /// The Midas error behind this one, if it came from the server.
    pub fn midas(&self) -> Option<&midas::Error> {
        self.source.as_deref()
    }

    /// A failed server call as `kind`, keeping it as the source.
    pub fn from_midas(kind: Kind, err: midas::Error) -> FsError {
        FsError {
            kind,
            detail: err.to_string(),
            source: Some(Arc::new(err)),
        }
    }
}

/// How a server answer becomes an error when it was a read. Midas says −151 both for "missing"
/// and "forbidden"; objects we reached through a listing the caller could read are treated as
/// gone (ENOENT). (Changes use [`crate::fs::write::write_error`].)
impl From<midas::Error> for FsError {
    fn from(err: midas::Error) -> FsError {
        use midas::Error as E;
        let kind = match &err {
            E::Api {
                code: codes::INVALID_POLICY,
                ..
            } => Kind::NotFound,
            E::Api {
                code: codes::INVALID_PARAMETER,
                message,
                ..
            } if message.contains("not exist") => Kind::NotFound,
            E::Api {
                code: codes::INVALID_TOKEN,
                ..
            }
            | E::Auth(_) => Kind::Denied,
            E::Timeout { .. } => Kind::TimedOut,
            // removed on the server while the file was open: gone, not a failing server
            err if err.is_download_gone() => Kind::Stale,
            E::Io(io) => io.raw_os_error().map_or(Kind::Io, Kind::Local),
            E::Api { .. }
            | E::Unreachable { .. }
            | E::Http { .. }
            | E::NotMidas { .. }
            | E::Decode { .. }
            | E::TooLarge { .. }
            | E::ShortRead { .. }
            | E::BadUrl(_) => Kind::Io,
        };
        FsError::from_midas(kind, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: i64, message: &str) -> midas::Error {
        midas::Error::Api {
            method: "midas.item.get".into(),
            code,
            message: message.into(),
        }
    }

    #[test]
    fn a_missing_or_forbidden_object_read_is_enoent_and_keeps_the_midas_error() {
        let err = FsError::from(api(codes::INVALID_POLICY, "This item doesn't exist"));
        assert_eq!(err.errno(), libc::ENOENT);
        assert_eq!(
            err.midas().and_then(midas::Error::api_code),
            Some(codes::INVALID_POLICY)
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn server_failures_are_eio_and_logged_as_warnings() {
        let err = FsError::from(midas::Error::Http {
            method: "m".into(),
            status: 503,
        });
        assert_eq!(err.errno(), libc::EIO);
        assert_eq!(err.kind.log_level(), log::Level::Warn);
        assert_eq!(Kind::NotFound.log_level(), log::Level::Debug);
    }

    #[test]
    fn a_download_of_a_bitstream_no_longer_there_is_estale() {
        let gone = |method: &str| {
            FsError::from(midas::Error::Http {
                method: method.into(),
                status: 404,
            })
        };
        assert_eq!(gone("download").errno(), libc::ESTALE);
        assert_eq!(gone("midas.item.get").errno(), libc::EIO);
    }

    #[test]
    fn a_timeout_is_etimedout_and_a_refused_login_eacces() {
        let timeout = midas::Error::Timeout {
            method: "m".into(),
            after: std::time::Duration::from_secs(1),
        };
        assert_eq!(FsError::from(timeout).errno(), libc::ETIMEDOUT);
        assert_eq!(
            FsError::from(midas::Error::Auth("no".into())).errno(),
            libc::EACCES
        );
    }

    #[test]
    fn a_local_disk_error_keeps_its_own_errno() {
        let io = std::io::Error::from_raw_os_error(libc::EDQUOT);
        assert_eq!(FsError::from(midas::Error::Io(io)).errno(), libc::EDQUOT);
    }
}
