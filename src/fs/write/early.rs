//! Early upload: a large new file written in order is sent to Midas while it is being written,
//! in parts, so that closing it sends only the rest. A copy then takes about as long as the
//! slower of writing and uploading, not the two one after the other.
//!
//! Each part is an `upload.perform` whose body is shorter than the length it declares: Midas
//! keeps the bytes and answers that the upload is incomplete, with how many it holds (see
//! [`crate::midas::Client::upload_perform_part`]). Each part goes on from the count the last
//! one was answered with, and the close sends the last part with the real length. After an
//! error the close goes on from the server's `getoffset` instead, and then checks the server's
//! MD5 against the file's. No MD5 is computed while such a file is written.
//!
//! The price: the file is sent before its MD5 is known, so Midas's checksum dedup cannot spare
//! sending content it already holds. A file that is likely to be such a copy is therefore not
//! sent early: rsync's temporary file for a name that exists (`.NAME.XXXXXX`). Overwrites are
//! never sent early (they are not new files).
//!
//! What was sent stops being the file when the file changes behind it (a write before its end,
//! a truncation, a rename, an unlink): the upload is then abandoned and the close sends the
//! whole file as if nothing had been sent.

use std::path::PathBuf;

use tokio::sync::{oneshot, watch};

use crate::fs::{names, MidasFs};
use crate::midas::types::Id;
use crate::midas::{UploadPart, UploadRevision};

/// New files written in order start uploading once they reach this size. Smaller ones are
/// sent at close, after the dedup question (a round trip that can spare the whole upload).
pub(in crate::fs) const EARLY_MIN_SIZE: u64 = 64 << 20;
/// The fewest bytes a part sends: a part starts once this much more than was sent is written.
pub(in crate::fs) const PART_SIZE: u64 = 32 << 20;
/// The most bytes a part sends.
pub(in crate::fs) const PART_MAX: u64 = 1 << 30;
/// Where parts end, but for the cap: on a multiple of this.
const PART_ALIGN: u64 = 1 << 20;

/// Where the part after `held` bytes ends when `written` bytes are written, None while fewer
/// than [`PART_SIZE`] more bytes are written (and at least one byte stays for the last part,
/// which carries the real length). A part takes everything written that far, up to
/// [`PART_MAX`]: each part is a request, and the server's fsync at its end, whose pause would
/// otherwise come every 32 MiB of a copy written faster than it is sent.
pub(in crate::fs) fn part_end(held: u64, written: u64) -> Option<u64> {
    if written <= held + PART_SIZE {
        return None;
    }
    let all = (written - 1) / PART_ALIGN * PART_ALIGN;
    Some(all.clamp(held + PART_SIZE, held + PART_MAX))
}

/// How far the file is written in order, and whether the sender should stop.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    written: u64,
    stop: bool,
}

/// What the sender got done: the item it made for the file, the upload's token, and how many
/// bytes Midas holds (None when unknown after an error: ask `getoffset`).
#[derive(Debug, Default)]
pub(in crate::fs) struct Sent {
    pub item_id: Option<Id>,
    pub token: Option<String>,
    pub held: Option<u64>,
}

/// A file's early upload.
pub(in crate::fs) enum EarlyUpload {
    /// Starts when the file reaches [`EARLY_MIN_SIZE`], written in order.
    Waiting,
    /// Not for this file, or over.
    Off,
    Running {
        progress: watch::Sender<Progress>,
        sent: oneshot::Receiver<Sent>,
        /// The file changed behind what was sent.
        spoiled: bool,
    },
}

/// A sender to start on the runtime (see [`MidasFs::send_early`]).
pub struct EarlyStart {
    folder: Id,
    midas_name: String,
    path: PathBuf,
    progress: watch::Receiver<Progress>,
    sent: oneshot::Sender<Sent>,
}

/// An early upload, stopped: what was sent, and whether it is still the file's beginning.
pub(in crate::fs) struct Stopped {
    pub sent: Sent,
    pub spoiled: bool,
}

impl EarlyUpload {
    /// For a new file named `name` in a folder that may hold the names `holds` says (a guess:
    /// see [`crate::fs::MidasFs::may_hold`]).
    pub fn for_new_file(name: &str, holds: impl FnOnce(&str) -> bool) -> Self {
        match rsync_temp_target(name) {
            Some(target) if holds(target) => EarlyUpload::Off,
            _ => EarlyUpload::Waiting,
        }
    }

    /// After a write ending at `end`; `appending` says whether it began at the file's end.
    /// Returns the sender to start when the file has just reached the size for it; `start`
    /// says where it goes (the folder, the file's name and its spool), None if it is no new
    /// file in a folder (any more).
    pub fn wrote(
        &mut self,
        appending: bool,
        end: u64,
        start: impl FnOnce() -> Option<(Id, String, PathBuf)>,
    ) -> Option<EarlyStart> {
        if !appending {
            self.spoil();
            return None;
        }
        match self {
            EarlyUpload::Waiting if end >= EARLY_MIN_SIZE => {
                let Some((folder, name, path)) = start() else {
                    *self = EarlyUpload::Off;
                    return None;
                };
                let (progress, progress_rx) = watch::channel(Progress {
                    written: end,
                    stop: false,
                });
                let (sent_tx, sent) = oneshot::channel();
                *self = EarlyUpload::Running {
                    progress,
                    sent,
                    spoiled: false,
                };
                Some(EarlyStart {
                    folder,
                    midas_name: names::to_midas(&name),
                    path,
                    progress: progress_rx,
                    sent: sent_tx,
                })
            }
            EarlyUpload::Running { progress, .. } => {
                progress.send_modify(|p| p.written = end);
                None
            }
            _ => None,
        }
    }

    /// The file changed behind what may have been sent.
    pub fn spoil(&mut self) {
        match self {
            EarlyUpload::Running {
                progress, spoiled, ..
            } => {
                *spoiled = true;
                progress.send_modify(|p| p.stop = true);
            }
            _ => *self = EarlyUpload::Off,
        }
    }

    /// Takes the upload out (leaving `Off`): the file is being saved or dropped.
    pub fn take(&mut self) -> EarlyUpload {
        std::mem::replace(self, EarlyUpload::Off)
    }

    /// Stops the sender after the part it is sending, if one runs, and waits for it.
    pub async fn stop(self) -> Option<Stopped> {
        let EarlyUpload::Running {
            progress,
            sent,
            spoiled,
        } = self
        else {
            return None;
        };
        progress.send_modify(|p| p.stop = true);
        Some(Stopped {
            // A sender that died (a panic) leaves nothing it could hand over.
            sent: sent.await.unwrap_or_default(),
            spoiled,
        })
    }
}

/// The name rsync's temporary file `.NAME.XXXXXX` stands in for.
pub(in crate::fs) fn rsync_temp_target(name: &str) -> Option<&str> {
    let (target, suffix) = name.strip_prefix('.')?.rsplit_once('.')?;
    (suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric()) && !target.is_empty())
        .then_some(target)
}

impl MidasFs {
    /// Sends a file's parts while it is written, until told to stop; then hands over what it
    /// got done. Errors only end the sending: the close goes on from the server's offset.
    pub async fn send_early(&self, start: EarlyStart) {
        let EarlyStart {
            folder,
            midas_name,
            path,
            mut progress,
            sent: reply,
        } = start;
        let mut sent = Sent::default();
        if let Err(err) = self
            .send_parts(folder, &midas_name, &path, &mut progress, &mut sent)
            .await
        {
            log::debug!("early upload of {midas_name:?} stopped: {err}");
            sent.held = None;
        }
        let _ = reply.send(sent);
    }

    pub(in crate::fs) async fn send_parts(
        &self,
        folder: Id,
        midas_name: &str,
        path: &std::path::Path,
        progress: &mut watch::Receiver<Progress>,
        sent: &mut Sent,
    ) -> Result<(), crate::midas::Error> {
        let created = self.client.item_create(folder, midas_name).await?;
        if created.name != midas_name {
            // The name is taken: the close finds that out again and says so.
            self.delete_quietly(created.item_id).await;
            return Ok(());
        }
        sent.item_id = Some(created.item_id);
        // Should this mount die now, the next one removes the item (see `roll_back_previous`).
        super::spool::add_to_sidecar(path, super::spool::MADE_ITEM_KEY, created.item_id.into());
        let Some(token) = self
            .client
            .upload_token(created.item_id, midas_name, None)
            .await?
        else {
            return Ok(());
        };
        sent.token = Some(token.clone());
        let mut held = 0;
        sent.held = Some(held);
        loop {
            let end = match progress
                .wait_for(|p| p.stop || part_end(held, p.written).is_some())
                .await
            {
                Ok(now) if !now.stop => part_end(held, now.written),
                _ => None,
            };
            let Some(end) = end else {
                return Ok(());
            };
            let part = UploadPart {
                token: &token,
                item_id: created.item_id,
                filename: midas_name,
                file: path,
                offset: held,
                end,
            };
            let now = self.client.upload_perform_part(&part).await?;
            if now != end {
                log::warn!(
                    "early upload of {midas_name:?}: the server holds {now} bytes, not {end}"
                );
                sent.held = None;
                return Ok(());
            }
            held = end;
            sent.held = Some(held);
        }
    }

    /// Clears up after an early upload that will not be finished: the bytes Midas keeps for an
    /// unfinished upload would stay for ever, so they are committed, and the item goes.
    pub(in crate::fs) async fn discard_early(
        &self,
        stopped: Option<Stopped>,
        path: &std::path::Path,
    ) {
        let Some(Stopped { sent, .. }) = stopped else {
            return;
        };
        let Some(item_id) = sent.item_id else {
            return;
        };
        if let Some(token) = &sent.token {
            let held = match sent.held {
                Some(held) => Some(held),
                None => self.client.upload_offset(token).await.ok(),
            };
            if let Some(held) = held {
                let name = format!("unfinished-{item_id}");
                let committed = self
                    .client
                    .upload_perform(
                        token,
                        item_id,
                        &name,
                        path,
                        held,
                        held,
                        UploadRevision::Head,
                    )
                    .await;
                if let Err(err) = committed {
                    log::debug!("unfinished upload into item {item_id} stays: {err}");
                }
            }
        }
        self.delete_quietly(item_id).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(in crate::fs) fn rsync_temporaries_of_existing_names_are_not_sent_early() {
        assert_eq!(rsync_temp_target(".data.bin.Ab12Cd"), Some("data.bin"));
        assert_eq!(rsync_temp_target("data.bin.Ab12Cd"), None);
        assert_eq!(rsync_temp_target(".data.bin"), None);
        let siblings = ["data.bin", "other"];
        let holds = |name: &str| siblings.contains(&name);
        assert!(matches!(
            EarlyUpload::for_new_file(".data.bin.Ab12Cd", holds),
            EarlyUpload::Off
        ));
        assert!(matches!(
            EarlyUpload::for_new_file(".new.bin.Ab12Cd", holds),
            EarlyUpload::Waiting
        ));
    }

    #[test]
    fn a_part_takes_everything_written_but_the_last_byte_up_to_its_cap() {
        const MIB: u64 = 1 << 20;
        // Not before 32 MiB more than was sent are written, and one byte always stays.
        assert_eq!(part_end(0, 32 * MIB), None);
        assert_eq!(part_end(0, 32 * MIB + 1), Some(32 * MIB));
        assert_eq!(part_end(64 * MIB, 96 * MIB), None);
        // Everything written, to the MiB below its end.
        assert_eq!(part_end(0, 64 * MIB), Some(63 * MIB));
        assert_eq!(part_end(0, 64 * MIB + 1), Some(64 * MIB));
        assert_eq!(part_end(32 * MIB, 300 * MIB + 5), Some(300 * MIB));
        // At most PART_MAX at once.
        assert_eq!(part_end(MIB, 10 * PART_MAX), Some(MIB + PART_MAX));
        for (held, written) in [(0, 33 * MIB), (7 * MIB, 100 * MIB + 3), (0, 3 * PART_MAX)] {
            let end = part_end(held, written).expect("a part");
            assert!(end >= held + PART_SIZE && end < written && end <= held + PART_MAX);
        }
    }

    #[test]
    pub(in crate::fs) fn a_write_out_of_order_stops_it() {
        let mut early = EarlyUpload::Waiting;
        let start = || Some((1, "f".to_owned(), PathBuf::from("/nonexistent")));
        assert!(early.wrote(true, 1024, start).is_none());
        assert!(early.wrote(false, 10, start).is_none());
        assert!(early.wrote(true, EARLY_MIN_SIZE, start).is_none());
        assert!(matches!(early, EarlyUpload::Off));

        let mut early = EarlyUpload::Waiting;
        let started = early.wrote(true, EARLY_MIN_SIZE, start).expect("starts");
        early.wrote(false, 10, start);
        assert!(matches!(early, EarlyUpload::Running { spoiled: true, .. }));
        assert!(started.progress.borrow().stop);
    }
}
