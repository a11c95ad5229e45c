//! A folder's listing while it is fetched, shared with the lookups that arrive meanwhile: the
//! folder's `folder.children` answer once it came, and each item's `item.get` answer (asked
//! once, by whoever needs it first: the listing or a lookup). A lookup of one name in a folder
//! whose listing is under way (started by another lookup, a readdir, a walk ahead or the mount's
//! warm-up) is answered as soon as its own entry is known, not when the whole listing is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::watch;

use crate::fs::{Entry, FsError, FsResult, MidasFs};
use crate::midas::codes;
use crate::midas::types::{Children, Id, Item};

/// An `item.get` under way, awaited by everyone who needs its answer.
type ItemAnswer = Shared<BoxFuture<'static, Result<Item, FsError>>>;

enum Slot {
    Asked(ItemAnswer),
    Known(Entry),
    /// Deleted or hidden since the folder's answer.
    Gone,
}

/// What the fetch knows once the folder answered.
pub(in crate::fs) struct Published {
    pub children: Children,
    /// Whether the folder's entries are writable.
    pub writable: bool,
}

/// The items of a folder being listed: their entries as they become known.
#[derive(Default)]
pub(in crate::fs) struct Items {
    slots: Mutex<HashMap<Id, Slot>>,
}

impl Items {
    fn slots(&self) -> MutexGuard<'_, HashMap<Id, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An entry known without asking (the last listing's, for an item that did not change).
    pub fn know(&self, id: Id, entry: Entry) {
        self.slots().insert(id, Slot::Known(entry));
    }

    pub fn is_known(&self, id: Id) -> bool {
        matches!(self.slots().get(&id), Some(Slot::Known(_)))
    }

    /// Item `id`'s entry, asking `item.get` unless it is known or asked already; None when the
    /// item is gone since the folder's answer.
    pub async fn entry(&self, fs: &MidasFs, id: Id, writable: bool) -> FsResult<Option<Entry>> {
        let answer = {
            let mut slots = self.slots();
            match slots.get(&id) {
                Some(Slot::Known(entry)) => return Ok(Some(entry.clone())),
                Some(Slot::Gone) => return Ok(None),
                Some(Slot::Asked(answer)) => answer.clone(),
                None => {
                    let client = fs.client.clone();
                    let answer = async move { client.item_get(id).await.map_err(FsError::from) }
                        .boxed()
                        .shared();
                    slots.insert(id, Slot::Asked(answer.clone()));
                    answer
                }
            }
        };
        let (slot, found) = match answer.await {
            Ok(item) => {
                let entry = fs.item_entry(&item, String::new(), writable);
                (Slot::Known(entry.clone()), Ok(Some(entry)))
            }
            Err(err) if is_gone(&err) => (Slot::Gone, Ok(None)),
            Err(err) => return Err(err),
        };
        if let Some(asked @ Slot::Asked(_)) = self.slots().get_mut(&id) {
            *asked = slot;
        }
        found
    }

    /// The entries known, taken out (the listing is made of them).
    pub fn take_known(&self) -> HashMap<Id, Entry> {
        std::mem::take(&mut *self.slots())
            .into_iter()
            .filter_map(|(id, slot)| match slot {
                Slot::Known(entry) => Some((id, entry)),
                Slot::Asked(_) | Slot::Gone => None,
            })
            .collect()
    }
}

/// Midas answers −151 for an item deleted or hidden since the folder was listed.
fn is_gone(err: &FsError) -> bool {
    err.midas().and_then(|err| err.api_code()) == Some(codes::INVALID_POLICY)
}

/// How a lookup joins a fetch under way.
#[derive(Clone)]
pub(in crate::fs) struct Joinable {
    published: watch::Receiver<Option<Arc<Published>>>,
    pub items: Arc<Items>,
}

impl Joinable {
    /// Whether both are the same fetch's.
    pub fn same(&self, other: &Joinable) -> bool {
        Arc::ptr_eq(&self.items, &other.items)
    }

    /// The folder's answer if it came already (without waiting).
    pub fn published_now(&self) -> Option<Arc<Published>> {
        self.published.borrow().clone()
    }

    /// The folder's answer, once it came; None when the fetch ended without one.
    pub async fn published(&mut self) -> Option<Arc<Published>> {
        let published = self.published.wait_for(Option::is_some).await.ok()?;
        published.clone()
    }
}

/// The fetcher's side: publishes the folder's answer to those who joined.
pub(in crate::fs) struct Fetch {
    publish: watch::Sender<Option<Arc<Published>>>,
    pub items: Arc<Items>,
}

impl Fetch {
    pub fn new() -> (Fetch, Joinable) {
        let (publish, published) = watch::channel(None);
        let items = Arc::new(Items::default());
        let joinable = Joinable {
            published,
            items: Arc::clone(&items),
        };
        (Fetch { publish, items }, joinable)
    }

    pub fn publish(&self, published: Arc<Published>) {
        self.publish.send_replace(Some(published));
    }
}
