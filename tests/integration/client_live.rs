//! The Midas client against a live server: every call, token expiry, downloads from an offset,
//! refused credentials, anonymous access and a dead server.
//!
//! The server is a `midasfs serve` child process of each test, or, when `MIDASFS_TEST_MIDAS_URL`
//! names one (with `MIDASFS_TEST_MIDAS_EMAIL`, `MIDASFS_TEST_MIDAS_API_KEY` and
//! `MIDASFS_TEST_MIDAS_PASSWORD` of an administrator), a real Midas Server: the same test bodies
//! run against both. Such a server need not be clean: each test works in a folder of its own.
//! Tests that need what only `serve` offers (`--token-ttl`, its admin command) say so and always
//! run on `serve`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use midasfs::midas::types::Folder;
use midasfs::midas::{Client, ClientConfig, Credentials, Error, UploadPart, UploadRevision};

const EMAIL: &str = "admin@example.com";
const PASSWORD: &str = "correct horse battery";
/// How long the server may take to start and print its address.
const STARTUP: Duration = Duration::from_secs(30);

/// The server under test and its administrator's credentials.
struct Server {
    url: String,
    email: String,
    password: String,
    api_key: String,
    /// The `midasfs serve` child and its store; `None` for a real Midas.
    serve: Option<(Child, tempfile::TempDir)>,
}

impl Server {
    /// The real Midas configured in the environment, or else a `midasfs serve` of this test.
    fn start() -> Server {
        let _ = env_logger::builder().is_test(true).try_init();
        match std::env::var("MIDASFS_TEST_MIDAS_URL") {
            Ok(url) if !url.is_empty() => {
                let var = |name: &str| {
                    std::env::var(name)
                        .unwrap_or_else(|_| panic!("MIDASFS_TEST_MIDAS_URL is set, {name} is not"))
                };
                eprintln!("testing against the real Midas at {url}");
                Server {
                    url,
                    email: var("MIDASFS_TEST_MIDAS_EMAIL"),
                    password: var("MIDASFS_TEST_MIDAS_PASSWORD"),
                    api_key: var("MIDASFS_TEST_MIDAS_API_KEY"),
                    serve: None,
                }
            }
            _ => Server::serve(&[]),
        }
    }

    /// A `midasfs serve` of this test, whatever the environment names: for what only it offers.
    fn serve(extra: &[&str]) -> Server {
        // The client's debug log (RUST_LOG=midasfs=debug) shows up beside a failing test.
        let _ = env_logger::builder().is_test(true).try_init();
        let data = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_midasfs"))
            .arg("serve")
            .arg("--data")
            .arg(data.path())
            .args(["--listen", "127.0.0.1:0", "--admin-email", EMAIL])
            .arg("--admin-password-stdin")
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start midasfs serve");
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{PASSWORD}").expect("password to serve");
        drop(stdin);
        // The announcement may go to either stream: read both until it is complete.
        let (lines, received) = mpsc::channel();
        forward_lines(child.stdout.take().expect("stdout"), lines.clone());
        forward_lines(child.stderr.take().expect("stderr"), lines);
        let (mut url, mut api_key) = (None, None);
        while url.is_none() || api_key.is_none() {
            let line = match received.recv_timeout(STARTUP) {
                Ok(line) => line,
                Err(err) => {
                    let _ = child.kill();
                    panic!("midasfs serve did not announce itself: {err}");
                }
            };
            if let Some(rest) = line.split("midasfs serve listening on ").nth(1) {
                url = Some(rest.trim().to_owned());
            } else if let Some(rest) = line.split("admin api key: ").nth(1) {
                api_key = Some(rest.trim().to_owned());
            }
        }
        Server {
            url: url.unwrap_or_default(),
            email: EMAIL.into(),
            password: PASSWORD.into(),
            api_key: api_key.unwrap_or_default(),
            serve: Some((child, data)),
        }
    }

    fn client(&self, credentials: Credentials) -> Client {
        Client::new(ClientConfig {
            base_url: self.url.clone(),
            credentials,
            connect_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(10),
        })
        .expect("client")
    }

    fn admin_key(&self) -> Credentials {
        Credentials::ApiKey {
            email: self.email.clone(),
            api_key: self.api_key.clone(),
        }
    }

    /// `midasfs admin --data DIR ARGS…` on this server's store; `None` on a real Midas.
    fn admin(&self, args: &[&str]) -> Option<String> {
        let (_, data) = self.serve.as_ref()?;
        let output = Command::new(env!("CARGO_BIN_EXE_midasfs"))
            .arg("admin")
            .arg("--data")
            .arg(data.path())
            .args(args)
            .output()
            .expect("run midasfs admin");
        assert!(
            output.status.success(),
            "midasfs admin {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// A folder of the test's own in the administrator's Public folder, so that a server that is
/// not clean (a real Midas used by every run) holds nothing the test trips over.
async fn own_folder(client: &Client, test: &str) -> Folder {
    let public = named(
        &client.user_folders().await.expect("user.folders"),
        "Public",
    )
    .clone();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let name = format!("{test}-{}-{nanos}", std::process::id());
    client
        .folder_create(public.folder_id, &name)
        .await
        .expect("the test's own folder")
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some((child, _)) = self.serve.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn forward_lines(stream: impl Read + Send + 'static, lines: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            eprintln!("serve: {line}");
            // The test may have stopped listening; the server's output is still drained.
            let _ = lines.send(line);
        }
    });
}

fn named<'a>(folders: &'a [Folder], name: &str) -> &'a Folder {
    folders
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no folder {name:?} in {folders:?}"))
}

async fn download_all(client: &Client, bitstream: i64, offset: u64, size: u64) -> Vec<u8> {
    let mut stream = client
        .download(bitstream, offset, size)
        .await
        .expect("open download");
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next_chunk().await.expect("download chunk") {
        bytes.extend_from_slice(&chunk);
    }
    bytes
}

fn write_file(dir: &Path, name: &str, content: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write local file");
    path
}

#[tokio::test]
async fn every_call() {
    let server = Server::start();
    let client = server.client(server.admin_key());
    let me = client.connect().await.expect("connect").expect("a user");
    assert_eq!(me.email, server.email);
    assert!(me.admin);
    assert!(!client.version().await.expect("version").is_empty());

    let by_email = client
        .user_get_by_email(&server.email)
        .await
        .expect("user.get");
    assert_eq!(by_email.map(|u| u.user_id), Some(me.user_id));
    let by_name = client
        .user_get_by_name(&me.firstname, &me.lastname)
        .await
        .expect("user.get by name");
    assert_eq!(by_name.map(|u| u.user_id), Some(me.user_id));
    assert_eq!(
        client
            .user_get_by_email("nobody@example.com")
            .await
            .expect("user.get"),
        None
    );
    let users = client.user_list(50).await.expect("user.list");
    assert!(users.iter().any(|u| u.user_id == me.user_id));

    let top = client.user_folders().await.expect("user.folders");
    let public = named(&top, "Public").clone();
    named(&top, "Private");
    assert_eq!(public.parent_id, me.folder_id);
    let root = client.folder_get(me.folder_id).await.expect("folder.get");
    assert_eq!(root.folder_id, me.folder_id);
    let children = client
        .folder_children(me.folder_id)
        .await
        .expect("children");
    assert_eq!(children.folders.len(), top.len());

    // Folders: create, clash, rename, move, delete.
    let own = own_folder(&client, "every_call").await;
    let work = client
        .folder_create(own.folder_id, "work é")
        .await
        .expect("create");
    assert_eq!(work.name, "work é");
    let clash = client
        .folder_create(own.folder_id, "work é")
        .await
        .unwrap_err();
    assert_eq!(clash.api_code(), Some(-150), "{clash}");
    let renamed = client
        .folder_rename(&work.uuid, "work")
        .await
        .expect("rename");
    assert_eq!(
        (renamed.folder_id, renamed.name.as_str()),
        (work.folder_id, "work")
    );
    let sub = client
        .folder_create(own.folder_id, "sub")
        .await
        .expect("create");
    let moved = client
        .folder_move(sub.folder_id, work.folder_id)
        .await
        .expect("move");
    assert_eq!(moved.parent_id, work.folder_id);

    // Items: create (renamed on a clash), upload, read back.
    let item = client
        .item_create(work.folder_id, "data.bin")
        .await
        .expect("item");
    let twin = client
        .item_create(work.folder_id, "data.bin")
        .await
        .expect("item");
    assert_eq!(twin.name, "data.bin (1)");
    let local = tempfile::tempdir().expect("tempdir");
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let path = write_file(local.path(), "data.bin", &content);
    let token = client
        .upload_token(item.item_id, "data.bin", None)
        .await
        .expect("generatetoken")
        .expect("a token (no checksum, so no dedup)");
    assert_eq!(client.upload_offset(&token).await.expect("getoffset"), 0);
    let uploaded = client
        .upload_perform(
            &token,
            item.item_id,
            "data.bin",
            &path,
            0,
            content.len() as u64,
            UploadRevision::Head,
        )
        .await
        .expect("upload");
    assert_eq!(uploaded.item_id, item.item_id);

    let fetched = client.item_get(item.item_id).await.expect("item.get");
    assert_eq!(fetched.revisions.len(), 1, "only the head revision");
    let bitstream = fetched.head().expect("head").bitstreams[0].clone();
    assert_eq!(bitstream.sizebytes as usize, content.len());
    let size = content.len() as u64;
    let whole = download_all(&client, bitstream.bitstream_id, 0, size).await;
    assert_same_bytes(&whole, &content);
    let tail = download_all(&client, bitstream.bitstream_id, 123_457, size).await;
    assert_same_bytes(&tail, &content[123_457..]);
    assert!(download_all(&client, bitstream.bitstream_id, size, size)
        .await
        .is_empty());

    // A second upload of the same content with its checksum is deduplicated.
    let md5 = bitstream.checksum.clone();
    let dedup = client
        .upload_token(twin.item_id, "copy.bin", Some(&md5))
        .await
        .expect("generatetoken with checksum");
    assert_eq!(dedup, None);

    // A new revision replaces the head's files.
    let small = write_file(local.path(), "small.txt", b"hello\n");
    let token = client
        .upload_token(item.item_id, "small.txt", None)
        .await
        .expect("token")
        .expect("a token");
    client
        .upload_perform(
            &token,
            item.item_id,
            "small.txt",
            &small,
            0,
            6,
            UploadRevision::New,
        )
        .await
        .expect("upload new revision");
    let head = client.item_get(item.item_id).await.expect("item.get");
    let head = head.head().expect("head");
    assert_eq!(head.revision, 2);
    assert_eq!(head.bitstreams.len(), 1);
    let small_id = head.bitstreams[0].bitstream_id;

    // Metadata.
    client
        .item_set_metadata(item.item_id, "contributor", "author", "Ada & Bob")
        .await
        .expect("setmetadata");
    let metadata = client
        .item_get_metadata(item.item_id)
        .await
        .expect("getmetadata");
    assert!(metadata
        .iter()
        .any(|m| m.element == "contributor" && m.qualifier == "author" && m.value == "Ada & Bob"));
    client
        .item_delete_metadata(item.item_id, "contributor", "author")
        .await
        .expect("deletemetadata");
    let metadata = client
        .item_get_metadata(item.item_id)
        .await
        .expect("getmetadata");
    assert!(metadata.iter().all(|m| m.element != "contributor"));
    let bare = client
        .item_create(work.folder_id, "bare")
        .await
        .expect("item");
    let none = client
        .item_get_metadata(bare.item_id)
        .await
        .expect("no revision, no metadata");
    assert!(none.is_empty());

    // Renames and moves.
    let renamed = client
        .item_rename(&item.uuid, "hello.txt", true)
        .await
        .expect("item rename");
    assert_eq!(renamed.name, "hello.txt");
    let head = client.item_get(item.item_id).await.expect("item.get");
    assert_eq!(head.head().expect("head").bitstreams[0].name, "hello.txt");
    client
        .bitstream_rename(small_id, "greeting.txt")
        .await
        .expect("bitstream.edit");
    let head = client.item_get(item.item_id).await.expect("item.get");
    assert_eq!(
        head.head().expect("head").bitstreams[0].name,
        "greeting.txt"
    );
    let moved = client
        .item_move(item.item_id, work.folder_id, sub.folder_id)
        .await
        .expect("item.move");
    assert_eq!(moved.item_id, item.item_id);
    let listing = client
        .folder_children(sub.folder_id)
        .await
        .expect("children");
    assert!(listing.items.iter().any(|i| i.item_id == item.item_id));

    // Deletes.
    client
        .bitstream_delete(small_id)
        .await
        .expect("bitstream.delete");
    let head = client.item_get(item.item_id).await.expect("item.get");
    assert!(head.head().is_none_or(|r| r.bitstreams.is_empty()));
    client.item_delete(twin.item_id).await.expect("item.delete");
    assert_eq!(
        client.item_get(twin.item_id).await.unwrap_err().api_code(),
        Some(-151)
    );
    client
        .folder_delete(work.folder_id)
        .await
        .expect("folder.delete");
    assert_eq!(
        client
            .folder_get(sub.folder_id)
            .await
            .unwrap_err()
            .api_code(),
        Some(-151)
    );

    // Communities: made with `serve`'s admin command; a real Midas is only asked for its list.
    let lab_made = server.admin(&[
        "add-community",
        "--name",
        "Lab",
        "--moderator",
        &server.email,
    ]);
    let communities = client.community_list().await.expect("community.list");
    if lab_made.is_none() {
        return;
    }
    let lab = communities
        .iter()
        .find(|c| c.name == "Lab")
        .expect("Lab listed");
    let by_name = client
        .community_get_by_name("Lab")
        .await
        .expect("community.get");
    assert_eq!(by_name.community_id, lab.community_id);
    let folders = client
        .community_children(lab.community_id)
        .await
        .expect("community.children");
    assert!(folders.iter().any(|f| f.name == "Public"));
}

#[tokio::test]
async fn a_password_is_exchanged_for_the_key() {
    let server = Server::start();
    let credentials = Credentials::Password {
        email: server.email.clone(),
        password: server.password.clone(),
    };
    let client = server.client(credentials);
    assert!(client.connect().await.expect("connect").is_some());
    client.user_folders().await.expect("user.folders");

    let wrong = Credentials::Password {
        email: server.email.clone(),
        password: "wrong".into(),
    };
    let err = server.client(wrong).connect().await.unwrap_err();
    assert!(matches!(err, Error::Auth(_)), "{err:?}");
}

#[tokio::test]
async fn an_expired_token_is_renewed_invisibly() {
    // serve only: a real Midas's tokens live 100 minutes
    let server = Server::serve(&["--token-ttl", "2"]);
    let client = server.client(server.admin_key());
    client.connect().await.expect("connect");
    let before = client.user_folders().await.expect("user.folders");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = client
        .user_folders()
        .await
        .expect("user.folders after expiry");
    assert_eq!(before, after);
    assert!(!after.is_empty(), "logged in again, not anonymous");
}

#[tokio::test]
async fn a_wrong_key_is_an_auth_error() {
    let server = Server::start();
    let wrong = Credentials::ApiKey {
        email: server.email.clone(),
        api_key: "x".repeat(32),
    };
    let err = server.client(wrong).connect().await.unwrap_err();
    assert!(matches!(err, Error::Auth(_)), "{err:?}");
    let unknown = Credentials::ApiKey {
        email: "nobody@example.com".into(),
        api_key: server.api_key.clone(),
    };
    let err = server.client(unknown).connect().await.unwrap_err();
    assert!(matches!(err, Error::Auth(_)), "{err:?}");
}

#[tokio::test]
async fn anonymous_cannot_see_private() {
    let server = Server::start();
    let admin = server.client(server.admin_key());
    let me = admin.connect().await.expect("connect").expect("user");
    let top = admin.user_folders().await.expect("user.folders");
    let private = named(&top, "Private").clone();
    let public = named(&top, "Public").clone();

    let anonymous = server.client(Credentials::Anonymous);
    assert_eq!(anonymous.connect().await.expect("connect"), None);
    assert!(anonymous
        .user_folders()
        .await
        .expect("user.folders")
        .is_empty());
    let refused = anonymous.folder_get(private.folder_id).await.unwrap_err();
    assert_eq!(refused.api_code(), Some(-151), "{refused}");
    let visible = anonymous
        .folder_children(me.folder_id)
        .await
        .expect("children");
    assert!(visible
        .folders
        .iter()
        .all(|f| f.folder_id != private.folder_id));
    assert_eq!(
        anonymous
            .folder_get(public.folder_id)
            .await
            .expect("public")
            .name,
        "Public"
    );
    let write = anonymous
        .folder_create(public.folder_id, "x")
        .await
        .unwrap_err();
    assert!(write.api_code().is_some(), "{write}");
}

#[tokio::test]
async fn a_dead_server_fails_within_the_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    let client = Client::new(ClientConfig {
        base_url: format!("http://{addr}/midas"),
        credentials: Credentials::Anonymous,
        connect_timeout: Duration::from_secs(2),
        stall_timeout: Duration::from_secs(2),
    })
    .expect("client");
    // Generous outer bound: the client's own cap is 4 stall timeouts.
    let result = tokio::time::timeout(Duration::from_secs(30), client.connect())
        .await
        .expect("the client gave up by itself");
    let err = result.unwrap_err();
    assert!(
        matches!(err, Error::Unreachable { .. } | Error::Timeout { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_interrupted_upload_resumes_from_the_server_offset() {
    let server = Server::start();
    let client = server.client(server.admin_key());
    client.connect().await.expect("connect");
    let own = own_folder(&client, "an_interrupted_upload").await;
    let item = client
        .item_create(own.folder_id, "big.bin")
        .await
        .expect("item");
    let local = tempfile::tempdir().expect("tempdir");
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let whole = write_file(local.path(), "big.bin", &content);
    // The first attempt runs out of file half-way, as if the writer had been cut off.
    let half = write_file(local.path(), "half.bin", &content[..1_500_000]);
    let length = content.len() as u64;
    let token = client
        .upload_token(item.item_id, "big.bin", None)
        .await
        .expect("token")
        .expect("a token");
    let err = client
        .upload_perform(
            &token,
            item.item_id,
            "big.bin",
            &half,
            0,
            length,
            UploadRevision::Head,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err:?}");

    // The server may still be winding up the broken request for a moment: what a resuming
    // caller does is ask for the offset again and send the rest from there.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let offset = client.upload_offset(&token).await.expect("getoffset");
        assert!(offset <= 1_500_000, "offset {offset}");
        let resumed = client
            .upload_perform(
                &token,
                item.item_id,
                "big.bin",
                &whole,
                offset,
                length,
                UploadRevision::Head,
            )
            .await;
        match resumed {
            Ok(_) => break,
            Err(err) if attempts < 20 => {
                eprintln!("resume attempt {attempts}: {err}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(err) => panic!("resumed upload: {err:?}"),
        }
    }
    let fetched = client.item_get(item.item_id).await.expect("item.get");
    let bitstream = &fetched.head().expect("head").bitstreams[0];
    assert_eq!(bitstream.sizebytes as u64, length);
    // A difference here means the server appended the resumed bytes somewhere other than the
    // offset it had just reported (e.g. the broken request was still writing when asked).
    let stored = download_all(&client, bitstream.bitstream_id, 0, length).await;
    assert_same_bytes(&stored, &content);
}

/// Like `assert_eq!`, without printing megabytes.
fn assert_same_bytes(got: &[u8], expected: &[u8]) {
    let first_difference = got.iter().zip(expected).position(|(a, b)| a != b);
    assert!(
        got.len() == expected.len() && first_difference.is_none(),
        "got {} bytes, expected {}; first difference at {first_difference:?}",
        got.len(),
        expected.len()
    );
}

/// The protocol of a file sent while it is written (`src/fs/early.rs`): each part declares one
/// byte more than it carries, so Midas keeps the bytes and answers −105 with the count it holds,
/// which `getoffset` confirms; the last part, with the real length, completes the upload, and the
/// server's MD5 is that of the whole file.
#[tokio::test]
async fn parts_sent_while_written_are_held_counted_and_checksummed_whole() {
    use md5::{Digest, Md5};
    let server = Server::start();
    let client = server.client(server.admin_key());
    client.connect().await.expect("connect");
    let own = own_folder(&client, "parts_sent_while_written").await;
    let item = client
        .item_create(own.folder_id, "parts.bin")
        .await
        .expect("item");
    let local = tempfile::tempdir().expect("tempdir");
    let content: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file = write_file(local.path(), "parts.bin", &content);
    let token = client
        .upload_token(item.item_id, "parts.bin", None)
        .await
        .expect("token")
        .expect("a token");
    let mut held = 0;
    for end in [1_000_000u64, 2_500_000, 4_000_000] {
        let part = UploadPart {
            token: &token,
            item_id: item.item_id,
            filename: "parts.bin",
            file: &file,
            offset: held,
            end,
        };
        held = client.upload_perform_part(&part).await.expect("a part");
        assert_eq!(held, end, "the server holds what the parts sent");
        assert_eq!(client.upload_offset(&token).await.expect("getoffset"), held);
    }
    let length = content.len() as u64;
    client
        .upload_perform(
            &token,
            item.item_id,
            "parts.bin",
            &file,
            held,
            length,
            UploadRevision::Head,
        )
        .await
        .expect("the last part");
    let fetched = client.item_get(item.item_id).await.expect("item.get");
    let bitstream = &fetched.head().expect("head").bitstreams[0];
    assert_eq!(bitstream.sizebytes as u64, length);
    assert_eq!(bitstream.checksum, format!("{:x}", Md5::digest(&content)));
    let stored = download_all(&client, bitstream.bitstream_id, 0, length).await;
    assert_same_bytes(&stored, &content);
}
