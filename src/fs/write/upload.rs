//! The upload pipeline: a new item (with the checksum dedup for larger files), a new revision
//! of an item file, a replaced bitstream of an item directory; `perform` resumed from the
//! server's offset after a transient failure, and checked against the server's MD5 after.

use std::time::Duration;

use super::early::{Sent, Stopped};
use super::{spool, write_error, Container};
use crate::fs::error::Kind;
use crate::fs::inode::{BitstreamInfo, ItemInfo, NodeData, NodeKind, Shared};
use crate::fs::{bitstream_info, names, Entry, FsError, FsResult, MidasFs};
use crate::midas::types::{Id, Item, PRIVACY_PUBLIC};
use crate::midas::UploadRevision;

/// How often an upload that broke is resumed (from the server's offset) before it fails.
pub(in crate::fs) const UPLOAD_RETRIES: u32 = 3;
pub(in crate::fs) const UPLOAD_BACKOFF: Duration = Duration::from_millis(500);
/// New files smaller than this are sent without asking Midas first whether it holds their
/// content (the checksum dedup): the question costs a round trip, more than sending them.
pub(in crate::fs) const CHECKSUM_MIN_SIZE: u64 = 1024 * 1024;

/// A new file being saved.
pub(in crate::fs) struct NewFile<'a> {
    pub(in crate::fs) parent_ino: u64,
    /// The name it is shown under.
    pub(in crate::fs) name: &'a str,
    pub(in crate::fs) path: &'a std::path::Path,
    pub(in crate::fs) size: u64,
    pub(in crate::fs) running_md5: Option<String>,
}

impl NewFile<'_> {
    /// Its upload into the new item `item_id`, as `midas_name`.
    pub(in crate::fs) fn upload<'a>(&'a self, item_id: Id, midas_name: &'a str) -> Upload<'a> {
        Upload {
            item_id,
            file_name: midas_name,
            path: self.path,
            size: self.size,
            revision: UploadRevision::Head,
            md5: self.running_md5.as_deref(),
        }
    }
}

/// The bytes of one upload: a spool file of `size` bytes, into item `item_id` as `file_name`.
pub(in crate::fs) struct Upload<'a> {
    pub(in crate::fs) item_id: Id,
    pub(in crate::fs) file_name: &'a str,
    pub(in crate::fs) path: &'a std::path::Path,
    pub(in crate::fs) size: u64,
    pub(in crate::fs) revision: UploadRevision,
    /// The file's MD5, if known (else computed when needed).
    pub(in crate::fs) md5: Option<&'a str>,
}

/// Where a `perform` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::fs) enum UploadFrom {
    Start,
    /// Where parts sent before left it.
    Offset(u64),
    /// Where the server says it is (`getoffset`).
    ServerOffset,
}

/// What an upload produced: the node data for the file, and the entry for its directory.
pub(in crate::fs) struct Uploaded {
    pub(in crate::fs) node: Shared<NodeData>,
    pub(in crate::fs) entry: Entry,
}

impl MidasFs {
    pub(in crate::fs) async fn upload_new(
        &self,
        file: &NewFile<'_>,
        container: &Container,
        early: Option<Stopped>,
    ) -> FsResult<Uploaded> {
        let midas_name = names::to_midas(file.name);
        match container {
            Container::Folder(folder) => {
                let (item_id, item) = match early {
                    Some(Stopped {
                        sent:
                            Sent {
                                item_id: Some(item_id),
                                token: Some(token),
                                held,
                            },
                        spoiled: false,
                    }) => {
                        // Sent early: only the rest goes now.
                        let from = held.map_or(UploadFrom::ServerOffset, UploadFrom::Offset);
                        let upload = file.upload(item_id, &midas_name);
                        let item = self.perform_resuming(&token, &upload, from).await;
                        (item_id, item)
                    }
                    early => {
                        self.discard_early(early, file.path).await;
                        let (item_id, token) = self.new_item_token(*folder, file).await?;
                        // Should this mount die now, the next one removes the item.
                        spool::add_to_sidecar(file.path, spool::MADE_ITEM_KEY, item_id.into());
                        let item = match token {
                            Some(token) => {
                                let upload = file.upload(item_id, &midas_name);
                                self.perform_resuming(&token, &upload, UploadFrom::Start)
                                    .await
                            }
                            // Deduplicated: Midas linked the content it holds; no bytes were
                            // sent, unless that content turns out lost.
                            None => {
                                let upload = file.upload(item_id, &midas_name);
                                self.confirm_link(&upload).await
                            }
                        };
                        (item_id, item)
                    }
                };
                let item = match item {
                    Ok(item) if item.name == midas_name => item,
                    other => {
                        // Nothing half-made stays visible.
                        self.delete_quietly(item_id).await;
                        return Err(other
                            .err()
                            .unwrap_or_else(|| self.name_taken(file.parent_ino, file.name)));
                    }
                };
                // A new item's first revision.
                Ok(self.saved_file(&item, 1, file.size, file.name.to_owned()))
            }
            Container::Item(item) => {
                self.discard_early(early, file.path).await;
                // Without checksum: a stale listing could hide a bitstream of this name in the
                // head revision, and the dedup path would then silently do nothing.
                self.send_file(
                    item.id,
                    &midas_name,
                    file.path,
                    file.size,
                    None,
                    UploadRevision::Head,
                )
                .await?;
                self.bitstream_uploaded(item.id, &midas_name, file.name)
                    .await
            }
        }
    }

    /// A new item named `name` in `folder` and a token to upload into it; no token when Midas
    /// deduplicated the content by its MD5 (it then copied it into the item).
    pub(in crate::fs) async fn new_item_token(
        &self,
        folder: Id,
        file: &NewFile<'_>,
    ) -> FsResult<(Id, Option<String>)> {
        let (parent_ino, name) = (file.parent_ino, file.name);
        let midas_name = names::to_midas(name);
        if file.size < CHECKSUM_MIN_SIZE {
            let (item_id, token) = self
                .client
                .upload_token_new_item(folder, &midas_name)
                .await
                .map_err(write_error)?;
            return Ok((item_id, Some(token)));
        }
        let md5 = match &file.running_md5 {
            Some(md5) => md5.clone(),
            None => md5_of(file.path).await?,
        };
        let created = self
            .client
            .item_create(folder, &midas_name)
            .await
            .map_err(write_error)?;
        if created.name != midas_name {
            // Midas renamed it: an item of that name appeared (or is hidden from us).
            self.delete_quietly(created.item_id).await;
            return Err(self.name_taken(parent_ino, name));
        }
        // A new item has no bitstream yet, so the dedup cannot skip the upload.
        match self
            .client
            .upload_token(created.item_id, &midas_name, Some(&md5))
            .await
        {
            Ok(token) => Ok((created.item_id, token)),
            Err(err) => {
                self.delete_quietly(created.item_id).await;
                Err(write_error(err))
            }
        }
    }

    pub(in crate::fs) fn name_taken(&self, parent_ino: u64, name: &str) -> FsError {
        FsError::new(
            Kind::Exists,
            format!(
                "{}/{name}: an item of that name exists on the server",
                self.describe(parent_ino)
            ),
        )
    }

    /// A new revision holding the file, for an item shown as a file. After an empty upload of
    /// the same open file (`replace_empty`, see `FileData::empty_upload`), into that revision
    /// instead, whose empty bitstream then goes; if someone else changed the item meanwhile, a
    /// new revision as usual. Content the item holds already (its `md5`, when known, is the
    /// head's) is not sent again, and makes no revision.
    pub(in crate::fs) async fn upload_revision(
        &self,
        item: &ItemInfo,
        path: &std::path::Path,
        size: u64,
        md5: Option<&str>,
        replace_empty: bool,
    ) -> FsResult<Uploaded> {
        let current = self.client.item_get(item.id).await?;
        let head = current.head();
        let only = current.only_bitstream();
        if let (true, Some(head), Some(empty)) =
            (replace_empty, head, only.filter(|b| b.sizebytes == 0))
        {
            let updated = self
                .send_file(item.id, &empty.name, path, size, None, UploadRevision::Head)
                .await?
                .ok_or_else(|| skipped_upload(item.id))?;
            self.client
                .bitstream_delete(empty.bitstream_id)
                .await
                .map_err(write_error)?;
            let shown = names::to_display(&updated.name);
            return Ok(self.saved_file(&updated, head.revision, size, shown));
        }
        if let (false, Some(head), Some(only), Some(md5)) = (replace_empty, head, only, md5) {
            if only.checksum == md5 && u64::try_from(only.sizebytes) == Ok(size) {
                log::debug!("item {}: unchanged content, not sent again", item.id);
                let shown = names::to_display(&current.name);
                return Ok(self.saved_file(&current, head.revision, size, shown));
            }
        }
        let file_name = only.map_or_else(|| current.name.clone(), |only| only.name.clone());
        let revision = head.map_or(0, |head| head.revision) + 1;
        // Midas keeps metadata per revision: the new one gets the old one's.
        let metadata = self.client.item_get_metadata(item.id).await?;
        let updated = self
            .send_file(item.id, &file_name, path, size, None, UploadRevision::New)
            .await?
            .ok_or_else(|| skipped_upload(item.id))?;
        self.carry_metadata(item.id, &metadata).await?;
        Ok(self.saved_file(&updated, revision, size, names::to_display(&updated.name)))
    }

    /// An item file just uploaded, as the upload's answer describes it (see
    /// [`NodeKind::SavedFile`]).
    pub(in crate::fs) fn saved_file(
        &self,
        item: &Item,
        revision: i64,
        size: u64,
        shown: String,
    ) -> Uploaded {
        let kind = NodeKind::SavedFile {
            item: ItemInfo::new(item, revision),
            size,
        };
        // The user could upload it, so the user may change it.
        let public = item.privacy_status == PRIVACY_PUBLIC;
        let entry = self.entry(shown, kind, &item.date_update, true, public);
        Uploaded {
            node: entry.data.clone(),
            entry,
        }
    }

    pub(in crate::fs) async fn replace_bitstream(
        &self,
        item: &ItemInfo,
        old: &BitstreamInfo,
        path: &std::path::Path,
        size: u64,
    ) -> FsResult<Uploaded> {
        let current = self.client.item_get(item.id).await?;
        let file_name = current
            .head()
            .and_then(|h| h.bitstreams.iter().find(|b| b.bitstream_id == old.id))
            .map(|b| b.name.clone())
            .ok_or_else(|| FsError::not_found(format!("bitstream {}", old.id)))?;
        self.send_file(item.id, &file_name, path, size, None, UploadRevision::Head)
            .await?;
        self.client
            .bitstream_delete(old.id)
            .await
            .map_err(write_error)?;
        self.bitstream_uploaded(item.id, &file_name, &names::to_display(&file_name))
            .await
    }

    /// The newest bitstream of that name in the item's head, as a file of an item directory.
    pub(in crate::fs) async fn bitstream_uploaded(
        &self,
        item_id: Id,
        file_name: &str,
        shown: &str,
    ) -> FsResult<Uploaded> {
        let item = self.client.item_get(item_id).await?;
        let head = item.head().ok_or_else(|| {
            FsError::new(
                Kind::Io,
                format!("item {item_id} has no revision after an upload"),
            )
        })?;
        let bitstream = head
            .bitstreams
            .iter()
            .filter(|b| b.name == file_name)
            .max_by_key(|b| b.bitstream_id)
            .ok_or_else(|| {
                FsError::new(
                    Kind::Io,
                    format!("item {item_id}: the uploaded {file_name:?} is missing"),
                )
            })?;
        let info = ItemInfo::new(&item, head.revision);
        let entry = self.entry(
            shown.to_owned(),
            NodeKind::Bitstream {
                item: info,
                bitstream: bitstream_info(bitstream),
            },
            &bitstream.date,
            true,
            item.privacy_status == PRIVACY_PUBLIC,
        );
        Ok(Uploaded {
            node: entry.data.clone(),
            entry,
        })
    }

    /// `generatetoken` then `perform` (see [`MidasFs::perform_resuming`]): the item after the
    /// upload, or None when Midas deduplicated it by `checksum`.
    pub(in crate::fs) async fn send_file(
        &self,
        item_id: Id,
        file_name: &str,
        path: &std::path::Path,
        size: u64,
        checksum: Option<&str>,
        revision: UploadRevision,
    ) -> FsResult<Option<Item>> {
        let token = self
            .client
            .upload_token(item_id, file_name, checksum)
            .await
            .map_err(write_error)?;
        let Some(token) = token else {
            if checksum.is_none() {
                return Err(skipped_upload(item_id));
            }
            log::debug!("item {item_id}: {file_name:?} is already on the server; not sent again");
            return Ok(None);
        };
        let upload = Upload {
            item_id,
            file_name,
            path,
            size,
            revision,
            md5: None,
        };
        self.perform_resuming(&token, &upload, UploadFrom::Start)
            .await
            .map(Some)
    }

    /// `perform` from `from`, resuming from the server's offset after a transient failure (a
    /// bounded number of times). The answer is the item after the upload. An upload that went
    /// on from an offset the server gave after a failure is checked against the server's MD5.
    /// (Parts sent early each went on from the count the server answered the last one with, as
    /// one request's bytes do: those are not checked.)
    pub(in crate::fs) async fn perform_resuming(
        &self,
        token: &str,
        upload: &Upload<'_>,
        from: UploadFrom,
    ) -> FsResult<Item> {
        let Upload {
            item_id,
            file_name,
            path,
            size,
            revision,
            ..
        } = *upload;
        let mut attempts = 0;
        // Whether the server's copy may not be what was sent (see `verify_resumed`).
        let mut resumed = from == UploadFrom::ServerOffset;
        let mut offset = match from {
            UploadFrom::Start => Some(0),
            UploadFrom::Offset(offset) => Some(offset),
            UploadFrom::ServerOffset => None,
        };
        loop {
            let from_here = match offset {
                Some(offset) => offset,
                None => self.server_offset(token, size, &mut attempts).await?,
            };
            match self
                .client
                .upload_perform(token, item_id, file_name, path, from_here, size, revision)
                .await
            {
                Ok(item) if !resumed => return Ok(item),
                Ok(item) => {
                    self.verify_resumed(upload).await?;
                    return Ok(item);
                }
                Err(err) if err.is_transient() && attempts < UPLOAD_RETRIES => {
                    log::debug!("upload of {file_name:?} into item {item_id}: {err}; resuming");
                    resumed = true;
                    attempts += 1;
                    tokio::time::sleep(UPLOAD_BACKOFF * attempts).await;
                }
                Err(err) => return Err(write_error(err)),
            }
            // Midas appends whatever arrives to what it holds: only its own offset is a safe
            // place to go on from, so without an answer nothing is sent again.
            offset = None;
        }
    }

    /// How many bytes of an upload of `size` the server holds (`getoffset`), asked again after
    /// transient errors while `attempts` allows.
    pub(in crate::fs) async fn server_offset(
        &self,
        token: &str,
        size: u64,
        attempts: &mut u32,
    ) -> FsResult<u64> {
        loop {
            match self.client.upload_offset(token).await {
                Ok(held) if held <= size => return Ok(held),
                Ok(held) => {
                    return Err(FsError::new(
                        Kind::Io,
                        format!("the server holds {held} bytes of an upload of {size}"),
                    ))
                }
                Err(err) if err.is_transient() && *attempts < UPLOAD_RETRIES => {
                    *attempts += 1;
                    tokio::time::sleep(UPLOAD_BACKOFF * *attempts).await;
                }
                Err(err) => return Err(write_error(err)),
            }
        }
    }

    /// After a resumed upload, checks that the server's copy is what was sent. Midas appends
    /// what arrives to what it holds, so a broken request that it handled only after the
    /// `getoffset` the resume went on from leaves a corrupt file: that one is deleted, and the
    /// upload fails (its data goes to the recovery directory like any failed upload's).
    pub(in crate::fs) async fn verify_resumed(&self, upload: &Upload<'_>) -> FsResult<()> {
        let (item_id, file_name) = (upload.item_id, upload.file_name);
        let md5 = match upload.md5 {
            Some(md5) => md5.to_owned(),
            None => md5_of(upload.path).await?,
        };
        let item = self.client.item_get(item_id).await?;
        let stored = item.head().and_then(|head| {
            head.bitstreams
                .iter()
                .filter(|b| b.name == file_name)
                .max_by_key(|b| b.bitstream_id)
        });
        let Some(stored) = stored else {
            return Err(FsError::new(
                Kind::Io,
                format!("item {item_id}: the uploaded {file_name:?} is missing"),
            ));
        };
        if stored.checksum == md5 {
            return Ok(());
        }
        if let Err(err) = self.client.bitstream_delete(stored.bitstream_id).await {
            log::warn!(
                "could not remove the corrupt bitstream {}: {err}",
                stored.bitstream_id
            );
        }
        Err(FsError::new(
            Kind::Io,
            format!(
                "item {item_id}: the server's copy of {file_name:?} after a resumed upload \
                 differs from what was sent"
            ),
        ))
    }
}

/// Midas issues no upload token, without a checksum, only when it kept nothing (a bug).
pub(in crate::fs) fn skipped_upload(item_id: Id) -> FsError {
    FsError::new(
        Kind::Io,
        format!("item {item_id}: the server skipped an upload sent without checksum"),
    )
}

/// The MD5 of a file, computed off the async workers.
pub(in crate::fs) async fn md5_of(path: &std::path::Path) -> FsResult<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || spool::md5_of_file(&path))
        .await
        .map_err(|err| FsError::new(Kind::Io, format!("checksum task failed: {err}")))?
}
