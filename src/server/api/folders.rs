//! Folder methods (reference §3.4).

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};

use super::objects::{folder, folder_row, item_row, query_list, FOLDER_SELECT, ITEM_SELECT};
use super::{update_by_uuid, Call, Reply};
use crate::server::store::{
    can_folder, delete_item, grant, insert_folder, parent_folder, policy_sql, renumber_tree,
    root_of, set_public, unused_checksums, Caller, Guarded, Holder, ADMIN, READ, WRITE,
};
use crate::server::wire::ApiError;

fn not_found() -> ApiError {
    ApiError::policy("This folder doesn't exist or you don't have the permissions.")
}

/// The `id` of a folder the caller may read, and the caller; otherwise the not-found error.
fn readable(call: &Call<'_>, conn: &Connection) -> Result<(i64, Option<Caller>), ApiError> {
    // Midas checks the parameters before the token
    let id = call.params.require_id("id")?;
    let caller = call.caller(conn)?;
    if can_folder(conn, caller, id, READ)? {
        Ok((id, caller))
    } else {
        Err(not_found())
    }
}

/// `midas.folder.get`: the folder plus `parent` ("" for a root), READ required.
pub fn get(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let (id, _) = readable(call, conn)?;
    let mut result = folder(conn, id)?.ok_or_else(not_found)?;
    let parent_id = result["parent_id"].as_i64().unwrap_or(-1);
    result["parent"] = match parent_id {
        p if p > 0 => folder(conn, p)?.unwrap_or_else(|| Value::String(String::new())),
        _ => Value::String(String::new()),
    };
    Ok(result.into())
}

/// Readable subfolders and items of a folder, each sorted by name.
pub fn readable_children(
    conn: &Connection,
    caller: Option<Caller>,
    id: i64,
) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let folder_tail = format!(
        "WHERE f.parent_id = ?1 AND {} ORDER BY f.name, f.folder_id",
        policy_sql(Guarded::Folder, "f.folder_id", caller, READ)
    );
    let folders = query_list(conn, FOLDER_SELECT, &folder_tail, [id], folder_row)?;
    let item_tail = format!(
        "JOIN item2folder l ON l.item_id = i.item_id WHERE l.folder_id = ?1 AND {} ORDER BY i.name, i.item_id",
        policy_sql(Guarded::Item, "i.item_id", caller, READ)
    );
    let items = query_list(conn, ITEM_SELECT, &item_tail, [id], item_row)?;
    Ok((folders, items))
}

/// `midas.folder.children`: `{folders, items}` filtered by READ; the folder itself is not
/// checked (as in Midas), but it must exist.
pub fn children(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let id = call.params.require_id("id")?;
    let caller = call.caller(conn)?;
    if folder(conn, id)?.is_none() {
        // Midas dies with a PHP fatal error here; a JSON error is kinder to every client.
        return Err(not_found());
    }
    let (folders, mut items) = readable_children(conn, caller, id)?;
    for item in &mut items {
        item["extraFields"] = json!([]);
    }
    Ok(json!({ "folders": folders, "items": items }).into())
}

/// The kind of object a uuid names, looked up in Midas's order.
pub fn uuid_kind(conn: &Connection, uuid: &str) -> rusqlite::Result<Option<(&'static str, i64)>> {
    for (kind, sql) in [
        (
            "community",
            "SELECT community_id FROM community WHERE uuid = ?1",
        ),
        ("folder", "SELECT folder_id FROM folder WHERE uuid = ?1"),
        ("item", "SELECT item_id FROM item WHERE uuid = ?1"),
        (
            "revision",
            "SELECT itemrevision_id FROM itemrevision WHERE uuid = ?1",
        ),
        ("user", "SELECT user_id FROM user WHERE uuid = ?1"),
    ] {
        if let Some(id) = conn.query_row(sql, [uuid], |r| r.get(0)).optional()? {
            return Ok(Some((kind, id)));
        }
    }
    Ok(None)
}

/// `midas.folder.create`: update by uuid, create under the caller's root (`parentid=-1`),
/// or create under a parent (duplicate names refused unless `reuseExisting`).
pub fn create(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let p = call.params;
    let request =
        call.create_request(conn, ApiError::policy("Cannot create folder anonymously"))?;
    let tx = conn.transaction()?;

    if let Some(id) = update_by_uuid(
        &tx,
        &request,
        Guarded::Folder,
        "Folder Admin privileges required to set privacy",
    )? {
        renumber_tree(&tx, root_of(&tx, id)?)?;
        let result = folder(&tx, id)?.ok_or_else(not_found)?;
        tx.commit()?;
        return Ok(result.into());
    }

    let parent_param = p.require("parentid")?;
    if request.name.is_empty() {
        return Err(ApiError::new(0, "Name cannot be empty."));
    }
    let parent_id = crate::server::wire::parse_id(parent_param);
    let existing_child = |tx: &Connection, parent: i64| -> rusqlite::Result<Option<i64>> {
        tx.query_row(
            "SELECT folder_id FROM folder WHERE parent_id = ?1 AND name = ?2 ORDER BY folder_id LIMIT 1",
            params![parent, request.name],
            |r| r.get(0),
        )
        .optional()
    };

    let insert_child = |tx: &Connection, parent: i64| -> rusqlite::Result<i64> {
        let description = request.description.unwrap_or_default();
        insert_folder(tx, parent, request.name, description, request.uuid)
    };

    let id = if parent_id == -1 {
        // Directly under the caller's root: no policies copied, nothing granted (as in Midas).
        let root: i64 = tx.query_row(
            "SELECT folder_id FROM user WHERE user_id = ?1",
            [request.caller.user_id],
            |r| r.get(0),
        )?;
        match existing_child(&tx, root)? {
            Some(id) => id,
            None => {
                let id = insert_child(&tx, root)?;
                if request.public == Some(true) {
                    set_public(&tx, Guarded::Folder, id, true)?;
                }
                renumber_tree(&tx, root)?;
                id
            }
        }
    } else {
        if folder(&tx, parent_id)?.is_none() {
            return Err(ApiError::invalid("Parent doesn't exist"));
        }
        if !can_folder(&tx, Some(request.caller), parent_id, WRITE)? {
            return Err(ApiError::policy("Invalid policy"));
        }
        match existing_child(&tx, parent_id)? {
            Some(id) if p.flag("reuseExisting") => id,
            Some(_) => {
                return Err(ApiError::invalid(
                    "A folder already exists in that parent with that name. Pass reuseExisting to reuse it.",
                ))
            }
            None => {
                let id = insert_child(&tx, parent_id)?;
                tx.execute(
                    "INSERT INTO folderpolicyuser (folder_id, user_id, policy) SELECT ?2, user_id, policy FROM folderpolicyuser WHERE folder_id = ?1",
                    params![parent_id, id],
                )?;
                tx.execute(
                    "INSERT INTO folderpolicygroup (folder_id, group_id, policy) SELECT ?2, group_id, policy FROM folderpolicygroup WHERE folder_id = ?1",
                    params![parent_id, id],
                )?;
                if !can_folder(&tx, Some(Caller { admin: false, ..request.caller }), id, ADMIN)? {
                    let creator = Holder::User(request.caller.user_id);
                    grant(&tx, Guarded::Folder, id, creator, ADMIN)?;
                }
                if let Some(public) = request.public {
                    set_public(&tx, Guarded::Folder, id, public)?;
                }
                renumber_tree(&tx, root_of(&tx, id)?)?;
                id
            }
        }
    };
    let result = folder(&tx, id)?.ok_or_else(|| ApiError::internal("Create folder failed"))?;
    tx.commit()?;
    Ok(result.into())
}

/// Delete a folder and its subtree. Items are unlinked and deleted only when no other folder
/// links them. Returns the checksums whose stored files are no longer used.
pub fn delete_folder_tree(conn: &Connection, folder_id: i64) -> Result<Vec<String>, ApiError> {
    let folders: Vec<i64> = conn
        .prepare(
            "WITH RECURSIVE t(id) AS (SELECT ?1 UNION ALL SELECT f.folder_id FROM folder f JOIN t ON f.parent_id = t.id) SELECT id FROM t",
        )?
        .query_map([folder_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut unused = Vec::new();
    for id in &folders {
        let items: Vec<i64> = conn
            .prepare("SELECT item_id FROM item2folder WHERE folder_id = ?1")?
            .query_map([id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        conn.execute("DELETE FROM item2folder WHERE folder_id = ?1", [id])?;
        for item in items {
            let linked: bool = conn.query_row(
                "SELECT EXISTS(SELECT 1 FROM item2folder WHERE item_id = ?1)",
                [item],
                |r| r.get(0),
            )?;
            if !linked {
                unused.extend(delete_item(conn, item)?);
            }
        }
    }
    for id in folders.iter().rev() {
        conn.execute("DELETE FROM folder WHERE folder_id = ?1", [id])?;
    }
    Ok(unused_checksums(conn, unused)?)
}

/// `midas.folder.delete`: ADMIN required; recursive.
pub fn delete(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let (id, caller) = call.delete_request(conn)?;
    let denied =
        || ApiError::policy("This folder doesn't exist  or you don't have the permissions.");
    // Root folders belong to their user or community; deleting them would orphan it.
    let parent = parent_folder(conn, id)?.ok_or_else(denied)?;
    if !can_folder(conn, Some(caller), id, ADMIN)? {
        return Err(denied());
    }
    let tx = conn.transaction()?;
    let unused = delete_folder_tree(&tx, id)?;
    renumber_tree(&tx, root_of(&tx, parent)?)?;
    tx.commit()?;
    call.shared.store.remove_assets(&unused);
    Ok(Value::String(String::new()).into())
}

/// `midas.folder.move`: ADMIN on the folder, WRITE on the destination; Midas's code-0 errors.
pub fn move_folder(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let id = call.params.require_id("id")?;
    let destination = call.params.require_id("dstfolderid")?;
    let caller = call.caller(conn)?;
    let current_parent = parent_folder(conn, id)?.ok_or_else(not_found)?;
    if !can_folder(conn, caller, id, ADMIN)? {
        return Err(not_found());
    }
    require_destination(conn, destination)?;
    if !can_folder(conn, caller, destination, WRITE)? {
        return Err(not_found());
    }
    if destination == id {
        return Err(ApiError::new(0, "Folder == Parent"));
    }
    if destination != current_parent {
        let inside: bool = conn.query_row(
            "WITH RECURSIVE t(id) AS (SELECT ?1 UNION ALL SELECT f.folder_id FROM folder f JOIN t ON f.parent_id = t.id) \
             SELECT EXISTS(SELECT 1 FROM t WHERE id = ?2)",
            params![id, destination],
            |r| r.get(0),
        )?;
        if inside {
            return Err(ApiError::new(0, "Parent is a child of Folder"));
        }
        let clash: bool = conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM folder WHERE parent_id = ?1 AND name = (SELECT name FROM folder WHERE folder_id = ?2))",
            params![destination, id],
            |r| r.get(0),
        )?;
        if clash {
            return Err(ApiError::new(0, "This name is already used"));
        }
        let tx = conn.transaction()?;
        let old_root = root_of(&tx, id)?;
        tx.execute(
            "UPDATE folder SET parent_id = ?1 WHERE folder_id = ?2",
            params![destination, id],
        )?;
        renumber_tree(&tx, old_root)?;
        let new_root = root_of(&tx, id)?;
        if new_root != old_root {
            renumber_tree(&tx, new_root)?;
        }
        tx.commit()?;
    }
    Ok(folder(conn, id)?.ok_or_else(not_found)?.into())
}

/// The destination of a move, share or duplicate must exist (Midas's code-0 error).
pub fn require_destination(conn: &Connection, destination: i64) -> Result<(), ApiError> {
    match folder(conn, destination)? {
        Some(_) => Ok(()),
        None => Err(ApiError::new(
            0,
            "Error in params when checking Folder Policy.",
        )),
    }
}

/// `midas.folder.download`: READ, then a redirect to the ZIP.
pub fn download(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let (id, caller) = readable(call, conn)?;
    Ok(Reply::Redirect(format!(
        "/download/?folders={id}{}",
        auth_suffix(call, caller)
    )))
}

/// `&authToken=T` when a token was passed and named a user.
pub fn auth_suffix(call: &Call<'_>, caller: Option<Caller>) -> String {
    match (caller, call.params.get("token")) {
        (Some(_), Some(token)) => format!("&authToken={token}"),
        _ => String::new(),
    }
}
