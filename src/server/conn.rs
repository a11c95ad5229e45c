//! Connections that can reproduce Midas's `offset` quirk: a download started at `offset > 0`
//! advertises the FULL file size in `Content-Length` while its body is `offset` bytes shorter.
//!
//! hyper refuses to send a body shorter than its `Content-Length`, so the handler sends an
//! honest response (exact length, `Connection: close`) carrying a marker header with the size
//! to advertise, and flags its connection. This stream wrapper then rewrites that one response
//! head on its way out: the `content-length` value becomes the full size and the marker line
//! goes away. hyper closes the connection after the body, which is what the client sees from
//! the real server. Unflagged connections pass bytes through untouched.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Name of the marker header (lower case, as hyper writes header names).
pub const FULL_LENGTH_MARKER: &str = "x-midasfs-full-length";

const NOT_FLAGGED: u64 = u64::MAX;

/// What a handler knows about its connection: the flag for the next response head.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    advertise: Arc<AtomicU64>,
}

impl ConnHandle {
    fn new() -> ConnHandle {
        ConnHandle {
            advertise: Arc::new(AtomicU64::new(NOT_FLAGGED)),
        }
    }

    /// Ask for the next response head carrying the marker to advertise `full_length`.
    pub fn advertise_full_length(&self, full_length: u64) {
        self.advertise.store(full_length, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, MidasListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, MidasListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP listener whose connections are [`RewritingStream`]s.
pub struct MidasListener {
    inner: TcpListener,
}

impl MidasListener {
    pub fn new(inner: TcpListener) -> MidasListener {
        MidasListener { inner }
    }
}

impl Listener for MidasListener {
    type Io = RewritingStream;
    type Addr = ConnHandle;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, _remote)) => {
                    let _ = stream.set_nodelay(true);
                    let handle = ConnHandle::new();
                    let io = RewritingStream {
                        inner: stream,
                        advertise: Arc::clone(&handle.advertise),
                        pending: Vec::new(),
                        pending_pos: 0,
                    };
                    return (io, handle);
                }
                Err(err) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    log::warn!("accept failed: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr().map(|_| ConnHandle::new())
    }
}

pub struct RewritingStream {
    inner: TcpStream,
    advertise: Arc<AtomicU64>,
    /// Rewritten bytes already accepted from hyper but not yet written to the socket.
    pending: Vec<u8>,
    pending_pos: usize,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// Rewrite the response head holding the marker: `content-length` := the marker's value, and
/// the marker line removed. `None` when `buf` holds no complete marked head.
fn rewrite_head(buf: &[u8]) -> Option<Vec<u8>> {
    let marker = format!("\r\n{FULL_LENGTH_MARKER}: ");
    let m = find(buf, marker.as_bytes())?;
    let value_start = m + marker.len();
    let marker_end = value_start + find(&buf[value_start..], b"\r\n")?;
    let full = std::str::from_utf8(&buf[value_start..marker_end])
        .ok()?
        .trim()
        .to_owned();
    let head_start = rfind(&buf[..m], b"HTTP/1.")?;
    let head_end = m + find(&buf[m..], b"\r\n\r\n")?;
    let cl = b"\r\ncontent-length: ";
    let c = head_start + find(&buf[head_start..head_end], cl)?;
    let c_value = c + cl.len();
    let c_end = c_value + find(&buf[c_value..], b"\r\n")?;
    let mut out = Vec::with_capacity(buf.len() + 16);
    // The two ranges never overlap: each is one header line of the head.
    if c_value < m {
        out.extend_from_slice(&buf[..c_value]);
        out.extend_from_slice(full.as_bytes());
        out.extend_from_slice(&buf[c_end..m]);
        out.extend_from_slice(&buf[marker_end..]);
    } else {
        out.extend_from_slice(&buf[..m]);
        out.extend_from_slice(&buf[marker_end..c_value]);
        out.extend_from_slice(full.as_bytes());
        out.extend_from_slice(&buf[c_end..]);
    }
    Some(out)
}

impl RewritingStream {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending_pos < self.pending.len() {
            let n = ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.pending_pos..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending_pos += n;
        }
        self.pending.clear();
        self.pending_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for RewritingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for RewritingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        if this.advertise.load(Ordering::SeqCst) != NOT_FLAGGED {
            if let Some(rewritten) = rewrite_head(buf) {
                this.advertise.store(NOT_FLAGGED, Ordering::SeqCst);
                this.pending = rewritten;
                this.pending_pos = 0;
                // The bytes are ours now; a Pending here is resolved by later writes/flushes.
                if let Poll::Ready(Err(err)) = this.poll_drain(cx) {
                    return Poll::Ready(Err(err));
                }
                return Poll::Ready(Ok(buf.len()));
            }
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
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

    #[test]
    fn head_is_rewritten_in_either_order() {
        let a = b"HTTP/1.1 200 OK\r\ncontent-length: 244\r\nx-midasfs-full-length: 10244\r\nconnection: close\r\n\r\nBODY";
        assert_eq!(
            rewrite_head(a).expect("rewritten"),
            b"HTTP/1.1 200 OK\r\ncontent-length: 10244\r\nconnection: close\r\n\r\nBODY".to_vec()
        );
        let b = b"HTTP/1.1 200 OK\r\nx-midasfs-full-length: 9\r\ncontent-type: x\r\ncontent-length: 4\r\n\r\nBODY";
        assert_eq!(
            rewrite_head(b).expect("rewritten"),
            b"HTTP/1.1 200 OK\r\ncontent-type: x\r\ncontent-length: 9\r\n\r\nBODY".to_vec()
        );
        assert!(rewrite_head(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nBODY").is_none());
    }
}
