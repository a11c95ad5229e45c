//! Uploads (reference §3.8): `generatetoken`, `getoffset` and the streaming `perform`.
//!
//! An upload token `<userId>/<itemId>/<64 alphanumerics>` names a temporary file
//! `DIR/uploads/<userId>_<itemId>_<secret>`; that file existing is what makes the token valid,
//! so tokens survive restarts. A finished upload is fsynced, renamed into the assetstore and
//! only then recorded, in one transaction: a crash at any point leaves the store consistent.
//!
//! One writer per token. Midas writes synchronously inside the request, so once a client sees
//! its `perform` fail, nothing more reaches the file. Here a writing thread may still drain
//! queued chunks after the connection broke; so `getoffset` and a second `perform` of the same
//! token first wait for that writer to stop ([`UploadWriters`]), else the resumed bytes would
//! land after a size that was still growing.
//!
//! An upload sent in parts (a body shorter than `length`, then more `perform`s) keeps its MD5
//! state between them ([`PartialHashes`]), so the commit need not read the whole file again.
//! Midas re-reads it; the checksum is the same.

mod abandoned;
mod commit;
mod generate;
mod mimetype;
mod offset;
mod perform;
mod spool;
mod token;
mod writers;

pub use abandoned::remove_abandoned;
pub use commit::{commit_upload, FinishedUpload, TargetRevision};
pub use generate::generate_token;
pub use offset::get_offset;
pub use perform::perform;
pub use writers::{PartialHashes, UploadWriters};

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Method;
    use bytes::Bytes;
    use md5::{Digest, Md5};
    use serde_json::{json, Value};
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    use super::mimetype::sniff_mimetype;
    use super::spool::{hash_chunks, write_chunks, SpoolError, SPOOL_QUEUE};
    use super::token::UploadToken;
    use super::writers::{UploadWriters, UPLOAD_STALL};
    use super::*;
    use crate::server::store::create_user;
    use crate::server::store::{create_item, Store};
    use crate::server::wire::Params;
    use crate::server::Shared;
    use std::sync::atomic::Ordering;

    /// A server state on a fresh store, with an item its user may upload into and a token.
    fn store_with_token(dir: &Path) -> (Arc<Shared>, UploadToken) {
        let store = Store::open(dir).expect("store");
        let token = {
            let conn = store.lock();
            let user = create_user(&conn, "u@example.com", "pw", "u", "v", false).expect("user");
            let root: i64 = conn
                .query_row(
                    "SELECT folder_id FROM user WHERE user_id = ?1",
                    [user.user_id],
                    |r| r.get(0),
                )
                .expect("root folder");
            let item_id =
                create_item(&conn, root, "big.bin", "", user.user_id, None).expect("item");
            UploadToken::new(user.user_id, item_id)
        };
        std::fs::File::create(token.temp_path(&store)).expect("upload file");
        let shared = Shared::for_tests(store);
        (Arc::new(shared), token)
    }

    fn token_params(token: &UploadToken, length: usize) -> Params {
        Params::from_query(Some(&format!(
            "uploadtoken={token}&filename=big.bin&length={length}&revision=head"
        )))
    }

    async fn offset_of(shared: &Shared, token: &UploadToken) -> Value {
        get_offset(shared, &token_params(token, 0))
            .await
            .expect("getoffset")["offset"]
            .clone()
    }

    /// Bytes 0.. of an upload of 40 MiB: the first 32 MiB are sent in big chunks, the request
    /// is dropped as hyper drops it when its client goes away, while the writing thread may
    /// still hold queued chunks. Returns the content and how much of it was sent.
    async fn upload_then_drop_the_request(
        shared: &Arc<Shared>,
        token: &UploadToken,
    ) -> (Bytes, usize) {
        const CHUNK: usize = 4 << 20;
        let content: Bytes = (0..10 * CHUNK)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        let sent = 8 * CHUNK;
        let (to_body, chunks) = mpsc::channel::<Bytes>(1);
        let body = Body::from_stream(futures_util::stream::unfold(chunks, |mut chunks| async {
            let chunk = chunks.recv().await?;
            Some((Ok::<_, std::io::Error>(chunk), chunks))
        }));
        let request = tokio::spawn(perform(
            Arc::clone(shared),
            token_params(token, content.len()),
            Method::PUT,
            body,
        ));
        for start in (0..sent).step_by(CHUNK) {
            to_body
                .send(content.slice(start..start + CHUNK))
                .await
                .expect("perform reads");
        }
        for _ in 0..1000 {
            if shared.stats.bytes_uploaded.load(Ordering::Relaxed) == sent as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            shared.stats.bytes_uploaded.load(Ordering::Relaxed),
            sent as u64
        );
        request.abort();
        assert!(request.await.expect_err("aborted").is_cancelled());
        (content, sent)
    }

    /// The stored bitstream's checksum (computed from the stored file when resumed).
    fn stored_checksum(shared: &Shared, token: &UploadToken) -> String {
        shared
            .store
            .lock()
            .query_row(
                "SELECT b.checksum FROM bitstream b JOIN itemrevision r ON r.itemrevision_id = b.itemrevision_id WHERE r.item_id = ?1",
                [token.item_id],
                |r| r.get(0),
            )
            .expect("one bitstream")
    }

    async fn send_the_rest(
        shared: &Arc<Shared>,
        token: &UploadToken,
        content: &Bytes,
        from: usize,
    ) {
        let rest = Body::from(content.slice(from..));
        let done = perform(
            Arc::clone(shared),
            token_params(token, content.len()),
            Method::PUT,
            rest,
        )
        .await;
        assert!(done.is_ok(), "{done:?}");
        assert_eq!(
            stored_checksum(shared, token),
            format!("{:x}", Md5::digest(content))
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn getoffset_answers_the_size_the_dropped_request_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (shared, token) = store_with_token(dir.path());
        let (content, sent) = upload_then_drop_the_request(&shared, &token).await;
        assert_eq!(offset_of(&shared, &token).await, json!(sent));
        send_the_rest(&shared, &token, &content, sent).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_resumed_perform_waits_for_the_dropped_one_to_finish_writing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (shared, token) = store_with_token(dir.path());
        let (content, sent) = upload_then_drop_the_request(&shared, &token).await;
        send_the_rest(&shared, &token, &content, sent).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn getoffset_waits_for_the_writer_and_not_without_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (shared, token) = store_with_token(dir.path());
        let generous = Duration::from_secs(10);
        let idle = tokio::time::timeout(generous, offset_of(&shared, &token)).await;
        assert_eq!(idle.expect("answered without a writer"), json!(0));

        let deadline = Instant::now() + UPLOAD_STALL;
        let slot = UploadWriters::claim(&shared, &token, deadline)
            .await
            .expect("slot");
        let asked = tokio::spawn({
            let shared = Arc::clone(&shared);
            let token = token.clone();
            async move { offset_of(&shared, &token).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The writer appends after the question was asked, then stops.
        std::fs::write(token.temp_path(&shared.store), b"written late").expect("write");
        drop(slot);
        assert_eq!(asked.await.expect("getoffset task"), json!(12));
    }

    #[test]
    fn tokens_are_validated_strictly() {
        let secret = "a".repeat(64);
        let ok = UploadToken::parse(&format!("1/22/{secret}")).expect("valid token");
        assert_eq!((ok.user_id, ok.item_id), (1, 22));
        assert_eq!(ok.to_string(), format!("1/22/{secret}"));
        for bad in [
            format!("../1/{secret}"),
            format!("1/2/{}", "a".repeat(63)),
            format!("1/2/{}/x", secret),
            format!("1/2/{}", "../".repeat(21) + "a"),
            format!("-1/2/{secret}"),
            format!("1/ 2/{secret}"),
            String::new(),
        ] {
            assert!(UploadToken::parse(&bad).is_none(), "{bad} accepted");
        }
    }

    /// Feed `chunks` to a writing thread appending to `file`, as an upload does.
    fn write_all_chunks(
        file: std::fs::File,
        held: u64,
        chunks: Vec<Bytes>,
    ) -> Result<(), SpoolError> {
        let (tx, rx) = mpsc::channel(SPOOL_QUEUE);
        let writer = std::thread::spawn(move || write_chunks(file, held, rx));
        for chunk in chunks {
            tx.blocking_send(chunk).expect("writer alive");
        }
        drop(tx);
        writer.join().expect("writer thread")
    }

    #[test]
    fn chunks_are_appended_across_writeback_windows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("upload");
        std::fs::write(&path, b"held").expect("write");
        let chunk: Bytes = (0..=255u8)
            .cycle()
            .take(3 << 20)
            .collect::<Vec<u8>>()
            .into();
        let chunks = vec![chunk.clone(); 7];
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        write_all_chunks(file, 4, chunks).expect("written");
        let stored = std::fs::read(&path).expect("read");
        assert_eq!(stored.len(), 4 + 7 * chunk.len());
        assert_eq!(&stored[..4], b"held");
        assert!(stored[4..].chunks(chunk.len()).all(|c| c == chunk));
    }

    #[test]
    fn a_failed_write_keeps_the_bytes_held_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("upload");
        std::fs::write(&path, b"held").expect("write");
        let read_only = std::fs::File::open(&path).expect("open");
        match write_all_chunks(read_only, 4, vec![Bytes::from_static(b"more")]) {
            Err(SpoolError::Write { kept, .. }) => assert_eq!(kept, 4),
            other => panic!("expected a write failure, got {other:?}"),
        }
        assert_eq!(std::fs::read(&path).expect("read"), b"held");
    }

    #[test]
    fn the_hash_covers_every_chunk_in_order() {
        let (tx, rx) = mpsc::channel(SPOOL_QUEUE);
        let hasher = std::thread::spawn(move || hash_chunks(Md5::new(), rx));
        for part in [
            &b"The quick brown fox "[..],
            b"jumps over ",
            b"the lazy dog",
        ] {
            tx.blocking_send(Bytes::copy_from_slice(part))
                .expect("hasher alive");
        }
        drop(tx);
        assert_eq!(
            format!("{:x}", hasher.join().expect("hasher thread").finalize()),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
    }

    #[test]
    fn mimetypes_are_sniffed() {
        assert_eq!(sniff_mimetype(b"", 0), "application/x-empty");
        assert_eq!(sniff_mimetype(b"hello\n", 6), "text/plain");
        assert_eq!(sniff_mimetype("caf\u{e9}".as_bytes(), 5), "text/plain");
        assert_eq!(sniff_mimetype(&[0, 1, 2, 3], 4), "application/octet-stream");
        assert_eq!(sniff_mimetype(b"\x89PNG\r\n\x1a\nrest", 12), "image/png");
    }
}
