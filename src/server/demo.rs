//! `--demo`: seed a fresh store with something to look at (first start only).
//!
//! A public community "Demo" with text, CSV, a multi-file item with metadata and a 50 MB
//! binary generated on the spot (deterministic, never stored in git), plus a second user,
//! Jane Doe (jane@example.com / janepassword1), with public and private data.

use std::io::Write;

use rusqlite::params;

use super::api::uploads::{commit_upload, FinishedUpload, TargetRevision};
use super::store::{
    community_root, create_community, create_item, create_user, insert_folder, random_alnum, Store,
};
use super::wire::ApiError;
use super::ServeError;

const BIG_FILE_SIZE: u64 = 50 * 1024 * 1024;

/// What one demo file holds.
enum Content {
    Text(String),
    /// Pseudo-random bytes from a fixed seed (xorshift64*), the same on every machine.
    Generated {
        size: u64,
        seed: u64,
    },
}

struct DemoFile {
    folder: i64,
    item: &'static str,
    files: Vec<(&'static str, Content)>,
    metadata: &'static [(&'static str, &'static str, &'static str)],
}

fn write_content(out: &mut impl Write, content: &Content) -> std::io::Result<()> {
    match content {
        Content::Text(text) => out.write_all(text.as_bytes()),
        Content::Generated { size, seed } => {
            let mut state = *seed;
            let mut left = *size;
            let mut buf = vec![0u8; 1 << 20];
            while left > 0 {
                for chunk in buf.chunks_mut(8) {
                    state ^= state >> 12;
                    state ^= state << 25;
                    state ^= state >> 27;
                    let v = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
                    chunk.copy_from_slice(&v[..chunk.len()]);
                }
                let n = usize::try_from(left).unwrap_or(buf.len()).min(buf.len());
                out.write_all(&buf[..n])?;
                left -= n as u64;
            }
            Ok(())
        }
    }
}

fn csv_table() -> String {
    let mut csv = String::from("sample,temperature_c,pressure_kpa,label\n");
    for i in 0..200u32 {
        csv.push_str(&format!(
            "{i},{:.2},{:.1},{}\n",
            18.0 + f64::from(i % 37) * 0.25,
            101.3 - f64::from(i % 11) * 0.4,
            if i % 3 == 0 { "control" } else { "treated" }
        ));
    }
    csv
}

fn io_error(err: std::io::Error) -> ServeError {
    ServeError::Io(err)
}

fn add_files(store: &Store, owner: i64, demo: DemoFile) -> Result<(), ServeError> {
    let item_id = {
        let conn = store.lock();
        create_item(&conn, demo.folder, demo.item, "", owner, None)?
    };
    for (name, content) in &demo.files {
        let temp = store
            .uploads_dir()
            .join(format!("demo_{}", random_alnum(16)));
        let mut file = crate::private::file_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(io_error)?;
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, &mut file);
        write_content(&mut writer, content).map_err(io_error)?;
        writer.flush().map_err(io_error)?;
        drop(writer);
        file.sync_all().map_err(io_error)?;
        commit_upload(
            store,
            &FinishedUpload {
                temp: &temp,
                item_id,
                user_id: owner,
                filename: name,
                changes: "Initial revision",
                revision: TargetRevision::Head,
                checksum: None,
            },
        )?;
    }
    if !demo.metadata.is_empty() {
        let conn = store.lock();
        let revision: i64 = conn.query_row(
            "SELECT itemrevision_id FROM itemrevision WHERE item_id = ?1 ORDER BY revision DESC LIMIT 1",
            [item_id],
            |r| r.get(0),
        ).map_err(ApiError::from)?;
        for (element, qualifier, value) in demo.metadata {
            conn.execute(
                "INSERT OR IGNORE INTO metadata (metadatatype, element, qualifier) VALUES (0, ?1, ?2)",
                params![element, qualifier],
            )
            .map_err(ApiError::from)?;
            conn.execute(
                "INSERT OR REPLACE INTO metadatavalue (metadata_id, itemrevision_id, value) \
                 SELECT metadata_id, ?3, ?4 FROM metadata WHERE metadatatype = 0 AND element = ?1 AND qualifier = ?2",
                params![element, qualifier, revision, value],
            )
            .map_err(ApiError::from)?;
        }
    }
    Ok(())
}

/// A subfolder that copies its parent's policies (what `folder.create` does).
fn subfolder(store: &Store, parent: i64, name: &str, description: &str) -> Result<i64, ServeError> {
    let conn = store.lock();
    let id = insert_folder(&conn, parent, name, description, None).map_err(ApiError::from)?;
    conn.execute(
        "INSERT INTO folderpolicyuser (folder_id, user_id, policy) SELECT ?2, user_id, policy FROM folderpolicyuser WHERE folder_id = ?1",
        params![parent, id],
    )
    .map_err(ApiError::from)?;
    conn.execute(
        "INSERT INTO folderpolicygroup (folder_id, group_id, policy) SELECT ?2, group_id, policy FROM folderpolicygroup WHERE folder_id = ?1",
        params![parent, id],
    )
    .map_err(ApiError::from)?;
    let root = super::store::root_of(&conn, id).map_err(ApiError::from)?;
    super::store::renumber_tree(&conn, root).map_err(ApiError::from)?;
    Ok(id)
}

fn child_folder(store: &Store, parent: i64, name: &str) -> Result<i64, ServeError> {
    let conn = store.lock();
    Ok(conn
        .query_row(
            "SELECT folder_id FROM folder WHERE parent_id = ?1 AND name = ?2",
            params![parent, name],
            |r| r.get(0),
        )
        .map_err(ApiError::from)?)
}

pub fn seed(store: &Store, admin: i64) -> Result<(), ServeError> {
    log::info!("seeding demo data");
    let (community_root, jane) = {
        let conn = store.lock();
        let community = create_community(
            &conn,
            "Demo",
            "Sample data served by midasfs serve",
            false,
            true,
            Some(admin),
            None,
        )?;
        let root = community_root(&conn, community.community_id).map_err(ApiError::from)?;
        let jane = create_user(
            &conn,
            "jane@example.com",
            "janepassword1",
            "Jane",
            "Doe",
            false,
        )?;
        (root, jane.user_id)
    };
    let public = child_folder(store, community_root, "Public")?;
    let data = subfolder(store, public, "Data", "Measurements and tables")?;
    let docs = subfolder(store, public, "Docs", "Read me first")?;
    let big = subfolder(store, data, "Large files", "")?;
    add_files(store, admin, DemoFile {
        folder: docs,
        item: "README.txt",
        files: vec![("README.txt", Content::Text(
            "This is the midasfs demo.\n\nBrowse it with ls, cat and cp; write to your own Private folder.\n".into(),
        ))],
        metadata: &[("description", "", "Start here")],
    })?;
    add_files(
        store,
        admin,
        DemoFile {
            folder: data,
            item: "measurements.csv",
            files: vec![("measurements.csv", Content::Text(csv_table()))],
            metadata: &[
                ("contributor", "author", "Demo Lab"),
                ("date", "issued", "2024-05-01"),
            ],
        },
    )?;
    add_files(
        store,
        admin,
        DemoFile {
            folder: data,
            item: "experiment-42",
            files: vec![
                (
                    "protocol.txt",
                    Content::Text("1. Mix.\n2. Wait.\n3. Measure.\n".into()),
                ),
                (
                    "results.csv",
                    Content::Text("run,value\n1,0.42\n2,0.43\n3,0.41\n".into()),
                ),
                (
                    "raw.bin",
                    Content::Generated {
                        size: 64 * 1024,
                        seed: 42,
                    },
                ),
            ],
            metadata: &[("subject", "", "multi-file item")],
        },
    )?;
    add_files(
        store,
        admin,
        DemoFile {
            folder: big,
            item: "random-50MB.bin",
            files: vec![(
                "random-50MB.bin",
                Content::Generated {
                    size: BIG_FILE_SIZE,
                    seed: 0x5EED,
                },
            )],
            metadata: &[],
        },
    )?;

    let jane_root: i64 = {
        let conn = store.lock();
        conn.query_row(
            "SELECT folder_id FROM user WHERE user_id = ?1",
            [jane],
            |r| r.get(0),
        )
        .map_err(ApiError::from)?
    };
    let jane_public = child_folder(store, jane_root, "Public")?;
    let jane_private = child_folder(store, jane_root, "Private")?;
    let shared_notes = subfolder(store, jane_public, "Shared notes", "")?;
    add_files(
        store,
        jane,
        DemoFile {
            folder: shared_notes,
            item: "hello-from-jane.txt",
            files: vec![(
                "hello-from-jane.txt",
                Content::Text("Hello! These notes are public.\n".into()),
            )],
            metadata: &[],
        },
    )?;
    add_files(
        store,
        jane,
        DemoFile {
            folder: jane_private,
            item: "diary.txt",
            files: vec![(
                "diary.txt",
                Content::Text("Private: only Jane (and admins) can read this.\n".into()),
            )],
            metadata: &[],
        },
    )?;
    Ok(())
}
