//! Connections that send stored files with `sendfile(2)` right after their response head.
//!
//! hyper only sends bodies it is handed as bytes. For a stored file the download handler
//! instead answers with an empty body and a marker header carrying the `Content-Length` to
//! announce, and hands the file to its connection ([`ConnHandle::send_after_head`]). This
//! stream wrapper rewrites that one response head on its way out (`content-length` := the
//! marker's value, the marker line removed) and then sends the file from the page cache to the
//! socket without copying it through user space. hyper believes it sent an empty body, so
//! keep-alive keeps working: nothing hyper writes afterwards reaches the socket before the file.
//!
//! The same rewrite reproduces Midas's `offset` quirk: a download started at `offset > 0`
//! announces the FULL file size while its body is `offset` bytes shorter (the handler then also
//! asks for `Connection: close`, as the client sees from the real server).
//!
//! The server speaks HTTP/1 only (axum is built without `http2`), so response heads are always
//! plain text this wrapper can find.
//!
//! [`serve_connections`] is the accept loop: hyper with a header-read timeout, an idle timeout
//! and a cap on open connections (the longest-idle closed first), so that clients which
//! connect and send nothing, or a header a byte at a time, cannot starve the others.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::io::{self, IoSlice, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// Name of the marker header (lower case, as hyper writes header names).
pub const FILE_BODY_MARKER: &str = "x-midasfs-file-body";

/// Most bytes one `sendfile` call is asked for: how often a stopped transfer is noticed.
#[cfg(target_os = "linux")]
const SENDFILE_STEP: usize = 8 << 20;

/// How long the sending thread waits for a full socket to drain before it looks again
/// whether the connection is gone.
const POLL_INTERVAL_MS: libc::c_int = 500;

/// Run `work` on a thread of its own (one of [`super::threads`]) and get its result back. For
/// transfers, which last as long as their clients take: held that long, tokio's blocking pool
/// could run out of threads and starve the short database tasks queued behind them.
pub fn spawn_transfer<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> io::Result<Transfer<T>> {
    let (tx, rx) = oneshot::channel();
    super::threads::run(move || {
        // Nobody waits any more when the request was dropped; then the result is moot.
        let _ = tx.send(work());
    })?;
    Ok(Transfer(rx))
}

/// The result of a [`spawn_transfer`] thread; an error if that thread panicked.
pub struct Transfer<T>(oneshot::Receiver<T>);

impl<T> Future for Transfer<T> {
    type Output = io::Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map_err(|_| io::Error::other("transfer thread panicked"))
    }
}

/// A region of a stored file to send as a response body.
pub struct FileBody {
    pub file: std::fs::File,
    pub offset: u64,
    pub len: u64,
    /// Told each count of bytes handed to the socket.
    pub on_sent: Box<dyn Fn(u64) + Send>,
}

/// What a handler knows about its connection: the file to send after the next marked head.
#[derive(Clone)]
pub struct ConnHandle {
    next_file: Arc<Mutex<Option<FileBody>>>,
    remote: Option<SocketAddr>,
}

impl ConnHandle {
    fn new(remote: Option<SocketAddr>) -> ConnHandle {
        ConnHandle {
            next_file: Arc::new(Mutex::new(None)),
            remote,
        }
    }

    /// The address of the client at the other end.
    pub fn remote_ip(&self) -> Option<IpAddr> {
        self.remote.map(|a| a.ip())
    }

    /// Send `body` after the next response head carrying [`FILE_BODY_MARKER`]; that response
    /// must have an empty body.
    pub fn send_after_head(&self, body: FileBody) {
        *lock(&self.next_file) = Some(body);
    }
}

impl std::fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let waiting = lock(&self.next_file).is_some();
        f.debug_struct("ConnHandle")
            .field("file_waiting", &waiting)
            .finish()
    }
}

fn lock(slot: &Mutex<Option<FileBody>>) -> std::sync::MutexGuard<'_, Option<FileBody>> {
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Limits that keep a server facing a network answering: see [`serve_connections`].
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Most open connections; beyond it the longest-idle ones are closed.
    pub max_connections: usize,
    /// A connection that sends nothing for this long after it opened or after its last
    /// response is closed.
    pub idle_timeout: Duration,
    /// A request head must be complete this long after the connection began waiting for it
    /// (hyper's header-read timeout): slow-header clients cannot hold a connection.
    pub header_timeout: Duration,
}

/// Descriptors kept free for the store, stored files being sent and uploads.
const FD_HEADROOM: u64 = 256;
/// Descriptors one busy connection may hold: its socket, a stored file and a duplicate
/// of the socket while that file is sent.
const FDS_PER_CONNECTION: u64 = 3;

/// Raise the soft `RLIMIT_NOFILE` as far as `wanted` connections need (up to the hard limit),
/// and return how many connections the resulting limit allows, headroom kept.
pub fn fit_connection_limit(wanted: usize) -> usize {
    let need = (wanted as u64)
        .saturating_mul(FDS_PER_CONNECTION)
        .saturating_add(FD_HEADROOM);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return wanted;
        }
        if limit.rlim_cur < need {
            let raised = libc::rlimit {
                rlim_cur: need.min(limit.rlim_max),
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = raised.rlim_cur;
            }
        }
        limit.rlim_cur
    };
    let fits = usize::try_from(soft.saturating_sub(FD_HEADROOM) / FDS_PER_CONNECTION)
        .unwrap_or(usize::MAX)
        .max(1);
    if fits < wanted {
        log::warn!(
            "open-file limit {soft} allows {fits} connections, not {wanted}; serving at most {fits}"
        );
    }
    fits.min(wanted)
}

/// One open connection as the registry sees it.
struct ConnState {
    /// Requests being answered plus files being sent: not idle while above zero.
    busy: AtomicUsize,
    /// Milliseconds since the registry's epoch when `busy` last dropped to zero (or the
    /// connection opened).
    idle_since: AtomicU64,
    /// Milliseconds since the registry's epoch of the last bytes read.
    last_read: AtomicU64,
    close: tokio::sync::Notify,
}

/// The open connections: the cap closes the longest-idle ones, a sweep the silent ones.
struct Registry {
    epoch: Instant,
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add a connection; when that makes more than `max`, close the longest-idle other one.
    fn register(&self, max: usize) -> (u64, Arc<ConnState>) {
        let now = self.now_ms();
        let state = Arc::new(ConnState {
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now),
            last_read: AtomicU64::new(0),
            close: tokio::sync::Notify::new(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut conns = self.conns();
        conns.insert(id, Arc::clone(&state));
        if conns.len() > max {
            let oldest_idle = conns
                .iter()
                .filter(|(other, c)| **other != id && c.busy.load(Ordering::Acquire) == 0)
                .min_by_key(|(_, c)| c.idle_since.load(Ordering::Relaxed));
            match oldest_idle {
                Some((_, c)) => c.close.notify_one(),
                None => log::warn!("{} connections open, all busy", conns.len()),
            }
        }
        (id, state)
    }

    /// Close every connection idle and silent for longer than `timeout`.
    fn sweep(&self, timeout: Duration) {
        let now = self.now_ms();
        let timeout = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        for c in self.conns().values() {
            let since = c.idle_since.load(Ordering::Relaxed);
            if c.busy.load(Ordering::Acquire) == 0
                && c.last_read.load(Ordering::Relaxed) < since
                && now.saturating_sub(since) > timeout
            {
                c.close.notify_one();
            }
        }
    }
}

/// Marks its connection busy while it lives (a request until its response body is sent, or
/// a file being sent).
struct Busy {
    registry: Arc<Registry>,
    state: Arc<ConnState>,
}

impl Busy {
    fn new(registry: &Arc<Registry>, state: &Arc<ConnState>) -> Busy {
        state.busy.fetch_add(1, Ordering::AcqRel);
        Busy {
            registry: Arc::clone(registry),
            state: Arc::clone(state),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // Idle from now: set the time before the count can be seen at zero.
        self.state
            .idle_since
            .store(self.registry.now_ms(), Ordering::Relaxed);
        self.state.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection busy until hyper has sent (dropped) it.
struct BusyBody {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for BusyBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Removes its connection from the registry when the connection's task ends.
struct Registered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.conns().remove(&self.id);
    }
}

/// Serve `app` over HTTP/1 on `listener` until `stop` turns true, then let open requests
/// finish (idle connections close at once) and return when every connection has ended.
///
/// Unlike `axum::serve` this bounds what a client can hold: at most `max_connections` open
/// (a new one closes the longest-idle connection), request heads within `header_timeout`,
/// silence at most `idle_timeout`. Handlers find a [`ConnHandle`] in `ConnectInfo`.
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    let registry = Arc::new(Registry {
        epoch: Instant::now(),
        conns: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
    });
    let sweeper = {
        let registry = Arc::clone(&registry);
        let every =
            (limits.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                registry.sweep(limits.idle_timeout);
            }
        })
    };
    let (done_tx, mut done_rx) = watch::channel(());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors and the like: wait rather than spin.
                log::warn!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (id, state) = registry.register(limits.max_connections);
        let registered = Registered {
            registry: Arc::clone(&registry),
            id,
        };
        let handle = ConnHandle::new(Some(remote));
        let io = MidasStream {
            inner: stream,
            next_file: Arc::clone(&handle.next_file),
            outgoing: VecDeque::new(),
            registry: Arc::clone(&registry),
            state: Arc::clone(&state),
        };
        let service = {
            let registry = Arc::clone(&registry);
            let state = Arc::clone(&state);
            let app = TowerToHyperService::new(app.clone());
            hyper::service::service_fn(move |mut request: Request<Incoming>| {
                let busy = Busy::new(&registry, &state);
                request.extensions_mut().insert(ConnectInfo(handle.clone()));
                let answer = hyper::service::Service::call(&app, request);
                async move {
                    let response = answer.await?;
                    Ok::<_, Infallible>(
                        response.map(|inner| Body::new(BusyBody { inner, _busy: busy })),
                    )
                }
            })
        };
        let mut stop = stop.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let _registered = registered;
            let _done = done;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            let mut stopping = false;
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    // Dropping the connection closes it: only ever asked of idle ones.
                    _ = state.close.notified() => break,
                    _ = stop.wait_for(|s| *s), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    sweeper.abort();
    drop(listener);
    drop(done_tx);
    // Every connection task holds a sender: this ends when the last one has ended.
    let _ = done_rx.changed().await;
}

/// Bytes accepted from hyper but not yet on the socket, in order.
enum Outgoing {
    Bytes {
        data: Vec<u8>,
        written: usize,
    },
    /// The connection stays busy until the file is sent.
    File {
        send: FileSend,
        _busy: Busy,
    },
}

pub struct MidasStream {
    inner: TcpStream,
    next_file: Arc<Mutex<Option<FileBody>>>,
    outgoing: VecDeque<Outgoing>,
    registry: Arc<Registry>,
    state: Arc<ConnState>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// Rewrite the response head holding the marker: `content-length` := the marker's value, and
/// the marker line removed. Returns everything up to the end of that head, rewritten, and the
/// position in `buf` where the bytes after the head start; `None` when `buf` holds no complete
/// marked head.
fn rewrite_head(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let marker = format!("\r\n{FILE_BODY_MARKER}: ");
    let m = find(buf, marker.as_bytes())?;
    let value_start = m + marker.len();
    let marker_end = value_start + find(&buf[value_start..], b"\r\n")?;
    let length = std::str::from_utf8(&buf[value_start..marker_end])
        .ok()?
        .trim()
        .to_owned();
    let head_start = rfind(&buf[..m], b"HTTP/1.")?;
    let head_end = m + find(&buf[m..], b"\r\n\r\n")? + 4;
    let cl = b"\r\ncontent-length: ";
    let c = head_start + find(&buf[head_start..head_end], cl)?;
    let c_value = c + cl.len();
    let c_end = c_value + find(&buf[c_value..], b"\r\n")?;
    let mut out = Vec::with_capacity(head_end + 16);
    // The two ranges never overlap: each is one header line of the head.
    if c_value < m {
        out.extend_from_slice(&buf[..c_value]);
        out.extend_from_slice(length.as_bytes());
        out.extend_from_slice(&buf[c_end..m]);
        out.extend_from_slice(&buf[marker_end..head_end]);
    } else {
        out.extend_from_slice(&buf[..m]);
        out.extend_from_slice(&buf[marker_end..c_value]);
        out.extend_from_slice(length.as_bytes());
        out.extend_from_slice(&buf[c_end..head_end]);
    }
    Some((out, head_end))
}

/// A response head and file body being written by a thread of its own. Dropping it (the
/// connection is gone) stops the thread at its next step.
struct FileSend {
    done: Transfer<io::Result<()>>,
    stop: Arc<AtomicBool>,
}

impl FileSend {
    fn start(socket: &TcpStream, head: Vec<u8>, body: FileBody) -> io::Result<FileSend> {
        // A duplicate of the socket keeps its descriptor valid for the thread even if the
        // connection is dropped first. It shares O_NONBLOCK with tokio's copy, so the thread
        // waits for room with poll(2) and never blocks in a write.
        let socket = std::net::TcpStream::from(socket.as_fd().try_clone_to_owned()?);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let done = spawn_transfer(move || {
            // Only full segments while the file goes out (the connection runs TCP_NODELAY):
            // fewer, larger packets, measurably less CPU per byte. Uncorking flushes the tail.
            // (Not during a large body's first MiB: see `sendfile_all`.)
            set_cork(&socket, true);
            let sent = write_all_nonblocking(&socket, &head, &thread_stop)
                .and_then(|()| sendfile_all(&socket, &body, &thread_stop));
            set_cork(&socket, false);
            sent
        })?;
        Ok(FileSend { done, stop })
    }

    fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(ready!(Pin::new(&mut self.done).poll(cx)).and_then(|sent| sent))
    }
}

impl Drop for FileSend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Holds back partial segments while set (TCP_NOPUSH where there is no TCP_CORK).
#[cfg(target_os = "linux")]
const CORK: libc::c_int = libc::TCP_CORK;
#[cfg(not(target_os = "linux"))]
const CORK: libc::c_int = libc::TCP_NOPUSH;

/// Set or clear TCP_CORK. Only a packet-size optimisation: a failure changes nothing else,
/// so it is ignored.
fn set_cork(socket: &std::net::TcpStream, on: bool) {
    set_tcp_option(socket, CORK, libc::c_int::from(on));
}

/// Set the TCP-level option `option` of `socket` to `value`, for options that only tune how
/// the bytes go out: a failure is ignored.
fn set_tcp_option(socket: &std::net::TcpStream, option: libc::c_int, value: libc::c_int) {
    // SAFETY: the option value points to a c_int and its size is passed with it.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            option,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "connection closed")
}

/// Wait until the socket can take more bytes (or has failed, which the next write reports).
fn wait_writable(socket: &std::net::TcpStream) -> io::Result<()> {
    let mut poll_fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, and the count says one.
    if unsafe { libc::poll(&mut poll_fd, 1, POLL_INTERVAL_MS) } < 0 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    Ok(())
}

fn write_all_nonblocking(
    mut socket: &std::net::TcpStream,
    mut data: &[u8],
    stop: &AtomicBool,
) -> io::Result<()> {
    while !data.is_empty() {
        if stop.load(Ordering::Relaxed) {
            return Err(stopped());
        }
        match socket.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => wait_writable(socket)?,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Unsent bytes a file body may queue in its socket until its client has taken
/// [`SHORT_QUEUE_UNTIL`] of it (`TCP_NOTSENT_LOWAT`). Without the bound the kernel took a few
/// hundred KiB of the file at once, read from disk and queued them, however little the client
/// read: a random read through the mount (4 KiB at an offset, then the connection closed)
/// made the server read and queue about 290 KiB, and freeing that queue at the close was a
/// fifth of the mount's CPU. Past that start the queue is the kernel's own again, so that a
/// long transfer is not split into more, smaller `sendfile` calls.
#[cfg(target_os = "linux")]
const SHORT_QUEUE: libc::c_int = 64 * 1024;
#[cfg(target_os = "linux")]
const SHORT_QUEUE_UNTIL: u64 = 1 << 20;

#[cfg(target_os = "linux")]
fn sendfile_all(
    socket: &std::net::TcpStream,
    body: &FileBody,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut offset = libc::off_t::try_from(body.offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
    let mut left = body.len;
    let mut short_queue = body.len > SHORT_QUEUE_UNTIL;
    if short_queue {
        set_tcp_option(socket, libc::TCP_NOTSENT_LOWAT, SHORT_QUEUE);
        // No cork while the queue is bounded: the cork holds a partial segment back until more
        // data follows, and with the bound no more data follows until the queue drains, so the
        // tail waited for the cork's own timer (200 ms). A client reading the first MiB of a
        // larger file waited that long about one time in five.
        set_cork(socket, false);
    }
    while left > 0 {
        if short_queue && body.len - left >= SHORT_QUEUE_UNTIL {
            // 0: the system's default, no bound.
            set_tcp_option(socket, libc::TCP_NOTSENT_LOWAT, 0);
            set_cork(socket, true);
            short_queue = false;
        }
        if stop.load(Ordering::Relaxed) {
            return Err(stopped());
        }
        let step = usize::try_from(left)
            .unwrap_or(SENDFILE_STEP)
            .min(SENDFILE_STEP);
        // SAFETY: both descriptors are open for the whole call, and `offset` is a valid
        // off_t the kernel advances by the bytes sent.
        let sent =
            unsafe { libc::sendfile(socket.as_raw_fd(), body.file.as_raw_fd(), &mut offset, step) };
        match sent {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stored file shrank",
                ))
            }
            n if n > 0 => {
                let n = n.unsigned_abs() as u64;
                left -= n;
                (body.on_sent)(n);
            }
            _ => {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::WouldBlock => wait_writable(socket)?,
                    io::ErrorKind::Interrupted => {}
                    _ => return Err(err),
                }
            }
        }
    }
    Ok(())
}

/// Where there is no Linux sendfile(2): the same through a buffer.
#[cfg(not(target_os = "linux"))]
fn sendfile_all(
    socket: &std::net::TcpStream,
    body: &FileBody,
    stop: &AtomicBool,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buffer = vec![0; 1 << 20];
    let (mut offset, mut left) = (body.offset, body.len);
    while left > 0 {
        let want = usize::try_from(left)
            .unwrap_or(buffer.len())
            .min(buffer.len());
        let n = body.file.read_at(&mut buffer[..want], offset)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stored file shrank",
            ));
        }
        write_all_nonblocking(socket, &buffer[..n], stop)?;
        offset += n as u64;
        left -= n as u64;
        (body.on_sent)(n as u64);
    }
    Ok(())
}

impl MidasStream {
    /// Write out everything accepted earlier, in order.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(front) = self.outgoing.front_mut() {
            match front {
                Outgoing::Bytes { data, written } => {
                    while *written < data.len() {
                        let n =
                            ready!(Pin::new(&mut self.inner).poll_write(cx, &data[*written..]))?;
                        if n == 0 {
                            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                        }
                        *written += n;
                    }
                }
                Outgoing::File { send, .. } => ready!(send.poll_done(cx))?,
            }
            self.outgoing.pop_front();
        }
        Poll::Ready(Ok(()))
    }

    /// When `buf` holds the marked head and a file waits for it: queue the rewritten head,
    /// the file and whatever follows the head, all of `buf` being taken.
    fn take_marked_head(&mut self, buf: &[u8]) -> io::Result<bool> {
        let mut next_file = lock(&self.next_file);
        if next_file.is_none() {
            return Ok(false);
        }
        let Some((head, rest_at)) = rewrite_head(buf) else {
            return Ok(false);
        };
        let Some(body) = next_file.take() else {
            return Ok(false);
        };
        drop(next_file);
        let busy = Busy::new(&self.registry, &self.state);
        self.outgoing.push_back(Outgoing::File {
            send: FileSend::start(&self.inner, head, body)?,
            _busy: busy,
        });
        if rest_at < buf.len() {
            self.outgoing.push_back(Outgoing::Bytes {
                data: buf[rest_at..].to_vec(),
                written: 0,
            });
        }
        Ok(true)
    }
}

impl AsyncRead for MidasStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let now = self.registry.now_ms();
            self.state.last_read.store(now, Ordering::Relaxed);
        }
        read
    }
}

impl AsyncWrite for MidasStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        if this.take_marked_head(buf)? {
            // The bytes are ours now; a Pending here is resolved by later writes/flushes.
            if let Poll::Ready(Err(err)) = this.poll_drain(cx) {
                return Poll::Ready(Err(err));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_drain(cx))?;
        if lock(&self.next_file).is_some() {
            // A head is always the first buffer hyper hands over.
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return self.poll_write(cx, first);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        // Lets hyper hand body chunks over as they are instead of copying them into one buffer.
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::{ConnectInfo, State};
    use axum::response::Response;
    use axum::routing::get;
    use axum::Router;
    use std::io::Read;
    use std::path::PathBuf;

    #[test]
    fn head_is_rewritten_in_either_order() {
        let a = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-midasfs-file-body: 10244\r\nconnection: close\r\n\r\nNEXT";
        let (head, rest_at) = rewrite_head(a).expect("rewritten");
        assert_eq!(
            head,
            b"HTTP/1.1 200 OK\r\ncontent-length: 10244\r\nconnection: close\r\n\r\n".to_vec()
        );
        assert_eq!(&a[rest_at..], b"NEXT");
        let b = b"older bytesHTTP/1.1 200 OK\r\nx-midasfs-file-body: 9\r\ncontent-type: x\r\ncontent-length: 0\r\n\r\n";
        let (head, rest_at) = rewrite_head(b).expect("rewritten");
        assert_eq!(
            head,
            b"older bytesHTTP/1.1 200 OK\r\ncontent-type: x\r\ncontent-length: 9\r\n\r\n".to_vec()
        );
        assert_eq!(rest_at, b.len());
        assert!(rewrite_head(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nBODY").is_none());
        assert!(
            rewrite_head(b"HTTP/1.1 200 OK\r\nx-midasfs-file-body: 9\r\ncontent-len").is_none()
        );
    }

    /// What the test server's `/file` route sends, and how it reports back.
    struct FileRoute {
        path: PathBuf,
        sent: Arc<std::sync::atomic::AtomicU64>,
        /// Closed when a sent file's body is dropped, i.e. its sending thread has ended.
        body_dropped: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    }

    async fn send_file(
        State(route): State<Arc<FileRoute>>,
        ConnectInfo(conn): ConnectInfo<ConnHandle>,
    ) -> Response {
        let file = std::fs::File::open(&route.path).expect("open");
        let len = file.metadata().expect("metadata").len();
        let sent = Arc::clone(&route.sent);
        let dropped = route.body_dropped.lock().expect("lock").take();
        conn.send_after_head(FileBody {
            file,
            offset: 0,
            len,
            on_sent: Box::new(move |n| {
                let _keep_until_dropped = &dropped;
                sent.fetch_add(n, Ordering::Relaxed);
            }),
        });
        let mut response = Response::new(Body::empty());
        response
            .headers_mut()
            .insert(FILE_BODY_MARKER, axum::http::HeaderValue::from(len));
        response
    }

    async fn start_server(route: Arc<FileRoute>) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new()
            .route("/file", get(send_file))
            .route("/text", get(|| async { "text" }))
            .with_state(route);
        let (stop_tx, stop_rx) = watch::channel(false);
        // Lives as long as the test's runtime: the server never stops.
        std::mem::forget(stop_tx);
        let limits = ConnLimits {
            max_connections: 16,
            idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(60),
        };
        tokio::spawn(serve_connections(listener, app, limits, stop_rx));
        addr
    }

    fn route_for(path: PathBuf) -> (Arc<FileRoute>, std::sync::mpsc::Receiver<()>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let route = Arc::new(FileRoute {
            path,
            sent: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            body_dropped: Mutex::new(Some(tx)),
        });
        (route, rx)
    }

    /// One response off `all` from `at`: its head (lower case) and its body.
    fn next_response(all: &[u8], at: &mut usize) -> (String, Vec<u8>) {
        let head_len = find(&all[*at..], b"\r\n\r\n").expect("a head") + 4;
        let head = String::from_utf8_lossy(&all[*at..*at + head_len]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .expect("content-length")
            .trim()
            .parse()
            .expect("a number");
        let body_start = *at + head_len;
        *at = body_start + length;
        (head, all[body_start..*at].to_vec())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_keep_their_place_among_pipelined_responses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("blob");
        let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).expect("write");
        let (route, _dropped) = route_for(path);
        let addr = start_server(Arc::clone(&route)).await;
        let all = tokio::task::spawn_blocking(move || {
            let mut client = std::net::TcpStream::connect(addr).expect("connect");
            client
                .write_all(
                    b"GET /file HTTP/1.1\r\nHost: t\r\n\r\n\
                      GET /text HTTP/1.1\r\nHost: t\r\n\r\n\
                      GET /file HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                )
                .expect("send");
            let mut all = Vec::new();
            client.read_to_end(&mut all).expect("read");
            all
        })
        .await
        .expect("client");
        let mut at = 0;
        let (head, body) = next_response(&all, &mut at);
        assert!(!head.contains(FILE_BODY_MARKER), "{head}");
        assert!(body == content, "first file differs");
        let (_, body) = next_response(&all, &mut at);
        assert_eq!(body, b"text");
        let (_, body) = next_response(&all, &mut at);
        assert!(body == content, "second file differs");
        assert_eq!(at, all.len(), "bytes after the last response");
        assert_eq!(route.sent.load(Ordering::Relaxed), 2 * content.len() as u64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_goes_away_stops_the_transfer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big");
        // Far more than the socket buffers can hold: sparse, so nothing is written to disk.
        let size = 1u64 << 30;
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(size))
            .expect("sparse file");
        let (route, dropped) = route_for(path);
        let addr = start_server(Arc::clone(&route)).await;
        tokio::task::spawn_blocking(move || {
            let mut client = std::net::TcpStream::connect(addr).expect("connect");
            client
                .write_all(b"GET /file HTTP/1.1\r\nHost: t\r\n\r\n")
                .expect("send");
            let mut first = [0u8; 4096];
            client.read_exact(&mut first).expect("first bytes");
            // Gone without reading the rest.
        })
        .await
        .expect("client");
        // The sending thread ends and drops the body; a generous bound, not a timing check.
        let ended = tokio::task::spawn_blocking(move || {
            dropped.recv_timeout(std::time::Duration::from_secs(60))
        })
        .await
        .expect("wait");
        assert_eq!(ended, Err(std::sync::mpsc::RecvTimeoutError::Disconnected));
        assert!(route.sent.load(Ordering::Relaxed) < size);
    }
}
