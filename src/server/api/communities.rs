//! Community methods (reference §3.3).

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};

use super::folders::{delete_folder_tree, uuid_kind};
use super::objects::{
    community, community_row, folder_row, query_list, COMMUNITY_SELECT, FOLDER_SELECT,
};
use super::{parse_public, uuid_in_use, Call, Reply};
use crate::server::store::{
    community_root, create_community, policy_sql, Caller, Guarded, ADMIN, READ, WRITE,
};
use crate::server::wire::{parse_id, ApiError};

/// The caller's level on a community (Midas's `CommunityModelBase::policyCheck`), if any.
pub fn community_level(
    conn: &Connection,
    caller: Option<Caller>,
    community_id: i64,
) -> Result<Option<i64>, ApiError> {
    let row: Option<(i64, i64, i64, i64)> = conn
        .query_row(
            "SELECT privacy, admingroup_id, moderatorgroup_id, membergroup_id FROM community WHERE community_id = ?1",
            [community_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((privacy, admins, moderators, members)) = row else {
        return Ok(None);
    };
    let public_level = (privacy == 0).then_some(READ);
    let Some(caller) = caller else {
        return Ok(public_level);
    };
    if caller.admin {
        return Ok(Some(ADMIN));
    }
    let in_group = |group: i64| -> rusqlite::Result<bool> {
        conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM user2group WHERE user_id = ?1 AND group_id = ?2)",
            params![caller.user_id, group],
            |r| r.get(0),
        )
    };
    let level = if in_group(admins)? {
        Some(ADMIN)
    } else if in_group(moderators)? {
        Some(WRITE)
    } else if in_group(members)? {
        Some(READ)
    } else {
        public_level
    };
    Ok(level)
}

/// `midas.community.list`: everything for admins; else up to 20 public ones plus the
/// caller's memberships, sorted by name without case.
pub fn list(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let caller = call.caller(conn)?;
    let mut list = match caller {
        Some(c) if c.admin => query_list(conn, COMMUNITY_SELECT, "", [], community_row)?,
        _ => {
            let mut list = query_list(
                conn,
                COMMUNITY_SELECT,
                "WHERE c.privacy = 0 ORDER BY c.community_id LIMIT 20",
                [],
                community_row,
            )?;
            if let Some(c) = caller {
                let mine = query_list(
                    conn,
                    COMMUNITY_SELECT,
                    "WHERE c.membergroup_id IN (SELECT group_id FROM user2group WHERE user_id = ?1)",
                    [c.user_id],
                    community_row,
                )?;
                for community in mine {
                    if !list
                        .iter()
                        .any(|x| x["community_id"] == community["community_id"])
                    {
                        list.push(community);
                    }
                }
            }
            list
        }
    };
    list.sort_by_key(|c| c["name"].as_str().unwrap_or_default().to_lowercase());
    Ok(Value::Array(list).into())
}

/// `midas.community.get` by `id` or `name`.
pub fn get(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let caller = call.caller(conn)?;
    let id = if let Some(id) = call.params.get("id") {
        parse_id(id)
    } else if let Some(name) = call.params.get("name") {
        conn.query_row(
            "SELECT community_id FROM community WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(-1)
    } else {
        return Err(ApiError::invalid("Parameter id or name is not defined"));
    };
    let denied =
        || ApiError::policy("This community doesn't exist or you don't have the permissions.");
    if community_level(conn, caller, id)?.is_none() {
        return Err(denied());
    }
    Ok(community(conn, id)?.ok_or_else(denied)?.into())
}

/// `midas.community.children`: `{folders}` readable under the root; the community itself is
/// not checked (as in Midas).
pub fn children(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let id = call.params.require_id("id")?;
    let caller = call.caller(conn)?;
    let root = community_root(conn, id)
        .optional()?
        .ok_or_else(|| ApiError::invalid("Invalid community id"))?;
    let tail = format!(
        "WHERE f.parent_id = ?1 AND {} ORDER BY f.name, f.folder_id",
        policy_sql(Guarded::Folder, "f.folder_id", caller, READ)
    );
    let folders = query_list(conn, FOLDER_SELECT, &tail, [root], folder_row)?;
    Ok(json!({ "folders": folders }).into())
}

fn parse_can_join(value: Option<&str>) -> Result<Option<bool>, ApiError> {
    match value {
        None => Ok(None),
        Some("Everyone") => Ok(Some(true)),
        Some("Invitation") => Ok(Some(false)),
        // Midas's own message says "privacy" here.
        Some(_) => Err(ApiError::invalid(
            "privacy should be one of [Everyone|Invitation]",
        )),
    }
}

/// `midas.community.create`: creates (server admins only) or updates by `uuid`.
pub fn create(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let name = call.params.require("name")?;
    let caller = call.user(conn, ApiError::policy("Unable to find user"))?;
    let description = call.params.get("description");
    // The community's column says whether it is private.
    let privacy = parse_public(call.params.get("privacy"))?.map(|public| !public);
    let can_join = parse_can_join(call.params.get("canjoin"))?;
    let uuid = call.params.get("uuid").filter(|u| !u.is_empty());
    let tx = conn.transaction()?;
    let existing: Option<i64> = match uuid {
        Some(u) => tx
            .query_row(
                "SELECT community_id FROM community WHERE uuid = ?1",
                [u],
                |r| r.get(0),
            )
            .optional()?,
        None => None,
    };
    if let (None, Some(u)) = (existing, uuid) {
        if uuid_kind(&tx, u)?.is_some() {
            return Err(uuid_in_use());
        }
    }
    let mut created = false;
    let id = if let Some(id) = existing {
        let level = community_level(&tx, Some(caller), id)?;
        if level < Some(WRITE) {
            return Err(ApiError::policy("Invalid policy"));
        }
        if (privacy.is_some() || can_join.is_some()) && level < Some(ADMIN) {
            return Err(ApiError::policy("Admin access required."));
        }
        tx.execute(
            "UPDATE community SET name = ?1 WHERE community_id = ?2",
            params![name, id],
        )?;
        if let Some(d) = description {
            tx.execute(
                "UPDATE community SET description = ?1 WHERE community_id = ?2",
                params![d, id],
            )?;
        }
        if let Some(private) = privacy {
            tx.execute(
                "UPDATE community SET privacy = ?1 WHERE community_id = ?2",
                params![private as i64, id],
            )?;
        }
        if let Some(join) = can_join {
            tx.execute(
                "UPDATE community SET can_join = ?1 WHERE community_id = ?2",
                params![join as i64, id],
            )?;
        }
        id
    } else {
        if !caller.admin {
            return Err(ApiError::policy("Only admins can create communities"));
        }
        created = true;
        create_community(
            &tx,
            name,
            description.unwrap_or_default(),
            privacy.unwrap_or(false),
            can_join.unwrap_or(true),
            Some(caller.user_id),
            uuid,
        )?
        .community_id
    };
    let mut result =
        community(&tx, id)?.ok_or_else(|| ApiError::internal("Create community failed"))?;
    if created {
        // Midas answers with the new community's DAO as built, whose view count was never set.
        result["view"] = Value::from("");
    }
    tx.commit()?;
    Ok(result.into())
}

/// `midas.community.delete`: ADMIN on the community; its whole folder tree goes too.
pub fn delete(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let (id, caller) = call.delete_request(conn)?;
    if community_level(conn, Some(caller), id)? < Some(ADMIN) {
        return Err(ApiError::policy(
            "This community doesn't exist  or you don't have the permissions.",
        ));
    }
    let tx = conn.transaction()?;
    let (root, groups): (i64, [i64; 3]) = tx.query_row(
        "SELECT folder_id, admingroup_id, moderatorgroup_id, membergroup_id FROM community WHERE community_id = ?1",
        [id],
        |r| Ok((r.get(0)?, [r.get(1)?, r.get(2)?, r.get(3)?])),
    )?;
    let unused = delete_folder_tree(&tx, root)?;
    for group in groups {
        tx.execute("DELETE FROM user2group WHERE group_id = ?1", [group])?;
        tx.execute("DELETE FROM folderpolicygroup WHERE group_id = ?1", [group])?;
        tx.execute("DELETE FROM itempolicygroup WHERE group_id = ?1", [group])?;
        tx.execute("DELETE FROM \"group\" WHERE group_id = ?1", [group])?;
    }
    tx.execute("DELETE FROM community WHERE community_id = ?1", [id])?;
    tx.commit()?;
    call.shared.store.remove_assets(&unused);
    Ok(Value::String(String::new()).into())
}
