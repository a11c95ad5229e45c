//! A mount of a server that misbehaves: a proxy in front of a real `midasfs serve` stalls
//! downloads, sends endless answers, or names no filesystem can show. The mount must fail
//! quickly and clearly, stay small, and show what it can.

use crate::common;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::mount::Mount;
use common::proxy::{Answer, Proxy};
use common::server::{server_with_private, TestServer};

fn mount(url: &str, server: &TestServer, extra: &[&str]) -> Mount {
    Mount::as_admin(url, &server.email, &server.api_key, extra)
}

fn private(mount: &Mount) -> PathBuf {
    mount.path.join("users/Admin_User/Private")
}

#[test]
fn a_download_that_stalls_fails_within_about_the_timeout() {
    require_fuse!();
    let (server, token, private_id) = server_with_private();
    server.upload_item(&token, &private_id, "stalls.bin", &vec![7u8; 3 << 20]);
    let proxy = Proxy::start(server.addr(), |request| {
        if !request.is_download() {
            return Answer::Forward;
        }
        Answer::Own(Box::new(|client| {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 3 << 20);
            let _ = client.write_all(head.as_bytes());
            let _ = client.write_all(&[7u8; 100]);
            std::thread::sleep(Duration::from_secs(120));
        }))
    });
    let timeout = 2;
    let mount = mount(&proxy.url, &server, &["--timeout", &timeout.to_string()]);
    let path = private(&mount).join("stalls.bin");
    assert_eq!(std::fs::metadata(&path).expect("listed").len(), 3 << 20);
    let started = Instant::now();
    let read = std::fs::read(&path);
    let took = started.elapsed();
    eprintln!(
        "stalled read failed after {took:?}: {read:?}",
        read = read.as_ref().map(Vec::len)
    );
    assert!(
        read.is_err(),
        "a stalled download read as {:?}",
        read.map(|r| r.len())
    );
    assert!(
        took < Duration::from_millis(2500 * timeout),
        "a stall at --timeout {timeout} failed only after {took:?}"
    );
}

fn replace(body: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = &body[..];
    while let Some(at) = rest.windows(from.len()).position(|w| w == from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to);
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

fn errno(result: std::io::Result<impl std::fmt::Debug>) -> Option<i32> {
    result.expect_err("should fail").raw_os_error()
}

#[test]
fn names_no_file_name_can_hold_are_shown_and_lead_to_their_files() {
    require_fuse!();
    let (server, token, private_id) = server_with_private();
    let long = format!("{}.txt", "a long name ".repeat(25));
    assert!(long.len() > 255);
    server.upload_item(&token, &private_id, &long, b"long content");
    server.upload_item(&token, &private_id, "plain.txt", b"plain");
    server.upload_item(&token, &private_id, "SURROGATE.txt", b"odd");
    // What PHP's json_encode can send for a name that is not valid UTF-8: a lone surrogate.
    let proxy = Proxy::start(server.addr(), |request| match request.method() {
        "midas.folder.children" | "midas.item.get" => Answer::Edit(Box::new(|body| {
            replace(body, b"SURROGATE", br"sur\ud800gate")
        })),
        _ => Answer::Forward,
    });
    let mount = mount(&proxy.url, &server, &[]);
    let dir = private(&mount);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("the folder lists despite the odd name")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("UTF-8")
        })
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().any(|name| name == "plain.txt"), "{names:?}");
    let odd = names
        .iter()
        .find(|name| name.contains('\u{fffd}'))
        .expect("the odd name, mapped");
    assert_eq!(std::fs::read(dir.join(odd)).expect("read"), b"odd");
    let shortened = names
        .iter()
        .find(|name| name.starts_with("a long name"))
        .expect("the long name, shortened");
    assert!(shortened.len() <= 255, "{} bytes", shortened.len());
    assert!(shortened.ends_with(").txt"), "{shortened}");
    assert_eq!(
        std::fs::read(dir.join(shortened)).expect("read"),
        b"long content"
    );
    // The same name on the next listing (and the next mount: it comes from the item id).
    assert!(dir.join(shortened).is_file());

    // Names longer than any file name are refused, as a disk filesystem does.
    let too_long = dir.join("x".repeat(256));
    assert_eq!(
        errno(std::fs::File::create(&too_long)),
        Some(libc::ENAMETOOLONG)
    );
    assert_eq!(
        errno(std::fs::create_dir(&too_long)),
        Some(libc::ENAMETOOLONG)
    );
    assert_eq!(
        errno(std::fs::rename(dir.join("plain.txt"), &too_long)),
        Some(libc::ENAMETOOLONG)
    );
    assert_eq!(
        std::fs::read(dir.join("plain.txt")).expect("still there"),
        b"plain"
    );
}

/// The most memory the process has used so far (VmHWM), in bytes.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number");
    kib * 1024
}

#[test]
fn an_endless_listing_answer_fails_without_filling_the_memory() {
    require_fuse!();
    let (server, token, private_id) = server_with_private();
    let huge = server.create_folder(&token, &private_id, "huge");
    let huge_id = common::server::text(&huge["folder_id"]).to_owned();
    server.create_folder(&token, &private_id, "small");
    const SENT: usize = 256 << 20;
    let proxy = Proxy::start(server.addr(), move |request| {
        if request.method() != "midas.folder.children" || request.params["id"] != huge_id {
            return Answer::Forward;
        }
        // 256 MiB of a valid listing, its length not announced (the end is the connection's).
        Answer::Own(Box::new(|client| {
            let item = r#"{"item_id":"99","name":"same name","description":"","sizebytes":"1","date_creation":"2020-01-01 00:00:00","date_update":"2020-01-01 00:00:00","privacy_status":"2","uuid":"u"},"#;
            let mut chunk = String::new();
            while chunk.len() < 1 << 20 {
                chunk.push_str(item);
            }
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n";
            let _ = client.write_all(head.as_bytes());
            let _ = client.write_all(br#"{"code":"0","data":{"folders":[],"items":["#);
            let mut sent = 0;
            while sent < SENT {
                if client.write_all(chunk.as_bytes()).is_err() {
                    return;
                }
                sent += chunk.len();
            }
            let _ =
                client.write_all(br#"{"item_id":"1","name":"end"}]},"message":"","stat":"ok"}"#);
        }))
    });
    let mount = mount(&proxy.url, &server, &["--cache-size", "1"]);
    let dir = private(&mount);
    let huge = dir.join("huge");
    let lister = std::thread::spawn(move || {
        std::fs::read_dir(huge).and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
    });
    // Watched while it runs: a daemon that reads it all must fail here, not swap the machine.
    // Listings are decoded while they arrive, so it stops at the 1,000,000th entry (175 MB of
    // this answer), having decoded those entries (about 320 MB); 256 MiB of this answer hold
    // 1.4 million.
    const BOUND: u64 = 400 << 20;
    while !lister.is_finished() {
        let peak = peak_memory(mount.pid());
        assert!(peak < BOUND, "the daemon grew to {} MiB", peak >> 20);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(errno(lister.join().expect("lister")), Some(libc::EIO));
    let peak = peak_memory(mount.pid());
    eprintln!("peak memory of the daemon: {} MiB", peak >> 20);
    assert!(peak < BOUND, "the daemon grew to {} MiB", peak >> 20);
    // The rest of the mount is unharmed.
    assert!(dir.join("small").is_dir());
    assert_eq!(
        std::fs::read_dir(dir.join("small")).expect("small").count(),
        0
    );
}

#[test]
fn a_walk_does_not_list_ahead_into_a_folder_of_thousands() {
    require_fuse!();
    let (server, token, private_id) = server_with_private();
    for name in ["a", "b"] {
        server.create_folder(&token, &private_id, name);
    }
    let big = server.create_folder(&token, &private_id, "big");
    let big_id = common::server::text(&big["folder_id"]).to_owned();
    for i in 0..1001 {
        server.create_item(&token, &big_id, &format!("item {i}"));
    }
    let proxy = Proxy::start(server.addr(), |_| Answer::Forward);
    let mount = mount(&proxy.url, &server, &[]);
    let dir = private(&mount);
    // A walk: the folder, then two of its subfolders in a row.
    assert_eq!(std::fs::read_dir(&dir).expect("Private").count(), 3);
    std::fs::read_dir(dir.join("a")).expect("a").for_each(drop);
    std::fs::read_dir(dir.join("b")).expect("b").for_each(drop);
    std::thread::sleep(Duration::from_secs(2));
    let details = |proxy: &Proxy| {
        proxy
            .seen()
            .iter()
            .filter(|request| request.method() == "midas.item.get")
            .count()
    };
    assert_eq!(details(&proxy), 0, "item details fetched ahead of the walk");
    // When the walk gets there, it is listed in full.
    assert_eq!(
        std::fs::read_dir(dir.join("big")).expect("big").count(),
        1001
    );
}

/// A large file's part, sent while the file is written, whose connection breaks half-way: the
/// server keeps what arrived, the close goes on from the count the server gives (`getoffset`),
/// checks the server's MD5, and the file arrives whole.
#[test]
fn a_large_upload_cut_half_way_through_a_part_goes_on_from_what_the_server_holds() {
    require_fuse!();
    let (server, token, private_id) = server_with_private();
    let upstream = server.addr().to_owned();
    let cut = std::sync::atomic::AtomicBool::new(false);
    let proxy = Proxy::start(server.addr(), move |request| {
        let part = request.method() == "midas.upload.perform" && request.body.len() >= 32 << 20;
        if !part || cut.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Answer::Forward;
        }
        let (request, upstream) = (request.clone(), upstream.clone());
        Answer::Own(Box::new(move |_client| {
            // Half the body reaches the server, whose answer (that it holds that much) is read
            // here; the mount gets no answer: its connection just closes.
            let mut server = std::net::TcpStream::connect(&upstream).expect("connect");
            let head: String = request
                .head
                .lines()
                .filter(|line| !line.to_ascii_lowercase().starts_with("connection:"))
                .map(|line| format!("{line}\r\n"))
                .collect();
            let half = request.body.len() / 2;
            let _ = server.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes());
            let _ = server.write_all(&request.body[..half]);
            let _ = server.shutdown(std::net::Shutdown::Write);
            let _ = std::io::Read::read_to_end(&mut server, &mut Vec::new());
        }))
    });
    let mount = mount(&proxy.url, &server, &[]);
    let content = common::tree::pseudo_random(100 << 20, 31);
    let path = private(&mount).join("cut.bin");
    let mut file = std::fs::File::create(&path).expect("create");
    // Past 64 MiB, parts go while the file is written: the first one is cut.
    file.write_all(&content[..80 << 20]).expect("write");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !proxy
        .seen()
        .iter()
        .any(|r| r.method() == "midas.upload.perform")
    {
        assert!(Instant::now() < deadline, "nothing was sent while written");
        std::thread::sleep(Duration::from_millis(10));
    }
    file.write_all(&content[80 << 20..]).expect("write");
    drop(file);

    let children = server.call_ok(
        "midas.folder.children",
        &[("token", &token), ("id", &private_id)],
    );
    let items = children["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{children}");
    let item_id = common::server::text(&items[0]["item_id"]);
    let item = server.call_ok("midas.item.get", &[("token", &token), ("id", item_id)]);
    let bitstreams = item["revisions"][0]["bitstreams"]
        .as_array()
        .expect("bitstreams");
    assert_eq!(bitstreams.len(), 1, "{item}");
    assert_eq!(
        common::server::text(&bitstreams[0]["checksum"]),
        common::server::md5_hex(&content)
    );
    let seen = proxy.seen();
    assert!(seen.iter().any(|r| r.method() == "midas.upload.getoffset"));
    // Every byte went once, and the half of the cut part that never reached the server again.
    let sent: usize = seen
        .iter()
        .filter(|r| r.method() == "midas.upload.perform")
        .map(|r| r.body.len())
        .sum();
    let cut_part = seen
        .iter()
        .find(|r| r.method() == "midas.upload.perform" && r.body.len() >= 32 << 20)
        .expect("the part cut")
        .body
        .len();
    assert_eq!(sent, content.len() + (cut_part - cut_part / 2));
}

/// How long the daemon and the programs blocked in its mount may take to end after SIGTERM
/// while the server hangs: a few seconds, whatever the request timeouts are.
const SIGTERM_BOUND: Duration = Duration::from_secs(5);

/// The server stops answering (it accepts and never replies) while `ls -l` waits for a listing;
/// SIGTERM to the daemon ends it within seconds, not after the request timeouts, and the `ls`
/// gets an error instead of hanging.
#[test]
fn sigterm_ends_the_daemon_promptly_and_fails_a_blocked_ls_while_the_server_hangs() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    require_fuse!();
    let (server, token, private_id) = server_with_private();
    let deep = server.create_folder(&token, &private_id, "deep");
    let deeper = server.create_folder(&token, common::server::text(&deep["folder_id"]), "deeper");
    server.upload_item(
        &token,
        common::server::text(&deeper["folder_id"]),
        "inside.txt",
        b"x",
    );
    let (hang, hung) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (hang_seen, hung_count) = (Arc::clone(&hang), Arc::clone(&hung));
    let proxy = Proxy::start(server.addr(), move |_request| {
        if !hang_seen.load(Ordering::SeqCst) {
            return Answer::Forward;
        }
        hung_count.fetch_add(1, Ordering::SeqCst);
        Answer::Own(Box::new(|_client| {
            std::thread::sleep(Duration::from_secs(300))
        }))
    });
    // The default timeouts: a request may wait 30 s for its answer, a call retries for 120 s.
    let mut mount = mount(&proxy.url, &server, &[]);
    assert!(private(&mount).is_dir());
    hang.store(true, Ordering::SeqCst);
    let mut ls = std::process::Command::new("ls")
        .arg("-l")
        .arg(private(&mount).join("deep/deeper"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ls");
    let deadline = Instant::now() + Duration::from_secs(10);
    while hung.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "ls sent nothing to the server");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        ls.try_wait().expect("ls").is_none(),
        "ls waits for the server"
    );

    let signalled = Instant::now();
    // SAFETY: sending a signal to the daemon this test started.
    unsafe { libc::kill(mount.pid() as libc::pid_t, libc::SIGTERM) };
    let mut ls_status = None;
    while Instant::now() < signalled + SIGTERM_BOUND {
        ls_status = ls_status.or_else(|| ls.try_wait().expect("ls"));
        if ls_status.is_some() && !mount.daemon_running() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = signalled.elapsed();
    let daemon_ended = !mount.daemon_running();
    if ls_status.is_none() {
        let _ = ls.kill();
    }
    let ls_err = ls
        .wait_with_output()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default();
    eprintln!("after SIGTERM: {took:?}, ls {ls_status:?}: {ls_err}");
    assert!(
        daemon_ended,
        "the daemon still runs {SIGTERM_BOUND:?} after SIGTERM"
    );
    let ls_status = ls_status.expect("ls still blocked after SIGTERM");
    assert!(!ls_status.success(), "ls succeeded against a hung server");
}
