//! The filesystem's operations on names and attributes (lookup, mkdir, rename, setattr,
//! xattrs…), one file each, and what they share: what an inode stands for on the server.

mod attrs;
mod dirs;
mod lookup;
mod rename;
pub mod xattr;

use crate::fs::error::Kind;
use crate::fs::inode::{NodeData, NodeKind, ROOT};
use crate::fs::write::{read_only_error, Container};
use crate::fs::{unknown_inode, Entry, FsError, FsResult, MidasFs};

impl MidasFs {
    pub(in crate::fs) fn check_writable(&self) -> FsResult<()> {
        if self.config.read_only {
            return Err(read_only_error());
        }
        Ok(())
    }

    pub(in crate::fs) fn node_data(&self, ino: u64) -> FsResult<NodeData> {
        self.nodes()
            .get(&ino)
            .map(|n| NodeData::clone(&n.data))
            .ok_or_else(|| unknown_inode(ino))
    }

    /// The node's inode number as listings give it (a written new file's node keeps the number
    /// the kernel knows, but its data is the item it became).
    pub(in crate::fs) fn canonical_ino(&self, ino: u64) -> u64 {
        self.nodes()
            .get(&ino)
            .map_or(ino, |n| n.data.kind.ino(self.root_folder()))
    }

    pub(in crate::fs) fn container(&self, dir: u64) -> FsResult<Container> {
        let data = self.node_data(dir)?;
        if !data.writable {
            return Err(FsError::new(
                Kind::Denied,
                format!("inode {dir}: no write permission"),
            ));
        }
        match data.kind {
            NodeKind::Folder { id, .. } => Ok(Container::Folder(id)),
            NodeKind::ItemDir { item } => Ok(Container::Item(item)),
            NodeKind::Root | NodeKind::Communities | NodeKind::Users | NodeKind::Search(_) => Err(
                FsError::new(Kind::Denied, "only folders and items can hold new entries"),
            ),
            NodeKind::Home { .. }
            | NodeKind::ItemFile { .. }
            | NodeKind::SavedFile { .. }
            | NodeKind::Bitstream { .. }
            | NodeKind::NewFile { .. } => Err(FsError::new(Kind::NotDir, "not a directory")),
        }
    }

    pub(in crate::fs) async fn child(&self, dir: u64, name: &str) -> FsResult<Option<Entry>> {
        let entries = self.listing(dir).await?;
        match entries.iter().find(|e| e.name == name) {
            Some(entry) => self.settle_unsettled(dir, entry).await,
            None => Ok(None),
        }
    }

    /// A path for messages: the names of the node and its parents as the listings show them.
    pub(in crate::fs) fn describe(&self, ino: u64) -> String {
        let nodes = self.nodes();
        let mut parts = Vec::new();
        let mut current = ino;
        while current != ROOT && parts.len() < 64 {
            let Some(node) = nodes.get(&current) else {
                parts.push(format!("(inode {current})"));
                break;
            };
            let name = self
                .listings
                .last(node.parent)
                .and_then(|entries| {
                    let entry = entries.iter().find(|e| e.ino == current)?;
                    Some(entry.name.clone())
                })
                .unwrap_or_else(|| format!("(inode {current})"));
            parts.push(name);
            current = node.parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }
}
