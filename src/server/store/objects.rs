//! Creating and deleting objects as Midas does: users with their folders and API key,
//! communities with their groups, items under unique names, revisions and bitstreams.

use rusqlite::{params, Connection, OptionalExtension};

use super::{
    asset_relative_path, copy_folder_policies_to_item, grant, hash_password, is_md5_hex, new_uuid,
    now_date, random_alnum, renumber_tree, set_public, ucfirst, Guarded, Holder, ADMIN,
    COMMUNITY_ROOT_PARENT, READ, USER_ROOT_PARENT, WRITE,
};
use crate::server::wire::ApiError;

pub struct NewUser {
    pub user_id: i64,
    pub apikey: String,
}

/// Create a user like Midas's `createUser`: a root `user_<id>` (user ADMIN), holding `Private`
/// (user ADMIN) and `Public` (user ADMIN, anonymous READ), and a `Default` API key.
pub fn create_user(
    conn: &Connection,
    email: &str,
    password: &str,
    firstname: &str,
    lastname: &str,
    admin: bool,
) -> Result<NewUser, ApiError> {
    let email = email.trim().to_lowercase();
    if email.is_empty() || password.is_empty() {
        return Err(ApiError::invalid("Email and password are required"));
    }
    let exists: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM user WHERE email = ?1)",
        [&email],
        |r| r.get(0),
    )?;
    if exists {
        return Err(ApiError::new(0, "User already exists."));
    }
    let now = now_date();
    let salt = random_alnum(16);
    conn.execute(
        "INSERT INTO user (email, password_hash, salt, firstname, lastname, creation, admin, uuid) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![email, hash_password(&salt, password), salt, ucfirst(firstname), ucfirst(lastname), now, admin, new_uuid()],
    )?;
    let user_id = conn.last_insert_rowid();
    let root = insert_folder(conn, USER_ROOT_PARENT, &format!("user_{user_id}"), "", None)?;
    let private = insert_folder(conn, root, "Private", "", None)?;
    let public = insert_folder(conn, root, "Public", "", None)?;
    for folder in [root, private, public] {
        grant(conn, Guarded::Folder, folder, Holder::User(user_id), ADMIN)?;
    }
    set_public(conn, Guarded::Folder, public, true)?;
    conn.execute(
        "UPDATE user SET folder_id = ?1 WHERE user_id = ?2",
        params![root, user_id],
    )?;
    renumber_tree(conn, root)?;
    let apikey = random_alnum(32);
    conn.execute(
        "INSERT INTO userapi (user_id, apikey, application_name, creation_date) VALUES (?1, ?2, 'Default', ?3)",
        params![user_id, apikey, now],
    )?;
    Ok(NewUser { user_id, apikey })
}

/// Insert a bare folder row (no policies) and return its id.
pub fn insert_folder(
    conn: &Connection,
    parent_id: i64,
    name: &str,
    description: &str,
    uuid: Option<&str>,
) -> rusqlite::Result<i64> {
    let now = now_date();
    let uuid = uuid.map(str::to_owned).unwrap_or_else(new_uuid);
    conn.execute(
        "INSERT INTO folder (parent_id, name, description, date_update, date_creation, uuid) VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
        params![parent_id, name, description, now, uuid],
    )?;
    Ok(conn.last_insert_rowid())
}

pub struct NewCommunity {
    pub community_id: i64,
}

/// Create a community like Midas's `createCommunity`: three groups, a root `community_<id>`
/// (admins ADMIN, moderators and members READ), `Public` when public and `Private`.
pub fn create_community(
    conn: &Connection,
    name: &str,
    description: &str,
    private: bool,
    can_join: bool,
    creator: Option<i64>,
    uuid: Option<&str>,
) -> Result<NewCommunity, ApiError> {
    let name = ucfirst(name);
    if name.is_empty() {
        return Err(ApiError::new(0, "Name cannot be empty."));
    }
    let exists: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM community WHERE name = ?1)",
        [&name],
        |r| r.get(0),
    )?;
    if exists {
        return Err(ApiError::new(0, "Community already exists."));
    }
    conn.execute(
        "INSERT INTO community (name, description, creation, privacy, can_join, uuid) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![name, description, now_date(), if private { 1 } else { 0 }, if can_join && !private { 1 } else { 0 }, uuid.map(str::to_owned).unwrap_or_else(new_uuid)],
    )?;
    let community_id = conn.last_insert_rowid();
    let mut groups = [0i64; 3];
    for (slot, label) in groups
        .iter_mut()
        .zip(["Admin group", "Moderators group", "Members group"])
    {
        conn.execute(
            "INSERT INTO \"group\" (community_id, name) VALUES (?1, ?2)",
            params![community_id, format!("{label} of community {name}")],
        )?;
        *slot = conn.last_insert_rowid();
    }
    let [admins, moderators, members] = groups;
    let grant_groups = |folder: i64, levels: [(i64, i64); 3]| -> rusqlite::Result<()> {
        levels.into_iter().try_for_each(|(group, level)| {
            grant(conn, Guarded::Folder, folder, Holder::Group(group), level)
        })
    };
    let root = insert_folder(
        conn,
        COMMUNITY_ROOT_PARENT,
        &format!("community_{community_id}"),
        "",
        None,
    )?;
    grant_groups(root, [(admins, ADMIN), (moderators, READ), (members, READ)])?;
    // Moderators write into the community's own folders.
    let staff = [(admins, ADMIN), (moderators, WRITE), (members, READ)];
    if !private {
        let public = insert_folder(conn, root, "Public", "", None)?;
        grant_groups(public, staff)?;
        set_public(conn, Guarded::Folder, public, true)?;
    }
    let private_folder = insert_folder(conn, root, "Private", "", None)?;
    grant_groups(private_folder, staff)?;
    renumber_tree(conn, root)?;
    conn.execute(
        "UPDATE community SET folder_id = ?1, admingroup_id = ?2, moderatorgroup_id = ?3, membergroup_id = ?4 WHERE community_id = ?5",
        params![root, admins, moderators, members, community_id],
    )?;
    if let Some(user_id) = creator {
        for group in [admins, members] {
            conn.execute(
                "INSERT OR IGNORE INTO user2group (user_id, group_id) VALUES (?1, ?2)",
                params![user_id, group],
            )?;
        }
    }
    Ok(NewCommunity { community_id })
}

/// `name`, or `name (1)`, `name (2)`… whichever is free among the items of `folder_id`
/// (Midas's `updateItemName`).
pub fn unique_item_name(
    conn: &Connection,
    folder_id: i64,
    name: &str,
    except_item: i64,
) -> rusqlite::Result<String> {
    let mut stmt = conn.prepare(
        "SELECT EXISTS(SELECT 1 FROM item i JOIN item2folder l ON l.item_id = i.item_id WHERE l.folder_id = ?1 AND i.name = ?2 AND i.item_id != ?3)",
    )?;
    let mut candidate = name.to_owned();
    let mut n = 0u64;
    while stmt.query_row(params![folder_id, candidate, except_item], |r| {
        r.get::<_, bool>(0)
    })? {
        n += 1;
        candidate = format!("{name} ({n})");
    }
    Ok(candidate)
}

/// Insert an item into a folder under a name free there (see [`unique_item_name`]), with a
/// copy of the folder's policies; returns its id.
pub fn insert_item(
    conn: &Connection,
    folder_id: i64,
    name: &str,
    description: &str,
    sizebytes: i64,
    uuid: Option<&str>,
) -> rusqlite::Result<i64> {
    let final_name = unique_item_name(conn, folder_id, name, -1)?;
    let now = now_date();
    conn.execute(
        "INSERT INTO item (name, description, sizebytes, date_creation, date_update, uuid) VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
        params![final_name, description, sizebytes, now, uuid.map(str::to_owned).unwrap_or_else(new_uuid)],
    )?;
    let item_id = conn.last_insert_rowid();
    conn.execute(
        "INSERT INTO item2folder (item_id, folder_id) VALUES (?1, ?2)",
        params![item_id, folder_id],
    )?;
    copy_folder_policies_to_item(conn, folder_id, item_id)?;
    Ok(item_id)
}

/// Create an item in a folder: unique name, the folder's policies copied, the creator ADMIN.
pub fn create_item(
    conn: &Connection,
    folder_id: i64,
    name: &str,
    description: &str,
    creator: i64,
    uuid: Option<&str>,
) -> Result<i64, ApiError> {
    if name.is_empty() {
        return Err(ApiError::new(0, "Name cannot be empty."));
    }
    let item_id = insert_item(conn, folder_id, name, description, 0, uuid)?;
    grant(conn, Guarded::Item, item_id, Holder::User(creator), ADMIN)?;
    Ok(item_id)
}

/// Add a revision `max + 1` to an item and return (itemrevision_id, number).
pub fn add_revision(
    conn: &Connection,
    item_id: i64,
    changes: &str,
    user_id: i64,
) -> rusqlite::Result<(i64, i64)> {
    let next: i64 = conn.query_row(
        "SELECT COALESCE(MAX(revision), 0) + 1 FROM itemrevision WHERE item_id = ?1",
        [item_id],
        |r| r.get(0),
    )?;
    conn.execute(
        "INSERT INTO itemrevision (item_id, revision, date, changes, user_id, uuid) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![item_id, next, now_date(), changes, user_id, new_uuid()],
    )?;
    Ok((conn.last_insert_rowid(), next))
}

/// The latest revision of an item: (itemrevision_id, number).
pub fn head_revision(conn: &Connection, item_id: i64) -> rusqlite::Result<Option<(i64, i64)>> {
    conn.query_row(
        "SELECT itemrevision_id, revision FROM itemrevision WHERE item_id = ?1 ORDER BY revision DESC LIMIT 1",
        [item_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

pub struct NewBitstream<'a> {
    pub name: &'a str,
    pub mimetype: &'a str,
    pub sizebytes: i64,
    pub checksum: &'a str,
}

/// Add a bitstream to a revision and make the item's size that revision's total
/// (Midas's `ItemRevisionModelBase::addBitstream`).
pub fn add_bitstream(
    conn: &Connection,
    item_id: i64,
    revision_id: i64,
    b: &NewBitstream<'_>,
) -> rusqlite::Result<i64> {
    let now = now_date();
    let path = if is_md5_hex(b.checksum) {
        asset_relative_path(b.checksum)
    } else {
        String::new()
    };
    conn.execute(
        "INSERT INTO bitstream (itemrevision_id, name, mimetype, sizebytes, checksum, path, date) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![revision_id, b.name, b.mimetype, b.sizebytes, b.checksum, path, now],
    )?;
    let id = conn.last_insert_rowid();
    conn.execute(
        "UPDATE item SET sizebytes = (SELECT COALESCE(SUM(sizebytes), 0) FROM bitstream WHERE itemrevision_id = ?2), date_update = ?3 WHERE item_id = ?1",
        params![item_id, revision_id, now],
    )?;
    Ok(id)
}

/// Delete an item and everything under it; stored files whose checksum is no longer used are
/// returned so the caller can remove them after the transaction commits.
pub fn delete_item(conn: &Connection, item_id: i64) -> rusqlite::Result<Vec<String>> {
    let checksums: Vec<String> = conn
        .prepare("SELECT DISTINCT b.checksum FROM bitstream b JOIN itemrevision r ON r.itemrevision_id = b.itemrevision_id WHERE r.item_id = ?1")?
        .query_map([item_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    conn.execute("DELETE FROM item WHERE item_id = ?1", [item_id])?;
    unused_checksums(conn, checksums)
}

/// Of these checksums, the ones no bitstream row uses any more.
pub fn unused_checksums(
    conn: &Connection,
    checksums: Vec<String>,
) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT EXISTS(SELECT 1 FROM bitstream WHERE checksum = ?1)")?;
    let mut unused = Vec::new();
    for c in checksums {
        if is_md5_hex(&c) && !stmt.query_row([&c], |r| r.get::<_, bool>(0))? {
            unused.push(c);
        }
    }
    Ok(unused)
}
