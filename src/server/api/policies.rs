//! Permission methods (`item.list.permissions`, `item.add.policygroup`, …,
//! `folder.set.privacy.recursive`): how a client changes who may read an object, with the
//! parameter names, checks, answers and errors of Midas 3.4's `ApiitemComponent` and
//! `ApifolderComponent` (checked against a live Midas 3.4.2).

use rusqlite::{params, Connection};
use serde_json::{json, Value};

use super::{Call, Reply};
use crate::server::store::{
    can, replace_policies_by_folders, revoke, set_policy, set_public, Caller, Guarded, Holder,
    ADMIN, ANONYMOUS_GROUP, READ, WRITE,
};
use crate::server::wire::{parse_id, ApiError};

/// Midas renames `item_id`/`folder_id` to `id` first, so the old name is the required one.
fn object_id(call: &Call<'_>, object: Guarded) -> Result<i64, ApiError> {
    let key = match object {
        Guarded::Item => "item_id",
        Guarded::Folder => "folder_id",
    };
    Ok(parse_id(call.params.require(key)?))
}

/// The object must exist (−150) and the caller must hold ADMIN on it (−151, `denied`).
fn require_admin(
    conn: &Connection,
    caller: Option<Caller>,
    object: Guarded,
    id: i64,
    denied: &str,
) -> Result<(), ApiError> {
    let kind = object.name();
    let exists: bool = conn.query_row(
        &format!("SELECT EXISTS(SELECT 1 FROM {kind} WHERE {kind}_id = ?1)"),
        [id],
        |r| r.get(0),
    )?;
    if !exists {
        return Err(ApiError::invalid(format!("This {kind} doesn't exist.")));
    }
    if !can(conn, caller, object, id, ADMIN)? {
        return Err(ApiError::policy(denied));
    }
    Ok(())
}

/// A group id that names a group: the anonymous group (0) or a community's.
fn require_group(conn: &Connection, raw: &str) -> Result<i64, ApiError> {
    let id = raw.trim().parse::<i64>().ok();
    let exists = match id {
        Some(ANONYMOUS_GROUP) => true,
        Some(id) => conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM \"group\" WHERE group_id = ?1)",
            [id],
            |r| r.get(0),
        )?,
        None => false,
    };
    match id {
        Some(id) if exists => Ok(id),
        _ => Err(ApiError::invalid("This group doesn't exist.")),
    }
}

fn policy_code(name: &str) -> Result<i64, ApiError> {
    match name {
        "Admin" => Ok(ADMIN),
        "Write" => Ok(WRITE),
        "Read" => Ok(READ),
        _ => Err(ApiError::invalid(
            "policy should be one of [Admin|Write|Read]",
        )),
    }
}

fn policy_name(code: i64) -> &'static str {
    match code {
        ADMIN => "Admin",
        WRITE => "Write",
        _ => "Read",
    }
}

/// `{privacy, user: [{user_id, policy, email}], group: [{group_id, policy, name}]}`.
fn list_permissions(conn: &Connection, object: Guarded, id: i64) -> Result<Value, ApiError> {
    let kind = object.name();
    let public: bool = conn.query_row(
        &format!(
            "SELECT EXISTS(SELECT 1 FROM {kind}policygroup WHERE {kind}_id = ?1 AND group_id = ?2)"
        ),
        params![id, ANONYMOUS_GROUP],
        |r| r.get(0),
    )?;
    let mut users = conn.prepare(&format!(
        "SELECT p.user_id, p.policy, u.email FROM {kind}policyuser p JOIN user u ON u.user_id = p.user_id \
         WHERE p.{kind}_id = ?1 ORDER BY p.rowid"
    ))?;
    let users = users
        .query_map([id], |r| {
            Ok(json!({
                "user_id": r.get::<_, i64>(0)?,
                "policy": policy_name(r.get(1)?),
                "email": r.get::<_, String>(2)?,
            }))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut groups = conn.prepare(&format!(
        "SELECT p.group_id, p.policy, COALESCE(g.name, CASE WHEN p.group_id = {ANONYMOUS_GROUP} THEN 'Anonymous' ELSE '' END) \
         FROM {kind}policygroup p LEFT JOIN \"group\" g ON g.group_id = p.group_id WHERE p.{kind}_id = ?1 ORDER BY p.rowid"
    ))?;
    let groups = groups
        .query_map([id], |r| {
            Ok(json!({
                "group_id": r.get::<_, i64>(0)?,
                "policy": policy_name(r.get(1)?),
                "name": r.get::<_, String>(2)?,
            }))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(json!({
        "privacy": if public { "Public" } else { "Private" },
        "user": users,
        "group": groups,
    }))
}

/// `midas.item.list.permissions`: ADMIN required.
pub fn item_list(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    list(call, conn, Guarded::Item)
}

/// `midas.folder.list.permissions`: ADMIN required.
pub fn folder_list(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    list(call, conn, Guarded::Folder)
}

fn list(call: &Call<'_>, conn: &mut Connection, object: Guarded) -> Result<Reply, ApiError> {
    let id = object_id(call, object)?;
    let caller = call.caller(conn)?;
    let denied = format!(
        "Admin privileges required on the {} to list permissions.",
        object.name()
    );
    require_admin(conn, caller, object, id, &denied)?;
    Ok(list_permissions(conn, object, id)?.into())
}

/// `midas.item.add.policygroup`: the group's policy on the item becomes `policy`.
pub fn item_add_group(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    change_group(call, conn, Guarded::Item, Change::Add)
}

/// `midas.item.remove.policygroup`: the group loses its policy on the item (if it had one).
pub fn item_remove_group(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    change_group(call, conn, Guarded::Item, Change::Remove)
}

/// `midas.folder.add.policygroup`: the group's policy on the folder becomes `policy`; with
/// `recursive` (present, whatever its value) everything below then gets the folder's policies.
/// Answers the counts `folder.set.privacy.recursive` does (Midas's `folderAddPolicygroup`).
pub fn folder_add_group(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    change_group(call, conn, Guarded::Folder, Change::Add)
}

/// `midas.folder.remove.policygroup`: the group loses its policy on the folder (if it had
/// one); `recursive` as for [`folder_add_group`].
pub fn folder_remove_group(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    change_group(call, conn, Guarded::Folder, Change::Remove)
}

/// What `<kind>.add.policygroup` and `<kind>.remove.policygroup` do to the group's policy.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    Add,
    Remove,
}

/// The four policygroup methods: parameters checked in Midas's order (the object, `group_id`,
/// `policy` when adding; then ADMIN on the object, then the group and the policy's name), the
/// change made, and on a folder the push down of `recursive` with its counts as the answer.
fn change_group(
    call: &Call<'_>,
    conn: &mut Connection,
    object: Guarded,
    change: Change,
) -> Result<Reply, ApiError> {
    let id = object_id(call, object)?;
    let p = call.params;
    let raw_group = p.require("group_id")?;
    let raw_policy = match change {
        Change::Add => Some(p.require("policy")?),
        Change::Remove => None,
    };
    let caller = call.caller(conn)?;
    let denied = format!("Admin privileges required on the {}.", object.name());
    require_admin(conn, caller, object, id, &denied)?;
    let group_id = require_group(conn, raw_group)?;
    let level = raw_policy.map(policy_code).transpose()?;
    let tx = conn.transaction()?;
    match level {
        Some(level) => set_policy(&tx, object, id, Holder::Group(group_id), level)?,
        None => revoke(&tx, object, id, Holder::Group(group_id))?,
    }
    let answer = match object {
        Guarded::Item => json!({"success": "true"}),
        Guarded::Folder => {
            let counts = push_down_if_recursive(call, &tx, id, caller)?;
            json!({"success": counts.success, "failure": counts.failure})
        }
    };
    tx.commit()?;
    Ok(answer.into())
}

/// One folder changed; with `recursive`, its policies are then applied below it.
fn push_down_if_recursive(
    call: &Call<'_>,
    conn: &Connection,
    id: i64,
    caller: Option<Caller>,
) -> Result<Counts, ApiError> {
    let mut counts = Counts {
        success: 1,
        failure: 0,
    };
    if call.params.get("recursive").is_some() {
        apply_policies_recursive(conn, id, caller, &mut counts)?;
    }
    Ok(counts)
}

/// `midas.folder.set.privacy.recursive`: the folder gains or loses anonymous READ, then every
/// folder and item below it on which the caller holds ADMIN gets exactly the folder's
/// policies (Midas's `applyPoliciesRecursive`); the others are counted as failures.
pub fn folder_set_privacy_recursive(
    call: &Call<'_>,
    conn: &mut Connection,
) -> Result<Reply, ApiError> {
    let id = object_id(call, Guarded::Folder)?;
    let raw_privacy = call.params.require("privacy")?;
    let caller = call.caller(conn)?;
    require_admin(
        conn,
        caller,
        Guarded::Folder,
        id,
        "Admin privileges required on the folder to set privacy.",
    )?;
    let public = match raw_privacy {
        "Public" => true,
        "Private" => false,
        _ => {
            return Err(ApiError::invalid(
                "privacy should be one of [Public|Private]",
            ))
        }
    };
    let tx = conn.transaction()?;
    set_public(&tx, Guarded::Folder, id, public)?;
    let mut counts = Counts {
        success: 1,
        failure: 0,
    };
    apply_policies_recursive(&tx, id, caller, &mut counts)?;
    tx.commit()?;
    Ok(json!({"success": counts.success, "failure": counts.failure}).into())
}

struct Counts {
    success: i64,
    failure: i64,
}

/// Copy `folder_id`'s policies down onto its subfolders (depth first) and then its items.
fn apply_policies_recursive(
    conn: &Connection,
    folder_id: i64,
    caller: Option<Caller>,
    counts: &mut Counts,
) -> Result<(), ApiError> {
    let subfolders: Vec<i64> = conn
        .prepare("SELECT folder_id FROM folder WHERE parent_id = ?1 ORDER BY folder_id")?
        .query_map([folder_id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for sub in subfolders {
        if !can(conn, caller, Guarded::Folder, sub, ADMIN)? {
            counts.failure += 1;
            continue;
        }
        replace_policies_by_folders(conn, folder_id, Guarded::Folder, sub)?;
        counts.success += 1;
        apply_policies_recursive(conn, sub, caller, counts)?;
    }
    let items: Vec<i64> = conn
        .prepare("SELECT item_id FROM item2folder WHERE folder_id = ?1 ORDER BY link_id")?
        .query_map([folder_id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for item in items {
        if !can(conn, caller, Guarded::Item, item, ADMIN)? {
            counts.failure += 1;
            continue;
        }
        replace_policies_by_folders(conn, folder_id, Guarded::Item, item)?;
        counts.success += 1;
    }
    Ok(())
}
