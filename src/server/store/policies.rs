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
/// object `<kind>_id = <id_expr>`. Only trusted values (our own ids and column names) are ever
/// spliced in.
pub fn policy_sql(object: Guarded, id_expr: &str, caller: Option<Caller>, level: i64) -> String {
    let kind = object.name();
    // A group's policy counts for the anonymous group's members, that is everyone, and for the
    // caller's own groups.
    let by_group = |groups: String| {
        format!(
            "EXISTS(SELECT 1 FROM {kind}policygroup pg WHERE pg.{kind}_id = {id_expr} AND pg.policy >= {level} AND {groups})"
        )
    };
    match caller {
        Some(c) if c.admin => "1".to_owned(),
        Some(c) => format!(
            "(EXISTS(SELECT 1 FROM {kind}policyuser pu WHERE pu.{kind}_id = {id_expr} AND pu.user_id = {uid} AND pu.policy >= {level}) \
             OR {by_group})",
            uid = c.user_id,
            by_group = by_group(format!(
                "(pg.group_id = {ANONYMOUS_GROUP} OR pg.group_id IN (SELECT group_id FROM user2group WHERE user_id = {uid}))",
                uid = c.user_id
            )),
        ),
        None => by_group(format!("pg.group_id = {ANONYMOUS_GROUP}")),
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

impl Holder {
    /// The kinds of holder, which are also the suffixes of the policy tables (`folderpolicyuser`)
    /// and the prefixes of their id columns (`user_id`).
    const KINDS: [&'static str; 2] = ["user", "group"];

    /// Its kind (one of [`Holder::KINDS`]) and id.
    fn kind_and_id(self) -> (&'static str, i64) {
        match self {
            Holder::User(user_id) => ("user", user_id),
            Holder::Group(group_id) => ("group", group_id),
        }
    }
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
        policy_sql(object, &format!("o.{kind}_id"), caller, level)
    );
    let found: Option<bool> = conn
        .prepare_cached(&sql)?
        .query_row([id], |r| r.get(0))
        .optional()?;
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
    give(
        conn,
        object,
        id,
        holder,
        level,
        "MAX(policy, excluded.policy)",
    )
}

/// Set a user's or group's policy on a folder or item to `level`, replacing the one it had
/// (Midas's `createPolicy`).
pub fn set_policy(
    conn: &Connection,
    object: Guarded,
    id: i64,
    holder: Holder,
    level: i64,
) -> rusqlite::Result<()> {
    give(conn, object, id, holder, level, "excluded.policy")
}

/// Insert a policy; one the holder already has becomes `kept` (SQL over `policy`, the old
/// level, and `excluded.policy`, the new).
fn give(
    conn: &Connection,
    object: Guarded,
    id: i64,
    holder: Holder,
    level: i64,
    kept: &str,
) -> rusqlite::Result<()> {
    let kind = object.name();
    let (holder_kind, holder_id) = holder.kind_and_id();
    conn.execute(
        &format!(
            "INSERT INTO {kind}policy{holder_kind} ({kind}_id, {holder_kind}_id, policy) VALUES (?1, ?2, ?3) \
             ON CONFLICT ({kind}_id, {holder_kind}_id) DO UPDATE SET policy = {kept}"
        ),
        params![id, holder_id, level],
    )?;
    Ok(())
}

/// Take away the policy a user or group holds on a folder or item (if it holds one).
pub fn revoke(conn: &Connection, object: Guarded, id: i64, holder: Holder) -> rusqlite::Result<()> {
    let kind = object.name();
    let (holder_kind, holder_id) = holder.kind_and_id();
    conn.execute(
        &format!(
            "DELETE FROM {kind}policy{holder_kind} WHERE {kind}_id = ?1 AND {holder_kind}_id = ?2"
        ),
        params![id, holder_id],
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
    let anyone = Holder::Group(ANONYMOUS_GROUP);
    if public {
        grant(conn, object, id, anyone, READ)
    } else {
        revoke(conn, object, id, anyone)
    }
}

/// Give an item a copy of a folder's user and group policies (kept if higher already).
pub fn copy_folder_policies_to_item(
    conn: &Connection,
    folder_id: i64,
    item_id: i64,
) -> rusqlite::Result<()> {
    for holder in Holder::KINDS {
        conn.execute(
            &format!(
                "INSERT INTO itempolicy{holder} (item_id, {holder}_id, policy) SELECT ?2, {holder}_id, policy FROM folderpolicy{holder} WHERE folder_id = ?1 \
                 ON CONFLICT (item_id, {holder}_id) DO UPDATE SET policy = MAX(policy, excluded.policy)"
            ),
            params![folder_id, item_id],
        )?;
    }
    Ok(())
}

/// Replace every user and group policy of a folder or item by a copy of the folder
/// `folder_id`'s, in the order the folder's were given.
pub fn replace_policies_by_folders(
    conn: &Connection,
    folder_id: i64,
    target: Guarded,
    target_id: i64,
) -> rusqlite::Result<()> {
    let kind = target.name();
    for holder in Holder::KINDS {
        conn.execute(
            &format!("DELETE FROM {kind}policy{holder} WHERE {kind}_id = ?1"),
            [target_id],
        )?;
        conn.execute(
            &format!(
                "INSERT INTO {kind}policy{holder} ({kind}_id, {holder}_id, policy) \
                 SELECT ?2, {holder}_id, policy FROM folderpolicy{holder} WHERE folder_id = ?1 ORDER BY rowid"
            ),
            params![folder_id, target_id],
        )?;
    }
    Ok(())
}
