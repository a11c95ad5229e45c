//! Folders larger than the answers other calls may give: their listings are decoded while they
//! arrive, so a folder whose `folder.children` answer is over 64 MiB (about 150,000 items)
//! lists through the kernel instead of failing with EIO. The folder is filled straight in
//! serve's database, copying the rows and policies of one folder made through the API.

use crate::common;

use common::mount::Mount;
use common::server::{text, TestServer, ADMIN_EMAIL};

/// Subfolders, each with a description long enough that they make the answer over 64 MiB.
const FOLDERS: usize = 17_000;
const DESCRIPTION_BYTES: usize = 4096;

/// Adds `count` copies of folder `template` (rows and policies) to `parent`, named
/// `folder 00000`, … with a long description, in one transaction.
fn fill(server: &TestServer, parent: &str, template: &str, count: usize) {
    let db = rusqlite::Connection::open(server.data_dir.join("midas.sqlite3")).expect("database");
    db.busy_timeout(std::time::Duration::from_secs(30))
        .expect("busy timeout");
    let description = "d".repeat(DESCRIPTION_BYTES);
    db.execute_batch("BEGIN").expect("begin");
    for i in 0..count {
        db.execute(
            "INSERT INTO folder (parent_id, name, description, date_update, date_creation, uuid)
             SELECT ?1, ?2, ?3, date_update, date_creation, ?4 FROM folder WHERE folder_id = ?5",
            rusqlite::params![
                parent,
                format!("folder {i:05}"),
                description,
                format!("scale-{i:032}"),
                template
            ],
        )
        .expect("folder row");
        let id = db.last_insert_rowid();
        for table in ["folderpolicyuser", "folderpolicygroup"] {
            let holder = if table == "folderpolicyuser" {
                "user_id"
            } else {
                "group_id"
            };
            db.execute(
                &format!(
                    "INSERT INTO {table} (folder_id, {holder}, policy)
                     SELECT ?1, {holder}, policy FROM {table} WHERE folder_id = ?2"
                ),
                rusqlite::params![id, template],
            )
            .expect("policies");
        }
    }
    db.execute_batch("COMMIT").expect("commit");
}

#[test]
fn a_folder_whose_listing_is_over_64_mib_lists_in_full() {
    require_fuse!();
    let server = TestServer::start();
    let token = server.token();
    let private = server.folder_named(Some(&token), ADMIN_EMAIL, "Private");
    let big = server.create_folder(&token, &private, "big");
    let big = text(&big["folder_id"]).to_owned();
    let template = server.create_folder(&token, &big, "template");
    fill(&server, &big, text(&template["folder_id"]), FOLDERS);

    let answer = server
        .http()
        .post(format!(
            "{}/api/json?method=midas.folder.children",
            server.url
        ))
        .form(&[("id", big.as_str()), ("token", token.as_str())])
        .send()
        .expect("folder.children")
        .bytes()
        .expect("the answer");
    assert!(
        answer.len() > 64 << 20,
        "the answer is only {} bytes",
        answer.len()
    );
    drop(answer);

    let mount = Mount::admin(&server, &[]);
    let dir = mount.path.join("users/Admin_User/Private/big");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("the big folder")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .into_string()
                .expect("UTF-8")
        })
        .collect();
    names.sort();
    assert_eq!(names.len(), FOLDERS + 1);
    assert_eq!(names[0], "folder 00000");
    assert_eq!(names[FOLDERS - 1], format!("folder {:05}", FOLDERS - 1));
    assert_eq!(names[FOLDERS], "template");
    assert!(dir.join("folder 12345").is_dir());
}
