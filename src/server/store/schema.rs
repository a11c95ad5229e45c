//! The SQLite schema of `midasfs serve`: tables mirroring Midas's own, created if missing.

pub(super) const SCHEMA: &str = r#"
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
