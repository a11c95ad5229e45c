//! Privacy by `chmod`: the others' read bit of a file or folder is whether anyone may read it.
//!
//! Modes already show access (see [`super::inode::NodeData`]): public objects have the group's
//! and others' read bits, private ones none. Here a change of the others' read bit changes the
//! access on the server: `chmod o+r` makes an item or folder Public (the anonymous group gains
//! READ: `item.add.policygroup`, `folder.add.policygroup`), `chmod o-r` makes it Private (the
//! policy is removed). A folder changes alone, as POSIX `chmod` does; `chmod -R o+rX` visits
//! everything below. The other bits cannot be changed and are ignored, as before. Only an admin
//! of the object may change its access: Midas refuses the others, and the mount says EPERM.
//!
//! A file this mount has just made is not made Public by a `chmod`: `cp -p`, `rsync -a` and
//! editors set the mode of the files they write (from a home directory, usually 0644) right
//! after writing them, and that must not make every file copied into a Private folder Public.
//! So for [`JUST_MADE`] after its upload, until it is renamed, a new file ignores `o+r` (`o-r`
//! still makes it Private).
//! `user.midas.privacy` reads `Public` or `Private`.

use super::error::{FsError, FsResult, Kind};
use super::inode::NodeKind;
use super::write::{read_only_error, write_error};
use super::MidasFs;
use crate::midas::{self, codes};

/// How long after this mount made a file of new content a `chmod o+r` of it is taken for a copying
/// tool's, and ignored.
const JUST_MADE: std::time::Duration = std::time::Duration::from_secs(10);

/// The mode bit that stands for "anyone may read".
const OTHERS_READ: u32 = 0o004;

impl MidasFs {
    /// Applies the others' read bit of `mode` to node `ino`'s access on the server, when it
    /// differs from what the node shows now.
    pub async fn chmod(&self, ino: u64, mode: u32) -> FsResult<()> {
        let (kind, public, parent) = {
            let nodes = self.nodes();
            let node = nodes.get(&ino).ok_or_else(|| super::unknown_inode(ino))?;
            (node.data.kind.clone(), node.data.public, node.parent)
        };
        self.refuse_read_only_node(ino)?;
        let wanted = mode & OTHERS_READ != 0;
        if wanted == public {
            return Ok(());
        }
        let just_made = match &kind {
            NodeKind::NewFile { .. } => true,
            kind => kind.item().is_some_and(|item| {
                self.writes
                    .fresh_for(item.id)
                    .is_some_and(|age| age < JUST_MADE)
            }),
        };
        if just_made && wanted {
            log::info!("inode {ino}: a file just written keeps its folder's access, not o+r");
            return Ok(());
        }
        if matches!(kind, NodeKind::NewFile { .. }) {
            // Not on the server yet: its folder's access is what it will get.
            return Ok(());
        }
        if self.read_only() {
            return Err(read_only_error());
        }
        match &kind {
            NodeKind::Folder { id, .. } => {
                self.client
                    .folder_set_public(*id, wanted)
                    .await
                    .map_err(policy_error)?;
            }
            kind if kind.item().is_some() => {
                let id = kind.item().map(|item| item.id).unwrap_or_default();
                self.client
                    .item_set_public(id, wanted)
                    .await
                    .map_err(policy_error)?;
            }
            _ => {
                return Err(FsError::new(
                    Kind::NotPermitted,
                    "only files and folders on the server have an access to change",
                ))
            }
        }
        log::info!(
            "inode {ino}: made {} by chmod",
            if wanted { "Public" } else { "Private" }
        );
        // The node and the listing that shows it; an item directory's files share its access.
        self.set_public_shown(ino, parent, wanted);
        if matches!(kind, NodeKind::ItemDir { .. }) {
            self.mark_access_below(ino, wanted);
        }
        Ok(())
    }

    fn set_public_shown(&self, ino: u64, parent: u64, public: bool) {
        if let Some(node) = self.nodes().get_mut(&ino) {
            node.data.public = public;
        }
        self.listings.patch(parent, |entries| {
            for entry in entries.iter_mut().filter(|e| e.ino == ino) {
                entry.data.public = public;
            }
        });
    }

    /// `Public` or `Private`, for objects on the server.
    pub(super) fn privacy_xattr(&self, ino: u64) -> Option<String> {
        let nodes = self.nodes();
        let node = nodes.get(&ino)?;
        match node.data.kind {
            NodeKind::Folder { .. }
            | NodeKind::ItemFile { .. }
            | NodeKind::ItemDir { .. }
            | NodeKind::Bitstream { .. }
            | NodeKind::SavedFile { .. } => Some(
                if node.data.public {
                    "Public"
                } else {
                    "Private"
                }
                .to_owned(),
            ),
            _ => None,
        }
    }
}

/// Midas refuses an access change to a non-admin with −151 (`MIDAS_INVALID_POLICY`): EPERM, as
/// `chmod` of another user's file.
fn policy_error(err: midas::Error) -> FsError {
    match err.api_code() {
        Some(codes::INVALID_POLICY) => FsError::from_midas(Kind::NotPermitted, err),
        _ => write_error(err),
    }
}
