//! `midasfs serve` as a black box: the real binary on a temporary store, spoken to over HTTP.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use common::server::{md5_hex, server_with_private, text, TestServer, ADMIN_EMAIL, ADMIN_PASSWORD};

fn sample(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| {
                    v["item_id"]
                        .as_str()
                        .or(v["folder_id"].as_str())
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A raw HTTP/1.1 GET: status line + headers, and the body read until the server closes.
fn raw_get(addr: &str, path: &str) -> (String, Vec<u8>) {
    let all = send_get(addr, path, Duration::from_secs(30)).expect("read");
    head_and_body(&all)
}

/// Sends a raw HTTP/1.1 GET and reads until the server closes, each read within `timeout`.
fn send_get(addr: &str, path: &str, timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(timeout)).expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut all = Vec::new();
    stream.read_to_end(&mut all).map(|_| all)
}

/// An answer's status line and headers (lower case), and its body.
fn head_and_body(all: &[u8]) -> (String, Vec<u8>) {
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head end");
    (
        String::from_utf8_lossy(&all[..split]).to_lowercase(),
        all[split + 4..].to_vec(),
    )
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

#[test]
fn wire_format_and_authentication_match_midas() {
    let server = TestServer::start();
    let body = server.get("/api/json?method=midas.version");
    assert_eq!(body.headers()["content-type"], "text/html; charset=UTF-8");
    assert_eq!(
        body.text().expect("text"),
        r#"{"code":"0","data":{"version":"3.4.2"},"message":"","stat":"ok"}"#
    );

    let unknown = server.call("midas.no.such.method", &[]);
    assert_eq!(unknown["code"], "-101");
    assert_eq!(
        unknown["message"],
        "Server error. Requested method midas.no.such.method does not exist."
    );
    let missing = server
        .http()
        .post(format!("{}/api/json", server.url))
        .send()
        .expect("no method")
        .text()
        .expect("text");
    assert_eq!(
        missing,
        "Inconsistent request: please set a method parameter"
    );

    let get_key = server.call_by_get(
        "midas.user.apikey.default",
        &[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)],
    );
    assert_eq!(
        (get_key["code"].as_str(), get_key["message"].as_str()),
        (Some("-153"), Some("POST method required"))
    );
    assert_eq!(
        server.call_fail(
            "midas.user.apikey.default",
            &[("email", ADMIN_EMAIL), ("password", "wrong")]
        ),
        ("-150".into(), "Login failed".into())
    );
    let key = server.call_ok(
        "midas.user.apikey.default",
        &[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)],
    );
    assert_eq!(key["apikey"], server.api_key.as_str());

    let bad = server.call(
        "midas.login",
        &[
            ("email", ADMIN_EMAIL),
            ("apikey", "x"),
            ("appname", "Default"),
        ],
    );
    assert_eq!(
        (
            bad["code"].as_str(),
            bad["message"].as_str(),
            bad["stat"].as_str()
        ),
        (Some("0"), Some(""), Some("fail"))
    );
    assert_eq!(
        server.call_fail("midas.login", &[("email", ADMIN_EMAIL), ("apikey", "x")]),
        ("-150".into(), "Parameter appname is not defined".into())
    );
    assert_eq!(
        server
            .call_fail(
                "midas.login",
                &[
                    ("email", "nobody@example.com"),
                    ("apikey", "x"),
                    ("appname", "Default")
                ]
            )
            .0,
        "-150"
    );
    let token = server.token();
    assert_eq!(token.len(), 32);
    assert!(token.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(
        server.token(),
        token,
        "login returns the same token until it expires"
    );
    assert_eq!(
        server.call_fail("midas.user.folders", &[("token", "")]),
        ("-101".into(), "Invalid token".into())
    );
    assert_eq!(
        server.call_ok("midas.user.folders", &[]),
        Value::Array(vec![])
    );
    let folders = server.call_ok("midas.user.folders", &[("token", &token)]);
    let names: Vec<&str> = folders
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(names, ["Private", "Public"]);
    assert_eq!(
        server.call_ok("midas.user.get", &[("email", "nobody@example.com")]),
        ""
    );
    let by_name = server.call_ok(
        "midas.user.get",
        &[("firstname", "Admin"), ("lastname", "User")],
    );
    assert_eq!(by_name["email"], ADMIN_EMAIL);
    assert_eq!(
        server.call_ok("midas.item.searchByName", &[("name", "none")])["items"],
        Value::Array(vec![])
    );

    // Double-encoded UTF-8 and JSON_HEX_TAG escaping, as PHP writes them.
    let private = server.folder_named(Some(&token), ADMIN_EMAIL, "Private");
    let raw = server
        .http()
        .post(format!("{}/api/json", server.url))
        .query(&[
            ("method", "midas.folder.create"),
            ("token", &token),
            ("name", "café <x>"),
            ("parentid", &private),
        ])
        .send()
        .expect("create")
        .text()
        .expect("text");
    assert!(
        raw.contains(r#""name":"caf\u00c3\u00a9 \u003Cx\u003E""#),
        "{raw}"
    );
}

#[test]
fn private_data_never_leaks_through_any_read_method() {
    let server = TestServer::start();
    let admin = server.token();
    let jane_key = server.add_user("jane@example.com", "janepassword1", "jane", "doe");
    let jane = server.login("jane@example.com", &jane_key);

    let private = server.folder_named(Some(&admin), ADMIN_EMAIL, "Private");
    let public = server.folder_named(None, ADMIN_EMAIL, "Public");
    let secret_folder = server.create_folder(&admin, &private, "secret");
    let secret_folder_id = text(&secret_folder["folder_id"]).to_owned();
    let secret_uuid = text(&secret_folder["uuid"]).to_owned();
    let content = b"top secret content\n";
    let item = server.upload_item(&admin, &secret_folder_id, "secret.txt", content);
    server.call_ok(
        "midas.item.setmetadata",
        &[
            ("token", &admin),
            ("itemId", &item),
            ("element", "k"),
            ("value", "v"),
        ],
    );
    let item_info = server.call_ok("midas.item.get", &[("token", &admin), ("id", &item)]);
    let bitstream = text(&item_info["revisions"][0]["bitstreams"][0]["bitstream_id"]).to_owned();
    let item_uuid = text(&item_info["uuid"]).to_owned();
    let public_item = server.upload_item(&admin, &public, "open.txt", b"open\n");

    for (who, token) in [("anonymous", None), ("jane", Some(jane.as_str()))] {
        let with = |extra: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
            let mut p: Vec<(&'static str, String)> =
                extra.iter().map(|(k, v)| (*k, v.to_string())).collect();
            if let Some(t) = token {
                p.push(("token", t.to_owned()));
            }
            p
        };
        let call = |method: &str, extra: &[(&'static str, &str)]| -> Value {
            let p = with(extra);
            let refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
            server.call(method, &refs)
        };
        let denied = |method: &str, extra: &[(&'static str, &str)]| {
            let v = call(method, extra);
            assert_eq!(v["stat"], "fail", "{who}: {method} {extra:?} leaked: {v}");
        };
        denied("midas.folder.get", &[("id", &private)]);
        denied("midas.folder.get", &[("id", &secret_folder_id)]);
        denied("midas.folder.download", &[("id", &secret_folder_id)]);
        denied("midas.item.get", &[("id", &item)]);
        denied("midas.item.getmetadata", &[("id", &item)]);
        denied("midas.item.download", &[("id", &item)]);
        denied("midas.bitstream.get", &[("id", &bitstream)]);
        denied("midas.bitstream.download", &[("id", &bitstream)]);
        denied(
            "midas.bitstream.download",
            &[("checksum", &md5_hex(content))],
        );
        denied(
            "midas.item.exists",
            &[("name", "secret.txt"), ("parentid", &secret_folder_id)],
        );
        denied("midas.bitstream.count", &[("uuid", &secret_uuid)]);
        denied("midas.path.to.root", &[("uuid", &item_uuid)]);
        denied("midas.path.from.root", &[("uuid", &secret_uuid)]);
        denied("midas.resource.get", &[("uuid", &item_uuid)]);
        let children = call("midas.folder.children", &[("id", &private)]);
        assert_eq!(
            ids(&children["data"]["folders"]),
            Vec::<String>::new(),
            "{who}: children leaked"
        );
        let children = call("midas.folder.children", &[("id", &secret_folder_id)]);
        assert_eq!(
            ids(&children["data"]["items"]),
            Vec::<String>::new(),
            "{who}: items leaked"
        );
        let found = call("midas.item.searchbyname", &[("name", "secret.txt")]);
        assert_eq!(
            ids(&found["data"]["items"]),
            Vec::<String>::new(),
            "{who}: search leaked"
        );
        let found = call("midas.resource.search", &[("search", "secret")]);
        assert_eq!(
            found["data"]["results"],
            Value::Array(vec![]),
            "{who}: resource.search leaked"
        );

        // The download controller itself.
        let auth = token.map(|t| format!("&authToken={t}")).unwrap_or_default();
        let direct = server.get(&format!("/download/?bitstream={bitstream}&offset=0{auth}"));
        assert_eq!(direct.status(), 500, "{who}: direct bitstream download");
        let direct = server.get(&format!("/download/?items={item}{auth}"));
        assert_eq!(direct.status(), 403, "{who}: direct item download");
        let direct = server.get(&format!("/download/?folders={secret_folder_id}{auth}"));
        assert_eq!(direct.status(), 403, "{who}: direct folder download");

        // Public data stays visible.
        let open = call("midas.item.get", &[("id", &public_item)]);
        assert_eq!(open["stat"], "ok", "{who}: public item hidden");
    }
    // A public folder's ZIP leaves out private children that were shared in... and the admin sees all.
    assert_eq!(
        server.call_ok("midas.item.get", &[("token", &admin), ("id", &item)])["name"],
        "secret.txt"
    );
    // Jane cannot write into the admin's public folder.
    let (code, _) = server.call_fail(
        "midas.item.create",
        &[("token", &jane), ("name", "x"), ("parentid", &public)],
    );
    assert_eq!(code, "-151");
}

#[test]
fn uploads_make_revisions_and_deduplicate_like_midas() {
    let (server, token, private) = server_with_private();
    let item = server.upload_item(&token, &private, "a.txt", b"first\n");
    // No `revision`: a new revision holding only this file.
    server.upload_to(&token, &item, "b.txt", b"second\n", None);
    // `head`: appended to the latest revision, duplicate names included.
    let after = server.upload_to(&token, &item, "b.txt", b"third!\n", Some("head"));
    assert_eq!(after["sizebytes"], "14");
    assert!(after.get("revisions").is_none());
    let got = server.call_ok("midas.item.get", &[("token", &token), ("id", &item)]);
    let revisions = got["revisions"].as_array().expect("revisions");
    let numbers: Vec<&str> = revisions
        .iter()
        .filter_map(|r| r["revision"].as_str())
        .collect();
    assert_eq!(numbers, ["1", "2"]);
    let names = |r: &Value| -> Vec<String> {
        r["bitstreams"]
            .as_array()
            .expect("bs")
            .iter()
            .filter_map(|b| b["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(names(&revisions[0]), ["a.txt"]);
    assert_eq!(names(&revisions[1]), ["b.txt", "b.txt"]);
    let head = server.call_ok(
        "midas.item.get",
        &[("token", &token), ("id", &item), ("head", "")],
    );
    assert_eq!(head["revisions"].as_array().expect("head").len(), 1);
    assert_eq!(head["revisions"][0]["revision"], "2");

    // Checksum dedup: a known checksum adds the file without a transfer...
    let copy_id = server.create_item(&token, &private, "copy.txt");
    let upload_token_for = |filename: &str, checksum: &str| -> String {
        let upload = server.call_ok(
            "midas.upload.generatetoken",
            &[
                ("token", &token),
                ("itemid", &copy_id),
                ("filename", filename),
                ("checksum", checksum),
            ],
        );
        text(&upload["token"]).to_owned()
    };
    let known = md5_hex(b"first\n");
    assert_eq!(upload_token_for("copy.txt", &known), "");
    let copied = server.call_ok("midas.item.get", &[("token", &token), ("id", &copy_id)]);
    assert_eq!(copied["revisions"][0]["changes"], "Initial revision");
    assert_eq!(
        copied["revisions"][0]["bitstreams"][0]["checksum"],
        known.as_str()
    );
    assert_eq!(copied["sizebytes"], "6");
    // ...and nothing at all when the head already has that name, even for other content.
    let other = md5_hex(b"second\n");
    assert_eq!(upload_token_for("copy.txt", &other), "");
    let unchanged = server.call_ok("midas.item.get", &[("token", &token), ("id", &copy_id)]);
    assert_eq!(
        unchanged["revisions"][0]["bitstreams"]
            .as_array()
            .expect("bs")
            .len(),
        1
    );
    // An unknown checksum gets a real token.
    let fresh = upload_token_for("n.txt", &"0".repeat(32));
    assert_eq!(fresh.split('/').count(), 3);

    // Automatic renaming of items, refusal of duplicate folders unless reuseExisting.
    let renamed = server.call_ok(
        "midas.item.create",
        &[
            ("token", &token),
            ("name", "copy.txt"),
            ("parentid", &private),
        ],
    );
    assert_eq!(renamed["name"], "copy.txt (1)");
    assert_eq!(renamed["sizebytes"], "");
    server.call_ok(
        "midas.folder.create",
        &[("token", &token), ("name", "d"), ("parentid", &private)],
    );
    assert_eq!(
        server
            .call_fail(
                "midas.folder.create",
                &[("token", &token), ("name", "d"), ("parentid", &private)]
            )
            .0,
        "-150"
    );
    server.call_ok(
        "midas.folder.create",
        &[
            ("token", &token),
            ("name", "d"),
            ("parentid", &private),
            ("reuseExisting", "false"),
        ],
    );
}

/// How midasfs sends a file of unknown length while it is written: parts whose body is one
/// byte shorter than the length they declare, each answered −105 with the count held, then the
/// rest with the real length. The checksum is the whole file's, also when the server restarted
/// between parts (it then hashes the file at the end, as Midas always does).
#[test]
fn an_upload_sent_in_parts_of_unknown_length_gets_the_whole_checksum() {
    let (mut server, token, private) = server_with_private();
    let content = sample(900_000, 3);
    for restart_between in [false, true] {
        let name = format!("parts-{restart_between}.bin");
        let item_id = server.create_item(&token, &private, &name);
        let ut = server.upload_token(&token, &item_id, &name);
        for (from, to) in [(0, 300_000), (300_000, 600_000)] {
            let declared = (to + 1).to_string();
            let part = server.upload_perform(
                &[
                    ("uploadtoken", ut.as_str()),
                    ("filename", name.as_str()),
                    ("length", declared.as_str()),
                    ("revision", "head"),
                ],
                content[from..to].to_vec(),
            );
            assert_eq!(part["code"], "-105", "{part}");
            assert_eq!(
                part["message"],
                format!("Failed to upload file - {to}/{declared} bytes transferred").as_str()
            );
            if restart_between {
                server.restart();
            }
        }
        let length = content.len().to_string();
        let done = server.upload_perform(
            &[
                ("uploadtoken", ut.as_str()),
                ("filename", name.as_str()),
                ("length", length.as_str()),
                ("revision", "head"),
            ],
            content[600_000..].to_vec(),
        );
        assert_eq!(done["stat"], "ok", "{done}");
        let token = server.token();
        let got = server.call_ok("midas.item.get", &[("token", &token), ("id", &item_id)]);
        let bitstreams = &got["revisions"][0]["bitstreams"];
        assert_eq!(bitstreams.as_array().map(Vec::len), Some(1), "{got}");
        assert_eq!(bitstreams[0]["checksum"], md5_hex(&content).as_str());
        assert_eq!(bitstreams[0]["sizebytes"], length.as_str());
    }
}

#[test]
fn interrupted_uploads_resume_and_short_bodies_fail_with_105() {
    let (server, token, private) = server_with_private();
    let item_id = server.create_item(&token, &private, "big.bin");
    let content = sample(700_000, 7);
    let length = content.len().to_string();
    let ut = server.upload_token(&token, &item_id, "big.bin");
    let params = [
        ("uploadtoken", ut.as_str()),
        ("filename", "big.bin"),
        ("length", length.as_str()),
        ("revision", "head"),
    ];

    let short = server.upload_perform(&params, content[..300_000].to_vec());
    assert_eq!(short["code"], "-105");
    assert_eq!(
        short["message"],
        format!("Failed to upload file - 300000/{length} bytes transferred").as_str()
    );
    let offset = server.call_ok("midas.upload.getoffset", &[("uploadtoken", &ut)]);
    assert_eq!(offset["offset"], "300000");
    // A smaller total than what arrived is refused, and the data stays.
    let smaller = server.upload_perform(
        &[
            ("uploadtoken", &ut),
            ("filename", "big.bin"),
            ("length", "10"),
        ],
        Vec::new(),
    );
    assert_eq!(smaller["code"], "-105");
    assert_eq!(
        server.call_ok("midas.upload.getoffset", &[("uploadtoken", &ut)])["offset"],
        "300000"
    );
    // A resume that starts before the server's offset (more bytes than are missing) is
    // refused before anything is written: its bytes would land in the wrong place.
    let early = server.upload_perform(&params, content[200_000..].to_vec());
    assert_eq!(early["code"], "-105", "{early}");
    assert_eq!(
        server.call_ok("midas.upload.getoffset", &[("uploadtoken", &ut)])["offset"],
        "300000"
    );
    let done = server.upload_perform(&params, content[300_000..].to_vec());
    assert_eq!(done["stat"], "ok", "{done}");
    assert_eq!(done["data"]["sizebytes"], length.as_str());
    let got = server.call_ok("midas.item.get", &[("token", &token), ("id", &item_id)]);
    assert_eq!(
        got["revisions"][0]["bitstreams"][0]["checksum"],
        md5_hex(&content).as_str()
    );
    // The token is spent.
    let spent = server.upload_perform(&params, content.clone());
    assert_eq!(spent["code"], "-141");
    assert_eq!(
        spent["message"],
        format!("Invalid upload token {ut}").as_str()
    );
    assert_eq!(
        server.call_ok("midas.upload.getoffset", &[("uploadtoken", &ut)])["offset"],
        ""
    );
    // perform needs PUT or POST.
    let via_get = server.call_by_get(
        "midas.upload.perform",
        &[("uploadtoken", &ut), ("filename", "x"), ("length", "1")],
    );
    assert_eq!(via_get["code"], "-153");
    assert_eq!(via_get["message"], "POST or PUT method required");
    let stats = server.stats();
    assert_eq!(stats["bytes_uploaded"], 700_000);
    assert!(stats["methods"]["midas.upload.perform"].as_u64() >= Some(3));

    // On a fresh upload, as in Midas, bytes past `length` are ignored.
    let second = server.create_item(&token, &private, "again.bin");
    let ut = server.upload_token(&token, &second, "again.bin");
    let mut padded = content.clone();
    padded.extend_from_slice(b"EXTRA BYTES");
    let done = server.upload_perform(
        &[
            ("uploadtoken", ut.as_str()),
            ("filename", "again.bin"),
            ("length", length.as_str()),
        ],
        padded,
    );
    assert_eq!(done["data"]["sizebytes"], length.as_str(), "{done}");
}

#[test]
fn tokens_expire_after_token_ttl() {
    let server = TestServer::start_with(&["--token-ttl", "2"]);
    let token = server.token();
    server.call_ok("midas.user.folders", &[("token", &token)]);
    std::thread::sleep(Duration::from_millis(3_100));
    assert_eq!(
        server.call_fail("midas.user.folders", &[("token", &token)]),
        ("-101".into(), "Invalid token".into())
    );
    let renewed = server.token();
    assert_ne!(renewed, token);
    server.call_ok("midas.user.folders", &[("token", &renewed)]);
}

/// Send a PUT head and part of its body, and leave the connection hanging.
fn start_hanging_upload(addr: &str, query: &str, total: usize, part: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "PUT /api/json?{query} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {total}\r\n\r\n"
    )
    .expect("head");
    stream.write_all(part).expect("part");
    stream.flush().expect("flush");
    stream
}

/// Watch the upload's temporary file grow (`getoffset` would wait for the upload to stop).
fn wait_for_upload_file(server: &TestServer, ut: &str, at_least: u64) {
    let file = server.data_dir.join("uploads").join(ut.replace('/', "_"));
    for _ in 0..200 {
        if std::fs::metadata(&file).is_ok_and(|m| m.len() >= at_least) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("upload never reached {at_least} bytes");
}

#[test]
fn restart_and_kill_9_during_an_upload_keep_the_store_consistent() {
    let (mut server, token, private) = server_with_private();
    let kept = server.upload_item(&token, &private, "kept.txt", b"still here\n");
    let item_id = server.create_item(&token, &private, "partial.bin");
    let content = sample(400_000, 3);
    let ut = server.upload_token(&token, &item_id, "p.bin");
    let encoded_token = ut.replace('/', "%2F");
    let query = format!("method=midas.upload.perform&uploadtoken={encoded_token}&filename=p.bin&length={}&revision=head", content.len());
    let hanging = start_hanging_upload(server.addr(), &query, content.len(), &content[..150_000]);
    wait_for_upload_file(&server, &ut, 150_000);
    let api_key = server.api_key.clone();
    server.kill(); // SIGKILL in the middle of the upload
    drop(hanging);

    server.restart();
    assert_eq!(server.api_key, api_key, "restart reuses the store");
    let token = server.login(ADMIN_EMAIL, &api_key);
    assert_eq!(
        server.call_ok("midas.item.get", &[("token", &token), ("id", &kept)])["sizebytes"],
        "11"
    );
    let partial = server.call_ok("midas.item.get", &[("token", &token), ("id", &item_id)]);
    assert_eq!(
        partial["revisions"],
        Value::Array(vec![]),
        "a partial upload is never visible"
    );
    let offset: usize = server.call_ok("midas.upload.getoffset", &[("uploadtoken", &ut)])["offset"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("offset survives the restart");
    assert_eq!(offset, 150_000);
    let length = content.len().to_string();
    let done = server.upload_perform(
        &[
            ("uploadtoken", &ut),
            ("filename", "p.bin"),
            ("length", &length),
            ("revision", "head"),
        ],
        content[offset..].to_vec(),
    );
    assert_eq!(done["stat"], "ok", "{done}");
    let got = server.call_ok("midas.item.get", &[("token", &token), ("id", &item_id)]);
    assert_eq!(
        got["revisions"][0]["bitstreams"][0]["checksum"],
        md5_hex(&content).as_str()
    );
    let body = server
        .get(&format!("/download/?items={item_id}&authToken={token}"))
        .bytes()
        .expect("body");
    assert_eq!(md5_hex(&body), md5_hex(&content));
}

/// The first `len` bytes of the body of a download of `bitstream` from `offset`, asked over
/// `stream`, whose answer is not read further (the connection closes when it is dropped).
fn download_start(
    mut stream: TcpStream,
    server: &TestServer,
    token: &str,
    bitstream: &str,
    offset: usize,
    len: usize,
) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "GET /download/?bitstream={bitstream}&offset={offset}&authToken={token} HTTP/1.1\r\n\
         Host: {}\r\nConnection: close\r\n\r\n",
        server.addr()
    )
    .expect("send");
    let mut got = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "the answer ended early");
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if got.len() >= end + 4 + len {
                return got[end + 4..end + 4 + len].to_vec();
            }
        }
    }
}

/// A connection to `addr` (an IPv4 `host:port`) with the smallest receive buffer the kernel
/// allows, set before it connects: as the mount opens one for a small read.
fn connect_small_window(addr: &str) -> TcpStream {
    use std::os::fd::FromRawFd;
    let addr: std::net::SocketAddrV4 = addr.parse().expect("an IPv4 address");
    let size: libc::c_int = 4096;
    let target = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a new socket, owned by the TcpStream made of it (or closed here on failure);
    // the option and the address point to values of the sizes passed with them.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            std::ptr::from_ref(&size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let connected = libc::connect(
            fd,
            std::ptr::from_ref(&target).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(connected, 0, "connect: {}", std::io::Error::last_os_error());
        stream
    }
}

#[test]
fn a_client_that_reads_4_kib_at_an_offset_and_leaves_costs_the_server_little_more() {
    let (server, token, private) = server_with_private();
    let content = sample(8 << 20, 5);
    let item = server.upload_item(&token, &private, "big.bin", &content);
    let bitstream = server.first_bitstream(&token, &item);
    let handed = || {
        server.stats()["bytes_downloaded"]
            .as_u64()
            .expect("a count")
    };
    let before = handed();
    const READS: usize = 20;
    for i in 0..READS {
        // A random read through the mount: 4 KiB at an offset, then the connection closed.
        let offset = i * 300_000 + 7;
        let stream = connect_small_window(server.addr());
        let body = download_start(stream, &server, &token, &bitstream, offset, 4096);
        assert_eq!(body, &content[offset..offset + 4096], "read {i}");
    }
    // Each sending thread stops at its next step after its connection closed.
    let mut last = handed();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        let now = handed();
        if now == last {
            break;
        }
        last = now;
    }
    let per_read = (last - before) / READS as u64;
    // Without a bound, the kernel queued 0.3–1 MiB of the file per read here.
    assert!(
        per_read < 160 * 1024,
        "the server handed {per_read} bytes to the socket per 4 KiB read"
    );
}

#[test]
fn a_client_that_reads_the_first_mib_at_an_offset_gets_it_without_waiting_for_a_timer() {
    let (server, token, private) = server_with_private();
    let content = sample(8 << 20, 6);
    let item = server.upload_item(&token, &private, "blocks.bin", &content);
    let bitstream = server.first_bitstream(&token, &item);
    const BLOCK: usize = 1 << 20;
    let mut slow = Vec::new();
    // The stall came about once in 5 to 30 reads: 200 reads find it.
    for i in 0..200 {
        // A whole-block read through the mount: 1 MiB at a block's start, then the connection
        // closed.
        let offset = (i % 6) * BLOCK;
        let started = std::time::Instant::now();
        let stream = TcpStream::connect(server.addr()).expect("connect");
        let body = download_start(stream, &server, &token, &bitstream, offset, BLOCK);
        let took = started.elapsed();
        assert!(body[..] == content[offset..offset + BLOCK], "read {i}");
        // A MiB over loopback takes a few ms. The cork's timer, when a corked partial segment
        // waited for data that a bounded queue held back, was 200 ms.
        if took >= Duration::from_millis(180) {
            slow.push((i, took));
        }
    }
    assert!(slow.is_empty(), "reads that waited: {slow:?}");
}

#[test]
fn downloads_honour_offset_with_full_content_length_and_zip_items_and_folders() {
    let (server, token, private) = server_with_private();
    let folder = server.create_folder(&token, &private, "sub dir");
    let folder_id = text(&folder["folder_id"]).to_owned();
    let content = sample(600_000, 11);
    let item = server.upload_item(&token, &folder_id, "binary.bin", &content);
    let bitstream = server.first_bitstream(&token, &item);

    // The redirect, exactly as Midas builds it (the test server's client does not follow it).
    let redirect = server
        .http()
        .post(format!("{}/api/json", server.url))
        .query(&[
            ("method", "midas.bitstream.download"),
            ("token", &token),
            ("id", &bitstream),
            ("offset", "500000"),
        ])
        .send()
        .expect("redirect");
    assert_eq!(redirect.status(), 302);
    let location = redirect.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert_eq!(
        location,
        format!("/download/?bitstream={bitstream}&offset=500000&name=binary.bin&authToken={token}")
    );

    let (head, body) = raw_get(server.addr(), &location);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(header(&head, "content-length"), Some("600000"));
    assert_eq!(
        header(&head, "content-disposition"),
        Some("attachment; filename=\"binary.bin\"")
    );
    assert_eq!(header(&head, "accept-ranges"), Some("bytes"));
    assert!(header(&head, "x-midasfs-full-length").is_none());
    assert_eq!(body, content[500_000..]);

    // Range is ignored; offset 0 gives everything.
    let full = server
        .http()
        .get(format!(
            "{}/download/?bitstream={bitstream}&offset=0&authToken={token}",
            server.url
        ))
        .header("Range", "bytes=100-199")
        .send()
        .expect("download");
    assert_eq!(full.status(), 200);
    assert_eq!(full.bytes().expect("body").as_ref(), content.as_slice());

    // Two bitstreams: a ZIP named after the item; the folder: "<First><Last>-<name>.zip".
    // Asked through the API, which redirects to the download controller.
    let following = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    server.upload_to(&token, &item, "second.txt", b"second\n", Some("head"));
    let zipped = following
        .get(format!("{}/api/json", server.url))
        .query(&[
            ("method", "midas.item.download"),
            ("token", &token),
            ("id", &item),
        ])
        .send()
        .expect("zip");
    assert_eq!(zipped.headers()["content-type"], "application/x-zip");
    assert_eq!(
        zipped.headers()["content-disposition"],
        "attachment; filename=\"binary.bin.zip\""
    );
    let bytes = zipped.bytes().expect("zip body").to_vec();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("valid zip");
    let mut first = Vec::new();
    archive
        .by_name("binary.bin")
        .expect("entry")
        .read_to_end(&mut first)
        .expect("read");
    assert_eq!(first, content);
    let mut second = String::new();
    archive
        .by_name("second.txt")
        .expect("entry")
        .read_to_string(&mut second)
        .expect("read");
    assert_eq!(second, "second\n");

    server.upload_item(&token, &folder_id, "copy.txt", b"copy\n");
    let folder_zip = following
        .get(format!("{}/api/json", server.url))
        .query(&[
            ("method", "midas.folder.download"),
            ("token", &token),
            ("id", &folder_id),
        ])
        .send()
        .expect("folder zip");
    assert_eq!(
        folder_zip.headers()["content-disposition"],
        "attachment; filename=\"AdminUser-sub dir.zip\""
    );
    let bytes = folder_zip.bytes().expect("zip body").to_vec();
    let archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("valid zip");
    let mut names: Vec<&str> = archive.file_names().collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "sub dir/binary.bin/binary.bin",
            "sub dir/binary.bin/second.txt",
            "sub dir/copy.txt"
        ]
    );

    // An empty item downloads as an empty ZIP.
    let empty_id = server.create_item(&token, &folder_id, "empty");
    let bytes = server
        .get(&format!("/download/?items={empty_id}&authToken={token}"))
        .bytes()
        .expect("body")
        .to_vec();
    assert_eq!(
        zip::ZipArchive::new(std::io::Cursor::new(bytes))
            .expect("valid zip")
            .len(),
        0
    );
    let by_path = server.get(&format!(
        "/download/bitstream/{bitstream}/binary.bin?authToken={token}"
    ));
    assert_eq!(by_path.bytes().expect("body").as_ref(), content.as_slice());
    let missing = server.get("/download/?bitstream=999999");
    assert_eq!(missing.status(), 404);
}

#[test]
fn a_long_download_does_not_block_other_calls() {
    let server = TestServer::start();
    let token = server.token();
    let public = server.folder_named(None, ADMIN_EMAIL, "Public");
    let content = sample(24 * 1024 * 1024, 5);
    let item = server.upload_item(&token, &public, "big.bin", &content);
    let children_calls = |server: &TestServer| -> u64 {
        server.stats()["methods"]["midas.folder.children"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = children_calls(&server);
    // Start a download and read only its first bytes: the rest stays pending on the server.
    let mut slow = server.get(&format!("/download/?items={item}"));
    let mut first = [0u8; 1024];
    slow.read_exact(&mut first).expect("first bytes");
    assert_eq!(&first[..], &content[..1024]);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    for _ in 0..5 {
                        server.call_ok(
                            "midas.folder.children",
                            &[("token", &token), ("id", &public)],
                        );
                        server.call_ok("midas.item.get", &[("id", &item)]);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("worker");
        }
    });
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest).expect("rest");
    assert_eq!(rest.len() + 1024, content.len());
    let stats = server.stats();
    assert_eq!(stats["download_requests"], 1);
    assert_eq!(children_calls(&server) - before, 40);
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn hostile_names_and_tokens_stay_inside_the_store() {
    let (server, token, private) = server_with_private();
    for name in [
        "../../escape",
        "a/b",
        "..",
        ".",
        "tab\tnew\nline",
        "quote\"d",
        "日本語",
    ] {
        let folder = server.create_folder(&token, &private, name);
        let id = text(&folder["folder_id"]).to_owned();
        let item = server.upload_item(&token, &id, name, b"x");
        let got = server.call_ok("midas.item.get", &[("token", &token), ("id", &item)]);
        assert_eq!(
            midasfs::midas::text::repair(got["name"].as_str().expect("name")),
            name
        );
        let download = server.get(&format!("/download/?items={item}&authToken={token}"));
        assert_eq!(download.status(), 200, "{name}");
        assert_eq!(download.bytes().expect("body").as_ref(), b"x");
    }
    for bad in [
        "../../../../tmp/x",
        "1/1/../../../../../../../../etc/passwd",
        "1/1/",
        "",
        "1/1/%2e%2e",
    ] {
        assert_eq!(
            server.call_ok("midas.upload.getoffset", &[("uploadtoken", bad)])["offset"],
            "",
            "{bad}"
        );
        let v = server.upload_perform(
            &[("uploadtoken", bad), ("filename", "x"), ("length", "1")],
            b"x".to_vec(),
        );
        assert_eq!(v["stat"], "fail", "{bad}");
    }
    for bad_id in [
        "abc",
        "-1",
        "99999999999999999999",
        "1 OR 1=1",
        "1;DROP TABLE item",
    ] {
        assert_eq!(
            server
                .call_fail("midas.item.get", &[("token", &token), ("id", bad_id)])
                .0,
            "-151"
        );
        assert_eq!(
            server.call_fail("midas.folder.get", &[("id", bad_id)]).0,
            "-151"
        );
    }
    let huge = "n".repeat(20_000);
    server.call_ok(
        "midas.item.create",
        &[("token", &token), ("name", &huge), ("parentid", &private)],
    );
    assert_eq!(
        server.call_fail("midas.item.get", &[("token", &token)]),
        ("-150".into(), "Parameter id is not defined".into())
    );
    let beside_the_store = server.data_dir.parent().expect("the store's directory");
    let outside: Vec<PathBuf> = files_under(beside_the_store)
        .into_iter()
        .filter(|p| !p.starts_with(&server.data_dir))
        .collect();
    assert_eq!(outside, Vec::<PathBuf>::new());
}

#[test]
fn sigterm_stops_the_server_cleanly_and_the_store_reopens() {
    let mut server = TestServer::start();
    let token = server.token();
    let public = server.folder_named(None, ADMIN_EMAIL, "Public");
    let item = server.upload_item(&token, &public, "kept.txt", b"kept\n");
    let status = server.stop().expect("the server was running");
    assert!(
        status.success(),
        "SIGTERM must stop the server cleanly: {status}"
    );
    server.restart();
    let body = server
        .get(&format!("/download/?items={item}"))
        .bytes()
        .expect("body");
    assert_eq!(body.as_ref(), b"kept\n");
}

#[test]
fn communities_metadata_moves_shares_and_deletes_behave_like_midas() {
    let server = TestServer::start();
    let admin = server.token();
    let jane_key = server.add_user("jane@example.com", "janepassword1", "jane", "doe");
    let jane = server.login("jane@example.com", &jane_key);

    // Communities: admins create; anonymous sees public ones and their public folders only.
    let physics = server.call_ok(
        "midas.community.create",
        &[("token", &admin), ("name", "physics")],
    );
    assert_eq!(physics["name"], "Physics");
    let physics_id = physics["community_id"].as_str().expect("id").to_owned();
    assert_eq!(
        server
            .call_fail(
                "midas.community.create",
                &[("token", &admin), ("name", "physics")]
            )
            .0,
        "0"
    );
    assert_eq!(
        server.call_fail(
            "midas.community.create",
            &[("token", &jane), ("name", "mine")]
        ),
        ("-151".into(), "Only admins can create communities".into())
    );
    server.call_ok(
        "midas.community.create",
        &[
            ("token", &admin),
            ("name", "Hidden"),
            ("privacy", "Private"),
        ],
    );
    assert_eq!(
        server.call_ok("midas.community.get", &[("name", "Physics")])["community_id"],
        physics_id.as_str()
    );
    assert_eq!(
        server
            .call_fail("midas.community.get", &[("name", "Hidden")])
            .0,
        "-151"
    );
    let listed: Vec<String> = server
        .call_ok("midas.community.list", &[])
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(listed, ["Physics"]);
    let folder_names = |token: Option<&str>| -> Vec<String> {
        let mut params = vec![("id", physics_id.as_str())];
        if let Some(t) = token {
            params.push(("token", t));
        }
        server.call_ok("midas.community.children", &params)["folders"]
            .as_array()
            .expect("folders")
            .iter()
            .filter_map(|f| f["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(folder_names(None), ["Public"]);
    assert_eq!(folder_names(Some(&admin)), ["Private", "Public"]);

    // Metadata.
    let private = server.folder_named(Some(&admin), ADMIN_EMAIL, "Private");
    let item = server.upload_item(&admin, &private, "data.txt", b"data\n");
    server.call_ok(
        "midas.item.setmultiplemetadata",
        &[
            ("token", &admin),
            ("itemid", &item),
            ("count", "2"),
            ("element_1", "a"),
            ("value_1", "1"),
            ("element_2", "b"),
            ("qualifier_2", "q"),
            ("value_2", "2"),
        ],
    );
    let metadata = server.call_ok(
        "midas.item.getmetadata",
        &[("token", &admin), ("id", &item)],
    );
    let pairs: Vec<(String, String)> = metadata
        .as_array()
        .expect("list")
        .iter()
        .map(|m| {
            (
                m["element"].as_str().unwrap_or_default().to_owned(),
                m["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "2".to_owned())
        ]
    );
    assert_eq!(
        server.call_ok(
            "midas.item.deletemetadata",
            &[("token", &admin), ("itemid", &item), ("element", "a")]
        ),
        "1"
    );
    assert_eq!(
        server.call_ok(
            "midas.item.deletemetadata",
            &[("token", &admin), ("itemid", &item), ("element", "zz")]
        ),
        ""
    );
    assert_eq!(
        server
            .call_ok(
                "midas.item.getmetadata",
                &[("token", &admin), ("id", &item)]
            )
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        server.call_fail(
            "midas.item.setmetadata",
            &[
                ("token", &admin),
                ("id", &item),
                ("element", "x"),
                ("value", "y")
            ]
        ),
        ("-150".into(), "Parameter itemId is not defined".into())
    );

    // Moves rename on a clash; shares link without renaming; deletes follow Midas.
    let a = server.create_folder(&admin, &private, "A");
    let a_id = text(&a["folder_id"]).to_owned();
    let b = server.create_folder(&admin, &a_id, "B");
    let b_id = text(&b["folder_id"]).to_owned();
    server.upload_item(&admin, &b_id, "data.txt", b"other\n");
    let moved = server.call_ok(
        "midas.item.move",
        &[
            ("token", &admin),
            ("id", &item),
            ("srcfolderid", &private),
            ("dstfolderid", &b_id),
        ],
    );
    assert_eq!(moved["name"], "data.txt (1)");
    assert_eq!(ids(&moved["owningfolders"]), [b_id.as_str()]);
    assert_eq!(
        server.call_fail(
            "midas.folder.move",
            &[("token", &admin), ("id", &a_id), ("dstfolderid", &b_id)]
        ),
        ("0".into(), "Parent is a child of Folder".into())
    );
    let shared = server.call_ok(
        "midas.item.share",
        &[("token", &admin), ("id", &item), ("dstfolderid", &private)],
    );
    assert_eq!(
        ids(&shared["owningfolders"]),
        [b_id.clone(), private.clone()]
    );
    let copy = server.call_ok(
        "midas.item.duplicate",
        &[("token", &admin), ("id", &item), ("dstfolderid", &private)],
    );
    let copy_id = copy["item_id"].as_str().expect("id").to_owned();
    assert_eq!(copy["name"], "data.txt (1) (1)");
    let count = server.call_ok(
        "midas.bitstream.count",
        &[
            ("token", &admin),
            ("uuid", a["uuid"].as_str().expect("uuid")),
        ],
    );
    assert_eq!(
        (count["count"].as_str(), count["size"].as_str()),
        (Some("2"), Some("11"))
    );
    server.call_ok("midas.folder.delete", &[("token", &admin), ("id", &a_id)]);
    assert_eq!(
        server
            .call_fail("midas.folder.get", &[("token", &admin), ("id", &b_id)])
            .0,
        "-151"
    );
    // Still linked into Private, so it survives the folder delete.
    assert_eq!(
        server.call_ok("midas.item.get", &[("token", &admin), ("id", &item)])["folder_id"],
        private.as_str()
    );
    server.call_ok("midas.item.delete", &[("token", &admin), ("id", &item)]);
    assert_eq!(
        server
            .call_fail("midas.item.get", &[("token", &admin), ("id", &item)])
            .0,
        "-151"
    );
    // The duplicate shares the stored file, which must survive the original's deletion.
    let body = server
        .get(&format!("/download/?items={copy_id}&authToken={admin}"))
        .bytes()
        .expect("body");
    assert_eq!(body.as_ref(), b"data\n");
    let copy_bs = server.first_bitstream(&admin, &copy_id);
    let edited = server.call_ok(
        "midas.bitstream.edit",
        &[("token", &admin), ("id", &copy_bs), ("name", "renamed.txt")],
    );
    assert_eq!(edited["name"], "renamed.txt");
    assert_eq!(
        server
            .call_fail(
                "midas.bitstream.edit",
                &[("token", &jane), ("id", &copy_bs), ("name", "x")]
            )
            .0,
        "-151"
    );
    server.call_ok(
        "midas.bitstream.delete",
        &[("token", &admin), ("id", &copy_bs)],
    );
    assert_eq!(
        server
            .call_fail(
                "midas.bitstream.get",
                &[("token", &admin), ("id", &copy_bs)]
            )
            .0,
        "-150"
    );
    assert_eq!(
        server.call_fail("midas.community.delete", &[("id", &physics_id)]),
        ("-101".into(), "Unable to find user".into())
    );
    server.call_ok(
        "midas.community.delete",
        &[("token", &admin), ("id", &physics_id)],
    );
    assert_eq!(
        server
            .call_fail("midas.community.get", &[("id", &physics_id)])
            .0,
        "-151"
    );
}

#[test]
fn ids_are_never_reused_and_every_download_is_counted() {
    let (server, token, private) = server_with_private();
    let bitstream_of = |item: &str| -> i64 {
        let id = server.first_bitstream(&token, item);
        id.parse().unwrap_or_else(|_| panic!("bitstream id {id}"))
    };
    let first = server.upload_item(&token, &private, "a.txt", b"aaaa");
    let first_bitstream = bitstream_of(&first);
    server.call_ok("midas.item.delete", &[("token", &token), ("id", &first)]);
    let second = server.upload_item(&token, &private, "b.txt", b"bbbb");
    assert!(second.parse::<i64>().expect("id") > first.parse::<i64>().expect("id"));
    assert!(
        bitstream_of(&second) > first_bitstream,
        "a deleted bitstream id was reused"
    );

    // Offset reads and item downloads all count, as on the real server.
    let bs = bitstream_of(&second);
    raw_get(
        server.addr(),
        &format!("/download/?bitstream={bs}&offset=2&authToken={token}"),
    );
    raw_get(
        server.addr(),
        &format!("/download/?bitstream={bs}&offset=0&authToken={token}"),
    );
    raw_get(
        server.addr(),
        &format!("/download/?items={second}&authToken={token}"),
    );
    assert_eq!(
        server.call_ok("midas.item.get", &[("token", &token), ("id", &second)])["download"],
        "3"
    );
}

#[test]
fn create_with_a_uuid_updates_and_transfers_check_policies_like_midas() {
    let (server, admin, private) = server_with_private();
    let jane_key = server.add_user("jane@example.com", "janepassword1", "jane", "doe");
    let jane = server.login("jane@example.com", &jane_key);
    let bob_key = server.add_user("bob@example.com", "bobpassword12", "bob", "roe");
    let bob = server.login("bob@example.com", &bob_key);
    // Jane moderates the community: WRITE, not ADMIN, on what the administrator puts there.
    server.add_community("Lab", false, Some("jane@example.com"));
    let lab = server.call_ok("midas.community.get", &[("name", "Lab")]);
    let lab_public = server.call_ok(
        "midas.community.children",
        &[("id", text(&lab["community_id"]))],
    )["folders"]
        .as_array()
        .expect("folders")
        .iter()
        .find(|f| f["name"] == "Public")
        .map(|f| text(&f["folder_id"]).to_owned())
        .expect("the community's Public folder");

    let folder = server.create_folder(&admin, &lab_public, "f");
    let (folder_id, folder_uuid) = (text(&folder["folder_id"]), text(&folder["uuid"]));
    let update_folder = |token: &str, extra: &[(&str, &str)]| {
        let mut params = vec![("token", token), ("uuid", folder_uuid)];
        params.extend_from_slice(extra);
        server.call("midas.folder.create", &params)
    };
    let failure = |answer: Value| -> (String, String) {
        assert_eq!(answer["stat"], "fail", "{answer}");
        (
            text(&answer["code"]).to_owned(),
            text(&answer["message"]).to_owned(),
        )
    };
    assert_eq!(
        failure(update_folder(&bob, &[("name", "x")])),
        ("-151".into(), "Invalid policy".into())
    );
    assert_eq!(
        failure(update_folder(
            &jane,
            &[("name", "g"), ("privacy", "Private")]
        )),
        (
            "-151".into(),
            "Folder Admin privileges required to set privacy".into()
        )
    );
    assert_eq!(
        failure(update_folder(&jane, &[("name", "")])),
        ("0".into(), "Name cannot be empty.".into())
    );
    let renamed = update_folder(&jane, &[("name", "g"), ("description", "d")]);
    assert_eq!(renamed["stat"], "ok", "{renamed}");
    assert_eq!(renamed["data"]["folder_id"], folder_id);
    assert_eq!(renamed["data"]["name"], "g");
    assert_eq!(renamed["data"]["description"], "d");
    server.call_ok("midas.folder.get", &[("id", folder_id)]);
    let hidden = update_folder(&admin, &[("name", "g"), ("privacy", "Private")]);
    assert_eq!(hidden["stat"], "ok", "{hidden}");
    server.call_fail("midas.folder.get", &[("id", folder_id)]);

    let item_id = server.create_item(&admin, &lab_public, "i");
    let item = server.call_ok("midas.item.get", &[("token", &admin), ("id", &item_id)]);
    let update_item = |token: &str, extra: &[(&str, &str)]| {
        let mut params = vec![("token", token), ("uuid", text(&item["uuid"]))];
        params.extend_from_slice(extra);
        server.call("midas.item.create", &params)
    };
    assert_eq!(
        failure(update_item(&bob, &[("name", "x")])),
        ("-151".into(), "Invalid policy".into())
    );
    assert_eq!(
        failure(update_item(&jane, &[("name", "j"), ("privacy", "Public")])),
        (
            "-151".into(),
            "Item Admin privileges required to set privacy".into()
        )
    );
    let renamed = update_item(&jane, &[("name", "j")]);
    assert_eq!(renamed["stat"], "ok", "{renamed}");
    assert_eq!(renamed["data"]["item_id"], item_id.as_str());
    assert_eq!(renamed["data"]["name"], "j");
    let hidden = update_item(&admin, &[("name", "j"), ("privacy", "Private")]);
    assert_eq!(hidden["stat"], "ok", "{hidden}");
    server.call_fail("midas.item.get", &[("id", &item_id)]);

    // Moves, shares and duplicates: the destination first, then the policies.
    let secret = server.upload_item(&admin, &private, "secret.txt", b"secret\n");
    let bob_private = server.folder_named(Some(&bob), "bob@example.com", "Private");
    let no_destination = (
        "0".to_owned(),
        "Error in params when checking Folder Policy.".to_owned(),
    );
    let not_found = (
        "-151".to_owned(),
        "This item doesn't exist or you don't have the permissions.".to_owned(),
    );
    for method in ["midas.item.share", "midas.item.duplicate"] {
        assert_eq!(
            server.call_fail(
                method,
                &[
                    ("token", &admin),
                    ("id", &secret),
                    ("dstfolderid", "999999")
                ]
            ),
            no_destination
        );
        assert_eq!(
            server.call_fail(
                method,
                &[
                    ("token", &bob),
                    ("id", &secret),
                    ("dstfolderid", &bob_private)
                ]
            ),
            not_found
        );
    }
    assert_eq!(
        server.call_fail(
            "midas.item.share",
            &[("id", &secret), ("dstfolderid", &bob_private)]
        ),
        ("-151".into(), "Cannot share item anonymously".into())
    );
    assert_eq!(
        server.call_fail(
            "midas.item.move",
            &[
                ("token", &admin),
                ("id", &secret),
                ("srcfolderid", &private),
                ("dstfolderid", "999999")
            ]
        ),
        no_destination
    );
    assert_eq!(
        server.call_fail(
            "midas.item.move",
            &[
                ("token", &bob),
                ("id", &secret),
                ("srcfolderid", &private),
                ("dstfolderid", &bob_private)
            ]
        ),
        not_found
    );
    assert_eq!(
        server.call_fail(
            "midas.folder.move",
            &[
                ("token", &admin),
                ("id", folder_id),
                ("dstfolderid", "999999")
            ]
        ),
        no_destination
    );

    // Bitstreams: the lookup, then the level each method needs.
    let bitstream = server.first_bitstream(&admin, &secret);
    for (method, message) in [
        (
            "midas.bitstream.get",
            "This item doesn't exist or you don't have the permissions.",
        ),
        ("midas.bitstream.edit", "Write access on item is required"),
        (
            "midas.bitstream.delete",
            "Admin privileges required on the containing item",
        ),
    ] {
        assert_eq!(
            server.call_fail(method, &[("token", &bob), ("id", &bitstream)]),
            ("-151".into(), message.into())
        );
        assert_eq!(
            server.call_fail(method, &[("token", &admin), ("id", "999999")]),
            ("-150".into(), "Invalid bitstream id".into())
        );
    }
}

/// Raise this test process's own open-file limit to at least `want` (it opens many sockets).
fn raise_own_open_file_limit(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    assert!(limit.rlim_cur >= want, "open-file limit too low");
}

/// A raw `GET` that must be answered within `within`: its head (lower case) and body.
fn timed_get(addr: &str, path: &str, within: Duration) -> (String, Vec<u8>) {
    let started = std::time::Instant::now();
    let all = send_get(addr, path, within)
        .unwrap_or_else(|err| panic!("no answer within {within:?}: {err}"));
    assert!(
        started.elapsed() < within,
        "answered after {:?}",
        started.elapsed()
    );
    head_and_body(&all)
}

#[test]
fn a_new_client_is_served_while_1100_idle_connections_are_open() {
    raise_own_open_file_limit(2_500);
    // A common default: 1,024 open files, more allowed on request.
    let server = TestServer::start_limited(&[], Some((1024, 4096)));
    let addr = server.addr().to_owned();
    let mut held = Vec::new();
    for i in 0..1_100 {
        let mut stream = TcpStream::connect(&addr).expect("connect");
        if i % 2 == 1 {
            // Half a request head, never finished.
            stream
                .write_all(b"GET /api/json?method=midas.version HTTP/1.1\r\nHost: x\r\n")
                .expect("send half a head");
        }
        held.push(stream);
    }
    let (head, body) = timed_get(
        &addr,
        "/api/json?method=midas.version",
        Duration::from_secs(10),
    );
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("3.4.2"));
    // The longest-idle connections made room: the first ones held are closed.
    let mut first = &held[0];
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    assert!(
        matches!(first.read(&mut byte), Ok(0) | Err(_)),
        "the oldest idle connection is still open"
    );
    assert_eq!(server.call_ok("midas.version", &[])["version"], "3.4.2");
}

#[test]
fn silent_and_slow_header_connections_are_closed_by_the_timeouts() {
    let server = TestServer::start_with(&["--idle-timeout", "1", "--header-timeout", "3"]);
    let addr = server.addr().to_owned();
    let started = std::time::Instant::now();
    let mut silent = TcpStream::connect(&addr).expect("connect");
    let mut slow = TcpStream::connect(&addr).expect("connect");
    slow.write_all(b"GET /api/json?method=midas.version HTTP/1.1\r\nHost: x\r\n")
        .expect("send");
    // Another header byte every 200 ms, until the server hangs up.
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let slow_closed_after = loop {
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(20),
            "slow header never cut off"
        );
        let mut byte = [0u8; 1];
        match slow.read(&mut byte) {
            Ok(0) => break elapsed,
            Ok(_) => panic!("an answer to an unfinished head"),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) if err.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break elapsed,
        }
        if slow.write_all(b"X").is_err() {
            break started.elapsed();
        }
    };
    assert!(
        slow_closed_after > Duration::from_millis(1_500),
        "a client still sending was closed by the idle timeout after {slow_closed_after:?}"
    );
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    match silent.read(&mut byte) {
        Ok(0) => {}
        Ok(_) => panic!("bytes on a connection that asked nothing"),
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
            panic!(
                "a silent connection is still open after {:?}",
                started.elapsed()
            )
        }
        Err(_) => {}
    }
    // Connections that do ask are served as before.
    assert_eq!(server.call_ok("midas.version", &[])["version"], "3.4.2");
}

/// An API call as pydas makes it (POST, parameters in the query), from the local address `from`.
fn call_from(server: &TestServer, from: &str, method: &str, params: &[(&str, &str)]) -> Value {
    let client = reqwest::blocking::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().expect("an address"))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let response = client
        .post(format!("{}/api/json", server.url))
        .query(&[("method", method)])
        .query(params)
        .send()
        .unwrap_or_else(|err| panic!("{method} from {from}: {err}"));
    serde_json::from_str(&response.text().expect("answer")).expect("JSON")
}

fn code_and_message(envelope: &Value) -> (&str, &str) {
    (
        envelope["code"].as_str().unwrap_or_default(),
        envelope["message"].as_str().unwrap_or_default(),
    )
}

#[test]
fn failed_logins_are_throttled_per_account_and_address_and_other_addresses_still_log_in() {
    let server = TestServer::start();
    let bob_key = server.add_user("bob@example.com", "bobpass123", "Bob", "Smith");
    let by_password = |from: &str, email: &str, password: &str| {
        call_from(
            &server,
            from,
            "midas.user.apikey.default",
            &[("email", email), ("password", password)],
        )
    };
    for _ in 0..5 {
        let answer = by_password("127.0.0.1", ADMIN_EMAIL, "guess");
        assert_eq!(code_and_message(&answer), ("-150", "Login failed"));
    }
    // From that address the account is now refused, its right password and API key too.
    let refused = by_password("127.0.0.1", ADMIN_EMAIL, ADMIN_PASSWORD);
    assert_eq!(refused["stat"], "fail", "{refused}");
    let (code, message) = code_and_message(&refused);
    assert_eq!(code, "-150");
    assert!(message.starts_with("Too many failed logins"), "{message}");
    let login = call_from(
        &server,
        "127.0.0.1",
        "midas.login",
        &[
            ("email", ADMIN_EMAIL),
            ("apikey", &server.api_key),
            ("appname", "Default"),
        ],
    );
    assert_eq!(login["stat"], "fail", "{login}");
    // Other accounts from the same address, and the same account from elsewhere, log in.
    let bob = by_password("127.0.0.1", "bob@example.com", "bobpass123");
    assert_eq!(bob["data"]["apikey"], bob_key.as_str());
    let elsewhere = by_password("127.0.0.2", ADMIN_EMAIL, ADMIN_PASSWORD);
    assert_eq!(elsewhere["data"]["apikey"], server.api_key.as_str());
    // One address guessing at many accounts is refused for all of them.
    for i in 0..20 {
        let answer = by_password("127.0.0.3", &format!("user{i}@example.com"), "guess");
        assert_eq!(code_and_message(&answer).0, "-150");
    }
    let bob = by_password("127.0.0.3", "bob@example.com", "bobpass123");
    assert!(
        code_and_message(&bob)
            .1
            .starts_with("Too many failed logins"),
        "{bob}"
    );
}

#[test]
fn a_uuid_already_in_use_is_refused_by_every_create() {
    let (server, token, private) = server_with_private();
    let folder = server.create_folder(&token, &private, "f");
    let folder_uuid = text(&folder["uuid"]).to_owned();
    let item_id = server.create_item(&token, &private, "i");
    let item = server.call_ok("midas.item.get", &[("token", &token), ("id", &item_id)]);
    let item_uuid = text(&item["uuid"]).to_owned();
    let admin_uuid =
        text(&server.call_ok("midas.user.get", &[("email", ADMIN_EMAIL)])["uuid"]).to_owned();
    let in_use = ("-150".to_owned(), "The uuid is already in use".to_owned());
    for uuid in [&folder_uuid, &admin_uuid] {
        assert_eq!(
            server.call_fail(
                "midas.item.create",
                &[
                    ("token", &token),
                    ("name", "dup"),
                    ("parentid", &private),
                    ("uuid", uuid)
                ]
            ),
            in_use
        );
    }
    assert_eq!(
        server.call_fail(
            "midas.folder.create",
            &[
                ("token", &token),
                ("name", "dup"),
                ("parentid", &private),
                ("uuid", &item_uuid)
            ]
        ),
        in_use
    );
    assert_eq!(
        server.call_fail(
            "midas.community.create",
            &[("token", &token), ("name", "dup"), ("uuid", &folder_uuid)]
        ),
        in_use
    );
    // Nothing was made.
    let children = server.call_ok(
        "midas.folder.children",
        &[("token", &token), ("id", &private)],
    );
    let names = |kind: &str| -> Vec<String> {
        children[kind]
            .as_array()
            .expect("list")
            .iter()
            .map(|o| text(&o["name"]).to_owned())
            .collect()
    };
    assert_eq!(
        (names("folders"), names("items")),
        (vec!["f".to_owned()], vec!["i".to_owned()])
    );
    // A new uuid is taken as given; the object's own uuid still updates it.
    let fresh = "0123456789abcdef0123456789abcdef";
    let made = server.call_ok(
        "midas.folder.create",
        &[
            ("token", &token),
            ("name", "g"),
            ("parentid", &private),
            ("uuid", fresh),
        ],
    );
    assert_eq!(made["uuid"], fresh);
    let renamed = server.call_ok(
        "midas.folder.create",
        &[("token", &token), ("name", "g2"), ("uuid", fresh)],
    );
    assert_eq!(renamed["folder_id"], made["folder_id"]);
}

#[test]
fn user_get_shows_a_private_user_only_to_that_user_and_administrators() {
    let server = TestServer::start();
    let bob_key = server.add_user("bob@example.com", "bobpass123", "Bob", "Hidden");
    let bob_token = server.login("bob@example.com", &bob_key);
    let carol_key = server.add_user("carol@example.com", "carolpass1", "Carol", "Other");
    let carol_token = server.login("carol@example.com", &carol_key);
    let bob_id =
        text(&server.call_ok("midas.user.get", &[("email", "bob@example.com")])["user_id"])
            .to_owned();
    // Bob makes his profile private (the web interface's setting: user.privacy = 1).
    let db = rusqlite::Connection::open(server.data_dir.join("midas.sqlite3")).expect("store");
    db.busy_timeout(Duration::from_secs(30)).expect("timeout");
    db.execute(
        "UPDATE user SET privacy = 1 WHERE email = 'bob@example.com'",
        [],
    )
    .expect("make bob private");
    let listed = server.call_ok("midas.user.list", &[("limit", "10")]);
    assert!(!listed.to_string().contains("bob@example.com"), "{listed}");
    let lookups: [&[(&str, &str)]; 3] = [
        &[("email", "bob@example.com")],
        &[("id", &bob_id)],
        &[("firstname", "Bob"), ("lastname", "Hidden")],
    ];
    for lookup in lookups {
        for token in [None, Some(carol_token.as_str()), Some("not-a-token")] {
            let mut params = lookup.to_vec();
            params.extend(token.map(|t| ("token", t)));
            assert_eq!(
                server.call_ok("midas.user.get", &params),
                "",
                "user.get {params:?} shows a private user"
            );
        }
        for token in [bob_token.as_str(), &server.token()] {
            let mut params = lookup.to_vec();
            params.push(("token", token));
            assert_eq!(
                server.call_ok("midas.user.get", &params)["user_id"],
                bob_id.as_str()
            );
        }
    }
    // Public users are found by anyone, as before.
    assert_eq!(
        server.call_ok("midas.user.get", &[("email", "carol@example.com")])["email"],
        "carol@example.com"
    );
}

#[test]
fn zip_entry_names_stay_inside_the_archive_and_fit_the_format() {
    let (server, token, private) = server_with_private();
    let top = server.create_folder(&token, &private, "top");
    let top_id = text(&top["folder_id"]).to_owned();
    let dots = server.create_folder(&token, &top_id, "..");
    server.upload_item(
        &token,
        text(&dots["folder_id"]),
        "../../escape.txt",
        b"out\n",
    );
    server.upload_item(&token, &top_id, "/etc/cron.d/job", b"abs\n");
    // 20 folders of 3,500-byte names: a path of over 65,535 bytes (the ZIP name limit).
    let mut deep = top_id.clone();
    let long = "d".repeat(3_500);
    for _ in 0..20 {
        deep = text(&server.create_folder(&token, &deep, &long)["folder_id"]).to_owned();
    }
    server.upload_item(&token, &deep, "deep.txt", b"deep\n");
    let zipped = server
        .http()
        .get(format!("{}/download/", server.url))
        .query(&[("folders", top_id.as_str()), ("authToken", token.as_str())])
        .send()
        .expect("folder zip");
    assert_eq!(zipped.status(), 200);
    let bytes = zipped.bytes().expect("zip body").to_vec();
    let entries = common::zipfile::entries(&bytes).expect("a well-formed archive");
    let mut contents: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            let content = e.stored_content().expect("content matches its CRC");
            (
                e.name.clone(),
                String::from_utf8_lossy(content).into_owned(),
            )
        })
        .collect();
    contents.sort();
    assert_eq!(
        contents.len(),
        3,
        "{:?}",
        contents.iter().map(|c| &c.1).collect::<Vec<_>>()
    );
    for (name, _) in &contents {
        assert!(
            name.starts_with("top/") && name.len() <= 0xFFFF,
            "{name:.300}"
        );
        assert!(
            name.split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".." && c.len() <= 255),
            "unsafe entry name {name:.300}"
        );
    }
    let content_of = |pattern: &str| {
        contents
            .iter()
            .find(|(name, _)| name.contains(pattern))
            .map(|(_, c)| c.as_str())
    };
    assert_eq!(content_of("escape.txt"), Some("out\n"));
    assert_eq!(content_of("cron.d/job"), Some("abs\n"));
    assert_eq!(content_of("/deep.txt"), Some("deep\n"));
    // The zip crate, as most unzip programs do, reads it too.
    zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("valid zip");
}

#[test]
fn parameters_and_download_tokens_are_read_from_form_bodies_as_midas_does() {
    let (server, token, private) = server_with_private();
    let content = sample(1000, 5);
    let item = server.upload_item(&token, &private, "secret.bin", &content);
    let bitstream = server.first_bitstream(&token, &item);
    let form = |method: &str, params: &[(&str, &str)]| -> Value {
        server
            .http()
            .post(format!("{}/api/json", server.url))
            .query(&[("method", method)])
            .form(params)
            .send()
            .and_then(|answer| answer.bytes())
            .map(|body| serde_json::from_slice(&body).expect("an envelope"))
            .expect("form call")
    };
    // Login, and a call whose token is in the body.
    let login = form(
        "midas.login",
        &[
            ("email", ADMIN_EMAIL),
            ("apikey", &server.api_key),
            ("appname", "Default"),
        ],
    );
    assert_eq!(login["stat"], "ok", "{login}");
    let folders = form("midas.user.folders", &[("token", &token)]);
    assert_eq!(folders["stat"], "ok", "{folders}");
    assert_eq!(folders["data"].as_array().map(Vec::len), Some(2));
    let by_password = form(
        "midas.user.apikey.default",
        &[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)],
    );
    assert_eq!(by_password["data"]["apikey"], server.api_key.as_str());

    // A private download: refused without the token, served with it in a POST body.
    let url = format!("{}/download/?bitstream={bitstream}&offset=0", server.url);
    let anonymous = server.http().get(&url).send().expect("anonymous");
    assert!(!anonymous.status().is_success());
    let posted = server
        .http()
        .post(&url)
        .form(&[("authToken", token.as_str())])
        .send()
        .expect("download");
    assert_eq!(posted.status(), 200);
    assert_eq!(posted.bytes().expect("body").as_ref(), &content[..]);
}

#[test]
fn abandoned_partial_uploads_are_removed_after_the_token_lifetime() {
    let server = TestServer::start_with(&["--token-ttl", "2"]);
    let token = server.token();
    let home = server.folder_named(Some(&token), &server.email, "Private");
    let item = server.create_item(&token, &home, "left.bin");
    let upload = server.upload_token(&token, &item, "left.bin");
    // Some bytes arrive, then the client is gone.
    let answer = server.upload_perform(
        &[
            ("uploadtoken", &upload),
            ("filename", "left.bin"),
            ("length", "100"),
        ],
        vec![7u8; 40],
    );
    assert_eq!(answer["stat"], "fail", "{answer}");
    let uploads = server.data_dir.join("uploads");
    let count = || std::fs::read_dir(&uploads).unwrap().count();
    assert_eq!(count(), 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the partial upload is still there after 15 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let offset = server.call_ok(
        "midas.upload.getoffset",
        &[("token", &server.token()), ("uploadtoken", &upload)],
    );
    assert_eq!(offset["offset"], "", "{offset}");
}

/// Midas validates a method's parameters before it reads the token (all but a few methods).
#[test]
fn a_missing_parameter_is_reported_before_a_bad_token() {
    let server = TestServer::start();
    let bad = [("token", "nonsense0123456789")];
    for method in [
        "midas.folder.get",
        "midas.folder.children",
        "midas.folder.delete",
        "midas.item.get",
        "midas.item.delete",
        "midas.bitstream.get",
        "midas.community.children",
    ] {
        assert_eq!(
            server.call_fail(method, &bad),
            ("-150".to_owned(), "Parameter id is not defined".to_owned()),
            "{method}"
        );
    }
    // user.folders reads only the token
    assert_eq!(server.call_fail("midas.user.folders", &bad).0, "-101");
}

/// Midas merges folders, items, communities and users and sorts the whole list by views, a
/// stable sort: with no views, folders come first.
#[test]
fn a_search_lists_folders_before_items() {
    let (server, token, private) = server_with_private();
    let folder = server.create_folder(&token, &private, "zz-findme");
    let folder_id = text(&folder["folder_id"]).to_owned();
    server.create_item(&token, &folder_id, "aa-findme.txt");
    let found = server.call_ok(
        "midas.resource.search",
        &[("token", &token), ("search", "findme")],
    );
    let kinds: Vec<&str> = found["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| text(&r["resultType"]))
        .collect();
    assert_eq!(kinds, ["folder", "item"], "{found}");
}

/// Midas's zipStream adds an empty entry for an item without a revision and counts every
/// item with one as downloaded.
#[test]
fn a_folder_zip_holds_empty_items_and_counts_downloads() {
    let (server, token, private) = server_with_private();
    let folder = server.create_folder(&token, &private, "zipped");
    let folder_id = text(&folder["folder_id"]).to_owned();
    server.create_item(&token, &folder_id, "empty");
    let item = server.upload_item(&token, &folder_id, "full.txt", b"content\n");
    let response = server
        .http()
        .get(format!("{}/download/", server.url))
        .query(&[
            ("folders", folder_id.as_str()),
            ("authToken", token.as_str()),
        ])
        .send()
        .expect("folder download");
    let bytes = response.bytes().expect("the archive");
    let entries = common::zipfile::entries(&bytes).expect("a well-formed archive");
    let names: Vec<(&str, u64)> = entries.iter().map(|e| (e.name.as_str(), e.size)).collect();
    assert_eq!(names, [("zipped/empty", 0), ("zipped/full.txt", 8)]);
    let got = server.call_ok("midas.item.get", &[("token", &token), ("id", &item)]);
    assert_eq!(got["download"], "1", "{got}");
}

/// Answers whose wording or fields Midas 3.4 has its own way.
#[test]
fn denials_duplicates_and_new_communities_answer_as_midas_does() {
    let (server, token, private) = server_with_private();
    let item = server.upload_item(&token, &private, "secret.txt", b"secret\n");
    let bitstream = server.first_bitstream(&token, &item);
    assert_eq!(
        server.call_fail("midas.bitstream.get", &[("id", &bitstream)]),
        (
            "-151".to_owned(),
            "This item doesn't exist or you don't have the permissions.".to_owned()
        )
    );
    let copy = server.call_ok(
        "midas.item.duplicate",
        &[("token", &token), ("id", &item), ("dstfolderid", &private)],
    );
    assert_eq!((&copy["view"], &copy["download"]), (&"".into(), &"".into()));
    let community = server.call_ok(
        "midas.community.create",
        &[("token", &token), ("name", "new community")],
    );
    assert_eq!(community["view"], "", "{community}");
}
