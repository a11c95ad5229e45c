//! The store of `midasfs serve`: one SQLite database (tables mirroring Midas's own) plus a
//! content-addressed directory of files, `DIR/assetstore/<md5[0:2]>/<md5[2:4]>/<md5>`, shared by
//! every bitstream with that checksum. Uploads in progress live in `DIR/uploads/`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;

mod checkpoints;
mod helpers;
mod objects;
mod policies;
mod schema;
mod tree;

pub use helpers::*;
pub use objects::*;
pub use policies::*;
use schema::SCHEMA;
pub use tree::*;

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

/// The database and the file directories of one `--data DIR`.
pub struct Store {
    /// Stopped first, so that the request connection, closing last, checkpoints what is left.
    _checkpoints: checkpoints::Checkpoints,
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
        conn.pragma_update(None, "wal_autocheckpoint", checkpoints::BACKSTOP_FRAMES)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            _checkpoints: checkpoints::Checkpoints::start(&database)?,
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

/// While held, commits on its connection skip their fsync (`synchronous = NORMAL`). The
/// database runs in WAL mode, so it stays consistent through a crash; a power loss may forget
/// the last of these commits. For what no client waits to be durable: the count each download
/// adds to its item, which with a sync of its own made every download (a random read is one)
/// wait for the disk. Every other commit stays synchronous, and the next one or the next
/// checkpoint (see [`checkpoints`]) makes these durable too.
pub struct Unsynced<'a>(&'a Connection);

impl<'a> Unsynced<'a> {
    pub fn new(conn: &'a Connection) -> rusqlite::Result<Unsynced<'a>> {
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(Unsynced(conn))
    }
}

impl Drop for Unsynced<'_> {
    fn drop(&mut self) {
        if let Err(err) = self.0.pragma_update(None, "synchronous", "FULL") {
            // Never seen: setting this pragma only fails inside a transaction, and none is open.
            log::error!("cannot make the database's commits synchronous again: {err}");
        }
    }
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
    use rusqlite::params;

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
