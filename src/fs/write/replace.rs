//! Saving by rename: editors, file managers and rsync write a temporary file and rename it over
//! the file they save (vim renames the file away, writes a new one and removes the old). Done
//! as POSIX says, that would delete the item the file was and make a new one: its id, metadata,
//! history and URL would be lost. So when a file this mount has just made is renamed over a
//! single-file item (or vim's backup of one is removed), its content becomes a new revision of
//! that item instead, and the temporary item goes.
//!
//! The content is usually on the server already (the temporary file was closed, or fsync'ed,
//! before the rename): the new revision is then made without sending it again. Midas's checksum
//! dedup adds a known content to an item's *latest* revision, under a name that revision lacks;
//! so a new revision holding an empty placeholder is made first, the content is added to it by
//! its MD5, and the placeholder goes. Metadata lives on revisions in Midas: the target's is
//! copied to the new one.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::OwnedMutexGuard;

use super::links::{lost_content, Link};
use super::set_times::revision_of;
use super::upload::{skipped_upload, Upload, Uploaded};
use super::{write_error, Container, Target};
use crate::fs::error::Kind;
use crate::fs::inode::{BitstreamInfo, ItemInfo, NodeKind};
use crate::fs::spool::SpoolFile;
use crate::fs::{bitstream_info, names, Entry, FsError, FsResult, MidasFs};
use crate::midas::types::{Id, MetadataValue};
use crate::midas::UploadRevision;

/// A fresh item's content as the server holds it.
pub(in crate::fs) struct Content {
    md5: String,
    size: u64,
    bitstream: Option<BitstreamInfo>,
}

impl MidasFs {
    /// `rename(source, target)` where `target` exists in a folder: if `source` is a file this
    /// mount just made and `target` a single-file item, the source's content becomes a new
    /// revision of the target (see the module's documentation), and true is returned.
    ///
    /// `held` is the guard the caller took on the upload of the source (see
    /// [`MidasFs::settled_child`]), if any: this does not wait for it a second time.
    pub(in crate::fs) async fn save_over(
        &self,
        source: &Entry,
        target: &Entry,
        new_parent: u64,
        held: Option<&OwnedMutexGuard<()>>,
    ) -> FsResult<bool> {
        let target_item = match &target.data.kind {
            NodeKind::ItemFile { item, .. } | NodeKind::SavedFile { item, .. } => item.clone(),
            _ => return Ok(false),
        };
        if source.ino == target.ino {
            return Ok(false);
        }
        let (renamed, open) = self.open_file_of(source);
        match &source.data.kind {
            NodeKind::NewFile { .. } => {
                // Not on the server yet: its close sends it, as a new revision of the target.
                let Some(file) = open else {
                    return Ok(false);
                };
                {
                    let mut data = file.lock();
                    if data.unlinked || data.spool.is_recovered() {
                        return Ok(false);
                    }
                    data.early.spoil();
                    data.target = Target::ItemFile {
                        item: target_item,
                        parent_ino: new_parent,
                    };
                    data.dirty = true;
                    data.empty_upload = false;
                }
                let shown = Entry {
                    name: target.name.clone(),
                    ..target.clone()
                };
                self.show_replaced(renamed, None, &shown, new_parent);
                // Once shown under the target's name, which its record then says.
                self.retarget_spool(renamed, &file);
                Ok(true)
            }
            NodeKind::SavedFile { item, .. } | NodeKind::ItemFile { item, .. }
                if self.writes.fresh().contains_key(&item.id) && item.id != target_item.id =>
            {
                let fresh_item = item.clone();
                let mut local = None;
                // No save of the file runs while this one reads its spool: the two would both
                // mark it, and a save's upload of new content could end between the check
                // below and the upload here.
                let _uploading = match &open {
                    // Its first upload made the item: the rename waited for it, and holds it.
                    Some(file) if file.upload_held_by(held) => None,
                    Some(file) => Some(Arc::clone(&file.upload).lock_owned().await),
                    None => None,
                };
                if let Some(file) = &open {
                    let written_since = {
                        let mut data = file.lock();
                        if data.dirty {
                            // Written since its upload: its close sends the spool, to the
                            // target.
                            data.early.spoil();
                            data.target = Target::ItemFile {
                                item: target_item.clone(),
                                parent_ino: new_parent,
                            };
                            data.empty_upload = false;
                        } else {
                            // Sent below: a change meanwhile goes into a copy (`Sends`).
                            data.sends.running = true;
                            local = Some(data.spool.path().to_owned());
                        }
                        data.dirty
                    };
                    if written_since {
                        self.remove_fresh(fresh_item.id).await;
                        let shown = Entry {
                            name: target.name.clone(),
                            ..target.clone()
                        };
                        self.show_replaced(renamed, Some(fresh_item.id), &shown, new_parent);
                        self.retarget_spool(renamed, file);
                        return Ok(true);
                    }
                }
                let uploaded = async {
                    let content = self.content_of(fresh_item.id).await?;
                    self.revise_with(&target_item, &content, local.as_deref(), &target.name)
                        .await
                }
                .await;
                if let (Some(file), Some(_)) = (&open, &local) {
                    let mut data = file.lock();
                    data.sends.running = false;
                    // Read by the upload above, and replaced meanwhile: no longer needed.
                    data.sends.replaced_running = None;
                }
                let uploaded = uploaded?;
                let mut retargeted = None;
                if let (Some(file), NodeKind::SavedFile { item, .. }) = (&open, &uploaded.node.kind)
                {
                    file.lock().target = Target::ItemFile {
                        item: item.clone(),
                        parent_ino: new_parent,
                    };
                    retargeted = Some(file);
                }
                self.remove_fresh(fresh_item.id).await;
                self.show_replaced(renamed, Some(fresh_item.id), &uploaded.entry, new_parent);
                if let Some(file) = retargeted {
                    self.retarget_spool(renamed, file);
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// `unlink` of vim's backup: `entry` is an item this mount renamed away from a name that
    /// now holds a fresh item. The fresh content becomes a new revision of the renamed item,
    /// which takes its name back; the fresh item goes. True if that was the case.
    pub(in crate::fs) async fn unlink_renamed_away(
        &self,
        parent: u64,
        entry: &Entry,
    ) -> FsResult<bool> {
        let item = match &entry.data.kind {
            NodeKind::ItemFile { item, .. } | NodeKind::SavedFile { item, .. } => item.clone(),
            _ => return Ok(false),
        };
        if !matches!(self.container(parent), Ok(Container::Folder(_))) {
            return Ok(false);
        }
        let old_name = self
            .writes
            .renamed_away()
            .iter()
            .find(|((dir, _), id)| *dir == parent && **id == item.id)
            .map(|((_, name), _)| name.clone());
        let Some(old_name) = old_name else {
            return Ok(false);
        };
        let Some(current) = self.child(parent, &old_name).await? else {
            return Ok(false);
        };
        let fresh_item = match &current.data.kind {
            NodeKind::SavedFile { item: fresh, .. } | NodeKind::ItemFile { item: fresh, .. }
                if self.writes.fresh().contains_key(&fresh.id) =>
            {
                fresh.clone()
            }
            _ => return Ok(false),
        };
        // The kernel sends RELEASE after close(2) returns, so the new file may still be open
        // here, its content uploaded by the flush: it counts once that upload is done and
        // nothing was written since. One still being written keeps its own item.
        if let (_, Some(file)) = self.open_file_of(&current) {
            let _uploaded = file.upload.lock().await;
            if file.lock().dirty {
                return Ok(false);
            }
        }
        let content = self.content_of(fresh_item.id).await?;
        let mut uploaded = self.revise_with(&item, &content, None, &old_name).await?;
        self.client
            .item_rename(&item.uuid, &names::to_midas(&old_name), true)
            .await
            .map_err(write_error)?;
        self.writes.renamed_away().retain(|_, id| *id != item.id);
        self.remove_fresh(fresh_item.id).await;
        uploaded.entry.name = old_name;
        let gone = entry.ino;
        self.listings
            .patch(parent, |entries| entries.retain(|e| e.ino != gone));
        self.show_replaced(current.ino, Some(fresh_item.id), &uploaded.entry, parent);
        Ok(true)
    }

    /// The inode the kernel knows a listed file by, and the file if it is open for writing: a
    /// new file keeps the inode it was created with after its upload made it an item.
    pub(in crate::fs) fn open_file_of(
        &self,
        entry: &Entry,
    ) -> (u64, Option<std::sync::Arc<super::WriteFile>>) {
        if let Some(file) = self.writes.files().get(&entry.ino) {
            return (entry.ino, Some(std::sync::Arc::clone(file)));
        }
        for (ino, file) in self.writes.open_files() {
            if self.canonical_ino(ino) == entry.ino {
                return (ino, Some(file));
            }
        }
        (entry.ino, None)
    }

    /// What the server holds of a fresh item: its head's only bitstream.
    pub(in crate::fs) async fn content_of(&self, item_id: Id) -> FsResult<Content> {
        let item = self.client.item_get(item_id).await?;
        let only = item
            .head()
            .and_then(|head| match head.bitstreams.as_slice() {
                [only] => Some(only),
                _ => None,
            })
            .ok_or_else(|| {
                FsError::new(
                    Kind::Io,
                    format!("item {item_id} changed on the server while it was saved"),
                )
            })?;
        let info = bitstream_info(only);
        Ok(Content {
            md5: only.checksum.clone(),
            size: info.size,
            bitstream: Some(info),
        })
    }

    /// A fresh item that became part of another goes.
    pub(in crate::fs) async fn remove_fresh(&self, item_id: Id) {
        self.writes.fresh().remove(&item_id);
        self.delete_quietly(item_id).await;
    }

    /// A new revision of `item` holding `content` (see the module's documentation), with the
    /// metadata of the revision before; `shown` is the name the mount shows it under. Content
    /// the head holds already makes no revision.
    pub(in crate::fs) async fn revise_with(
        &self,
        item: &ItemInfo,
        content: &Content,
        local: Option<&Path>,
        shown: &str,
    ) -> FsResult<Uploaded> {
        let current = self.client.item_get(item.id).await?;
        let head = current.head();
        let only = current.only_bitstream();
        if let (Some(head), Some(only)) = (head, only) {
            if only.checksum == content.md5 && u64::try_from(only.sizebytes) == Ok(content.size) {
                return Ok(self.saved_file(&current, head.revision, content.size, shown.into()));
            }
        }
        let file_name = only.map_or_else(|| current.name.clone(), |only| only.name.clone());
        let before = only.map(|only| (only.name.clone(), only.checksum.clone()));
        let revision = head.map_or(0, |head| head.revision) + 1;
        let metadata = self.client.item_get_metadata(item.id).await?;
        let placeholder = format!("{file_name}.midasfs-new");
        let empty = self.writes.spool.create()?;
        self.send_file(
            item.id,
            &placeholder,
            empty.path(),
            0,
            None,
            UploadRevision::New,
        )
        .await?;
        let filled = self
            .fill_by_checksum(item.id, &file_name, content, local)
            .await;
        if let (Err(err), Some((name, md5))) = (&filled, &before) {
            // The new revision exists: it gets the old content back (linked by its MD5, which
            // the old revision holds), so that the file still reads as it did.
            let id = item.id;
            log::warn!("item {id}: saving the new content failed ({err}); restoring the old one");
            match self.client.upload_token(item.id, name, Some(md5)).await {
                Ok(None) => {}
                Ok(Some(_)) => log::warn!("item {id}: the server did not find the old content"),
                Err(err) => log::warn!("item {id}: could not restore the old content: {err}"),
            }
            if let Err(err) = self.carry_metadata(item.id, &metadata).await {
                log::warn!("item {id}: could not restore the metadata: {err}");
            }
        }
        let after = self.client.item_get(item.id).await?;
        let placeholders = after
            .head()
            .into_iter()
            .flat_map(|head| head.bitstreams.iter())
            .filter(|b| b.name == placeholder)
            .map(|b| b.bitstream_id);
        for id in placeholders.collect::<Vec<_>>() {
            self.client
                .bitstream_delete(id)
                .await
                .map_err(write_error)?;
        }
        filled?;
        self.carry_metadata(item.id, &metadata).await?;
        let after = self.client.item_get(item.id).await?;
        Ok(self.saved_file(&after, revision, content.size, shown.into()))
    }

    /// Adds `content` to the item's latest revision as `file_name`: by its checksum, or sent
    /// (from `local`, or else downloaded from the fresh item) if the server lacks it.
    pub(in crate::fs) async fn fill_by_checksum(
        &self,
        item_id: Id,
        file_name: &str,
        content: &Content,
        local: Option<&Path>,
    ) -> FsResult<()> {
        let token = self
            .client
            .upload_token(item_id, file_name, Some(&content.md5))
            .await
            .map_err(write_error)?;
        let Some(token) = token else {
            // Linked: checked that the server holds the content (see `links`).
            return match local {
                Some(path) => {
                    let upload = Upload {
                        item_id,
                        file_name,
                        path,
                        size: content.size,
                        revision: UploadRevision::Head,
                        md5: Some(&content.md5),
                    };
                    self.confirm_link(&upload).await.map(drop)
                }
                // The only other copy is the server's, which shares the lost file.
                None => match self.check_link(item_id, file_name, content.size).await? {
                    Link::Served(_) => Ok(()),
                    Link::Lost(lost) => {
                        if let Err(err) = self.client.bitstream_delete(lost).await {
                            log::warn!("could not remove the unreadable bitstream {lost}: {err}");
                        }
                        Err(lost_content(item_id, file_name))
                    }
                },
            };
        };
        let mut downloaded: Option<SpoolFile> = None;
        let path = match (local, &content.bitstream) {
            (Some(path), _) => path.to_owned(),
            (None, Some(bitstream)) => {
                let mut spool = self.writes.spool.create()?;
                self.download_into(&mut spool, bitstream).await?;
                let path = spool.path().to_owned();
                downloaded = Some(spool);
                path
            }
            (None, None) => return Err(skipped_upload(item_id)),
        };
        self.client
            .upload_perform(
                &token,
                item_id,
                file_name,
                &path,
                0,
                content.size,
                UploadRevision::Head,
            )
            .await
            .map_err(write_error)?;
        drop(downloaded);
        Ok(())
    }

    /// Sets the metadata of an item's old head on its new head (Midas keeps metadata per
    /// revision).
    pub(in crate::fs) async fn carry_metadata(
        &self,
        item_id: Id,
        metadata: &[MetadataValue],
    ) -> FsResult<()> {
        for value in metadata {
            self.client
                .item_set_metadata(item_id, &value.element, &value.qualifier, &value.value)
                .await
                .map_err(write_error)?;
        }
        if !metadata.is_empty() {
            self.forget_metadata(item_id);
        }
        Ok(())
    }

    /// After a save by rename: the name `shown.name` in `dir` is the item `shown`, and the
    /// kernel's inode of the renamed file (`renamed`) shows it too until the kernel looks the
    /// name up again, as does any inode of the fresh item `fresh` it was.
    pub(in crate::fs) fn show_replaced(
        &self,
        renamed: u64,
        fresh: Option<Id>,
        shown: &Entry,
        dir: u64,
    ) {
        let old_canonical = self.canonical_ino(renamed);
        {
            // The renamed file's time, whatever the replaced file had (`carry` would keep a
            // later one of the target's).
            let mut mtimes = self.writes.mtimes();
            if let Some(set) = mtimes.remove(old_canonical) {
                mtimes.put(shown.ino, set, revision_of(&shown.data.kind));
            }
        }
        let mut entry = shown.clone();
        if let Some(mtime) = self.writes.mtime_override(shown.ino) {
            entry.data.mtime = mtime;
        }
        self.listings.patch(dir, |entries| {
            entries.retain(|e| {
                e.name != entry.name
                    && e.ino != renamed
                    && e.ino != old_canonical
                    && e.ino != entry.ino
            });
            entries.push(entry);
        });
        // After the listing: a listing fetched meanwhile is out of date then (see
        // `Listings::finish_fetch`), and cannot undo this.
        {
            let mut nodes = self.nodes();
            // The kernel may know the renamed file by either number (a lookup after its upload
            // gave it the item's).
            for (ino, node) in nodes.iter_mut() {
                let ino = *ino;
                let stands_for_source = ino == renamed
                    || ino == old_canonical
                    || (fresh.is_some() && node.data.kind.item().map(|i| i.id) == fresh);
                if stands_for_source || ino == shown.ino {
                    node.data = shown.data.clone();
                    node.kernel_cached_md5 = None;
                    node.metadata = None;
                    if stands_for_source {
                        node.parent = dir;
                    }
                    // The kernel's inode for the name until it looks it up again.
                    self.writes.aliases().set(ino, shown.ino);
                }
            }
        }
    }
}
