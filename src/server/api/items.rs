//! Item methods (reference §3.5).

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};

use super::folders::{auth_suffix, require_destination};
use super::objects::{
    self, first_folder_id, folder, fresh_item, item, item_row, query_list, ITEM_SELECT,
};
use super::{update_by_uuid, Call, Reply};
use crate::server::store::{
    add_revision, can_folder, can_item, copy_folder_policies_to_item, create_item, delete_item,
    head_revision, insert_item, new_uuid, now_date, policy_sql, set_public, unique_item_name,
    Caller, Guarded, ADMIN, READ, WRITE,
};
use crate::server::wire::{parse_id, ApiError};

fn not_found() -> ApiError {
    ApiError::policy("This item doesn't exist or you don't have the permissions.")
}

/// The `id` of an item the caller may read, and the caller; otherwise the not-found error.
fn readable(call: &Call<'_>, conn: &Connection) -> Result<(i64, Option<Caller>), ApiError> {
    let id = call.params.require_id("id")?;
    let caller = call.caller(conn)?;
    if can_item(conn, caller, id, READ)? {
        Ok((id, caller))
    } else {
        Err(not_found())
    }
}

/// `midas.item.get`: the item, its first folder, its revisions (ascending) with bitstreams.
pub fn get(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let (id, _) = readable(call, conn)?;
    let mut result = item(conn, id)?.ok_or_else(not_found)?;
    result["folder_id"] = first_folder_id(conn, id)?
        .map(Value::from)
        .unwrap_or_default();
    result["revisions"] = Value::Array(objects::revisions(conn, id, call.params.flag("head"))?);
    result["extraFields"] = json!([]);
    Ok(result.into())
}

/// Upsert one metadata value on a revision (one value per revision/type/element/qualifier).
fn set_metadata_value(
    conn: &Connection,
    revision_id: i64,
    metadata_type: i64,
    element: &str,
    qualifier: &str,
    value: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO metadata (metadatatype, element, qualifier) VALUES (?1, ?2, ?3)",
        params![metadata_type, element, qualifier],
    )?;
    let metadata_id: i64 = conn.query_row(
        "SELECT metadata_id FROM metadata WHERE metadatatype = ?1 AND element = ?2 AND qualifier = ?3",
        params![metadata_type, element, qualifier],
        |r| r.get(0),
    )?;
    conn.execute(
        "INSERT INTO metadatavalue (metadata_id, itemrevision_id, value) VALUES (?1, ?2, ?3) \
         ON CONFLICT (metadata_id, itemrevision_id) DO UPDATE SET value = excluded.value",
        params![metadata_id, revision_id, value],
    )?;
    Ok(())
}

/// `midas.item.create`: create in `parentid` (auto-renamed) or update by `uuid`.
pub fn create(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let p = call.params;
    let request = call.create_request(conn, ApiError::policy("Cannot create item anonymously"))?;
    let tx = conn.transaction()?;

    if let Some(id) = update_by_uuid(
        &tx,
        &request,
        Guarded::Item,
        "Item Admin privileges required to set privacy",
    )? {
        let head = head_revision(&tx, id)?;
        let mut metadata = p
            .iter()
            .filter(|(k, _)| k.len() > 1 && k.starts_with('_'))
            .peekable();
        if metadata.peek().is_some() {
            let (revision_id, _) = head.ok_or_else(|| {
                ApiError::policy("The item must have at least one revision to have metadata")
            })?;
            for (key, value) in metadata {
                set_metadata_value(&tx, revision_id, 0, &key[1..], "", value)?;
            }
        }
        if p.flag("updatebitstream") {
            // Midas dies with a PHP fatal error on an item without revision.
            let (revision_id, _) =
                head.ok_or_else(|| ApiError::internal("The item has no revision"))?;
            let bitstreams: Vec<i64> = tx
                .prepare("SELECT bitstream_id FROM bitstream WHERE itemrevision_id = ?1")?
                .query_map([revision_id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            if let [only] = bitstreams[..] {
                tx.execute(
                    "UPDATE bitstream SET name = ?1 WHERE bitstream_id = ?2",
                    params![request.name, only],
                )?;
            }
        }
        let result = item(&tx, id)?.ok_or_else(not_found)?;
        tx.commit()?;
        return Ok(result.into());
    }

    let parent = p.require_id("parentid")?;
    if folder(&tx, parent)?.is_none() {
        return Err(ApiError::invalid("Parent folder doesn't exist"));
    }
    if !can_folder(&tx, Some(request.caller), parent, WRITE)? {
        return Err(ApiError::policy("Invalid permissions on parent folder"));
    }
    let id = create_item(
        &tx,
        parent,
        request.name,
        request.description.unwrap_or_default(),
        request.caller.user_id,
        request.uuid,
    )?;
    if let Some(public) = request.public {
        set_public(&tx, Guarded::Item, id, public)?;
    }
    let result = fresh_item(&tx, id)?.ok_or_else(|| ApiError::internal("Create item failed"))?;
    tx.commit()?;
    Ok(result.into())
}

/// `midas.item.delete`: ADMIN; the item goes from every folder.
pub fn delete(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let (id, caller) = call.delete_request(conn)?;
    if !can_item(conn, Some(caller), id, ADMIN)? {
        return Err(not_found());
    }
    let tx = conn.transaction()?;
    let unused = delete_item(&tx, id)?;
    tx.commit()?;
    call.shared.store.remove_assets(&unused);
    Ok(Value::String(String::new()).into())
}

fn item_with_owning_folders(conn: &Connection, item_id: i64) -> Result<Reply, ApiError> {
    let mut result = item(conn, item_id)?.ok_or_else(not_found)?;
    result["owningfolders"] = Value::Array(query_list(
        conn,
        objects::FOLDER_SELECT,
        "JOIN item2folder l ON l.folder_id = f.folder_id WHERE l.item_id = ?1 ORDER BY l.link_id",
        [item_id],
        objects::folder_row,
    )?);
    Ok(result.into())
}

/// `level` on the item and WRITE on the destination folder, or the item's not-found error.
fn require_item_and_destination(
    conn: &Connection,
    caller: Caller,
    item_id: i64,
    level: i64,
    destination: i64,
) -> Result<(), ApiError> {
    if can_item(conn, Some(caller), item_id, level)?
        && can_folder(conn, Some(caller), destination, WRITE)?
    {
        Ok(())
    } else {
        Err(not_found())
    }
}

/// The caller, item and destination of `item.share` and `item.duplicate`, once the item is
/// readable and the destination writable; `anonymous` is the error for an anonymous call.
fn readable_item_and_destination(
    call: &Call<'_>,
    conn: &Connection,
    anonymous: ApiError,
) -> Result<(Caller, i64, i64), ApiError> {
    let id = call.params.require_id("id")?;
    let destination = call.params.require_id("dstfolderid")?;
    let caller = call.user(conn, anonymous)?;
    require_destination(conn, destination)?;
    require_item_and_destination(conn, caller, id, READ, destination)?;
    Ok((caller, id, destination))
}

/// `midas.item.move`: link into the destination (renamed on a clash), add its policies, unlink
/// from the source.
pub fn move_item(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let id = call.params.require_id("id")?;
    let source = call.params.require_id("srcfolderid")?;
    let destination = call.params.require_id("dstfolderid")?;
    let caller = call.user(conn, ApiError::policy("Cannot move item anonymously"))?;
    require_destination(conn, destination)?;
    if folder(conn, source)?.is_none() {
        return Err(ApiError::policy(
            "Unable to load source or destination folder.",
        ));
    }
    require_item_and_destination(conn, caller, id, ADMIN, destination)?;
    if source != destination {
        let tx = conn.transaction()?;
        let name: String = tx.query_row("SELECT name FROM item WHERE item_id = ?1", [id], |r| {
            r.get(0)
        })?;
        let already: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM item2folder WHERE item_id = ?1 AND folder_id = ?2)",
            params![id, destination],
            |r| r.get(0),
        )?;
        if !already {
            let unique = unique_item_name(&tx, destination, &name, id)?;
            if unique != name {
                tx.execute(
                    "UPDATE item SET name = ?1, date_update = ?2 WHERE item_id = ?3",
                    params![unique, now_date(), id],
                )?;
            }
            tx.execute(
                "INSERT INTO item2folder (item_id, folder_id) VALUES (?1, ?2)",
                params![id, destination],
            )?;
        }
        copy_folder_policies_to_item(&tx, destination, id)?;
        tx.execute(
            "DELETE FROM item2folder WHERE item_id = ?1 AND folder_id = ?2",
            params![id, source],
        )?;
        tx.commit()?;
    }
    item_with_owning_folders(conn, id)
}

/// `midas.item.share`: link into another folder without renaming; its groups get READ.
pub fn share(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let (_, id, destination) = readable_item_and_destination(
        call,
        conn,
        ApiError::policy("Cannot share item anonymously"),
    )?;
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT OR IGNORE INTO item2folder (item_id, folder_id) VALUES (?1, ?2)",
        params![id, destination],
    )?;
    tx.execute(
        "INSERT INTO itempolicygroup (item_id, group_id, policy) SELECT ?2, group_id, 0 FROM folderpolicygroup WHERE folder_id = ?1 \
         ON CONFLICT (item_id, group_id) DO NOTHING",
        params![destination, id],
    )?;
    tx.commit()?;
    item_with_owning_folders(conn, id)
}

/// `midas.item.duplicate`: a new item in the destination with copies of every revision,
/// metadata value and bitstream row (the stored files are shared).
pub fn duplicate(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let (caller, id, destination) = readable_item_and_destination(
        call,
        conn,
        ApiError::policy("Cannot duplicate item anonymously"),
    )?;
    let tx = conn.transaction()?;
    let (name, description, sizebytes): (String, String, i64) = tx.query_row(
        "SELECT name, description, sizebytes FROM item WHERE item_id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let copy = insert_item(&tx, destination, &name, &description, sizebytes, None)?;
    let revisions: Vec<(i64, i64, String, String)> = tx
        .prepare("SELECT itemrevision_id, revision, date, changes FROM itemrevision WHERE item_id = ?1 ORDER BY revision")?
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    for (old_revision, number, date, changes) in revisions {
        tx.execute(
            "INSERT INTO itemrevision (item_id, revision, date, changes, user_id, uuid) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![copy, number, date, changes, caller.user_id, new_uuid()],
        )?;
        let new_revision = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO bitstream (itemrevision_id, name, mimetype, sizebytes, checksum, path, date) \
             SELECT ?2, name, mimetype, sizebytes, checksum, path, date FROM bitstream WHERE itemrevision_id = ?1 ORDER BY bitstream_id",
            params![old_revision, new_revision],
        )?;
        tx.execute(
            "INSERT INTO metadatavalue (metadata_id, itemrevision_id, value) SELECT metadata_id, ?2, value FROM metadatavalue WHERE itemrevision_id = ?1",
            params![old_revision, new_revision],
        )?;
    }
    let mut result = item(&tx, copy)?.ok_or_else(|| ApiError::internal("Duplicate item failed"))?;
    // Midas answers with the new item's DAO as built, whose counters were never set.
    result["view"] = Value::from("");
    result["download"] = Value::from("");
    tx.commit()?;
    Ok(result.into())
}

/// `midas.item.download`: READ, then a redirect (`offset` is not passed on).
pub fn download(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let (id, caller) = readable(call, conn)?;
    let revision = match call.params.get("revision") {
        Some(r) => format!(",{}", parse_id(r)),
        None => String::new(),
    };
    Ok(Reply::Redirect(format!(
        "/download/?items={id}{revision}{}",
        auth_suffix(call, caller)
    )))
}

/// `midas.item.exists`: `{exists:"1", item}` or `{exists:""}` for a name in a readable folder.
pub fn exists(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let name = call.params.require("name")?;
    let parent = call.params.require_id("parentid")?;
    let caller = call.caller(conn)?;
    if folder(conn, parent)?.is_none() {
        return Err(ApiError::invalid("Invalid parentid"));
    }
    if !can_folder(conn, caller, parent, READ)? {
        return Err(ApiError::policy("Read permission required on folder"));
    }
    let tail = format!(
        "JOIN item2folder l ON l.item_id = i.item_id WHERE l.folder_id = ?1 AND i.name = ?2 AND {} ORDER BY i.item_id LIMIT 1",
        policy_sql(Guarded::Item, "i.item_id", caller, READ)
    );
    let found = objects::query_one(conn, ITEM_SELECT, &tail, params![parent, name], item_row)?;
    Ok(match found {
        Some(item) => json!({ "exists": true, "item": item }),
        None => json!({ "exists": false }),
    }
    .into())
}

/// The revision id a metadata call addresses: `revision` (a number) or the latest.
fn metadata_revision(
    conn: &Connection,
    item_id: i64,
    revision: Option<&str>,
) -> Result<i64, ApiError> {
    match revision {
        None => head_revision(conn, item_id)?
            .map(|(id, _)| id)
            .ok_or_else(|| {
                ApiError::policy("The item must have at least one revision to have metadata")
            }),
        Some(r) => {
            let number = r.trim().parse::<i64>().unwrap_or(0);
            if number < 1 {
                return Err(ApiError::invalid(format!(
                    "Revision Numbers must be integers greater than 0.{r}"
                )));
            }
            revision_by_number(conn, item_id, number)?
                .ok_or_else(|| ApiError::invalid("This revision number is invalid for this item."))
        }
    }
}

/// `midas.item.getmetadata`.
pub fn get_metadata(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let (id, _) = readable(call, conn)?;
    let revision = metadata_revision(conn, id, call.params.get("revision"))?;
    let list: Vec<Value> = conn
        .prepare(
            "SELECT m.metadata_id, m.metadatatype, m.element, m.qualifier, v.value FROM metadatavalue v \
             JOIN metadata m ON m.metadata_id = v.metadata_id WHERE v.itemrevision_id = ?1 ORDER BY m.metadata_id",
        )?
        .query_map([revision], |r| {
            Ok(json!({
                "metadata_id": r.get::<_, i64>(0)?,
                "metadatatype": r.get::<_, i64>(1)?,
                "element": r.get::<_, String>(2)?,
                "qualifier": r.get::<_, String>(3)?,
                "value": r.get::<_, String>(4)?,
            }))
        })?
        .collect::<Result<_, _>>()?;
    Ok(Value::Array(list).into())
}

/// Midas's one answer to a metadata call on an item the caller cannot write, anonymous or not.
fn no_write() -> ApiError {
    ApiError::policy("This item doesn't exist or you don't have write permission.")
}

fn require_write(conn: &Connection, caller: Caller, item_id: i64) -> Result<(), ApiError> {
    if can_item(conn, Some(caller), item_id, WRITE)? {
        Ok(())
    } else {
        Err(no_write())
    }
}

fn parse_type(value: Option<&str>, what: &str) -> Result<i64, ApiError> {
    match value {
        None => Ok(0),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|t| (0..=6).contains(t))
            .ok_or_else(|| {
                ApiError::invalid(format!("param {what} must be an integer between 0 and 6."))
            }),
    }
}

fn touch_item(conn: &Connection, item_id: i64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE item SET date_update = ?1 WHERE item_id = ?2",
        params![now_date(), item_id],
    )
    .map(|_| ())
}

/// `midas.item.setmetadata` (`itemId`, camel case).
pub fn set_metadata(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let p = call.params;
    let caller = call.user(conn, no_write())?;
    let id = p.require_id("itemId")?;
    let element = p.require("element")?;
    let value = p.require("value")?;
    let qualifier = p.get("qualifier").unwrap_or_default();
    let metadata_type = parse_type(p.get("type"), "type")?;
    require_write(conn, caller, id)?;
    let tx = conn.transaction()?;
    let revision = metadata_revision(&tx, id, p.get("revision"))?;
    set_metadata_value(&tx, revision, metadata_type, element, qualifier, value)?;
    touch_item(&tx, id)?;
    tx.commit()?;
    Ok(Value::Bool(true).into())
}

/// `midas.item.setmultiplemetadata` (`itemid`, `count`, `element_i`, `value_i`, `qualifier_i`).
pub fn set_multiple_metadata(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let p = call.params;
    let caller = call.user(conn, no_write())?;
    let id = p.require_id("itemid")?;
    let count = p
        .require("count")?
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|c| *c > 0)
        .ok_or_else(|| ApiError::invalid("Count must be an integer greater than 0."))?;
    let mut values = Vec::new();
    for i in 1..=count {
        let element = p.get(&format!("element_{i}")).ok_or_else(|| {
            ApiError::invalid(format!(
                "Count was {} but param element_{i} is missing.",
                i - 1
            ))
        })?;
        let value = p.get(&format!("value_{i}")).ok_or_else(|| {
            ApiError::invalid(format!(
                "Count was {} but param value_{i} is missing.",
                i - 1
            ))
        })?;
        let qualifier = p.get(&format!("qualifier_{i}")).unwrap_or_default();
        if p.get(&format!("type_{i}")).is_some() {
            // Midas reads the qualifier slot as the type: any type_i fails.
            return Err(ApiError::invalid(format!(
                "param type_{i} must be an integer between 0 and 6."
            )));
        }
        values.push((element, value, qualifier));
    }
    require_write(conn, caller, id)?;
    let tx = conn.transaction()?;
    let revision = metadata_revision(&tx, id, p.get("revision"))?;
    for (element, value, qualifier) in values {
        set_metadata_value(&tx, revision, 0, element, qualifier, value)?;
    }
    touch_item(&tx, id)?;
    tx.commit()?;
    Ok(Value::Bool(true).into())
}

/// `midas.item.deletemetadata`: `"1"`, or `""` when no such definition exists.
pub fn delete_metadata(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let p = call.params;
    let caller = call.user(conn, no_write())?;
    let id = p.require_id("itemid")?;
    let element = p.require("element")?;
    let qualifier = p.get("qualifier").unwrap_or_default();
    let metadata_type = parse_type(p.get("type"), "type")?;
    require_write(conn, caller, id)?;
    let metadata_id: Option<i64> = conn
        .query_row(
            "SELECT metadata_id FROM metadata WHERE metadatatype = ?1 AND element = ?2 AND qualifier = ?3",
            params![metadata_type, element, qualifier],
            |r| r.get(0),
        )
        .optional()?;
    let Some(metadata_id) = metadata_id else {
        return Ok(Value::Bool(false).into());
    };
    let tx = conn.transaction()?;
    let revision = metadata_revision(&tx, id, p.get("revision"))?;
    tx.execute(
        "DELETE FROM metadatavalue WHERE metadata_id = ?1 AND itemrevision_id = ?2",
        params![metadata_id, revision],
    )?;
    touch_item(&tx, id)?;
    tx.commit()?;
    Ok(Value::Bool(true).into())
}

/// `midas.item.searchbyname[andfolder[name]]`: exact name, optional `folderId`/`folderName`,
/// filtered by READ; `folder_id` is the first readable folder.
pub fn search_by_name(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let name = call.params.require("name")?;
    let caller = call.caller(conn)?;
    let readable = policy_sql(Guarded::Item, "i.item_id", caller, READ);
    let (tail, scope) = if let Some(folder_id) = call.params.get("folderId") {
        (
            format!("WHERE i.name = ?1 AND {readable} AND i.item_id IN (SELECT item_id FROM item2folder WHERE folder_id = ?2) ORDER BY i.item_id"),
            Some(parse_id(folder_id).to_string()),
        )
    } else if let Some(folder_name) = call.params.get("folderName") {
        (
            format!(
                "WHERE i.name = ?1 AND {readable} AND i.item_id IN (SELECT l.item_id FROM item2folder l JOIN folder f ON f.folder_id = l.folder_id WHERE f.name = ?2) ORDER BY i.item_id"
            ),
            Some(folder_name.to_owned()),
        )
    } else {
        (
            format!("WHERE i.name = ?1 AND {readable} AND ?2 IS NULL ORDER BY i.item_id"),
            None,
        )
    };
    let mut items = query_list(conn, ITEM_SELECT, &tail, params![name, scope], item_row)?;
    let folder_readable = policy_sql(Guarded::Folder, "f.folder_id", caller, READ);
    let mut first_readable = conn.prepare(&format!(
        "SELECT f.folder_id FROM item2folder l JOIN folder f ON f.folder_id = l.folder_id WHERE l.item_id = ?1 AND {folder_readable} ORDER BY l.link_id LIMIT 1"
    ))?;
    for item in &mut items {
        let id = item["item_id"].as_i64().unwrap_or(-1);
        if let Some(folder_id) = first_readable
            .query_row([id], |r| r.get::<_, i64>(0))
            .optional()?
        {
            item["folder_id"] = Value::from(folder_id);
        }
    }
    Ok(json!({ "items": items }).into())
}

/// The id of an item's revision `number`, if it has one (the metadata and upload paths).
pub fn revision_by_number(
    conn: &Connection,
    item_id: i64,
    number: i64,
) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT itemrevision_id FROM itemrevision WHERE item_id = ?1 AND revision = ?2",
        params![item_id, number],
        |r| r.get(0),
    )
    .optional()
}

/// The latest revision of an item, created as revision 1 ("Initial revision") when missing.
pub fn head_or_initial_revision(
    conn: &Connection,
    item_id: i64,
    user_id: i64,
) -> rusqlite::Result<i64> {
    match head_revision(conn, item_id)? {
        Some((id, _)) => Ok(id),
        None => add_revision(conn, item_id, "Initial revision", user_id).map(|(id, _)| id),
    }
}
