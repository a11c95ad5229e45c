//! Nothing written is lost: the spool's sidecar says where a file's data was going, a failed
//! upload's spool moves to the recovery directory, and half-made items are removed (now, later
//! when the server is back, or by the next mount after a crash).

use super::spool::SpoolFile;
use super::{Container, FileData, Target, WriteFile};
use crate::fs::inode::NodeKind;
use crate::fs::{FsError, MidasFs};
use crate::midas::codes;
use crate::midas::types::Id;

impl MidasFs {
    /// What the sidecar of a file's spool says: where its data is going (see `spool`).
    pub(in crate::fs) fn spool_about(
        &self,
        ino: u64,
        target: &Target,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut about = serde_json::Map::new();
        about.insert("server".into(), self.client.base_url().into());
        match target {
            Target::New {
                parent_ino,
                container,
                name,
                ..
            } => {
                about.insert(
                    "path".into(),
                    format!("{}/{name}", self.describe(*parent_ino)).into(),
                );
                about.insert("name".into(), name.clone().into());
                match container {
                    Container::Folder(id) => about.insert("folder_id".into(), (*id).into()),
                    Container::Item(item) => about.insert("item_id".into(), item.id.into()),
                };
            }
            Target::ItemFile { item, parent_ino }
            | Target::Bitstream {
                item, parent_ino, ..
            } => {
                // A file saved by rename is listed under the item's entry, not its own inode.
                let listed = matches!(target, Target::ItemFile { .. })
                    .then(|| self.listings.last(*parent_ino))
                    .flatten()
                    .and_then(|entries| {
                        entries
                            .iter()
                            .find(|e| match &e.data.kind {
                                NodeKind::ItemFile { item: listed, .. }
                                | NodeKind::SavedFile { item: listed, .. } => listed.id == item.id,
                                _ => false,
                            })
                            .map(|e| format!("{}/{}", self.describe(*parent_ino), e.name))
                    });
                let path = listed.unwrap_or_else(|| self.describe(ino));
                let name = path.rsplit('/').next().unwrap_or_default().to_owned();
                about.insert("path".into(), path.into());
                about.insert("name".into(), name.into());
                about.insert("item_id".into(), item.id.into());
                if let Target::Bitstream { bitstream, .. } = target {
                    about.insert("bitstream_id".into(), bitstream.id.into());
                }
            }
        }
        about
    }

    /// Writes the sidecar of a file's spool for its current target. On a spool filesystem
    /// without extended attributes the sidecar of the content due is its journal record: that
    /// one is left to the record's own rewrite, which follows a change of the target
    /// ([`MidasFs::retarget_spool`], or after an upload `settle_record`); a plain sidecar would
    /// drop the record meanwhile. A removed file's sidecar is written plainly: a record in it
    /// goes (nobody may send it any more; `settle_record` removes one in an attribute).
    pub(in crate::fs) fn describe_spool(&self, ino: u64, file: &WriteFile) {
        self.describe_locked_spool(ino, &file.lock());
    }

    fn describe_locked_spool(&self, ino: u64, data: &FileData) {
        if !data.unlinked && data.sends.due && data.spool.record_in_sidecar() {
            return;
        }
        let about = self.spool_about(ino, &data.target);
        data.spool.describe(&about);
    }

    /// After a change of where the file goes (a rename, a save by rename): its sidecar, and
    /// with write-back the journal record of its newest content due (closed, its upload not
    /// begun), so that a mount that dies next sends it where the file is now. Both under one
    /// hold of the file's lock, which a close takes to write its record too.
    pub(in crate::fs) fn retarget_spool(&self, ino: u64, file: &WriteFile) {
        let data = file.lock();
        self.describe_locked_spool(ino, &data);
        if self.writes.write_back.is_some() && !data.unlinked {
            let record = self.journal_record(ino, &file.identity, &data.target);
            self.journal_newest_due(ino, &data, &record);
        }
    }

    /// Moves the spool of a file that could not be saved into the recovery directory, loudly.
    pub(in crate::fs) fn keep_unsaved(&self, ino: u64, file: &WriteFile, err: &FsError) {
        let target = file.lock().target.clone();
        if let Target::New { parent_ino, .. } = &target {
            // Not on the server: the name goes away with the failure.
            self.listings
                .patch(*parent_ino, |entries| entries.retain(|e| e.ino != ino));
        }
        let intended = match &target {
            Target::New {
                parent_ino, name, ..
            } => format!("{}/{name}", self.describe(*parent_ino)),
            _ => self.describe(ino),
        };
        let mut data = file.lock();
        let about = self.spool_about(ino, &data.target);
        self.keep_in_recovery(&intended, &mut data.spool, about, err);
    }

    /// Moves a spool file whose upload failed into the recovery directory, with `about` and
    /// the reason in its sidecar, loudly; if it cannot move, it stays where it is, never
    /// deleted (the next mount moves it).
    pub(in crate::fs) fn keep_in_recovery(
        &self,
        intended: &str,
        spool: &mut SpoolFile,
        mut about: serde_json::Map<String, serde_json::Value>,
        err: &FsError,
    ) {
        about.insert("reason".into(), err.to_string().into());
        let file_name = about
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or("file")
            .to_owned();
        match spool.recover(&self.writes.spool.recovery_dir(), &file_name, &about) {
            Ok(kept) => log::warn!(
                "saving {intended} to Midas failed ({err}); its data is kept in {}",
                kept.display()
            ),
            Err(move_err) => {
                spool.keep();
                log::warn!(
                    "saving {intended} to Midas failed ({err}); its data stays in {} \
                     (moving it to the recovery directory failed: {move_err})",
                    spool.path().display()
                );
            }
        }
    }

    /// Removes an item made for an upload that failed; if the server cannot be reached, the
    /// item is hidden and removed later.
    pub(in crate::fs) async fn delete_quietly(&self, item_id: Id) {
        if let Err(err) = self.client.item_delete(item_id).await {
            log::warn!(
                "could not remove the unfinished item {item_id} ({err}); trying again later"
            );
            self.writes.orphans().push(item_id);
        }
    }

    pub(in crate::fs) async fn remove_orphans(&self) {
        let orphans = std::mem::take(&mut *self.writes.orphans());
        for item_id in orphans {
            match self.client.item_delete(item_id).await {
                Ok(()) => log::info!("removed the unfinished item {item_id}"),
                Err(err) if err.api_code() == Some(codes::INVALID_POLICY) => {}
                Err(err) => {
                    log::debug!("unfinished item {item_id}: {err}");
                    self.writes.orphans().push(item_id);
                }
            }
        }
    }

    /// At mount, before anything else: the items a mount that died had made for files it did not
    /// finish sending (their data went to the recovery directory as the spool opened) are
    /// removed while they are still empty, so that no half-made object stays on the server.
    pub async fn roll_back_previous(&self) {
        for about in self.writes.spool.take_rescued() {
            let Some(item_id) = about
                .get(super::spool::MADE_ITEM_KEY)
                .and_then(|v| v.as_i64())
            else {
                continue;
            };
            let name = about.get("path").and_then(|v| v.as_str()).unwrap_or("?");
            if about.get("server").and_then(|v| v.as_str()) != Some(self.client.base_url()) {
                log::warn!(
                    "a previous midasfs left item {item_id} ({name}) unfinished on another \
                     server; remove it there"
                );
                continue;
            }
            match self.client.item_get(item_id).await {
                Ok(item) if item.head().is_none_or(|h| h.bitstreams.is_empty()) => {
                    match self.client.item_delete(item_id).await {
                        Ok(()) => log::warn!(
                            "removed the empty item {item_id} a previous midasfs made for \
                             {name} and did not finish (its data is in the recovery directory)"
                        ),
                        Err(err) => log::warn!(
                            "could not remove the unfinished item {item_id} ({name}): {err}"
                        ),
                    }
                }
                Ok(_) => log::info!("item {item_id} ({name}) holds content now: kept"),
                Err(err) => log::debug!("unfinished item {item_id}: {err}"),
            }
        }
    }
}
