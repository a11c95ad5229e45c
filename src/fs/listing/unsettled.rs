//! Items without a revision: what another client's upload looks like before its bytes arrive
//! (`pydas`, the web UI and the mount make a new file's item first, then upload into it), or an
//! empty item. It is shown as the empty directory it is, but neither the mount nor the kernel
//! keeps it: a lookup asks `item.get` again, a listing holding one is fresh for
//! [`UNSETTLED_TTL`] only, and the kernel gets it with no TTL. So a file read from a second
//! mount once its upload is done is the file, not the directory a listing saw meanwhile.

use std::time::Duration;

use crate::fs::inode::Attr;
use crate::fs::{Entry, FsError, FsResult, MidasFs};
use crate::midas::codes;

/// How long a listing that shows an item without a revision is fresh, however long the TTL.
pub(in crate::fs) const UNSETTLED_TTL: Duration = Duration::from_secs(1);

impl MidasFs {
    /// The entry of `name` if it is an item without a revision.
    pub(in crate::fs) fn unsettled_named<'a>(
        entries: &'a [Entry],
        name: &str,
    ) -> Option<&'a Entry> {
        entries
            .iter()
            .find(|e| e.data.kind.is_unsettled() && e.name == name)
    }

    /// A lookup of an item without a revision: what `item.get` says of it now, in its
    /// directory's listing too.
    pub(in crate::fs) async fn lookup_unsettled(
        &self,
        parent: u64,
        entry: &Entry,
    ) -> FsResult<Attr> {
        let Some(item) = entry.data.kind.item() else {
            return Ok(self.entry_attr(entry));
        };
        let old = entry.ino;
        let item = match self.client.item_get(item.id).await {
            Ok(item) => item,
            // Removed (or hidden) since the listing.
            Err(err) if err.api_code() == Some(codes::INVALID_POLICY) => {
                self.listings
                    .patch(parent, |entries| entries.retain(|e| e.ino != old));
                return Err(FsError::not_found(&entry.name));
            }
            Err(err) => return Err(err.into()),
        };
        let now = self.item_entry(&item, entry.name.clone(), entry.data.writable);
        let shown = now.clone();
        self.listings.patch(parent, |entries| {
            for listed in entries.iter_mut().filter(|e| e.ino == old) {
                *listed = shown.clone();
            }
        });
        self.remember(parent, &now);
        Ok(self.entry_attr(&now))
    }

    /// How long the kernel may keep what it was told of inode `ino`: the TTL, or nothing for an
    /// item without a revision and for a new file not on the server yet.
    pub fn ttl_of(&self, ino: u64) -> Duration {
        let unsettled = self
            .nodes()
            .get(&ino)
            .is_some_and(|node| node.data.kind.is_unsettled());
        if unsettled || self.is_unsaved_new(ino) {
            Duration::ZERO
        } else {
            self.config.ttl
        }
    }

    /// [`MidasFs::ttl_of`] for an entry of a listing.
    pub fn entry_ttl(&self, entry: &Entry) -> Duration {
        if entry.data.kind.is_unsettled() || self.is_unsaved_new(entry.ino) {
            Duration::ZERO
        } else {
            self.config.ttl
        }
    }
}
