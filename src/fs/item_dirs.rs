//! Directories that are items: what pydas's `upload(…, leaf_folders_as_items=True)` makes, from
//! the mount.
//!
//! pydas uploads a directory without subdirectories (a DICOM series, say) as one item named like
//! the directory, whose files are the bitstreams of its one revision; every other directory
//! becomes a folder and every other file an item of its own. Two ways make the same here:
//!
//! - `setfattr -n user.midas.type -v item DIR` on an empty directory makes it an (empty) item,
//!   which the mount shows as a directory; files written into it become its bitstreams, all in
//!   its head revision. `-v folder` turns an empty item back into a folder;
//!   `getfattr -n user.midas.type` reads `folder` or `item` of any directory.
//! - With `--leaf-dirs-as-items`, every directory made through the mount is an item. Whether a
//!   directory will receive only files is not known when it is made, so when a directory is then
//!   made inside one, it turns into a folder, and the files already in it into items of their
//!   own, each made from the content the server holds by its MD5 (no byte is sent again): what
//!   pydas would have made of a directory with a subdirectory. So `cp -r dicom_data MOUNT/…`
//!   makes what `pydas.upload` makes, whatever order `cp` visits a directory in.
//!
//! The mount remembers the items it made that way for its own lifetime only. A directory made in
//! any other item (one made by `setfattr`, one made before a remount, any item on the server) is
//! refused with `EPERM`, as always: an item holds files only, and the mount does not restructure
//! what it did not make for this purpose.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use super::error::{FsError, FsResult, Kind};
use super::inode::{ItemInfo, NodeKind};
use super::write::{write_error, Container, Target};
use super::{names, Entry, MidasFs};
use crate::midas::types::{Bitstream, Id, PRIVACY_PUBLIC};

/// The extended attribute that reads, and sets, whether a directory is a folder or an item.
pub const TYPE_XATTR: &str = "user.midas.type";

/// `--leaf-dirs-as-items`, and the items it made that may still turn into folders.
#[derive(Default)]
pub(super) struct LeafDirs {
    on: bool,
    made: Mutex<HashSet<Id>>,
}

impl MidasFs {
    /// Makes every new directory an item that turns into a folder when a directory is made in it
    /// (`--leaf-dirs-as-items`).
    pub fn with_leaf_dirs_as_items(mut self, on: bool) -> MidasFs {
        self.leaf_dirs.on = on;
        self
    }

    pub(super) fn leaf_dirs_as_items(&self) -> bool {
        self.leaf_dirs.on
    }

    fn leaf_items(&self) -> MutexGuard<'_, HashSet<Id>> {
        self.leaf_dirs
            .made
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// `mkdir` of `name` in directory `parent` (folder `folder`) under `--leaf-dirs-as-items`:
    /// an empty item, shown as a directory.
    pub(super) async fn mkdir_item(
        &self,
        parent: u64,
        folder: Id,
        name: &str,
    ) -> FsResult<super::inode::Attr> {
        let entry = self.make_item_dir(folder, name).await?;
        if let Some(item) = entry.data.kind.item() {
            self.leaf_items().insert(item.id);
        }
        self.remember(parent, &entry);
        // A new item is empty: lookups in it need not ask the server.
        self.listings.insert(entry.ino, Arc::new(Vec::new()));
        let attr = entry.attr();
        self.listings.patch(parent, |entries| entries.push(entry));
        Ok(attr)
    }

    /// A new, empty item `name` in `folder`, as the entry that shows it.
    async fn make_item_dir(&self, folder: Id, name: &str) -> FsResult<Entry> {
        let midas_name = names::to_midas(name);
        let created = self
            .client
            .item_create(folder, &midas_name)
            .await
            .map_err(write_error)?;
        if created.name != midas_name {
            // Midas renamed it: an item of that name exists (or is hidden from us).
            self.delete_quietly(created.item_id).await;
            return Err(FsError::new(
                Kind::Exists,
                format!("{name}: an item of that name exists on the server"),
            ));
        }
        let kind = NodeKind::ItemDir {
            item: ItemInfo::new(&created, 0),
        };
        let public = created.privacy_status == PRIVACY_PUBLIC;
        Ok(self.entry(name.to_owned(), kind, &created.date_update, true, public))
    }

    /// `setfattr -n user.midas.type -v item|folder` of directory `ino`: an empty folder becomes
    /// an item, an empty item a folder, with the same name and access.
    pub(super) async fn set_type(&self, ino: u64, value: &[u8]) -> FsResult<()> {
        let wanted_item = match value {
            b"item" => true,
            b"folder" => false,
            _ => {
                return Err(FsError::new(
                    Kind::Invalid,
                    format!("{TYPE_XATTR} is `item` or `folder`"),
                ))
            }
        };
        let data = self.node_data(ino)?;
        let is_item = match &data.kind {
            NodeKind::Folder { .. } => false,
            NodeKind::ItemDir { .. } => true,
            _ => {
                return Err(FsError::new(
                    Kind::NotPermitted,
                    format!("{TYPE_XATTR} of {} cannot change", self.describe(ino)),
                ))
            }
        };
        if is_item == wanted_item {
            return Ok(());
        }
        if !data.writable {
            return Err(FsError::new(
                Kind::Denied,
                format!("{}: no write permission", self.describe(ino)),
            ));
        }
        let parent = self.parent(ino);
        let Container::Folder(folder) = self.container(parent)? else {
            return Err(FsError::new(
                Kind::NotPermitted,
                "an item directory holds files only",
            ));
        };
        let listed_ino = self.canonical_ino(ino);
        let name = self.shown_name(parent, listed_ino).ok_or_else(|| {
            FsError::new(
                Kind::Stale,
                format!("{}: not in its folder's listing", self.describe(ino)),
            )
        })?;
        let old = Entry {
            name: name.clone(),
            ino: listed_ino,
            data: data.clone().into(),
        };
        if self.writing_in(ino, data.kind.item().map(|i| i.id)) {
            return Err(busy(&name));
        }
        self.ensure_empty(&old).await?;
        let new = match &data.kind {
            NodeKind::Folder { id, .. } => {
                let mut made = self.make_item_dir(folder, &name).await?;
                let item_id = made.data.kind.item().map_or(0, |i| i.id);
                let done = async {
                    if made.data.public != data.public {
                        self.client.item_set_public(item_id, data.public).await?;
                        made.data.public = data.public;
                    }
                    self.client.folder_delete(*id).await
                };
                if let Err(err) = done.await {
                    self.delete_quietly(item_id).await;
                    return Err(write_error(err));
                }
                made
            }
            NodeKind::ItemDir { item } => {
                let server_name = self.client.item_get(item.id).await?.name;
                let made = self
                    .make_folder(folder, &server_name, &name, data.public)
                    .await?;
                self.client
                    .item_delete(item.id)
                    .await
                    .map_err(write_error)?;
                self.leaf_items().remove(&item.id);
                made
            }
            _ => unreachable!("checked above"),
        };
        log::info!(
            "{}: now {}",
            self.describe(ino),
            if wanted_item { "an item" } else { "a folder" }
        );
        self.retype(parent, ino, listed_ino, new, true);
        Ok(())
    }

    /// `mkdir` in item directory `dir`: an item `--leaf-dirs-as-items` made turns into a folder,
    /// whose id is returned, and its files into items of their own in it (see the module's
    /// doc). Any other item holds files only: `EPERM`.
    pub(super) async fn unleaf(&self, dir: u64, item: &ItemInfo) -> FsResult<Id> {
        if !self.leaf_items().contains(&item.id) {
            return Err(FsError::new(
                Kind::NotPermitted,
                "an item directory holds files only",
            ));
        }
        let parent = self.parent(dir);
        let Container::Folder(folder) = self.container(parent)? else {
            return Err(FsError::new(
                Kind::NotPermitted,
                "an item directory holds files only",
            ));
        };
        let listed_ino = self.canonical_ino(dir);
        let current = self.client.item_get(item.id).await?;
        let name = self
            .shown_name(parent, listed_ino)
            .unwrap_or_else(|| names::to_display(&current.name));
        if self.writing_in(dir, Some(item.id)) {
            return Err(busy(&name));
        }
        let public = self.is_public(dir);
        let made = self
            .make_folder(folder, &current.name, &name, public)
            .await?;
        let new_folder = match &made.data.kind {
            NodeKind::Folder { id, .. } => *id,
            _ => unreachable!("make_folder makes a folder"),
        };
        let bitstreams = current.head().map(|h| h.bitstreams.clone());
        for bitstream in bitstreams.iter().flatten() {
            if let Err(err) = self.relink(new_folder, bitstream).await {
                // Nothing half-made stays: the item is as it was.
                if let Err(err) = self.client.folder_delete(new_folder).await {
                    log::warn!("could not remove the folder {new_folder} half made: {err}");
                }
                return Err(err);
            }
        }
        if let Err(err) = self.client.item_delete(item.id).await {
            if let Err(err) = self.client.folder_delete(new_folder).await {
                log::warn!("could not remove the folder {new_folder} half made: {err}");
            }
            return Err(write_error(err));
        }
        self.leaf_items().remove(&item.id);
        log::info!(
            "{}: a directory made in it turns it into a folder of {} item(s)",
            self.describe(dir),
            bitstreams.map_or(0, |b| b.len())
        );
        self.retype(parent, dir, listed_ino, made, false);
        Ok(new_folder)
    }

    /// A new folder `server_name` in `folder` with the access `public`, shown as `name`.
    /// Midas's `folder.create` answers with the folder of that name if there is one: that is
    /// refused, so that nothing is merged into a folder that existed.
    async fn make_folder(
        &self,
        folder: Id,
        server_name: &str,
        name: &str,
        public: bool,
    ) -> FsResult<Entry> {
        let siblings = self.client.folder_children(folder).await?;
        if siblings.folders.iter().any(|f| f.name == server_name) {
            return Err(FsError::new(
                Kind::Exists,
                format!("{name}: a folder of that name exists on the server"),
            ));
        }
        let created = self
            .client
            .folder_create(folder, server_name)
            .await
            .map_err(write_error)?;
        if (created.privacy_status == PRIVACY_PUBLIC) != public {
            if let Err(err) = self
                .client
                .folder_set_public(created.folder_id, public)
                .await
            {
                if let Err(err) = self.client.folder_delete(created.folder_id).await {
                    log::warn!(
                        "could not remove the folder {} half made: {err}",
                        created.folder_id
                    );
                }
                return Err(write_error(err));
            }
        }
        let kind = NodeKind::Folder {
            id: created.folder_id,
            uuid: created.uuid.clone(),
        };
        Ok(self.entry(name.to_owned(), kind, &created.date_update, true, public))
    }

    /// A single-file item in `folder` holding `bitstream`'s content, linked by its MD5 as Midas
    /// does for content it holds (`upload.generatetoken` with the checksum): nothing is sent.
    async fn relink(&self, folder: Id, bitstream: &Bitstream) -> FsResult<()> {
        let made = self
            .client
            .item_create(folder, &bitstream.name)
            .await
            .map_err(write_error)?;
        let token = self
            .client
            .upload_token(made.item_id, &bitstream.name, Some(&bitstream.checksum))
            .await
            .map_err(write_error)?;
        match token {
            None => Ok(()),
            Some(_) => Err(FsError::new(
                Kind::Io,
                format!(
                    "{}: the server did not find its content by its MD5 {:?}",
                    names::to_display(&bitstream.name),
                    bitstream.checksum
                ),
            )),
        }
    }

    /// The name directory `parent`'s listing shows for `listed_ino`.
    fn shown_name(&self, parent: u64, listed_ino: u64) -> Option<String> {
        let entries = self.listings.last(parent)?;
        let entry = entries.iter().find(|e| e.ino == listed_ino)?;
        Some(entry.name.clone())
    }

    /// Whether a file in directory `dir` (of item `item`) holds data not on the server yet.
    fn writing_in(&self, dir: u64, item: Option<Id>) -> bool {
        self.writes.open_files().into_iter().any(|(_, file)| {
            let data = file.lock();
            !data.unlinked
                && match &data.target {
                    Target::New { parent_ino, .. } => *parent_ino == dir,
                    Target::Bitstream { item: of, .. } => Some(of.id) == item && data.dirty,
                    Target::ItemFile { .. } => false,
                }
        })
    }

    /// Directory `ino`, listed in `parent` as `listed_ino`, is now `new`: the kernel keeps its
    /// inode number (a lookup gives the new one), which now stands for what `new` is.
    fn retype(&self, parent: u64, ino: u64, listed_ino: u64, new: Entry, empty: bool) {
        if let Some(node) = self.nodes().get_mut(&ino) {
            node.data = new.data.clone();
        }
        if empty {
            self.listings.insert(ino, Arc::new(Vec::new()));
            self.listings.insert(new.ino, Arc::new(Vec::new()));
        } else {
            self.listings.remove(ino);
            self.listings.remove(new.ino);
        }
        self.listings.patch(parent, |entries| {
            for entry in entries.iter_mut().filter(|e| e.ino == listed_ino) {
                *entry = new.clone();
            }
        });
    }
}

fn busy(name: &str) -> FsError {
    FsError::new(
        Kind::NotPermitted,
        format!("{name}: files in it are still being written; close them first"),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::fs::fake_tests::{fake_mount, server};
    use crate::fs::inode::ROOT;

    /// Writes `content` to a new file `name` in directory `dir` and closes it.
    async fn write_file(fs: &crate::fs::MidasFs, dir: u64, name: &str, content: &[u8]) {
        let (_, fh) = fs.create(dir, name, 42).expect("create");
        fs.write(fh, 0, content).expect("write");
        fs.flush(fh, Some(42)).await.expect("flush");
        fs.release_write(fh).await;
    }

    #[tokio::test]
    async fn an_item_whose_content_the_server_cannot_find_by_md5_stays_as_it_was() {
        let midas = server();
        // Someone else's private file holds the same bytes and came first: Midas's
        // `getByChecksum` finds it, the caller may not read it, so the content is not found.
        let theirs = midas.add_file(midas.private_folder(), "secret.dcm", b"shared bytes");
        midas.hide(theirs);
        let spool = tempfile::tempdir().expect("spool dir");
        let fs = Arc::new(fake_mount(&midas, spool.path()).with_leaf_dirs_as_items(true));
        let series = fs.mkdir(ROOT, "series").await.expect("mkdir").ino;
        write_file(&fs, series, "a.dcm", b"only here").await;
        write_file(&fs, series, "b.dcm", b"shared bytes").await;

        let err = fs
            .mkdir(series, "sub")
            .await
            .expect_err("b.dcm is not found by its MD5");
        assert_eq!(err.errno(), libc::EIO);

        // Nothing is lost or half made: the item holds both files, as before, and neither the
        // new folder nor the item relinked before the failure (a.dcm's) is left.
        let public = midas.public_folder();
        assert_eq!(midas.names_in(public), ["series"]);
        let item = midas.child_item(public, "series").expect("the item stays");
        let head = midas.item(item).expect("item").revisions;
        let names: Vec<&str> = head[0].bitstreams.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["a.dcm", "b.dcm"]);
        // And the mount still shows and reads them.
        let b = fs
            .lookup(series, "b.dcm")
            .await
            .expect("b.dcm is still there");
        let open = fs.open(b.ino).await.expect("open");
        assert_eq!(
            &fs.read(open.fh, 0, 100).await.expect("read")[..],
            b"shared bytes"
        );
        // The directory can still become a folder once the content can be found.
        midas.remove_item(theirs);
        fs.mkdir(series, "sub")
            .await
            .expect("mkdir after the content is found");
        let folder = midas.child_folder(public, "series").expect("now a folder");
        assert_eq!(midas.names_in(folder), ["a.dcm", "b.dcm", "sub"]);
    }
}
