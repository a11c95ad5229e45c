//! `midasfs serve` with pydas, the official Midas Python client (installed by scripts/setup.sh):
//! logins, `pydas.upload` and `pydas.download` of a tree in both of pydas's modes, and the
//! CoreDriver calls a user script makes. The scripts are in `tests/pydas/`. The same tests run
//! against the real Midas Server the environment names (see `common::real`), each in a folder of
//! its own; what counts serve's requests or bytes is checked on serve only.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use common::server::{md5_hex, text, TestServer};
use common::tree::pseudo_random;
use common::zipfile;
use midasfs::midas::text::{double_encode, repair};

/// Runs a script of `tests/pydas` as the administrator; returns the JSON it reports.
fn run_pydas(server: &TestServer, script: &str, args: &[&str]) -> Value {
    report_of(script, server.pydas(script, args))
}

/// The JSON a script of `tests/pydas` reported; panics if it failed.
fn report_of(script: &str, output: std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let report = stdout
        .lines()
        .find_map(|line| line.strip_prefix("PYDAS-RESULT "))
        .unwrap_or_else(|| panic!("{script} reported nothing:\n{stdout}\n{stderr}"));
    serde_json::from_str(report).unwrap_or_else(|err| panic!("{script}: bad report ({err})"))
}

#[test]
fn login_with_a_password_goes_through_the_default_api_key() {
    let server = TestServer::start(); // serve only: its request counters
    let report = run_pydas(&server, "login.py", &["password"]);
    assert_eq!(report["api_key"], server.api_key.as_str());
    assert_eq!(report["application"], "Default");
    // a second login within the token's lifetime returns the same token
    assert_eq!(report["token"], server.token().as_str());
    assert_eq!(report["version"], "3.4.2");
    assert_eq!(
        report["user_folders"],
        serde_json::json!(["Private", "Public"])
    );
    assert_eq!(
        server.stats()["methods"]["midas.user.apikey.default"],
        1,
        "{}",
        server.stats()
    );
}

#[test]
fn login_with_an_api_key() {
    let server = TestServer::any();
    let report = run_pydas(&server, "login.py", &["apikey"]);
    let token = text(&report["token"]);
    assert!(
        token.len() >= 10 && token.chars().all(|c| c.is_ascii_alphanumeric()),
        "pydas asks for a one-time password when the token is shorter than 10: {token:?}"
    );
    assert_eq!(token, server.token());
    assert_eq!(
        report["user_folders"],
        serde_json::json!(["Private", "Public"])
    );
    if !server.is_real() {
        assert!(server.stats()["methods"]
            .get("midas.user.apikey.default")
            .is_none_or(|count| count == 0));
    }
}

/// A tree with the awkward cases: nesting, an empty file, binary content, names in several
/// scripts, a 3 MB file, and leaf folders of one and of several files (for
/// `leaf_folders_as_items`).
fn make_tree(root: &Path, with_empty_folder: bool) {
    let files: [(&str, Vec<u8>); 9] = [
        ("hello.txt", b"Hello from pydas!\n".to_vec()),
        ("empty.txt", Vec::new()),
        ("caf\u{e9}.txt", "d\u{e9}j\u{e0} vu\n".as_bytes().to_vec()),
        (
            "\u{65e5}\u{672c}\u{8a9e}/\u{30c7}\u{30fc}\u{30bf}.csv",
            b"a,b\n1,2\n".to_vec(),
        ),
        ("big.bin", pseudo_random(3 * 1024 * 1024 + 17, 3)),
        ("nested/side.txt", b"beside a\n".to_vec()),
        ("nested/a/b/deep.bin", pseudo_random(70_000, 5)),
        (
            "nested/a/b/deeper.txt",
            b"two files in one leaf folder\n".to_vec(),
        ),
        ("nested/a/b/zero", Vec::new()),
    ];
    for (relative, content) in files {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create folders");
        std::fs::write(&path, content).expect("write a test file");
    }
    if with_empty_folder {
        std::fs::create_dir_all(root.join("nested/empty folder")).expect("create a folder");
    }
}

fn sorted_entries(dir: &Path) -> Vec<std::fs::DirEntry> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("read {}: {err}", dir.display()))
        .map(|entry| entry.expect("a directory entry"))
        .collect();
    entries.sort_by_key(|entry| entry.file_name());
    entries
}

fn name_of(entry: &std::fs::DirEntry) -> String {
    entry.file_name().to_string_lossy().into_owned()
}

fn is_leaf_folder(dir: &Path) -> bool {
    sorted_entries(dir).iter().all(|e| !e.path().is_dir())
}

/// A node of the server's tree, as pydas should have made it.
#[derive(Debug, PartialEq)]
enum Node {
    Folder,
    /// Revision count and the head revision's bitstreams (name, size, MD5).
    Item(usize, Vec<(String, u64, String)>),
}

/// What `pydas.upload` of `dir` should create (reference §4.3): a folder per directory, an item
/// per file, and with `leaf_folders_as_items` an item per directory without subdirectories,
/// holding its files in name order, all in one revision.
fn expected_structure(dir: &Path, path: &str, leaf: bool, out: &mut BTreeMap<String, Node>) {
    let bitstream = |file: &Path| {
        let data = std::fs::read(file).expect("read a test file");
        let name = file
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        (name, data.len() as u64, md5_hex(&data))
    };
    if leaf && is_leaf_folder(dir) {
        let files = sorted_entries(dir)
            .iter()
            .map(|e| bitstream(&e.path()))
            .collect();
        let revisions = if sorted_entries(dir).is_empty() { 0 } else { 1 };
        out.insert(path.to_owned(), Node::Item(revisions, files));
        return;
    }
    out.insert(path.to_owned(), Node::Folder);
    for entry in sorted_entries(dir) {
        let child = format!("{path}/{}", name_of(&entry));
        if entry.path().is_dir() {
            expected_structure(&entry.path(), &child, leaf, out);
        } else {
            out.insert(child, Node::Item(1, vec![bitstream(&entry.path())]));
        }
    }
}

/// A name as Midas sends it, double-encoded (reference §1.4: `café` goes out as `cafÃ©`), made
/// readable again; panics if it was not double-encoded the way Midas does it.
fn from_midas(raw: &str) -> String {
    let name = repair(raw);
    assert_eq!(
        double_encode(&name),
        raw,
        "{raw:?} is not double-encoded as Midas does it"
    );
    name
}

/// The server's tree below a folder, read with `folder.children` and `item.get` (names repaired
/// from Midas's double encoding).
fn server_structure(
    server: &TestServer,
    token: &str,
    folder_id: &str,
    path: &str,
) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::from([(path.to_owned(), Node::Folder)]);
    let children = server.call_ok(
        "midas.folder.children",
        &[("token", token), ("id", folder_id)],
    );
    for item in children["items"].as_array().into_iter().flatten() {
        let id = text(&item["item_id"]);
        let full = server.call_ok("midas.item.get", &[("token", token), ("id", id)]);
        let revisions = full["revisions"].as_array().cloned().unwrap_or_default();
        let bitstreams = revisions
            .last()
            .and_then(|head| head["bitstreams"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|b| {
                let size = text(&b["sizebytes"]).parse().expect("a size");
                (
                    from_midas(text(&b["name"])),
                    size,
                    text(&b["checksum"]).to_owned(),
                )
            })
            .collect::<Vec<_>>();
        let name = from_midas(text(&item["name"]));
        // an item's size is its revision's total (reference §5.10)
        let total: u64 = bitstreams.iter().map(|(_, size, _)| size).sum();
        if !bitstreams.is_empty() {
            assert_eq!(item["sizebytes"], total.to_string().as_str(), "item {name}");
        }
        out.insert(
            format!("{path}/{name}"),
            Node::Item(revisions.len(), bitstreams),
        );
    }
    for folder in children["folders"].as_array().into_iter().flatten() {
        let name = from_midas(text(&folder["name"]));
        let child = server_structure(
            server,
            token,
            text(&folder["folder_id"]),
            &format!("{path}/{name}"),
        );
        out.extend(child);
    }
    out
}

/// A file or folder on the local disk, for comparing trees.
#[derive(Debug, PartialEq)]
enum Local {
    Folder,
    File(Vec<u8>),
    /// A ZIP's entries: name and content.
    Zip(Vec<(String, Vec<u8>)>),
}

/// What `pydas.download` of the uploaded tree should write. In default mode: the tree itself. With
/// leaf items: a leaf folder of one file comes back as that file, one of several files as
/// `<folder>.zip` (pydas 0.3.6 keeps the server's file name).
fn expected_download(dir: &Path, path: &str, leaf: bool, out: &mut BTreeMap<String, Local>) {
    out.insert(path.to_owned(), Local::Folder);
    for entry in sorted_entries(dir) {
        let child = format!("{path}/{}", name_of(&entry));
        let read = |p: &Path| std::fs::read(p).expect("read a test file");
        if !entry.path().is_dir() {
            out.insert(child, Local::File(read(&entry.path())));
        } else if !(leaf && is_leaf_folder(&entry.path())) {
            expected_download(&entry.path(), &child, leaf, out);
        } else if let [only] = &sorted_entries(&entry.path())[..] {
            out.insert(
                format!("{path}/{}", name_of(only)),
                Local::File(read(&only.path())),
            );
        } else {
            let entries = sorted_entries(&entry.path())
                .iter()
                .map(|e| (name_of(e), read(&e.path())))
                .collect();
            out.insert(format!("{child}.zip"), Local::Zip(entries));
        }
    }
}

/// What pydas wrote, names repaired: pydas takes them from Midas's double-encoded JSON and from
/// the raw UTF-8 `Content-Disposition` read as Latin-1, and both come out the same way.
fn downloaded(dir: &Path, path: &str, out: &mut BTreeMap<String, Local>) {
    out.insert(path.to_owned(), Local::Folder);
    for entry in sorted_entries(dir) {
        let child = format!("{path}/{}", from_midas(&name_of(&entry)));
        if entry.path().is_dir() {
            downloaded(&entry.path(), &child, out);
        } else {
            let data = std::fs::read(entry.path()).expect("read a downloaded file");
            let local = if child.ends_with(".zip") {
                unzip(&data)
            } else {
                Local::File(data)
            };
            out.insert(child, local);
        }
    }
}

/// A ZIP's entries in order, duplicate names included; stored entries only, as `midasfs serve`
/// writes them.
fn unzip(data: &[u8]) -> Local {
    let entries = zipfile::entries(data).unwrap_or_else(|err| panic!("not a readable ZIP: {err}"));
    Local::Zip(
        entries
            .iter()
            .map(|entry| {
                let content = entry.stored_content().unwrap_or_else(|err| panic!("{err}"));
                (repair(&entry.name), content.to_vec())
            })
            .collect(),
    )
}

/// Keys where the two trees differ, with short descriptions (the files are too big to print).
fn tree_differences<T: std::fmt::Debug + PartialEq>(
    expected: &BTreeMap<String, T>,
    actual: &BTreeMap<String, T>,
) -> Vec<String> {
    let describe = |value: Option<&T>| {
        let text = format!("{value:?}");
        match text.char_indices().nth(200) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text,
        }
    };
    expected
        .keys()
        .chain(actual.keys())
        .filter(|key| expected.get(*key) != actual.get(*key))
        .map(|key| {
            format!(
                "{key}: expected {}, got {}",
                describe(expected.get(key)),
                describe(actual.get(key))
            )
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn upload_and_download(leaf: bool) {
    let server = if leaf {
        // serve only: a real Midas deflates the ZIP of a leaf folder, the helper reads stored ones
        TestServer::start()
    } else {
        TestServer::any()
    };
    let work = tempfile::tempdir().expect("a temporary directory");
    let local = work.path().join("tree");
    let download = work.path().join("download");
    std::fs::create_dir(&download).expect("create the download directory");
    make_tree(&local, !leaf);
    let mut args = vec![
        local.to_str().expect("a UTF-8 path"),
        download.to_str().expect("a UTF-8 path"),
    ];
    if leaf {
        args.push("--leaf");
    }
    let report = run_pydas(&server, "roundtrip.py", &args);
    assert_eq!(
        report["server_path"],
        format!("{}/tree", server.private_path())
    );

    let token = server.token();
    let mut expected = BTreeMap::new();
    expected_structure(&local, "Private/tree", leaf, &mut expected);
    let mut actual = server_structure(
        &server,
        &token,
        &server.folder_at(&token, &server.email, server.private()),
        "Private",
    );
    actual.remove("Private");
    let differences = tree_differences(&expected, &actual);
    assert!(
        differences.is_empty(),
        "the server's tree is not what pydas.upload makes:\n{}",
        differences.join("\n")
    );

    let mut expected = BTreeMap::new();
    expected_download(&local, "tree", leaf, &mut expected);
    let mut actual = BTreeMap::new();
    downloaded(&download.join("tree"), "tree", &mut actual);
    let differences = tree_differences(&expected, &actual);
    assert!(
        differences.is_empty(),
        "pydas.download did not bring back the tree:\n{}",
        differences.join("\n")
    );
}

#[test]
fn upload_and_download_a_tree() {
    upload_and_download(false);
}

#[test]
fn upload_and_download_leaf_folders_as_items() {
    upload_and_download(true);
}

#[test]
fn core_driver_calls() {
    let server = TestServer::any();
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let r = run_pydas(
        &server,
        "core_driver.py",
        &[scratch.path().to_str().expect("a UTF-8 path")],
    );
    let private = server.folder_at(&server.token(), &server.email, server.private());
    let content = b"notes written through pydas.drivers.CoreDriver\n".repeat(100);
    let (size, checksum) = (content.len().to_string(), md5_hex(&content));

    assert_eq!(r["create_folder"]["name"], "core driver");
    assert_eq!(r["create_folder"]["description"], "by pydas");
    assert_eq!(r["create_folder"]["parent_id"], private.as_str());
    assert_eq!(
        r["folder_get"]["folder_id"],
        r["create_folder"]["folder_id"]
    );
    assert_eq!(r["folder_get"]["parent"]["folder_id"], private.as_str());

    let item_id = r["create_item"]["item_id"].clone();
    assert_eq!(r["create_item"]["name"], "notes.txt");
    let upload_token = text(&r["upload_token"]);
    assert_eq!(
        upload_token.split('/').nth(1),
        item_id.as_str(),
        "{upload_token}"
    );
    assert_eq!(r["perform_upload"]["item_id"], item_id);
    assert_eq!(r["perform_upload"]["sizebytes"], size.as_str());
    let revisions = r["item_get"]["revisions"].as_array().expect("revisions");
    assert_eq!(revisions.len(), 1);
    let bitstream = &revisions[0]["bitstreams"][0];
    assert_eq!(bitstream["name"], "notes.txt");
    assert_eq!(bitstream["sizebytes"], size.as_str());
    assert_eq!(bitstream["checksum"], checksum.as_str());

    assert_eq!(r["dedup_token"], "", "a known checksum needs no upload");
    if !server.is_real() {
        assert_eq!(
            r["stats_before_dedup"]["bytes_uploaded"], r["stats_after_dedup"]["bytes_uploaded"],
            "bytes were uploaded for a deduplicated file"
        );
    }
    let copy = &r["copy_get"]["revisions"][0]["bitstreams"][0];
    assert_eq!(copy["name"], "copy.txt");
    assert_eq!(copy["sizebytes"], size.as_str());
    assert_eq!(copy["checksum"], checksum.as_str());

    assert_eq!(r["set_item_metadata"], "1");
    let metadata = r["get_item_metadata"].as_array().expect("a metadata list");
    assert!(
        metadata.iter().any(|m| m["element"] == "contributor"
            && m["qualifier"] == "author"
            && m["value"] == "pydas"),
        "{metadata:?}"
    );
    let found = r["search_item_by_name"]
        .as_array()
        .expect("a list of items");
    assert!(found.iter().any(|i| i["item_id"] == item_id), "{found:?}");

    assert_eq!(r["move_item"]["item_id"], item_id);
    let names = |listing: &Value, kind: &str| -> Vec<String> {
        listing[kind]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| text(&c["name"]).to_owned())
            .collect()
    };
    assert_eq!(names(&r["children_after_move"], "items"), ["copy.txt"]);
    assert_eq!(names(&r["children_after_move"], "folders"), ["destination"]);
    assert_eq!(names(&r["destination_children"], "items"), ["notes.txt"]);

    assert_eq!(r["delete_item"], "");
    assert!(names(&r["children_after_delete"], "items").is_empty());
    assert_eq!(r["get_deleted"], "InvalidPolicy", "-151 for a deleted item");
}

/// The bytes serve received for uploads so far (a real Midas does not count them: null).
fn bytes_uploaded(server: &TestServer) -> Value {
    if server.is_real() {
        return Value::Null;
    }
    server.stats()["bytes_uploaded"].clone()
}

/// The tree of the test's own folder, named `Private` in the paths.
fn private_tree(server: &TestServer) -> BTreeMap<String, Node> {
    let token = server.token();
    server_structure(
        server,
        &token,
        &server.folder_at(&token, &server.email, server.private()),
        "Private",
    )
}

/// Re-running `pydas.upload` (reference §4.3): with `reuse_existing` unchanged files cost nothing
/// (checksum deduplication) and a changed file is appended to its item's head revision under the
/// same name; without it, the existing folder is refused.
#[test]
fn upload_again_with_and_without_reuse_existing() {
    // serve only for now: on a real Midas 3.4.2 the changed b.txt does not reach the item's head
    // revision, and the ZIP it downloads as is deflated (the helper reads stored entries)
    let server = TestServer::start();
    let work = tempfile::tempdir().expect("a temporary directory");
    let local = work.path().join("again");
    std::fs::create_dir_all(local.join("sub")).expect("create the tree");
    std::fs::write(local.join("a.txt"), b"first file\n").expect("write a.txt");
    std::fs::write(local.join("sub/b.txt"), b"version 1\n").expect("write b.txt");
    let local_arg = local.to_str().expect("a UTF-8 path");

    assert_eq!(
        run_pydas(&server, "upload.py", &[local_arg])["error"],
        Value::Null
    );
    let first = private_tree(&server);
    let uploaded = bytes_uploaded(&server);

    assert_eq!(
        run_pydas(&server, "upload.py", &[local_arg, "--reuse"])["error"],
        Value::Null
    );
    assert_eq!(
        private_tree(&server),
        first,
        "an unchanged tree changed the server"
    );
    assert_eq!(
        bytes_uploaded(&server),
        uploaded,
        "unchanged files were uploaded again"
    );

    let refused = run_pydas(&server, "upload.py", &[local_arg]);
    assert_eq!(
        refused["error"], "InvalidParameter",
        "-150 for an existing folder"
    );
    assert_eq!(private_tree(&server), first);

    std::fs::write(local.join("sub/b.txt"), b"version 2, longer\n").expect("change b.txt");
    assert_eq!(
        run_pydas(&server, "upload.py", &[local_arg, "--reuse"])["error"],
        Value::Null
    );
    let mut expected = first;
    let Some(Node::Item(1, bitstreams)) = expected.get_mut("Private/again/sub/b.txt") else {
        panic!("no single-revision item b.txt in {expected:?}");
    };
    let changed = b"version 2, longer\n";
    bitstreams.push(("b.txt".to_owned(), changed.len() as u64, md5_hex(changed)));
    let differences = tree_differences(&expected, &private_tree(&server));
    assert!(differences.is_empty(), "{}", differences.join("\n"));

    // two bitstreams now: the item downloads as a ZIP holding both, under the same name
    let download = work.path().join("download");
    std::fs::create_dir(&download).expect("create the download directory");
    let fetched = run_pydas(
        &server,
        "download.py",
        &[
            &format!("{}/again/sub/b.txt", server.private_path()),
            download.to_str().expect("a UTF-8 path"),
        ],
    );
    assert_eq!(fetched["error"], Value::Null);
    let zip = std::fs::read(download.join("b.txt.zip")).expect("b.txt.zip downloaded");
    assert_eq!(
        unzip(&zip),
        Local::Zip(vec![
            ("b.txt".to_owned(), b"version 1\n".to_vec()),
            ("b.txt".to_owned(), changed.to_vec()),
        ])
    );
}

/// A path destination makes pydas send `parentid=False&parentid=<id>` (it passes a tuple), which
/// works on Midas only because PHP keeps the last value of a repeated key (reference §4.3). The
/// community is found by name without a token, as pydas does.
#[test]
fn upload_to_a_community_path_and_download_it() {
    let server = TestServer::start(); // serve only: its admin command makes the community
    server.add_community("Lab", false, None);
    let work = tempfile::tempdir().expect("a temporary directory");
    let local = work.path().join("tree");
    make_tree(&local, true);
    let download = work.path().join("download");
    std::fs::create_dir(&download).expect("create the download directory");

    let destination = "--destination=/communities/Lab/Public";
    let local_arg = local.to_str().expect("a UTF-8 path");
    let upload = run_pydas(&server, "upload.py", &[local_arg, destination]);
    assert_eq!(upload["error"], Value::Null);
    let download_arg = download.to_str().expect("a UTF-8 path");
    let fetched = run_pydas(
        &server,
        "download.py",
        &["/communities/Lab/Public/tree", download_arg],
    );
    assert_eq!(fetched["error"], Value::Null);

    let mut expected = BTreeMap::new();
    expected_download(&local, "tree", false, &mut expected);
    let mut actual = BTreeMap::new();
    downloaded(&download.join("tree"), "tree", &mut actual);
    let differences = tree_differences(&expected, &actual);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    assert!(
        private_tree(&server).len() == 1,
        "something landed in Private: {:?}",
        private_tree(&server)
    );
}

/// Another user can read the administrator's Public folder but not the Private one, and has
/// folders of their own. pydas reports Midas's -151 as `InvalidPolicy`; its path walk starts at the
/// user's root folder, which only its owner may read (reference §2.2), so even the Public folder
/// of someone else is out of pydas.download's reach, as on a real Midas.
#[test]
fn another_user_reads_public_but_not_private_data() {
    let server = TestServer::any();
    let (email, password) = ("jane@example.com", "janepassword1");
    let jane_key = server.add_user(email, password, "Jane", "Doe");
    let jane_private = server.fresh(email, &jane_key, "Private");
    let as_jane = |script: &str, args: &[&str]| {
        report_of(
            script,
            server.pydas_as(email, &jane_key, password, &jane_private, script, args),
        )
    };
    let public = server.fresh(&server.email, &server.api_key, "Public");
    let (admin_private, admin_public) = (
        server.private_path(),
        format!("/users/{}/{public}", server.home()),
    );
    let work = tempfile::tempdir().expect("a temporary directory");
    let local = work.path().join("shared");
    std::fs::create_dir(&local).expect("create the tree");
    std::fs::write(local.join("notes.txt"), b"for everyone\n").expect("write notes.txt");
    let local_arg = local.to_str().expect("a UTF-8 path");
    for destination in [&admin_private, &admin_public] {
        let destination = format!("--destination={destination}");
        let upload = run_pydas(&server, "upload.py", &[local_arg, &destination]);
        assert_eq!(upload["error"], Value::Null);
    }

    let download = work.path().join("download");
    std::fs::create_dir(&download).expect("create a download directory");
    let download_arg = download.to_str().expect("a UTF-8 path");
    for path in [
        format!("{admin_private}/shared"),
        format!("{admin_public}/shared"),
    ] {
        let refused = as_jane("download.py", &[&path, download_arg]);
        assert_eq!(refused["error"], "InvalidPolicy", "{path}");
    }
    let left = std::fs::read_dir(&download)
        .expect("list the download directory")
        .count();
    assert_eq!(left, 0, "pydas downloaded something it may not read");

    let login = [
        ("email", email),
        ("apikey", &jane_key),
        ("appname", "Default"),
    ];
    let jane_token = server.call_ok("midas.login", &login)["token"].clone();
    let jane_token = text(&jane_token);
    let admin_token = server.token();
    for folder in [server.private(), public.as_str()] {
        let id = &server.folder_at(&admin_token, &server.email, folder);
        let answer = server.call("midas.folder.get", &[("token", jane_token), ("id", id)]);
        let children = server.call_ok(
            "midas.folder.children",
            &[("token", jane_token), ("id", id)],
        );
        let visible: Vec<&str> = children["folders"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| text(&f["name"]))
            .collect();
        if folder.starts_with("Public") {
            assert_eq!(answer["stat"], "ok", "{answer}");
            assert_eq!(visible, ["shared"]);
        } else {
            assert_eq!(answer["code"], "-151", "{answer}");
            assert!(visible.is_empty(), "{visible:?}");
        }
    }

    let own = as_jane("upload.py", &[local_arg]);
    assert_eq!(own["error"], Value::Null);
    let fetched = as_jane(
        "download.py",
        &[
            &format!("/users/Jane_Doe/{jane_private}/shared"),
            download_arg,
        ],
    );
    assert_eq!(fetched["error"], Value::Null);
    let notes = std::fs::read(download.join("shared/notes.txt")).expect("notes.txt downloaded");
    assert_eq!(notes, b"for everyone\n");
}
