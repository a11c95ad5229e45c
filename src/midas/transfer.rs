//! Moving bytes: reading answers with a stall timeout, streaming downloads, streaming uploads
//! from disk with a watchdog.

use std::io::{self, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use log::debug;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::time::{timeout, Instant};
use tokio_util::io::ReaderStream;

use super::error::Error;
use super::Result;

/// How much of a file an upload reads at a time.
const UPLOAD_CHUNK: usize = 1024 * 1024;

/// The name downloads go by in errors and logs.
pub(crate) const DOWNLOAD: &str = "download";

/// An open download of bytes `[offset, size)` of a bitstream. Yields chunks as they arrive and
/// stops after exactly `size - offset` bytes, whatever length the server advertised.
pub struct ByteStream {
    /// `None` once everything expected has arrived, or after a failure.
    response: Option<reqwest::Response>,
    expected: u64,
    received: u64,
    stall: Duration,
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
        ByteStream {
            response: (expected > 0).then_some(response),
            expected,
            received: 0,
            stall,
        }
    }

    /// A download of nothing (the offset is at or past the end): no request is made, because
    /// Midas ignores an out-of-range offset and would send the whole file.
    pub(crate) fn empty() -> ByteStream {
        ByteStream {
            response: None,
            expected: 0,
            received: 0,
            stall: Duration::ZERO,
        }
    }

    /// How many bytes the whole stream yields (`size - offset`).
    pub fn expected_len(&self) -> u64 {
        self.expected
    }

    /// How many bytes have been yielded so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next chunk, or `None` once all expected bytes have been yielded.
    ///
    /// Errors: [`Error::Timeout`] when no byte came for the stall timeout, [`Error::ShortRead`]
    /// when the body ended (or broke) early. Midas advertises the full file size even when the
    /// body starts at an offset, so the body is never read past the expected length.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            let remaining = self.expected - self.received;
            if remaining == 0 {
                // Drop the connection: with a wrong Content-Length, the rest never comes.
                self.response = None;
                return Ok(None);
            }
            let Some(response) = self.response.as_mut() else {
                return Err(self.short_read());
            };
            let chunk = match timeout(self.stall, response.chunk()).await {
                Err(_) => {
                    self.response = None;
                    return Err(Error::Timeout {
                        method: DOWNLOAD.into(),
                        after: self.stall,
                    });
                }
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => {
                    self.response = None;
                    return Err(self.short_read());
                }
                Ok(Err(err)) => {
                    debug!(
                        "download broke after {} of {} bytes: {}",
                        self.received,
                        self.expected,
                        error_chain(&err.without_url())
                    );
                    self.response = None;
                    return Err(self.short_read());
                }
            };
            if chunk.is_empty() {
                continue;
            }
            let chunk = if chunk.len() as u64 > remaining {
                // `remaining` is below `chunk.len()`, so it fits in usize.
                chunk.slice(..remaining as usize)
            } else {
                chunk
            };
            self.received += chunk.len() as u64;
            return Ok(Some(chunk));
        }
    }

    fn short_read(&self) -> Error {
        Error::ShortRead {
            expected: self.expected,
            got: self.received,
        }
    }
}

/// The whole body of an answer, failing when no byte arrives for `stall`.
pub(crate) async fn read_body(
    method: &str,
    url: &str,
    mut response: reqwest::Response,
    stall: Duration,
) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        match timeout(stall, response.chunk()).await {
            Err(_) => {
                return Err(Error::Timeout {
                    method: method.to_owned(),
                    after: stall,
                })
            }
            Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
            Ok(Ok(None)) => return Ok(body),
            Ok(Err(err)) => return Err(transport_error(method, url, err, stall)),
        }
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
            source: err,
        }
    } else {
        Error::NotMidas {
            url: url.to_owned(),
            detail: error_chain(&err),
        }
    }
}

/// An error and its causes on one line ("error sending request: connection refused").
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
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
    finished: bool,
}

/// A request body streaming `len` bytes of `path` from `offset`, never the whole file in memory.
pub(crate) async fn file_body(
    path: &Path,
    offset: u64,
    len: u64,
) -> Result<(reqwest::Body, Arc<Progress>)> {
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(SeekFrom::Start(offset)).await?;
    let progress = Arc::new(Progress::new(len == 0));
    let state = FileBody {
        reader: ReaderStream::with_capacity(file.take(len), UPLOAD_CHUNK),
        remaining: len,
        progress: Arc::clone(&progress),
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
