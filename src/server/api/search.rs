//! `resource.search`, `resource.get` and the `path.*` methods (reference §3.9).
//!
//! Unlike Midas, `resource.get` and `path.*` check READ: private objects never leak.

use rusqlite::{params, Connection};
use serde_json::{json, Value};

use super::communities::community_level;
use super::folders::uuid_kind;
use super::objects::{
    community_row, first_folder_id, folder, folder_row, item, item_row, query_list, user_row,
    COMMUNITY_SELECT, FOLDER_SELECT, ITEM_SELECT, USER_SELECT,
};
use super::{Call, Reply};
use crate::server::store::{
    can_folder, can_item, community_root, policy_sql, Caller, Guarded, READ,
};
use crate::server::wire::ApiError;

/// `YYYY-MM-DD …` as `MM/DD/YYYY`.
fn formatted_date(date: &str) -> String {
    match (date.get(0..4), date.get(5..7), date.get(8..10)) {
        (Some(y), Some(m), Some(d)) => format!("{m}/{d}/{y}"),
        _ => String::new(),
    }
}

fn like_pattern(term: &str) -> String {
    let escaped = term
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

fn tag(mut list: Vec<Value>, kind: &str, date_field: &str) -> Vec<Value> {
    for v in &mut list {
        let date = formatted_date(v[date_field].as_str().unwrap_or_default());
        v["resultType"] = Value::from(kind);
        v["formattedDate"] = Value::from(date);
    }
    list
}

fn field_text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Midas merges folders, items, communities and users, in that order, and sorts the whole list
/// (PHP 8's `usort`, which is stable) by the order asked for: views, most first (the default);
/// names; relevance (the SQL search scores items 0, everything else 1), then names; dates,
/// oldest first.
fn sort_results(results: &mut [Value], order: &str) {
    match order {
        "name" => results.sort_by_key(|v| field_text(v, "name").to_lowercase()),
        "relevance" => results.sort_by_key(|v| {
            let score = i32::from(v["resultType"] != "item");
            (
                std::cmp::Reverse(score),
                field_text(v, "name").to_lowercase(),
            )
        }),
        "date" => results.sort_by_key(|v| {
            let date = field_text(v, "date_update");
            if date.is_empty() {
                field_text(v, "creation")
            } else {
                date
            }
        }),
        _ => results
            .sort_by_key(|v| std::cmp::Reverse(field_text(v, "view").parse().unwrap_or(0_i64))),
    }
}

/// `midas.resource.search`: `LIKE %term%` over readable items (name, description), folders,
/// communities and users.
pub fn resource_search(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let caller = call.caller(conn)?;
    let term = call.params.require("search")?;
    let order = match call.params.get("order").unwrap_or("view") {
        "view" => "",
        "relevance" => "relevance",
        "name" => "name",
        "date" => "date",
        _ => return Err(ApiError::new(0, "Invalid order")),
    };
    let pattern = like_pattern(term);
    // Midas's SQL search of items has no ORDER BY: the whole list is sorted afterwards
    let item_order = "i.item_id";
    let items = query_list(
        conn,
        ITEM_SELECT,
        &format!(
            "WHERE (i.name LIKE ?1 ESCAPE '\\' OR i.description LIKE ?1 ESCAPE '\\') AND {} ORDER BY {item_order} LIMIT 200",
            policy_sql(Guarded::Item, "i.item_id", caller, READ)
        ),
        [&pattern],
        item_row,
    )?;
    // Roots (user_N, community_N) are not results: they are reached through their owner.
    let folders = query_list(
        conn,
        FOLDER_SELECT,
        &format!(
            "WHERE f.parent_id > 0 AND f.name LIKE ?1 ESCAPE '\\' AND {} ORDER BY f.name LIMIT 15",
            policy_sql(Guarded::Folder, "f.folder_id", caller, READ)
        ),
        [&pattern],
        folder_row,
    )?;
    let mut communities = Vec::new();
    for c in query_list(
        conn,
        COMMUNITY_SELECT,
        "WHERE c.name LIKE ?1 ESCAPE '\\' ORDER BY c.name",
        [&pattern],
        community_row,
    )? {
        let id = c["community_id"].as_i64().unwrap_or(-1);
        if communities.len() < 15 && community_level(conn, caller, id)?.is_some() {
            communities.push(c);
        }
    }
    let mut users = query_list(
        conn,
        USER_SELECT,
        "WHERE u.privacy = 0 AND (u.firstname LIKE ?1 ESCAPE '\\' OR u.lastname LIKE ?1 ESCAPE '\\') ORDER BY u.lastname LIMIT 15",
        [&pattern],
        user_row,
    )?;
    for u in &mut users {
        if let Some(map) = u.as_object_mut() {
            map.remove("email");
        }
    }
    let counts = (items.len(), folders.len(), communities.len(), users.len());
    let mut results = tag(folders, "folder", "date_update");
    results.extend(tag(items, "item", "date_update"));
    results.extend(tag(communities, "community", "creation"));
    results.extend(tag(users, "user", "creation"));
    sort_results(&mut results, order);
    Ok(json!({
        "nitems": counts.0,
        "nfolders": counts.1,
        "ncommunities": counts.2,
        "nusers": counts.3,
        "results": results,
    })
    .into())
}

fn no_resource() -> ApiError {
    ApiError::invalid("No resource for the given UUID.")
}

/// Whether the caller may see the object a uuid names.
fn readable(
    conn: &Connection,
    caller: Option<Caller>,
    kind: &str,
    id: i64,
) -> Result<bool, ApiError> {
    Ok(match kind {
        "folder" => can_folder(conn, caller, id, READ)?,
        "item" => can_item(conn, caller, id, READ)?,
        "community" => community_level(conn, caller, id)?.is_some(),
        "revision" => {
            let item: i64 = conn.query_row(
                "SELECT item_id FROM itemrevision WHERE itemrevision_id = ?1",
                [id],
                |r| r.get(0),
            )?;
            can_item(conn, caller, item, READ)?
        }
        _ => true,
    })
}

/// `midas.resource.get`: `{type, id}` (1 item, 2 user, 3 revision, 4 folder, 6 community).
pub fn resource_get(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let caller = call.caller(conn)?;
    let uuid = call.params.require("uuid")?;
    let (kind, id) = uuid_kind(conn, uuid)?.ok_or_else(no_resource)?;
    if !readable(conn, caller, kind, id)? {
        return Err(ApiError::policy("Invalid policy"));
    }
    let (type_code, id) = match kind {
        "item" => (1, id),
        "user" => (2, id),
        "revision" => (3, id),
        "folder" => (4, id),
        _ if call.params.flag("folder") => {
            let root = community_root(conn, id)?;
            (4, root)
        }
        _ => (6, id),
    };
    Ok(json!({ "type": type_code, "id": id }).into())
}

/// The node named by `uuid` and its readable ancestors, node first.
fn path_to_root_list(call: &Call<'_>, conn: &Connection) -> Result<Vec<Value>, ApiError> {
    let caller = call.caller(conn)?;
    let uuid = call.params.require("uuid")?;
    let (kind, id) = uuid_kind(conn, uuid)?.ok_or_else(no_resource)?;
    let mut path = Vec::new();
    let mut current = match kind {
        "folder" if can_folder(conn, caller, id, READ)? => Some(id),
        "item" if can_item(conn, caller, id, READ)? => {
            path.push(item(conn, id)?.ok_or_else(no_resource)?);
            first_folder_id(conn, id)?
        }
        "folder" | "item" => return Err(ApiError::policy("Invalid policy")),
        _ => return Err(ApiError::invalid("Invalid resource type")),
    };
    let readable_sql = format!(
        "SELECT {} FROM folder f WHERE f.folder_id = ?1",
        policy_sql(Guarded::Folder, "f.folder_id", caller, READ)
    );
    while let Some(folder_id) = current.filter(|id| *id > 0) {
        let Some(f) = folder(conn, folder_id)? else {
            break;
        };
        current = f["parent_id"].as_i64();
        let visible: bool = conn.query_row(&readable_sql, params![folder_id], |r| r.get(0))?;
        if visible {
            path.push(f);
        }
        if path.len() > 10_000 {
            break;
        }
    }
    Ok(path)
}

pub fn path_to_root(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    Ok(Value::Array(path_to_root_list(call, conn)?).into())
}

pub fn path_from_root(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let mut list = path_to_root_list(call, conn)?;
    list.reverse();
    Ok(Value::Array(list).into())
}
