//! What the server does not know yet, laid over what it says: new files not uploaded yet in
//! their directory's listing, the size and time of files open for writing, times set through
//! the mount.

use std::time::Duration;

use super::set_times::revision_of;
use super::Target;
use crate::fs::inode::{Attr, NodeData, NodeKind};
use crate::fs::{Entry, MidasFs};

impl MidasFs {
    /// What a fetched listing lacks: new files not uploaded yet, and times set through the mount.
    pub(in crate::fs) fn add_local_state(&self, dir: u64, entries: &mut Vec<Entry>) {
        {
            let orphans = self.writes.orphans();
            if !orphans.is_empty() {
                entries.retain(|e| {
                    !matches!(&e.data.kind, NodeKind::ItemDir { item } if orphans.contains(&item.id))
                });
            }
        }
        {
            let mut mtimes = self.writes.mtimes();
            if !mtimes.is_empty() {
                for entry in entries.iter_mut() {
                    let revision = revision_of(&entry.data.kind);
                    if let Some(mtime) = mtimes.shown(entry.ino, revision) {
                        entry.data.mtime = mtime;
                    }
                }
            }
        }
        let files = self.writes.open_files();
        let public = self.is_public(dir);
        for (ino, file) in files {
            let data = file.lock();
            if let (
                Target::New {
                    local,
                    parent_ino,
                    name,
                    ..
                },
                false,
            ) = (&data.target, data.unlinked || data.spool.is_recovered())
            {
                if *parent_ino == dir {
                    entries.retain(|e| e.name != *name);
                    entries.push(Entry {
                        name: name.clone(),
                        ino,
                        data: NodeData {
                            kind: NodeKind::NewFile { local: *local },
                            mtime: data.mtime,
                            writable: true,
                            public,
                        }
                        .into(),
                    });
                }
            }
        }
    }

    /// An entry's attributes as the mount shows them: with [`MidasFs::adjust_attr`]'s local
    /// state (a file still uploading after its close shows its local copy's size).
    pub fn entry_attr(&self, entry: &Entry) -> Attr {
        let mut attr = entry.attr();
        self.adjust_attr(entry.ino, &mut attr);
        attr
    }

    /// Whether `ino` is a new file that has not reached the server yet: the kernel must not keep
    /// its entry, since a failed upload takes the name away (its bytes go to the recovery
    /// directory) and a kernel that kept the entry would show the file for a whole TTL more.
    fn is_unsaved_new(&self, ino: u64) -> bool {
        self.open_file(ino)
            .is_some_and(|(_, file)| matches!(file.lock().target, Target::New { .. }))
    }

    /// How long the kernel may keep what it was told of inode `ino`: the TTL, or nothing for a
    /// new file not on the server yet.
    pub fn ttl_of(&self, ino: u64) -> Duration {
        if self.is_unsaved_new(ino) {
            Duration::ZERO
        } else {
            self.config.ttl
        }
    }

    /// The size and time of a file open for writing, and times set through the mount.
    pub(in crate::fs) fn adjust_attr(&self, ino: u64, attr: &mut Attr) {
        if let Some((_, file)) = self.open_file(ino) {
            let data = file.lock();
            attr.size = data.spool.len();
            attr.mtime = data.mtime;
        }
        if let Some(mtime) = self.writes.mtime_override(self.canonical_ino(ino)) {
            attr.mtime = mtime;
        }
    }
}
