//! Search as a directory: `MOUNT/.search/<name>/` holds a symlink to every item called `<name>`,
//! and `MOUNT/.search/'<field>:<value>'/` to every item whose metadata matches.
//!
//! `.search` is found by name at the top of the mount but never listed, so walks (`find`,
//! `du`, `rsync`, a file manager's recursive copy) do not enter it; inside it, any name is a
//! directory whose entries are search results, each a symlink to where the item is in the
//! mount:
//!
//! - a name without `:` is an item name: Midas's `item.searchbyname` (an exact match);
//! - a name with `:` is a Lucene query for the server's `solr` module
//!   (`midas.solr.search.advanced`), such as `modality:CT` or `modality:CT AND site:Lyon`.
//!   A field without `-` other than the module's own (`name`, `description`, `metadata`,
//!   `md5`, `id`, `key`) is a metadata element, which the module indexes as `text-<field>`
//!   (the type Midas gives values set through its API and `setfattr`), so `modality:CT` is
//!   sent as `text-modality:CT`; `int-slices:42` names its type itself. Only items are asked
//!   for (the module indexes folders too). Where the server does not list `solr`
//!   (`midas.modules.list`, asked once per mount), such a name does not exist (`ENOENT`, and a
//!   line in the log); a query the server cannot parse gives `EINVAL` when listed.
//!
//! The server answers with what the mount's user may read, so results follow the caller's
//! permissions. Everything here is read-only. At most [`MAX_RESULTS`] results are shown; a
//! result whose place cannot be reached through the mount (outside `--root`, or under a folder
//! the user cannot read) is left out.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use futures_util::future::BoxFuture;

use super::error::{FsError, FsResult, Kind};
use super::inode::{Attr, NodeData, NodeKind, COMMUNITIES, ROOT, USERS};
use super::listing::Purpose;
use super::names::{self, Origin};
use super::{Entry, MidasFs, MountRoot};
use crate::midas::types::{Folder, Id, Item};

/// The name of the search directory at the top of the mount.
pub const SEARCH_DIR: &str = ".search";
/// Results shown per search.
pub const MAX_RESULTS: usize = 200;

/// The nodes of the search tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchNode {
    /// `.search` itself: lists nothing, finds any name.
    Top,
    /// `.search/<query>`: the results, numbered for this mount.
    Results { query: String, number: u64 },
    /// One result: a symlink, relative to its directory, to the item in the mount.
    Link { target: String, number: u64 },
}

/// The fields of Midas's solr documents that are not metadata elements.
const SOLR_FIELDS: &[&str] = &["name", "description", "metadata", "md5", "id", "key"];

/// Whether the name of a search directory is a metadata query (for the solr module) rather
/// than an item name.
pub fn is_metadata_query(name: &str) -> bool {
    name.contains(':')
}

/// The Lucene query sent for the metadata query `name`: bare element names get Midas's
/// `text-` prefix, and only items are asked for.
pub fn solr_query(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 24);
    let mut field = String::new();
    let mut chars = name.chars();
    let mut quoted = false;
    let flush = |field: &mut String, out: &mut String, before_colon: bool| {
        if before_colon
            && !field.is_empty()
            && !field.contains(['-', '*'])
            && !SOLR_FIELDS.contains(&field.as_str())
        {
            out.push_str("text-");
        }
        out.push_str(field);
        field.clear();
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                field.push(c);
                if let Some(next) = chars.next() {
                    field.push(next);
                }
            }
            '"' => {
                flush(&mut field, &mut out, false);
                quoted = !quoted;
                out.push(c);
            }
            _ if quoted => out.push(c),
            ':' => {
                flush(&mut field, &mut out, true);
                out.push(c);
            }
            c if c.is_whitespace() || matches!(c, '(' | ')' | '+' | '!') => {
                flush(&mut field, &mut out, false);
                out.push(c);
            }
            '-' if field.is_empty() => out.push(c),
            c => field.push(c),
        }
    }
    flush(&mut field, &mut out, false);
    format!("({out}) AND id:item_*")
}

/// Numbers for search directories and results, the same for the life of the mount.
static NUMBERS: Mutex<Option<HashMap<(String, Id), u64>>> = Mutex::new(None);

/// The number of `(query, item)` (item −1 for the query's directory).
fn number(query: &str, item: Id) -> u64 {
    let mut table = NUMBERS.lock().unwrap_or_else(PoisonError::into_inner);
    let table = table.get_or_insert_with(HashMap::new);
    let next = table.len() as u64 + 1;
    *table.entry((query.to_owned(), item)).or_insert(next)
}

impl MidasFs {
    /// Whether looking `name` up in `parent` needs [`MidasFs::learn_modules`] first: a metadata
    /// query, before the server's modules are known.
    pub(super) fn search_needs_modules(&self, parent: u64, name: &str) -> bool {
        is_metadata_query(name) && self.solr.get().is_none() && self.is_search_top(parent)
    }

    /// Asks the server once whether it lists the `solr` module.
    pub(super) async fn learn_modules(&self) -> FsResult<()> {
        self.solr
            .get_or_try_init(|| async {
                let modules = self.client.modules_list().await?;
                Ok::<_, FsError>(modules.iter().any(|m| m == "solr"))
            })
            .await?;
        Ok(())
    }

    /// Looks up `.search` at the top of the mount, or a query inside it: no network needed
    /// (a metadata query needs the server's modules known: see
    /// [`MidasFs::search_needs_modules`]).
    pub(super) fn lookup_search(&self, parent: u64, name: &str) -> Option<FsResult<Attr>> {
        let kind = if parent == ROOT && name == SEARCH_DIR {
            SearchNode::Top
        } else if self.is_search_top(parent) {
            if is_metadata_query(name) && self.solr.get() != Some(&true) {
                log::info!(
                    ".search/{name}: a metadata query needs the server's solr module, \
                     which it does not list (midas.modules.list)"
                );
                return Some(Err(FsError::new(
                    Kind::NotFound,
                    format!("{name}: the server has no solr module for metadata queries"),
                )));
            }
            SearchNode::Results {
                query: name.to_owned(),
                number: number(name, -1),
            }
        } else {
            return None;
        };
        let entry = self.search_entry(name.to_owned(), kind);
        self.remember(parent, &entry);
        Some(Ok(entry.attr()))
    }

    /// Whether `ino` is `.search` or anything in it.
    pub(super) fn is_search_node(&self, ino: u64) -> bool {
        self.nodes()
            .get(&ino)
            .is_some_and(|n| matches!(n.data.kind, NodeKind::Search(_)))
    }

    /// Refuses to make, remove or rename `name` in `parent` when that is `.search` itself (at the
    /// top) or in it (EROFS).
    pub(super) fn refuse_in_search(&self, parent: u64, name: &str) -> FsResult<()> {
        if (parent == ROOT && name == SEARCH_DIR) || self.is_search_node(parent) {
            return Err(FsError::new(
                Kind::ReadOnly,
                format!("{name}: the search directory is read-only"),
            ));
        }
        Ok(())
    }

    fn is_search_top(&self, ino: u64) -> bool {
        self.nodes()
            .get(&ino)
            .is_some_and(|n| n.data.kind == NodeKind::Search(SearchNode::Top))
    }

    fn search_entry(&self, name: String, node: SearchNode) -> Entry {
        let kind = NodeKind::Search(node);
        Entry {
            ino: kind.ino(self.root_folder()),
            name,
            data: NodeData {
                kind,
                mtime: self.mounted_at,
                writable: false,
                public: true,
            }
            .into(),
        }
    }

    /// The listing of a search directory: nothing for `.search`, the results for a query.
    /// (Boxed: finding where a result is lists directories, and this is one of the listings.)
    pub(super) fn search_listing<'a>(
        &'a self,
        node: &'a SearchNode,
    ) -> BoxFuture<'a, FsResult<Vec<Entry>>> {
        Box::pin(self.search_results(node))
    }

    async fn search_results(&self, node: &SearchNode) -> FsResult<Vec<Entry>> {
        let query = match node {
            SearchNode::Top => return Ok(Vec::new()),
            SearchNode::Results { query, .. } => query,
            SearchNode::Link { .. } => {
                return Err(FsError::new(Kind::NotDir, "not a directory"));
            }
        };
        let mut items = if is_metadata_query(query) {
            let limit = u32::try_from(MAX_RESULTS).unwrap_or(u32::MAX);
            self.client
                .solr_search_advanced(&solr_query(query), limit)
                .await
                .map_err(|err| match err {
                    crate::midas::Error::Api { code: -1, .. } => FsError::new(
                        Kind::Invalid,
                        format!(".search/{query}: the server cannot parse this query ({err})"),
                    ),
                    err => err.into(),
                })?
        } else {
            self.client.item_search_by_name(query).await?
        };
        items.truncate(MAX_RESULTS);
        let mut found: Vec<(Item, String)> = Vec::new();
        for item in items {
            match self.mount_path_of(&item).await {
                Some(path) => found.push((item, path)),
                None => log::debug!(
                    "search {query:?}: item {} is not reachable through the mount",
                    item.item_id
                ),
            }
        }
        let mut named: Vec<(String, Origin)> = found
            .iter()
            .map(|(item, _)| (names::to_display(&item.name), Origin::Item(item.item_id)))
            .collect();
        names::disambiguate(&mut named);
        Ok(found
            .into_iter()
            .zip(named)
            .map(|((item, path), (name, _))| {
                let link = SearchNode::Link {
                    // From `.search/<query>/` back to the top of the mount.
                    target: format!("../../{path}"),
                    number: number(query, item.item_id),
                };
                self.search_entry(name, link)
            })
            .collect())
    }

    /// Where `item` is in the mount, relative to its top, found through the listings the mount
    /// shows (so names are the ones `ls` shows, duplicates' suffixes included).
    async fn mount_path_of(&self, item: &Item) -> Option<String> {
        let chain = self.client.folders_from_root(&item.uuid).await.ok()?;
        let (mut dir, mut path, rest) = match self.config.root {
            MountRoot::Folder { id, .. } => {
                let at = chain.iter().position(|f| f.folder_id == id)?;
                (self.entry_at(ROOT)?, String::new(), &chain[at + 1..])
            }
            MountRoot::Everything => self.top_of(&chain).await?,
        };
        for folder in rest {
            let entries = self.entries_of(&dir).await?;
            let next = entries.iter().find(
                |e| matches!(e.data.kind, NodeKind::Folder { id, .. } if id == folder.folder_id),
            )?;
            path.push_str(&next.name);
            path.push('/');
            dir = next.clone();
        }
        let entries = self.entries_of(&dir).await?;
        let found = entries
            .iter()
            .find(|e| e.data.kind.item().is_some_and(|i| i.id == item.item_id))?;
        path.push_str(&found.name);
        Some(path)
    }

    /// The community or user directory the chain of folders starts in, its path, and the
    /// folders below it. A user's top folder is hidden from others, so the first folder shown
    /// may be one of its children.
    async fn top_of<'c>(&self, chain: &'c [Folder]) -> Option<(Entry, String, &'c [Folder])> {
        let first = chain.first()?;
        for (top, prefix) in [(USERS, "users/"), (COMMUNITIES, "communities/")] {
            let entries = self.entries_of(&self.entry_at(top)?).await?;
            let is_folder = |e: &&Entry, id: Id| matches!(e.data.kind, NodeKind::Folder { id: f, .. } if f == id);
            if let Some(entry) = entries.iter().find(|e| is_folder(e, first.folder_id)) {
                return Some((
                    entry.clone(),
                    format!("{prefix}{}/", entry.name),
                    &chain[1..],
                ));
            }
            if let Some(entry) = entries.iter().find(|e| is_folder(e, first.parent_id)) {
                return Some((entry.clone(), format!("{prefix}{}/", entry.name), chain));
            }
        }
        None
    }

    /// The entry of a directory the mount always has (the top, `communities`, `users`).
    fn entry_at(&self, ino: u64) -> Option<Entry> {
        let nodes = self.nodes();
        let node = nodes.get(&ino);
        let data = match node {
            Some(node) => node.data.clone(),
            None => match ino {
                COMMUNITIES | USERS => {
                    let kind = if ino == USERS {
                        NodeKind::Users
                    } else {
                        NodeKind::Communities
                    };
                    drop(nodes);
                    return Some(self.virtual_dir(kind, ""));
                }
                _ => return None,
            },
        };
        Some(Entry {
            name: String::new(),
            ino,
            data,
        })
    }

    /// A directory's entries, from the cache or the server, without the kernel knowing the
    /// directory (so nothing is remembered of it).
    async fn entries_of(&self, dir: &Entry) -> Option<std::sync::Arc<Vec<Entry>>> {
        if let Some(entries) = self.cached_listing(dir.ino) {
            return Some(entries);
        }
        let entries = self
            .fetch_listing(dir.ino, &dir.data.kind, dir.data.writable, Purpose::Asked)
            .await
            .ok()?;
        Some(std::sync::Arc::new(entries))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::fs::fake_tests::{mount, server};

    /// The symlink targets of `.search/<name>`, sorted, through a mount of the Public folder.
    async fn results(fs: &Arc<MidasFs>, name: &str) -> FsResult<Vec<String>> {
        let top = fs.lookup(ROOT, SEARCH_DIR).await.expect(".search").ino;
        let query = fs.lookup(top, name).await?.ino;
        let mut targets: Vec<String> = fs
            .listing(query)
            .await?
            .iter()
            .map(|e| e.data.kind.link_target().expect("a symlink").to_owned())
            .collect();
        targets.sort();
        Ok(targets)
    }

    #[tokio::test]
    async fn a_metadata_query_links_the_items_the_solr_module_finds() {
        let midas = server();
        let public = midas.public_folder();
        let ct = midas.add_file(public, "a.nii", b"a");
        midas.add_file(public, "b.nii", b"b");
        midas.solr_answer("(text-modality:CT) AND id:item_*", &[ct]);
        let (fs, _spool) = mount(&midas);
        assert_eq!(
            results(&fs, "modality:CT").await.expect("results"),
            ["../../a.nii"]
        );
        // Plain names are still item names.
        assert_eq!(
            results(&fs, "b.nii").await.expect("results"),
            ["../../b.nii"]
        );
        // A query the server cannot parse is EINVAL when listed.
        let err = results(&fs, "modality:(CT")
            .await
            .expect_err("a syntax error");
        assert_eq!(err.errno(), libc::EINVAL);
    }

    #[tokio::test]
    async fn without_the_solr_module_a_metadata_query_does_not_exist() {
        let midas = server();
        midas.add_file(midas.public_folder(), "a.nii", b"a");
        let (fs, _spool) = mount(&midas);
        for _ in 0..2 {
            let err = results(&fs, "modality:CT").await.expect_err("no solr");
            assert_eq!(err.errno(), libc::ENOENT);
        }
        assert_eq!(midas.count("midas.modules.list"), 1, "asked once per mount");
        assert_eq!(midas.count("midas.solr.search.advanced"), 0);
        assert_eq!(
            results(&fs, "a.nii").await.expect("results"),
            ["../../a.nii"]
        );
    }

    #[test]
    fn metadata_queries_name_elements_as_midas_indexes_them_and_ask_for_items_only() {
        for (name, sent) in [
            ("modality:CT", "(text-modality:CT) AND id:item_*"),
            (
                "modality:CT AND contributor.author:\"Jane Doe\"",
                "(text-modality:CT AND text-contributor.author:\"Jane Doe\") AND id:item_*",
            ),
            (
                "-modality:MR +(site:Lyon OR name:scan*)",
                "(-text-modality:MR +(text-site:Lyon OR name:scan*)) AND id:item_*",
            ),
            ("int-slices:42", "(int-slices:42) AND id:item_*"),
            ("note:\"a:b\"", "(text-note:\"a:b\") AND id:item_*"),
            ("*:*", "(*:*) AND id:item_*"),
        ] {
            assert_eq!(solr_query(name), sent, "{name}");
        }
        assert!(is_metadata_query("modality:CT") && !is_metadata_query("scan.nii"));
    }
}
