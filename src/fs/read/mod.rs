//! Reading file content: opening a file for reading (handed to the kernel when the data cache
//! holds it whole: see [`passthrough`]), and its reads (see [`reader`]).

pub mod passthrough;
pub mod reader;
pub(in crate::fs) mod sniff;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use crate::fs::error::Kind;
use crate::fs::inode::BitstreamInfo;
use crate::fs::inode::{NodeData, NodeKind};
use crate::fs::{unknown_inode, FsError, FsResult, MidasFs, Node, OpenFile};
use passthrough::{Decision, MakeBacking};
use reader::FileReader;

impl MidasFs {
    /// Opens a file for reading with what is in memory (the listing brought the bitstream), or
    /// None when the bitstream must be asked for first, or the data cache looked at for
    /// passthrough: see [`MidasFs::open`].
    /// A file being written is read from its spool, which holds what is written so far.
    pub fn cached_open(&self, ino: u64) -> Option<FsResult<OpenFile>> {
        if self.disk.is_some() && self.passthrough.active() || self.sniffs.pending(ino) {
            return None;
        }
        if let Some(fh) = self.join_if_writing(ino) {
            return Some(Ok(OpenFile::of_mount(fh, false)));
        }
        let bitstream = match self.open_bitstream(ino)? {
            Ok(bitstream) => bitstream,
            Err(err) => return Some(Err(err)),
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        Some(Ok(self.open_reader(ino, fh, &bitstream)))
    }

    /// The bitstream a read open of `ino` reads, or None when it must be asked for first.
    fn open_bitstream(&self, ino: u64) -> Option<FsResult<BitstreamInfo>> {
        let nodes = self.nodes();
        let Some(node) = nodes.get(&ino) else {
            return Some(Err(unknown_inode(ino)));
        };
        if matches!(node.data.kind, NodeKind::SavedFile { .. }) {
            return None;
        }
        Some(
            node.data
                .kind
                .bitstream()
                .cloned()
                .ok_or_else(|| FsError::new(Kind::IsDir, "is a directory")),
        )
    }

    /// Handle `fh`, reading `bitstream` through the mount; the kernel keeps its page cache of
    /// `ino` when the content is the one it cached at the previous open.
    fn open_reader(&self, ino: u64, fh: u64, bitstream: &BitstreamInfo) -> OpenFile {
        let keep_cache = match self.nodes().get_mut(&ino) {
            Some(node) => {
                let keep = node.kernel_cached_md5.as_ref() == Some(&bitstream.md5);
                node.kernel_cached_md5 = Some(bitstream.md5.clone());
                keep
            }
            None => false,
        };
        let source = reader::Source {
            ino,
            bitstream: bitstream.id,
            size: bitstream.size,
            md5: bitstream.md5.to_string(),
            disk: self.disk.clone(),
        };
        let reader = FileReader::new(
            self.client.clone(),
            Arc::clone(&self.cache),
            source,
            self.config.stall_timeout,
        );
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Arc::new(reader));
        OpenFile::of_mount(fh, keep_cache)
    }

    /// Opens a file for reading, first asking for the bitstream of a file this mount uploaded
    /// (no passthrough starts: see [`MidasFs::open_passing_through`]).
    pub async fn open(&self, ino: u64) -> FsResult<OpenFile> {
        self.open_passing_through(ino, None).await
    }

    /// Opens a file for reading, first asking for the bitstream of a file this mount uploaded.
    /// When the data cache holds its content whole and the kernel takes passthrough, the kernel
    /// reads the entry itself (`make_backing` gives it the entry's file).
    pub async fn open_passing_through(
        &self,
        ino: u64,
        make_backing: Option<MakeBacking<'_>>,
    ) -> FsResult<OpenFile> {
        if let Some(fh) = self.join_if_writing(ino) {
            return Ok(OpenFile::of_mount(fh, false));
        }
        self.resolve_saved_file(ino).await?;
        self.sniffed_start(ino).await;
        let bitstream = self
            .open_bitstream(ino)
            .unwrap_or_else(|| Err(unknown_inode(ino)))?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let Some(disk) = self.disk.clone().filter(|_| self.passthrough.active()) else {
            return Ok(self.open_reader(ino, fh, &bitstream));
        };
        // The entry is looked for (and checked) off the async workers, then the decision is
        // taken with every other open of the inode counted.
        let entry = if self.passthrough.enabled() && make_backing.is_some() {
            let (md5, size) = (bitstream.md5.to_string(), bitstream.size);
            let disk = Arc::clone(&disk);
            tokio::task::spawn_blocking(move || {
                let entry = disk.get(&md5, size)?;
                match entry.check_ends() {
                    Ok(()) => Some(entry),
                    Err(err) => {
                        log::warn!(
                            "data cache entry {}: {err}; deleting it",
                            entry.path().display()
                        );
                        disk.drop_entry(entry.path());
                        None
                    }
                }
            })
            .await
            .ok()
            .flatten()
        } else {
            None
        };
        let decision = self.passthrough.open_read(
            ino,
            fh,
            &bitstream.md5.to_string(),
            entry.as_ref().zip(make_backing).map(|(e, m)| (e.file(), m)),
        );
        Ok(match decision {
            Decision::Passthrough(backing) => {
                disk.passed_through();
                OpenFile {
                    fh,
                    keep_cache: false,
                    backing: Some(backing),
                    direct_io: false,
                }
            }
            Decision::DirectPassthrough(backing) => {
                let mut open = self.open_reader(ino, fh, &bitstream);
                open.keep_cache = false;
                open.backing = Some(backing);
                open.direct_io = true;
                open
            }
            Decision::Mount => self.open_reader(ino, fh, &bitstream),
        })
    }

    /// Turns a file this mount uploaded into the item file `item.get` now describes, with its
    /// bitstream (the upload's answer does not name it).
    pub(in crate::fs) async fn resolve_saved_file(&self, ino: u64) -> FsResult<()> {
        let (item_id, writable, parent, canonical) = match self.nodes().get(&ino) {
            Some(Node { data, parent, .. }) => match &data.kind {
                kind @ NodeKind::SavedFile { item, .. } => (
                    item.id,
                    data.writable,
                    *parent,
                    kind.ino(self.root_folder()),
                ),
                _ => return Ok(()),
            },
            _ => return Ok(()),
        };
        let item = self.client.item_get(item_id).await?;
        let entry = self.item_entry(&item, String::new(), writable);
        // (The kernel may know the file by the number it had while new: compare what listings
        // show.)
        if entry.ino != canonical {
            // Someone added a bitstream or renamed it: it is not this file any more.
            self.listings.remove(parent);
            return Err(FsError::new(
                Kind::Stale,
                format!("item {item_id} changed on the server"),
            ));
        }
        // The kind changes, the times stay: they may have been set through the mount.
        let resolved = |data: &mut NodeData| data.kind = entry.data.kind.clone();
        if let Some(node) = self.nodes().get_mut(&ino) {
            resolved(&mut node.data);
        }
        self.listings.patch(parent, |entries| {
            entries
                .iter_mut()
                .filter(|e| e.ino == canonical)
                .for_each(|listed| resolved(&mut listed.data));
        });
        Ok(())
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if let Some(written) = self.read_written(fh, offset, size) {
            return written.map(Bytes::from);
        }
        let reader = self
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
            .cloned()
            .ok_or_else(|| {
                FsError::new(Kind::BadHandle, format!("file handle {fh} is not open"))
            })?;
        reader.read(offset, size).await
    }

    /// Drops a read handle (see [`MidasFs::release_handle`] for any handle); the reader it had,
    /// if any.
    pub fn release(&self, fh: u64) -> Option<Arc<FileReader>> {
        self.passthrough.release(fh);
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh)
    }
}
