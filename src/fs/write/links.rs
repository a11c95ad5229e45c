//! Content that Midas linked by its MD5 instead of receiving it: checked that the server can
//! serve it, and sent for real when it cannot.
//!
//! Midas links an upload whose MD5 it knows to the stored file of that content
//! (`upload.generatetoken` with `checksum`; `perform` does the same). Its bitstream delete
//! removes the stored file when it finds no other bitstream of that MD5, and the two take no
//! lock: a link made while another client deletes the last other copy of the content points at
//! a file that is gone. The upload looked done, nothing is stored, and every download of it
//! answers HTTP 500. So after a link the mount reads the last byte back. When the server cannot
//! serve it, the linked bitstream goes and the bytes are sent; when even they end up linked to a
//! lost file (other bitstreams of that content point at it too, and Midas keeps no second copy),
//! the save fails, and its data goes to the recovery directory as any failed save's.
//!
//! (The links `item_dirs` makes from bitstreams the mount still holds cannot lose their content
//! this way: that bitstream keeps the stored file until the links exist.)

use super::upload::{skipped_upload, Upload, UploadFrom};
use super::write_error;
use crate::fs::error::Kind;
use crate::fs::{FsError, FsResult, MidasFs};
use crate::midas;
use crate::midas::types::{Id, Item};

impl MidasFs {
    /// Whether the bitstream named `file_name` (the newest of that name in item `item_id`'s
    /// head, `size` bytes) can be served: the item as it was asked for the check, or the
    /// bitstream when its content is lost.
    pub(in crate::fs) async fn check_link(
        &self,
        item_id: Id,
        file_name: &str,
        size: u64,
    ) -> FsResult<Link> {
        if size == 0 {
            // Nothing to lose: reads of an empty file never ask the server.
            return Ok(Link::Served(None));
        }
        let item = self.client.item_get(item_id).await?;
        let linked = item
            .head()
            .and_then(|head| {
                head.bitstreams
                    .iter()
                    .filter(|b| b.name == file_name)
                    .max_by_key(|b| b.bitstream_id)
            })
            .map(|b| b.bitstream_id)
            .ok_or_else(|| {
                FsError::new(
                    Kind::Io,
                    format!("item {item_id}: the linked {file_name:?} is missing"),
                )
            })?;
        let last_byte = match self
            .client
            .download_some(linked, size - 1, size, Some(1))
            .await
        {
            Ok(mut stream) => stream.next_chunk().await,
            Err(err) => Err(err),
        };
        match last_byte {
            Ok(Some(chunk)) if !chunk.is_empty() => Ok(Link::Served(Some(item))),
            // The download controller's answer for a stored file that is gone.
            Ok(_) | Err(midas::Error::Http { .. } | midas::Error::ShortRead { .. }) => {
                Ok(Link::Lost(linked))
            }
            Err(err) => Err(write_error(err)),
        }
    }

    /// After Midas linked `upload`'s content instead of receiving it: the item once the server
    /// serves it, the bytes sent when the link's content was lost (see the module's note).
    pub(in crate::fs) async fn confirm_link(&self, upload: &Upload<'_>) -> FsResult<Item> {
        let (item_id, file_name) = (upload.item_id, upload.file_name);
        let lost = match self.check_link(item_id, file_name, upload.size).await? {
            Link::Served(item) => return self.linked_item(item_id, item).await,
            Link::Lost(lost) => lost,
        };
        log::warn!(
            "item {item_id}: the server linked {file_name:?} to a stored copy of its content \
             that is gone; sending the bytes"
        );
        self.client
            .bitstream_delete(lost)
            .await
            .map_err(write_error)?;
        let token = self
            .client
            .upload_token(item_id, file_name, None)
            .await
            .map_err(write_error)?
            .ok_or_else(|| skipped_upload(item_id))?;
        self.perform_resuming(&token, upload, UploadFrom::Start)
            .await?;
        match self.check_link(item_id, file_name, upload.size).await? {
            Link::Served(item) => self.linked_item(item_id, item).await,
            Link::Lost(still) => {
                // Nothing unreadable stays behind in the item.
                if let Err(err) = self.client.bitstream_delete(still).await {
                    log::warn!("could not remove the unreadable bitstream {still}: {err}");
                }
                Err(lost_content(item_id, file_name))
            }
        }
    }

    /// The item a check saw, or the server's if it asked none.
    async fn linked_item(&self, item_id: Id, seen: Option<Item>) -> FsResult<Item> {
        match seen {
            Some(item) => Ok(item),
            None => self.client.item_get(item_id).await.map_err(FsError::from),
        }
    }
}

/// What a check of a link found.
pub(in crate::fs) enum Link {
    /// The server serves the content; the item, as the check saw it (None for empty content,
    /// which needs no check).
    Served(Option<Item>),
    /// The content is lost; the bitstream that points at it.
    Lost(Id),
}

/// The error of a save whose content the server links to a stored file that is gone.
pub(in crate::fs) fn lost_content(item_id: Id, file_name: &str) -> FsError {
    FsError::new(
        Kind::Io,
        format!(
            "item {item_id}: the server stores {file_name:?} as a link to content it no longer \
             holds (other bitstreams of the same content point at the lost file); the bytes \
             cannot be stored until those are deleted"
        ),
    )
}
