//! The thin `fuser::Filesystem` adapter over [`crate::fs`]: it translates the kernel's requests
//! into calls of [`MidasFs`] and their results into replies, and holds no filesystem state.
//!
//! Each handler answers inline when the filesystem can answer from memory (`cached_*`, getattr);
//! anything that needs the network moves its reply into a task on the tokio runtime, so the
//! FUSE loop never waits on the server. Every reply is sent exactly once: errors included.
//! Work that outlives a request (uploads after a close, walk-ahead) is the filesystem's.

use std::ffi::OsStr;
use std::future::Future;
use std::sync::Arc;

use std::time::SystemTime;

use fuser::{
    BackingId, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::fs::inode::{Attr, FileKind};
use crate::fs::read::passthrough::Backing;
use crate::fs::{Entry, FsError, MidasFs, OpenFile, XATTR_PREFIX};

/// Requests the kernel keeps in flight for readahead and background work.
const MAX_BACKGROUND: u16 = 64;

/// Who files are shown as owned by, and the permission bits to clear.
#[derive(Debug, Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
    umask: u16,
}

pub struct FuseAdapter {
    fs: Arc<MidasFs>,
    runtime: tokio::runtime::Handle,
    owner: Owner,
    /// Ask the kernel for passthrough (`--no-passthrough` says no).
    passthrough: bool,
}

impl FuseAdapter {
    pub fn new(fs: Arc<MidasFs>, runtime: tokio::runtime::Handle) -> FuseAdapter {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        FuseAdapter {
            fs,
            runtime,
            owner: Owner { uid, gid, umask: 0 },
            passthrough: true,
        }
    }

    /// Whether to ask the kernel for passthrough of files whole in the data cache.
    pub fn with_passthrough(mut self, passthrough: bool) -> FuseAdapter {
        self.passthrough = passthrough;
        self
    }

    /// Shows every file as owned by `uid`:`gid` (default: the mounting user) with the `umask`
    /// bits cleared (`-o uid=,gid=,umask=`).
    pub fn with_owner(mut self, uid: Option<u32>, gid: Option<u32>, umask: u16) -> FuseAdapter {
        self.owner = Owner {
            uid: uid.unwrap_or(self.owner.uid),
            gid: gid.unwrap_or(self.owner.gid),
            umask,
        };
        self
    }

    fn file_attr(&self, attr: &Attr) -> FileAttr {
        FuseAdapter::attr_for(self.owner, attr)
    }

    /// Runs `work` on the runtime; its result is handed to `reply`, its error logged and answered.
    fn spawn<T, F, R>(&self, what: String, work: F, reply: R)
    where
        T: Send + 'static,
        F: Future<Output = Result<T, FsError>> + Send + 'static,
        R: FnOnce(Result<T, Errno>) + Send + 'static,
    {
        self.runtime.spawn(async move {
            reply(work.await.map_err(|err| errno_of(&what, &err)));
        });
    }

    /// `close` (the request `closing`) or `fsync` (none) of a handle: the upload of a file open
    /// for writing, answered when it is done.
    fn save(&self, ino: INodeNo, fh: FileHandle, closing: Option<&Request>, reply: ReplyEmpty) {
        if let Some(result) = self.fs.cached_flush(fh.0) {
            return match result {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(errno_of("flush", &err)),
            };
        }
        // Only now: every close of every file comes here, and this reads /proc.
        let closer = closing.map(process_of);
        let fs = Arc::clone(&self.fs);
        self.spawn(
            format!("saving inode {}", ino.0),
            async move { fs.close_or_sync(fh.0, closer).await },
            move |result| reply_empty(reply, result),
        );
    }
}

/// Logs a failed operation as loudly as its kind says (EIO always with its cause, which the
/// user cannot see otherwise), and gives its errno.
fn errno_of(what: &str, err: &FsError) -> Errno {
    log::log!(err.kind.log_level(), "{what}: {err}");
    Errno::from_i32(err.errno())
}

fn name_str(name: &OsStr) -> Result<&str, Errno> {
    // FUSE passes names of up to 1024 bytes; like a disk filesystem, refuse what no listing
    // shows (longer names are listed shortened).
    if name.len() > crate::fs::names::NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    // Midas names are text; a name that is not UTF-8 cannot exist on the server.
    name.to_str().ok_or(Errno::ENOENT)
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // ATOMIC_O_TRUNC: open(O_TRUNC) arrives as one open, so the old content is not
        // downloaded into the spool only to be truncated away.
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ATOMIC_O_TRUNC;
        if let Err(missing) = config.add_capabilities(wanted) {
            log::info!("kernel lacks FUSE capabilities {missing:?}; continuing without them");
        }
        if let Err(max) = config.set_max_background(MAX_BACKGROUND) {
            let _ = config.set_max_background(max);
        }
        // Passthrough: the kernel reads files whole in the data cache from the entry itself.
        // Backing files need root; a stack depth of 1 keeps the mount usable under overlayfs.
        // SAFETY: geteuid cannot fail and touches no memory.
        if self.passthrough && self.fs.wants_passthrough() && unsafe { libc::geteuid() } == 0 {
            match config.add_capabilities(InitFlags::FUSE_PASSTHROUGH) {
                Ok(()) if config.set_max_stack_depth(1).is_ok() => self.fs.enable_passthrough(),
                _ => log::info!(
                    "kernel without FUSE passthrough: files in the data cache are read \
                     through the mount"
                ),
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match name_str(name) {
            Ok(name) => name.to_owned(),
            Err(errno) => return reply.error(errno),
        };
        if let Some(result) = self.fs.cached_lookup(parent.0, &name) {
            return match result {
                Ok(attr) => {
                    let ttl = self.fs.ttl_of(attr.ino);
                    reply.entry(&ttl, &self.file_attr(&attr), Generation(0))
                }
                Err(err) => reply.error(errno_of("lookup", &err)),
            };
        }
        let fs = Arc::clone(&self.fs);
        let owner = self.owner;
        let what = format!("lookup {name:?} in inode {}", parent.0);
        self.spawn(
            what,
            async move {
                let attr = fs.lookup(parent.0, &name).await?;
                Ok((fs.ttl_of(attr.ino), attr))
            },
            move |result| match result {
                Ok((ttl, attr)) => {
                    let attr = FuseAdapter::attr_for(owner, &attr);
                    reply.entry(&ttl, &attr, Generation(0))
                }
                Err(errno) => reply.error(errno),
            },
        );
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(attr) => reply.attr(&self.fs.ttl_of(ino.0), &self.file_attr(&attr)),
            Err(err) => reply.error(errno_of("getattr", &err)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(target.as_bytes()),
            Err(err) => reply.error(errno_of("readlink", &err)),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(self.fs.opendir()), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let parent = self.fs.parent(ino.0);
        let fill = move |entries: &[Entry], reply: &mut ReplyDirectory| {
            for (index, (child, kind, name)) in dots(ino.0, parent, entries)
                .enumerate()
                .skip(offset as usize)
            {
                if reply.add(INodeNo(child), index as u64 + 1, kind, name) {
                    break;
                }
            }
        };
        self.with_listing(
            "readdir",
            ino,
            fh,
            offset,
            reply,
            move |result, mut reply| match result {
                Ok(entries) => {
                    fill(entries, &mut reply);
                    reply.ok()
                }
                Err(errno) => reply.error(errno),
            },
        );
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let ttl = self.fs.ttl();
        let owner = self.owner;
        let fs = Arc::clone(&self.fs);
        let fill = move |entries: &[Entry], reply: &mut ReplyDirectoryPlus| {
            for (index, entry) in entries
                .iter()
                .enumerate()
                .skip(offset.saturating_sub(2) as usize)
            {
                let attr = FuseAdapter::attr_for(owner, &fs.entry_attr(entry));
                if reply.add(
                    INodeNo(entry.ino),
                    index as u64 + 3,
                    &entry.name,
                    &fs.ttl_of(entry.ino),
                    &attr,
                    Generation(0),
                ) {
                    return;
                }
                // The kernel now holds this inode as if looked up.
                fs.remember(ino.0, entry);
            }
        };
        let dot_entries = self.dot_attrs(ino.0);
        let add_dots = move |reply: &mut ReplyDirectoryPlus| -> bool {
            for (index, (name, attr)) in dot_entries.iter().enumerate().skip(offset as usize) {
                let attr = FuseAdapter::attr_for(owner, attr);
                if reply.add(attr.ino, index as u64 + 1, name, &ttl, &attr, Generation(0)) {
                    return false;
                }
            }
            true
        };
        self.with_listing(
            "readdirplus",
            ino,
            fh,
            offset,
            reply,
            move |result, mut reply| match result {
                Ok(entries) => {
                    if add_dots(&mut reply) {
                        fill(entries, &mut reply);
                    }
                    reply.ok()
                }
                Err(errno) => reply.error(errno),
            },
        );
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let truncate = flags.0 & libc::O_TRUNC != 0;
        if flags.acc_mode() != OpenAccMode::O_RDONLY || truncate {
            let fs = Arc::clone(&self.fs);
            let opener = process_of(req);
            return self.spawn(
                format!("open inode {} for writing", ino.0),
                async move { fs.open_write(ino.0, truncate, opener).await },
                move |result| match result {
                    Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                    Err(errno) => reply.error(errno),
                },
            );
        }
        let opened = |open: OpenFile, reply: ReplyOpen| {
            let backing = open
                .backing
                .as_ref()
                .and_then(|b| b.downcast_ref::<BackingId>());
            match backing {
                Some(id) if open.direct_io => {
                    reply.opened_passthrough(FileHandle(open.fh), FopenFlags::FOPEN_DIRECT_IO, id)
                }
                Some(id) => reply.opened_passthrough(FileHandle(open.fh), FopenFlags::empty(), id),
                None if open.keep_cache => {
                    reply.opened(FileHandle(open.fh), FopenFlags::FOPEN_KEEP_CACHE)
                }
                None => reply.opened(FileHandle(open.fh), FopenFlags::empty()),
            }
        };
        match self.fs.cached_open(ino.0) {
            Some(Ok(open)) => opened(open, reply),
            Some(Err(err)) => reply.error(errno_of("open", &err)),
            None => {
                let fs = Arc::clone(&self.fs);
                self.runtime.spawn(async move {
                    let make_backing = |file: &std::fs::File| {
                        reply.open_backing(file).map(|id| Arc::new(id) as Backing)
                    };
                    match fs.open_passing_through(ino.0, Some(&make_backing)).await {
                        Ok(open) => opened(open, reply),
                        Err(err) => reply.error(errno_of(&format!("open inode {}", ino.0), &err)),
                    }
                });
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = Arc::clone(&self.fs);
        self.spawn(
            format!("read inode {} at {offset}", ino.0),
            async move { fs.read(fh.0, offset, size).await },
            move |result| match result {
                Ok(bytes) => reply.data(&bytes),
                Err(errno) => reply.error(errno),
            },
        );
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release_handle(fh.0);
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match name_str(name) {
            Ok(name) => name,
            Err(errno) => return reply.error(errno),
        };
        // No caching of the new name by the kernel: until its upload it is a local entry that
        // may vanish (a failed upload), and after it the name stands for the item's inode.
        match self.fs.create(parent.0, name, process_of(req)) {
            Ok((attr, fh)) => reply.created(
                &std::time::Duration::ZERO,
                &self.file_attr(&attr),
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(err) => reply.error(errno_of("create", &err)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // A local file write: fast enough to answer inline.
        match self.fs.handle_write(fh.0, offset, data) {
            Ok(written) => reply.written(written),
            Err(err) => reply.error(errno_of(&format!("write to inode {}", ino.0), &err)),
        }
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.save(ino, fh, Some(req), reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.save(ino, fh, None, reply);
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // With write-back: `sync DIR` waits for every upload after a close (see `writeback`).
        let fs = Arc::clone(&self.fs);
        self.spawn(
            format!("fsync of directory inode {}", ino.0),
            async move { fs.sync_uploads().await },
            move |result| reply_empty(reply, result),
        );
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mtime = mtime.map(|t| match t {
            TimeOrNow::SpecificTime(time) => time,
            TimeOrNow::Now => SystemTime::now(),
        });
        let fs = Arc::clone(&self.fs);
        let ttl = self.fs.ttl();
        let owner = self.owner;
        self.spawn(
            format!("setattr of inode {}", ino.0),
            async move { fs.setattr(ino.0, mode, size, mtime).await },
            move |result| match result {
                Ok(attr) => reply.attr(&ttl, &FuseAdapter::attr_for(owner, &attr)),
                Err(errno) => reply.error(errno),
            },
        );
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_str(name) {
            Ok(name) => name.to_owned(),
            Err(errno) => return reply.error(errno),
        };
        let fs = Arc::clone(&self.fs);
        let ttl = self.fs.ttl();
        let owner = self.owner;
        self.spawn(
            format!("mkdir {name:?} in inode {}", parent.0),
            async move { fs.mkdir(parent.0, &name).await },
            move |result| match result {
                Ok(attr) => reply.entry(&ttl, &FuseAdapter::attr_for(owner, &attr), Generation(0)),
                Err(errno) => reply.error(errno),
            },
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_str(name) {
            Ok(name) => name.to_owned(),
            Err(errno) => return reply.error(errno),
        };
        let fs = Arc::clone(&self.fs);
        self.spawn(
            format!("rmdir {name:?} in inode {}", parent.0),
            async move { fs.rmdir(parent.0, &name).await },
            move |result| reply_empty(reply, result),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_str(name) {
            Ok(name) => name.to_owned(),
            Err(errno) => return reply.error(errno),
        };
        let fs = Arc::clone(&self.fs);
        self.spawn(
            format!("unlink {name:?} in inode {}", parent.0),
            async move { fs.unlink(parent.0, &name).await },
            move |result| reply_empty(reply, result),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return reply.error(Errno::EINVAL);
        }
        let (name, newname) = match (name_str(name), name_str(newname)) {
            (Ok(name), Ok(newname)) => (name.to_owned(), newname.to_owned()),
            (Err(errno), _) | (_, Err(errno)) => return reply.error(errno),
        };
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let fs = Arc::clone(&self.fs);
        self.spawn(
            format!("rename {name:?} to {newname:?}"),
            async move {
                fs.rename(parent.0, &name, newparent.0, &newname, no_replace)
                    .await
            },
            move |result| reply_empty(reply, result),
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let Some(name) = name.to_str().map(str::to_owned) else {
            return reply.error(Errno::ENOTSUP);
        };
        let value = value.to_vec();
        let fs = Arc::clone(&self.fs);
        self.spawn(
            format!("setxattr {name} of inode {}", ino.0),
            async move { fs.setxattr(ino.0, &name, &value, flags).await },
            move |result| reply_empty(reply, result),
        );
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name.to_str().map(str::to_owned) else {
            return reply.error(Errno::NO_XATTR);
        };
        let fs = Arc::clone(&self.fs);
        self.spawn(
            format!("removexattr {name} of inode {}", ino.0),
            async move { fs.removexattr(ino.0, &name).await },
            move |result| match result {
                Err(errno) if errno == Errno::ENODATA => reply.error(Errno::NO_XATTR),
                other => reply_empty(reply, other),
            },
        );
    }

    fn destroy(&mut self) {
        // Unmounting: whatever is still unsaved goes to the server now, or to recovery.
        let fs = Arc::clone(&self.fs);
        self.runtime.block_on(async move { fs.shutdown().await });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        let block = crate::fs::statfs::BLOCK as u32;
        let name_max = crate::fs::names::NAME_MAX as u32;
        reply.statfs(
            s.blocks, s.bfree, s.bavail, s.files, s.ffree, block, name_max, block,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = match name.to_str() {
            // `ls -l` asks every file for security.* and system.* attributes: answered here,
            // without a trip to a worker.
            Some(name) if name.starts_with(XATTR_PREFIX) => name.to_owned(),
            _ => return reply.error(Errno::NO_XATTR),
        };
        let fs = Arc::clone(&self.fs);
        self.spawn(
            format!("getxattr {name} of inode {}", ino.0),
            async move { fs.getxattr(ino.0, &name).await },
            move |result| match result {
                Ok(value) => reply_xattr(reply, size, &value),
                Err(errno) if errno == Errno::ENODATA => reply.error(Errno::NO_XATTR),
                Err(errno) => reply.error(errno),
            },
        );
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let fs = Arc::clone(&self.fs);
        self.spawn(
            format!("listxattr of inode {}", ino.0),
            async move { fs.listxattr(ino.0).await },
            move |result| match result {
                Ok(names) => {
                    let mut list = Vec::new();
                    for name in names {
                        list.extend_from_slice(name.as_bytes());
                        list.push(0);
                    }
                    reply_xattr(reply, size, &list)
                }
                Err(errno) => reply.error(errno),
            },
        );
    }
}

impl FuseAdapter {
    fn attr_for(owner: Owner, attr: &Attr) -> FileAttr {
        let mut file_attr = FileAttr {
            ino: INodeNo(attr.ino),
            size: attr.size,
            blocks: attr.size.div_ceil(512),
            atime: attr.mtime,
            mtime: attr.mtime,
            ctime: attr.mtime,
            crtime: attr.mtime,
            kind: FileType::RegularFile,
            perm: if attr.kind == FileKind::Symlink {
                attr.perm
            } else {
                attr.perm & !owner.umask
            },
            nlink: 1,
            uid: owner.uid,
            gid: owner.gid,
            rdev: 0,
            // The I/O size cp, cat and others use for their buffers: 1 MiB (as NFS does) makes
            // 8 times fewer FUSE round trips than 128 KiB, and matches the kernel's largest WRITE.
            blksize: 1024 * 1024,
            flags: 0,
        };
        file_attr.kind = match attr.kind {
            FileKind::Directory => {
                file_attr.nlink = 2;
                FileType::Directory
            }
            FileKind::File => FileType::RegularFile,
            FileKind::Symlink => FileType::Symlink,
        };
        file_attr
    }

    /// Answers a readdir or readdirplus from the directory's listing for handle `fh`: at once
    /// when it is in memory, else from a worker once it is fetched.
    fn with_listing<R: Send + 'static>(
        &self,
        what: &str,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: R,
        answer: impl FnOnce(Result<&[Entry], Errno>, R) + Send + 'static,
    ) {
        if let Some(entries) = self.fs.cached_readdir(ino.0, fh.0, offset) {
            return answer(Ok(&entries), reply);
        }
        let fs = Arc::clone(&self.fs);
        self.spawn(
            format!("{what} inode {}", ino.0),
            async move { fs.readdir(ino.0, fh.0).await },
            move |result| match result {
                Ok(entries) => answer(Ok(&entries), reply),
                Err(errno) => answer(Err(errno), reply),
            },
        );
    }

    fn dot_attrs(&self, ino: u64) -> Vec<(&'static str, Attr)> {
        let own = self.fs.getattr(ino);
        let parent = self.fs.getattr(self.fs.parent(ino));
        match (own, parent) {
            (Ok(own), Ok(parent)) => vec![(".", own), ("..", parent)],
            (Ok(own), Err(_)) => vec![(".", own), ("..", own)],
            _ => Vec::new(),
        }
    }
}

/// `.`, `..` and the entries, with the file type plain readdir needs.
fn dots(ino: u64, parent: u64, entries: &[Entry]) -> impl Iterator<Item = (u64, FileType, &str)> {
    let kind_of = |e: &Entry| match e.attr().kind {
        FileKind::Directory => FileType::Directory,
        FileKind::File => FileType::RegularFile,
        FileKind::Symlink => FileType::Symlink,
    };
    [
        (ino, FileType::Directory, "."),
        (parent, FileType::Directory, ".."),
    ]
    .into_iter()
    .chain(
        entries
            .iter()
            .map(move |e| (e.ino, kind_of(e), e.name.as_str())),
    )
}

/// The process a request comes from: the kernel gives the calling thread's id, and a file is
/// opened and closed by processes, whose threads may differ.
#[cfg(target_os = "linux")]
fn process_of(req: &Request) -> u32 {
    let thread = req.pid();
    std::fs::read_to_string(format!("/proc/{thread}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Tgid:"))?;
            line["Tgid:".len()..].trim().parse().ok()
        })
        .unwrap_or(thread)
}

/// Elsewhere the kernel gives the process id itself.
#[cfg(not(target_os = "linux"))]
fn process_of(req: &Request) -> u32 {
    req.pid()
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(errno) => reply.error(errno),
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8]) {
    match xattr_answer(size, value) {
        Ok(XattrAnswer::Size(len)) => reply.size(len),
        Ok(XattrAnswer::Data(data)) => reply.data(data),
        Err(errno) => reply.error(errno),
    }
}

/// What a getxattr or listxattr with a buffer of `size` bytes answers.
#[derive(Debug, PartialEq, Eq)]
enum XattrAnswer<'a> {
    /// The size the value needs (asked with a buffer of 0 bytes).
    Size(u32),
    Data(&'a [u8]),
}

/// The value when it fits the caller's buffer, its size when asked, else ERANGE.
fn xattr_answer(size: u32, value: &[u8]) -> Result<XattrAnswer<'_>, Errno> {
    if size == 0 {
        Ok(XattrAnswer::Size(value.len() as u32))
    } else if value.len() > size as usize {
        Err(Errno::ERANGE)
    } else {
        Ok(XattrAnswer::Data(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attribute_longer_than_the_callers_buffer_is_erange() {
        assert_eq!(xattr_answer(3, b"abcd"), Err(Errno::ERANGE));
        assert_eq!(xattr_answer(4, b"abcd"), Ok(XattrAnswer::Data(b"abcd")));
        assert_eq!(xattr_answer(0, b"abcd"), Ok(XattrAnswer::Size(4)));
    }

    #[test]
    fn a_name_longer_than_a_disk_filesystem_takes_is_enametoolong() {
        let long = "x".repeat(crate::fs::names::NAME_MAX + 1);
        assert_eq!(name_str(OsStr::new(&long)), Err(Errno::ENAMETOOLONG));
        assert_eq!(name_str(OsStr::new("short")), Ok("short"));
    }
}
