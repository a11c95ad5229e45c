//! The `/download/` controller: `?bitstream=ID&offset=N&name=X`, `?items=ID[,rev]`,
//! `?folders=ID`, each with an optional `authToken`; as in Midas, every parameter may also come
//! in a form-encoded POST body (midasfs sends its token there). A single file goes from the page cache to
//! the socket with `sendfile(2)` (see conn.rs); ZIPs are produced on a thread of their own
//! while they are sent. The database is never locked while bytes flow.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::stream;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::mpsc;

use super::api::resolve_token;
use super::conn::{spawn_transfer, ConnHandle, FileBody, FILE_BODY_MARKER};
use super::store::{can_folder, can_item, policy_sql, unix_now, Caller, Guarded, Unsynced, READ};
use super::wire::{error_page, parse_id, ApiError, Params};
use super::zipstream::ZipStreamWriter;
use super::Shared;

const CHUNK: usize = 256 * 1024;

/// Why a download cannot be served, as the HTML error page Midas would show.
struct Failure(StatusCode, &'static str);

impl From<ApiError> for Failure {
    fn from(_: ApiError) -> Failure {
        Failure(StatusCode::INTERNAL_SERVER_ERROR, "Internal error")
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(err: rusqlite::Error) -> Failure {
        Failure::from(ApiError::from(err))
    }
}

/// One stored file to send.
struct FileToSend {
    path: PathBuf,
    name: String,
    mimetype: String,
    size: u64,
}

/// One entry of a ZIP to build.
struct ZipEntry {
    name: String,
    /// The stored file; none for the empty entry of an item without a revision.
    path: Option<PathBuf>,
    size: u64,
}

/// What the request resolves to, decided with the database locked.
enum Plan {
    File {
        file: FileToSend,
        offset: u64,
    },
    Zip {
        name: String,
        entries: Vec<ZipEntry>,
    },
}

pub async fn handle(
    state: State<Arc<Shared>>,
    conn: ConnectInfo<ConnHandle>,
    request: Request,
) -> Response {
    match super::read_params(request).await {
        Ok((params, method)) => serve(state, conn, method, params).await,
        Err(refused) => refused,
    }
}

/// The path forms `/download/bitstream/<id>/…`, `/download/item/<id>/…`, `/download/folder/<id>/…`.
pub async fn handle_path(
    state: State<Arc<Shared>>,
    conn: ConnectInfo<ConnHandle>,
    Path(segments): Path<Vec<(String, String)>>,
    request: Request,
) -> Response {
    let (mut params, method) = match super::read_params(request).await {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    let value = |key: &str| {
        segments
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let key = match value("kind").as_str() {
        "bitstream" => "bitstream",
        "item" => "items",
        "folder" => "folders",
        _ => return error_page(StatusCode::NOT_FOUND, "Page not found"),
    };
    params.merge_body([(key.to_owned(), value("id"))]);
    serve(state, conn, method, params).await
}

/// A planned download whose stored file is already open.
enum Ready {
    File {
        file: FileToSend,
        handle: std::fs::File,
        offset: u64,
    },
    Zip {
        name: String,
        entries: Vec<ZipEntry>,
    },
}

async fn serve(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    method: Method,
    params: Params,
) -> Response {
    shared.stats.count_download();
    let plan_shared = Arc::clone(&shared);
    let planned = tokio::task::spawn_blocking(move || {
        let conn = plan_shared.store.lock();
        let planned = {
            let _counts_only = Unsynced::new(&conn)?;
            plan(&plan_shared, &conn, &params)?
        };
        drop(conn);
        Ok(match planned {
            Plan::File { file, offset } => {
                let handle = std::fs::File::open(&file.path).map_err(|err| {
                    log::error!("stored file missing for a bitstream: {err}");
                    Failure(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "The stored file is missing",
                    )
                })?;
                Ready::File {
                    file,
                    handle,
                    offset,
                }
            }
            Plan::Zip { name, entries } => Ready::Zip { name, entries },
        })
    })
    .await;
    match planned {
        Ok(Ok(Ready::File {
            file,
            handle,
            offset,
        })) => send_file(&shared, &conn, &method, file, handle, offset),
        Ok(Ok(Ready::Zip { name, entries })) => send_zip(&shared, name, entries),
        Ok(Err(Failure(status, message))) => error_page(status, message),
        Err(_) => error_page(StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
    }
}

fn plan(shared: &Shared, conn: &Connection, params: &Params) -> Result<Plan, Failure> {
    let caller = match params.get("authToken") {
        None => None,
        Some(token) => Some(
            resolve_token(conn, token)?
                .ok_or(Failure(StatusCode::INTERNAL_SERVER_ERROR, "Invalid token"))?,
        ),
    };
    if let Some(id) = params.get("bitstream") {
        let mut file = bitstream_file(shared, conn, caller, parse_id(id))?;
        if let Some(name) = params.get("name").filter(|n| !n.is_empty()) {
            file.name = name.to_owned();
        }
        // Non-numeric or out-of-range offsets are ignored, as in Midas.
        let offset = params
            .get("offset")
            .and_then(|o| o.trim().parse::<u64>().ok())
            .filter(|o| *o <= file.size)
            .unwrap_or(0);
        // Real Midas counts offset reads too (captures 59–61).
        count_item_download(conn, parse_id(id))?;
        return Ok(Plan::File { file, offset });
    }
    if let Some(spec) = params.get("items") {
        return plan_item(shared, conn, caller, spec);
    }
    if let Some(spec) = params.get("folders") {
        return plan_folder(shared, conn, caller, spec);
    }
    Err(Failure(StatusCode::NOT_FOUND, "Nothing to download"))
}

fn bitstream_file(
    shared: &Shared,
    conn: &Connection,
    caller: Option<Caller>,
    id: i64,
) -> Result<FileToSend, Failure> {
    let row: Option<(i64, String, String, i64, String)> = conn
        .prepare_cached(
            "SELECT r.item_id, b.name, b.mimetype, b.sizebytes, b.checksum FROM bitstream b \
             JOIN itemrevision r ON r.itemrevision_id = b.itemrevision_id WHERE b.bitstream_id = ?1",
        )?
        .query_row(
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let (item_id, name, mimetype, size, checksum) = row.ok_or(Failure(
        StatusCode::NOT_FOUND,
        "The bitstream does not exist",
    ))?;
    if !can_item(conn, caller, item_id, READ)? {
        return Err(Failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Permission denied",
        ));
    }
    if !super::store::is_md5_hex(&checksum) {
        return Err(Failure(
            StatusCode::NOT_FOUND,
            "The bitstream has no stored content",
        ));
    }
    Ok(FileToSend {
        path: shared.store.asset_path(&checksum),
        name,
        mimetype,
        size: u64::try_from(size).unwrap_or(0),
    })
}

fn count_item_download(conn: &Connection, bitstream_id: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE item SET download = download + 1 WHERE item_id = \
         (SELECT r.item_id FROM bitstream b JOIN itemrevision r ON r.itemrevision_id = b.itemrevision_id WHERE b.bitstream_id = ?1)",
    )?
    .execute([bitstream_id])
    .map(|_| ())
}

/// The bitstreams (id, name, checksum, size) of one revision, in insertion order.
fn revision_bitstreams(
    conn: &Connection,
    revision_id: i64,
) -> rusqlite::Result<Vec<(i64, String, String, u64)>> {
    conn.prepare("SELECT bitstream_id, name, checksum, sizebytes FROM bitstream WHERE itemrevision_id = ?1 ORDER BY bitstream_id")?
        .query_map([revision_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, i64>(3)?.max(0) as u64)))?
        .collect()
}

fn latest_revision(conn: &Connection, item_id: i64) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT itemrevision_id FROM itemrevision WHERE item_id = ?1 ORDER BY revision DESC LIMIT 1",
        [item_id],
        |r| r.get(0),
    )
    .optional()
}

fn first_chars(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn plan_item(
    shared: &Shared,
    conn: &Connection,
    caller: Option<Caller>,
    spec: &str,
) -> Result<Plan, Failure> {
    let mut parts = spec.split(',');
    let item_id = parse_id(parts.next().unwrap_or_default());
    let name: Option<String> = conn
        .query_row("SELECT name FROM item WHERE item_id = ?1", [item_id], |r| {
            r.get(0)
        })
        .optional()?;
    let name = name.ok_or(Failure(StatusCode::NOT_FOUND, "The item does not exist"))?;
    if !can_item(conn, caller, item_id, READ)? {
        return Err(Failure(StatusCode::FORBIDDEN, "Read permission required"));
    }
    let revision = match parts.next() {
        Some(number) => conn
            .query_row(
                "SELECT itemrevision_id FROM itemrevision WHERE item_id = ?1 AND revision = ?2",
                params![item_id, parse_id(number)],
                |r| r.get(0),
            )
            .optional()?,
        None => latest_revision(conn, item_id)?,
    };
    let bitstreams = match revision {
        Some(r) => revision_bitstreams(conn, r)?,
        None => Vec::new(),
    };
    conn.execute(
        "UPDATE item SET download = download + 1 WHERE item_id = ?1",
        [item_id],
    )?;
    if let [(id, _, _, _)] = bitstreams[..] {
        let file = bitstream_file(shared, conn, caller, id)?;
        return Ok(Plan::File { file, offset: 0 });
    }
    let entries = bitstreams
        .into_iter()
        .filter(|(_, _, checksum, _)| super::store::is_md5_hex(checksum))
        .map(|(_, bname, checksum, size)| ZipEntry {
            name: bname,
            path: Some(shared.store.asset_path(&checksum)),
            size,
        })
        .collect();
    Ok(Plan::Zip {
        name: format!("{}.zip", first_chars(&name, 50)),
        entries,
    })
}

/// `FirstnameLastname` of a user root, or the community name, owning a folder.
fn owner_name(conn: &Connection, folder_id: i64) -> rusqlite::Result<String> {
    let root = super::store::root_of(conn, folder_id)?;
    let user: Option<String> = conn
        .query_row(
            "SELECT firstname || lastname FROM user WHERE folder_id = ?1",
            [root],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(u) = user {
        return Ok(u);
    }
    Ok(conn
        .query_row(
            "SELECT name FROM community WHERE folder_id = ?1",
            [root],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or_default())
}

/// Readable content under a folder, as ZIP entries below `prefix`.
fn collect_folder(
    shared: &Shared,
    conn: &Connection,
    caller: Option<Caller>,
    folder_id: i64,
    prefix: &str,
    entries: &mut Vec<ZipEntry>,
    depth: usize,
) -> Result<(), Failure> {
    if depth > 256 {
        return Ok(());
    }
    let item_sql = format!(
        "SELECT i.item_id, i.name FROM item i JOIN item2folder l ON l.item_id = i.item_id WHERE l.folder_id = ?1 AND {} ORDER BY i.name, i.item_id",
        policy_sql(Guarded::Item, "i.item_id", caller, READ)
    );
    let items: Vec<(i64, String)> = conn
        .prepare(&item_sql)?
        .query_map([folder_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (item_id, item_name) in items {
        let Some(revision) = latest_revision(conn, item_id)? else {
            // Midas's FolderModel::zipStream adds an empty entry for an item without a revision.
            entries.push(ZipEntry {
                name: format!("{prefix}{item_name}"),
                path: None,
                size: 0,
            });
            continue;
        };
        let bitstreams = revision_bitstreams(conn, revision)?;
        let single = bitstreams.len() == 1;
        for (_, name, checksum, size) in bitstreams {
            if !super::store::is_md5_hex(&checksum) {
                continue;
            }
            // A lone file named like its item sits in the folder; otherwise the item is a directory.
            let entry_name = if single && name == item_name {
                format!("{prefix}{name}")
            } else {
                format!("{prefix}{item_name}/{name}")
            };
            entries.push(ZipEntry {
                name: entry_name,
                path: Some(shared.store.asset_path(&checksum)),
                size,
            });
        }
        // As in Midas, every item of the archive that has a revision counts as downloaded.
        conn.execute(
            "UPDATE item SET download = download + 1 WHERE item_id = ?1",
            [item_id],
        )?;
    }
    let folder_sql = format!(
        "SELECT f.folder_id, f.name FROM folder f WHERE f.parent_id = ?1 AND {} ORDER BY f.name, f.folder_id",
        policy_sql(Guarded::Folder, "f.folder_id", caller, READ)
    );
    let folders: Vec<(i64, String)> = conn
        .prepare(&folder_sql)?
        .query_map([folder_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, name) in folders {
        collect_folder(
            shared,
            conn,
            caller,
            id,
            &format!("{prefix}{name}/"),
            entries,
            depth + 1,
        )?;
    }
    Ok(())
}

fn plan_folder(
    shared: &Shared,
    conn: &Connection,
    caller: Option<Caller>,
    spec: &str,
) -> Result<Plan, Failure> {
    let folder_id = parse_id(spec.split(',').next().unwrap_or_default());
    let name: Option<String> = conn
        .query_row(
            "SELECT name FROM folder WHERE folder_id = ?1",
            [folder_id],
            |r| r.get(0),
        )
        .optional()?;
    let name = name.ok_or(Failure(StatusCode::NOT_FOUND, "The folder does not exist"))?;
    if !can_folder(conn, caller, folder_id, READ)? {
        return Err(Failure(StatusCode::FORBIDDEN, "Read permission required"));
    }
    let mut entries = Vec::new();
    collect_folder(
        shared,
        conn,
        caller,
        folder_id,
        &format!("{name}/"),
        &mut entries,
        0,
    )?;
    Ok(Plan::Zip {
        name: format!(
            "{}-{}.zip",
            owner_name(conn, folder_id)?,
            first_chars(&name, 50)
        ),
        entries,
    })
}

/// A header value from raw UTF-8 bytes (as Midas sends them); control characters, which no
/// header may carry, become `_`.
fn raw_header(value: &str) -> HeaderValue {
    let cleaned: String = value
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    HeaderValue::from_bytes(cleaned.as_bytes())
        .unwrap_or_else(|_| HeaderValue::from_static("download"))
}

fn attachment(name: &str) -> HeaderValue {
    raw_header(&format!("attachment; filename=\"{name}\""))
}

fn http_date(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = super::store::civil_from_days(days);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1).clamp(0, 11) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn send_file(
    shared: &Arc<Shared>,
    conn: &ConnHandle,
    method: &Method,
    file: FileToSend,
    handle: std::fs::File,
    offset: u64,
) -> Response {
    let remaining = file.size - offset;
    // The Midas quirk: an offset download announces the full size; see conn.rs.
    let announced = if offset > 0 { file.size } else { remaining };
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    if method == Method::HEAD {
        // hyper sends no body for HEAD and keeps this length as it is.
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(announced));
    } else {
        headers.insert(FILE_BODY_MARKER, HeaderValue::from(announced));
        let stats_shared = Arc::clone(shared);
        conn.send_after_head(FileBody {
            file: handle,
            offset,
            len: remaining,
            on_sent: Box::new(move |n| stats_shared.stats.add_downloaded(n)),
        });
    }
    let mimetype = if file.mimetype.is_empty() {
        "application/octet-stream"
    } else {
        &file.mimetype
    };
    // PHP adds its default charset to text types.
    let content_type = if mimetype.starts_with("text/") {
        format!("{mimetype};charset=UTF-8")
    } else {
        mimetype.to_owned()
    };
    headers.insert(header::CONTENT_TYPE, raw_header(&content_type));
    headers.insert(header::CONTENT_DISPOSITION, attachment(&file.name));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::EXPIRES, HeaderValue::from_static("0"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("must-revalidate, post-check=0, pre-check=0"),
    );
    headers.insert(header::LAST_MODIFIED, raw_header(&http_date(unix_now())));
    if offset > 0 {
        // The body is shorter than announced: the connection cannot carry another response.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A `Write` that hands 256 KiB chunks to the response body; fails once the client is gone.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

fn send_zip(shared: &Arc<Shared>, name: String, entries: Vec<ZipEntry>) -> Response {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    let error_tx = tx.clone();
    let started = spawn_transfer(move || {
        let writer = ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let mut zip = ZipStreamWriter::new(writer, unix_now());
        let result = entries
            .iter()
            .try_for_each(|e| match &e.path {
                Some(path) => zip.add_file(&e.name, std::fs::File::open(path)?, e.size),
                None => zip.add_file(&e.name, io::empty(), 0),
            })
            .and_then(|()| zip.finish().map(|_| ()));
        if let Err(err) = result {
            if err.kind() != io::ErrorKind::BrokenPipe {
                log::error!("zip download failed: {err}");
                // Abort the body so the client sees a broken transfer, not a short valid file.
                let _ = error_tx.blocking_send(Err(err));
            }
        }
    });
    if let Err(err) = started {
        log::error!("cannot start a zip download: {err}");
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, "Internal error");
    }
    let stats_shared = Arc::clone(shared);
    let body_stream = stream::unfold(rx, move |mut rx| {
        let stats_shared = Arc::clone(&stats_shared);
        async move {
            let item = rx.recv().await?;
            if let Ok(chunk) = &item {
                stats_shared.stats.add_downloaded(chunk.len() as u64);
            }
            Some((item, rx))
        }
    });
    let mut response = Response::new(Body::from_stream(body_stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-zip"),
    );
    headers.insert(header::CONTENT_DISPOSITION, attachment(&name));
    headers.insert(
        "content-transfer-encoding",
        HeaderValue::from_static("binary"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(http_date(1_798_389_474), "Sun, 27 Dec 2026 16:37:54 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
