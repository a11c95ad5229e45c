//! The commit transaction: a finished temporary file becomes a bitstream of an item.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use md5::{Digest, Md5};
use rusqlite::params;

use super::mimetype::sniff_mimetype;
use crate::server::api::items::head_or_initial_revision;
use crate::server::api::objects::item;
use crate::server::store::{add_bitstream, add_revision, NewBitstream, Store};
use crate::server::wire::ApiError;

/// Which revision a finished upload goes into.
#[derive(Debug, Clone, Copy)]
pub enum TargetRevision {
    /// A new revision N+1 holding only this file.
    New,
    /// The latest revision (revision 1 when there is none).
    Head,
    /// That revision (its itemrevision_id).
    Existing(i64),
}

/// A complete file waiting in `DIR/uploads/`, about to become a bitstream.
pub struct FinishedUpload<'a> {
    pub temp: &'a Path,
    pub item_id: i64,
    pub user_id: i64,
    pub filename: &'a str,
    pub changes: &'a str,
    pub revision: TargetRevision,
    /// The MD5 when it was computed while the data arrived; else it is read from the file.
    pub checksum: Option<String>,
}

/// MD5 (unless already known), size and mimetype of a file, read in big chunks.
pub(super) fn digest_file(
    path: &Path,
    known_md5: Option<&str>,
) -> std::io::Result<(String, u64, &'static str)> {
    let mut file = std::fs::File::open(path)?;
    let mut head = vec![0u8; 8192];
    let mut filled = 0;
    while filled < head.len() {
        let n = file.read(&mut head[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    head.truncate(filled);
    if let Some(md5) = known_md5 {
        let total = file.metadata()?.len();
        return Ok((md5.to_owned(), total, sniff_mimetype(&head, total)));
    }
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((
        format!("{:x}", hasher.finalize()),
        total,
        sniff_mimetype(&head, total),
    ))
}

pub(super) fn io_failure(err: std::io::Error) -> ApiError {
    log::error!("upload storage failed: {err}");
    ApiError::internal("Upload failed")
}

/// Move a finished temporary file into the assetstore (shared by checksum), then record the
/// bitstream in one transaction. Returns the new bitstream id.
pub fn commit_upload(store: &Store, upload: &FinishedUpload<'_>) -> Result<i64, ApiError> {
    let (checksum, size, mimetype) =
        digest_file(upload.temp, upload.checksum.as_deref()).map_err(io_failure)?;
    let asset = store.asset_path(&checksum);
    if asset.exists() {
        std::fs::remove_file(upload.temp).map_err(io_failure)?;
    } else {
        let dir = asset
            .parent()
            .ok_or_else(|| ApiError::internal("Upload failed"))?;
        crate::private::dir(dir).map_err(io_failure)?;
        std::fs::rename(upload.temp, &asset).map_err(io_failure)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_failure)?;
    }
    let mut conn = store.lock();
    let tx = conn.transaction()?;
    if item(&tx, upload.item_id)?.is_none() {
        return Err(ApiError::invalid("Unable to find item"));
    }
    let revision = match upload.revision {
        TargetRevision::New => add_revision(&tx, upload.item_id, upload.changes, upload.user_id)?.0,
        TargetRevision::Head => {
            let id = head_or_initial_revision(&tx, upload.item_id, upload.user_id)?;
            tx.execute(
                "UPDATE itemrevision SET changes = ?1 WHERE itemrevision_id = ?2",
                params![upload.changes, id],
            )?;
            id
        }
        TargetRevision::Existing(id) => id,
    };
    let size = i64::try_from(size).map_err(|_| ApiError::internal("Upload failed"))?;
    let b = NewBitstream {
        name: upload.filename,
        mimetype,
        sizebytes: size,
        checksum: &checksum,
    };
    let id = add_bitstream(&tx, upload.item_id, revision, &b)?;
    tx.commit()?;
    Ok(id)
}
