//! History: every revision of a file, read-only, by a name no listing shows (`NAME@rN`).
//!
//! `data.csv@r2` in the folder of `data.csv` is revision 2 of that item, as it was: a read-only
//! file, so `diff data.csv@r2 data.csv` compares it with the head. Like ZFS's `.zfs/snapshot`
//! (hidden by default: `snapdir=hidden`) and NetApp's `.snapshot` (hidden from NFS listings),
//! old versions are reached by name but never listed, so `cp -r`, `rsync`, `du` and `find` see
//! only the head; unlike rclone's `--s3-versions`, which lists every version as a file of its
//! own (`file-v2006-01-02-150405-000.txt`) and so doubles what walks copy. A name beside the file
//! (instead of a `.revisions/` tree) keeps the path a user types short and works for items
//! shown as files, which have no directory to hide a `.revisions/` in. A real entry of that name
//! wins: a file literally called `data.csv@r2` is that file.
//!
//! `user.midas.revisions` on a file or item directory lists every revision with its date, author
//! and size, one per line.

use std::collections::HashMap;

use super::error::{FsError, FsResult, Kind};
use super::inode::{Attr, ItemInfo, NodeKind};
use super::listing::bitstream_info;
use super::{Entry, MidasFs};
use crate::midas::types::{Id, Item, Revision, PRIVACY_PUBLIC};

/// The extended attribute listing an item's revisions.
pub const REVISIONS_XATTR: &str = "user.midas.revisions";

/// `NAME@rN` as (`NAME`, N), for N ≥ 1 written without leading zeros.
pub fn revision_name(name: &str) -> Option<(&str, i64)> {
    let (base, number) = name.rsplit_once("@r")?;
    if base.is_empty() || number.is_empty() || number.starts_with('0') {
        return None;
    }
    if !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((base, number.parse().ok()?))
}

impl MidasFs {
    /// Whether looking `name` up in a listing of `entries` means a revision, which takes the
    /// network (the listing alone cannot answer it).
    pub(super) fn is_revision_lookup(entries: &[Entry], name: &str) -> bool {
        if entries.iter().any(|e| e.name == name) {
            return false;
        }
        revision_name(name).is_some_and(|(base, _)| {
            entries
                .iter()
                .any(|e| e.name == base && e.data.kind.item().is_some())
        })
    }

    /// Looks up `NAME@rN` in directory `parent` (whose listing is `entries`): revision N of the
    /// item file `NAME`, or None when `name` is no such name.
    pub(super) async fn lookup_revision(
        &self,
        parent: u64,
        entries: &[Entry],
        name: &str,
    ) -> Option<FsResult<Attr>> {
        if !Self::is_revision_lookup(entries, name) {
            return None;
        }
        let (base, number) = revision_name(name)?;
        let base = entries.iter().find(|e| e.name == base)?;
        let item_id = base.data.kind.item()?.id;
        Some(self.revision_entry(parent, item_id, number, name).await)
    }

    async fn revision_entry(
        &self,
        parent: u64,
        item_id: Id,
        number: i64,
        name: &str,
    ) -> FsResult<Attr> {
        let item = self.client.item_get_history(item_id).await?;
        let revision = item
            .revisions
            .iter()
            .find(|r| r.revision == number)
            .ok_or_else(|| FsError::not_found(name))?;
        let [bitstream] = revision.bitstreams.as_slice() else {
            return Err(FsError::new(
                Kind::NotFound,
                format!(
                    "{name}: revision {number} holds {} files; only single-file revisions open by name",
                    revision.bitstreams.len()
                ),
            ));
        };
        let kind = NodeKind::Bitstream {
            item: ItemInfo::new(&item, number),
            bitstream: bitstream_info(bitstream),
        };
        let public = item.privacy_status == PRIVACY_PUBLIC;
        let entry = self.entry(name.to_owned(), kind, &revision.date, false, public);
        self.remember(parent, &entry);
        Ok(entry.attr())
    }

    /// Whether node `ino` is an old revision opened by name (a bitstream not inside an item
    /// directory).
    pub(super) fn is_revision(&self, ino: u64) -> bool {
        let nodes = self.nodes();
        let Some(node) = nodes.get(&ino) else {
            return false;
        };
        matches!(node.data.kind, NodeKind::Bitstream { .. })
            && nodes
                .get(&node.parent)
                .is_some_and(|parent| !matches!(parent.data.kind, NodeKind::ItemDir { .. }))
    }

    /// Refuses any change to a revision: history is read-only.
    pub(super) fn refuse_revision_change(&self, ino: u64) -> FsResult<()> {
        if self.is_revision(ino) {
            return Err(FsError::new(
                Kind::ReadOnly,
                format!("inode {ino} is an old revision, which cannot change"),
            ));
        }
        Ok(())
    }

    /// Refuses any change to a revision or to what is in `.search` (EROFS): both are views the
    /// mount makes, read-only as a snapshot is.
    pub(super) fn refuse_read_only_node(&self, ino: u64) -> FsResult<()> {
        self.refuse_revision_change(ino)?;
        if self.is_search_node(ino) {
            return Err(FsError::new(
                Kind::ReadOnly,
                format!("{}: the search directory is read-only", self.describe(ino)),
            ));
        }
        Ok(())
    }

    /// Refuses to make, remove or rename `name` in directory `parent` when that is `.search` or
    /// in it, or when `name` is a revision (`NAME@rN` of an item file beside it): EROFS, as on a
    /// read-only snapshot, where the name would otherwise be `ENOENT` (no listing shows it)
    /// and `rm data.csv@r1` would seem to say there is nothing to remove.
    pub(super) async fn refuse_read_only_name(&self, parent: u64, name: &str) -> FsResult<()> {
        self.refuse_in_search(parent, name)?;
        if revision_name(name).is_some() {
            let entries = self.listing(parent).await?;
            if Self::is_revision_lookup(&entries, name) {
                return Err(FsError::new(
                    Kind::ReadOnly,
                    format!("{name} is an old revision, which cannot change"),
                ));
            }
        }
        Ok(())
    }

    /// `user.midas.revisions` of an item file or directory: one line per revision, oldest first,
    /// `rN<TAB>date<TAB>author<TAB>size bytes`, then `<TAB>changes` when the revision has a comment.
    pub(super) async fn revisions_xattr(&self, ino: u64) -> FsResult<Option<String>> {
        let Some(item) = self.item_of(ino) else {
            return Ok(None);
        };
        if self.is_revision(ino) || !self.has_revisions_xattr(ino) {
            return Ok(None);
        }
        let item = self.client.item_get_history(item.id).await?;
        Ok(Some(self.describe_revisions(&item).await))
    }

    /// Item files and item directories have the attribute (not their bitstreams).
    pub(super) fn has_revisions_xattr(&self, ino: u64) -> bool {
        self.nodes().get(&ino).is_some_and(|node| {
            matches!(
                node.data.kind,
                NodeKind::ItemFile { .. } | NodeKind::ItemDir { .. } | NodeKind::SavedFile { .. }
            )
        })
    }

    async fn describe_revisions(&self, item: &Item) -> String {
        let mut revisions: Vec<&Revision> = item.revisions.iter().collect();
        revisions.sort_by_key(|r| r.revision);
        let mut authors: HashMap<Id, String> = HashMap::new();
        let mut text = String::new();
        for revision in revisions {
            if let std::collections::hash_map::Entry::Vacant(slot) = authors.entry(revision.user_id)
            {
                let author = match self.client.user_get_by_id(revision.user_id).await {
                    Ok(Some(user)) => format!("{} {}", user.firstname, user.lastname),
                    // A private user, or one deleted since: the id is all there is.
                    _ => format!("user {}", revision.user_id),
                };
                slot.insert(author);
            }
            let size: i64 = revision.bitstreams.iter().map(|b| b.sizebytes).sum();
            text.push_str(&format!(
                "r{}\t{}\t{}\t{} bytes",
                revision.revision, revision.date, authors[&revision.user_id], size,
            ));
            let changes = revision.changes.trim();
            if !changes.is_empty() {
                text.push('\t');
                text.push_str(&changes.replace(['\n', '\t'], " "));
            }
            text.push('\n');
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::revision_name;

    #[test]
    fn revision_names_are_name_at_r_and_a_positive_number() {
        assert_eq!(revision_name("data.csv@r2"), Some(("data.csv", 2)));
        assert_eq!(revision_name("a@r1@r12"), Some(("a@r1", 12)));
        for name in [
            "data.csv", "@r2", "a@r", "a@r0", "a@r02", "a@r-1", "a@rx", "a@R2",
        ] {
            assert_eq!(revision_name(name), None, "{name}");
        }
    }
}
