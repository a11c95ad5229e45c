//! A lookup of one name in a folder not listed yet waits only for what that name needs: the
//! folder's `folder.children` answer and, for an item, that item's `item.get` (a plain file or
//! a directory depends on its head revision). The rest of the listing (an `item.get` of every
//! other item) goes on in the background, in the same fetch, and is kept as any listing is.
//!
//! The answer is the entry the whole listing gives that name. A name without a disambiguation
//! suffix (` (item 42)`, see [`names::disambiguate`]) belongs to the first of the entries shown
//! under it (folders before items, then the lower id) that still exists, so only those are
//! asked for. A name with such a suffix, or `NAME@rN`, waits for the whole listing; so does
//! any lookup when the folder changed through the mount while its answer was on the way.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::in_flight::{Items, Joinable};
use super::Purpose;
use crate::fs::history::revision_name;
use crate::fs::inode::{Attr, NodeKind};
use crate::fs::names;
use crate::fs::tasks::Work;
use crate::fs::{Entry, FsError, FsResult, MidasFs};
use crate::midas::types::{Children, PRIVACY_PUBLIC};

/// A lookup waiting for one name of a listing being fetched.
pub(in crate::fs) struct Wanted {
    pub name: String,
    /// The entry of that name (None: there is none), or why the listing failed. Dropped
    /// unanswered when the lookup must wait for the whole listing.
    pub answer: oneshot::Sender<FsResult<Option<Entry>>>,
}

/// Whether the entry of `name` can be settled before the whole listing (see the module's
/// documentation).
fn settled_alone(name: &str) -> bool {
    let suffixed = [" (folder ", " (item ", " (bitstream "]
        .iter()
        .any(|marker| name.contains(marker));
    !suffixed && revision_name(name).is_none()
}

impl MidasFs {
    /// Looks up `name` in folder `parent` whose listing is not in memory, fetching the listing
    /// in the background and answering as soon as `name`'s entry is known. None when the lookup
    /// has to wait for the whole listing (see [`MidasFs::listing`]).
    pub(in crate::fs) async fn lookup_unlisted(
        self: &Arc<Self>,
        parent: u64,
        name: &str,
    ) -> Option<FsResult<Attr>> {
        let folder = self
            .nodes()
            .get(&parent)
            .is_some_and(|node| matches!(node.data.kind, NodeKind::Folder { .. }));
        if !folder || !settled_alone(name) {
            return None;
        }
        if let Some(fetch) = self.listings.joinable(parent) {
            return self.join_fetch(parent, fetch, name).await;
        }
        let (answer, answered) = oneshot::channel();
        let wanted = Wanted {
            name: name.to_owned(),
            answer,
        };
        let fs = Arc::clone(self);
        // Optional: at unmount the lookup gets no answer and nobody waits for the rest.
        self.tasks.spawn(Work::Optional, async move {
            if let Err(err) = fs
                .listing_with(parent, Purpose::Asked, None, Some(wanted))
                .await
            {
                log::debug!("listing inode {parent}: {err}");
            }
        });
        match answered.await {
            Ok(Ok(Some(entry))) => {
                self.remember(parent, &entry);
                Some(Ok(self.entry_attr(&entry)))
            }
            Ok(Ok(None)) => Some(Err(FsError::not_found(name))),
            Ok(Err(err)) => Some(Err(err)),
            // The listing was in memory after all, or changed while fetched: wait for it.
            Err(_) => None,
        }
    }

    /// Answers `wanted` from folder `dir`'s `children` answer, asking for the details of the
    /// items that may carry its name first (kept in `items`). An error is the listing's too.
    pub(super) async fn answer_wanted(
        &self,
        dir: u64,
        children: &Children,
        items: &Items,
        writable: bool,
        wanted: Wanted,
    ) -> FsResult<()> {
        match self
            .entry_named(dir, children, items, writable, &wanted.name)
            .await
        {
            Some(Ok(entry)) => {
                let _ = wanted.answer.send(Ok(entry));
                Ok(())
            }
            Some(Err(err)) => {
                let _ = wanted.answer.send(Err(err.clone()));
                Err(err)
            }
            // The lookup waits for the listing, which is fetched again.
            None => Ok(()),
        }
    }

    /// Looks up `name` in folder `parent` whose listing is being fetched by someone else (see
    /// [`super::in_flight`]): answered once the folder's answer and that name's item are known;
    /// None when the fetch ends without the folder's answer or the lookup must wait for the
    /// listing.
    async fn join_fetch(
        &self,
        parent: u64,
        mut fetch: Joinable,
        name: &str,
    ) -> Option<FsResult<Attr>> {
        let published = fetch.published().await?;
        let found = self
            .entry_named(
                parent,
                &published.children,
                &fetch.items,
                published.writable,
                name,
            )
            .await?;
        Some(match found {
            Ok(Some(entry)) => {
                self.remember(parent, &entry);
                Ok(self.entry_attr(&entry))
            }
            Ok(None) => Err(FsError::not_found(name)),
            Err(err) => Err(err),
        })
    }

    /// The entry of `name` in folder `dir` from its `children` answer, as the listing will
    /// show it (None: the folder changed through the mount meanwhile, so only the listing
    /// fetched again can tell).
    async fn entry_named(
        &self,
        dir: u64,
        children: &Children,
        items: &Items,
        writable: bool,
        name: &str,
    ) -> Option<FsResult<Option<Entry>>> {
        let found = match self.find_named(children, items, writable, name).await {
            Ok(found) => found,
            Err(err) => return Some(Err(err)),
        };
        let mut found: Vec<Entry> = found.into_iter().collect();
        self.add_local_state(dir, &mut found);
        if self.listings.changed_during_fetch(dir) {
            // The answer may be older than a change made through the mount.
            return None;
        }
        Some(Ok(found.into_iter().find(|entry| entry.name == name)))
    }

    /// The entry the listing shows as `name`, from the folders and items of that name.
    async fn find_named(
        &self,
        children: &Children,
        items: &Items,
        writable: bool,
        name: &str,
    ) -> FsResult<Option<Entry>> {
        let folder = children
            .folders
            .iter()
            .filter(|folder| names::to_display(&folder.name) == name)
            .min_by_key(|folder| folder.folder_id);
        if let Some(folder) = folder {
            let kind = NodeKind::Folder {
                id: folder.folder_id,
                uuid: folder.uuid.clone(),
            };
            let public = folder.privacy_status == PRIVACY_PUBLIC;
            return Ok(Some(self.entry(
                name.to_owned(),
                kind,
                &folder.date_update,
                writable,
                public,
            )));
        }
        let mut named: Vec<_> = children
            .items
            .iter()
            .filter(|item| names::to_display(&item.name) == name)
            .collect();
        named.sort_by_key(|item| item.item_id);
        for listed in named {
            // Deleted or hidden since the listing: the next one of that name, if any.
            if let Some(mut entry) = items.entry(self, listed.item_id, writable).await? {
                entry.name = name.to_owned();
                entry.data.public = listed.privacy_status == PRIVACY_PUBLIC;
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::settled_alone;
    use crate::fs::fake_tests::{
        assert_saved_without_sending, large_content, mount, server, write_and_close,
    };
    use crate::fs::inode::{FileKind, ROOT};
    use crate::midas::fake::{FakeMidas, Fault};

    /// Every `item.get` after the first fails.
    fn only_the_first_item_get_answers(midas: &FakeMidas) {
        midas.fail("midas.item.get", Fault::Delay(Duration::ZERO));
        midas.fail_always("midas.item.get", Fault::Http(500));
    }

    #[tokio::test]
    async fn a_cold_lookup_of_a_file_waits_for_its_own_item_get_only() {
        let midas = server();
        for i in 0..20 {
            midas.add_file(midas.public_folder(), &format!("f{i:02}.dat"), b"other");
        }
        midas.add_file(midas.public_folder(), "wanted.dat", b"wanted");
        let (fs, _spool) = mount(&midas);
        only_the_first_item_get_answers(&midas);
        let attr = fs.lookup(ROOT, "wanted.dat").await.expect("lookup");
        assert_eq!((attr.kind, attr.size), (FileKind::File, 6));
        let calls = midas.calls();
        assert_eq!(calls[..2], ["midas.folder.children", "midas.item.get"]);
    }

    #[tokio::test]
    async fn the_rest_of_the_listing_follows_with_one_answer_per_item() {
        let midas = server();
        for i in 0..20 {
            midas.add_file(midas.public_folder(), &format!("f{i:02}.dat"), b"x");
        }
        midas.add_folder(midas.public_folder(), "sub");
        let (fs, _spool) = mount(&midas);
        let file = fs.lookup(ROOT, "f07.dat").await.expect("file");
        let folder = fs.lookup(ROOT, "sub").await.expect("folder");
        assert_eq!(folder.kind, FileKind::Directory);
        let entries = fs.listing(ROOT).await.expect("listing");
        assert_eq!(entries.len(), 21);
        let listed = entries.iter().find(|e| e.name == "f07.dat").expect("f07");
        assert_eq!(listed.ino, file.ino);
        assert_eq!(midas.count("midas.folder.children"), 1);
        assert_eq!(midas.count("midas.item.get"), 20);
    }

    #[tokio::test]
    async fn a_folder_is_found_without_any_item_get() {
        let midas = server();
        for i in 0..5 {
            midas.add_file(midas.public_folder(), &format!("f{i}.dat"), b"x");
        }
        midas.add_folder(midas.public_folder(), "data");
        midas.add_file(midas.public_folder(), "data", b"an item of the same name");
        let (fs, _spool) = mount(&midas);
        midas.fail_always("midas.item.get", Fault::Http(500));
        // Every item.get fails: the whole listing would too.
        let attr = fs.lookup(ROOT, "data").await.expect("lookup");
        assert_eq!(attr.kind, FileKind::Directory);
        assert_eq!(midas.calls()[0], "midas.folder.children");
    }

    #[tokio::test]
    async fn a_name_goes_to_the_entry_the_listing_gives_it_when_the_first_is_gone() {
        let midas = server();
        let folder = midas.public_folder();
        let first = midas.add_file(folder, "twin.txt", b"first");
        let second = midas.add_file(folder, "twin.txt", b"second!");
        assert!(first < second);
        let (fs, _spool) = mount(&midas);
        // The first one is deleted between the folder's answer and its item.get.
        midas.fail("midas.item.get", Fault::missing());
        let attr = fs.lookup(ROOT, "twin.txt").await.expect("lookup");
        assert_eq!(attr.size, 7, "the second twin");
        let entries = fs.listing(ROOT).await.expect("listing");
        let names: Vec<_> = entries.iter().map(|e| (e.name.as_str(), e.ino)).collect();
        assert_eq!(names, [("twin.txt", attr.ino)]);
    }

    #[tokio::test]
    async fn a_suffixed_name_waits_for_the_whole_listing() {
        let midas = server();
        let folder = midas.public_folder();
        midas.add_file(folder, "twin.txt", b"first");
        let second = midas.add_file(folder, "twin.txt", b"second!");
        let (fs, _spool) = mount(&midas);
        let name = format!("twin (item {second}).txt");
        let attr = fs.lookup(ROOT, &name).await.expect("lookup");
        assert_eq!(attr.size, 7);
        assert_eq!(midas.count("midas.item.get"), 2);
    }

    /// The listing's next `item.get`s (one round, 32 at once) answer late; the others at once.
    fn the_next_round_of_item_gets_is_slow(midas: &FakeMidas) {
        midas.fail_times("midas.item.get", 32, Fault::Delay(Duration::from_secs(2)));
    }

    /// Several cold lookups in one folder: the second comes while the rest of the listing
    /// (the other items' `item.get`s, 32 at a time) goes on, and is answered as soon as its own
    /// item is, not when the whole listing is. Its `item.get` is not asked twice.
    #[tokio::test]
    async fn a_lookup_that_finds_the_listing_under_way_waits_for_its_own_item_only() {
        let midas = Arc::new(FakeMidas::new(Duration::from_secs(30)));
        for i in 0..100 {
            midas.add_file(midas.public_folder(), &format!("f{i:02}.dat"), b"other");
        }
        let (fs, _spool) = mount(&midas);
        midas.fail("midas.item.get", Fault::Delay(Duration::ZERO));
        the_next_round_of_item_gets_is_slow(&midas);
        fs.lookup(ROOT, "f03.dat").await.expect("first lookup");
        let attr = fs.lookup(ROOT, "f99.dat").await.expect("second lookup");
        assert_eq!((attr.kind, attr.size), (FileKind::File, 5));
        let asked = midas.count("midas.item.get");
        assert!(
            fs.cached_listing(ROOT).is_none() && asked < 100,
            "the second lookup waited for the whole listing ({asked} item.gets)"
        );
        let entries = fs.listing(ROOT).await.expect("listing");
        assert_eq!(entries.len(), 100);
        let listed = entries.iter().find(|e| e.name == "f99.dat").expect("f99");
        assert_eq!(listed.ino, attr.ino);
        assert_eq!(midas.count("midas.folder.children"), 1);
        assert_eq!(midas.count("midas.item.get"), 100);
    }

    /// A lookup that comes while a listing without a lookup of its own runs (a readdir, a
    /// walk ahead, the mount's warm-up) joins it the same way.
    #[tokio::test]
    async fn a_lookup_during_a_readdir_listing_is_answered_before_it_ends() {
        let midas = Arc::new(FakeMidas::new(Duration::from_secs(30)));
        for i in 0..100 {
            midas.add_file(midas.public_folder(), &format!("f{i:02}.dat"), b"other");
        }
        let (fs, _spool) = mount(&midas);
        midas.fail(
            "midas.folder.children",
            Fault::Delay(Duration::from_millis(100)),
        );
        the_next_round_of_item_gets_is_slow(&midas);
        let listing = tokio::spawn({
            let fs = Arc::clone(&fs);
            async move { fs.listing(ROOT).await.map(|entries| entries.len()) }
        });
        while midas.count("midas.folder.children") == 0 {
            tokio::task::yield_now().await;
        }
        let attr = fs.lookup(ROOT, "f98.dat").await.expect("lookup");
        assert_eq!(attr.size, 5);
        assert!(
            fs.cached_listing(ROOT).is_none(),
            "the lookup waited for the whole listing"
        );
        assert_eq!(listing.await.expect("task").expect("listing"), 100);
        assert_eq!(midas.count("midas.folder.children"), 1);
        assert_eq!(midas.count("midas.item.get"), 100);
    }

    /// `rsync -a` into a folder nobody listed yet, of a large file the server holds: its lookup
    /// of `big.bin` starts the listing and is answered with that item alone; its lookup of the
    /// temporary `.big.bin.XXXXXX` joins the listing still under way (no such name). The
    /// create that follows must see `big.bin` in the folder's answer, so that the file is not
    /// sent early and Midas's checksum dedup spares sending it.
    #[tokio::test]
    async fn rsyncs_copy_of_a_file_in_a_folder_being_listed_sends_no_bytes() {
        let midas = server();
        let content = large_content();
        midas.add_file(midas.public_folder(), "big.bin", &content);
        midas.add_file(midas.public_folder(), "other.dat", b"other");
        let (fs, _spool) = mount(&midas);
        // big.bin's item.get answers at once, the rest of the listing's late.
        midas.fail("midas.item.get", Fault::Delay(Duration::ZERO));
        midas.fail("midas.item.get", Fault::Delay(Duration::from_secs(5)));
        let attr = fs.lookup(ROOT, "big.bin").await.expect("big.bin");
        assert_eq!(attr.size, content.len() as u64);
        let temporary = ".big.bin.Ab12Cd";
        let err = fs.lookup(ROOT, temporary).await.expect_err("a free name");
        assert_eq!(err.errno(), libc::ENOENT);
        assert!(
            fs.cached_listing(ROOT).is_none(),
            "the listing is under way"
        );
        let (_, fh) = fs.create(ROOT, temporary, 42).expect("create");
        write_and_close(&fs, fh, &content).await;
        assert_saved_without_sending(&midas, temporary, &content);
    }

    #[test]
    fn only_names_without_a_suffix_or_revision_are_settled_alone() {
        assert!(settled_alone("report.txt"));
        assert!(settled_alone("scan (1).nii"));
        assert!(!settled_alone("report (item 42).txt"));
        assert!(!settled_alone("data (folder 7)"));
        assert!(!settled_alone("data.csv@r2"));
    }
}
