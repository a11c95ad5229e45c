//! Reading file content: opening a file for reading, and its reads (see [`reader`]).

pub mod reader;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use crate::fs::error::Kind;
use crate::fs::inode::{NodeData, NodeKind};
use crate::fs::{unknown_inode, FsError, FsResult, MidasFs, Node, OpenFile};
use reader::FileReader;

impl MidasFs {
    /// Opens a file for reading with what is in memory (the listing brought the bitstream), or
    /// None when the bitstream must be asked for first: see [`MidasFs::open`].
    /// A file being written is read from its spool, which holds what is written so far.
    pub fn cached_open(&self, ino: u64) -> Option<FsResult<OpenFile>> {
        if let Some(fh) = self.join_if_writing(ino) {
            return Some(Ok(OpenFile {
                fh,
                keep_cache: false,
            }));
        }
        let (bitstream, keep_cache) = {
            let mut nodes = self.nodes();
            let Some(node) = nodes.get_mut(&ino) else {
                return Some(Err(unknown_inode(ino)));
            };
            if matches!(node.data.kind, NodeKind::SavedFile { .. }) {
                return None;
            }
            let Some(bitstream) = node.data.kind.bitstream().cloned() else {
                return Some(Err(FsError::new(Kind::IsDir, "is a directory")));
            };
            let keep = node.kernel_cached_md5.as_ref() == Some(&bitstream.md5);
            node.kernel_cached_md5 = Some(bitstream.md5.clone());
            (bitstream, keep)
        };
        let source = reader::Source {
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
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Arc::new(reader));
        Some(Ok(OpenFile { fh, keep_cache }))
    }

    /// Opens a file for reading, first asking for the bitstream of a file this mount uploaded.
    pub async fn open(&self, ino: u64) -> FsResult<OpenFile> {
        if let Some(fh) = self.join_if_writing(ino) {
            return Ok(OpenFile {
                fh,
                keep_cache: false,
            });
        }
        self.resolve_saved_file(ino).await?;
        self.cached_open(ino)
            .unwrap_or_else(|| Err(unknown_inode(ino)))
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

    /// Drops a read handle (see [`MidasFs::release_handle`] for any handle).
    pub fn release(&self, fh: u64) {
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh);
    }
}
