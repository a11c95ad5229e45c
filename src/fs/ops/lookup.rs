//! The kernel's view of inodes: lookups (counted, as the kernel counts them), forget, getattr,
//! readlink.

use std::sync::Arc;

use crate::fs::error::Kind;
use crate::fs::inode::{Attr, ROOT, USERS};
use crate::fs::{names, unknown_inode, Entry, FsError, FsResult, MidasFs, MountRoot, Node};

impl MidasFs {
    /// Answers a lookup from a fresh cached listing, or None when the listing must be fetched.
    pub fn cached_lookup(&self, parent: u64, name: &str) -> Option<FsResult<Attr>> {
        if self.search_needs_modules(parent, name) {
            return None;
        }
        if let Some(found) = self.lookup_search(parent, name) {
            return Some(found);
        }
        let entries = self.cached_listing(parent)?;
        if Self::is_revision_lookup(&entries, name)
            || self.missing_from_warm(parent, &entries, name)
            || Self::listed_unsettled(&entries, name).is_some()
        {
            return None;
        }
        Some(self.lookup_in(parent, &entries, name))
    }

    /// The entry `name` of `entries` when it is an item listed without a revision.
    fn listed_unsettled<'a>(entries: &'a [Entry], name: &str) -> Option<&'a Entry> {
        entries
            .iter()
            .find(|entry| entry.name == name && entry.data.kind.is_unsettled())
    }

    /// `entry` of `dir`, asked for again when it is an item listed without a revision (see
    /// [`crate::fs::inode::NodeKind::is_unsettled`]): the file another client was uploading
    /// shows as a file once its upload is through, and is renamed or removed as one. The
    /// listing shows what it is now; None when it is gone.
    pub(in crate::fs) async fn settle_unsettled(
        &self,
        dir: u64,
        entry: &Entry,
    ) -> FsResult<Option<Entry>> {
        let id = match entry.data.kind.item() {
            Some(item) if entry.data.kind.is_unsettled() => item.id,
            _ => return Ok(Some(entry.clone())),
        };
        let stale = entry.ino;
        let fresh = match self.client.item_get(id).await {
            Ok(fresh) => fresh,
            Err(err) => {
                let err = FsError::from(err);
                if err.kind == Kind::NotFound {
                    self.listings
                        .patch(dir, |entries| entries.retain(|listed| listed.ino != stale));
                    return Ok(None);
                }
                return Err(err);
            }
        };
        let now = self.item_entry(&fresh, entry.name.clone(), entry.data.writable);
        if now.ino != stale {
            self.listings.patch(dir, |entries| {
                for listed in entries.iter_mut().filter(|listed| listed.ino == stale) {
                    // Under the name it has there (a listing fetched since may name it apart).
                    let name = std::mem::take(&mut listed.name);
                    *listed = Entry {
                        name,
                        ..now.clone()
                    };
                }
            });
        }
        Ok(Some(now))
    }

    /// Whether `name` is missing from a listing the mount made at its start, before anyone
    /// looked (see `listing/warm.rs`): such a listing does not say a name is not there, so
    /// that something made on the server right after mounting is found at once. Once a
    /// program read the directory, its listing answers as any other.
    fn missing_from_warm(&self, parent: u64, entries: &[Entry], name: &str) -> bool {
        self.listings.is_warm(parent) && !entries.iter().any(|entry| entry.name == name)
    }

    /// Looks up `name` in directory `parent`; in a folder not listed yet, as soon as that
    /// name's entry is known (see [`MidasFs::lookup_unlisted`]).
    pub async fn lookup(self: &Arc<Self>, parent: u64, name: &str) -> FsResult<Attr> {
        if self.search_needs_modules(parent, name) {
            self.learn_modules().await?;
        }
        if let Some(found) = self.lookup_search(parent, name) {
            return found;
        }
        if let Some(entries) = self.cached_listing(parent) {
            if self.missing_from_warm(parent, &entries, name) {
                // Asked again, but not forgotten meanwhile: a create that comes while it is
                // fetched (rsync's temporary file, after this lookup found it free) still sees
                // the names listed.
                self.listings.expire(parent);
            }
        }
        if self.cached_listing(parent).is_none() {
            if let Some(found) = self.lookup_unlisted(parent, name).await {
                return found;
            }
        }
        let entries = self.listing(parent).await?;
        if let Some(revision) = self.lookup_revision(parent, &entries, name).await {
            return revision;
        }
        if let Some(entry) = Self::listed_unsettled(&entries, name) {
            let entry = self
                .settle_unsettled(parent, entry)
                .await?
                .ok_or_else(|| FsError::not_found(name))?;
            self.remember(parent, &entry);
            return Ok(self.entry_attr(&entry));
        }
        match self.lookup_in(parent, &entries, name) {
            Err(err) if err.kind == Kind::NotFound && parent == USERS => {
                self.lookup_unlisted_user(name).await
            }
            other => other,
        }
    }

    pub(in crate::fs) fn lookup_in(
        &self,
        parent: u64,
        entries: &[Entry],
        name: &str,
    ) -> FsResult<Attr> {
        let entry = entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| FsError::not_found(name))?;
        self.remember(parent, entry);
        // A file open for writing or still uploading: its local size.
        Ok(self.entry_attr(entry))
    }

    /// Users that `user.list` does not show (private ones) can still be reached by name, as pydas
    /// does: `users/First_Last` → `user.get`.
    pub(in crate::fs) async fn lookup_unlisted_user(&self, name: &str) -> FsResult<Attr> {
        let (first, last) = names::to_midas(name)
            .split_once('_')
            .map(|(f, l)| (f.to_owned(), l.to_owned()))
            .ok_or_else(|| FsError::not_found(name))?;
        let user = self
            .client
            .user_get_by_name(&first, &last)
            .await?
            .ok_or_else(|| FsError::not_found(name))?;
        let entry = self.user_entry(&user, name.to_owned());
        self.remember(USERS, &entry);
        Ok(entry.attr())
    }

    /// Records that the kernel now holds a reference to this entry's inode.
    pub fn remember(&self, parent: u64, entry: &Entry) {
        let mut nodes = self.nodes();
        let node = nodes.entry(entry.ino).or_insert_with(|| Node {
            data: entry.data.clone(),
            parent,
            lookups: 0,
            kernel_cached_md5: None,
            metadata: None,
        });
        node.data = entry.data.clone();
        node.parent = parent;
        node.lookups += 1;
    }

    pub fn forget(&self, ino: u64, count: u64) {
        if ino == ROOT {
            return;
        }
        let mut nodes = self.nodes();
        let Some(node) = nodes.get_mut(&ino) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(count);
        if node.lookups == 0 {
            nodes.remove(&ino);
            self.writes.forget_alias(ino);
            drop(nodes);
            crate::fs::give_back::after(1);
        }
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let nodes = self.nodes();
        let node = nodes.get(&ino).ok_or_else(|| unknown_inode(ino))?;
        let mut attr = node.data.attr(ino);
        if ino == ROOT && matches!(self.config.root, MountRoot::Everything) {
            attr.mtime = self.mounted_at;
        }
        drop(nodes);
        self.adjust_attr(ino, &mut attr);
        Ok(attr)
    }

    pub fn parent(&self, ino: u64) -> u64 {
        self.nodes().get(&ino).map_or(ROOT, |n| n.parent)
    }

    pub fn readlink(&self, ino: u64) -> FsResult<String> {
        match self
            .nodes()
            .get(&ino)
            .and_then(|n| n.data.kind.link_target())
        {
            Some(target) => Ok(target.to_owned()),
            None => Err(FsError::new(
                Kind::Invalid,
                format!("inode {ino} is not a symlink"),
            )),
        }
    }
}
