//! `midas.upload.generatetoken`: checksum dedup, or a token and its empty temporary file.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::json;

use super::token::UploadToken;
use crate::midas::codes;
use crate::server::api::items::head_or_initial_revision;
use crate::server::api::objects::item;
use crate::server::api::{Call, Reply};
use crate::server::store::{
    add_bitstream, can_folder, can_item, create_item, policy_sql, Caller, Guarded, NewBitstream,
    READ, WRITE,
};
use crate::server::wire::ApiError;

/// `midas.upload.generatetoken`: checksum dedup, or a token and its empty temporary file.
pub fn generate_token(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let p = call.params;
    let caller = call.user(conn, ApiError::policy("Anonymous users may not upload"))?;
    let filename = p.require("filename")?;
    let item_id = match (p.get("itemid"), p.get("folderid")) {
        (None, None) => {
            return Err(ApiError::invalid(
                "Parameter itemid or folderid must be defined",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "Parameter itemid or folderid must be defined, but not both",
            ))
        }
        (Some(item_id), None) => {
            let id = crate::server::wire::parse_id(item_id);
            if item(conn, id)?.is_none() {
                return Err(ApiError::new(
                    0,
                    "Error in parameter itemdao or policy when checking Item policy.",
                ));
            }
            if !can_item(conn, Some(caller), id, WRITE)? {
                return Err(ApiError::policy("Invalid policy or itemid"));
            }
            id
        }
        (None, Some(folder_id)) => {
            let folder_id = crate::server::wire::parse_id(folder_id);
            if crate::server::api::objects::folder(conn, folder_id)?.is_none() {
                return Err(ApiError::invalid(
                    "Parent folder corresponding to folderid doesn't exist",
                ));
            }
            if !can_folder(conn, Some(caller), folder_id, WRITE)? {
                return Err(ApiError::policy("Invalid policy or folderid"));
            }
            let name = p.get("itemname").unwrap_or(filename);
            let description = p.get("itemdescription").unwrap_or_default();
            let tx = conn.transaction()?;
            let id = create_item(&tx, folder_id, name, description, caller.user_id, None)?;
            tx.commit()?;
            id
        }
    };
    if let Some(checksum) = p.get("checksum").filter(|c| !c.is_empty()) {
        if deduplicate(conn, caller, item_id, filename, checksum)? {
            return Ok(json!({ "token": "" }).into());
        }
    }
    let token = UploadToken::new(caller.user_id, item_id);
    crate::private::file_options()
        .write(true)
        .create_new(true)
        .open(token.temp_path(&call.shared.store))
        .map_err(|err| {
            log::error!("cannot create an upload file: {err}");
            ApiError::new(
                codes::UPLOAD_TEMP_FAILED,
                "Failed to create temporary upload file",
            )
        })?;
    Ok(json!({ "token": token.to_string() }).into())
}

/// Step 2 of `generatetoken`: when a readable bitstream has this checksum, add a copy of it to
/// the item's latest revision (unless that revision already has `filename`). True if handled.
pub(super) fn deduplicate(
    conn: &mut Connection,
    caller: Caller,
    item_id: i64,
    filename: &str,
    checksum: &str,
) -> Result<bool, ApiError> {
    let sql = format!(
        "SELECT b.mimetype, b.sizebytes FROM bitstream b JOIN itemrevision r ON r.itemrevision_id = b.itemrevision_id \
         JOIN item i ON i.item_id = r.item_id WHERE b.checksum = ?1 AND {} ORDER BY b.bitstream_id LIMIT 1",
        policy_sql(Guarded::Item, "i.item_id", Some(caller), READ)
    );
    let existing: Option<(String, i64)> = conn
        .query_row(&sql, [checksum], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((mimetype, sizebytes)) = existing else {
        return Ok(false);
    };
    let tx = conn.transaction()?;
    let revision = head_or_initial_revision(&tx, item_id, caller.user_id)?;
    let has_name: bool = tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM bitstream WHERE itemrevision_id = ?1 AND name = ?2)",
        params![revision, filename],
        |r| r.get(0),
    )?;
    if !has_name {
        let b = NewBitstream {
            name: filename,
            mimetype: &mimetype,
            sizebytes,
            checksum,
        };
        add_bitstream(&tx, item_id, revision, &b)?;
    }
    tx.commit()?;
    Ok(true)
}
