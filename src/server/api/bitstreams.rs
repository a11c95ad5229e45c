//! Bitstream methods (reference §3.6).

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};

use super::communities::community_level;
use super::folders::{auth_suffix, uuid_kind};
use super::objects::{bitstream_row, query_one, BITSTREAM_SELECT};
use super::{Call, Reply};
use crate::server::store::{
    can_folder, can_item, community_root, policy_sql, unused_checksums, Caller, Guarded, ADMIN,
    READ, WRITE,
};
use crate::server::wire::ApiError;

/// The item a bitstream belongs to, if the bitstream exists.
pub fn bitstream_item(conn: &Connection, bitstream_id: i64) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT r.item_id FROM bitstream b JOIN itemrevision r ON r.itemrevision_id = b.itemrevision_id WHERE b.bitstream_id = ?1",
        [bitstream_id],
        |r| r.get(0),
    )
    .optional()
}

fn invalid_id() -> ApiError {
    ApiError::invalid("Invalid bitstream id")
}

/// The bitstream `id` names and its item, once the caller holds `level` on that item
/// (`denied` is the error otherwise).
fn bitstream_with_access(
    call: &Call<'_>,
    conn: &Connection,
    level: i64,
    denied: &str,
) -> Result<(i64, i64), ApiError> {
    let id = call.params.require_id("id")?;
    let caller = call.caller(conn)?;
    let item = bitstream_item(conn, id)?.ok_or_else(invalid_id)?;
    if !can_item(conn, caller, item, level)? {
        return Err(ApiError::policy(denied));
    }
    Ok((id, item))
}

/// A bitstream as Midas lists it.
fn bitstream(conn: &Connection, id: i64) -> Result<Value, ApiError> {
    query_one(
        conn,
        BITSTREAM_SELECT,
        "WHERE b.bitstream_id = ?1",
        [id],
        bitstream_row,
    )?
    .ok_or_else(invalid_id)
}

/// `midas.bitstream.get`: Midas's custom shape; a `name` parameter replaces the name shown.
pub fn get(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let (id, item) = bitstream_with_access(
        call,
        conn,
        READ,
        "This item doesn't exist or you don't have the permissions.",
    )?;
    let b = bitstream(conn, id)?;
    let name = call
        .params
        .get("name")
        .map(Value::from)
        .unwrap_or_else(|| b["name"].clone());
    Ok(json!({
        "id": id,
        "name": name,
        "size": b["sizebytes"],
        "mimetype": b["mimetype"],
        "checksum": b["checksum"],
        "itemrevision_id": b["itemrevision_id"],
        "item_id": item,
        "date": b["date"],
    })
    .into())
}

/// Percent-encode only what would break the redirect's query string (Midas inserts the name
/// raw; `&`, `#`, `%`, `+`, controls and non-ASCII would corrupt or fail the `Location`).
fn location_name(name: &str) -> String {
    const UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b'&')
        .add(b'#')
        .add(b'%')
        .add(b'+')
        .add(b'?')
        .add(b' ')
        .add(b'"');
    percent_encoding::utf8_percent_encode(name, UNSAFE).to_string()
}

/// `midas.bitstream.download` by `id` or `checksum`: a redirect to the download controller.
pub fn download(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let caller = call.caller(conn)?;
    let missing =
        || ApiError::invalid("The bitstream does not exist or you do not have the permissions");
    let id = if let Some(id) = call.params.get("id") {
        let id = crate::server::wire::parse_id(id);
        let item = bitstream_item(conn, id)?.ok_or_else(missing)?;
        if !can_item(conn, caller, item, READ)? {
            return Err(ApiError::policy("Read permission required"));
        }
        id
    } else if let Some(checksum) = call.params.get("checksum") {
        let sql = format!(
            "SELECT b.bitstream_id FROM bitstream b JOIN itemrevision r ON r.itemrevision_id = b.itemrevision_id \
             JOIN item i ON i.item_id = r.item_id WHERE b.checksum = ?1 AND {} ORDER BY b.bitstream_id LIMIT 1",
            policy_sql(Guarded::Item, "i.item_id", caller, READ)
        );
        conn.query_row(&sql, [checksum], |r| r.get::<_, i64>(0))
            .optional()?
            .ok_or_else(missing)?
    } else {
        return Err(ApiError::invalid(
            "Either an id or checksum parameter is required",
        ));
    };
    let name = match call.params.get("name") {
        Some(n) => n.to_owned(),
        None => conn.query_row(
            "SELECT name FROM bitstream WHERE bitstream_id = ?1",
            [id],
            |r| r.get(0),
        )?,
    };
    let offset = call
        .params
        .get("offset")
        .and_then(|o| o.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Ok(Reply::Redirect(format!(
        "/download/?bitstream={id}&offset={offset}&name={}{}",
        location_name(&name),
        auth_suffix(call, caller)
    )))
}

/// `midas.bitstream.edit`: rename and/or set the mimetype; WRITE on the item.
pub fn edit(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let (id, _) = bitstream_with_access(call, conn, WRITE, "Write access on item is required")?;
    if let Some(name) = call.params.get("name") {
        conn.execute(
            "UPDATE bitstream SET name = ?1 WHERE bitstream_id = ?2",
            params![name, id],
        )?;
    }
    if let Some(mimetype) = call.params.get("mimetype") {
        // The Midas column is VARCHAR(30).
        let mimetype: String = mimetype.chars().take(30).collect();
        conn.execute(
            "UPDATE bitstream SET mimetype = ?1 WHERE bitstream_id = ?2",
            params![mimetype, id],
        )?;
    }
    Ok(bitstream(conn, id)?.into())
}

/// `midas.bitstream.delete`: ADMIN on the item; the revision and the item size stay.
pub fn delete(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let (id, _) = bitstream_with_access(
        call,
        conn,
        ADMIN,
        "Admin privileges required on the containing item",
    )?;
    let tx = conn.transaction()?;
    let checksum: String = tx.query_row(
        "SELECT checksum FROM bitstream WHERE bitstream_id = ?1",
        [id],
        |r| r.get(0),
    )?;
    tx.execute("DELETE FROM bitstream WHERE bitstream_id = ?1", [id])?;
    let unused = unused_checksums(&tx, vec![checksum])?;
    tx.commit()?;
    call.shared.store.remove_assets(&unused);
    Ok(Value::String(String::new()).into())
}

/// Size and count of the head revisions of readable items under a folder, recursively
/// through readable subfolders.
fn count_folder(
    conn: &Connection,
    caller: Option<Caller>,
    folder_id: i64,
) -> Result<(i64, i64), ApiError> {
    let sql = format!(
        "WITH RECURSIVE t(id) AS (SELECT ?1 UNION ALL SELECT f.folder_id FROM folder f JOIN t ON f.parent_id = t.id WHERE {}) \
         SELECT COALESCE(SUM(b.sizebytes), 0), COUNT(b.bitstream_id) FROM (SELECT DISTINCT l.item_id FROM item2folder l JOIN t ON l.folder_id = t.id) x \
         JOIN item i ON i.item_id = x.item_id \
         JOIN itemrevision r ON r.item_id = i.item_id AND r.revision = (SELECT MAX(revision) FROM itemrevision WHERE item_id = i.item_id) \
         JOIN bitstream b ON b.itemrevision_id = r.itemrevision_id WHERE {}",
        policy_sql(Guarded::Folder, "f.folder_id", caller, READ),
        policy_sql(Guarded::Item, "i.item_id", caller, READ)
    );
    Ok(conn.query_row(&sql, [folder_id], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

/// `midas.bitstream.count` for the `uuid` of a community, folder or item.
pub fn count(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let uuid = call.params.require("uuid")?;
    let caller = call.caller(conn)?;
    let denied = || ApiError::policy("Invalid policy");
    let (size, count) = match uuid_kind(conn, uuid)? {
        Some(("community", id)) => {
            if community_level(conn, caller, id)?.is_none() {
                return Err(denied());
            }
            let root = community_root(conn, id)?;
            count_folder(conn, caller, root)?
        }
        Some(("folder", id)) => {
            if !can_folder(conn, caller, id, READ)? {
                return Err(denied());
            }
            count_folder(conn, caller, id)?
        }
        Some(("item", id)) => {
            if !can_item(conn, caller, id, READ)? {
                return Err(denied());
            }
            conn.query_row(
                "SELECT COALESCE(SUM(b.sizebytes), 0), COUNT(b.bitstream_id) FROM bitstream b \
                 JOIN itemrevision r ON r.itemrevision_id = b.itemrevision_id \
                 WHERE r.item_id = ?1 AND r.revision = (SELECT MAX(revision) FROM itemrevision WHERE item_id = ?1)",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
        }
        Some(_) => return Err(ApiError::internal("Invalid resource type")),
        None => return Err(ApiError::invalid("No resource for the given UUID.")),
    };
    Ok(json!({ "size": size, "count": count }).into())
}
