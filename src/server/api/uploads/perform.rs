//! `midas.upload.perform` in stream mode: the body appended to the upload's file.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Method;
use futures_util::StreamExt;
use md5::{Digest, Md5};
use rusqlite::OptionalExtension;
use serde_json::Value;
use tokio::time::Instant;

use super::commit::{commit_upload, io_failure, FinishedUpload, TargetRevision};
use super::spool::{Spool, SpoolError};
use super::token::UploadToken;
use super::writers::{UploadWriters, UPLOAD_STALL};
use crate::midas::codes;
use crate::server::api::items::revision_by_number;
use crate::server::api::objects::item;
use crate::server::store::{can_item, Caller, WRITE};
use crate::server::wire::{ApiError, Params};
use crate::server::Shared;

/// `midas.upload.perform` in stream mode: append the raw body until `length` bytes are held.
pub async fn perform(
    shared: Arc<Shared>,
    params: Params,
    verb: Method,
    body: Body,
) -> Result<Value, ApiError> {
    if verb != Method::PUT && verb != Method::POST {
        return Err(ApiError::new(
            codes::HTTP_ERROR,
            "POST or PUT method required",
        ));
    }
    let raw_token = params.require("uploadtoken")?.to_owned();
    let filename = params.require("filename")?.to_owned();
    let length: u64 = params
        .require("length")?
        .trim()
        .parse()
        .map_err(|_| ApiError::invalid("Invalid length"))?;
    match params.get("mode") {
        None | Some("stream") => {}
        Some("multipart") => return Err(ApiError::invalid("Parameter file is not defined")),
        Some(_) => return Err(ApiError::invalid("Invalid upload mode")),
    }
    let invalid_token = || {
        ApiError::new(
            codes::INVALID_UPLOAD_TOKEN,
            format!("Invalid upload token {raw_token}"),
        )
    };
    let token = UploadToken::parse(&raw_token).ok_or_else(invalid_token)?;
    let revision_param = params.get("revision").map(str::to_owned);
    let check_shared = Arc::clone(&shared);
    let check_token = token.clone();
    let revision = tokio::task::spawn_blocking(move || -> Result<TargetRevision, ApiError> {
        let conn = check_shared.store.lock();
        let user: Option<bool> = conn
            .query_row(
                "SELECT admin FROM user WHERE user_id = ?1",
                [check_token.user_id],
                |r| r.get(0),
            )
            .optional()?;
        let admin = user.ok_or_else(|| ApiError::invalid("Invalid user id from upload token"))?;
        if item(&conn, check_token.item_id)?.is_none() {
            return Err(ApiError::invalid("Unable to find item"));
        }
        let caller = Caller {
            user_id: check_token.user_id,
            admin,
        };
        if !can_item(&conn, Some(caller), check_token.item_id, WRITE)? {
            return Err(ApiError::policy("Permission error"));
        }
        match revision_param.as_deref() {
            None => Ok(TargetRevision::New),
            Some(r) if r.eq_ignore_ascii_case("head") => Ok(TargetRevision::Head),
            Some(r) => {
                let number = r.trim().parse::<i64>().unwrap_or(-1);
                revision_by_number(&conn, check_token.item_id, number)?
                    .map(TargetRevision::Existing)
                    .ok_or_else(|| ApiError::invalid("Unable to find revision"))
            }
        }
    })
    .await
    .map_err(|_| ApiError::internal("Upload failed"))??;

    let temp = token.temp_path(&shared.store);
    let missing_or_failed = |err: std::io::Error| match err.kind() {
        std::io::ErrorKind::NotFound => invalid_token(),
        _ => io_failure(err),
    };
    let short = |have: u64| {
        ApiError::new(
            codes::UPLOAD_FAILED,
            format!("Failed to upload file - {have}/{length} bytes transferred"),
        )
    };
    let deadline = Instant::now() + UPLOAD_STALL;
    let Some(slot) = UploadWriters::claim(&shared, &token, deadline).await else {
        // Another request still writes: refuse as Midas refuses a body that ended early, which
        // tells a client to ask `getoffset` (that waits for the writer) and resume.
        let held = tokio::fs::metadata(&temp)
            .await
            .map_err(missing_or_failed)?;
        return Err(short(held.len()));
    };
    // Held by the writing thread and by this request up to the commit that moves the file.
    let slot = Arc::new(slot);

    let file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(&temp)
        .await
        .map_err(missing_or_failed)?;
    let mut have = file.metadata().await.map_err(io_failure)?.len();
    if have > length {
        // A `length` below what already arrived cannot describe this file: keep the data.
        return Err(short(have));
    }
    // A resume whose body is longer than what the file lacks started before the server's
    // offset: it asked getoffset before an earlier broken request (not started yet then) wrote
    // what it had received. Midas would append it and keep a corrupt file; this server refuses
    // it before writing, with the answer that makes a client ask getoffset again. (So, unlike
    // Midas, it does not ignore trailing bytes after a resume; it does on a fresh upload.)
    let sent = axum::body::HttpBody::size_hint(&body).exact();
    if have > 0 && sent.is_some_and(|sent| have.saturating_add(sent) > length) {
        return Err(short(have));
    }
    // The MD5 is computed on the fly from byte 0, or from where an earlier part left it.
    let hash = if have == 0 {
        Some(Md5::new())
    } else {
        shared.partial_hashes.take(&token, have)
    };
    let mut spool =
        Spool::start(file.into_std().await, have, hash, Arc::clone(&slot)).map_err(io_failure)?;
    let mut stream = body.into_data_stream();
    while have < length {
        let chunk = match tokio::time::timeout(UPLOAD_STALL, stream.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            // The client went away, the body ended or stalled: keep what arrived, to resume.
            Ok(Some(Err(_)) | None) | Err(_) => break,
        };
        let wanted = usize::try_from(length - have)
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        if !spool.push(chunk.slice(..wanted)).await {
            break;
        }
        have += wanted as u64;
        shared.stats.add_uploaded(wanted as u64);
    }
    let hasher = match spool.finish().await {
        Ok(hasher) => hasher,
        Err(SpoolError::Write { kept, source }) => {
            log::warn!("upload write failed: {source}");
            return Err(short(kept));
        }
        Err(SpoolError::Sync(err)) => return Err(io_failure(err)),
        Err(SpoolError::Stopped) => return Err(ApiError::internal("Upload failed")),
    };
    let md5 = match hasher {
        Some(hasher) => Some(
            hasher
                .await
                .map_err(|_| ApiError::internal("Upload failed"))?,
        ),
        None => None,
    };
    if have < length {
        if let Some(md5) = md5 {
            shared.partial_hashes.keep(&token, have, md5);
        }
        return Err(short(have));
    }
    let checksum = md5.map(|md5| format!("{:x}", md5.finalize()));
    let changes = params.get("changes").unwrap_or_default().to_owned();
    let commit_shared = Arc::clone(&shared);
    tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        // The commit runs to its end even if the request is dropped: so does the slot.
        let _slot = slot;
        let upload = FinishedUpload {
            temp: &temp,
            item_id: token.item_id,
            user_id: token.user_id,
            filename: &filename,
            changes: &changes,
            revision,
            checksum,
        };
        commit_upload(&commit_shared.store, &upload)?;
        let conn = commit_shared.store.lock();
        item(&conn, token.item_id)?.ok_or_else(|| ApiError::invalid("Unable to find item"))
    })
    .await
    .map_err(|_| ApiError::internal("Upload failed"))?
}
