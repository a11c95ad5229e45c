//! Who may do what: callers, policy levels held by users and groups on folders and items,
//! granting them and making objects public.

use rusqlite::{params, Connection, OptionalExtension};

use super::{ANONYMOUS_GROUP, READ};
use crate::server::wire::ApiError;

/// Who is calling: a logged-in user, or nobody (anonymous).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user_id: i64,
    pub admin: bool,
}

/// A SQL condition that is true when `caller` holds a policy (any level ≥ `level`) on the
/// object `<kind>_id = <id_expr>`, `kind` being `folder` or `item`. Only trusted values
/// (our own ids and column names) are ever spliced in.
pub fn policy_sql(kind: &str, id_expr: &str, caller: Option<Caller>, level: i64) -> String {
    match caller {
        Some(c) if c.admin => "1".to_owned(),
        Some(c) => format!(
            "(EXISTS(SELECT 1 FROM {kind}policyuser pu WHERE pu.{kind}_id = {id_expr} AND pu.user_id = {uid} AND pu.policy >= {level}) \
             OR EXISTS(SELECT 1 FROM {kind}policygroup pg WHERE pg.{kind}_id = {id_expr} AND pg.policy >= {level} \
             AND (pg.group_id = {ANONYMOUS_GROUP} OR pg.group_id IN (SELECT group_id FROM user2group WHERE user_id = {uid}))))",
            uid = c.user_id
        ),
        None => format!(
            "EXISTS(SELECT 1 FROM {kind}policygroup pg WHERE pg.{kind}_id = {id_expr} AND pg.policy >= {level} AND pg.group_id = {ANONYMOUS_GROUP})"
        ),
    }
}

/// An object that carries policies of its own. Its name is also the prefix of its tables:
/// `folder`, `folderpolicyuser`, `folderpolicygroup`, and likewise for items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarded {
    Folder,
    Item,
}

impl Guarded {
    pub fn name(self) -> &'static str {
        match self {
            Guarded::Folder => "folder",
            Guarded::Item => "item",
        }
    }
}

/// Who a policy is granted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    User(i64),
    Group(i64),
}

/// Whether `caller` holds `level` on a folder or item; false when it does not exist.
pub fn can(
    conn: &Connection,
    caller: Option<Caller>,
    object: Guarded,
    id: i64,
    level: i64,
) -> Result<bool, ApiError> {
    let kind = object.name();
    let sql = format!(
        "SELECT {} FROM {kind} o WHERE o.{kind}_id = ?1",
        policy_sql(kind, &format!("o.{kind}_id"), caller, level)
    );
    let found: Option<bool> = conn.query_row(&sql, [id], |r| r.get(0)).optional()?;
    Ok(found.unwrap_or(false))
}

pub fn can_folder(
    conn: &Connection,
    caller: Option<Caller>,
    folder_id: i64,
    level: i64,
) -> Result<bool, ApiError> {
    can(conn, caller, Guarded::Folder, folder_id, level)
}

pub fn can_item(
    conn: &Connection,
    caller: Option<Caller>,
    item_id: i64,
    level: i64,
) -> Result<bool, ApiError> {
    can(conn, caller, Guarded::Item, item_id, level)
}

/// Grant `level` on a folder or item to a user or group, keeping a higher level already held.
pub fn grant(
    conn: &Connection,
    object: Guarded,
    id: i64,
    holder: Holder,
    level: i64,
) -> rusqlite::Result<()> {
    let kind = object.name();
    let (holder_kind, holder_id) = match holder {
        Holder::User(user_id) => ("user", user_id),
        Holder::Group(group_id) => ("group", group_id),
    };
    conn.execute(
        &format!(
            "INSERT INTO {kind}policy{holder_kind} ({kind}_id, {holder_kind}_id, policy) VALUES (?1, ?2, ?3) \
             ON CONFLICT ({kind}_id, {holder_kind}_id) DO UPDATE SET policy = MAX(policy, excluded.policy)"
        ),
        params![id, holder_id, level],
    )?;
    Ok(())
}

/// Make a folder or item readable by anyone (anonymous READ), or take that policy away.
pub fn set_public(
    conn: &Connection,
    object: Guarded,
    id: i64,
    public: bool,
) -> rusqlite::Result<()> {
    if public {
        return grant(conn, object, id, Holder::Group(ANONYMOUS_GROUP), READ);
    }
    let kind = object.name();
    conn.execute(
        &format!("DELETE FROM {kind}policygroup WHERE {kind}_id = ?1 AND group_id = ?2"),
        params![id, ANONYMOUS_GROUP],
    )?;
    Ok(())
}

/// Give an item a copy of a folder's user and group policies (kept if higher already).
pub fn copy_folder_policies_to_item(
    conn: &Connection,
    folder_id: i64,
    item_id: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO itempolicyuser (item_id, user_id, policy) SELECT ?2, user_id, policy FROM folderpolicyuser WHERE folder_id = ?1 \
         ON CONFLICT (item_id, user_id) DO UPDATE SET policy = MAX(policy, excluded.policy)",
        params![folder_id, item_id],
    )?;
    conn.execute(
        "INSERT INTO itempolicygroup (item_id, group_id, policy) SELECT ?2, group_id, policy FROM folderpolicygroup WHERE folder_id = ?1 \
         ON CONFLICT (item_id, group_id) DO UPDATE SET policy = MAX(policy, excluded.policy)",
        params![folder_id, item_id],
    )?;
    Ok(())
}
