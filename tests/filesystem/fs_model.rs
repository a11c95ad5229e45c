//! A property test of the namespace and of writes: random sequences of create, write, truncate,
//! close, rename, unlink, mkdir, rmdir and setxattr run against a plain in-memory tree (what
//! POSIX promises) and against the filesystem on the in-memory Midas. After every step the
//! listings, the contents read through the mount and what the server holds must agree with the
//! tree; a failing sequence shrinks to a short one.

use crate::fs_support;

use std::collections::BTreeMap;

use fs_support::{errno, errno_name, Mount, ME};
use midasfs::fs::inode::FileKind;
use midasfs::fs::FsResult;
use midasfs::midas::fake::Object;
use proptest::prelude::*;

/// Names entries get: few, so that steps meet each other's entries; `a~` is vim's backup of `a`.
const NAMES: [&str; 4] = ["a", "b", "c", "a~"];

/// One step, in terms of indices into what exists when it runs (so any sequence is valid and
/// shrinks well).
#[derive(Debug, Clone)]
enum Step {
    /// `open(dir/name, O_CREAT | O_WRONLY | O_TRUNC)`.
    Create {
        dir: usize,
        name: usize,
    },
    /// `open(file, O_WRONLY [| O_TRUNC])`.
    Open {
        file: usize,
        truncate: bool,
    },
    /// `pwrite` through an open handle.
    Write {
        handle: usize,
        offset: u64,
        data: Vec<u8>,
    },
    /// `ftruncate` of an open handle.
    Truncate {
        handle: usize,
        size: u64,
    },
    /// `truncate(path)`.
    TruncatePath {
        file: usize,
        size: u64,
    },
    /// `close` of an open handle.
    Close {
        handle: usize,
    },
    /// `rename(entry, dir/name)`.
    Rename {
        entry: usize,
        dir: usize,
        name: usize,
    },
    Unlink {
        entry: usize,
    },
    Mkdir {
        dir: usize,
        name: usize,
    },
    Rmdir {
        entry: usize,
    },
    /// `setxattr(entry, user.midas.meta.note, value)`.
    Setxattr {
        entry: usize,
        value: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let index = || 0usize..16;
    prop_oneof![
        3 => (index(), 0..NAMES.len()).prop_map(|(dir, name)| Step::Create { dir, name }),
        1 => (index(), any::<bool>()).prop_map(|(file, truncate)| Step::Open { file, truncate }),
        4 => (index(), 0u64..12, prop::collection::vec(any::<u8>(), 0..6))
            .prop_map(|(handle, offset, data)| Step::Write { handle, offset, data }),
        1 => (index(), 0u64..10).prop_map(|(handle, size)| Step::Truncate { handle, size }),
        1 => (index(), 0u64..10).prop_map(|(file, size)| Step::TruncatePath { file, size }),
        3 => index().prop_map(|handle| Step::Close { handle }),
        3 => (index(), index(), 0..NAMES.len())
            .prop_map(|(entry, dir, name)| Step::Rename { entry, dir, name }),
        2 => index().prop_map(|entry| Step::Unlink { entry }),
        2 => (index(), 0..NAMES.len()).prop_map(|(dir, name)| Step::Mkdir { dir, name }),
        1 => index().prop_map(|entry| Step::Rmdir { entry }),
        1 => (index(), any::<u8>()).prop_map(|(entry, value)| Step::Setxattr { entry, value }),
    ]
}

/// A path below the mount's root: its names (empty for the root).
type Path = Vec<String>;

/// `name` in `dir`.
fn child(dir: &Path, name: &str) -> Path {
    dir.iter().cloned().chain([name.to_owned()]).collect()
}

fn show(path: &Path) -> String {
    format!("/{}", path.join("/"))
}

/// A file as POSIX sees it.
#[derive(Debug, Clone)]
struct File {
    content: Vec<u8>,
    /// Closed (or fsync'ed) once: an item on the server, which may hold metadata.
    on_server: bool,
}

#[derive(Debug, Clone)]
enum Node {
    Dir,
    File(File),
}

/// A file open for writing: its handles share it; `path` is None once it was unlinked (or
/// replaced by a rename).
#[derive(Debug)]
struct OpenFile {
    path: Option<Path>,
    /// The inode it was opened through (an `ftruncate` of a handle is a setattr of it).
    ino: u64,
    handles: usize,
}

/// The reference: a tree of paths, and the files open for writing.
#[derive(Debug, Default)]
struct Model {
    nodes: BTreeMap<Path, Node>,
    open: Vec<OpenFile>,
    /// Open handles: the filesystem's handle and the open file it writes.
    handles: Vec<(u64, usize)>,
}

impl Model {
    fn new() -> Model {
        let mut model = Model::default();
        model.nodes.insert(Vec::new(), Node::Dir);
        model
    }

    fn dirs(&self) -> Vec<Path> {
        self.nodes
            .iter()
            .filter(|(_, n)| matches!(n, Node::Dir))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Every entry but the root.
    fn entries(&self) -> Vec<Path> {
        self.nodes
            .keys()
            .filter(|p| !p.is_empty())
            .cloned()
            .collect()
    }

    fn files(&self) -> Vec<Path> {
        self.nodes
            .iter()
            .filter(|(_, n)| matches!(n, Node::File(_)))
            .map(|(p, _)| p.clone())
            .collect()
    }

    fn children(&self, dir: &Path) -> Vec<(String, bool)> {
        self.nodes
            .iter()
            .filter(|(p, _)| p.len() == dir.len() + 1 && p.starts_with(dir))
            .map(|(p, n)| (p[p.len() - 1].clone(), matches!(n, Node::Dir)))
            .collect()
    }

    fn file_mut(&mut self, path: &Path) -> &mut File {
        match self.nodes.get_mut(path) {
            Some(Node::File(file)) => file,
            other => panic!("{} is no file: {other:?}", show(path)),
        }
    }

    /// The open file at `path`, if any.
    fn open_at(&self, path: &Path) -> Option<usize> {
        self.open
            .iter()
            .position(|o| o.handles > 0 && o.path.as_ref() == Some(path))
    }

    /// Files open under `path` or below it lose their name (unlinked, replaced).
    fn orphan_open_below(&mut self, path: &Path) {
        for open in &mut self.open {
            if open.path.as_ref().is_some_and(|p| p.starts_with(path)) {
                open.path = None;
            }
        }
    }

    fn move_open_below(&mut self, from: &Path, to: &Path) {
        for open in &mut self.open {
            if let Some(p) = &mut open.path {
                if p.starts_with(from) {
                    let rest = p[from.len()..].to_vec();
                    *p = to.iter().cloned().chain(rest).collect();
                }
            }
        }
    }

    /// An open handle on the file at `path`, if any.
    fn handle_at(&self, path: &Path) -> Option<u64> {
        let open = self.open_at(path)?;
        self.handles
            .iter()
            .find(|(_, o)| *o == open)
            .map(|(fh, _)| *fh)
    }

    /// A new handle on the file at `path` (joining the open file there, if any).
    fn open_handle(&mut self, path: &Path, fh: u64, ino: u64) {
        let index = match self.open_at(path) {
            Some(index) => index,
            None => {
                self.open.push(OpenFile {
                    path: Some(path.clone()),
                    ino,
                    handles: 0,
                });
                self.open.len() - 1
            }
        };
        self.open[index].handles += 1;
        self.handles.push((fh, index));
    }

    fn write(&mut self, open: usize, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if let Some(path) = self.open[open].path.clone() {
            let content = &mut self.file_mut(&path).content;
            let end = offset as usize + data.len();
            if content.len() < end {
                content.resize(end, 0);
            }
            content[offset as usize..end].copy_from_slice(data);
        }
    }

    fn truncate(&mut self, path: &Path, size: u64) {
        self.file_mut(path).content.resize(size as usize, 0);
    }
}

/// What a step gave: the filesystem's errno and the model's (0 for success).
struct Outcome {
    what: String,
    fs: i32,
    model: i32,
}

fn errno_of<T>(result: &FsResult<T>) -> i32 {
    result.as_ref().err().map_or(0, errno)
}

/// Runs steps on the mount and on the model, comparing them after each one.
///
/// One handle per file: a second open of a file being written (or a truncate by its path,
/// which opens it) is left out, since the model follows one handle per file (the filesystem's
/// side: `fs_ops::a_new_file_uploaded_while_still_open_is_still_one_file_by_its_path`).
///
/// Nothing is renamed over a file open for writing: the model does not follow an open file
/// whose name went to another (the filesystem's side:
/// `fs_ops::a_file_saved_over_while_open_shows_and_reads_what_was_saved` and
/// `fs_ops::a_rename_over_a_file_open_for_writing_is_what_the_name_holds_after_its_close`).
struct Run {
    mount: Mount,
    model: Model,
}

impl Run {
    /// A fresh mount and a model of its empty tree.
    fn new() -> Run {
        Run {
            mount: Mount::new(),
            model: Model::new(),
        }
    }

    async fn ino(&self, path: &Path) -> FsResult<u64> {
        self.mount.lookup(&path.join("/")).await.map(|a| a.ino)
    }

    async fn apply(&mut self, step: &Step) -> Option<Outcome> {
        let pick =
            |list: Vec<Path>, i: usize| (!list.is_empty()).then(|| list[i % list.len()].clone());
        let fs = std::sync::Arc::clone(&self.mount.fs);
        match *step {
            Step::Create { dir, name } => {
                let dir = pick(self.model.dirs(), dir)?;
                let path = child(&dir, NAMES[name]);
                let what = format!("create {}", show(&path));
                match self.model.nodes.get(&path).cloned() {
                    // The kernel answers an open of a directory itself.
                    Some(Node::Dir) => None,
                    // A second handle on a file open for writing: out of scope (see
                    // `Run`).
                    Some(Node::File(_)) if self.model.open_at(&path).is_some() => None,
                    // The kernel looked it up: an open with O_TRUNC.
                    Some(Node::File(_)) => {
                        let ino = self.ino(&path).await.ok()?;
                        let result = fs.open_write(ino, true, ME).await;
                        if let Ok(fh) = result {
                            self.model.truncate(&path, 0);
                            self.model.open_handle(&path, fh, ino);
                        }
                        Some(Outcome {
                            what,
                            fs: errno_of(&result),
                            model: 0,
                        })
                    }
                    None => {
                        let parent = self.ino(&dir).await.ok()?;
                        let result = fs.create(parent, NAMES[name], ME);
                        if let Ok((attr, fh)) = result {
                            let file = File {
                                content: Vec::new(),
                                on_server: false,
                            };
                            self.model.nodes.insert(path.clone(), Node::File(file));
                            self.model.open_handle(&path, fh, attr.ino);
                        }
                        Some(Outcome {
                            what,
                            fs: errno_of(&result),
                            model: 0,
                        })
                    }
                }
            }
            Step::Open { file, truncate } => {
                let path = pick(self.model.files(), file)?;
                if self.model.open_at(&path).is_some() {
                    return None;
                }
                let ino = self.ino(&path).await.ok()?;
                let result = fs.open_write(ino, truncate, ME).await;
                if let Ok(fh) = result {
                    if truncate {
                        self.model.truncate(&path, 0);
                    }
                    self.model.open_handle(&path, fh, ino);
                }
                Some(Outcome {
                    what: format!("open {} (truncate: {truncate})", show(&path)),
                    fs: errno_of(&result),
                    model: 0,
                })
            }
            Step::Write {
                handle,
                offset,
                ref data,
            } => {
                let (fh, open) = *self
                    .model
                    .handles
                    .get(handle % self.model.handles.len().max(1))?;
                let result = fs.write(fh, offset, data);
                if result.is_ok() {
                    self.model.write(open, offset, data);
                }
                Some(Outcome {
                    what: format!("write {} bytes at {offset} to handle {fh}", data.len()),
                    fs: errno_of(&result),
                    model: 0,
                })
            }
            Step::Truncate { handle, size } => {
                let (fh, open) = *self
                    .model
                    .handles
                    .get(handle % self.model.handles.len().max(1))?;
                let path = self.model.open[open].path.clone();
                // ftruncate reaches the filesystem as a setattr of the handle's inode.
                let ino = self.model.open[open].ino;
                let result = fs.setattr(ino, None, Some(size), None).await;
                if result.is_ok() {
                    if let Some(path) = &path {
                        self.model.truncate(path, size);
                    }
                }
                Some(Outcome {
                    what: format!("ftruncate handle {fh} to {size}"),
                    fs: errno_of(&result),
                    model: 0,
                })
            }
            Step::TruncatePath { file, size } => {
                let path = pick(self.model.files(), file)?;
                if self.model.open_at(&path).is_some() {
                    // A truncate by path opens the file: a second handle (see `Run`).
                    return None;
                }
                let ino = self.ino(&path).await.ok()?;
                let result = fs.setattr(ino, None, Some(size), None).await;
                if result.is_ok() {
                    self.model.truncate(&path, size);
                    if self.model.open_at(&path).is_none() {
                        self.model.file_mut(&path).on_server = true;
                    }
                }
                Some(Outcome {
                    what: format!("truncate {} to {size}", show(&path)),
                    fs: errno_of(&result),
                    model: 0,
                })
            }
            Step::Close { handle } => {
                if self.model.handles.is_empty() {
                    return None;
                }
                let (fh, open) = self.model.handles.remove(handle % self.model.handles.len());
                let result = fs.flush(fh, Some(ME)).await;
                fs.release_write(fh).await;
                let path = self.model.open[open].path.clone();
                self.model.open[open].handles -= 1;
                if let (Ok(()), Some(path)) = (&result, &path) {
                    self.model.file_mut(path).on_server = true;
                }
                Some(Outcome {
                    what: format!(
                        "close handle {fh} of {}",
                        path.as_ref().map_or("(unlinked)".into(), show)
                    ),
                    fs: errno_of(&result),
                    model: 0,
                })
            }
            Step::Rename { entry, dir, name } => {
                let from = pick(self.model.entries(), entry)?;
                let dir = pick(self.model.dirs(), dir)?;
                let to = child(&dir, NAMES[name]);
                let from_is_dir = matches!(self.model.nodes[&from], Node::Dir);
                if to.starts_with(&from) && to != from {
                    // Into itself: the kernel refuses (EINVAL) without asking.
                    return None;
                }
                let replaces = from != to && self.model.nodes.contains_key(&to);
                if replaces && self.model.open_at(&to).is_some() {
                    // Over a file open for writing: out of scope (see `Run`).
                    return None;
                }
                let what = format!("rename {} to {}", show(&from), show(&to));
                let model = if from == to {
                    0
                } else {
                    match self.model.nodes.get(&to) {
                        Some(Node::Dir) if !from_is_dir => libc::EISDIR,
                        Some(Node::File(_)) if from_is_dir => libc::ENOTDIR,
                        Some(Node::Dir) if !self.model.children(&to).is_empty() => libc::ENOTEMPTY,
                        _ => 0,
                    }
                };
                let parent = self.ino(&from[..from.len() - 1].to_vec()).await.ok()?;
                let new_parent = self.ino(&dir).await.ok()?;
                let result = fs
                    .rename(
                        parent,
                        &from[from.len() - 1],
                        new_parent,
                        NAMES[name],
                        false,
                    )
                    .await;
                if result.is_ok() && model == 0 && from != to {
                    // A file saved over an item keeps that item (its id, its metadata), even
                    // while the new content is still being written.
                    let keeps_item = matches!(
                        self.model.nodes.get(&to),
                        Some(Node::File(File {
                            on_server: true,
                            ..
                        }))
                    );
                    self.model.orphan_open_below(&to);
                    let moved: Vec<(Path, Node)> = self
                        .model
                        .nodes
                        .iter()
                        .filter(|(p, _)| p.starts_with(&from))
                        .map(|(p, n)| (p.clone(), n.clone()))
                        .collect();
                    self.model
                        .nodes
                        .retain(|p, _| !p.starts_with(&from) && !p.starts_with(&to));
                    for (p, n) in moved {
                        let rest = p[from.len()..].to_vec();
                        self.model
                            .nodes
                            .insert(to.iter().cloned().chain(rest).collect(), n);
                    }
                    self.model.move_open_below(&from, &to);
                    if keeps_item && !from_is_dir {
                        self.model.file_mut(&to).on_server = true;
                    }
                }
                Some(Outcome {
                    what,
                    fs: errno_of(&result),
                    model,
                })
            }
            Step::Unlink { entry } => {
                let path = pick(self.model.entries(), entry)?;
                let model = match self.model.nodes[&path] {
                    Node::Dir => libc::EISDIR,
                    Node::File(_) => 0,
                };
                let parent = self.ino(&path[..path.len() - 1].to_vec()).await.ok()?;
                let result = fs.unlink(parent, &path[path.len() - 1]).await;
                if result.is_ok() && model == 0 {
                    self.model.nodes.remove(&path);
                    self.model.orphan_open_below(&path);
                }
                Some(Outcome {
                    what: format!("unlink {}", show(&path)),
                    fs: errno_of(&result),
                    model,
                })
            }
            Step::Mkdir { dir, name } => {
                let dir = pick(self.model.dirs(), dir)?;
                let path = child(&dir, NAMES[name]);
                let model = if self.model.nodes.contains_key(&path) {
                    libc::EEXIST
                } else {
                    0
                };
                let parent = self.ino(&dir).await.ok()?;
                let result = fs.mkdir(parent, NAMES[name]).await;
                if result.is_ok() && model == 0 {
                    self.model.nodes.insert(path.clone(), Node::Dir);
                }
                Some(Outcome {
                    what: format!("mkdir {}", show(&path)),
                    fs: errno_of(&result),
                    model,
                })
            }
            Step::Rmdir { entry } => {
                let path = pick(self.model.entries(), entry)?;
                let model = match self.model.nodes[&path] {
                    Node::File(_) => libc::ENOTDIR,
                    Node::Dir if !self.model.children(&path).is_empty() => libc::ENOTEMPTY,
                    Node::Dir => 0,
                };
                let parent = self.ino(&path[..path.len() - 1].to_vec()).await.ok()?;
                let result = fs.rmdir(parent, &path[path.len() - 1]).await;
                if result.is_ok() && model == 0 {
                    self.model.nodes.remove(&path);
                }
                Some(Outcome {
                    what: format!("rmdir {}", show(&path)),
                    fs: errno_of(&result),
                    model,
                })
            }
            Step::Setxattr { entry, value } => {
                let path = pick(self.model.entries(), entry)?;
                // Only items hold metadata: a folder, or a file not on the server yet, has none.
                let model = match &self.model.nodes[&path] {
                    Node::File(File {
                        on_server: true, ..
                    }) => 0,
                    _ => libc::ENOTSUP,
                };
                let ino = self.ino(&path).await.ok()?;
                let value = value.to_string();
                let name = "user.midas.meta.note";
                let mut result = fs.setxattr(ino, name, value.as_bytes(), 0).await;
                if result.is_ok() {
                    // What was set reads back.
                    result = match fs.getxattr(ino, name).await {
                        Ok(read) if read == value.as_bytes() => Ok(()),
                        Ok(read) => Err(midasfs::fs::FsError::new(
                            midasfs::fs::error::Kind::Local(libc::EBADMSG),
                            format!("read back {:?}", String::from_utf8_lossy(&read)),
                        )),
                        Err(err) => Err(err),
                    };
                }
                Some(Outcome {
                    what: format!("setxattr {} = {value}", show(&path)),
                    fs: errno_of(&result),
                    model,
                })
            }
        }
    }

    /// The content of a file read through the mount, as a program would (a file being written
    /// is read from what is written).
    async fn read(&self, ino: u64) -> FsResult<Vec<u8>> {
        match self.mount.fs.join_if_writing(ino) {
            Some(fh) => {
                let bytes = self.mount.fs.read(fh, 0, 1 << 20).await;
                self.mount.fs.release_write(fh).await;
                bytes.map(|b| b.to_vec())
            }
            None => self.mount.cat(ino).await,
        }
    }

    /// Everything the model holds, as the mount and the server show it.
    async fn compare(&self) -> Result<(), String> {
        for (path, node) in &self.model.nodes {
            let ino = self
                .ino(path)
                .await
                .map_err(|err| format!("lookup {}: {err}", show(path)))?;
            match node {
                Node::Dir => {
                    let listed = self
                        .mount
                        .fs
                        .listing(ino)
                        .await
                        .map_err(|err| format!("list {}: {err}", show(path)))?;
                    let mut listed: Vec<(String, bool)> = listed
                        .iter()
                        .map(|e| (e.name.clone(), e.attr().kind == FileKind::Directory))
                        .collect();
                    listed.sort();
                    let expected = self.model.children(path);
                    if listed != expected {
                        return Err(format!(
                            "{} lists {listed:?}, the model {expected:?}",
                            show(path)
                        ));
                    }
                }
                Node::File(file) => {
                    if let Some(fh) = self.model.handle_at(path) {
                        // Read as the program writing it does, through its handle. (Through
                        // the path, a new file uploaded while still open shows what the server
                        // holds until its last close: see the ignored test in fs_ops.)
                        let content =
                            self.mount.fs.read(fh, 0, 1 << 20).await.map_err(|err| {
                                format!("read {} by its handle: {err}", show(path))
                            })?;
                        if content[..] != file.content[..] {
                            return Err(format!(
                                "{} reads {content:?} by its handle, the model {:?}",
                                show(path),
                                file.content
                            ));
                        }
                        continue;
                    }
                    let attr = self.mount.fs.getattr(ino).map_err(|e| e.to_string())?;
                    if attr.size != file.content.len() as u64 {
                        return Err(format!(
                            "{} has size {}, the model {}",
                            show(path),
                            attr.size,
                            file.content.len()
                        ));
                    }
                    let content = self
                        .read(ino)
                        .await
                        .map_err(|err| format!("read {}: {err}", show(path)))?;
                    if content != file.content {
                        return Err(format!(
                            "{} reads {content:?}, the model {:?}",
                            show(path),
                            file.content
                        ));
                    }
                }
            }
        }
        self.compare_server()
    }

    /// The server holds the model's folders, and its closed files with their contents.
    fn compare_server(&self) -> Result<(), String> {
        let midas = &self.mount.midas;
        let public = self.mount.public();
        for (path, node) in &self.model.nodes {
            if path.is_empty() {
                continue;
            }
            let found = midas.find(public, &path.join("/"));
            match (node, found) {
                (Node::Dir, Some(Object::Folder(_))) => {}
                (Node::File(file), Some(Object::Item(item))) => {
                    let open = self.model.open_at(path).is_some();
                    if !open && midas.content(item).as_ref() != Some(&file.content) {
                        return Err(format!(
                            "the server holds {:?} for {}, the model {:?}",
                            midas.content(item),
                            show(path),
                            file.content
                        ));
                    }
                }
                (Node::File(file), None) if !file.on_server => {}
                (node, found) => {
                    return Err(format!(
                        "{} is {found:?} on the server, {node:?} in the model",
                        show(path)
                    ))
                }
            }
        }
        // Nothing more: every name on the server is in the model.
        for dir in self.model.dirs() {
            let Some(Object::Folder(folder)) = midas.find(public, &dir.join("/")) else {
                continue;
            };
            let expected: Vec<String> = self
                .model
                .children(&dir)
                .into_iter()
                .map(|(name, _)| name)
                .collect();
            for name in midas.names_in(folder) {
                if !expected.contains(&name) {
                    return Err(format!("the server holds {name:?} in {}", show(&dir)));
                }
            }
        }
        Ok(())
    }

    /// Closes what is still open (as the processes exit), then compares once more.
    async fn finish(&mut self) -> Result<(), String> {
        while !self.model.handles.is_empty() {
            if let Some(outcome) = self.apply(&Step::Close { handle: 0 }).await {
                if outcome.fs != outcome.model {
                    return Err(format!("{}: {}", outcome.what, errno_name(outcome.fs)));
                }
            }
        }
        self.compare().await
    }
}

/// A runtime for one run (proptest's cases are plain functions).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs the steps; the first disagreement, with the steps that led to it.
fn check(steps: &[Step]) -> Result<(), String> {
    runtime().block_on(async {
        let mut run = Run::new();
        let mut done = Vec::new();
        for step in steps {
            let Some(outcome) = run.apply(step).await else {
                continue;
            };
            done.push(outcome.what.clone());
            if outcome.fs != outcome.model {
                return Err(format!(
                    "after {done:#?}: the filesystem gives {}, the model {}",
                    errno_name(outcome.fs),
                    errno_name(outcome.model)
                ));
            }
            run.compare()
                .await
                .map_err(|err| format!("after {done:#?}: {err}"))?;
        }
        run.finish()
            .await
            .map_err(|err| format!("after {done:#?} and closing everything: {err}"))
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("MIDASFS_PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_namespace_and_write_steps_agree_with_a_plain_tree(
        steps in prop::collection::vec(step(), 1..40)
    ) {
        if let Err(disagreement) = check(&steps) {
            return Err(TestCaseError::fail(disagreement));
        }
    }
}

/// The model itself must be able to fail: a filesystem that lost a rename is caught.
#[test]
fn the_comparison_catches_a_listing_that_differs_from_the_model() {
    runtime().block_on(async {
        let mut run = Run::new();
        run.apply(&Step::Mkdir { dir: 0, name: 0 }).await;
        run.compare().await.expect("in step");
        // Behind the filesystem's back: the model and the server now disagree.
        run.mount.midas.add_file(run.mount.public(), "x", b"x");
        assert!(run.compare_server().is_err());
    });
}
