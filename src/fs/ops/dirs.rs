//! Making and removing entries: mkdir, rmdir and unlink, checked with the server.

use std::sync::Arc;

use crate::fs::error::Kind;
use crate::fs::inode::{Attr, NodeKind};
use crate::fs::names;
use crate::fs::write::{write_error, Container, Target};
use crate::fs::{Entry, FsError, FsResult, MidasFs};
use crate::midas::types::PRIVACY_PUBLIC;

impl MidasFs {
    pub async fn mkdir(&self, parent: u64, name: &str) -> FsResult<Attr> {
        self.check_writable()?;
        self.refuse_read_only_name(parent, name).await?;
        crate::fs::trash::refuse_trash_dir(parent == crate::fs::inode::ROOT, name)?;
        let folder = match self.container(parent)? {
            Container::Folder(id) => id,
            // Only an item `--leaf-dirs-as-items` made: it becomes a folder.
            Container::Item(item) => self.unleaf(parent, &item).await?,
        };
        if self.child(parent, name).await?.is_some() {
            return Err(FsError::new(Kind::Exists, format!("{name} exists")));
        }
        if self.leaf_dirs_as_items() {
            return self.mkdir_item(parent, folder, name).await;
        }
        let created = self
            .client
            .folder_create(folder, &names::to_midas(name))
            .await
            .map_err(write_error)?;
        let entry = self.entry(
            name.to_owned(),
            NodeKind::Folder {
                id: created.folder_id,
                uuid: created.uuid.clone(),
            },
            &created.date_update,
            true,
            created.privacy_status == PRIVACY_PUBLIC,
        );
        self.remember(parent, &entry);
        // A new folder is empty: lookups in it need not ask the server.
        self.listings.insert(entry.ino, Arc::new(Vec::new()));
        let attr = entry.attr();
        self.listings.patch(parent, |entries| entries.push(entry));
        Ok(attr)
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.check_writable()?;
        self.refuse_read_only_name(parent, name).await?;
        let entry = self
            .child(parent, name)
            .await?
            .ok_or_else(|| FsError::not_found(name))?;
        if !entry.data.kind.is_dir() {
            return Err(FsError::new(
                Kind::NotDir,
                format!("{name} is not a directory"),
            ));
        }
        self.ensure_empty(&entry).await?;
        self.remove_entry(&entry).await?;
        self.listings
            .patch(parent, |entries| entries.retain(|e| e.ino != entry.ino));
        self.listings.remove(entry.ino);
        Ok(())
    }

    /// Checks with the server (not a cached listing) that a directory holds nothing.
    pub(in crate::fs) async fn ensure_empty(&self, entry: &Entry) -> FsResult<()> {
        let has_new_files = self.writes.files().values().any(|f| {
            let data = f.lock();
            matches!(&data.target, Target::New { parent_ino, .. } if *parent_ino == entry.ino)
                && !data.unlinked
        });
        let empty = !has_new_files
            && match &entry.data.kind {
                NodeKind::Folder { id, .. } => {
                    let children = self.client.folder_children(*id).await?;
                    children.folders.is_empty() && children.items.is_empty()
                }
                NodeKind::ItemDir { item } => {
                    let item = self.client.item_get(item.id).await?;
                    item.head().is_none_or(|h| h.bitstreams.is_empty())
                }
                _ => false,
            };
        if empty {
            Ok(())
        } else {
            Err(FsError::new(
                Kind::NotEmpty,
                format!("{} is not empty", entry.name),
            ))
        }
    }

    /// Deletes what an entry stands for on the server.
    pub(in crate::fs) async fn remove_entry(&self, entry: &Entry) -> FsResult<()> {
        let result = match &entry.data.kind {
            NodeKind::Folder { id, .. } => self.client.folder_delete(*id).await,
            NodeKind::ItemDir { item }
            | NodeKind::ItemFile { item, .. }
            | NodeKind::SavedFile { item, .. } => self.client.item_delete(item.id).await,
            NodeKind::Bitstream { bitstream, .. } => {
                self.client.bitstream_delete(bitstream.id).await
            }
            NodeKind::NewFile { .. } => {
                self.mark_unlinked(entry.ino);
                Ok(())
            }
            NodeKind::Root
            | NodeKind::Communities
            | NodeKind::Users
            | NodeKind::Home { .. }
            | NodeKind::Search(_) => {
                return Err(FsError::new(
                    Kind::NotPermitted,
                    format!("{} cannot be removed", entry.name),
                ))
            }
        };
        result.map_err(write_error)?;
        {
            // A time set on it can no longer matter.
            let canonical = self.canonical_ino(entry.ino);
            let mut mtimes = self.writes.mtimes();
            mtimes.remove(entry.ino);
            mtimes.remove(canonical);
        }
        if let Some(item) = entry.data.kind.item() {
            self.writes.fresh().remove(&item.id);
            // A file saved over this one and still open writes the item under its own inode.
            for (_, file) in self.files_writing_item(item.id) {
                file.mark_unlinked();
            }
        }
        self.mark_unlinked(entry.ino);
        Ok(())
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        self.check_writable()?;
        self.refuse_read_only_name(parent, name).await?;
        let (entry, _no_upload_meanwhile) = self.settled_child(parent, name).await?;
        if entry.data.kind.is_dir() {
            return Err(FsError::new(Kind::IsDir, format!("{name} is a directory")));
        }
        if self.unlink_renamed_away(parent, &entry).await? {
            return Ok(());
        }
        self.remove_entry(&entry).await?;
        self.listings
            .patch(parent, |entries| entries.retain(|e| e.ino != entry.ino));
        Ok(())
    }
}
