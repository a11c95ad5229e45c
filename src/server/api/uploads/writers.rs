//! Who may write to an upload's file (one writer per token) and the MD5 state kept between
//! the parts of an upload.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use md5::Md5;
use tokio::sync::watch;
use tokio::time::Instant;

use super::token::UploadToken;
use crate::server::Shared;

/// How long an upload body may send nothing before the upload stops (as a web server's request
/// timeout stops a stalled PHP upload), and so how long `getoffset` or a second `perform`
/// waits for an earlier writer of the same token. The client's default stall timeout.
pub(super) const UPLOAD_STALL: Duration = Duration::from_secs(30);

/// Keep at most this many MD5 states of unfinished uploads; beyond, they are all dropped (an
/// upload without one is hashed from its file at the commit, as Midas does).
pub(super) const PARTIAL_HASHES_MAX: usize = 4096;

/// The MD5 state of each unfinished upload, with how many bytes it covers: a `perform` that
/// goes on from there continues it.
#[derive(Default)]
pub struct PartialHashes(Mutex<HashMap<String, (u64, Md5)>>);

impl PartialHashes {
    pub(super) fn entries(&self) -> MutexGuard<'_, HashMap<String, (u64, Md5)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state of `token`'s upload if it covers exactly the `held` bytes of its file.
    pub(super) fn take(&self, token: &UploadToken, held: u64) -> Option<Md5> {
        let (covered, md5) = self.entries().remove(&token.to_string())?;
        (covered == held).then_some(md5)
    }

    pub(super) fn keep(&self, token: &UploadToken, held: u64, md5: Md5) {
        let mut entries = self.entries();
        if entries.len() >= PARTIAL_HASHES_MAX {
            entries.clear();
        }
        entries.insert(token.to_string(), (held, md5));
    }
}

/// The tokens whose `perform` is running or whose writing thread has not stopped yet. Each
/// entry's receiver learns, by its sender being dropped, that the [`WriterSlot`] is gone.
#[derive(Default)]
pub struct UploadWriters(Mutex<HashMap<String, watch::Receiver<()>>>);

impl UploadWriters {
    pub(super) fn entries(&self) -> MutexGuard<'_, HashMap<String, watch::Receiver<()>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until no writer holds `token`; false if one still does at `deadline`.
    pub(super) async fn wait_idle(&self, token: &UploadToken, deadline: Instant) -> bool {
        let key = token.to_string();
        loop {
            let Some(mut slot_gone) = self.entries().get(&key).cloned() else {
                return true;
            };
            // `changed` fails once the slot's sender is dropped: nothing is ever sent.
            if tokio::time::timeout_at(deadline, slot_gone.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    /// The token's slot, once any earlier writer has stopped; none if one still writes at
    /// `deadline`.
    pub(super) async fn claim(
        shared: &Arc<Shared>,
        token: &UploadToken,
        deadline: Instant,
    ) -> Option<WriterSlot> {
        let key = token.to_string();
        loop {
            {
                let mut entries = shared.upload_writers.entries();
                if !entries.contains_key(&key) {
                    let (sender, receiver) = watch::channel(());
                    entries.insert(key.clone(), receiver);
                    return Some(WriterSlot {
                        shared: Arc::clone(shared),
                        key,
                        _announces_end: sender,
                    });
                }
            }
            if !shared.upload_writers.wait_idle(token, deadline).await {
                return None;
            }
        }
    }
}

/// The right to write to one token's file, held by its `perform` request and its writing
/// thread: released when both have ended, however they end (success, error, client gone,
/// panic).
pub(super) struct WriterSlot {
    shared: Arc<Shared>,
    key: String,
    /// Dropped after the entry is removed, waking the waiters.
    _announces_end: watch::Sender<()>,
}

impl Drop for WriterSlot {
    fn drop(&mut self) {
        self.shared.upload_writers.entries().remove(&self.key);
    }
}
