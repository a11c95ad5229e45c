//! The client against a server that closes kept-alive connections left idle, as `serve` does
//! after `--idle-timeout` and Apache after `KeepAliveTimeout`. A request sent on such a
//! connection just as the server closes it gets no answer, and a write is never retried (it
//! may have been done), so the client must not send on a connection idle that long.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::client::POOL_IDLE_TIMEOUT;
use super::mock_tests::read_request;
use super::{Client, ClientConfig, Credentials};

/// How long the server below keeps an idle connection: a little more than the client does,
/// as servers' own keep-alive timeouts are (Apache 5 s, `serve` 15 s).
const SERVER_IDLE: Duration = POOL_IDLE_TIMEOUT.saturating_add(Duration::from_millis(500));

/// A keep-alive HTTP/1.1 server answering every request with an empty Midas envelope, except
/// one that arrives on a connection idle for `SERVER_IDLE` or longer: that connection is
/// closed unanswered (the server's idle close won the race). Counts the connections.
async fn start() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let connections = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(serve(stream));
        }
    });
    (addr, connections)
}

async fn serve(mut stream: TcpStream) {
    let mut buffer = Vec::new();
    let mut idle_since = Instant::now();
    while read_request(&mut stream, &mut buffer).await.is_some() {
        if idle_since.elapsed() >= SERVER_IDLE {
            // Closed for being idle, the request unanswered.
            return;
        }
        let json = r#"{"code":"0","data":"","message":"","stat":"ok"}"#;
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=UTF-8\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        );
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        idle_since = Instant::now();
    }
}

#[tokio::test]
async fn a_write_after_a_pause_is_not_sent_on_a_connection_the_server_closes() {
    let (addr, connections) = start().await;
    let client = Client::new(ClientConfig {
        base_url: format!("http://{addr}/midas"),
        credentials: Credentials::Anonymous,
        connect_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(5),
    })
    .expect("client");
    client.folder_delete(3).await.expect("first write");
    client
        .folder_delete(4)
        .await
        .expect("write on the same connection");
    assert_eq!(connections.load(Ordering::Relaxed), 1, "kept alive");
    // The server's idle close and the next request meet.
    tokio::time::sleep(SERVER_IDLE).await;
    client
        .folder_delete(5)
        .await
        .expect("a write after the pause goes out on a fresh connection");
    assert_eq!(connections.load(Ordering::Relaxed), 2);
}
