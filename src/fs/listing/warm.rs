//! Warming the top of the tree at mount: nearly every first access goes through `users/` (or
//! `home`, which points into it: `midas.user.list`), the user's own folder and its `Public` or
//! `Private`, or `communities/`. Each is one round trip the first access would wait for, one
//! after the other; listed in the background right after mounting, they are in memory (or on
//! their way: a lookup joins a listing under way) when the first access comes.
//!
//! What is listed is what the first access would list, with the mount's own credentials, kept
//! as any listing (for the TTL, then asked again): nothing is shown that a lookup would not
//! have fetched, and the kernel checks each caller's access as for any listing. It is bounded:
//! the user's own folder and at most [`WARM_SUBFOLDERS`] of its subfolders, each left out when
//! it holds more than [`WARM_MAX_ITEMS`] items (each item costs an `item.get`).

use std::time::Duration;

use futures_util::future::join_all;

use super::Purpose;
use crate::fs::inode::{NodeKind, ROOT, USERS};
use crate::fs::tasks::Work;
use crate::fs::{Entry, FsResult, MidasFs, MountRoot};

/// The most items a folder listed at mount may hold (one round of `item.get`s).
pub(in crate::fs) const WARM_MAX_ITEMS: usize = super::entries::ITEM_GET_CONCURRENCY;
/// The most subfolders of the user's own folder (or of the mount's root folder) listed at
/// mount.
const WARM_SUBFOLDERS: usize = 8;
/// How long the warm-up waits for uploads resumed from the spool before it lists nothing.
const RESUMED_UPLOADS_WAIT: Duration = Duration::from_secs(10);

impl MidasFs {
    /// Lists the top of the tree in the background (see the module's documentation).
    pub fn warm_top(self: &std::sync::Arc<Self>) {
        let fs = std::sync::Arc::clone(self);
        // Optional: nobody waits for it, and unmount does not either.
        self.tasks.spawn(Work::Optional, async move {
            if let Err(err) = fs.warm().await {
                log::debug!("listing the top of the tree at mount: {err}");
            }
        });
    }

    async fn warm(&self) -> FsResult<()> {
        // Uploads a previous mount left in the spool go first: they make items in the folders
        // listed here, and a listing taken while one is on its way would keep it for the TTL as
        // the empty item the server holds until then (a directory: `EISDIR` on reading it).
        if self.tasks.running().0 > 0 && !self.tasks.wait_needed(RESUMED_UPLOADS_WAIT).await {
            log::debug!("uploads resumed from the spool still running: nothing listed at mount");
            return Ok(());
        }
        if !matches!(self.config.root, MountRoot::Everything) {
            return self.warm_folder(ROOT, None).await;
        }
        // No request: but a lookup of `users` or `home` is then answered without a task.
        self.listing(ROOT).await?;
        let top = self.root_entries();
        let listed = |ino: u64| top.iter().find(|entry| entry.ino == ino);
        let communities = async {
            if let Some(entry) = listed(crate::fs::inode::COMMUNITIES) {
                if let Err(err) = self
                    .listing_for(entry.ino, Purpose::Asked, Some(&entry.data))
                    .await
                {
                    log::debug!("listing communities at mount: {err}");
                }
            }
        };
        let home = async {
            let Some(users) = listed(USERS) else {
                return Ok(());
            };
            let users = self
                .listing_for(users.ino, Purpose::Asked, Some(&users.data))
                .await?;
            let Some(me) = &self.me else {
                return Ok(());
            };
            let mine = users.iter().find(|entry| {
                matches!(entry.data.kind, NodeKind::Folder { id, .. } if id == me.folder_id)
            });
            match mine {
                Some(mine) => self.warm_folder(mine.ino, Some(mine)).await,
                None => Ok(()),
            }
        };
        let ((), home) = futures_util::join!(communities, home);
        home
    }

    /// Lists folder `ino` (as `listed` shows it, for a folder the kernel does not hold), then
    /// some of its subfolders at once.
    async fn warm_folder(&self, ino: u64, listed: Option<&Entry>) -> FsResult<()> {
        let entries = self
            .listing_for(ino, Purpose::Warm, listed.map(|entry| &*entry.data))
            .await?;
        let subfolders = entries
            .iter()
            .filter(|entry| matches!(entry.data.kind, NodeKind::Folder { .. }))
            .take(WARM_SUBFOLDERS)
            .map(|entry| async move {
                if let Err(err) = self
                    .listing_for(entry.ino, Purpose::Warm, Some(&entry.data))
                    .await
                {
                    log::debug!("listing {} at mount: {err}", entry.name);
                }
            });
        join_all(subfolders).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::fs::fake_tests::{
        assert_saved_without_sending, fake_mount, large_content, write_and_close,
    };
    use crate::fs::inode::{ROOT, USERS};
    use crate::fs::listing::entries::user_dir_name;
    use crate::fs::MountRoot;
    use crate::midas::fake::Fault;

    #[tokio::test]
    async fn the_warm_up_lists_the_top_and_the_own_folders_but_no_large_one() {
        let midas = crate::fs::fake_tests::server();
        midas.add_file(midas.public_folder(), "a.txt", b"a");
        for i in 0..40 {
            midas.add_file(midas.private_folder(), &format!("f{i}.dat"), b"x");
        }
        let spool = tempfile::tempdir().expect("spool dir");
        let mut fs = fake_mount(&midas, spool.path());
        fs.config.root = MountRoot::Everything;
        let fs = Arc::new(fs);
        fs.warm().await.expect("warm-up");
        let calls = midas.count("*");
        let me = user_dir_name(&midas.me().expect("a user"));
        for (parent, name) in [(ROOT, "users"), (ROOT, "communities"), (USERS, me.as_str())] {
            assert!(fs.cached_lookup(parent, name).is_some(), "{name}");
        }
        let home = fs.lookup(USERS, &me).await.expect("home").ino;
        let public = fs.cached_lookup(home, "Public").expect("Public listed");
        let public = public.expect("Public").ino;
        assert!(
            fs.cached_lookup(public, "a.txt").is_some(),
            "Public's listing"
        );
        let private = fs.lookup(home, "Private").await.expect("Private").ino;
        assert!(
            fs.cached_listing(private).is_none(),
            "40 items listed at mount"
        );
        assert_eq!(midas.count("*"), calls, "lookups after the warm-up asked");

        // Made on the server after the warm-up: a listing nobody looked at yet does not say
        // it is not there.
        midas.add_file(midas.public_folder(), "new.txt", b"new");
        assert!(fs.cached_lookup(public, "new.txt").is_none());
        let new = fs
            .lookup(public, "new.txt")
            .await
            .expect("made after the warm-up");
        assert_eq!(new.size, 3);
        let err = fs
            .lookup(public, "none.txt")
            .await
            .expect_err("no such file");
        assert_eq!(err.errno(), libc::ENOENT);
        assert!(
            fs.cached_lookup(public, "none.txt").is_some(),
            "a listing fetched for a lookup answers it"
        );
    }

    /// `rsync -a` again into a folder listed at mount, of a large file the server holds: its
    /// lookup of the temporary name (missing from the listing) has the folder listed again,
    /// and the create that follows at once must still see the name the temporary stands for,
    /// so that the file is not sent early and Midas's checksum dedup spares sending it.
    #[tokio::test]
    async fn rsyncs_copy_of_a_file_listed_at_mount_sends_no_bytes_while_the_folder_is_listed_again()
    {
        let midas = crate::fs::fake_tests::server();
        let content = large_content();
        midas.add_file(midas.public_folder(), "big.bin", &content);
        let spool = tempfile::tempdir().expect("spool dir");
        let fs = Arc::new(fake_mount(&midas, spool.path()));
        fs.warm().await.expect("warm-up");
        assert!(
            fs.cached_lookup(ROOT, "big.bin").is_some(),
            "listed at mount"
        );

        // The listing asked again answers slowly (as a folder of many items would).
        midas.fail("midas.item.get", Fault::Delay(Duration::from_secs(5)));
        let temporary = ".big.bin.Ab12Cd";
        let err = fs.lookup(ROOT, temporary).await.expect_err("a free name");
        assert_eq!(err.errno(), libc::ENOENT);
        let (_, fh) = fs.create(ROOT, temporary, 42).expect("create");
        midas.heal();
        write_and_close(&fs, fh, &content).await;
        assert_saved_without_sending(&midas, temporary, &content);
    }
}
