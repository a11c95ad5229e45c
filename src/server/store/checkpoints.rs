//! Checkpoints of the database's write-ahead log on a thread of their own, off the request path.
//! Download counts commit without a sync of their own (see [`super::Unsynced`]), so their log
//! frames are synced at the next checkpoint. Run by the connection that answers requests
//! (SQLite's default: every 1,000 frames, in the commit that passes that), that checkpoint's
//! sync of a few MB of log held every request up for about 20 ms after each thousand
//! downloads. Here a second connection checkpoints every [`EVERY`] without blocking the first:
//! in WAL mode readers and writers go on during a checkpoint.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// How often the log is checkpointed.
const EVERY: Duration = Duration::from_millis(500);
/// Frames after which the request connection checkpoints by itself all the same: only if this
/// thread fell far behind (about 40 MB of log).
pub const BACKSTOP_FRAMES: i64 = 10_000;

/// The checkpointing thread; stopped and joined when dropped.
pub struct Checkpoints {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpoints {
    /// Start checkpointing `database`, which is in WAL mode already.
    pub fn start(database: &Path) -> Result<Checkpoints, super::StoreError> {
        let conn = Connection::open(database)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("midasfs-checkpoint".to_owned())
            .spawn(move || loop {
                match stopped.recv_timeout(EVERY) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
                // PASSIVE: copies what no reader still needs, never waits for anyone.
                let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                if let Err(err) = done {
                    log::warn!("checkpoint of the database's log: {err}");
                }
            })
            .map_err(|source| super::StoreError::Io {
                path: database.to_path_buf(),
                source,
            })?;
        Ok(Checkpoints {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rusqlite::OpenFlags;

    use super::super::{Store, Unsynced};
    use super::*;

    /// The counter as the database file holds it, without the log (`immutable`); None while
    /// the file does not hold its table yet.
    fn in_the_file(database: &std::path::Path) -> Option<i64> {
        let uri = format!("file:{}?immutable=1", database.display());
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
        Connection::open_with_flags(uri, flags)
            .and_then(|conn| conn.query_row("SELECT n FROM counter", [], |r| r.get(0)))
            .ok()
    }

    #[test]
    fn commits_without_a_sync_reach_the_database_file_without_any_request_checkpointing() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open(dir.path()).expect("store");
        let database = dir.path().join("midas.sqlite3");
        {
            let conn = store.lock();
            conn.execute_batch("CREATE TABLE counter(n INTEGER); INSERT INTO counter VALUES (0);")
                .expect("table");
            // Far fewer frames than the request connection's own checkpoints wait for.
            for _ in 0..50 {
                let _counts_only = Unsynced::new(&conn).expect("unsynced");
                conn.execute("UPDATE counter SET n = n + 1", [])
                    .expect("update");
            }
        }
        let start = Instant::now();
        while in_the_file(&database) != Some(50) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the log was not checkpointed into the file: {:?} there",
                in_the_file(&database)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
