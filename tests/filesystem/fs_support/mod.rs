//! What the filesystem tests on the in-memory Midas share: a mount of the fake without FUSE, and
//! the few steps a program's system calls make (create + write + close, open + read, …) as the
//! FUSE adapter makes them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use midasfs::fs::inode::{Attr, FileKind, ROOT};
use midasfs::fs::spool::SpoolConfig;
use midasfs::fs::{FsConfig, FsError, FsResult, MidasFs, MountRoot};
use midasfs::midas::fake::FakeMidas;
use midasfs::midas::Api;

/// How long the fake takes to give up on a call that stalls (the client's stall timeout).
pub const STALL: Duration = Duration::from_millis(200);
/// The process that opens and closes files in these tests.
pub const ME: u32 = 4242;

/// A mount of the fake's Public folder (or of everything), without the kernel.
pub struct Mount {
    pub midas: Arc<FakeMidas>,
    pub fs: Arc<MidasFs>,
    /// The spool (and its recovery directory); kept only to be removed when the mount is dropped.
    _spool: tempfile::TempDir,
}

/// How a test wants its mount.
#[derive(Debug, Clone)]
pub struct Options {
    pub ttl: Duration,
    pub read_only: bool,
    pub items_as_dirs: bool,
    /// Mount `communities/`, `users/` and `home` instead of the Public folder.
    pub everything: bool,
    pub spool_bytes: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            ttl: Duration::from_secs(60),
            read_only: false,
            items_as_dirs: false,
            everything: false,
            spool_bytes: 1 << 30,
        }
    }
}

impl Mount {
    pub fn new() -> Mount {
        Mount::with(Options::default())
    }

    pub fn with(options: Options) -> Mount {
        Mount::on(Arc::new(FakeMidas::new(STALL)), options)
    }

    /// A mount of a fake that a test filled first.
    pub fn on(midas: Arc<FakeMidas>, options: Options) -> Mount {
        let spool = tempfile::tempdir().expect("spool dir");
        let root = if options.everything {
            MountRoot::Everything
        } else {
            MountRoot::Folder {
                id: midas.public_folder(),
                writable: true,
            }
        };
        let config = FsConfig {
            ttl: options.ttl,
            items_as_dirs: options.items_as_dirs,
            read_only: options.read_only,
            cache_bytes: 16 << 20,
            stall_timeout: STALL,
            root,
            spool: SpoolConfig {
                dir: spool.path().to_owned(),
                max_bytes: options.spool_bytes,
                keep_free: 0,
            },
        };
        let api: Api = Arc::clone(&midas) as _;
        let fs = Arc::new(MidasFs::new(api, midas.me(), config));
        Mount {
            midas,
            fs,
            _spool: spool,
        }
    }

    /// The Public folder's id (the mount's root).
    pub fn public(&self) -> i64 {
        self.midas.public_folder()
    }

    /// The attributes of `path` (`a/b/c`) below the root, looked up step by step.
    pub async fn lookup(&self, path: &str) -> FsResult<Attr> {
        let mut attr = self.fs.getattr(ROOT)?;
        for name in path.split('/').filter(|n| !n.is_empty()) {
            attr = self.fs.lookup(attr.ino, name).await?;
        }
        Ok(attr)
    }

    /// The inode of `path`; panics when it cannot be looked up.
    pub async fn ino(&self, path: &str) -> u64 {
        match self.lookup(path).await {
            Ok(attr) => attr.ino,
            Err(err) => panic!("lookup {path}: {err}"),
        }
    }

    /// The names a directory lists, sorted.
    pub async fn ls(&self, dir: u64) -> FsResult<Vec<String>> {
        let entries = self.fs.listing(dir).await?;
        let mut names: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
        names.sort();
        Ok(names)
    }

    /// `open(O_CREAT)`, `write`, `close` of a new file: its inode, or the close's error.
    pub async fn create_file(&self, dir: u64, name: &str, content: &[u8]) -> FsResult<u64> {
        let (attr, fh) = self.fs.create(dir, name, ME)?;
        let result = self.write_and_close(fh, 0, content).await;
        result.map(|()| attr.ino)
    }

    /// `open(O_WRONLY [| O_TRUNC])`, `pwrite` at `offset`, `close`.
    pub async fn write_file(
        &self,
        ino: u64,
        truncate: bool,
        offset: u64,
        content: &[u8],
    ) -> FsResult<()> {
        let fh = self.fs.open_write(ino, truncate, ME).await?;
        self.write_and_close(fh, offset, content).await
    }

    /// Writes into an open write handle, then closes it (flush, then release).
    pub async fn write_and_close(&self, fh: u64, offset: u64, content: &[u8]) -> FsResult<()> {
        let written = self.fs.write(fh, offset, content).map(|(n, _)| n);
        let result = match written {
            Ok(n) => {
                assert_eq!(n as usize, content.len(), "a write writes everything");
                self.fs.flush(fh, Some(ME)).await
            }
            Err(err) => Err(err),
        };
        self.fs.release_write(fh).await;
        result
    }

    /// `open(O_RDONLY)` and reads to the end, as `cat` does.
    pub async fn cat(&self, ino: u64) -> FsResult<Vec<u8>> {
        let open = self.fs.open(ino).await?;
        let mut content = Vec::new();
        let result = loop {
            match self.fs.read(open.fh, content.len() as u64, 64 * 1024).await {
                Ok(bytes) if bytes.is_empty() => break Ok(content),
                Ok(bytes) => content.extend_from_slice(&bytes),
                Err(err) => break Err(err),
            }
        };
        self.fs.release(open.fh);
        result
    }

    /// The content of the file at `path`, read through the mount.
    pub async fn read_path(&self, path: &str) -> Vec<u8> {
        let ino = self.ino(path).await;
        self.cat(ino).await.expect("read")
    }

    /// The content of the single-file item `name` in folder `folder` on the server.
    pub fn server_content(&self, folder: i64, name: &str) -> Option<Vec<u8>> {
        let item = self.midas.child_item(folder, name)?;
        self.midas.content(item)
    }

    /// The contents of the files in the recovery directory (sidecars left out).
    pub fn recovered(&self) -> Vec<Vec<u8>> {
        recovered_in(&self.fs.status().recovery_dir)
    }
}

/// The contents of the data files in a recovery directory.
pub fn recovered_in(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_none_or(|ext| ext != "target"))
        .collect();
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// The errno a failed operation gives the kernel.
pub fn errno(err: &FsError) -> i32 {
    err.errno()
}

/// The errno of a result that must be an error.
pub fn errno_of<T>(result: FsResult<T>) -> i32 {
    match result {
        Ok(_) => panic!("expected an error, the operation succeeded"),
        Err(err) => errno(&err),
    }
}

pub fn is_dir(attr: &Attr) -> bool {
    attr.kind == FileKind::Directory
}

/// Everything's errno by name, for messages.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        0 => "ok",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EACCES => "EACCES",
        libc::EEXIST => "EEXIST",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ENODATA => "ENODATA",
        libc::ENOTSUP => "ENOTSUP",
        libc::EPERM => "EPERM",
        libc::EXDEV => "EXDEV",
        libc::ESTALE => "ESTALE",
        libc::EBADF => "EBADF",
        other => return format!("errno {other}"),
    };
    name.to_owned()
}
