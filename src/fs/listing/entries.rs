//! A directory's entries from what Midas answers: the virtual top (`communities`, `users`,
//! `home`), communities, users, a folder's folders and items (an item shown as a file when it
//! holds one bitstream of its name), an item directory's bitstreams; names made unique.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};

use super::in_flight::{Fetch, Joinable, Published};
use super::{walk, warm, Purpose, Wanted};
use crate::fs::error::Kind;
use crate::fs::inode::{BitstreamInfo, Checksum, ItemInfo, Mime, NodeData, NodeKind, HOME};
use crate::fs::names::{self, Origin};
use crate::fs::{time, Entry, FsError, FsResult, MidasFs};
use crate::midas::types::{Id, Item, User, PRIVACY_PUBLIC};

/// How many `item.get` calls one listing keeps in flight.
pub(in crate::fs) const ITEM_GET_CONCURRENCY: usize = 32;
/// How long an item's details are reused by new listings that show it unchanged; after that
/// it is asked for again (see [`inode::ItemStamp`]).
pub(in crate::fs) const ITEM_DETAILS_MAX_AGE: Duration = Duration::from_secs(600);
/// How long the answer of `midas.user.list` is used, however short the TTL: accounts come and go
/// rarely, every path through `home/` needs the list, and a user who is not in it yet is still
/// found by name (see [`MidasFs::lookup_unlisted_user`]).
const USER_LIST_TTL: Duration = Duration::from_secs(600);
/// `midas.user.list` needs a limit; the mount lists this many users at most.
pub(in crate::fs) const USER_LIST_LIMIT: u32 = 10_000;

impl MidasFs {
    pub(in crate::fs) async fn fetch_listing(
        &self,
        ino: u64,
        kind: &NodeKind,
        writable: bool,
        purpose: Purpose,
    ) -> FsResult<Vec<Entry>> {
        self.fetch_listing_with(ino, kind, writable, purpose, None)
            .await
    }

    /// [`MidasFs::fetch_listing`], answering `wanted` on the way (see [`super::one_name`]).
    pub(in crate::fs) async fn fetch_listing_with(
        &self,
        ino: u64,
        kind: &NodeKind,
        writable: bool,
        purpose: Purpose,
        wanted: Option<Wanted>,
    ) -> FsResult<Vec<Entry>> {
        match kind {
            NodeKind::Root => Ok(self.root_entries()),
            NodeKind::Communities => self.community_entries().await,
            NodeKind::Users => self.user_entries().await,
            NodeKind::Folder { id, .. } => {
                self.folder_entries(ino, *id, writable, purpose, wanted)
                    .await
            }
            NodeKind::ItemDir { item } => self.item_dir_entries(item.id, writable).await,
            NodeKind::Search(node) => self.search_listing(node).await,
            NodeKind::Home { .. }
            | NodeKind::ItemFile { .. }
            | NodeKind::SavedFile { .. }
            | NodeKind::Bitstream { .. }
            | NodeKind::NewFile { .. } => Err(FsError::new(Kind::NotDir, "not a directory")),
        }
    }

    pub(in crate::fs) fn virtual_dir(&self, kind: NodeKind, name: &str) -> Entry {
        Entry {
            name: name.to_owned(),
            ino: kind.ino(None),
            data: NodeData {
                kind,
                mtime: self.mounted_at,
                writable: false,
                public: true,
            }
            .into(),
        }
    }

    pub(in crate::fs) fn root_entries(&self) -> Vec<Entry> {
        let mut entries = vec![
            self.virtual_dir(NodeKind::Communities, "communities"),
            self.virtual_dir(NodeKind::Users, "users"),
        ];
        if let Some(me) = &self.me {
            let target = format!("users/{}", user_dir_name(me));
            entries.push(self.virtual_dir(NodeKind::Home { target }, "home"));
            debug_assert_eq!(entries[2].ino, HOME);
        }
        entries
    }

    pub(in crate::fs) async fn community_entries(&self) -> FsResult<Vec<Entry>> {
        let communities = self.client.community_list().await?;
        let writable = self.is_admin();
        let mut named: Vec<(String, Origin)> = communities
            .iter()
            .map(|c| (names::to_display(&c.name), Origin::Folder(c.folder_id)))
            .collect();
        names::disambiguate(&mut named);
        Ok(communities
            .iter()
            .zip(named)
            .map(|(c, (name, _))| {
                self.entry(
                    name,
                    NodeKind::Folder {
                        id: c.folder_id,
                        uuid: c.uuid.clone(),
                    },
                    &c.creation,
                    writable,
                    c.privacy == PRIVACY_PUBLIC,
                )
            })
            .collect())
    }

    pub(in crate::fs) async fn user_entries(&self) -> FsResult<Vec<Entry>> {
        let mut users = self.users().await?;
        if let Some(me) = &self.me {
            if !users.iter().any(|u| u.user_id == me.user_id) {
                users.push(me.clone());
            }
        }
        let mut named: Vec<(String, Origin)> = users
            .iter()
            .map(|u| (user_dir_name(u), Origin::Folder(u.folder_id)))
            .collect();
        names::disambiguate(&mut named);
        Ok(users
            .iter()
            .zip(named)
            .map(|(u, (name, _))| self.user_entry(u, name))
            .collect())
    }

    /// `midas.user.list`, asked again only after [`USER_LIST_TTL`].
    async fn users(&self) -> FsResult<Vec<User>> {
        let kept = match &*self.user_list.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((at, users)) if at.elapsed() < USER_LIST_TTL => Some(users.clone()),
            _ => None,
        };
        if let Some(users) = kept {
            return Ok(users);
        }
        let users = self.client.user_list(USER_LIST_LIMIT).await?;
        *self.user_list.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), users.clone()));
        Ok(users)
    }

    pub(in crate::fs) fn user_entry(&self, user: &User, name: String) -> Entry {
        let mine = self
            .me
            .as_ref()
            .is_some_and(|me| me.user_id == user.user_id);
        let writable = !self.config.read_only && (mine || self.is_admin());
        self.entry(
            name,
            NodeKind::Folder {
                id: user.folder_id,
                uuid: user.uuid.clone(),
            },
            "",
            writable,
            // A user's top folder is private, but anyone may list it (seeing only what they
            // may read) and must pass through it to reach its Public folder.
            true,
        )
    }

    pub(in crate::fs) fn is_admin(&self) -> bool {
        !self.config.read_only && self.me.as_ref().is_some_and(|me| me.admin)
    }

    pub(in crate::fs) fn entry(
        &self,
        name: String,
        kind: NodeKind,
        date: &str,
        writable: bool,
        public: bool,
    ) -> Entry {
        Entry {
            ino: kind.ino(self.root_folder()),
            name,
            data: NodeData {
                kind,
                mtime: time::parse_midas_date(date).unwrap_or(self.mounted_at),
                writable,
                public,
            }
            .into(),
        }
    }

    pub(in crate::fs) async fn folder_entries(
        &self,
        dir: u64,
        id: Id,
        writable: bool,
        purpose: Purpose,
        wanted: Option<Wanted>,
    ) -> FsResult<Vec<Entry>> {
        // Lookups that arrive while this runs join it (see [`super::in_flight`]).
        let (fetch, joinable) = Fetch::new();
        self.listings.share_fetch(dir, joinable.clone());
        let _unshare = Unshare {
            fs: self,
            dir,
            joinable,
        };
        let children = match purpose {
            Purpose::Asked => match self.client.folder_children(id).await {
                Ok(children) => children,
                Err(err) => {
                    let err = FsError::from(err);
                    if let Some(wanted) = wanted {
                        let _ = wanted.answer.send(Err(err.clone()));
                    }
                    return Err(err);
                }
            },
            Purpose::Ahead | Purpose::Warm => {
                self.client
                    .folder_children_within(id, walk::AHEAD_ANSWER_LIMIT)
                    .await?
            }
        };
        // A listing gives no bitstreams. Items that the last listing showed with the same stamp
        // keep their details; the others are asked for all at once (bounded), not one by one.
        {
            let listed: HashMap<Id, &Item> =
                children.items.iter().map(|i| (i.item_id, i)).collect();
            let previous = self.listings.last(dir).unwrap_or_default();
            for (item, entry) in previous
                .iter()
                .filter_map(|entry| Some((entry.data.kind.item()?, entry)))
            {
                if listed
                    .get(&item.id)
                    .is_some_and(|listed| item.stamp.still_describes(listed, ITEM_DETAILS_MAX_AGE))
                {
                    fetch.items.know(item.id, entry.clone());
                }
            }
        }
        let published = Arc::new(Published { children, writable });
        fetch.publish(Arc::clone(&published));
        let children = &published.children;
        let (count, bound) = match purpose {
            Purpose::Asked => (0, 0),
            Purpose::Ahead => (
                children.folders.len() + children.items.len(),
                walk::AHEAD_MAX_ENTRIES,
            ),
            Purpose::Warm => (children.items.len(), warm::WARM_MAX_ITEMS),
        };
        if count > bound {
            return Err(FsError::new(
                Kind::TooLarge,
                format!("folder {id} has {count} entries: too many to list ahead"),
            ));
        }
        // A lookup waiting for one name gets it first (see [`super::one_name`]).
        if let Some(wanted) = wanted {
            self.answer_wanted(dir, children, &fetch.items, writable, wanted)
                .await?;
        }
        let changed: Vec<Id> = children
            .items
            .iter()
            .map(|listed| listed.item_id)
            .filter(|id| !fetch.items.is_known(*id))
            .collect();
        // Each answer becomes its (smaller) entry as it arrives: a folder of 100,000 items does
        // not hold 100,000 decoded answers at once.
        let answers: Vec<FsResult<()>> = stream::iter(changed)
            .map(|id| {
                let items = &fetch.items;
                async move { items.entry(self, id, writable).await.map(drop) }
            })
            .buffer_unordered(ITEM_GET_CONCURRENCY)
            .collect()
            .await;
        answers.into_iter().collect::<FsResult<()>>()?;
        let mut details = fetch.items.take_known();
        let mut items: Vec<&Item> = children
            .items
            .iter()
            .filter(|listed| details.contains_key(&listed.item_id))
            .collect();
        items.sort_by(|a, b| (&a.name, a.item_id).cmp(&(&b.name, b.item_id)));
        let mut named: Vec<(String, Origin)> = children
            .folders
            .iter()
            .map(|f| (names::to_display(&f.name), Origin::Folder(f.folder_id)))
            .chain(
                items
                    .iter()
                    .map(|i| (names::to_display(&i.name), Origin::Item(i.item_id))),
            )
            .collect();
        names::disambiguate(&mut named);
        let mut named = named.into_iter().map(|(name, _)| name);
        let mut entries = Vec::with_capacity(named.len());
        for folder in &children.folders {
            let name = named.next().unwrap_or_default();
            let kind = NodeKind::Folder {
                id: folder.folder_id,
                uuid: folder.uuid.clone(),
            };
            let public = folder.privacy_status == PRIVACY_PUBLIC;
            entries.push(self.entry(name, kind, &folder.date_update, writable, public));
        }
        for item in items {
            if let Some(mut entry) = details.remove(&item.item_id) {
                entry.name = named.next().unwrap_or_default();
                // A change of policies leaves the item's stamp as it was: the listing tells.
                entry.data.public = item.privacy_status == PRIVACY_PUBLIC;
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// An item is a file when its head revision holds exactly one bitstream of its own name.
    pub(in crate::fs) fn item_entry(&self, item: &Item, name: String, writable: bool) -> Entry {
        let head = item.head();
        let info = ItemInfo::new(item, head.map_or(0, |r| r.revision));
        let kind = match head.map(|r| r.bitstreams.as_slice()) {
            Some([only]) if only.name == item.name && !self.config.items_as_dirs => {
                NodeKind::ItemFile {
                    item: info,
                    bitstream: bitstream_info(only),
                }
            }
            _ => NodeKind::ItemDir { item: info },
        };
        let public = item.privacy_status == PRIVACY_PUBLIC;
        self.entry(name, kind, &item.date_update, writable, public)
    }

    pub(in crate::fs) async fn item_dir_entries(
        &self,
        item_id: Id,
        writable: bool,
    ) -> FsResult<Vec<Entry>> {
        let item = self.client.item_get(item_id).await?;
        let Some(head) = item.head() else {
            return Ok(Vec::new());
        };
        let info = ItemInfo::new(&item, head.revision);
        let public = item.privacy_status == PRIVACY_PUBLIC;
        let mut named: Vec<(String, Origin)> = head
            .bitstreams
            .iter()
            .map(|b| {
                (
                    names::to_display(&b.name),
                    Origin::Bitstream(b.bitstream_id),
                )
            })
            .collect();
        names::disambiguate(&mut named);
        Ok(head
            .bitstreams
            .iter()
            .zip(named)
            .map(|(b, (name, _))| {
                let kind = NodeKind::Bitstream {
                    item: info.clone(),
                    bitstream: bitstream_info(b),
                };
                self.entry(name, kind, &b.date, writable, public)
            })
            .collect())
    }
}

/// `users/<First>_<Last>`, the pydas path scheme.
pub(in crate::fs) fn user_dir_name(user: &User) -> String {
    names::to_display(&format!("{}_{}", user.firstname, user.lastname))
}

pub(in crate::fs) fn bitstream_info(b: &crate::midas::types::Bitstream) -> BitstreamInfo {
    BitstreamInfo {
        id: b.bitstream_id,
        size: u64::try_from(b.sizebytes).unwrap_or(0),
        md5: Checksum::new(&b.checksum),
        mimetype: Mime::new(&b.mimetype),
    }
}

/// Takes a folder fetch out of those lookups may join when it ends, whichever way.
struct Unshare<'a> {
    fs: &'a MidasFs,
    dir: u64,
    joinable: Joinable,
}

impl Drop for Unshare<'_> {
    fn drop(&mut self) {
        self.fs.listings.unshare_fetch(self.dir, &self.joinable);
    }
}
