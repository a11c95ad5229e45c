//! Moving bytes: reading answers with a stall timeout, streaming downloads, streaming uploads
//! from disk with a watchdog (large ones with `sendfile`, on a connection of their own).

use std::io::{self, SeekFrom};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use log::debug;
use reqwest::Url;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_util::io::ReaderStream;

use super::error::{error_chain, Error};
use super::Result;

/// How much of a file an upload reads at a time.
const UPLOAD_CHUNK: usize = 1024 * 1024;

/// The name downloads go by in errors and logs.
pub(crate) const DOWNLOAD: &str = "download";

/// An open download of bytes `[offset, size)` of a bitstream. Yields chunks as they arrive and
/// stops after exactly `size - offset` bytes, whatever length the server advertised.
pub struct ByteStream {
    /// `None` once everything expected has arrived, or after a failure.
    body: Option<Body>,
    /// Bytes that arrived but were not handed out yet.
    pending: Bytes,
    expected: u64,
    received: u64,
    stall: Duration,
    /// Counts, when the stream is dropped, the bytes that came over the wire.
    counter: Option<Arc<AtomicU64>>,
}

/// Where the bytes come from.
enum Body {
    /// An answer through reqwest (https, proxies, redirects, chunked or encoded bodies).
    Client(reqwest::Response),
    /// A plain-HTTP connection of our own, positioned in the body: read straight into the
    /// caller's buffer by [`ByteStream::fill`], which spares a copy of every byte. With the
    /// body bytes the server's Content-Length says are still to come (`u64::MAX` without one).
    Socket(TcpStream, u64),
    /// Chunks from elsewhere: the in-memory server of the tests (see [`ByteStream::from_chunks`]).
    Chunks(Pin<Box<dyn Stream<Item = Bytes> + Send>>),
}

impl Drop for ByteStream {
    fn drop(&mut self) {
        let Some(counter) = &self.counter else {
            return;
        };
        let unread = match &self.body {
            Some(Body::Socket(socket, _)) => {
                let mut queued: libc::c_int = 0;
                // SAFETY: FIONREAD writes one int, into `queued`, for a descriptor we own.
                let ok = unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut queued) };
                if ok == 0 {
                    u64::try_from(queued).unwrap_or(0)
                } else {
                    0
                }
            }
            _ => 0,
        };
        counter.fetch_add(self.received + unread, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for ByteStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteStream")
            .field("expected", &self.expected)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl ByteStream {
    pub(crate) fn new(response: reqwest::Response, expected: u64, stall: Duration) -> ByteStream {
        ByteStream::with_body(Body::Client(response), Bytes::new(), expected, stall)
    }

    /// A body on a connection of [`plain_get`]'s.
    pub(crate) fn on_socket(body: PlainBody, expected: u64, stall: Duration) -> ByteStream {
        let advertised_left = body.content_length.map_or(u64::MAX, |length| {
            length.saturating_sub(body.head_rest.len() as u64)
        });
        ByteStream::with_body(
            Body::Socket(body.socket, advertised_left),
            body.head_rest,
            expected,
            stall,
        )
    }

    fn with_body(body: Body, pending: Bytes, expected: u64, stall: Duration) -> ByteStream {
        let mut stream = ByteStream {
            body: (expected > 0).then_some(body),
            pending: Bytes::new(),
            expected,
            received: 0,
            stall,
            counter: None,
        };
        stream.pending = stream.take_expected(pending);
        stream
    }

    /// A download whose bytes come from `chunks` (the in-memory server of the tests), read with
    /// the same stall timeout and length checks as a server's: a stream that ends early is a
    /// short read, one that waits longer than `stall` for its next chunk a timeout.
    pub fn from_chunks(
        chunks: impl Stream<Item = Bytes> + Send + 'static,
        expected: u64,
        stall: Duration,
    ) -> ByteStream {
        ByteStream::with_body(
            Body::Chunks(Box::pin(chunks)),
            Bytes::new(),
            expected,
            stall,
        )
    }

    /// A download of nothing (the offset is at or past the end): no request is made, because
    /// Midas ignores an out-of-range offset and would send the whole file.
    pub(crate) fn empty() -> ByteStream {
        ByteStream {
            body: None,
            pending: Bytes::new(),
            expected: 0,
            received: 0,
            stall: Duration::ZERO,
            counter: None,
        }
    }

    /// Adds the bytes this stream got to `counter` when it is dropped: those read, and those
    /// that had arrived in the socket's receive buffer without being read.
    pub(crate) fn counting(mut self, counter: Arc<AtomicU64>) -> ByteStream {
        self.counter = Some(counter);
        self
    }

    /// How many bytes the whole stream yields (`size - offset`).
    pub fn expected_len(&self) -> u64 {
        self.expected
    }

    /// The next chunk, or `None` once all expected bytes have been yielded.
    ///
    /// Errors: [`Error::Timeout`] when no byte came for the stall timeout, [`Error::ShortRead`]
    /// when the body ended (or broke) early. Midas advertises the full file size even when the
    /// body starts at an offset, so the body is never read past the expected length.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if !self.pending.is_empty() {
            return Ok(Some(std::mem::take(&mut self.pending)));
        }
        if self.received == self.expected {
            // Drop the connection: with a wrong Content-Length, the rest never comes.
            self.body = None;
            return Ok(None);
        }
        if let Some(Body::Socket(..)) = self.body {
            let want = (self.expected - self.received).min(SOCKET_CHUNK as u64) as usize;
            let mut chunk = BytesMut::with_capacity(want);
            self.fill(&mut chunk, want).await?;
            return Ok(Some(chunk.freeze()));
        }
        self.next_client_chunk().await.map(Some)
    }

    /// Appends the next bytes of the stream to `buffer` until it holds `len` bytes, reading
    /// from a socket straight into it when there is one.
    ///
    /// Errors: as [`ByteStream::next_chunk`]; a stream that ends first is a short read.
    pub async fn fill(&mut self, buffer: &mut BytesMut, len: usize) -> Result<()> {
        buffer.reserve(len.saturating_sub(buffer.len()));
        while buffer.len() < len {
            let want = len - buffer.len();
            if !self.pending.is_empty() {
                let take = want.min(self.pending.len());
                buffer.extend_from_slice(&self.pending.split_to(take));
                continue;
            }
            if self.received == self.expected {
                self.body = None;
                return Err(self.short_read());
            }
            match self.body.as_mut() {
                Some(Body::Socket(socket, advertised_left)) => {
                    // Like reqwest, the body ends where the server's Content-Length says.
                    let want = (want as u64)
                        .min(self.expected - self.received)
                        .min(*advertised_left);
                    if want == 0 {
                        self.body = None;
                        return Err(self.short_read());
                    }
                    let mut limited = (&mut *socket).take(want);
                    let read = timeout(self.stall, limited.read_buf(buffer));
                    let got = match read.await {
                        Err(_) => return Err(self.stalled()),
                        Ok(Ok(0)) => {
                            self.body = None;
                            return Err(self.short_read());
                        }
                        Ok(Ok(got)) => {
                            *advertised_left -= got as u64;
                            got
                        }
                        Ok(Err(err)) => {
                            debug!(
                                "download broke after {} of {} bytes: {err}",
                                self.received, self.expected
                            );
                            self.body = None;
                            return Err(self.short_read());
                        }
                    };
                    self.received += got as u64;
                }
                _ => self.pending = self.next_client_chunk().await?,
            }
        }
        if self.received == self.expected && self.pending.is_empty() {
            self.body = None;
        }
        Ok(())
    }

    /// The next non-empty chunk of a reqwest body (or of chunks from elsewhere), cut at the
    /// expected length.
    async fn next_client_chunk(&mut self) -> Result<Bytes> {
        loop {
            let chunk = match self.body.as_mut() {
                Some(Body::Client(response)) => match timeout(self.stall, response.chunk()).await {
                    Err(_) => return Err(self.stalled()),
                    Ok(Ok(Some(chunk))) => chunk,
                    Ok(Ok(None)) => {
                        self.body = None;
                        return Err(self.short_read());
                    }
                    Ok(Err(err)) => {
                        debug!(
                            "download broke after {} of {} bytes: {}",
                            self.received,
                            self.expected,
                            error_chain(&err.without_url())
                        );
                        self.body = None;
                        return Err(self.short_read());
                    }
                },
                Some(Body::Chunks(chunks)) => match timeout(self.stall, chunks.next()).await {
                    Err(_) => return Err(self.stalled()),
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => {
                        self.body = None;
                        return Err(self.short_read());
                    }
                },
                _ => return Err(self.short_read()),
            };
            if !chunk.is_empty() {
                return Ok(self.take_expected(chunk));
            }
        }
    }

    /// Counts bytes that arrived as received, dropping any beyond the expected length.
    fn take_expected(&mut self, mut bytes: Bytes) -> Bytes {
        let remaining = self.expected - self.received;
        if bytes.len() as u64 > remaining {
            // `remaining` is below `bytes.len()`, so it fits in usize.
            bytes.truncate(remaining as usize);
        }
        self.received += bytes.len() as u64;
        bytes
    }

    fn stalled(&mut self) -> Error {
        self.body = None;
        stall_error(self.stall)
    }

    fn short_read(&self) -> Error {
        Error::ShortRead {
            expected: self.expected,
            got: self.received,
        }
    }
}

/// What [`plain_get`] got.
pub(crate) enum PlainAnswer {
    /// A 2xx answer with a plain body.
    Body(PlainBody),
    /// An error status (4xx, 5xx).
    Status(u16),
    /// Something better left to reqwest, which sends the request again: a proxy is configured,
    /// the connection was refused, a redirect, a chunked or encoded body, an odd head.
    LeaveToClient,
}

/// The body of a [`PlainAnswer`].
pub(crate) struct PlainBody {
    /// The connection, positioned in the body.
    socket: TcpStream,
    /// The body bytes that came with the head.
    head_rest: Bytes,
    content_length: Option<u64>,
}

/// GET `url` (http, no proxy) on a connection of its own, so that the body can be read from
/// the socket straight into block buffers. reqwest hands a body out as slices of its own read
/// buffer, so building 1 MiB blocks from them copies every byte once more: a third of the
/// daemon's CPU in a sequential read through the mount. With a `form` (the download's token),
/// a POST with that form-encoded body instead. A redirect is never followed here: reqwest
/// takes it, under the client's redirect policy.
///
/// `recv_buffer`, for a read of a few bytes: the socket's receive buffer, so that the server
/// cannot push (and count) much more than is wanted before the connection is dropped.
pub(crate) async fn plain_get(
    url: &Url,
    form: Option<&str>,
    connect_timeout: Duration,
    stall: Duration,
    recv_buffer: Option<u32>,
) -> Result<PlainAnswer> {
    let Some(PlainTarget {
        host,
        port,
        target,
        host_header,
    }) = plain_target(url)
    else {
        return Ok(PlainAnswer::LeaveToClient);
    };
    let mut socket = match timeout(connect_timeout, connect(host_name(host), port, recv_buffer))
        .await
    {
        Err(_) => {
            return Err(Error::Timeout {
                method: DOWNLOAD.into(),
                after: connect_timeout,
            })
        }
        Ok(Err(err)) => {
            debug!("plain download connection to {host}:{port}: {err}; leaving it to the client");
            return Ok(PlainAnswer::LeaveToClient);
        }
        Ok(Ok(socket)) => socket,
    };
    if let Err(err) = socket.set_nodelay(true) {
        debug!("plain download connection to {host}:{port}: {err}; leaving it to the client");
        return Ok(PlainAnswer::LeaveToClient);
    }
    let (verb, body_head, body) = match form {
        Some(form) => (
            "POST",
            format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
                form.len()
            ),
            form,
        ),
        None => ("GET", String::new(), ""),
    };
    let request = format!(
        "{verb} {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: midasfs/{}\r\n\
         Accept: */*\r\nAccept-Encoding: identity\r\nConnection: close\r\n{body_head}\r\n{body}",
        env!("CARGO_PKG_VERSION")
    );
    let sent = timeout(stall, socket.write_all(request.as_bytes())).await;
    match sent {
        Err(_) => return Err(stall_error(stall)),
        Ok(Err(_)) => return Ok(PlainAnswer::LeaveToClient),
        Ok(Ok(())) => {}
    }
    let mut head = BytesMut::with_capacity(HEAD_LIMIT);
    let head_len = loop {
        if let Some(end) = find_head_end(&head) {
            break end;
        }
        if head.len() >= HEAD_LIMIT {
            return Ok(PlainAnswer::LeaveToClient);
        }
        match timeout(stall, socket.read_buf(&mut head)).await {
            Err(_) => return Err(stall_error(stall)),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(PlainAnswer::LeaveToClient),
            Ok(Ok(_)) => {}
        }
    };
    let rest = head.split_off(head_len).freeze();
    Ok(match parse_head(&head) {
        Some(PlainHead {
            status,
            plain_body,
            content_length,
        }) if (200..300).contains(&status) => {
            if plain_body {
                PlainAnswer::Body(PlainBody {
                    socket,
                    head_rest: rest,
                    content_length,
                })
            } else {
                PlainAnswer::LeaveToClient
            }
        }
        Some(PlainHead { status, .. }) if status >= 400 => PlainAnswer::Status(status),
        _ => PlainAnswer::LeaveToClient,
    })
}

/// How much of a body [`ByteStream::next_chunk`] reads from a socket at a time.
const SOCKET_CHUNK: usize = 256 * 1024;
/// The largest answer head [`plain_get`] reads before leaving the answer to reqwest.
const HEAD_LIMIT: usize = 16 * 1024;
/// The environment variables through which reqwest picks up a proxy for http URLs.
const PROXY_VARIABLES: [&str; 4] = ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"];

/// Where a request on a connection of our own goes.
struct PlainTarget<'a> {
    /// As the URL spells it (an IPv6 literal in brackets).
    host: &'a str,
    port: u16,
    /// The request line's path and query.
    target: String,
    host_header: String,
}

/// Where a request to `url` on a connection of our own goes, or `None` when the request is
/// reqwest's to make: not http, a proxy configured, or credentials in the URL (HTTP
/// authentication in front of Midas), which reqwest sends.
fn plain_target(url: &Url) -> Option<PlainTarget<'_>> {
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return None;
    };
    let credentials = !url.username().is_empty() || url.password().is_some();
    if url.scheme() != "http" || proxy_configured() || credentials {
        return None;
    }
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let host_header = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    Some(PlainTarget {
        host,
        port,
        target,
        host_header,
    })
}

fn proxy_configured() -> bool {
    PROXY_VARIABLES
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
}

/// A connection to `host:port`, with a receive buffer of `recv_buffer` bytes when given.
async fn connect(host: &str, port: u16, recv_buffer: Option<u32>) -> std::io::Result<TcpStream> {
    let Some(size) = recv_buffer else {
        return TcpStream::connect((host, port)).await;
    };
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_recv_buffer_size(size)?;
        match socket.connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{host}: no address"))))
}

/// The host to connect to: an IPv6 literal without the brackets of its URL form.
fn host_name(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host)
}

fn stall_error(stall: Duration) -> Error {
    Error::Timeout {
        method: DOWNLOAD.into(),
        after: stall,
    }
}

/// Where the head ends: the index just past its blank line.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4)
}

#[derive(Debug, PartialEq)]
struct PlainHead {
    status: u16,
    /// The body is the bytes that follow, as they are: no chunked transfer, no content coding.
    plain_body: bool,
    content_length: Option<u64>,
}

/// The status and body framing of an HTTP/1.x answer head, `None` if it is not one.
fn parse_head(head: &[u8]) -> Option<PlainHead> {
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next()?.splitn(3, ' ');
    if !status_line.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = status_line.next()?.parse().ok()?;
    let mut plain_body = true;
    let mut content_length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("content-encoding")
                && !value.eq_ignore_ascii_case("identity"))
        {
            plain_body = false;
        }
        if name.eq_ignore_ascii_case("content-length") {
            // Two different lengths make the framing ambiguous: reqwest decides then.
            let length = value.parse().ok()?;
            if content_length.is_some_and(|seen| seen != length) {
                return None;
            }
            content_length = Some(length);
        }
    }
    Some(PlainHead {
        status,
        plain_body,
        content_length,
    })
}

/// The whole body of an answer, failing when no byte arrives for `stall`, or as soon as it
/// is known to be longer than `limit` (the connection is dropped then, unread).
pub(crate) async fn read_body(
    method: &str,
    url: &str,
    mut response: reqwest::Response,
    stall: Duration,
    limit: usize,
) -> Result<Vec<u8>> {
    let too_large = || {
        log::warn!("{method}: the answer is longer than {limit} bytes; not read");
        Error::TooLarge {
            method: method.to_owned(),
            limit,
        }
    };
    let advertised = response.content_length().unwrap_or(0);
    if advertised > limit as u64 {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(advertised as usize);
    while let Some(chunk) = body_chunk(&mut response, method, url, stall).await? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The next chunk of `response`'s body, `None` at its end; a chunk that takes longer than
/// `stall` to come is a timeout.
pub(crate) async fn body_chunk(
    response: &mut reqwest::Response,
    method: &str,
    url: &str,
    stall: Duration,
) -> Result<Option<Bytes>> {
    match timeout(stall, response.chunk()).await {
        Err(_) => Err(Error::Timeout {
            method: method.to_owned(),
            after: stall,
        }),
        Ok(Ok(chunk)) => Ok(chunk),
        Ok(Err(err)) => Err(transport_error(method, url, err, stall)),
    }
}

/// A reqwest failure as one of ours, without the URL (it may hold a token).
pub(crate) fn transport_error(
    method: &str,
    url: &str,
    err: reqwest::Error,
    waited: Duration,
) -> Error {
    let err = err.without_url();
    if err.is_timeout() {
        Error::Timeout {
            method: method.to_owned(),
            after: waited,
        }
    } else if err.is_connect() || err.is_request() || err.is_body() {
        Error::Unreachable {
            url: url.to_owned(),
            source: Box::new(err),
        }
    } else {
        Error::NotMidas {
            url: url.to_owned(),
            detail: error_chain(&err),
        }
    }
}

/// What the upload body has done so far, shared with the watchdog in [`send_watched`].
pub(crate) struct Progress {
    /// When the body last yielded bytes; `None` until the connection is up and the body polled.
    last_activity: Mutex<Option<Instant>>,
    complete: AtomicBool,
    failure: Mutex<Option<io::Error>>,
}

impl Progress {
    fn new(complete: bool) -> Progress {
        Progress {
            last_activity: Mutex::new(None),
            complete: AtomicBool::new(complete),
            failure: Mutex::new(None),
        }
    }

    fn advanced(&self, complete: bool) {
        *lock(&self.last_activity) = Some(Instant::now());
        if complete {
            self.complete.store(true, Ordering::Release);
        }
    }

    fn failed(&self, err: io::Error) {
        *lock(&self.failure) = Some(err);
    }

    fn last_activity(&self) -> Option<Instant> {
        *lock(&self.last_activity)
    }

    fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    fn take_failure(&self) -> Option<io::Error> {
        lock(&self.failure).take()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

struct FileBody {
    reader: ReaderStream<tokio::io::Take<tokio::fs::File>>,
    remaining: u64,
    progress: Arc<Progress>,
    sent: Arc<AtomicU64>,
    finished: bool,
}

/// A request body streaming `len` bytes of `path` from `offset`, never the whole file in memory;
/// `sent` counts them as they go.
pub(crate) async fn file_body(
    path: &Path,
    offset: u64,
    len: u64,
    sent: Arc<AtomicU64>,
) -> Result<(reqwest::Body, Arc<Progress>)> {
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(SeekFrom::Start(offset)).await?;
    let progress = Arc::new(Progress::new(len == 0));
    let state = FileBody {
        reader: ReaderStream::with_capacity(file.take(len), UPLOAD_CHUNK),
        remaining: len,
        progress: Arc::clone(&progress),
        sent,
        finished: false,
    };
    let shown = path.display().to_string();
    let stream = futures_util::stream::unfold(state, move |mut body| {
        let shown = shown.clone();
        async move {
            if body.finished {
                return None;
            }
            match body.reader.next().await {
                Some(Ok(chunk)) => {
                    body.remaining = body.remaining.saturating_sub(chunk.len() as u64);
                    body.sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    body.progress.advanced(body.remaining == 0);
                    Some((Ok(chunk), body))
                }
                Some(Err(err)) => {
                    body.finished = true;
                    let copy = io::Error::new(err.kind(), err.to_string());
                    body.progress.failed(err);
                    Some((Err(copy), body))
                }
                None if body.remaining > 0 => {
                    body.finished = true;
                    let err = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{shown} ended {} bytes early", body.remaining),
                    );
                    let copy = io::Error::new(err.kind(), err.to_string());
                    body.progress.failed(err);
                    Some((Err(copy), body))
                }
                None => None,
            }
        }
    });
    Ok((reqwest::Body::wrap_stream(stream), progress))
}

/// Send a request whose body is a [`file_body`], failing with [`Error::Timeout`] when the body
/// makes no progress for `stall` (a server that stopped reading), or when the answer takes more
/// than `answer_cap` after the last byte was sent. Until the body starts, `connect` is added.
pub(crate) async fn send_watched(
    method: &str,
    url: &str,
    request: reqwest::RequestBuilder,
    progress: &Progress,
    stall: Duration,
    connect: Duration,
    answer_cap: Duration,
) -> Result<reqwest::Response> {
    let started = Instant::now();
    let send = request.send();
    tokio::pin!(send);
    loop {
        let allowance = if progress.is_complete() {
            answer_cap
        } else {
            stall
        };
        let since = progress.last_activity().unwrap_or(started + connect);
        tokio::select! {
            result = &mut send => {
                return result.map_err(|err| match progress.take_failure() {
                    Some(io_error) => Error::Io(io_error),
                    None => transport_error(method, url, err, stall),
                });
            }
            () = tokio::time::sleep_until(since + allowance) => {
                // Progress may have been made while this timer ran: only a real stall fails.
                let allowance = if progress.is_complete() { answer_cap } else { stall };
                let since = progress.last_activity().unwrap_or(started + connect);
                if since + allowance <= Instant::now() {
                    return Err(Error::Timeout { method: method.to_owned(), after: allowance });
                }
            }
        }
    }
}

/// The smallest upload body [`plain_upload`] sends: smaller ones go through reqwest, whose
/// pooled connections spare them the new connection this path makes for every request.
pub(crate) const PLAIN_UPLOAD_MIN: u64 = 4 << 20;
/// The most one `sendfile` call moves, so that one call never holds a worker for long.
const SENDFILE_CHUNK: usize = 4 << 20;

/// One `upload.perform` for [`plain_upload`]: a PUT of `url` whose body is bytes
/// `[offset, offset + len)` of `file`.
pub(crate) struct PlainUpload<'a> {
    pub url: &'a Url,
    /// The URL as logs and errors show it (without the upload token).
    pub shown: &'a str,
    pub method: &'a str,
    pub file: &'a Path,
    pub offset: u64,
    pub len: u64,
    pub connect_timeout: Duration,
    /// The longest the body may make no progress, and the answer's body too.
    pub stall: Duration,
    /// The longest the answer's head may take after the last byte of the body was sent.
    pub answer_cap: Duration,
    /// The longest answer body read.
    pub limit: usize,
    /// Counts the bytes of the body as they are sent.
    pub sent: &'a AtomicU64,
}

/// An answer to a [`plain_upload`]: its status and its whole body.
pub(crate) struct PlainReply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// PUT a part of a file (http, no proxy) on a connection of its own, the body sent from the
/// file straight into the socket with `sendfile(2)`. Through reqwest, every byte of an upload
/// is read from the spool into a buffer and copied from there into the socket: on two CPUs
/// shared with the writer and the server, those copies held a large copy below the speed of
/// `curl -T`. None when the request is better left to reqwest (https, a proxy, credentials in
/// the URL, no connection): nothing was sent then.
///
/// Errors: [`Error::Timeout`] when the body makes no progress for `stall` or the answer's head
/// takes longer than `answer_cap`; [`Error::Io`] when the file ends before the range does;
/// [`Error::Unreachable`] when the connection breaks before an answer.
pub(crate) async fn plain_upload(upload: &PlainUpload<'_>) -> Result<Option<PlainReply>> {
    let Some(PlainTarget {
        host,
        port,
        target,
        host_header,
    }) = plain_target(upload.url)
    else {
        return Ok(None);
    };
    let file = std::fs::File::open(upload.file)?;
    let connected = timeout(upload.connect_timeout, connect(host_name(host), port, None)).await;
    let mut socket = match connected {
        Err(_) => {
            return Err(Error::Timeout {
                method: upload.method.to_owned(),
                after: upload.connect_timeout,
            })
        }
        Ok(Err(err)) => {
            debug!("plain upload connection to {host}:{port}: {err}; leaving it to the client");
            return Ok(None);
        }
        Ok(Ok(socket)) => socket,
    };
    if let Err(err) = socket.set_nodelay(true) {
        debug!("plain upload connection to {host}:{port}: {err}; leaving it to the client");
        return Ok(None);
    }
    let broken = |err: io::Error| Error::Unreachable {
        url: upload.shown.to_owned(),
        source: Box::new(err),
    };
    let stalled = |after: Duration| Error::Timeout {
        method: upload.method.to_owned(),
        after,
    };
    let head = format!(
        "PUT {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: midasfs/{}\r\n\
         Accept: */*\r\nAccept-Encoding: identity\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION"),
        upload.len
    );
    match timeout(upload.stall, socket.write_all(head.as_bytes())).await {
        Err(_) => return Err(stalled(upload.stall)),
        Ok(Err(err)) => return Err(broken(err)),
        Ok(Ok(())) => {}
    }
    if let Err(err) = send_file_range(&socket, &file, upload).await {
        // A server that refuses a request may answer before it has read the body, and close.
        if let Error::Unreachable { .. } = err {
            if let Ok(Some(reply)) = read_reply(&mut socket, upload, Duration::from_secs(1)).await {
                return Ok(Some(reply));
            }
        }
        return Err(err);
    }
    match read_reply(&mut socket, upload, upload.answer_cap).await? {
        Some(reply) => Ok(Some(reply)),
        None => Err(broken(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed without an answer",
        ))),
    }
}

/// Sends the upload's byte range of `file` on `socket` with `sendfile(2)`.
async fn send_file_range(
    socket: &TcpStream,
    file: &std::fs::File,
    upload: &PlainUpload<'_>,
) -> Result<()> {
    let (out_fd, in_fd) = (socket.as_raw_fd(), file.as_raw_fd());
    let mut sent = 0u64;
    while sent < upload.len {
        let want = usize::try_from(upload.len - sent)
            .unwrap_or(usize::MAX)
            .min(SENDFILE_CHUNK);
        let mut at = libc::off_t::try_from(upload.offset + sent).map_err(|_| {
            Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "upload offset out of range",
            ))
        })?;
        let moved = socket.async_io(tokio::io::Interest::WRITABLE, || {
            // SAFETY: both descriptors are open for the whole call; `at` is a valid offset
            // that sendfile updates.
            let n = unsafe { libc::sendfile(out_fd, in_fd, &mut at, want) };
            // A negative count is an error, which errno holds.
            usize::try_from(n).map_err(|_| io::Error::last_os_error())
        });
        match timeout(upload.stall, moved).await {
            Err(_) => {
                return Err(Error::Timeout {
                    method: upload.method.to_owned(),
                    after: upload.stall,
                })
            }
            Ok(Ok(0)) => {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} ended {} bytes early",
                        upload.file.display(),
                        upload.len - sent
                    ),
                )))
            }
            Ok(Ok(n)) => {
                sent += n as u64;
                upload.sent.fetch_add(n as u64, Ordering::Relaxed);
            }
            Ok(Err(err)) => {
                debug!("upload broke after {sent} of {} bytes: {err}", upload.len);
                return Err(Error::Unreachable {
                    url: upload.shown.to_owned(),
                    source: Box::new(err),
                });
            }
        }
    }
    Ok(())
}

/// Reads an HTTP/1.1 answer whose head comes within `head_wait`: its status and body (with a
/// Content-Length, chunked, or up to the end of the connection). None when the connection
/// closes before a head.
async fn read_reply(
    socket: &mut TcpStream,
    upload: &PlainUpload<'_>,
    head_wait: Duration,
) -> Result<Option<PlainReply>> {
    let deadline = Instant::now() + head_wait;
    let mut buffer = BytesMut::with_capacity(HEAD_LIMIT);
    let not_http = |detail: &str| Error::NotMidas {
        url: upload.shown.to_owned(),
        detail: detail.to_owned(),
    };
    let (status, framing) = loop {
        let head_len = loop {
            if let Some(end) = find_head_end(&buffer) {
                break end;
            }
            if buffer.len() >= HEAD_LIMIT {
                return Err(not_http("an answer head longer than 16 KiB"));
            }
            let read = tokio::time::timeout_at(deadline, socket.read_buf(&mut buffer)).await;
            match read {
                Err(_) => {
                    return Err(Error::Timeout {
                        method: upload.method.to_owned(),
                        after: head_wait,
                    })
                }
                Ok(Ok(0)) => return Ok(None),
                Ok(Err(err)) => {
                    return Err(Error::Unreachable {
                        url: upload.shown.to_owned(),
                        source: Box::new(err),
                    })
                }
                Ok(Ok(_)) => {}
            }
        };
        let head = buffer.split_to(head_len);
        let parsed = parse_head(&head).ok_or_else(|| not_http("not an HTTP/1.x answer"))?;
        if (100..200).contains(&parsed.status) {
            // An interim answer (100 Continue): the real one follows.
            continue;
        }
        let framing = if head_says_chunked(&head) {
            Framing::Chunked
        } else if !parsed.plain_body {
            return Err(not_http("an encoded answer body"));
        } else {
            match parsed.content_length {
                Some(length) => Framing::Length(length),
                None => Framing::UntilClose,
            }
        };
        break (parsed.status, framing);
    };
    let mut reader = ReplyReader {
        socket,
        buffer,
        upload,
    };
    let body = match framing {
        Framing::Length(length) => {
            let length = usize::try_from(length)
                .ok()
                .filter(|&length| length <= upload.limit)
                .ok_or_else(|| reader.too_large())?;
            reader.take(length).await?
        }
        Framing::UntilClose => reader.until_closed().await?,
        Framing::Chunked => reader.chunked().await?,
    };
    Ok(Some(PlainReply { status, body }))
}

/// How an answer's body ends.
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// Whether an answer head says `Transfer-Encoding: chunked`.
fn head_says_chunked(head: &[u8]) -> bool {
    String::from_utf8_lossy(head).split("\r\n").any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
        })
    })
}

/// Reads an answer's body, each read within the stall timeout.
struct ReplyReader<'a, 'b> {
    socket: &'a mut TcpStream,
    /// Bytes read and not used yet.
    buffer: BytesMut,
    upload: &'a PlainUpload<'b>,
}

impl ReplyReader<'_, '_> {
    /// Reads more into the buffer; false at the end of the connection.
    async fn more(&mut self) -> Result<bool> {
        match timeout(self.upload.stall, self.socket.read_buf(&mut self.buffer)).await {
            Err(_) => Err(Error::Timeout {
                method: self.upload.method.to_owned(),
                after: self.upload.stall,
            }),
            Ok(Ok(n)) => Ok(n > 0),
            Ok(Err(err)) => Err(Error::Unreachable {
                url: self.upload.shown.to_owned(),
                source: Box::new(err),
            }),
        }
    }

    fn too_large(&self) -> Error {
        Error::TooLarge {
            method: self.upload.method.to_owned(),
            limit: self.upload.limit,
        }
    }

    fn cut_short(&self) -> Error {
        Error::Unreachable {
            url: self.upload.shown.to_owned(),
            source: Box::new(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the answer ended early",
            )),
        }
    }

    async fn take(&mut self, len: usize) -> Result<Vec<u8>> {
        while self.buffer.len() < len {
            if !self.more().await? {
                return Err(self.cut_short());
            }
        }
        Ok(self.buffer.split_to(len).to_vec())
    }

    async fn until_closed(&mut self) -> Result<Vec<u8>> {
        while self.more().await? {
            if self.buffer.len() > self.upload.limit {
                return Err(self.too_large());
            }
        }
        Ok(self.buffer.split().to_vec())
    }

    /// One line, without its CRLF.
    async fn line(&mut self) -> Result<String> {
        loop {
            if let Some(at) = self.buffer.windows(2).position(|pair| pair == b"\r\n") {
                let line = self.buffer.split_to(at + 2);
                return Ok(String::from_utf8_lossy(&line[..at]).into_owned());
            }
            if self.buffer.len() > HEAD_LIMIT {
                return Err(self.cut_short());
            }
            if !self.more().await? {
                return Err(self.cut_short());
            }
        }
    }

    async fn chunked(&mut self) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| Error::NotMidas {
                url: self.upload.shown.to_owned(),
                detail: format!("a chunk size of {size:?}"),
            })?;
            if size == 0 {
                // Trailers, up to an empty line.
                while !self.line().await?.is_empty() {}
                return Ok(body);
            }
            if body.len().saturating_add(size) > self.upload.limit {
                return Err(self.too_large());
            }
            body.extend_from_slice(&self.take(size).await?);
            if !self.line().await?.is_empty() {
                return Err(self.cut_short());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn heads_tell_status_and_whether_the_body_is_plain() {
        let head = |text: &str| parse_head(text.as_bytes());
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"),
            Some(PlainHead {
                status: 200,
                plain_body: true,
                content_length: Some(10)
            })
        );
        assert_eq!(
            head("HTTP/1.0 500 Error\r\ncontent-encoding: identity\r\n\r\n"),
            Some(PlainHead {
                status: 500,
                plain_body: true,
                content_length: None
            })
        );
        let chunked = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(!chunked.expect("a head").plain_body);
        let gzip = head("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n");
        assert!(!gzip.expect("a head").plain_body);
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            None
        );
        assert_eq!(head("SSH-2.0-OpenSSH\r\n\r\n"), None);
    }

    #[test]
    fn ipv6_hosts_lose_their_brackets_to_connect() {
        assert_eq!(host_name("[::1]"), "::1");
        assert_eq!(host_name("midas.example.org"), "midas.example.org");
    }

    /// A server that answers one connection with `head`, then a little later `body`, and keeps
    /// the connection open.
    async fn answering(head: &'static [u8], body: &'static [u8]) -> Url {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = vec![0; 4096];
            let _ = socket.read(&mut request).await;
            socket.write_all(head).await.expect("head");
            tokio::time::sleep(Duration::from_millis(50)).await;
            socket.write_all(body).await.expect("body");
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        Url::parse(&format!("http://{addr}/download/?bitstream=1")).expect("url")
    }

    async fn get(url: &Url) -> PlainAnswer {
        let wait = Duration::from_millis(500);
        plain_get(url, None, wait, wait, None)
            .await
            .expect("answer")
    }

    #[tokio::test]
    async fn a_chunked_answer_is_left_to_the_client() {
        let url = answering(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"3\r\nabc\r\n",
        )
        .await;
        assert!(matches!(get(&url).await, PlainAnswer::LeaveToClient));
    }

    #[tokio::test]
    async fn an_error_status_is_reported_as_is() {
        let url = answering(b"HTTP/1.1 500 Error\r\nContent-Length: 0\r\n\r\n", b"").await;
        assert!(matches!(get(&url).await, PlainAnswer::Status(500)));
    }

    #[tokio::test]
    async fn a_plain_body_fills_buffers_and_ends_where_the_server_says() {
        let url = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab", b"cdef").await;
        let PlainAnswer::Body(body) = get(&url).await else {
            panic!("not a plain body");
        };
        let mut stream = ByteStream::on_socket(body, 10, Duration::from_millis(500));
        let mut block = BytesMut::new();
        stream.fill(&mut block, 4).await.expect("four bytes");
        assert_eq!(&block[..], b"abcd");
        match stream.fill(&mut block, 8).await {
            Err(Error::ShortRead { expected, got }) => assert_eq!((expected, got), (10, 6)),
            other => panic!("{other:?}"),
        }
        assert_eq!(&block[..], b"abcdef");
    }

    #[tokio::test]
    async fn a_plain_body_stops_at_the_expected_length_despite_a_longer_content_length() {
        let url = answering(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
            b"0123456789",
        )
        .await;
        let PlainAnswer::Body(body) = get(&url).await else {
            panic!("not a plain body");
        };
        let mut stream = ByteStream::on_socket(body, 4, Duration::from_millis(500));
        assert_eq!(
            stream.next_chunk().await.expect("chunk").as_deref(),
            Some(&b"0123"[..])
        );
        assert_eq!(stream.next_chunk().await.expect("end"), None);
    }

    /// A server that takes one upload: reads its head and as many body bytes as its
    /// Content-Length says (or until the client closes), answers `answer`, closes, and hands
    /// over the head and body it got.
    async fn taking_one_upload(
        answer: &'static [u8],
    ) -> (Url, tokio::task::JoinHandle<(String, Vec<u8>)>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut got = Vec::new();
            let mut chunk = vec![0; 1 << 20];
            let head_end = loop {
                if let Some(end) = find_head_end(&got) {
                    break end;
                }
                let n = socket.read(&mut chunk).await.expect("read");
                assert!(n > 0, "the head ended early");
                got.extend_from_slice(&chunk[..n]);
            };
            let mut body = got.split_off(head_end);
            let head = String::from_utf8(got).expect("a text head");
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("Content-Length: "))
                .expect("a Content-Length")
                .parse()
                .expect("a number");
            while body.len() < length {
                match socket.read(&mut chunk).await {
                    Ok(n) if n > 0 => body.extend_from_slice(&chunk[..n]),
                    _ => break,
                }
            }
            let _ = socket.write_all(answer).await;
            (head, body)
        });
        let url = format!("http://{addr}/api/json?method=midas.upload.perform&uploadtoken=t");
        (Url::parse(&url).expect("url"), task)
    }

    /// What the test uploads sent, all together.
    static SENT: AtomicU64 = AtomicU64::new(0);

    fn upload<'a>(url: &'a Url, file: &'a Path, offset: u64, len: u64) -> PlainUpload<'a> {
        PlainUpload {
            url,
            shown: "the test server",
            method: "midas.upload.perform",
            file,
            offset,
            len,
            connect_timeout: Duration::from_secs(5),
            stall: Duration::from_millis(500),
            answer_cap: Duration::from_secs(5),
            limit: 1 << 20,
            sent: &SENT,
        }
    }

    fn file_of(content: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
        std::io::Write::write_all(&mut file, content).expect("write");
        file
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    #[tokio::test]
    async fn a_plain_upload_sends_its_range_of_the_file_and_reads_each_kind_of_answer() {
        let content = pattern(6 << 20);
        let file = file_of(&content);
        let answers: [(&[u8], &[u8]); 3] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"stat\":\"ok\"}",
                b"{\"stat\":\"ok\"}",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5;x=y\r\n{\"sta\r\n8\r\nt\":\"ok\"}\r\n0\r\nTrailer: 1\r\n\r\n",
                b"{\"stat\":\"ok\"}",
            ),
            (
                b"HTTP/1.0 200 OK\r\n\r\n{\"stat\":\"ok\"}",
                b"{\"stat\":\"ok\"}",
            ),
        ];
        for (answer, body) in answers {
            let (url, server) = taking_one_upload(answer).await;
            let (offset, len) = (12_345, 5 << 20);
            let reply = plain_upload(&upload(&url, file.path(), offset, len))
                .await
                .expect("an answer")
                .expect("sent on a connection of its own");
            assert_eq!((reply.status, &reply.body[..]), (200, body));
            let (head, received) = server.await.expect("the server");
            assert!(
                head.starts_with(
                    "PUT /api/json?method=midas.upload.perform&uploadtoken=t HTTP/1.1\r\n"
                ),
                "{head}"
            );
            assert!(received == content[offset as usize..][..len as usize]);
        }
    }

    #[tokio::test]
    async fn a_plain_upload_of_a_file_shorter_than_its_range_fails() {
        let file = file_of(&pattern(5 << 20));
        let (url, _server) = taking_one_upload(b"HTTP/1.1 200 OK\r\n\r\n").await;
        match plain_upload(&upload(&url, file.path(), 1 << 20, 5 << 20)).await {
            Err(Error::Io(err)) => assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof),
            other => panic!("{:?}", other.map(|reply| reply.map(|r| r.status))),
        }
    }

    #[tokio::test]
    async fn a_plain_upload_to_a_server_that_stops_reading_times_out() {
        let file = file_of(&pattern(64 << 20));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let _server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(socket);
        });
        let url = Url::parse(&format!("http://{addr}/api/json")).expect("url");
        let started = Instant::now();
        match plain_upload(&upload(&url, file.path(), 0, 64 << 20)).await {
            Err(Error::Timeout { after, .. }) => assert_eq!(after, Duration::from_millis(500)),
            other => panic!("{:?}", other.map(|reply| reply.map(|r| r.status))),
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_plain_upload_leaves_https_and_unreachable_servers_to_the_client() {
        let file = file_of(b"x");
        let https = Url::parse("https://127.0.0.1:1/api/json").expect("url");
        assert!(plain_upload(&upload(&https, file.path(), 0, 1))
            .await
            .expect("no error")
            .is_none());
        // A port nothing listens on: the connection is refused, and nothing was sent.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let closed = Url::parse(&format!(
            "http://{}/",
            listener.local_addr().expect("address")
        ))
        .expect("url");
        drop(listener);
        assert!(plain_upload(&upload(&closed, file.path(), 0, 1))
            .await
            .expect("no error")
            .is_none());
    }
}
