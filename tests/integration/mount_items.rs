//! Items of several files made through a real mount of `midasfs serve`: `setfattr -n
//! user.midas.type -v item DIR`, and `--leaf-dirs-as-items`, whose `cp -r` of a tree must make on
//! the server what pydas's `upload(…, leaf_folders_as_items=True)` makes of the same tree.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::files::{errno, names_in, setfattr};
use common::mount::{getxattr, Mount};
use common::server::{md5_hex, server_with_private, text, TestServer};
use common::tree::pseudo_random;
use midasfs::midas::text::repair;
use serde_json::Value;

/// A node of the server's tree: a folder, or an item with its number of revisions and its head
/// revision's bitstreams (name, size, MD5), in the server's order.
#[derive(Debug, PartialEq)]
enum Node {
    Folder,
    Item(usize, Vec<(String, u64, String)>),
}

/// The server's tree below folder `id`, by path relative to it.
fn server_tree(server: &TestServer, token: &str, id: &str, path: &str) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let children = server.call_ok("midas.folder.children", &[("token", token), ("id", id)]);
    for item in children["items"].as_array().into_iter().flatten() {
        let full = server.call_ok(
            "midas.item.get",
            &[("token", token), ("id", text(&item["item_id"]))],
        );
        let revisions = full["revisions"].as_array().cloned().unwrap_or_default();
        let bitstreams = revisions
            .last()
            .and_then(|head| head["bitstreams"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|b: &Value| {
                (
                    repair(text(&b["name"])),
                    text(&b["sizebytes"]).parse().expect("a size"),
                    text(&b["checksum"]).to_owned(),
                )
            })
            .collect();
        out.insert(
            format!("{path}{}", repair(text(&item["name"]))),
            Node::Item(revisions.len(), bitstreams),
        );
    }
    for folder in children["folders"].as_array().into_iter().flatten() {
        let name = repair(text(&folder["name"]));
        out.insert(format!("{path}{name}"), Node::Folder);
        out.extend(server_tree(
            server,
            token,
            text(&folder["folder_id"]),
            &format!("{path}{name}/"),
        ));
    }
    out
}

/// Writes `files` (path, content) below `root`, in that order, and makes the directories
/// `empty` (the order matters: `cp` visits a directory's entries by inode number, that is in the
/// order they were made here).
fn write_tree(root: &Path, files: &[(&str, Vec<u8>)], empty: &[&str]) {
    for (relative, content) in files {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
    }
    for dir in empty {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
}

fn bitstream(name: &str, content: &[u8]) -> (String, u64, String) {
    (name.to_owned(), content.len() as u64, md5_hex(content))
}

fn kind_of(path: &Path) -> String {
    getxattr(path, "user.midas.type").unwrap_or_else(|| panic!("{} has no type", path.display()))
}

#[test]
fn cp_r_with_leaf_dirs_as_items_makes_what_pydas_upload_with_leaf_folders_as_items_makes() {
    require_fuse!();
    let (server, token, own) = server_with_private();
    let by_pydas = text(&server.create_folder(&token, &own, "by-pydas")["folder_id"]).to_owned();
    let by_mount = text(&server.create_folder(&token, &own, "by-mount")["folder_id"]).to_owned();

    // A DICOM-like tree. Files made before the subdirectories beside them, so that `cp` writes
    // them into a directory before it learns that the directory has a subdirectory.
    let local = tempfile::tempdir().unwrap();
    let series = pseudo_random(1_500_000, 7);
    write_tree(
        local.path(),
        &[
            ("dicom_data/README.txt", b"two patients\n".to_vec()),
            ("dicom_data/patient1/notes.txt", b"first visit\n".to_vec()),
            ("dicom_data/patient1/series1/001.dcm", series.clone()),
            (
                "dicom_data/patient1/series1/002.dcm",
                pseudo_random(70_000, 8),
            ),
            ("dicom_data/patient1/series1/003.dcm", Vec::new()),
            (
                "dicom_data/patient1/series2/001.dcm",
                b"one slice\n".to_vec(),
            ),
            // The same content as another file: pydas links it by its MD5.
            ("dicom_data/patient2/series1/001.dcm", series.clone()),
            ("dicom_data/patient2/series1/002.dcm", b"x\n".to_vec()),
            // A leaf of one file named like it.
            ("dicom_data/patient2/scout/scout", b"scout\n".to_vec()),
        ],
        &["dicom_data/patient2/empty"],
    );
    let tree = local.path().join("dicom_data");

    let output = server.pydas(
        "upload.py",
        &[
            tree.to_str().unwrap(),
            "--leaf",
            &format!("--destination={}/by-pydas", server.private_path()),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(r#"PYDAS-RESULT {"error": null}"#),
        "pydas: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let mount = Mount::admin(&server, &["--leaf-dirs-as-items"]);
    let destination = server.private_in(&mount.path).join("by-mount");
    let cp = Command::new("cp")
        .arg("-r")
        .arg(&tree)
        .arg(&destination)
        .output()
        .unwrap();
    assert!(
        cp.status.success(),
        "cp -r: {}",
        String::from_utf8_lossy(&cp.stderr)
    );

    let pydas_tree = server_tree(&server, &token, &by_pydas, "");
    let mount_tree = server_tree(&server, &token, &by_mount, "");
    assert_eq!(mount_tree, pydas_tree);
    // And both are what pydas documents, not the same mistake twice.
    let item = |n, files: &[(&str, &[u8])]| {
        Node::Item(
            n,
            files
                .iter()
                .map(|(name, content)| bitstream(name, content))
                .collect(),
        )
    };
    assert_eq!(pydas_tree["dicom_data"], Node::Folder);
    assert_eq!(pydas_tree["dicom_data/patient1"], Node::Folder);
    assert_eq!(
        pydas_tree["dicom_data/README.txt"],
        item(1, &[("README.txt", b"two patients\n")])
    );
    assert_eq!(
        pydas_tree["dicom_data/patient1/series1"],
        item(
            1,
            &[
                ("001.dcm", &series),
                ("002.dcm", &pseudo_random(70_000, 8)),
                ("003.dcm", b""),
            ]
        )
    );
    assert_eq!(
        pydas_tree["dicom_data/patient2/series1"],
        item(1, &[("001.dcm", &series), ("002.dcm", b"x\n")])
    );
    assert_eq!(
        pydas_tree["dicom_data/patient2/scout"],
        item(1, &[("scout", b"scout\n")])
    );
    assert_eq!(
        pydas_tree["dicom_data/patient2/empty"],
        Node::Item(0, vec![])
    );
    assert_eq!(pydas_tree.len(), 10, "{pydas_tree:#?}");

    // The mount shows them so: item directories of their files, read back as written.
    let copied = destination.join("dicom_data");
    assert_eq!(kind_of(&copied), "folder");
    assert_eq!(kind_of(&copied.join("patient1")), "folder");
    assert_eq!(kind_of(&copied.join("patient1/series1")), "item");
    assert_eq!(kind_of(&copied.join("patient2/empty")), "item");
    assert_eq!(
        std::fs::read(copied.join("patient1/series1/001.dcm")).unwrap(),
        series
    );
    assert_eq!(
        std::fs::read(copied.join("patient1/notes.txt")).unwrap(),
        b"first visit\n"
    );
}

#[test]
fn a_directory_made_in_a_new_leaf_item_turns_it_into_a_folder_of_single_file_items() {
    require_fuse!();
    let (server, token, own) = server_with_private();
    let mount = Mount::admin(&server, &["--leaf-dirs-as-items"]);
    let dir = server.private_in(&mount.path).join("study");
    std::fs::create_dir(&dir).unwrap();
    assert_eq!(kind_of(&dir), "item");
    std::fs::write(dir.join("a.txt"), b"first\n").unwrap();
    std::fs::write(dir.join("b.bin"), pseudo_random(300_000, 2)).unwrap();
    assert_eq!(
        server_tree(&server, &token, &own, "")["study"],
        Node::Item(
            1,
            vec![
                bitstream("a.txt", b"first\n"),
                bitstream("b.bin", &pseudo_random(300_000, 2))
            ]
        )
    );

    // A subdirectory: the item becomes a folder, its files items of their own.
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/c.txt"), b"deeper\n").unwrap();
    std::fs::write(dir.join("d.txt"), b"after\n").unwrap();
    let tree = server_tree(&server, &token, &own, "");
    let expected = BTreeMap::from([
        ("study".to_owned(), Node::Folder),
        (
            "study/a.txt".to_owned(),
            Node::Item(1, vec![bitstream("a.txt", b"first\n")]),
        ),
        (
            "study/b.bin".to_owned(),
            Node::Item(1, vec![bitstream("b.bin", &pseudo_random(300_000, 2))]),
        ),
        (
            "study/d.txt".to_owned(),
            Node::Item(1, vec![bitstream("d.txt", b"after\n")]),
        ),
        (
            "study/sub".to_owned(),
            Node::Item(1, vec![bitstream("c.txt", b"deeper\n")]),
        ),
    ]);
    assert_eq!(tree, expected);
    assert_eq!(kind_of(&dir), "folder");
    assert_eq!(names_in(&dir), ["a.txt", "b.bin", "d.txt", "sub"]);
    assert_eq!(std::fs::read(dir.join("a.txt")).unwrap(), b"first\n");
    assert_eq!(std::fs::read(dir.join("sub/c.txt")).unwrap(), b"deeper\n");
}

#[test]
fn setfattr_user_midas_type_item_makes_an_empty_directory_an_item_of_the_files_written_into_it() {
    require_fuse!();
    let (server, token, own) = server_with_private();
    let mount = Mount::admin(&server, &[]);
    let private = server.private_in(&mount.path);
    let dir = private.join("series");
    std::fs::create_dir(&dir).unwrap();
    assert_eq!(kind_of(&dir), "folder");
    assert_eq!(kind_of(&private), "folder");

    setfattr(&dir, "user.midas.type", "item").expect("make it an item");
    assert_eq!(kind_of(&dir), "item");
    std::fs::write(dir.join("001.dcm"), b"slice 1\n").unwrap();
    std::fs::write(dir.join("002.dcm"), b"slice 2\n").unwrap();
    assert_eq!(
        server_tree(&server, &token, &own, ""),
        BTreeMap::from([(
            "series".to_owned(),
            Node::Item(
                1,
                vec![
                    bitstream("001.dcm", b"slice 1\n"),
                    bitstream("002.dcm", b"slice 2\n")
                ]
            )
        )])
    );
    assert_eq!(std::fs::read(dir.join("002.dcm")).unwrap(), b"slice 2\n");

    // An item holds files only; only an empty one turns back into a folder.
    assert_eq!(
        errno(std::fs::create_dir(dir.join("sub")), "mkdir in an item"),
        Some(libc::EPERM)
    );
    assert_eq!(
        errno(setfattr(&dir, "user.midas.type", "folder"), "un-item"),
        Some(libc::ENOTEMPTY)
    );
    assert_eq!(
        errno(setfattr(&dir, "user.midas.type", "box"), "a bad type"),
        Some(libc::EINVAL)
    );
    assert_eq!(
        errno(
            setfattr(&dir.join("001.dcm"), "user.midas.type", "item"),
            "a file's type"
        ),
        Some(libc::EPERM)
    );
    let other = private.join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("f"), b"f\n").unwrap();
    assert_eq!(
        errno(setfattr(&other, "user.midas.type", "item"), "a full folder"),
        Some(libc::ENOTEMPTY)
    );

    let back = private.join("back");
    std::fs::create_dir(&back).unwrap();
    setfattr(&back, "user.midas.type", "item").unwrap();
    setfattr(&back, "user.midas.type", "item").expect("the same type again changes nothing");
    setfattr(&back, "user.midas.type", "folder").unwrap();
    assert_eq!(kind_of(&back), "folder");
    std::fs::create_dir(back.join("sub")).expect("a folder again");
    let tree = server_tree(&server, &token, &own, "");
    assert_eq!(tree["back"], Node::Folder);
    assert_eq!(tree["back/sub"], Node::Folder);
    assert_eq!(tree.len(), 5, "{tree:#?}");

    // A private directory in Public stays private as an item, and back as a folder.
    let public = mount.path.join("users").join(server.home()).join("Public");
    let secret = public.join("secret");
    std::fs::create_dir(&secret).unwrap();
    let chmod = Command::new("chmod")
        .arg("700")
        .arg(&secret)
        .status()
        .unwrap();
    assert!(chmod.success());
    assert_eq!(
        getxattr(&secret, "user.midas.privacy").as_deref(),
        Some("Private")
    );
    setfattr(&secret, "user.midas.type", "item").unwrap();
    assert_eq!(kind_of(&secret), "item");
    assert_eq!(
        getxattr(&secret, "user.midas.privacy").as_deref(),
        Some("Private")
    );
    let id = getxattr(&secret, "user.midas.id").unwrap();
    assert!(
        !server.can_get(None, "item", &id),
        "anyone may read the item"
    );
    setfattr(&secret, "user.midas.type", "folder").unwrap();
    let id = getxattr(&secret, "user.midas.id").unwrap();
    assert_eq!(
        getxattr(&secret, "user.midas.privacy").as_deref(),
        Some("Private")
    );
    assert!(
        !server.can_get(None, "folder", &id),
        "anyone may read the folder"
    );
    assert_eq!(
        server.call_ok("midas.folder.get", &[("token", &token), ("id", &id)])["name"],
        "secret"
    );
}
