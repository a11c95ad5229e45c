//! A hostile or broken server for tests: an HTTP proxy in front of a real `midasfs serve` that
//! passes requests through, except those a test's hook answers itself (a body that stalls, an
//! endless answer, a name no Midas should send). One request per connection, so that every
//! request is seen whole.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request as the proxy received it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Path and query, as sent.
    pub target: String,
    pub head: String,
    pub body: Vec<u8>,
    /// Parameters from the query and a form-encoded body.
    pub params: HashMap<String, String>,
}

impl Request {
    pub fn method(&self) -> &str {
        self.params.get("method").map_or("", String::as_str)
    }

    pub fn is_download(&self) -> bool {
        self.target.starts_with("/download")
    }
}

/// What the proxy does with a request.
pub enum Answer {
    /// Pass it to the server and its answer back.
    Forward,
    /// Pass it to the server and its answer back, the body changed by this function.
    Edit(Box<dyn FnOnce(Vec<u8>) -> Vec<u8> + Send>),
    /// Answer it here: the function writes to the client connection.
    Own(Box<dyn FnOnce(&mut TcpStream) + Send>),
}

type Hook = dyn Fn(&Request) -> Answer + Send + Sync;

pub struct Proxy {
    pub url: String,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Proxy {
    /// Listens on a port of its own and forwards to `upstream` (`host:port`).
    pub fn start(
        upstream: &str,
        hook: impl Fn(&Request) -> Answer + Send + Sync + 'static,
    ) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let hook: Arc<Hook> = Arc::new(hook);
        let upstream = upstream.to_owned();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let (hook, log, upstream) = (Arc::clone(&hook), Arc::clone(&log), upstream.clone());
                std::thread::spawn(move || serve(client, &upstream, &*hook, &log));
            }
        });
        Proxy { url, seen }
    }

    pub fn seen(&self) -> Vec<Request> {
        self.seen.lock().expect("log").clone()
    }
}

fn serve(mut client: TcpStream, upstream: &str, hook: &Hook, log: &Mutex<Vec<Request>>) {
    let Some(request) = read_request(&mut client) else {
        return;
    };
    log.lock().expect("log").push(request.clone());
    let edit = match hook(&request) {
        Answer::Own(answer) => return answer(&mut client),
        Answer::Forward => None,
        Answer::Edit(edit) => Some(edit),
    };
    let mut server = TcpStream::connect(upstream).expect("connect to the server");
    let head: String = request
        .head
        .lines()
        .filter(|line| !line.to_ascii_lowercase().starts_with("connection:"))
        .map(|line| format!("{line}\r\n"))
        .collect();
    server
        .write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())
        .and_then(|()| server.write_all(&request.body))
        .expect("forward the request");
    let mut answer = Vec::new();
    let _ = server.read_to_end(&mut answer);
    let Some(split) = find(&answer, b"\r\n\r\n") else {
        return;
    };
    let (head, body) = (
        String::from_utf8_lossy(&answer[..split]).into_owned(),
        answer[split + 4..].to_vec(),
    );
    let body = match edit {
        Some(edit) => edit(body),
        None => body,
    };
    let head: String = head
        .lines()
        .filter(|line| {
            let lower = line.to_ascii_lowercase();
            !lower.starts_with("content-length:")
                && !lower.starts_with("connection:")
                && !lower.starts_with("transfer-encoding:")
        })
        .map(|line| format!("{line}\r\n"))
        .collect();
    let _ = client.write_all(
        format!(
            "{head}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let _ = client.write_all(&body);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn read_request(client: &mut TcpStream) -> Option<Request> {
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let split = loop {
        if let Some(split) = find(&buffer, b"\r\n\r\n") {
            break split;
        }
        let n = client.read(&mut chunk).ok().filter(|&n| n > 0)?;
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..split]).into_owned();
    let length: usize = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buffer[split + 4..].to_vec();
    while body.len() < length {
        let n = client.read(&mut chunk).ok().filter(|&n| n > 0)?;
        body.extend_from_slice(&chunk[..n]);
    }
    let mut words = head.split(' ');
    words.next()?; // the verb
    let target = words.next()?.to_owned();
    let query = target
        .split_once('?')
        .map_or("", |(_, query)| query)
        .to_owned();
    let mut params = parse_form(&query);
    if head
        .to_ascii_lowercase()
        .contains("application/x-www-form-urlencoded")
    {
        params.extend(parse_form(&String::from_utf8_lossy(&body)));
    }
    Some(Request {
        target,
        head,
        body,
        params,
    })
}

fn parse_form(text: &str) -> HashMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{text}"))
        .map(|url| url.query_pairs().into_owned().collect())
        .unwrap_or_default()
}
