//! Who may read what: a moved object takes the access of its new folder, and what the mount
//! shows of access (permission bits) stays true after such a change.
//!
//! Midas's own `item.move` only *adds* the new folder's policies (an item moved from Public to
//! Private stays readable by anyone) and `folder.move` changes none. The mount presents a folder's
//! privacy as the privacy of what is in it, so after a move into another folder it makes the
//! object public or private like that folder: an item gains or loses the anonymous READ policy,
//! a folder is set to the new privacy recursively (everything in it then has the folder's
//! policies, Midas's `folder.set.privacy.recursive`).

use super::error::FsResult;
use super::inode::NodeKind;
use super::kernel::KernelCaches;
use super::write::write_error;
use super::MidasFs;
use crate::midas::types::{Id, PRIVACY_PUBLIC};

impl MidasFs {
    /// Lets the filesystem tell the kernel about the caches it keeps: attributes that changed
    /// on their own (permission bits that followed a folder moved elsewhere, an upload's result)
    /// and file content put in its page cache ahead of a program. Set once, after mounting.
    pub fn tell_kernel(&self, kernel: std::sync::Arc<dyn KernelCaches>) {
        if self.kernel.set(kernel).is_err() {
            log::warn!("tell_kernel called twice; the first stays");
        }
    }

    /// Whether the node is readable by anyone (unknown nodes count as not).
    pub(in crate::fs) fn is_public(&self, ino: u64) -> bool {
        self.nodes().get(&ino).is_some_and(|node| node.data.public)
    }

    /// Whether folder `id` is readable by anyone, as the server says now.
    pub(in crate::fs) async fn folder_is_public(&self, id: Id) -> FsResult<bool> {
        let folder = self.client.folder_get(id).await?;
        Ok(folder.privacy_status == PRIVACY_PUBLIC)
    }

    /// After item `id` moved into folder `to` (its privacy now `privacy_status`): make it as
    /// public or private as `to`. Returns whether it is public.
    pub(in crate::fs) async fn match_item_access(
        &self,
        id: Id,
        privacy_status: i64,
        to: Id,
    ) -> FsResult<bool> {
        let public = self.folder_is_public(to).await?;
        if (privacy_status == PRIVACY_PUBLIC) != public {
            self.client
                .item_set_public(id, public)
                .await
                .map_err(write_error)?;
            log::info!(
                "item {id}: made {} like the folder it moved into",
                describe(public)
            );
        }
        Ok(public)
    }

    /// After folder `id` moved into folder `to` (its privacy now `privacy_status`): make it and
    /// everything in it as public or private as `to`. Returns whether it is public.
    pub(in crate::fs) async fn match_folder_access(
        &self,
        id: Id,
        privacy_status: i64,
        to: Id,
    ) -> FsResult<bool> {
        let public = self.folder_is_public(to).await?;
        if (privacy_status == PRIVACY_PUBLIC) != public {
            let changed = self
                .client
                .folder_set_privacy_recursive(id, public)
                .await
                .map_err(write_error)?;
            if changed.failure > 0 {
                log::warn!(
                    "folder {id}: moved and made {}, but {} object(s) in it could not be \
                     changed (no admin right on them); they keep their old access",
                    describe(public),
                    changed.failure
                );
            } else {
                log::info!(
                    "folder {id}: made {} with its {} object(s) like the folder it moved into",
                    describe(public),
                    changed.success - 1
                );
            }
        }
        Ok(public)
    }

    /// Shows node `ino` and whatever cached listings hold below it as public or private.
    pub(in crate::fs) fn mark_access_below(&self, ino: u64, public: bool) {
        let mut pending = vec![ino];
        let mut seen = 0usize;
        while let Some(dir) = pending.pop() {
            seen += 1;
            if seen > MARK_LIMIT {
                break;
            }
            self.set_node_public(dir, public);
            let mut below = Vec::new();
            let mut files = Vec::new();
            self.listings.patch(dir, |entries| {
                for entry in entries.iter_mut() {
                    entry.data.public = public;
                    if entry.data.kind.is_dir() {
                        below.push(entry.ino);
                    } else {
                        files.push(entry.ino);
                    }
                }
            });
            for file in files {
                self.set_node_public(file, public);
            }
            pending.extend(below);
        }
        if seen > MARK_LIMIT {
            // Too many to patch: forget the listings, the next look asks the server.
            self.forget_listings_below(ino);
        }
    }

    /// Shows a node the kernel may know as public or private, and has the kernel forget the
    /// permission bits it cached (until then it would keep them for up to the TTL).
    pub(in crate::fs) fn set_node_public(&self, ino: u64, public: bool) {
        let known = match self.nodes().get_mut(&ino) {
            Some(node) => {
                node.data.public = public;
                true
            }
            None => false,
        };
        if known {
            if let Some(kernel) = self.kernel.get() {
                kernel.attributes_changed(ino);
            }
        }
    }

    pub(in crate::fs) fn forget_listings_below(&self, ino: u64) {
        let mut pending = vec![ino];
        while let Some(dir) = pending.pop() {
            if let Some(entries) = self.listings.last(dir) {
                pending.extend(
                    entries
                        .iter()
                        .filter(|e| matches!(e.data.kind, NodeKind::Folder { .. }))
                        .map(|e| e.ino),
                );
            }
            self.listings.remove(dir);
        }
    }
}

/// Directories patched in memory after a recursive privacy change; beyond, listings are dropped.
pub(in crate::fs) const MARK_LIMIT: usize = 10_000;

pub(in crate::fs) fn describe(public: bool) -> &'static str {
    if public {
        "public"
    } else {
        "private"
    }
}

impl MidasFs {
    /// Rename's view of [`MidasFs::match_item_access`] or [`MidasFs::match_folder_access`]:
    /// whether the moved object is public now, or, when its access could not be made to match its
    /// new folder, an error saying so (the object did move: both folders' listings are dropped).
    pub(in crate::fs) fn moved_access(
        &self,
        matched: FsResult<bool>,
        from: u64,
        to: u64,
        name: &str,
    ) -> FsResult<bool> {
        matched.map_err(|err| {
            self.listings.remove(from);
            self.listings.remove(to);
            let detail = format!(
                "{name} moved, but its access could not be made to match its new folder: {}",
                err.detail
            );
            err.context(detail)
        })
    }
}
