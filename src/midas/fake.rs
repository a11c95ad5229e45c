//! An in-memory Midas server for tests without a network: [`FakeMidas`] answers the calls the
//! filesystem makes ([`MidasApi`]) as the real Midas 3.4 does, and misbehaves on demand.
//!
//! What it keeps: folders, items with revisions of bitstreams and metadata, uploads by token
//! (offsets, parts, checksum dedup), privacy (public or private objects, objects hidden from the
//! caller, folders the caller may not write). What it answers like Midas: −151 for what is
//! missing or forbidden, ` (1)` on a name clash of `item.create`/`item.move`, −150 on one of
//! `folder.create`, code 0 `This name is already used` on one of `folder.move`, no clash check on
//! renames, `Failed to upload file - <held>/<length>` for a short upload, an upload appended to
//! what the server holds whatever its offset.
//!
//! Faults ([`Fault`]) are set per wire method name (`midas.item.get`, `download`, a prefix such as
//! `midas.upload.*`, or `*`) for a number of calls or for ever. The server can also change
//! behind the filesystem's back through the methods that take no fault and count no call
//! (`add_*`, `remove_*`, `rename_*`, `set_public`, `hide`, `deny_writes`).
//!
//! Not part of midasfs's interface: public only so that tests can use it.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use md5::{Digest, Md5};

use super::api::{Call, MidasApi};
use super::client::{ByteStream, UploadPart, UploadRevision};
use super::codes;
use super::error::Error;
use super::types::{
    Bitstream, Changed, Children, Community, Folder, Id, Item, MetadataValue, Revision, User,
    PRIVACY_PUBLIC,
};
use super::Result;

/// `privacy_status` of a private object.
const PRIVACY_PRIVATE: i64 = 2;
/// What each entry of a `folder.children` answer counts towards a `within` limit, in bytes.
const ANSWER_BYTES_PER_ENTRY: usize = 350;
/// The size of the chunks a download yields.
const DOWNLOAD_CHUNK: usize = 64 * 1024;

/// A way a call goes wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The answer comes this much later (as it would have been: the call takes effect).
    Delay(Duration),
    /// The call takes effect and is answered at once, and the answer arrives this much later:
    /// by then it may be out of date (a listing that crossed an upload).
    Late(Duration),
    /// No answer: the call fails after the stall timeout, as the client's would, and does
    /// nothing. A download's body sends nothing and the read of it times out.
    Stall,
    /// The connection breaks: a download's body ends after `after` bytes; an upload's server
    /// keeps `after` bytes of the body; any other call takes effect and its answer is lost.
    CutBody { after: u64 },
    /// Midas refuses (`stat: fail`) with this code and message; the call does nothing.
    Error { code: i64, message: String },
    /// An HTTP error status (a PHP fatal error, a proxy whose server is down); nothing done.
    Http(u16),
    /// The login token expired: the client logs in again and repeats the call, which succeeds
    /// (counted in [`FakeMidas::logins`]).
    ExpiredToken,
    /// The login token expired and the server refuses a new login.
    LoginRefused,
}

impl Fault {
    /// Midas's answer for a missing or forbidden object.
    pub fn missing() -> Fault {
        Fault::Error {
            code: codes::INVALID_POLICY,
            message: "This item doesn't exist or you don't have the permissions.".into(),
        }
    }
}

struct Rule {
    /// A wire method name, a prefix ending in `*`, or `*`.
    method: String,
    /// Calls left to fail; None for every call.
    times: Option<u32>,
    fault: Fault,
}

impl Rule {
    fn matches(&self, method: &str) -> bool {
        match self.method.strip_suffix('*') {
            Some(prefix) => method.starts_with(prefix),
            None => self.method == method,
        }
    }
}

#[derive(Debug, Clone)]
struct FolderRec {
    parent: Id,
    name: String,
    uuid: String,
    public: bool,
    date: String,
}

#[derive(Debug, Clone)]
struct ItemRec {
    folder: Id,
    name: String,
    uuid: String,
    public: bool,
    date: String,
    revisions: Vec<RevisionRec>,
}

#[derive(Debug, Clone)]
struct RevisionRec {
    id: Id,
    number: i64,
    date: String,
    bitstreams: Vec<BitstreamRec>,
    metadata: Vec<MetadataValue>,
}

#[derive(Debug, Clone)]
struct BitstreamRec {
    id: Id,
    name: String,
    content: Arc<Vec<u8>>,
    md5: String,
    date: String,
}

struct UploadRec {
    item_id: Id,
    held: Vec<u8>,
}

#[derive(Default)]
struct State {
    next_id: Id,
    clock: u64,
    folders: BTreeMap<Id, FolderRec>,
    items: BTreeMap<Id, ItemRec>,
    uploads: BTreeMap<String, UploadRec>,
    users: Vec<User>,
    communities: Vec<Community>,
    /// Objects the caller cannot see (another user's private ones).
    hidden: HashSet<Id>,
    /// The `solr` module, when the server lists it: its answers, by query.
    solr: Option<std::collections::HashMap<String, Vec<Id>>>,
    /// Folders (and the items in them) the caller cannot change.
    read_only: HashSet<Id>,
    rules: Vec<Rule>,
    calls: Vec<String>,
    logins: u64,
    /// Contents (by MD5) whose stored file is gone: every bitstream of them answers a download
    /// with HTTP 500, as Midas's do.
    lost: HashSet<String>,
    /// Contents whose next link by checksum races a delete of their last other copy (see
    /// [`FakeMidas::race_next_link`]).
    racing: HashSet<String>,
}

/// An in-memory Midas server (see the module's documentation).
pub struct FakeMidas {
    state: Mutex<State>,
    base_url: String,
    stall: Duration,
    me: Option<User>,
}

/// What a server path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Folder(Id),
    Item(Id),
}

impl FakeMidas {
    /// A server with one user, `Test User` (not an administrator), whose folder holds `Public`
    /// and `Private`, as Midas makes them; calls fail after a stall of `stall`.
    pub fn new(stall: Duration) -> FakeMidas {
        let mut state = State {
            next_id: 1,
            ..State::default()
        };
        let home = state.new_folder(-1, "user_Test_User", false);
        state.new_folder(home, "Public", true);
        state.new_folder(home, "Private", false);
        let me = User {
            user_id: 1,
            firstname: "Test".into(),
            lastname: "User".into(),
            email: "test@example.org".into(),
            folder_id: home,
            admin: false,
            uuid: "user-uuid-1".into(),
        };
        state.users.push(me.clone());
        FakeMidas {
            state: Mutex::new(state),
            base_url: "http://midas.invalid".into(),
            stall,
            me: Some(me),
        }
    }

    /// The logged-in user, for [`crate::fs::MidasFs::new`].
    pub fn me(&self) -> Option<User> {
        self.me.clone()
    }

    /// The user's top folder (holding `Public` and `Private`).
    pub fn home(&self) -> Id {
        self.me.as_ref().map_or(-1, |me| me.folder_id)
    }

    /// The user's `Public` folder.
    pub fn public_folder(&self) -> Id {
        self.child_folder(self.home(), "Public").expect("Public")
    }

    /// The user's `Private` folder.
    pub fn private_folder(&self) -> Id {
        self.child_folder(self.home(), "Private").expect("Private")
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- faults ----

    /// The next call of `method` fails with `fault`.
    pub fn fail(&self, method: &str, fault: Fault) {
        self.fail_times(method, 1, fault);
    }

    /// The next `times` calls of `method` fail with `fault`.
    pub fn fail_times(&self, method: &str, times: u32, fault: Fault) {
        self.state().rules.push(Rule {
            method: method.into(),
            times: Some(times),
            fault,
        });
    }

    /// Every call of `method` fails with `fault`, until [`FakeMidas::heal`].
    pub fn fail_always(&self, method: &str, fault: Fault) {
        self.state().rules.push(Rule {
            method: method.into(),
            times: None,
            fault,
        });
    }

    /// No more faults.
    pub fn heal(&self) {
        self.state().rules.clear();
    }

    /// The wire methods called so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    /// How many calls of `method` (or of a prefix ending in `*`) were made.
    pub fn count(&self, method: &str) -> usize {
        let rule = Rule {
            method: method.into(),
            times: None,
            fault: Fault::Http(500),
        };
        self.state()
            .calls
            .iter()
            .filter(|c| rule.matches(c))
            .count()
    }

    /// Logins made again after an expired token.
    pub fn logins(&self) -> u64 {
        self.state().logins
    }

    // ---- the server changed behind the filesystem's back ----

    pub fn add_folder(&self, parent: Id, name: &str) -> Id {
        let mut state = self.state();
        let public = state.folders.get(&parent).is_some_and(|f| f.public);
        state.new_folder(parent, name, public)
    }

    /// An item named `name` holding one revision with one bitstream `name` of `content`: a file.
    pub fn add_file(&self, folder: Id, name: &str, content: &[u8]) -> Id {
        let mut state = self.state();
        let item = state.new_item(folder, name);
        state.add_bitstream(item, name, content.to_vec(), UploadRevision::New);
        item
    }

    /// An item without revisions.
    pub fn add_item(&self, folder: Id, name: &str) -> Id {
        self.state().new_item(folder, name)
    }

    /// A bitstream added to the item's head revision (made if there is none).
    pub fn add_bitstream(&self, item: Id, name: &str, content: &[u8]) -> Id {
        self.state()
            .add_bitstream(item, name, content.to_vec(), UploadRevision::Head)
    }

    /// A new revision of the item holding only this bitstream.
    pub fn add_revision(&self, item: Id, name: &str, content: &[u8]) -> Id {
        self.state()
            .add_bitstream(item, name, content.to_vec(), UploadRevision::New)
    }

    pub fn add_community(&self, name: &str, public: bool) -> (Id, Id) {
        let mut state = self.state();
        let folder = state.new_folder(-1, name, public);
        let id = state.id();
        let date = state.tick();
        state.communities.push(Community {
            community_id: id,
            name: name.into(),
            description: String::new(),
            folder_id: folder,
            privacy: if public { 0 } else { 1 },
            creation: date,
            uuid: format!("community-uuid-{id}"),
        });
        (id, folder)
    }

    pub fn add_user(&self, first: &str, last: &str) -> User {
        let mut state = self.state();
        let folder = state.new_folder(-1, &format!("user_{first}_{last}"), false);
        state.new_folder(folder, "Public", true);
        state.new_folder(folder, "Private", false);
        let id = state.id();
        let user = User {
            user_id: id,
            firstname: first.into(),
            lastname: last.into(),
            email: format!("{first}@example.org"),
            folder_id: folder,
            admin: false,
            uuid: format!("user-uuid-{id}"),
        };
        state.users.push(user.clone());
        user
    }

    pub fn remove_item(&self, id: Id) {
        self.state().items.remove(&id);
    }

    pub fn remove_folder(&self, id: Id) {
        self.state().delete_folder(id);
    }

    pub fn rename_item(&self, id: Id, name: &str) {
        let mut state = self.state();
        let date = state.tick();
        if let Some(item) = state.items.get_mut(&id) {
            item.name = name.into();
            item.date = date;
        }
    }

    pub fn rename_folder(&self, id: Id, name: &str) {
        let mut state = self.state();
        let date = state.tick();
        if let Some(folder) = state.folders.get_mut(&id) {
            folder.name = name.into();
            folder.date = date;
        }
    }

    /// Makes a folder or an item public or private (only that object).
    pub fn set_public(&self, id: Id, public: bool) {
        let mut state = self.state();
        if let Some(folder) = state.folders.get_mut(&id) {
            folder.public = public;
        }
        if let Some(item) = state.items.get_mut(&id) {
            item.public = public;
        }
    }

    /// The server lists the `solr` module from now on, and answers the Lucene `query` with
    /// `items` (those the caller may see); any other query is a syntax error.
    pub fn solr_answer(&self, query: &str, items: &[Id]) {
        self.state()
            .solr
            .get_or_insert_with(Default::default)
            .insert(query.to_owned(), items.to_vec());
    }

    /// The caller can no longer see this folder or item (someone else's private object).
    pub fn hide(&self, id: Id) {
        self.state().hidden.insert(id);
    }

    /// The caller can no longer change this folder or what is directly in it.
    pub fn deny_writes(&self, folder: Id) {
        self.state().read_only.insert(folder);
    }

    // ---- what the server holds ----

    /// The object at `path` below folder `from` (`a/b/c`, names as Midas has them).
    pub fn find(&self, from: Id, path: &str) -> Option<Object> {
        let state = self.state();
        let mut current = Object::Folder(from);
        for name in path.split('/').filter(|n| !n.is_empty()) {
            let Object::Folder(folder) = current else {
                return None;
            };
            current = if let Some(id) = state.child_folder(folder, name) {
                Object::Folder(id)
            } else {
                Object::Item(state.child_item(folder, name)?)
            };
        }
        Some(current)
    }

    pub fn child_folder(&self, parent: Id, name: &str) -> Option<Id> {
        self.state().child_folder(parent, name)
    }

    pub fn child_item(&self, folder: Id, name: &str) -> Option<Id> {
        self.state().child_item(folder, name)
    }

    /// The names of a folder's subfolders and items, sorted.
    pub fn names_in(&self, folder: Id) -> Vec<String> {
        let state = self.state();
        let mut names: Vec<String> = state
            .folders
            .values()
            .filter(|f| f.parent == folder)
            .map(|f| f.name.clone())
            .chain(
                state
                    .items
                    .values()
                    .filter(|i| i.folder == folder)
                    .map(|i| i.name.clone()),
            )
            .collect();
        names.sort();
        names
    }

    /// The item as `item.get` shows it (head revision only), whoever may see it.
    pub fn item(&self, id: Id) -> Option<Item> {
        let state = self.state();
        state
            .items
            .get(&id)
            .map(|rec| state.item_answer(id, rec, true))
    }

    /// The content of the item's head revision's only bitstream.
    pub fn content(&self, item: Id) -> Option<Vec<u8>> {
        let state = self.state();
        let head = state.items.get(&item)?.revisions.last()?;
        match head.bitstreams.as_slice() {
            [only] => Some(only.content.to_vec()),
            _ => None,
        }
    }

    /// The content of each revision's only bitstream (empty for any other revision), oldest
    /// first.
    pub fn revision_contents(&self, item: Id) -> Vec<Vec<u8>> {
        let state = self.state();
        state.items.get(&item).map_or_else(Vec::new, |i| {
            i.revisions
                .iter()
                .map(|r| match r.bitstreams.as_slice() {
                    [only] => only.content.to_vec(),
                    _ => Vec::new(),
                })
                .collect()
        })
    }

    /// How many revisions the item has.
    pub fn revision_count(&self, item: Id) -> usize {
        self.state()
            .items
            .get(&item)
            .map_or(0, |i| i.revisions.len())
    }

    /// The metadata of the item's head revision.
    pub fn metadata(&self, item: Id) -> Vec<MetadataValue> {
        let state = self.state();
        state
            .items
            .get(&item)
            .and_then(|i| i.revisions.last())
            .map(|r| r.metadata.clone())
            .unwrap_or_default()
    }

    /// Whether the folder or item is public.
    pub fn is_public(&self, id: Id) -> Option<bool> {
        let state = self.state();
        state
            .folders
            .get(&id)
            .map(|f| f.public)
            .or_else(|| state.items.get(&id).map(|i| i.public))
    }

    /// Uploads begun and not finished.
    pub fn pending_uploads(&self) -> usize {
        self.state().uploads.len()
    }

    /// Loses the stored file of `content`: every bitstream of it answers downloads with HTTP
    /// 500 from now on, as on a Midas whose delete removed the file a link still points at.
    /// An upload of it stores it again only when no bitstream of it is left (Midas links an
    /// upload to an existing bitstream's file).
    pub fn lose_content(&self, content: &[u8]) {
        self.state().lost.insert(md5_hex(content));
    }

    /// The next link of `content` by its checksum races a delete of the item that holds it, as
    /// Midas lets them: the link is made, the item goes, and so does the stored file the link
    /// points at.
    pub fn race_next_link(&self, content: &[u8]) {
        self.state().racing.insert(md5_hex(content));
    }

    // ---- answering ----

    /// Counts the call and takes the fault set for it, if any: Err when the call fails
    /// without doing anything.
    async fn fault(&self, method: &'static str) -> Result<Outcome> {
        let fault = {
            let mut state = self.state();
            state.calls.push(method.into());
            let rule = state.rules.iter_mut().find(|r| r.matches(method));
            let fault = rule.map(|rule| {
                if let Some(times) = &mut rule.times {
                    *times -= 1;
                }
                rule.fault.clone()
            });
            state.rules.retain(|r| r.times != Some(0));
            fault
        };
        match fault {
            None => Ok(Outcome::Normal),
            Some(Fault::Delay(delay)) => {
                tokio::time::sleep(delay).await;
                Ok(Outcome::Normal)
            }
            Some(Fault::Late(delay)) => Ok(Outcome::Late(delay)),
            Some(Fault::Stall) => Ok(Outcome::Stalled),
            Some(Fault::CutBody { after }) => Ok(Outcome::Cut(after)),
            Some(Fault::Error { code, message }) => Err(Error::Api {
                method: method.into(),
                code,
                message,
            }),
            Some(Fault::Http(status)) => Err(Error::Http {
                method: method.into(),
                status,
            }),
            Some(Fault::ExpiredToken) => {
                self.state().logins += 1;
                Ok(Outcome::Normal)
            }
            Some(Fault::LoginRefused) => Err(Error::Auth(
                "Midas refused the API key (a fault of the test server)".into(),
            )),
        }
    }

    /// The client's answer to a server that stopped: a timeout, after the stall timeout.
    async fn stalled(&self, method: &str) -> Error {
        tokio::time::sleep(self.stall).await;
        Error::Timeout {
            method: method.into(),
            after: self.stall,
        }
    }

    /// A JSON call: `op` runs on the state unless a fault stops it first.
    async fn answer<T>(
        &self,
        method: &'static str,
        op: impl FnOnce(&mut State) -> std::result::Result<T, Refusal>,
    ) -> Result<T> {
        let outcome = self.fault(method).await?;
        if outcome == Outcome::Stalled {
            return Err(self.stalled(method).await);
        }
        let answer = op(&mut self.state()).map_err(|refusal| refused(method, refusal));
        if let Outcome::Cut(_) = outcome {
            return Err(broken(method));
        }
        if let Outcome::Late(delay) = outcome {
            tokio::time::sleep(delay).await;
        }
        answer
    }

    /// One `upload.perform` of `body`: the item when the upload is complete, else the bytes held.
    async fn perform(
        &self,
        token: &str,
        filename: &str,
        mut body: Vec<u8>,
        length: u64,
        revision: UploadRevision,
    ) -> Result<std::result::Result<Item, u64>> {
        let method = "midas.upload.perform";
        let outcome = self.fault(method).await?;
        match outcome {
            Outcome::Stalled => return Err(self.stalled(method).await),
            Outcome::Cut(after) => body.truncate(usize::try_from(after).unwrap_or(usize::MAX)),
            Outcome::Late(delay) => tokio::time::sleep(delay).await,
            Outcome::Normal => {}
        }
        let answer = self
            .state()
            .receive(token, filename, &body, length, revision)
            .map_err(|refusal| refused(method, refusal));
        if let Outcome::Cut(_) = outcome {
            return Err(broken(method));
        }
        answer
    }
}

/// What a fault leaves of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Normal,
    /// The server stopped answering.
    Stalled,
    /// The connection broke after this many bytes of a body.
    Cut(u64),
    /// Answered now, delivered this much later.
    Late(Duration),
}

fn refused(method: &str, (code, message): Refusal) -> Error {
    Error::Api {
        method: method.into(),
        code,
        message,
    }
}

/// The error of a connection that broke.
fn broken(method: &str) -> Error {
    Error::Unreachable {
        url: format!("http://midas.invalid ({method})"),
        source: Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by the test server",
        )),
    }
}

type Refusal = (i64, String);

fn no_folder() -> Refusal {
    (
        codes::INVALID_POLICY,
        "This folder doesn't exist or you don't have the permissions.".into(),
    )
}

fn no_item() -> Refusal {
    (
        codes::INVALID_POLICY,
        "This item doesn't exist or you don't have the permissions.".into(),
    )
}

fn denied() -> Refusal {
    (codes::INVALID_POLICY, "Invalid policy".into())
}

fn md5_hex(content: &[u8]) -> String {
    Md5::digest(content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl State {
    fn id(&mut self) -> Id {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// A date one second after the last one: every change shows in `date_update`.
    fn tick(&mut self) -> String {
        self.clock += 1;
        let secs = self.clock;
        format!(
            "2026-01-{:02} {:02}:{:02}:{:02}",
            1 + (secs / 86_400) % 28,
            secs / 3600 % 24,
            secs / 60 % 60,
            secs % 60
        )
    }

    fn new_folder(&mut self, parent: Id, name: &str, public: bool) -> Id {
        let id = self.id();
        let date = self.tick();
        self.folders.insert(
            id,
            FolderRec {
                parent,
                name: name.into(),
                uuid: format!("folder-uuid-{id}"),
                public,
                date,
            },
        );
        id
    }

    fn new_item(&mut self, folder: Id, name: &str) -> Id {
        let id = self.id();
        let date = self.tick();
        let public = self.folders.get(&folder).is_some_and(|f| f.public);
        self.items.insert(
            id,
            ItemRec {
                folder,
                name: name.into(),
                uuid: format!("item-uuid-{id}"),
                public,
                date,
                revisions: Vec::new(),
            },
        );
        id
    }

    fn add_bitstream(
        &mut self,
        item: Id,
        name: &str,
        content: Vec<u8>,
        revision: UploadRevision,
    ) -> Id {
        let id = self.id();
        let revision_id = self.id();
        let date = self.tick();
        let md5 = md5_hex(&content);
        let Some(rec) = self.items.get_mut(&item) else {
            return id;
        };
        let bitstream = BitstreamRec {
            id,
            name: name.into(),
            content: Arc::new(content),
            md5,
            date: date.clone(),
        };
        match (revision, rec.revisions.last_mut()) {
            (UploadRevision::Head, Some(head)) => head.bitstreams.push(bitstream),
            (_, head) => {
                let number = head.map_or(0, |h| h.number) + 1;
                rec.revisions.push(RevisionRec {
                    id: revision_id,
                    number,
                    date: date.clone(),
                    bitstreams: vec![bitstream],
                    metadata: Vec::new(),
                });
            }
        }
        rec.date = date;
        id
    }

    fn visible_folder(&self, id: Id) -> std::result::Result<&FolderRec, Refusal> {
        match self.folders.get(&id) {
            Some(folder) if !self.hidden.contains(&id) => Ok(folder),
            _ => Err(no_folder()),
        }
    }

    fn visible_item(&self, id: Id) -> std::result::Result<&ItemRec, Refusal> {
        match self.items.get(&id) {
            Some(item) if !self.hidden.contains(&id) => Ok(item),
            _ => Err(no_item()),
        }
    }

    /// The destination folder of a move: Midas's model error when the caller cannot see it,
    /// then WRITE required.
    fn move_destination(&self, id: Id) -> std::result::Result<&FolderRec, Refusal> {
        if self.visible_folder(id).is_err() {
            return Err((
                codes::MODEL_ERROR,
                "Error in params when checking Folder Policy.".into(),
            ));
        }
        self.writable_folder(id)
    }

    fn writable_folder(&self, id: Id) -> std::result::Result<&FolderRec, Refusal> {
        let folder = self.visible_folder(id)?;
        if self.read_only.contains(&id) {
            return Err(denied());
        }
        Ok(folder)
    }

    /// The item one of whose revisions holds the bitstream `id`.
    fn item_holding(&self, id: Id) -> std::result::Result<Id, Refusal> {
        self.items
            .iter()
            .find(|(_, i)| {
                i.revisions
                    .iter()
                    .any(|r| r.bitstreams.iter().any(|b| b.id == id))
            })
            .map(|(item, _)| *item)
            .ok_or((codes::INVALID_PARAMETER, "Invalid bitstream id".into()))
    }

    fn writable_item(&mut self, id: Id) -> std::result::Result<&mut ItemRec, Refusal> {
        let folder = self.visible_item(id)?.folder;
        if self.read_only.contains(&folder) {
            return Err(denied());
        }
        self.items.get_mut(&id).ok_or_else(no_item)
    }

    fn child_folder(&self, parent: Id, name: &str) -> Option<Id> {
        self.folders
            .iter()
            .find(|(_, f)| f.parent == parent && f.name == name)
            .map(|(id, _)| *id)
    }

    fn child_item(&self, folder: Id, name: &str) -> Option<Id> {
        self.items
            .iter()
            .find(|(_, i)| i.folder == folder && i.name == name)
            .map(|(id, _)| *id)
    }

    /// `name`, or `name (1)`, `name (2)`… the first no item of `folder` has.
    fn free_item_name(&self, folder: Id, name: &str, except: Option<Id>) -> String {
        let taken = |candidate: &str| {
            self.items
                .iter()
                .any(|(id, i)| i.folder == folder && i.name == candidate && Some(*id) != except)
        };
        if !taken(name) {
            return name.into();
        }
        (1..)
            .map(|n| format!("{name} ({n})"))
            .find(|candidate| !taken(candidate))
            .expect("a free name")
    }

    fn folder_answer(&self, id: Id, rec: &FolderRec) -> Folder {
        Folder {
            folder_id: id,
            parent_id: rec.parent,
            name: rec.name.clone(),
            description: String::new(),
            date_update: rec.date.clone(),
            date_creation: rec.date.clone(),
            privacy_status: privacy(rec.public),
            uuid: rec.uuid.clone(),
        }
    }

    fn item_answer(&self, id: Id, rec: &ItemRec, with_head: bool) -> Item {
        let head = rec.revisions.last();
        let size = head.map(|h| h.bitstreams.iter().map(|b| b.content.len() as i64).sum());
        Item {
            item_id: id,
            name: rec.name.clone(),
            description: String::new(),
            sizebytes: size,
            date_creation: rec.date.clone(),
            date_update: rec.date.clone(),
            privacy_status: privacy(rec.public),
            uuid: rec.uuid.clone(),
            folder_id: with_head.then_some(rec.folder),
            revisions: if with_head {
                head.map(|h| revision_answer(id, h)).into_iter().collect()
            } else {
                Vec::new()
            },
        }
    }

    fn children(&self, id: Id) -> std::result::Result<Children, Refusal> {
        self.visible_folder(id)?;
        Ok(Children {
            folders: self
                .folders
                .iter()
                .filter(|(fid, f)| f.parent == id && !self.hidden.contains(fid))
                .map(|(fid, f)| self.folder_answer(*fid, f))
                .collect(),
            items: self
                .items
                .iter()
                .filter(|(iid, i)| i.folder == id && !self.hidden.contains(iid))
                .map(|(iid, i)| self.item_answer(*iid, i, false))
                .collect(),
        })
    }

    /// The folders directly in `id`.
    fn subfolders(&self, id: Id) -> Vec<Id> {
        self.folders
            .iter()
            .filter(|(_, f)| f.parent == id)
            .map(|(id, _)| *id)
            .collect()
    }

    fn delete_folder(&mut self, id: Id) {
        for folder in self.subfolders(id) {
            self.delete_folder(folder);
        }
        self.items.retain(|_, i| i.folder != id);
        self.folders.remove(&id);
    }

    /// Whether `folder` is `ancestor` or below it.
    fn is_below(&self, folder: Id, ancestor: Id) -> bool {
        let mut current = folder;
        for _ in 0..1000 {
            if current == ancestor {
                return true;
            }
            match self.folders.get(&current) {
                Some(f) => current = f.parent,
                None => return false,
            }
        }
        false
    }

    fn set_privacy_below(&mut self, id: Id, public: bool) -> i64 {
        let mut changed = 0;
        if let Some(folder) = self.folders.get_mut(&id) {
            folder.public = public;
            changed += 1;
        }
        for item in self.items.values_mut().filter(|i| i.folder == id) {
            item.public = public;
            changed += 1;
        }
        for folder in self.subfolders(id) {
            changed += self.set_privacy_below(folder, public);
        }
        changed
    }

    fn head_mut(&mut self, item: Id) -> std::result::Result<&mut RevisionRec, Refusal> {
        self.writable_item(item)?.revisions.last_mut().ok_or((
            codes::INVALID_POLICY,
            "The item must have at least one revision to have metadata".into(),
        ))
    }

    /// Checksum dedup of `generatetoken`: a readable bitstream with this checksum is copied into
    /// the item's head (unless the head holds `filename` already). True if handled.
    /// Midas's checksum dedup: the first bitstream with this checksum (`getByChecksum`) is
    /// linked, only if the caller may read its item; when that is someone else's private item,
    /// the content is not found, even if the caller holds the same content elsewhere.
    fn deduplicate(&mut self, item: Id, filename: &str, checksum: &str) -> bool {
        let first = self
            .items
            .iter()
            .flat_map(|(id, i)| i.revisions.iter().map(move |r| (*id, r)))
            .flat_map(|(id, r)| r.bitstreams.iter().map(move |b| (id, b)))
            .filter(|(_, b)| b.md5 == checksum)
            .min_by_key(|(_, b)| b.id);
        let Some((holder, content)) = first
            .filter(|(holder, _)| !self.hidden.contains(holder))
            .map(|(holder, b)| (holder, Arc::clone(&b.content)))
        else {
            return false;
        };
        let has_name = self
            .items
            .get(&item)
            .and_then(|i| i.revisions.last())
            .is_some_and(|head| head.bitstreams.iter().any(|b| b.name == filename));
        if !has_name {
            self.add_bitstream(item, filename, content.to_vec(), UploadRevision::Head);
        }
        if self.racing.remove(checksum) {
            if holder != item {
                self.items.remove(&holder);
            }
            self.lost.insert(checksum.to_owned());
        }
        true
    }

    /// Whether any bitstream holds the content of this MD5.
    fn holders(&self, md5: &str) -> bool {
        self.items
            .values()
            .flat_map(|i| i.revisions.iter())
            .flat_map(|r| r.bitstreams.iter())
            .any(|b| b.md5 == md5)
    }

    fn new_token(&mut self, item_id: Id) -> String {
        let token = format!("1/{item_id}/{}", self.id());
        self.uploads.insert(
            token.clone(),
            UploadRec {
                item_id,
                held: Vec::new(),
            },
        );
        token
    }

    /// Appends `body` to the upload `token` declared `length` bytes long; when it is complete,
    /// the bitstream goes into the item. Ok(None) while incomplete, with the bytes held.
    fn receive(
        &mut self,
        token: &str,
        filename: &str,
        body: &[u8],
        length: u64,
        revision: UploadRevision,
    ) -> std::result::Result<std::result::Result<Item, u64>, Refusal> {
        let invalid = || {
            (
                codes::INVALID_UPLOAD_TOKEN,
                format!("Invalid upload token {token}"),
            )
        };
        let upload = self.uploads.get_mut(token).ok_or_else(invalid)?;
        upload.held.extend_from_slice(body);
        let held = upload.held.len() as u64;
        if held < length {
            return Ok(Err(held));
        }
        let upload = self.uploads.remove(token).ok_or_else(invalid)?;
        let item_id = upload.item_id;
        if !self.items.contains_key(&item_id) {
            return Err(no_item());
        }
        // Midas links what it receives to a stored file of the same content, lost or not; the
        // file is written only when no bitstream of that content is left.
        let md5 = md5_hex(&upload.held);
        if self.lost.contains(&md5) && !self.holders(&md5) {
            self.lost.remove(&md5);
        }
        self.add_bitstream(item_id, filename, upload.held, revision);
        let rec = self.items.get(&item_id).ok_or_else(no_item)?;
        Ok(Ok(self.item_answer(item_id, rec, true)))
    }
}

fn privacy(public: bool) -> i64 {
    if public {
        PRIVACY_PUBLIC
    } else {
        PRIVACY_PRIVATE
    }
}

fn revision_answer(item_id: Id, rec: &RevisionRec) -> Revision {
    Revision {
        itemrevision_id: rec.id,
        item_id,
        revision: rec.number,
        date: rec.date.clone(),
        changes: String::new(),
        user_id: 1,
        uuid: format!("revision-uuid-{}", rec.id),
        bitstreams: rec
            .bitstreams
            .iter()
            .map(|b| Bitstream {
                bitstream_id: b.id,
                itemrevision_id: rec.id,
                name: b.name.clone(),
                mimetype: "application/octet-stream".into(),
                sizebytes: b.content.len() as i64,
                checksum: b.md5.clone(),
                date: b.date.clone(),
            })
            .collect(),
    }
}

/// The bytes `[offset, end)` of a local file, for an upload.
fn read_part(file: &Path, offset: u64, end: u64) -> Result<Vec<u8>> {
    let content = std::fs::read(file)?;
    let end = usize::try_from(end)
        .unwrap_or(usize::MAX)
        .min(content.len());
    let offset = usize::try_from(offset).unwrap_or(usize::MAX).min(end);
    Ok(content[offset..end].to_vec())
}

impl MidasApi for FakeMidas {
    fn base_url(&self) -> &str {
        &self.base_url
    }

    fn user_get_by_name<'a>(&'a self, first: &'a str, last: &'a str) -> Call<'a, Option<User>> {
        Box::pin(self.answer("midas.user.get", move |state| {
            Ok(state
                .users
                .iter()
                .find(|u| u.firstname == first && u.lastname == last)
                .cloned())
        }))
    }

    fn user_get_by_id(&self, id: Id) -> Call<'_, Option<User>> {
        Box::pin(self.answer("midas.user.get", move |state| {
            Ok(state.users.iter().find(|u| u.user_id == id).cloned())
        }))
    }

    fn user_list(&self, limit: u32) -> Call<'_, Vec<User>> {
        Box::pin(self.answer("midas.user.list", move |state| {
            Ok(state.users.iter().take(limit as usize).cloned().collect())
        }))
    }

    fn community_list(&self) -> Call<'_, Vec<Community>> {
        Box::pin(self.answer("midas.community.list", |state| {
            Ok(state.communities.clone())
        }))
    }

    fn folder_get(&self, id: Id) -> Call<'_, Folder> {
        Box::pin(self.answer("midas.folder.get", move |state| {
            let rec = state.visible_folder(id)?;
            Ok(state.folder_answer(id, rec))
        }))
    }

    fn folder_children(&self, id: Id) -> Call<'_, Children> {
        Box::pin(self.answer("midas.folder.children", move |state| state.children(id)))
    }

    fn folder_children_within(&self, id: Id, limit: usize) -> Call<'_, Children> {
        Box::pin(async move {
            let children = self
                .answer("midas.folder.children", move |state| state.children(id))
                .await?;
            let entries = children.folders.len() + children.items.len();
            if entries * ANSWER_BYTES_PER_ENTRY > limit {
                return Err(Error::TooLarge {
                    method: "midas.folder.children".into(),
                    limit,
                });
            }
            Ok(children)
        })
    }

    fn item_get(&self, id: Id) -> Call<'_, Item> {
        Box::pin(self.answer("midas.item.get", move |state| {
            let rec = state.visible_item(id)?;
            Ok(state.item_answer(id, rec, true))
        }))
    }

    fn item_get_history(&self, id: Id) -> Call<'_, Item> {
        Box::pin(self.answer("midas.item.get", move |state| {
            let rec = state.visible_item(id)?;
            let mut item = state.item_answer(id, rec, true);
            item.revisions = rec
                .revisions
                .iter()
                .map(|r| revision_answer(id, r))
                .collect();
            Ok(item)
        }))
    }

    fn item_search_by_name<'a>(&'a self, name: &'a str) -> Call<'a, Vec<Item>> {
        Box::pin(self.answer("midas.item.searchbyname", move |state| {
            Ok(state
                .items
                .iter()
                .filter(|(id, i)| i.name == name && !state.hidden.contains(id))
                .map(|(id, i)| {
                    let mut item = state.item_answer(*id, i, false);
                    item.folder_id = Some(i.folder);
                    item
                })
                .collect())
        }))
    }

    fn modules_list(&self) -> Call<'_, Vec<String>> {
        Box::pin(self.answer("midas.modules.list", move |state| {
            let mut modules = vec!["api".to_owned()];
            if state.solr.is_some() {
                modules.push("solr".to_owned());
            }
            Ok(modules)
        }))
    }

    fn solr_search_advanced<'a>(&'a self, query: &'a str, limit: u32) -> Call<'a, Vec<Item>> {
        Box::pin(self.answer("midas.solr.search.advanced", move |state| {
            let Some(answers) = &state.solr else {
                return Err((
                    codes::INVALID_TOKEN,
                    "Server error. Requested method midas.solr.search.advanced does not exist."
                        .into(),
                ));
            };
            let Some(ids) = answers.get(query) else {
                return Err((-1, "Syntax error in query".into()));
            };
            Ok(ids
                .iter()
                .filter(|id| !state.hidden.contains(id))
                .filter_map(|id| {
                    let rec = state.items.get(id)?;
                    let mut item = state.item_answer(*id, rec, false);
                    item.folder_id = Some(rec.folder);
                    item.revisions.clear();
                    Some(item)
                })
                .take(limit as usize)
                .collect())
        }))
    }

    fn folders_from_root<'a>(&'a self, uuid: &'a str) -> Call<'a, Vec<Folder>> {
        Box::pin(self.answer("midas.path.from.root", move |state| {
            let start = if let Some((id, _)) = state.folders.iter().find(|(_, f)| f.uuid == uuid) {
                state.visible_folder(*id)?;
                *id
            } else if let Some((id, _)) = state.items.iter().find(|(_, i)| i.uuid == uuid) {
                state.visible_item(*id)?.folder
            } else {
                return Err(denied());
            };
            let mut chain = Vec::new();
            let mut current = start;
            while let Some(rec) = state.folders.get(&current) {
                if !state.hidden.contains(&current) {
                    chain.push(state.folder_answer(current, rec));
                }
                current = rec.parent;
            }
            chain.reverse();
            Ok(chain)
        }))
    }

    fn item_get_metadata(&self, id: Id) -> Call<'_, Vec<MetadataValue>> {
        Box::pin(self.answer("midas.item.getmetadata", move |state| {
            let rec = state.visible_item(id)?;
            Ok(rec
                .revisions
                .last()
                .map(|head| head.metadata.clone())
                .unwrap_or_default())
        }))
    }

    fn download(&self, bitstream_id: Id, offset: u64, size: u64) -> Call<'_, ByteStream> {
        Box::pin(async move {
            if offset >= size {
                let nothing = futures_util::stream::empty();
                return Ok(ByteStream::from_chunks(nothing, 0, self.stall));
            }
            let outcome = self.fault("download").await?;
            if outcome == Outcome::Stalled {
                // The server answered the request and sends no byte of the body.
                let nothing = futures_util::stream::pending();
                return Ok(ByteStream::from_chunks(nothing, size - offset, self.stall));
            }
            let content = {
                let state = self.state();
                state
                    .items
                    .iter()
                    .filter(|(id, _)| !state.hidden.contains(id))
                    .flat_map(|(_, i)| i.revisions.iter())
                    .flat_map(|r| r.bitstreams.iter())
                    .find(|b| b.id == bitstream_id)
                    .map(|b| (Arc::clone(&b.content), state.lost.contains(&b.md5)))
            };
            let content = match content {
                // Midas's download of a bitstream whose stored file is gone.
                Some((_, true)) => {
                    return Err(Error::Http {
                        method: "download".into(),
                        status: 500,
                    })
                }
                found => found.map(|(content, _)| content),
            };
            // The download controller answers a missing bitstream with an HTTP error.
            let content = content.ok_or(Error::Http {
                method: "download".into(),
                status: 404,
            })?;
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(content.len());
            let mut end = usize::try_from(size)
                .unwrap_or(usize::MAX)
                .min(content.len());
            if let Outcome::Cut(after) = outcome {
                end = end.min(start.saturating_add(usize::try_from(after).unwrap_or(usize::MAX)));
            }
            let chunks: Vec<Bytes> = content[start..end]
                .chunks(DOWNLOAD_CHUNK)
                .map(Bytes::copy_from_slice)
                .collect();
            Ok(ByteStream::from_chunks(
                futures_util::stream::iter(chunks),
                size - offset,
                self.stall,
            ))
        })
    }

    /// As [`MidasApi::download`]: what a receive buffer would spare the server does not
    /// apply to bytes in memory.
    fn download_some(
        &self,
        bitstream_id: Id,
        offset: u64,
        size: u64,
        _wanted: Option<u64>,
    ) -> Call<'_, ByteStream> {
        self.download(bitstream_id, offset, size)
    }

    fn folder_create<'a>(&'a self, parent: Id, name: &'a str) -> Call<'a, Folder> {
        Box::pin(self.answer("midas.folder.create", move |state| {
            if name.is_empty() {
                return Err((codes::MODEL_ERROR, "Name cannot be empty.".into()));
            }
            if !state.folders.contains_key(&parent) {
                return Err((codes::INVALID_PARAMETER, "Parent doesn't exist".into()));
            }
            let public = state.writable_folder(parent)?.public;
            if state.child_folder(parent, name).is_some() {
                return Err((
                    codes::INVALID_PARAMETER,
                    "A folder already exists in that parent with that name. Pass reuseExisting \
                     to reuse it."
                        .into(),
                ));
            }
            let id = state.new_folder(parent, name, public);
            let rec = state.folders.get(&id).ok_or_else(no_folder)?;
            Ok(state.folder_answer(id, rec))
        }))
    }

    fn folder_rename<'a>(&'a self, folder_uuid: &'a str, name: &'a str) -> Call<'a, Folder> {
        Box::pin(self.answer("midas.folder.create", move |state| {
            let id = state
                .folders
                .iter()
                .find(|(id, f)| f.uuid == folder_uuid && !state.hidden.contains(id))
                .map(|(id, _)| *id)
                .ok_or_else(no_folder)?;
            let parent = state.visible_folder(id)?.parent;
            state.writable_folder(parent).map_err(|_| denied())?;
            let date = state.tick();
            let rec = state.folders.get_mut(&id).ok_or_else(no_folder)?;
            rec.name = name.into();
            rec.date = date;
            let rec = state.folders.get(&id).ok_or_else(no_folder)?;
            Ok(state.folder_answer(id, rec))
        }))
    }

    fn folder_move(&self, id: Id, dst: Id) -> Call<'_, Folder> {
        Box::pin(self.answer("midas.folder.move", move |state| {
            let name = state.visible_folder(id)?.name.clone();
            state.move_destination(dst)?;
            if id == dst {
                return Err((codes::MODEL_ERROR, "Folder == Parent".into()));
            }
            if state.is_below(dst, id) {
                return Err((codes::MODEL_ERROR, "Parent is a child of Folder".into()));
            }
            if state.child_folder(dst, &name).is_some() {
                return Err((codes::MODEL_ERROR, "This name is already used".into()));
            }
            let date = state.tick();
            let rec = state.folders.get_mut(&id).ok_or_else(no_folder)?;
            rec.parent = dst;
            rec.date = date;
            let rec = state.folders.get(&id).ok_or_else(no_folder)?;
            Ok(state.folder_answer(id, rec))
        }))
    }

    fn folder_delete(&self, id: Id) -> Call<'_, ()> {
        Box::pin(self.answer("midas.folder.delete", move |state| {
            let parent = state.visible_folder(id)?.parent;
            state.writable_folder(parent).map_err(|_| denied())?;
            state.delete_folder(id);
            Ok(())
        }))
    }

    fn item_create<'a>(&'a self, parent: Id, name: &'a str) -> Call<'a, Item> {
        Box::pin(self.answer("midas.item.create", move |state| {
            if name.is_empty() {
                return Err((codes::MODEL_ERROR, "Name cannot be empty.".into()));
            }
            if !state.folders.contains_key(&parent) {
                return Err((
                    codes::INVALID_PARAMETER,
                    "Parent folder doesn't exist".into(),
                ));
            }
            state.writable_folder(parent)?;
            let name = state.free_item_name(parent, name, None);
            let id = state.new_item(parent, &name);
            let rec = state.items.get(&id).ok_or_else(no_item)?;
            Ok(state.item_answer(id, rec, true))
        }))
    }

    fn item_rename<'a>(
        &'a self,
        item_uuid: &'a str,
        name: &'a str,
        rename_bitstream: bool,
    ) -> Call<'a, Item> {
        Box::pin(self.answer("midas.item.create", move |state| {
            let id = state
                .items
                .iter()
                .find(|(id, i)| i.uuid == item_uuid && !state.hidden.contains(id))
                .map(|(id, _)| *id)
                .ok_or_else(no_item)?;
            let date = state.tick();
            let rec = state.writable_item(id)?;
            rec.name = name.into();
            rec.date = date;
            if rename_bitstream {
                if let Some([only]) = rec
                    .revisions
                    .last_mut()
                    .map(|h| h.bitstreams.as_mut_slice())
                {
                    only.name = name.into();
                }
            }
            let rec = state.items.get(&id).ok_or_else(no_item)?;
            Ok(state.item_answer(id, rec, true))
        }))
    }

    fn item_move(&self, id: Id, src: Id, dst: Id) -> Call<'_, Item> {
        Box::pin(self.answer("midas.item.move", move |state| {
            let rec = state.visible_item(id)?;
            if rec.folder != src {
                return Err((
                    codes::INVALID_PARAMETER,
                    "The item is not in the source folder".into(),
                ));
            }
            let name = rec.name.clone();
            let dst_public = state.move_destination(dst)?.public;
            state.writable_item(id)?;
            let name = state.free_item_name(dst, &name, Some(id));
            let date = state.tick();
            let rec = state.items.get_mut(&id).ok_or_else(no_item)?;
            rec.folder = dst;
            rec.name = name;
            rec.date = date;
            // The destination's policies are added: a public folder makes the item public.
            rec.public |= dst_public;
            let rec = state.items.get(&id).ok_or_else(no_item)?;
            Ok(state.item_answer(id, rec, true))
        }))
    }

    fn item_set_public(&self, id: Id, public: bool) -> Call<'_, ()> {
        let method = if public {
            "midas.item.add.policygroup"
        } else {
            "midas.item.remove.policygroup"
        };
        Box::pin(self.answer(method, move |state| {
            state.writable_item(id)?.public = public;
            Ok(())
        }))
    }

    fn folder_set_privacy_recursive(&self, id: Id, public: bool) -> Call<'_, Changed> {
        Box::pin(
            self.answer("midas.folder.set.privacy.recursive", move |state| {
                state.writable_folder(id)?;
                let success = state.set_privacy_below(id, public);
                Ok(Changed {
                    success,
                    failure: 0,
                })
            }),
        )
    }

    fn folder_set_public(&self, id: Id, public: bool) -> Call<'_, Changed> {
        let method = if public {
            "midas.folder.add.policygroup"
        } else {
            "midas.folder.remove.policygroup"
        };
        Box::pin(self.answer(method, move |state| {
            state.writable_folder(id)?;
            if let Some(folder) = state.folders.get_mut(&id) {
                folder.public = public;
            }
            Ok(Changed {
                success: 1,
                failure: 0,
            })
        }))
    }

    fn item_delete(&self, id: Id) -> Call<'_, ()> {
        Box::pin(self.answer("midas.item.delete", move |state| {
            state.writable_item(id)?;
            state.items.remove(&id);
            Ok(())
        }))
    }

    fn item_set_metadata<'a>(
        &'a self,
        id: Id,
        element: &'a str,
        qualifier: &'a str,
        value: &'a str,
    ) -> Call<'a, ()> {
        Box::pin(self.answer("midas.item.setmetadata", move |state| {
            let head = state.head_mut(id)?;
            head.metadata
                .retain(|m| !(m.element == element && m.qualifier == qualifier));
            head.metadata.push(MetadataValue {
                metadatatype: 0,
                element: element.into(),
                qualifier: qualifier.into(),
                value: value.into(),
            });
            Ok(())
        }))
    }

    fn item_delete_metadata<'a>(
        &'a self,
        id: Id,
        element: &'a str,
        qualifier: &'a str,
    ) -> Call<'a, ()> {
        Box::pin(self.answer("midas.item.deletemetadata", move |state| {
            state
                .head_mut(id)?
                .metadata
                .retain(|m| !(m.element == element && m.qualifier == qualifier));
            Ok(())
        }))
    }

    fn bitstream_rename<'a>(&'a self, id: Id, name: &'a str) -> Call<'a, ()> {
        Box::pin(self.answer("midas.bitstream.edit", move |state| {
            let item = state.item_holding(id)?;
            let rec = state.writable_item(item)?;
            for bitstream in rec
                .revisions
                .iter_mut()
                .flat_map(|r| r.bitstreams.iter_mut())
                .filter(|b| b.id == id)
            {
                bitstream.name = name.into();
            }
            Ok(())
        }))
    }

    fn bitstream_delete(&self, id: Id) -> Call<'_, ()> {
        Box::pin(self.answer("midas.bitstream.delete", move |state| {
            let item = state.item_holding(id)?;
            let date = state.tick();
            let rec = state.writable_item(item)?;
            for revision in &mut rec.revisions {
                revision.bitstreams.retain(|b| b.id != id);
            }
            rec.date = date;
            Ok(())
        }))
    }

    fn upload_token<'a>(
        &'a self,
        item_id: Id,
        filename: &'a str,
        checksum: Option<&'a str>,
    ) -> Call<'a, Option<String>> {
        Box::pin(self.answer("midas.upload.generatetoken", move |state| {
            if !state.items.contains_key(&item_id) {
                return Err((
                    codes::MODEL_ERROR,
                    "Error in parameter itemdao or policy when checking Item policy.".into(),
                ));
            }
            state
                .writable_item(item_id)
                .map_err(|_| (codes::INVALID_POLICY, "Invalid policy or itemid".into()))?;
            if let Some(checksum) = checksum.filter(|c| !c.is_empty()) {
                if state.deduplicate(item_id, filename, checksum) {
                    return Ok(None);
                }
            }
            Ok(Some(state.new_token(item_id)))
        }))
    }

    fn upload_token_new_item<'a>(
        &'a self,
        folder: Id,
        filename: &'a str,
    ) -> Call<'a, (Id, String)> {
        Box::pin(self.answer("midas.upload.generatetoken", move |state| {
            if !state.folders.contains_key(&folder) {
                return Err((
                    codes::INVALID_PARAMETER,
                    "Parent folder corresponding to folderid doesn't exist".into(),
                ));
            }
            state
                .writable_folder(folder)
                .map_err(|_| (codes::INVALID_POLICY, "Invalid policy or folderid".into()))?;
            let name = state.free_item_name(folder, filename, None);
            let item_id = state.new_item(folder, &name);
            Ok((item_id, state.new_token(item_id)))
        }))
    }

    fn upload_offset<'a>(&'a self, upload_token: &'a str) -> Call<'a, u64> {
        Box::pin(self.answer("midas.upload.getoffset", move |state| {
            state
                .uploads
                .get(upload_token)
                .map(|u| u.held.len() as u64)
                .ok_or((
                    codes::INVALID_UPLOAD_TOKEN,
                    "Invalid upload token (no upload in progress)".into(),
                ))
        }))
    }

    fn upload_perform<'a>(
        &'a self,
        upload_token: &'a str,
        _item_id: Id,
        filename: &'a str,
        file: &'a Path,
        offset: u64,
        length: u64,
        revision: UploadRevision,
    ) -> Call<'a, Item> {
        Box::pin(async move {
            let body = read_part(file, offset, length)?;
            let held = self
                .perform(upload_token, filename, body, length, revision)
                .await?;
            held.map_err(|held| Error::Api {
                method: "midas.upload.perform".into(),
                code: codes::UPLOAD_FAILED,
                message: format!("Failed to upload file - {held}/{length} bytes transferred"),
            })
        })
    }

    fn upload_perform_part<'a>(&'a self, part: &'a UploadPart<'_>) -> Call<'a, u64> {
        Box::pin(async move {
            let body = read_part(part.file, part.offset, part.end)?;
            match self
                .perform(
                    part.token,
                    part.filename,
                    body,
                    part.end + 1,
                    UploadRevision::Head,
                )
                .await?
            {
                Err(held) => Ok(held),
                Ok(_) => Err(Error::Decode {
                    method: "midas.upload.perform".into(),
                    detail: "an upload sent in parts was complete early".into(),
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake() -> FakeMidas {
        FakeMidas::new(Duration::from_millis(200))
    }

    #[tokio::test]
    async fn a_name_clash_of_item_create_gets_a_number_as_midas_does() {
        let midas = fake();
        let folder = midas.public_folder();
        let first = midas.item_create(folder, "a").await.unwrap();
        let second = midas.item_create(folder, "a").await.unwrap();
        assert_eq!(first.name, "a");
        assert_eq!(second.name, "a (1)");
    }

    #[tokio::test]
    async fn an_upload_in_two_performs_goes_on_from_the_server_offset() {
        let midas = fake();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello world").unwrap();
        let (item, token) = midas
            .upload_token_new_item(midas.public_folder(), "f")
            .await
            .unwrap();
        midas.fail("midas.upload.perform", Fault::CutBody { after: 5 });
        let err = midas
            .upload_perform(&token, item, "f", &path, 0, 11, UploadRevision::Head)
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err}");
        let held = midas.upload_offset(&token).await.unwrap();
        assert_eq!(held, 5);
        midas
            .upload_perform(&token, item, "f", &path, held, 11, UploadRevision::Head)
            .await
            .unwrap();
        assert_eq!(midas.content(item).unwrap(), b"hello world");
        assert_eq!(midas.pending_uploads(), 0);
    }

    #[tokio::test]
    async fn a_known_checksum_makes_no_token_and_copies_the_content() {
        let midas = fake();
        let folder = midas.public_folder();
        midas.add_file(folder, "old", b"same");
        let item = midas.item_create(folder, "new").await.unwrap().item_id;
        let token = midas
            .upload_token(item, "new", Some(&md5_hex(b"same")))
            .await
            .unwrap();
        assert_eq!(token, None);
        assert_eq!(midas.content(item).unwrap(), b"same");
    }

    #[tokio::test]
    async fn faults_fail_the_given_calls_only_as_often_as_asked() {
        let midas = fake();
        let folder = midas.public_folder();
        midas.fail_times("midas.folder.*", 2, Fault::Http(503));
        assert!(matches!(
            midas.folder_get(folder).await,
            Err(Error::Http { status: 503, .. })
        ));
        assert!(midas.folder_children(folder).await.is_err());
        assert!(midas.folder_get(folder).await.is_ok());
        assert_eq!(midas.count("midas.folder.*"), 3);
    }

    #[tokio::test]
    async fn a_cut_download_is_a_short_read_and_a_stalled_one_a_timeout() {
        let midas = fake();
        let item = midas.add_file(midas.public_folder(), "f", &[7; 100_000]);
        let bitstream = midas
            .item(item)
            .unwrap()
            .only_bitstream()
            .unwrap()
            .bitstream_id;
        midas.fail("download", Fault::CutBody { after: 1000 });
        let mut stream = midas.download(bitstream, 0, 100_000).await.unwrap();
        let mut got = 0;
        let err = loop {
            match stream.next_chunk().await {
                Ok(Some(chunk)) => got += chunk.len(),
                Ok(None) => panic!("the whole body came"),
                Err(err) => break err,
            }
        };
        assert_eq!(got, 1000);
        assert!(matches!(err, Error::ShortRead { .. }), "{err}");
        midas.fail("download", Fault::Stall);
        let mut stream = midas.download(bitstream, 0, 100_000).await.unwrap();
        let err = stream.next_chunk().await.unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn hidden_objects_are_missing_and_read_only_folders_refuse_changes() {
        let midas = fake();
        let folder = midas.public_folder();
        let item = midas.add_file(folder, "f", b"x");
        midas.hide(item);
        let err = midas.item_get(item).await.unwrap_err();
        assert_eq!(err.api_code(), Some(codes::INVALID_POLICY));
        assert!(midas
            .folder_children(folder)
            .await
            .unwrap()
            .items
            .is_empty());
        midas.deny_writes(folder);
        let err = midas.folder_create(folder, "d").await.unwrap_err();
        assert_eq!(err.api_code(), Some(codes::INVALID_POLICY));
    }
}
