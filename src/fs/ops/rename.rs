//! rename: within a folder, between folders (with the access of the new folder), over an
//! existing entry (replaced after the move, or saved over: see `write::replace`).

use crate::fs::error::Kind;
use crate::fs::inode::NodeKind;
use crate::fs::names;
use crate::fs::write::{write_error, Container, Target};
use crate::fs::{Entry, FsError, FsResult, MidasFs};

impl MidasFs {
    /// Renames or moves; an existing target is replaced (after the move, so that a failed
    /// move loses nothing), unless `no_replace`.
    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        no_replace: bool,
    ) -> FsResult<()> {
        self.check_writable()?;
        self.refuse_read_only_name(parent, name).await?;
        self.refuse_read_only_name(new_parent, new_name).await?;
        let (source, no_upload_meanwhile) = self.settled_child(parent, name).await?;
        if parent == new_parent && name == new_name {
            return Ok(());
        }
        let target = self.child(new_parent, new_name).await?;
        if let Some(target) = &target {
            if no_replace {
                return Err(FsError::new(Kind::Exists, format!("{new_name} exists")));
            }
            match (source.data.kind.is_dir(), target.data.kind.is_dir()) {
                (true, false) => {
                    return Err(FsError::new(
                        Kind::NotDir,
                        format!("{new_name} is not a directory"),
                    ))
                }
                (false, true) => {
                    return Err(FsError::new(
                        Kind::IsDir,
                        format!("{new_name} is a directory"),
                    ))
                }
                (true, true) => self.ensure_empty(target).await?,
                (false, false) => {}
            }
        }
        let destination = self.container(new_parent)?;
        if let (Some(target), Container::Folder(_)) = (&target, &destination) {
            // Files open for writing the target: after a save over it, the name holds what
            // was saved, and their close must not overwrite it.
            let overwritten = match &target.data.kind {
                NodeKind::ItemFile { item, .. } | NodeKind::SavedFile { item, .. } => {
                    self.files_writing_item(item.id)
                }
                _ => Vec::new(),
            };
            // With write-back, what their closes made due goes first, as revisions of the
            // target, and the save lands on top (without, a close uploads before it returns).
            for (ino, _) in &overwritten {
                self.settle_write_back(*ino).await;
            }
            // A save of theirs already running (a last release's, an fsync's) ends first, so
            // that the save over the target is its last revision: as in POSIX, the name holds
            // what was renamed over it, not what was written to the file it replaced.
            for (_, file) in &overwritten {
                if !file.upload_held_by(no_upload_meanwhile.as_ref()) {
                    drop(file.upload.lock().await);
                }
            }
            if self
                .save_over(&source, target, new_parent, no_upload_meanwhile.as_ref())
                .await?
            {
                for (_, file) in overwritten {
                    self.set_aside(&file);
                }
                let source_ino = source.ino;
                self.listings
                    .patch(parent, |entries| entries.retain(|e| e.ino != source_ino));
                return Ok(());
            }
        }
        let midas_name = names::to_midas(new_name);
        // Whether a move into another folder left the object public.
        let mut now_public = None;
        if let Some(item) = source.data.kind.item() {
            self.writes.fresh().remove(&item.id);
            // Only vim's backup name (`NAME~`): other renames keep their POSIX meaning.
            if parent == new_parent
                && !source.data.kind.is_dir()
                && new_name.strip_suffix('~') == Some(name)
            {
                self.writes
                    .renamed_away()
                    .insert((parent, name.to_owned()), item.id);
            }
        }
        match &source.data.kind {
            NodeKind::NewFile { .. } => {
                let file = self.writes.files().get(&source.ino).cloned();
                if let Some(file) = file {
                    let mut data = file.lock();
                    // What was sent early went under the old name.
                    data.early.spoil();
                    if let Target::New {
                        parent_ino,
                        container,
                        name,
                        ..
                    } = &mut data.target
                    {
                        *parent_ino = new_parent;
                        *container = destination;
                        *name = new_name.to_owned();
                    }
                    drop(data);
                    self.retarget_spool(source.ino, &file);
                }
            }
            NodeKind::ItemFile { item, .. }
            | NodeKind::SavedFile { item, .. }
            | NodeKind::ItemDir { item } => {
                let Container::Folder(to) = destination else {
                    return Err(cross_device(name));
                };
                let is_file = !source.data.kind.is_dir();
                let mut current_name = names::to_midas(name);
                if parent != new_parent {
                    let Container::Folder(from) = self.container(parent)? else {
                        return Err(cross_device(name));
                    };
                    let moved = self
                        .client
                        .item_move(item.id, from, to)
                        .await
                        .map_err(write_error)?;
                    current_name = moved.name;
                    let matched = self
                        .match_item_access(item.id, moved.privacy_status, to)
                        .await;
                    now_public = Some(self.moved_access(matched, parent, new_parent, name)?);
                }
                if current_name != midas_name {
                    self.client
                        .item_rename(&item.uuid, &midas_name, is_file)
                        .await
                        .map_err(write_error)?;
                }
            }
            NodeKind::Folder { id, uuid } => {
                let Container::Folder(to) = destination else {
                    return Err(cross_device(name));
                };
                let uuid = if uuid.is_empty() {
                    self.client.folder_get(*id).await?.uuid
                } else {
                    uuid.clone()
                };
                let old_name = names::to_midas(name);
                // Renamed first: `folder.move` refuses a clash with the old name.
                if old_name != midas_name {
                    self.client
                        .folder_rename(&uuid, &midas_name)
                        .await
                        .map_err(write_error)?;
                }
                if parent != new_parent {
                    // `folder.move` refuses a name the new folder holds: an empty folder
                    // replaced there goes out of the way first (and back if the move fails).
                    let aside = match &target {
                        Some(target) => self.set_folder_aside(target).await?,
                        None => None,
                    };
                    let moved = match self.client.folder_move(*id, to).await {
                        Ok(moved) => moved,
                        Err(err) => {
                            if let Some((uuid, name)) = &aside {
                                if let Err(back) = self.client.folder_rename(uuid, name).await {
                                    log::warn!("{name}: could not restore its name: {back}");
                                }
                            }
                            if old_name != midas_name {
                                if let Err(back) = self.client.folder_rename(&uuid, &old_name).await
                                {
                                    log::warn!("folder {id}: could not restore its name: {back}");
                                }
                            }
                            return Err(write_error(err));
                        }
                    };
                    let matched = self
                        .match_folder_access(*id, moved.privacy_status, to)
                        .await;
                    now_public = Some(self.moved_access(matched, parent, new_parent, name)?);
                }
            }
            NodeKind::Bitstream { bitstream, .. } => {
                if parent != new_parent {
                    return Err(cross_device(name));
                }
                self.client
                    .bitstream_rename(bitstream.id, &midas_name)
                    .await
                    .map_err(write_error)?;
            }
            NodeKind::Root
            | NodeKind::Communities
            | NodeKind::Users
            | NodeKind::Home { .. }
            | NodeKind::Search(_) => {
                return Err(FsError::new(
                    Kind::NotPermitted,
                    format!("{name} cannot be renamed"),
                ))
            }
        }
        if let Some(target) = &target {
            if target.ino != source.ino {
                self.remove_entry(target).await?;
            }
        }
        let mut moved = source.clone();
        moved.name = new_name.to_owned();
        if let Some(public) = now_public {
            moved.data.public = public;
        }
        let source_ino = source.ino;
        self.listings
            .patch(parent, |entries| entries.retain(|e| e.ino != source_ino));
        self.listings.patch(new_parent, |entries| {
            entries.retain(|e| e.name != moved.name && e.ino != moved.ino);
            entries.push(moved);
        });
        self.moved_aliases(source_ino, new_parent);
        if let Some(public) = now_public {
            self.mark_access_below(source_ino, public);
        }
        if matches!(source.data.kind, NodeKind::Bitstream { .. }) {
            // A file of an item directory open for writing: its sidecar and due record name it.
            if let (ino, Some(file)) = self.open_file_of(&source) {
                self.retarget_spool(ino, &file);
            }
        }
        Ok(())
    }
}

impl MidasFs {
    /// After a move, every inode the kernel may know the object by is in `new_parent`: the
    /// listed one, and after a save by rename also the saved file's own inode, which the kernel
    /// keeps under the name (see `write::replace::show_replaced`). A file of it open for writing
    /// sends its close there too. Left behind, such an alias would put the object back in its
    /// old folder's listing at its next write, and removing it there would delete the object.
    fn moved_aliases(&self, source_ino: u64, new_parent: u64) {
        let root = self.root_folder();
        let mut aliases = Vec::new();
        {
            let mut nodes = self.nodes();
            for (ino, node) in nodes.iter_mut() {
                if *ino == source_ino || node.data.kind.ino(root) == source_ino {
                    node.parent = new_parent;
                    aliases.push(*ino);
                }
            }
        }
        for ino in aliases {
            let Some(file) = self.writes.files().get(&ino).cloned() else {
                continue;
            };
            let mut data = file.lock();
            match &mut data.target {
                Target::ItemFile { parent_ino, .. } | Target::Bitstream { parent_ino, .. } => {
                    *parent_ino = new_parent;
                }
                Target::New { .. } => {}
            }
        }
    }
}

impl MidasFs {
    /// Renames the folder `target` (an empty folder a folder is moved over) to a name nothing
    /// else has, and returns its uuid and Midas name, to be restored if the move fails.
    async fn set_folder_aside(&self, target: &Entry) -> FsResult<Option<(String, String)>> {
        let NodeKind::Folder { id, uuid } = &target.data.kind else {
            return Ok(None);
        };
        let uuid = if uuid.is_empty() {
            self.client.folder_get(*id).await?.uuid
        } else {
            uuid.clone()
        };
        let name = names::to_midas(&target.name);
        let aside = format!("{name}.midasfs-replaced-{id}");
        self.client
            .folder_rename(&uuid, &aside)
            .await
            .map_err(write_error)?;
        Ok(Some((uuid, name)))
    }
}

pub(in crate::fs) fn cross_device(name: &str) -> FsError {
    FsError::new(
        Kind::CrossDevice,
        format!("{name} cannot move there in Midas (copy it instead)"),
    )
}
