//! The store of `midasfs serve`: one SQLite database (tables mirroring Midas's own) plus a
//! content-addressed directory of files, `DIR/assetstore/<md5[0:2]>/<md5[2:4]>/<md5>`, shared by
//! every bitstream with that checksum. Uploads in progress live in `DIR/uploads/`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use rand::distr::{Alphanumeric, SampleString};
use rusqlite::{params, Connection, OptionalExtension};

use super::wire::ApiError;

/// Policy levels, as in Midas.
pub const READ: i64 = 0;
pub const WRITE: i64 = 1;
pub const ADMIN: i64 = 2;
/// The group every caller, anonymous or not, belongs to.
pub const ANONYMOUS_GROUP: i64 = 0;
/// `parent_id` of a user's root folder and of a community's root folder.
pub const USER_ROOT_PARENT: i64 = -1;
pub const COMMUNITY_ROOT_PARENT: i64 = -2;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use the store directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{0}")]
    Invalid(String),
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS user (
    user_id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    salt TEXT NOT NULL,
    firstname TEXT NOT NULL,
    lastname TEXT NOT NULL,
    creation TEXT NOT NULL,
    folder_id INTEGER NOT NULL DEFAULT 0,
    admin INTEGER NOT NULL DEFAULT 0,
    privacy INTEGER NOT NULL DEFAULT 0,
    uuid TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS userapi (
    userapi_id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES user(user_id) ON DELETE CASCADE,
    apikey TEXT NOT NULL,
    application_name TEXT NOT NULL,
    creation_date TEXT NOT NULL,
    UNIQUE (user_id, application_name)
);
CREATE TABLE IF NOT EXISTS token (
    token TEXT PRIMARY KEY,
    userapi_id INTEGER NOT NULL REFERENCES userapi(userapi_id) ON DELETE CASCADE,
    expires INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS community (
    community_id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    creation TEXT NOT NULL,
    privacy INTEGER NOT NULL,
    folder_id INTEGER NOT NULL DEFAULT 0,
    admingroup_id INTEGER NOT NULL DEFAULT 0,
    moderatorgroup_id INTEGER NOT NULL DEFAULT 0,
    membergroup_id INTEGER NOT NULL DEFAULT 0,
    can_join INTEGER NOT NULL,
    uuid TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS "group" (
    group_id INTEGER PRIMARY KEY AUTOINCREMENT,
    community_id INTEGER NOT NULL,
    name TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS user2group (
    user_id INTEGER NOT NULL REFERENCES user(user_id) ON DELETE CASCADE,
    group_id INTEGER NOT NULL,
    PRIMARY KEY (user_id, group_id)
);
CREATE TABLE IF NOT EXISTS folder (
    folder_id INTEGER PRIMARY KEY AUTOINCREMENT,
    parent_id INTEGER NOT NULL,
    left_index INTEGER NOT NULL DEFAULT 0,
    right_index INTEGER NOT NULL DEFAULT 1,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    date_update TEXT NOT NULL,
    date_creation TEXT NOT NULL,
    uuid TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS folder_parent ON folder(parent_id, name);
CREATE INDEX IF NOT EXISTS folder_uuid ON folder(uuid);
CREATE TABLE IF NOT EXISTS item (
    item_id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    sizebytes INTEGER NOT NULL DEFAULT 0,
    date_creation TEXT NOT NULL,
    date_update TEXT NOT NULL,
    download INTEGER NOT NULL DEFAULT 0,
    uuid TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS item_name ON item(name);
CREATE INDEX IF NOT EXISTS item_uuid ON item(uuid);
CREATE TABLE IF NOT EXISTS item2folder (
    link_id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL REFERENCES item(item_id) ON DELETE CASCADE,
    folder_id INTEGER NOT NULL REFERENCES folder(folder_id) ON DELETE CASCADE,
    UNIQUE (item_id, folder_id)
);
CREATE INDEX IF NOT EXISTS item2folder_folder ON item2folder(folder_id);
CREATE TABLE IF NOT EXISTS itemrevision (
    itemrevision_id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL REFERENCES item(item_id) ON DELETE CASCADE,
    revision INTEGER NOT NULL,
    date TEXT NOT NULL,
    changes TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    uuid TEXT NOT NULL,
    UNIQUE (item_id, revision)
);
CREATE TABLE IF NOT EXISTS bitstream (
    bitstream_id INTEGER PRIMARY KEY AUTOINCREMENT,
    itemrevision_id INTEGER NOT NULL REFERENCES itemrevision(itemrevision_id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    mimetype TEXT NOT NULL,
    sizebytes INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    path TEXT NOT NULL,
    date TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS bitstream_revision ON bitstream(itemrevision_id);
CREATE INDEX IF NOT EXISTS bitstream_checksum ON bitstream(checksum);
CREATE TABLE IF NOT EXISTS metadata (
    metadata_id INTEGER PRIMARY KEY AUTOINCREMENT,
    metadatatype INTEGER NOT NULL,
    element TEXT NOT NULL,
    qualifier TEXT NOT NULL,
    UNIQUE (metadatatype, element, qualifier)
);
CREATE TABLE IF NOT EXISTS metadatavalue (
    metadata_id INTEGER NOT NULL REFERENCES metadata(metadata_id) ON DELETE CASCADE,
    itemrevision_id INTEGER NOT NULL REFERENCES itemrevision(itemrevision_id) ON DELETE CASCADE,
    value TEXT NOT NULL,
    PRIMARY KEY (metadata_id, itemrevision_id)
);
CREATE TABLE IF NOT EXISTS folderpolicyuser (
    folder_id INTEGER NOT NULL REFERENCES folder(folder_id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL,
    policy INTEGER NOT NULL,
    PRIMARY KEY (folder_id, user_id)
);
CREATE TABLE IF NOT EXISTS folderpolicygroup (
    folder_id INTEGER NOT NULL REFERENCES folder(folder_id) ON DELETE CASCADE,
    group_id INTEGER NOT NULL,
    policy INTEGER NOT NULL,
    PRIMARY KEY (folder_id, group_id)
);
CREATE TABLE IF NOT EXISTS itempolicyuser (
    item_id INTEGER NOT NULL REFERENCES item(item_id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL,
    policy INTEGER NOT NULL,
    PRIMARY KEY (item_id, user_id)
);
CREATE TABLE IF NOT EXISTS itempolicygroup (
    item_id INTEGER NOT NULL REFERENCES item(item_id) ON DELETE CASCADE,
    group_id INTEGER NOT NULL,
    policy INTEGER NOT NULL,
    PRIMARY KEY (item_id, group_id)
);
"#;

/// The database and the file directories of one `--data DIR`.
pub struct Store {
    conn: Mutex<Connection>,
    assetstore: PathBuf,
    uploads: PathBuf,
}

impl Store {
    /// Open (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let assetstore = dir.join("assetstore");
        let uploads = dir.join("uploads");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        // Only the server's user may read it: the database holds every API key.
        for path in [dir, &assetstore, &uploads] {
            crate::private::dir(path).map_err(io(path))?;
        }
        let database = dir.join("midas.sqlite3");
        // SQLite gives its -wal and -shm files the database file's mode.
        let file = crate::private::file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&database)
            .map_err(io(&database))?;
        crate::private::file(&file, &database).map_err(io(&database))?;
        drop(file);
        for suffix in ["-wal", "-shm"] {
            let path = dir.join(format!("midas.sqlite3{suffix}"));
            crate::private::existing_file(&path).map_err(io(&path))?;
        }
        let conn = Connection::open(&database)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            conn: Mutex::new(conn),
            assetstore,
            uploads,
        })
    }

    /// The database connection. A panic while holding it leaves SQLite consistent (every
    /// multi-row change is one transaction), so a poisoned lock is simply taken over.
    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Where the content with this MD5 lives. `checksum` must be 32 hex digits
    /// (see [`is_md5_hex`]): it never comes from a request unchecked.
    pub fn asset_path(&self, checksum: &str) -> PathBuf {
        self.assetstore.join(asset_relative_path(checksum))
    }

    pub fn uploads_dir(&self) -> &Path {
        &self.uploads
    }
}

/// `d4/1d/d41d8cd98f00b204e9800998ecf8427e`, the `path` field of a bitstream.
pub fn asset_relative_path(checksum: &str) -> String {
    let (a, b) = (&checksum[0..2], &checksum[2..4]);
    format!("{a}/{b}/{checksum}")
}

pub fn is_md5_hex(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, the Midas date format.
pub fn format_date(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

pub fn now_date() -> String {
    format_date(unix_now())
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub fn random_alnum(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// 32 lower-case hex digits, like Midas's UuidComponent.
pub fn new_uuid() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn md5_hex(data: &[u8]) -> String {
    format!("{:x}", Md5::digest(data))
}

/// Salted, iterated MD5 (the only digest among our dependencies); slows guessing down.
pub fn hash_password(salt: &str, password: &str) -> String {
    let mut digest = Md5::digest(format!("{salt}{password}").as_bytes());
    for _ in 0..20_000 {
        let mut hasher = Md5::new();
        hasher.update(digest);
        hasher.update(salt.as_bytes());
        digest = hasher.finalize();
    }
    format!("{digest:x}")
}

/// PHP's `ucfirst`: upper-cases the first character if it is ASCII.
pub fn ucfirst(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

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

/// The id of the root folder (parent −1 or −2) above `folder_id`.
pub fn root_of(conn: &Connection, folder_id: i64) -> rusqlite::Result<i64> {
    let mut current = folder_id;
    // Bounded walk: a cycle cannot be created through the API, but never loop forever.
    for _ in 0..10_000 {
        match parent_folder(conn, current)? {
            Some(parent) => current = parent,
            None => return Ok(current),
        }
    }
    Ok(current)
}

/// The parent of a folder; none for a root (parent −1 or −2) or a folder that does not exist.
pub fn parent_folder(conn: &Connection, folder_id: i64) -> rusqlite::Result<Option<i64>> {
    let parent: Option<i64> = conn
        .query_row(
            "SELECT parent_id FROM folder WHERE folder_id = ?1",
            [folder_id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(parent.filter(|p| *p > 0))
}

/// Recompute the nested-set `left_index`/`right_index` of one root folder's tree, the way
/// Midas numbers it (root at 0). Called after every change to that tree's shape.
pub fn renumber_tree(conn: &Connection, root_id: i64) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(
        "WITH RECURSIVE t(id, parent) AS (SELECT folder_id, parent_id FROM folder WHERE folder_id = ?1 \
         UNION ALL SELECT f.folder_id, f.parent_id FROM folder f JOIN t ON f.parent_id = t.id) \
         SELECT t.id, t.parent, f.name FROM t JOIN folder f ON f.folder_id = t.id",
    )?;
    let rows: Vec<(i64, i64, String)> = stmt
        .query_map([root_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut children: std::collections::HashMap<i64, Vec<(String, i64)>> = Default::default();
    for (id, parent, name) in &rows {
        if *id != root_id {
            children
                .entry(*parent)
                .or_default()
                .push((name.clone(), *id));
        }
    }
    for list in children.values_mut() {
        list.sort();
    }
    let mut numbers = Vec::with_capacity(rows.len());
    let mut counter = 0i64;
    // Iterative DFS: (id, entered)
    let mut stack = vec![(root_id, false)];
    let mut left_of = std::collections::HashMap::new();
    while let Some((id, entered)) = stack.pop() {
        if entered {
            numbers.push((id, left_of[&id], counter));
            counter += 1;
        } else {
            left_of.insert(id, counter);
            counter += 1;
            stack.push((id, true));
            if let Some(list) = children.get(&id) {
                for (_, child) in list.iter().rev() {
                    stack.push((*child, false));
                }
            }
        }
    }
    let mut update = conn.prepare(
        "UPDATE folder SET left_index = ?2, right_index = ?3 WHERE folder_id = ?1 AND (left_index != ?2 OR right_index != ?3)",
    )?;
    for (id, left, right) in numbers {
        update.execute(params![id, left, right])?;
    }
    Ok(())
}

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

impl Store {
    /// Remove stored files no row refers to any more (after the deleting transaction).
    pub fn remove_assets(&self, checksums: &[String]) {
        for c in checksums {
            let path = self.asset_path(c);
            if let Err(err) = std::fs::remove_file(&path) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    log::warn!("cannot remove {}: {err}", path.display());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_midas_format() {
        assert_eq!(format_date(0), "1970-01-01 00:00:00");
        assert_eq!(format_date(1_798_389_473), "2026-12-27 16:37:53");
        assert_eq!(format_date(951_782_400), "2000-02-29 00:00:00");
    }

    #[test]
    fn uuids_and_keys_have_midas_shape() {
        let u = new_uuid();
        assert_eq!(u.len(), 32);
        assert!(u
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let k = random_alnum(32);
        assert!(k.len() == 32 && k.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn new_user_gets_root_private_public_with_midas_policies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let conn = store.lock();
        let user = create_user(&conn, "A@Example.com", "pw", "ann", "lee", false).expect("create");
        let caller = Some(Caller {
            user_id: user.user_id,
            admin: false,
        });
        let (root, email): (i64, String) = conn
            .query_row(
                "SELECT folder_id, email FROM user WHERE user_id = ?1",
                [user.user_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("user row");
        assert_eq!(email, "a@example.com");
        let id_of = |name: &str| -> i64 {
            conn.query_row(
                "SELECT folder_id FROM folder WHERE parent_id = ?1 AND name = ?2",
                params![root, name],
                |r| r.get(0),
            )
            .expect("child")
        };
        let (private, public) = (id_of("Private"), id_of("Public"));
        assert!(can_folder(&conn, caller, private, ADMIN).expect("check"));
        assert!(!can_folder(&conn, None, private, READ).expect("check"));
        assert!(can_folder(&conn, None, public, READ).expect("check"));
        assert!(!can_folder(&conn, None, public, WRITE).expect("check"));
        assert!(!can_folder(&conn, None, root, READ).expect("check"));
        let (l, r): (i64, i64) = conn
            .query_row(
                "SELECT left_index, right_index FROM folder WHERE folder_id = ?1",
                [root],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("root");
        assert_eq!((l, r), (0, 5));
    }

    #[test]
    fn duplicate_item_names_get_numbered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let conn = store.lock();
        let user = create_user(&conn, "b@example.com", "pw", "b", "b", false).expect("create");
        let folder: i64 = conn
            .query_row(
                "SELECT folder_id FROM folder WHERE name = 'Public'",
                [],
                |r| r.get(0),
            )
            .expect("public");
        let names: Vec<String> = (0..3)
            .map(|_| {
                let id = create_item(&conn, folder, "x.txt", "", user.user_id, None).expect("item");
                conn.query_row("SELECT name FROM item WHERE item_id = ?1", [id], |r| {
                    r.get(0)
                })
                .expect("name")
            })
            .collect();
        assert_eq!(names, ["x.txt", "x.txt (1)", "x.txt (2)"]);
    }
}
