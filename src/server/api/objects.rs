//! Database rows as Midas objects, with the fields in Midas's order (reference §2.5).
//! Numbers stay numbers here; the envelope turns every scalar into a string.

use rusqlite::{Connection, OptionalExtension, Params, Row};
use serde_json::{json, Value};

pub const FOLDER_SELECT: &str = "SELECT f.folder_id, f.left_index, f.right_index, f.parent_id, f.name, f.description, \
     f.date_update, f.date_creation, \
     CASE WHEN EXISTS(SELECT 1 FROM folderpolicygroup a WHERE a.folder_id = f.folder_id AND a.group_id = 0) THEN 0 ELSE 2 END, \
     f.uuid FROM folder f";

pub const ITEM_SELECT: &str = "SELECT i.item_id, i.name, i.description, i.sizebytes, i.date_creation, i.date_update, i.download, \
     CASE WHEN EXISTS(SELECT 1 FROM itempolicygroup a WHERE a.item_id = i.item_id AND a.group_id = 0) THEN 0 ELSE 2 END, \
     i.uuid FROM item i";

const REVISION_SELECT: &str =
    "SELECT itemrevision_id, item_id, revision, date, changes, user_id, uuid FROM itemrevision";

pub const BITSTREAM_SELECT: &str = "SELECT b.bitstream_id, b.itemrevision_id, b.name, b.mimetype, b.sizebytes, b.checksum, b.path, b.date FROM bitstream b";

pub const COMMUNITY_SELECT: &str =
    "SELECT c.community_id, c.name, c.description, c.creation, c.privacy, c.folder_id, \
     c.admingroup_id, c.moderatorgroup_id, c.membergroup_id, c.can_join, c.uuid FROM community c";

pub const USER_SELECT: &str =
    "SELECT u.user_id, u.firstname, u.lastname, u.email, u.creation, u.folder_id, u.admin, u.privacy, u.uuid FROM user u";

pub fn folder_row(r: &Row<'_>) -> rusqlite::Result<Value> {
    Ok(json!({
        "folder_id": r.get::<_, i64>(0)?,
        "left_index": r.get::<_, i64>(1)?,
        "right_index": r.get::<_, i64>(2)?,
        "parent_id": r.get::<_, i64>(3)?,
        "name": r.get::<_, String>(4)?,
        "description": r.get::<_, String>(5)?,
        "date_update": r.get::<_, String>(6)?,
        "date_creation": r.get::<_, String>(7)?,
        "view": 0,
        "teaser": "",
        "privacy_status": r.get::<_, i64>(8)?,
        "uuid": r.get::<_, String>(9)?,
    }))
}

pub fn item_row(r: &Row<'_>) -> rusqlite::Result<Value> {
    Ok(json!({
        "item_id": r.get::<_, i64>(0)?,
        "name": r.get::<_, String>(1)?,
        "description": r.get::<_, String>(2)?,
        "type": 0,
        "sizebytes": r.get::<_, i64>(3)?,
        "date_creation": r.get::<_, String>(4)?,
        "date_update": r.get::<_, String>(5)?,
        "thumbnail_id": "",
        "view": 0,
        "download": r.get::<_, i64>(6)?,
        "privacy_status": r.get::<_, i64>(7)?,
        "uuid": r.get::<_, String>(8)?,
    }))
}

fn revision_row(r: &Row<'_>) -> rusqlite::Result<Value> {
    Ok(json!({
        "itemrevision_id": r.get::<_, i64>(0)?,
        "item_id": r.get::<_, i64>(1)?,
        "revision": r.get::<_, i64>(2)?,
        "date": r.get::<_, String>(3)?,
        "changes": r.get::<_, String>(4)?,
        "user_id": r.get::<_, i64>(5)?,
        "license_id": "",
        "uuid": r.get::<_, String>(6)?,
    }))
}

pub fn bitstream_row(r: &Row<'_>) -> rusqlite::Result<Value> {
    Ok(json!({
        "bitstream_id": r.get::<_, i64>(0)?,
        "itemrevision_id": r.get::<_, i64>(1)?,
        "assetstore_id": 1,
        "name": r.get::<_, String>(2)?,
        "mimetype": r.get::<_, String>(3)?,
        "sizebytes": r.get::<_, i64>(4)?,
        "checksum": r.get::<_, String>(5)?,
        "path": r.get::<_, String>(6)?,
        "date": r.get::<_, String>(7)?,
    }))
}

pub fn community_row(r: &Row<'_>) -> rusqlite::Result<Value> {
    Ok(json!({
        "community_id": r.get::<_, i64>(0)?,
        "name": r.get::<_, String>(1)?,
        "description": r.get::<_, String>(2)?,
        "creation": r.get::<_, String>(3)?,
        "privacy": r.get::<_, i64>(4)?,
        "folder_id": r.get::<_, i64>(5)?,
        "admingroup_id": r.get::<_, i64>(6)?,
        "moderatorgroup_id": r.get::<_, i64>(7)?,
        "membergroup_id": r.get::<_, i64>(8)?,
        "can_join": r.get::<_, i64>(9)?,
        "view": 0,
        "uuid": r.get::<_, String>(10)?,
    }))
}

pub fn user_row(r: &Row<'_>) -> rusqlite::Result<Value> {
    Ok(json!({
        "user_id": r.get::<_, i64>(0)?,
        "firstname": r.get::<_, String>(1)?,
        "lastname": r.get::<_, String>(2)?,
        "email": r.get::<_, String>(3)?,
        "thumbnail": "",
        "company": "",
        "creation": r.get::<_, String>(4)?,
        "folder_id": r.get::<_, i64>(5)?,
        "admin": r.get::<_, i64>(6)?,
        "privacy": r.get::<_, i64>(7)?,
        "view": 0,
        "uuid": r.get::<_, String>(8)?,
        "city": "",
        "country": "",
        "website": "",
        "biography": "",
        "dynamichelp": 1,
    }))
}

/// Run `<select> <tail>` and map each row.
pub fn query_list<P: Params>(
    conn: &Connection,
    select: &str,
    tail: &str,
    params: P,
    map: fn(&Row<'_>) -> rusqlite::Result<Value>,
) -> rusqlite::Result<Vec<Value>> {
    let mut stmt = conn.prepare(&format!("{select} {tail}"))?;
    let rows = stmt.query_map(params, map)?;
    rows.collect()
}

pub fn query_one<P: Params>(
    conn: &Connection,
    select: &str,
    tail: &str,
    params: P,
    map: fn(&Row<'_>) -> rusqlite::Result<Value>,
) -> rusqlite::Result<Option<Value>> {
    conn.query_row(&format!("{select} {tail}"), params, map)
        .optional()
}

pub fn folder(conn: &Connection, id: i64) -> rusqlite::Result<Option<Value>> {
    query_one(
        conn,
        FOLDER_SELECT,
        "WHERE f.folder_id = ?1",
        [id],
        folder_row,
    )
}

pub fn item(conn: &Connection, id: i64) -> rusqlite::Result<Option<Value>> {
    query_one(conn, ITEM_SELECT, "WHERE i.item_id = ?1", [id], item_row)
}

/// An item as Midas returns it straight after creation: never-set counters are "".
pub fn fresh_item(conn: &Connection, id: i64) -> rusqlite::Result<Option<Value>> {
    Ok(item(conn, id)?.map(|mut v| {
        for key in ["sizebytes", "thumbnail_id", "view", "download"] {
            v[key] = Value::String(String::new());
        }
        v
    }))
}

pub fn community(conn: &Connection, id: i64) -> rusqlite::Result<Option<Value>> {
    query_one(
        conn,
        COMMUNITY_SELECT,
        "WHERE c.community_id = ?1",
        [id],
        community_row,
    )
}

/// The revisions of an item in ascending order, each with its bitstreams; only the latest
/// with `head_only`.
pub fn revisions(conn: &Connection, item_id: i64, head_only: bool) -> rusqlite::Result<Vec<Value>> {
    let tail = if head_only {
        "WHERE item_id = ?1 ORDER BY revision DESC LIMIT 1"
    } else {
        "WHERE item_id = ?1 ORDER BY revision ASC"
    };
    let mut list = query_list(conn, REVISION_SELECT, tail, [item_id], revision_row)?;
    for rev in &mut list {
        let rev_id = rev["itemrevision_id"].as_i64().unwrap_or(-1);
        let bitstreams = query_list(
            conn,
            BITSTREAM_SELECT,
            "WHERE b.itemrevision_id = ?1 ORDER BY b.bitstream_id",
            [rev_id],
            bitstream_row,
        )?;
        rev["bitstreams"] = Value::Array(bitstreams);
    }
    Ok(list)
}

/// The first folder an item was linked into.
pub fn first_folder_id(conn: &Connection, item_id: i64) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT folder_id FROM item2folder WHERE item_id = ?1 ORDER BY link_id LIMIT 1",
        [item_id],
        |r| r.get(0),
    )
    .optional()
}
