//! Uploads (reference §3.8): `generatetoken`, `getoffset` and the streaming `perform`.
//!
//! An upload token `<userId>/<itemId>/<64 alphanumerics>` names a temporary file
//! `DIR/uploads/<userId>_<itemId>_<secret>`; that file existing is what makes the token valid,
//! so tokens survive restarts. A finished upload is fsynced, renamed into the assetstore and
//! only then recorded, in one transaction: a crash at any point leaves the store consistent.
//!
//! One writer per token. Midas writes synchronously inside the request, so once a client sees
//! its `perform` fail, nothing more reaches the file. Here a writing thread may still drain
//! queued chunks after the connection broke; so `getoffset` and a second `perform` of the same
//! token first wait for that writer to stop ([`UploadWriters`]), else the resumed bytes would
//! land after a size that was still growing.
//!
//! An upload sent in parts (a body shorter than `length`, then more `perform`s) keeps its MD5
//! state between them ([`PartialHashes`]), so the commit need not read the whole file again.
//! Midas re-reads it; the checksum is the same.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::http::Method;
use bytes::Bytes;
use futures_util::StreamExt;
use md5::{Digest, Md5};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::items::{head_or_initial_revision, revision_by_number};
use super::objects::item;
use super::{Call, Reply};
use crate::server::conn::{spawn_transfer, Transfer};
use crate::server::store::{
    add_bitstream, add_revision, can_folder, can_item, create_item, policy_sql, random_alnum,
    Caller, NewBitstream, Store, READ, WRITE,
};
use crate::server::wire::{ApiError, Params};
use crate::server::Shared;

/// A parsed, validated upload token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadToken {
    pub user_id: i64,
    pub item_id: i64,
    secret: String,
}

impl UploadToken {
    fn new(user_id: i64, item_id: i64) -> UploadToken {
        UploadToken {
            user_id,
            item_id,
            secret: random_alnum(64),
        }
    }

    /// Accept only `<digits>/<digits>/<64 alphanumerics>`: nothing else ever becomes a path.
    pub fn parse(token: &str) -> Option<UploadToken> {
        let mut parts = token.split('/');
        let (user, item, secret) = (parts.next()?, parts.next()?, parts.next()?);
        let number = |s: &str| -> Option<i64> {
            if s.is_empty() || s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        if parts.next().is_some()
            || secret.len() != 64
            || !secret.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return None;
        }
        Some(UploadToken {
            user_id: number(user)?,
            item_id: number(item)?,
            secret: secret.to_owned(),
        })
    }

    pub fn temp_path(&self, store: &Store) -> PathBuf {
        store
            .uploads_dir()
            .join(format!("{}_{}_{}", self.user_id, self.item_id, self.secret))
    }
}

impl std::fmt::Display for UploadToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.user_id, self.item_id, self.secret)
    }
}

/// A mimetype from the first bytes of a file (libmagic's answers for the common cases).
pub fn sniff_mimetype(head: &[u8], total: u64) -> &'static str {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"%PDF-", "application/pdf"),
        (b"PK\x03\x04", "application/zip"),
        (b"\x1f\x8b", "application/x-gzip"),
        (b"\x7fELF", "application/x-executable"),
    ];
    if total == 0 {
        return "application/x-empty";
    }
    if let Some((_, mime)) = MAGIC.iter().find(|(magic, _)| head.starts_with(magic)) {
        return mime;
    }
    let text = match std::str::from_utf8(head) {
        Ok(_) => true,
        // A multi-byte character cut by the sniffing window is still text.
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    };
    if text
        && !head
            .iter()
            .any(|b| *b == 0 || (*b < 0x20 && !b"\t\n\r\x0c\x1b\x08".contains(b)))
    {
        "text/plain"
    } else {
        "application/octet-stream"
    }
}

/// `midas.upload.generatetoken`: checksum dedup, or a token and its empty temporary file.
pub fn generate_token(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let p = call.params;
    let caller = call.user(conn, ApiError::policy("Anonymous users may not upload"))?;
    let filename = p.require("filename")?;
    let item_id = match (p.get("itemid"), p.get("folderid")) {
        (None, None) => {
            return Err(ApiError::invalid(
                "Parameter itemid or folderid must be defined",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "Parameter itemid or folderid must be defined, but not both",
            ))
        }
        (Some(item_id), None) => {
            let id = crate::server::wire::parse_id(item_id);
            if item(conn, id)?.is_none() {
                return Err(ApiError::new(
                    0,
                    "Error in parameter itemdao or policy when checking Item policy.",
                ));
            }
            if !can_item(conn, Some(caller), id, WRITE)? {
                return Err(ApiError::policy("Invalid policy or itemid"));
            }
            id
        }
        (None, Some(folder_id)) => {
            let folder_id = crate::server::wire::parse_id(folder_id);
            if super::objects::folder(conn, folder_id)?.is_none() {
                return Err(ApiError::invalid(
                    "Parent folder corresponding to folderid doesn't exist",
                ));
            }
            if !can_folder(conn, Some(caller), folder_id, WRITE)? {
                return Err(ApiError::policy("Invalid policy or folderid"));
            }
            let name = p.get("itemname").unwrap_or(filename);
            let description = p.get("itemdescription").unwrap_or_default();
            let tx = conn.transaction()?;
            let id = create_item(&tx, folder_id, name, description, caller.user_id, None)?;
            tx.commit()?;
            id
        }
    };
    if let Some(checksum) = p.get("checksum").filter(|c| !c.is_empty()) {
        if deduplicate(conn, caller, item_id, filename, checksum)? {
            return Ok(json!({ "token": "" }).into());
        }
    }
    let token = UploadToken::new(caller.user_id, item_id);
    crate::private::file_options()
        .write(true)
        .create_new(true)
        .open(token.temp_path(&call.shared.store))
        .map_err(|err| {
            log::error!("cannot create an upload file: {err}");
            ApiError::new(-144, "Failed to create temporary upload file")
        })?;
    Ok(json!({ "token": token.to_string() }).into())
}

/// Step 2 of `generatetoken`: when a readable bitstream has this checksum, add a copy of it to
/// the item's latest revision (unless that revision already has `filename`). True if handled.
fn deduplicate(
    conn: &mut Connection,
    caller: Caller,
    item_id: i64,
    filename: &str,
    checksum: &str,
) -> Result<bool, ApiError> {
    let sql = format!(
        "SELECT b.mimetype, b.sizebytes FROM bitstream b JOIN itemrevision r ON r.itemrevision_id = b.itemrevision_id \
         JOIN item i ON i.item_id = r.item_id WHERE b.checksum = ?1 AND {} ORDER BY b.bitstream_id LIMIT 1",
        policy_sql("item", "i.item_id", Some(caller), READ)
    );
    let existing: Option<(String, i64)> = conn
        .query_row(&sql, [checksum], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((mimetype, sizebytes)) = existing else {
        return Ok(false);
    };
    let tx = conn.transaction()?;
    let revision = head_or_initial_revision(&tx, item_id, caller.user_id)?;
    let has_name: bool = tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM bitstream WHERE itemrevision_id = ?1 AND name = ?2)",
        params![revision, filename],
        |r| r.get(0),
    )?;
    if !has_name {
        let b = NewBitstream {
            name: filename,
            mimetype: &mimetype,
            sizebytes,
            checksum,
        };
        add_bitstream(&tx, item_id, revision, &b)?;
    }
    tx.commit()?;
    Ok(true)
}

/// `midas.upload.getoffset`: bytes received so far, `""` for an unknown token. Answered once
/// an earlier `perform` of the token has stopped writing (or after [`UPLOAD_STALL`]), so the
/// offset is where the next bytes will land. Runs without the database lock: a finishing
/// upload needs it to commit.
pub async fn get_offset(shared: &Shared, params: &Params) -> Result<Value, ApiError> {
    let Some(token) = UploadToken::parse(params.require("uploadtoken")?) else {
        return Ok(json!({ "offset": "" }));
    };
    let deadline = Instant::now() + UPLOAD_STALL;
    if !shared.upload_writers.wait_idle(&token, deadline).await {
        log::warn!("getoffset: an upload of this token is still being written; answering anyway");
    }
    let offset = tokio::fs::metadata(token.temp_path(&shared.store))
        .await
        .ok()
        .filter(|m| m.is_file())
        .map(|m| Value::from(m.len()))
        .unwrap_or_else(|| Value::String(String::new()));
    Ok(json!({ "offset": offset }))
}

/// Removes partial uploads nobody finished: a file in `DIR/uploads/` untouched for longer than
/// a login token lives (`--token-ttl`; the client that started it cannot go on without logging
/// in again, and its upload token would be all that is left of it), unless a `perform` is
/// writing it. Runs for the server's life, looking every half lifetime (at most every 5 min).
pub async fn remove_abandoned(shared: Arc<Shared>) {
    let lifetime = Duration::from_secs(shared.config.token_ttl.max(1));
    let every = (lifetime / 2).clamp(Duration::from_secs(1), Duration::from_secs(300));
    loop {
        tokio::time::sleep(every).await;
        let dir = shared.store.uploads_dir().to_owned();
        let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
            continue;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            let token = name.replacen('_', "/", 2);
            if shared.upload_writers.entries().contains_key(&token) {
                continue;
            }
            let idle = entry
                .metadata()
                .await
                .ok()
                .filter(|m| m.is_file())
                .and_then(|m| m.modified().ok())
                .and_then(|modified| modified.elapsed().ok());
            if idle.is_some_and(|idle| idle > lifetime) {
                match tokio::fs::remove_file(entry.path()).await {
                    Ok(()) => log::info!("removed the abandoned partial upload {name}"),
                    Err(err) => log::warn!("removing the abandoned upload {name}: {err}"),
                }
            }
        }
    }
}

/// Which revision a finished upload goes into.
#[derive(Debug, Clone, Copy)]
pub enum TargetRevision {
    /// A new revision N+1 holding only this file.
    New,
    /// The latest revision (revision 1 when there is none).
    Head,
    /// That revision (its itemrevision_id).
    Existing(i64),
}

/// A complete file waiting in `DIR/uploads/`, about to become a bitstream.
pub struct FinishedUpload<'a> {
    pub temp: &'a Path,
    pub item_id: i64,
    pub user_id: i64,
    pub filename: &'a str,
    pub changes: &'a str,
    pub revision: TargetRevision,
    /// The MD5 when it was computed while the data arrived; else it is read from the file.
    pub checksum: Option<String>,
}

/// MD5 (unless already known), size and mimetype of a file, read in big chunks.
fn digest_file(
    path: &Path,
    known_md5: Option<&str>,
) -> std::io::Result<(String, u64, &'static str)> {
    let mut file = std::fs::File::open(path)?;
    let mut head = vec![0u8; 8192];
    let mut filled = 0;
    while filled < head.len() {
        let n = file.read(&mut head[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    head.truncate(filled);
    if let Some(md5) = known_md5 {
        let total = file.metadata()?.len();
        return Ok((md5.to_owned(), total, sniff_mimetype(&head, total)));
    }
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((
        format!("{:x}", hasher.finalize()),
        total,
        sniff_mimetype(&head, total),
    ))
}

fn io_failure(err: std::io::Error) -> ApiError {
    log::error!("upload storage failed: {err}");
    ApiError::internal("Upload failed")
}

/// Move a finished temporary file into the assetstore (shared by checksum), then record the
/// bitstream in one transaction. Returns the new bitstream id.
pub fn commit_upload(store: &Store, upload: &FinishedUpload<'_>) -> Result<i64, ApiError> {
    let (checksum, size, mimetype) =
        digest_file(upload.temp, upload.checksum.as_deref()).map_err(io_failure)?;
    let asset = store.asset_path(&checksum);
    if asset.exists() {
        std::fs::remove_file(upload.temp).map_err(io_failure)?;
    } else {
        let dir = asset
            .parent()
            .ok_or_else(|| ApiError::internal("Upload failed"))?;
        crate::private::dir(dir).map_err(io_failure)?;
        std::fs::rename(upload.temp, &asset).map_err(io_failure)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_failure)?;
    }
    let mut conn = store.lock();
    let tx = conn.transaction()?;
    if item(&tx, upload.item_id)?.is_none() {
        return Err(ApiError::invalid("Unable to find item"));
    }
    let revision = match upload.revision {
        TargetRevision::New => add_revision(&tx, upload.item_id, upload.changes, upload.user_id)?.0,
        TargetRevision::Head => {
            let id = head_or_initial_revision(&tx, upload.item_id, upload.user_id)?;
            tx.execute(
                "UPDATE itemrevision SET changes = ?1 WHERE itemrevision_id = ?2",
                params![upload.changes, id],
            )?;
            id
        }
        TargetRevision::Existing(id) => id,
    };
    let size = i64::try_from(size).map_err(|_| ApiError::internal("Upload failed"))?;
    let b = NewBitstream {
        name: upload.filename,
        mimetype,
        sizebytes: size,
        checksum: &checksum,
    };
    let id = add_bitstream(&tx, upload.item_id, revision, &b)?;
    tx.commit()?;
    Ok(id)
}

/// How long an upload body may send nothing before the upload stops (as a web server's request
/// timeout stops a stalled PHP upload), and so how long `getoffset` or a second `perform`
/// waits for an earlier writer of the same token. The client's default stall timeout.
const UPLOAD_STALL: Duration = Duration::from_secs(30);

/// Keep at most this many MD5 states of unfinished uploads; beyond, they are all dropped (an
/// upload without one is hashed from its file at the commit, as Midas does).
const PARTIAL_HASHES_MAX: usize = 4096;

/// The MD5 state of each unfinished upload, with how many bytes it covers: a `perform` that
/// goes on from there continues it.
#[derive(Default)]
pub struct PartialHashes(Mutex<HashMap<String, (u64, Md5)>>);

impl PartialHashes {
    fn entries(&self) -> MutexGuard<'_, HashMap<String, (u64, Md5)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state of `token`'s upload if it covers exactly the `held` bytes of its file.
    fn take(&self, token: &UploadToken, held: u64) -> Option<Md5> {
        let (covered, md5) = self.entries().remove(&token.to_string())?;
        (covered == held).then_some(md5)
    }

    fn keep(&self, token: &UploadToken, held: u64, md5: Md5) {
        let mut entries = self.entries();
        if entries.len() >= PARTIAL_HASHES_MAX {
            entries.clear();
        }
        entries.insert(token.to_string(), (held, md5));
    }
}

/// The tokens whose `perform` is running or whose writing thread has not stopped yet. Each
/// entry's receiver learns, by its sender being dropped, that the [`WriterSlot`] is gone.
#[derive(Default)]
pub struct UploadWriters(Mutex<HashMap<String, watch::Receiver<()>>>);

impl UploadWriters {
    fn entries(&self) -> MutexGuard<'_, HashMap<String, watch::Receiver<()>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until no writer holds `token`; false if one still does at `deadline`.
    async fn wait_idle(&self, token: &UploadToken, deadline: Instant) -> bool {
        let key = token.to_string();
        loop {
            let Some(mut slot_gone) = self.entries().get(&key).cloned() else {
                return true;
            };
            // `changed` fails once the slot's sender is dropped: nothing is ever sent.
            if tokio::time::timeout_at(deadline, slot_gone.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    /// The token's slot, once any earlier writer has stopped; none if one still writes at
    /// `deadline`.
    async fn claim(
        shared: &Arc<Shared>,
        token: &UploadToken,
        deadline: Instant,
    ) -> Option<WriterSlot> {
        let key = token.to_string();
        loop {
            {
                let mut entries = shared.upload_writers.entries();
                if !entries.contains_key(&key) {
                    let (sender, receiver) = watch::channel(());
                    entries.insert(key.clone(), receiver);
                    return Some(WriterSlot {
                        shared: Arc::clone(shared),
                        key,
                        _announces_end: sender,
                    });
                }
            }
            if !shared.upload_writers.wait_idle(token, deadline).await {
                return None;
            }
        }
    }
}

/// The right to write to one token's file, held by its `perform` request and its writing
/// thread: released when both have ended, however they end (success, error, client gone,
/// panic).
struct WriterSlot {
    shared: Arc<Shared>,
    key: String,
    /// Dropped after the entry is removed, waking the waiters.
    _announces_end: watch::Sender<()>,
}

impl Drop for WriterSlot {
    fn drop(&mut self) {
        self.shared.upload_writers.entries().remove(&self.key);
    }
}

/// Chunks queued for the writing (or hashing) thread before the network side waits: a bound
/// on the memory one upload holds (hyper's chunks are at most a few hundred KiB). Enough to
/// ride out jitter; 32 measured no faster.
const SPOOL_QUEUE: usize = 8;

/// The writing thread starts writeback of every window of this many bytes as soon as it is
/// written, and waits for the window before, so the final fsync finds little left to do and
/// the page cache never holds a whole upload dirty.
const WRITEBACK_WINDOW: u64 = 8 << 20;

/// Why received bytes did not all reach the disk.
#[derive(Debug, thiserror::Error)]
enum SpoolError {
    /// A write failed; the file was cut back to the `kept` bytes it held before that chunk.
    #[error("write failed with {kept} bytes kept: {source}")]
    Write { kept: u64, source: std::io::Error },
    #[error("fsync failed: {0}")]
    Sync(std::io::Error),
    #[error("the writing thread stopped")]
    Stopped,
}

/// An upload's temporary file being appended to by one thread while, from byte 0, another
/// computes the MD5: the network, the disk and the hash proceed side by side.
struct Spool {
    to_writer: mpsc::Sender<Bytes>,
    to_hasher: Option<mpsc::Sender<Bytes>>,
    writer: Transfer<Result<(), SpoolError>>,
    hasher: Option<Transfer<Md5>>,
}

impl Spool {
    /// `held` is the file's current length, and `hash` the MD5 state of those bytes if known.
    /// The writing thread keeps the token's `slot` until it has stopped, even if the request
    /// is dropped before.
    fn start(
        file: std::fs::File,
        held: u64,
        hash: Option<Md5>,
        slot: Arc<WriterSlot>,
    ) -> std::io::Result<Spool> {
        let (to_writer, chunks) = mpsc::channel(SPOOL_QUEUE);
        let writer = spawn_transfer(move || {
            let written = write_chunks(file, held, chunks);
            drop(slot);
            written
        })?;
        let (to_hasher, hasher) = match hash {
            Some(md5) => {
                let (tx, chunks) = mpsc::channel(SPOOL_QUEUE);
                (
                    Some(tx),
                    Some(spawn_transfer(move || hash_chunks(md5, chunks))?),
                )
            }
            None => (None, None),
        };
        Ok(Spool {
            to_writer,
            to_hasher,
            writer,
            hasher,
        })
    }

    /// Queue one chunk (shared, not copied); false once the writer has stopped on an error.
    async fn push(&mut self, chunk: Bytes) -> bool {
        if let Some(to_hasher) = &self.to_hasher {
            // The hasher only stops when its queue closes, which this side does.
            let _ = to_hasher.send(chunk.clone()).await;
        }
        self.to_writer.send(chunk).await.is_ok()
    }

    /// Wait until everything queued is written and fsynced; then the MD5 state of all of it
    /// comes from the returned task, when hashing.
    async fn finish(self) -> Result<Option<Transfer<Md5>>, SpoolError> {
        drop(self.to_writer);
        drop(self.to_hasher);
        self.writer.await.map_err(|_| SpoolError::Stopped)??;
        Ok(self.hasher)
    }
}

fn write_chunks(
    mut file: std::fs::File,
    held: u64,
    mut chunks: mpsc::Receiver<Bytes>,
) -> Result<(), SpoolError> {
    let mut written = held;
    let mut writeback_from = held;
    let mut previous_window = None;
    while let Some(chunk) = chunks.blocking_recv() {
        if let Err(source) = file.write_all(&chunk) {
            // Drop whatever part of this chunk may have landed: the file stays resumable.
            let _ = file.set_len(written);
            let _ = file.sync_all();
            return Err(SpoolError::Write {
                kept: written,
                source,
            });
        }
        written += chunk.len() as u64;
        if written - writeback_from >= WRITEBACK_WINDOW {
            let window = (writeback_from, written);
            writeback(&file, window, previous_window);
            previous_window = Some(window);
            writeback_from = written;
        }
    }
    file.sync_all().map_err(SpoolError::Sync)
}

/// Start writing `window` (a byte range) to disk and wait until `previous` is written. Only
/// a head start for the final fsync, which reports any error, so failures here are ignored.
#[cfg(target_os = "linux")]
fn writeback(file: &std::fs::File, window: (u64, u64), previous: Option<(u64, u64)>) {
    use std::os::fd::AsRawFd;
    let range = |(from, to): (u64, u64)| {
        Some((
            libc::off64_t::try_from(from).ok()?,
            libc::off64_t::try_from(to - from).ok()?,
        ))
    };
    if let Some((start, len)) = range(window) {
        // SAFETY: a plain syscall on an open descriptor.
        unsafe { libc::sync_file_range(file.as_raw_fd(), start, len, libc::SYNC_FILE_RANGE_WRITE) };
    }
    if let Some((start, len)) = previous.and_then(range) {
        let wait = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        // SAFETY: as above.
        unsafe { libc::sync_file_range(file.as_raw_fd(), start, len, wait) };
    }
}

/// Without sync_file_range(2), the final fsync does all the work.
#[cfg(not(target_os = "linux"))]
fn writeback(_file: &std::fs::File, _window: (u64, u64), _previous: Option<(u64, u64)>) {}

fn hash_chunks(mut md5: Md5, mut chunks: mpsc::Receiver<Bytes>) -> Md5 {
    while let Some(chunk) = chunks.blocking_recv() {
        md5.update(&chunk);
    }
    md5
}

/// `midas.upload.perform` in stream mode: append the raw body until `length` bytes are held.
pub async fn perform(
    shared: Arc<Shared>,
    params: Params,
    verb: Method,
    body: Body,
) -> Result<Value, ApiError> {
    if verb != Method::PUT && verb != Method::POST {
        return Err(ApiError::new(-153, "POST or PUT method required"));
    }
    let raw_token = params.require("uploadtoken")?.to_owned();
    let filename = params.require("filename")?.to_owned();
    let length: u64 = params
        .require("length")?
        .trim()
        .parse()
        .map_err(|_| ApiError::invalid("Invalid length"))?;
    match params.get("mode") {
        None | Some("stream") => {}
        Some("multipart") => return Err(ApiError::invalid("Parameter file is not defined")),
        Some(_) => return Err(ApiError::invalid("Invalid upload mode")),
    }
    let invalid_token = || ApiError::new(-141, format!("Invalid upload token {raw_token}"));
    let token = UploadToken::parse(&raw_token).ok_or_else(invalid_token)?;
    let revision_param = params.get("revision").map(str::to_owned);
    let check_shared = Arc::clone(&shared);
    let check_token = token.clone();
    let revision = tokio::task::spawn_blocking(move || -> Result<TargetRevision, ApiError> {
        let conn = check_shared.store.lock();
        let user: Option<bool> = conn
            .query_row(
                "SELECT admin FROM user WHERE user_id = ?1",
                [check_token.user_id],
                |r| r.get(0),
            )
            .optional()?;
        let admin = user.ok_or_else(|| ApiError::invalid("Invalid user id from upload token"))?;
        if item(&conn, check_token.item_id)?.is_none() {
            return Err(ApiError::invalid("Unable to find item"));
        }
        let caller = Caller {
            user_id: check_token.user_id,
            admin,
        };
        if !can_item(&conn, Some(caller), check_token.item_id, WRITE)? {
            return Err(ApiError::policy("Permission error"));
        }
        match revision_param.as_deref() {
            None => Ok(TargetRevision::New),
            Some(r) if r.eq_ignore_ascii_case("head") => Ok(TargetRevision::Head),
            Some(r) => {
                let number = r.trim().parse::<i64>().unwrap_or(-1);
                revision_by_number(&conn, check_token.item_id, number)?
                    .map(TargetRevision::Existing)
                    .ok_or_else(|| ApiError::invalid("Unable to find revision"))
            }
        }
    })
    .await
    .map_err(|_| ApiError::internal("Upload failed"))??;

    let temp = token.temp_path(&shared.store);
    let missing_or_failed = |err: std::io::Error| match err.kind() {
        std::io::ErrorKind::NotFound => invalid_token(),
        _ => io_failure(err),
    };
    let short = |have: u64| {
        ApiError::new(
            -105,
            format!("Failed to upload file - {have}/{length} bytes transferred"),
        )
    };
    let deadline = Instant::now() + UPLOAD_STALL;
    let Some(slot) = UploadWriters::claim(&shared, &token, deadline).await else {
        // Another request still writes: refuse as Midas refuses a body that ended early, which
        // tells a client to ask `getoffset` (that waits for the writer) and resume.
        let held = tokio::fs::metadata(&temp)
            .await
            .map_err(missing_or_failed)?;
        return Err(short(held.len()));
    };
    // Held by the writing thread and by this request up to the commit that moves the file.
    let slot = Arc::new(slot);

    let file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(&temp)
        .await
        .map_err(missing_or_failed)?;
    let mut have = file.metadata().await.map_err(io_failure)?.len();
    if have > length {
        // A `length` below what already arrived cannot describe this file: keep the data.
        return Err(short(have));
    }
    // A resume whose body is longer than what the file lacks started before the server's
    // offset: it asked getoffset before an earlier broken request (not started yet then) wrote
    // what it had received. Midas would append it and keep a corrupt file; this server refuses
    // it before writing, with the answer that makes a client ask getoffset again. (So, unlike
    // Midas, it does not ignore trailing bytes after a resume; it does on a fresh upload.)
    let sent = axum::body::HttpBody::size_hint(&body).exact();
    if have > 0 && sent.is_some_and(|sent| have.saturating_add(sent) > length) {
        return Err(short(have));
    }
    // The MD5 is computed on the fly from byte 0, or from where an earlier part left it.
    let hash = if have == 0 {
        Some(Md5::new())
    } else {
        shared.partial_hashes.take(&token, have)
    };
    let mut spool =
        Spool::start(file.into_std().await, have, hash, Arc::clone(&slot)).map_err(io_failure)?;
    let mut stream = body.into_data_stream();
    while have < length {
        let chunk = match tokio::time::timeout(UPLOAD_STALL, stream.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            // The client went away, the body ended or stalled: keep what arrived, to resume.
            Ok(Some(Err(_)) | None) | Err(_) => break,
        };
        let wanted = usize::try_from(length - have)
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        if !spool.push(chunk.slice(..wanted)).await {
            break;
        }
        have += wanted as u64;
        shared.stats.add_uploaded(wanted as u64);
    }
    let hasher = match spool.finish().await {
        Ok(hasher) => hasher,
        Err(SpoolError::Write { kept, source }) => {
            log::warn!("upload write failed: {source}");
            return Err(short(kept));
        }
        Err(SpoolError::Sync(err)) => return Err(io_failure(err)),
        Err(SpoolError::Stopped) => return Err(ApiError::internal("Upload failed")),
    };
    let md5 = match hasher {
        Some(hasher) => Some(
            hasher
                .await
                .map_err(|_| ApiError::internal("Upload failed"))?,
        ),
        None => None,
    };
    if have < length {
        if let Some(md5) = md5 {
            shared.partial_hashes.keep(&token, have, md5);
        }
        return Err(short(have));
    }
    let checksum = md5.map(|md5| format!("{:x}", md5.finalize()));
    let changes = params.get("changes").unwrap_or_default().to_owned();
    let commit_shared = Arc::clone(&shared);
    tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        // The commit runs to its end even if the request is dropped: so does the slot.
        let _slot = slot;
        let upload = FinishedUpload {
            temp: &temp,
            item_id: token.item_id,
            user_id: token.user_id,
            filename: &filename,
            changes: &changes,
            revision,
            checksum,
        };
        commit_upload(&commit_shared.store, &upload)?;
        let conn = commit_shared.store.lock();
        item(&conn, token.item_id)?.ok_or_else(|| ApiError::invalid("Unable to find item"))
    })
    .await
    .map_err(|_| ApiError::internal("Upload failed"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::create_user;
    use crate::server::Config;
    use std::sync::atomic::Ordering;

    /// A server state on a fresh store, with an item its user may upload into and a token.
    fn store_with_token(dir: &Path) -> (Arc<Shared>, UploadToken) {
        let store = Store::open(dir).expect("store");
        let token = {
            let conn = store.lock();
            let user = create_user(&conn, "u@example.com", "pw", "u", "v", false).expect("user");
            let root: i64 = conn
                .query_row(
                    "SELECT folder_id FROM user WHERE user_id = ?1",
                    [user.user_id],
                    |r| r.get(0),
                )
                .expect("root folder");
            let item_id =
                create_item(&conn, root, "big.bin", "", user.user_id, None).expect("item");
            UploadToken::new(user.user_id, item_id)
        };
        std::fs::File::create(token.temp_path(&store)).expect("upload file");
        let shared = Shared::new(
            store,
            Config {
                token_ttl: 3600,
                title: String::new(),
                latency: Duration::ZERO,
            },
        );
        (Arc::new(shared), token)
    }

    fn token_params(token: &UploadToken, length: usize) -> Params {
        Params::from_query(Some(&format!(
            "uploadtoken={token}&filename=big.bin&length={length}&revision=head"
        )))
    }

    async fn offset_of(shared: &Shared, token: &UploadToken) -> Value {
        get_offset(shared, &token_params(token, 0))
            .await
            .expect("getoffset")["offset"]
            .clone()
    }

    /// Bytes 0.. of an upload of 40 MiB: the first 32 MiB are sent in big chunks, the request
    /// is dropped as hyper drops it when its client goes away, while the writing thread may
    /// still hold queued chunks. Returns the content and how much of it was sent.
    async fn upload_then_drop_the_request(
        shared: &Arc<Shared>,
        token: &UploadToken,
    ) -> (Bytes, usize) {
        const CHUNK: usize = 4 << 20;
        let content: Bytes = (0..10 * CHUNK)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        let sent = 8 * CHUNK;
        let (to_body, chunks) = mpsc::channel::<Bytes>(1);
        let body = Body::from_stream(futures_util::stream::unfold(chunks, |mut chunks| async {
            let chunk = chunks.recv().await?;
            Some((Ok::<_, std::io::Error>(chunk), chunks))
        }));
        let request = tokio::spawn(perform(
            Arc::clone(shared),
            token_params(token, content.len()),
            Method::PUT,
            body,
        ));
        for start in (0..sent).step_by(CHUNK) {
            to_body
                .send(content.slice(start..start + CHUNK))
                .await
                .expect("perform reads");
        }
        for _ in 0..1000 {
            if shared.stats.bytes_uploaded.load(Ordering::Relaxed) == sent as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            shared.stats.bytes_uploaded.load(Ordering::Relaxed),
            sent as u64
        );
        request.abort();
        assert!(request.await.expect_err("aborted").is_cancelled());
        (content, sent)
    }

    /// The stored bitstream's checksum (computed from the stored file when resumed).
    fn stored_checksum(shared: &Shared, token: &UploadToken) -> String {
        shared
            .store
            .lock()
            .query_row(
                "SELECT b.checksum FROM bitstream b JOIN itemrevision r ON r.itemrevision_id = b.itemrevision_id WHERE r.item_id = ?1",
                [token.item_id],
                |r| r.get(0),
            )
            .expect("one bitstream")
    }

    async fn send_the_rest(
        shared: &Arc<Shared>,
        token: &UploadToken,
        content: &Bytes,
        from: usize,
    ) {
        let rest = Body::from(content.slice(from..));
        let done = perform(
            Arc::clone(shared),
            token_params(token, content.len()),
            Method::PUT,
            rest,
        )
        .await;
        assert!(done.is_ok(), "{done:?}");
        assert_eq!(
            stored_checksum(shared, token),
            format!("{:x}", Md5::digest(content))
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn getoffset_answers_the_size_the_dropped_request_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (shared, token) = store_with_token(dir.path());
        let (content, sent) = upload_then_drop_the_request(&shared, &token).await;
        assert_eq!(offset_of(&shared, &token).await, json!(sent));
        send_the_rest(&shared, &token, &content, sent).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_resumed_perform_waits_for_the_dropped_one_to_finish_writing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (shared, token) = store_with_token(dir.path());
        let (content, sent) = upload_then_drop_the_request(&shared, &token).await;
        send_the_rest(&shared, &token, &content, sent).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn getoffset_waits_for_the_writer_and_not_without_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (shared, token) = store_with_token(dir.path());
        let generous = Duration::from_secs(10);
        let idle = tokio::time::timeout(generous, offset_of(&shared, &token)).await;
        assert_eq!(idle.expect("answered without a writer"), json!(0));

        let deadline = Instant::now() + UPLOAD_STALL;
        let slot = UploadWriters::claim(&shared, &token, deadline)
            .await
            .expect("slot");
        let asked = tokio::spawn({
            let shared = Arc::clone(&shared);
            let token = token.clone();
            async move { offset_of(&shared, &token).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The writer appends after the question was asked, then stops.
        std::fs::write(token.temp_path(&shared.store), b"written late").expect("write");
        drop(slot);
        assert_eq!(asked.await.expect("getoffset task"), json!(12));
    }

    #[test]
    fn tokens_are_validated_strictly() {
        let secret = "a".repeat(64);
        let ok = UploadToken::parse(&format!("1/22/{secret}")).expect("valid token");
        assert_eq!((ok.user_id, ok.item_id), (1, 22));
        assert_eq!(ok.to_string(), format!("1/22/{secret}"));
        for bad in [
            format!("../1/{secret}"),
            format!("1/2/{}", "a".repeat(63)),
            format!("1/2/{}/x", secret),
            format!("1/2/{}", "../".repeat(21) + "a"),
            format!("-1/2/{secret}"),
            format!("1/ 2/{secret}"),
            String::new(),
        ] {
            assert!(UploadToken::parse(&bad).is_none(), "{bad} accepted");
        }
    }

    /// Feed `chunks` to a writing thread appending to `file`, as an upload does.
    fn write_all_chunks(
        file: std::fs::File,
        held: u64,
        chunks: Vec<Bytes>,
    ) -> Result<(), SpoolError> {
        let (tx, rx) = mpsc::channel(SPOOL_QUEUE);
        let writer = std::thread::spawn(move || write_chunks(file, held, rx));
        for chunk in chunks {
            tx.blocking_send(chunk).expect("writer alive");
        }
        drop(tx);
        writer.join().expect("writer thread")
    }

    #[test]
    fn chunks_are_appended_across_writeback_windows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("upload");
        std::fs::write(&path, b"held").expect("write");
        let chunk: Bytes = (0..=255u8)
            .cycle()
            .take(3 << 20)
            .collect::<Vec<u8>>()
            .into();
        let chunks = vec![chunk.clone(); 7];
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        write_all_chunks(file, 4, chunks).expect("written");
        let stored = std::fs::read(&path).expect("read");
        assert_eq!(stored.len(), 4 + 7 * chunk.len());
        assert_eq!(&stored[..4], b"held");
        assert!(stored[4..].chunks(chunk.len()).all(|c| c == chunk));
    }

    #[test]
    fn a_failed_write_keeps_the_bytes_held_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("upload");
        std::fs::write(&path, b"held").expect("write");
        let read_only = std::fs::File::open(&path).expect("open");
        match write_all_chunks(read_only, 4, vec![Bytes::from_static(b"more")]) {
            Err(SpoolError::Write { kept, .. }) => assert_eq!(kept, 4),
            other => panic!("expected a write failure, got {other:?}"),
        }
        assert_eq!(std::fs::read(&path).expect("read"), b"held");
    }

    #[test]
    fn the_hash_covers_every_chunk_in_order() {
        let (tx, rx) = mpsc::channel(SPOOL_QUEUE);
        let hasher = std::thread::spawn(move || hash_chunks(Md5::new(), rx));
        for part in [
            &b"The quick brown fox "[..],
            b"jumps over ",
            b"the lazy dog",
        ] {
            tx.blocking_send(Bytes::copy_from_slice(part))
                .expect("hasher alive");
        }
        drop(tx);
        assert_eq!(
            format!("{:x}", hasher.join().expect("hasher thread").finalize()),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
    }

    #[test]
    fn mimetypes_are_sniffed() {
        assert_eq!(sniff_mimetype(b"", 0), "application/x-empty");
        assert_eq!(sniff_mimetype(b"hello\n", 6), "text/plain");
        assert_eq!(sniff_mimetype("caf\u{e9}".as_bytes(), 5), "text/plain");
        assert_eq!(sniff_mimetype(&[0, 1, 2, 3], 4), "application/octet-stream");
        assert_eq!(sniff_mimetype(b"\x89PNG\r\n\x1a\nrest", 12), "image/png");
    }
}
