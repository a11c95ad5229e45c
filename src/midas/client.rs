//! The client: one connection pool, the login token, retries, and one function per Midas call.
//!
//! Every call is `POST <base>/api/json?method=midas.x.y` with its parameters in a form-encoded
//! body, so that no secret (`token`, `apikey`, `password`, `uploadtoken`) reaches a web server's
//! access log; Midas reads parameters from the query and the body alike. The token goes in the
//! `token` parameter when logged in (never an empty `token=`, which Midas refuses). Only
//! `upload.perform`, whose body is the file, keeps its parameters in the query.
//!
//! No request carries a `Referer`, and a logged-in client follows no redirect to another
//! origin (see [`redirect_policy`]): what was meant for the Midas server goes nowhere else.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use log::debug;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{redirect, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;

use super::codes;
use super::envelope;
use super::error::Error;
use super::redact::redact;
use super::stream;
use super::transfer::{self, PlainAnswer, DOWNLOAD};
use super::types::{
    Changed, Children, Community, Folder, Id, Item, MetadataValue, SolrItem, User, ANONYMOUS_GROUP,
};
use super::Result;

pub use super::transfer::ByteStream;

/// Midas tokens expire 100 minutes after they were first issued, however much they are used.
const TOKEN_LIFETIME: Duration = Duration::from_secs(100 * 60);

/// Pauses between the attempts of a read that failed transiently (so at most 3 attempts).
const READ_BACKOFF: [Duration; 2] = [Duration::from_millis(200), Duration::from_secs(1)];

/// A whole JSON call, retries included, may take this many stall timeouts.
const CALL_CAP_FACTOR: u32 = 4;

/// How fast a server is assumed to hash an upload from its file, at the least. Midas does that,
/// before answering the `perform` that completes it, when the upload did not start at byte 0
/// (a resumed upload, or one sent in parts): that answer may take this long per byte, besides
/// the usual cap.
const REHASH_BYTES_PER_SEC: u64 = 50 << 20;

/// Idle connections kept per host: the filesystem issues many calls at once.
const POOL_IDLE_PER_HOST: usize = 64;

/// A pooled connection idle this long is closed rather than used again. Servers close idle
/// kept-alive connections themselves (Apache after 5 s by default, `serve` after 15 s), and a
/// request sent just as they do gets no answer: a write cannot be retried then (it may have
/// been done), so the client must not be the one to send on a connection that old.
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// The application name of the API key created with every Midas account.
const APP_NAME: &str = "Default";

/// pydas's test for a multi-factor login, which answers a short `mfa_token_id` instead of a token.
const MIN_TOKEN_LEN: usize = 10;

/// What a Midas without its web API looks like from here (an HTML page, or a 404).
const API_MODULE_HINT: &str = "if it is a Midas server, its API module may be disabled (an \
     administrator enables `api` under Administration → Modules)";

/// The largest JSON answer read of a call that is not a list, in bytes: a bigger one fails
/// with [`Error::TooLarge`] before it can fill the memory. List answers (`folder.children`,
/// `user.list`, …) are decoded while they arrive and have bounds of their own (see
/// [`stream`]): a folder of any real size lists.
pub const MAX_ANSWER: usize = 64 << 20;

/// Redirects followed per request at most (reqwest's own default).
const MAX_REDIRECTS: usize = 10;

/// The content type of a request whose parameters are in its body.
const FORM: &str = "application/x-www-form-urlencoded";

/// Who the client logs in as.
#[derive(Clone)]
pub enum Credentials {
    Anonymous,
    ApiKey {
        email: String,
        api_key: String,
    },
    /// Exchanged for the account's Default API key (`midas.user.apikey.default`) at each login.
    Password {
        email: String,
        password: String,
    },
}

impl Credentials {
    fn email(&self) -> Option<&str> {
        match self {
            Credentials::Anonymous => None,
            Credentials::ApiKey { email, .. } | Credentials::Password { email, .. } => Some(email),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::ApiKey { email, .. } => f
                .debug_struct("ApiKey")
                .field("email", email)
                .field("api_key", &"***")
                .finish(),
            Credentials::Password { email, .. } => f
                .debug_struct("Password")
                .field("email", email)
                .field("password", &"***")
                .finish(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The installation root, e.g. `https://host/midas` (a trailing `/` is tolerated).
    pub base_url: String,
    pub credentials: Credentials,
    /// Longest wait for a TCP connection.
    pub connect_timeout: Duration,
    /// Longest wait for the next byte; a whole JSON call is also capped at 4 times this.
    pub stall_timeout: Duration,
}

/// Where `upload.perform` puts the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadRevision {
    /// A new revision holding only this file (the item's other files leave the head).
    New,
    /// Added to the head revision (created if the item has none).
    Head,
}

/// A Midas server, shared by cloning (one pool, one login).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: String,
    api_url: Url,
    download_url: Url,
    credentials: Credentials,
    connect_timeout: Duration,
    stall_timeout: Duration,
    session: Mutex<Option<Session>>,
    /// Held while logging in, so that concurrent callers wait for one login.
    login_lock: tokio::sync::Mutex<()>,
    stats: Mutex<ClientStats>,
    download_bytes: Arc<std::sync::atomic::AtomicU64>,
    upload_bytes: Arc<std::sync::atomic::AtomicU64>,
}

/// Requests sent so far and how many failed, for `midasfs status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// JSON API calls (each retry counts once more).
    pub calls: u64,
    /// Downloads opened (one per streamed range).
    pub downloads: u64,
    /// `upload.perform` requests carrying file content.
    pub upload_parts: u64,
    /// Bytes of file content that came over the wire: read, or in a receive buffer when a
    /// download was dropped.
    pub download_bytes: u64,
    /// Bytes of file content sent in upload bodies (also those of uploads that then failed).
    pub upload_bytes: u64,
    /// Those of the above that failed.
    pub errors: u64,
    /// The last failure, as logged.
    pub last_error: Option<String>,
}

#[derive(Clone)]
struct Session {
    token: String,
    /// When the login answered: the server issued the token no later than this.
    obtained: Instant,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_url)
            .field("credentials", &self.inner.credentials)
            .finish_non_exhaustive()
    }
}

/// Whether a call may be sent again after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Changes nothing: safe to repeat.
    Read,
    /// Changes the server: repeating could do it twice.
    Write,
}

/// One `/api/json` call before it is sent.
struct Call {
    method: &'static str,
    params: Vec<(&'static str, String)>,
    kind: Kind,
    /// Whether the login token goes along (calls that never look at it are sent without).
    with_token: bool,
    /// The largest answer read.
    limit: usize,
}

impl Call {
    fn read(method: &'static str) -> Call {
        Call {
            method,
            params: Vec::new(),
            kind: Kind::Read,
            with_token: true,
            limit: MAX_ANSWER,
        }
    }

    /// A call whose answer is a list that may be long: see [`stream`] for its bounds.
    fn list(method: &'static str) -> Call {
        Call {
            limit: stream::MAX_LIST_BYTES,
            ..Call::read(method)
        }
    }

    fn write(method: &'static str) -> Call {
        Call {
            kind: Kind::Write,
            ..Call::read(method)
        }
    }

    fn param(mut self, name: &'static str, value: impl ToString) -> Call {
        self.params.push((name, value.to_string()));
        self
    }

    fn without_token(mut self) -> Call {
        self.with_token = false;
        self
    }

    fn limit(mut self, limit: usize) -> Call {
        self.limit = limit;
        self
    }
}

impl Client {
    /// Checks the URL (http or https, a host, no query) and sets up the connection pool.
    /// Makes no request.
    pub fn new(config: ClientConfig) -> Result<Client> {
        let base_url = config.base_url.trim().trim_end_matches('/').to_owned();
        let shown = redact(&base_url);
        let parsed =
            Url::parse(&base_url).map_err(|err| Error::BadUrl(format!("{shown}: {err}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::BadUrl(format!(
                "{shown}: only http:// and https:// are supported"
            )));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(Error::BadUrl(format!("{shown}: no host")));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(Error::BadUrl(format!(
                "{shown}: give the installation root, without ?query or #fragment"
            )));
        }
        let endpoint = |path: &str| {
            Url::parse(&format!("{base_url}{path}"))
                .map_err(|err| Error::BadUrl(format!("{shown}: {err}")))
        };
        let api_url = endpoint("/api/json")?;
        let download_url = endpoint("/download/")?;
        let logged_in = !matches!(config.credentials, Credentials::Anonymous);
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .referer(false)
            .redirect(redirect_policy(logged_in))
            .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .user_agent(concat!("midasfs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| {
                Error::Io(std::io::Error::other(format!(
                    "cannot set up the HTTP client: {}",
                    super::error::error_chain(&err)
                )))
            })?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base_url,
                api_url,
                download_url,
                credentials: config.credentials,
                connect_timeout: config.connect_timeout,
                stall_timeout: config.stall_timeout,
                session: Mutex::new(None),
                login_lock: tokio::sync::Mutex::new(()),
                stats: Mutex::default(),
                download_bytes: Arc::default(),
                upload_bytes: Arc::default(),
            }),
        })
    }

    /// The installation root, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Requests and failures so far.
    pub fn stats(&self) -> ClientStats {
        let mut stats = self
            .inner
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        stats.download_bytes = self
            .inner
            .download_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        stats.upload_bytes = self
            .inner
            .upload_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        stats
    }

    fn count<T>(&self, counter: fn(&mut ClientStats) -> &mut u64, result: &Result<T>) {
        let mut stats = self.inner.stats.lock().unwrap_or_else(|p| p.into_inner());
        *counter(&mut stats) += 1;
        if let Err(err) = result {
            stats.errors += 1;
            stats.last_error = Some(err.to_string());
        }
    }

    /// Checks the server speaks Midas (`midas.version`), logs in when there are credentials
    /// (a password is first exchanged for the Default API key), and returns the logged-in user,
    /// or `None` when anonymous.
    pub async fn connect(&self) -> Result<Option<User>> {
        let version = self.version().await.map_err(|err| match err {
            Error::Http { status: 404, .. } => Error::NotMidas {
                url: redact(self.base_url()),
                detail: format!(
                    "no Midas API here (HTTP 404 for /api/json): is this the installation \
                     root? {API_MODULE_HINT}"
                ),
            },
            Error::NotMidas { url, detail } if detail.starts_with("the answer is not JSON") => {
                Error::NotMidas {
                    url,
                    detail: format!("{detail}; {API_MODULE_HINT}"),
                }
            }
            other => other,
        })?;
        debug!("{} runs Midas {version}", self.base_url());
        let Some(email) = self.inner.credentials.email() else {
            return Ok(None);
        };
        self.token().await?;
        match self.user_get_by_email(email).await? {
            Some(user) => Ok(Some(user)),
            None => Err(Error::Auth(format!(
                "logged in, but Midas finds no user with email {email}"
            ))),
        }
    }

    /// The server's version (`"3.4.2"` for the last Midas release).
    pub async fn version(&self) -> Result<String> {
        let call = Call::read("midas.version").without_token();
        let data = self.call(&call).await?;
        envelope::string_field(call.method, &data, "version")
    }

    pub async fn user_get_by_name(&self, first: &str, last: &str) -> Result<Option<User>> {
        let call = Call::read("midas.user.get")
            .param("firstname", first)
            .param("lastname", last);
        let data = self.call(&call).await?;
        envelope::decode_optional(call.method, data)
    }

    /// The user `id`, if the caller may see them (private users are hidden from others).
    pub async fn user_get_by_id(&self, id: Id) -> Result<Option<User>> {
        let call = Call::read("midas.user.get").param("user_id", id);
        let data = self.call(&call).await?;
        envelope::decode_optional(call.method, data)
    }

    pub async fn user_get_by_email(&self, email: &str) -> Result<Option<User>> {
        let call = Call::read("midas.user.get").param("email", email);
        let data = self.call(&call).await?;
        envelope::decode_optional(call.method, data)
    }

    /// Public users, at most `limit`, ordered by last name.
    pub async fn user_list(&self, limit: u32) -> Result<Vec<User>> {
        self.fetch(Call::list("midas.user.list").param("limit", limit))
            .await
    }

    /// The items named exactly `name` that the caller may read (`item.searchbyname`).
    pub async fn item_search_by_name(&self, name: &str) -> Result<Vec<Item>> {
        #[derive(serde::Deserialize)]
        struct Found {
            #[serde(default)]
            items: Vec<Item>,
        }
        let found: Found = self
            .fetch(Call::read("midas.item.searchbyname").param("name", name))
            .await?;
        Ok(found.items)
    }

    /// The modules the server has enabled (`midas.modules.list`): `api`, and others such as
    /// `solr`.
    pub async fn modules_list(&self) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Modules {
            #[serde(default)]
            modules: Vec<String>,
        }
        let call = Call::read("midas.modules.list").without_token();
        let found: Modules = self.fetch(call).await?;
        Ok(found.modules)
    }

    /// At most `limit` items the caller may read that match the Lucene `query`, in the
    /// server's order (`midas.solr.search.advanced`, only where the `solr` module is enabled).
    /// A query Solr cannot parse fails with code −1, `Syntax error in query`.
    pub async fn solr_search_advanced(&self, query: &str, limit: u32) -> Result<Vec<Item>> {
        let call = Call::read("midas.solr.search.advanced")
            .param("query", query)
            .param("limit", limit);
        let found: Vec<SolrItem> = self.fetch(call).await?;
        Ok(found.into_iter().map(Item::from).collect())
    }

    /// The folders from the top down to the object `uuid` that the caller may read
    /// (`path.from.root`; the object itself, when an item, is left out).
    pub async fn folders_from_root(&self, uuid: &str) -> Result<Vec<Folder>> {
        let call = Call::read("midas.path.from.root").param("uuid", uuid);
        let list: Vec<Value> = self.fetch(call).await?;
        list.into_iter()
            .filter(|node| node.get("item_id").is_none())
            .map(|node| envelope::decode("midas.path.from.root", node))
            .collect()
    }

    /// The top folders of the logged-in user (normally Private and Public); empty when anonymous.
    pub async fn user_folders(&self) -> Result<Vec<Folder>> {
        self.fetch(Call::read("midas.user.folders")).await
    }

    /// The communities the caller can see (for non-administrators: at most 20 public ones plus
    /// those they belong to).
    pub async fn community_list(&self) -> Result<Vec<Community>> {
        self.fetch(Call::list("midas.community.list")).await
    }

    pub async fn community_get_by_name(&self, name: &str) -> Result<Community> {
        self.fetch(Call::read("midas.community.get").param("name", name))
            .await
    }

    pub async fn folder_get(&self, id: Id) -> Result<Folder> {
        self.fetch(Call::read("midas.folder.get").param("id", id))
            .await
    }

    /// The readable subfolders and items of a folder (no paging; the folder's own permission is
    /// not checked by Midas).
    pub async fn folder_children(&self, id: Id) -> Result<Children> {
        self.fetch(Call::list("midas.folder.children").param("id", id))
            .await
    }

    /// Like [`Client::folder_children`], but fails with [`Error::TooLarge`] when the answer is
    /// longer than `limit` bytes (for listings nobody asked for yet).
    pub async fn folder_children_within(&self, id: Id, limit: usize) -> Result<Children> {
        self.fetch(
            Call::list("midas.folder.children")
                .param("id", id)
                .limit(limit.min(stream::MAX_LIST_BYTES)),
        )
        .await
    }

    /// The readable top folders of a community.
    pub async fn community_children(&self, id: Id) -> Result<Vec<Folder>> {
        let children: Children = self
            .fetch(Call::list("midas.community.children").param("id", id))
            .await?;
        Ok(children.folders)
    }

    /// An item with its head revision only (and that revision's bitstreams).
    pub async fn item_get(&self, id: Id) -> Result<Item> {
        self.fetch(
            Call::read("midas.item.get")
                .param("id", id)
                .param("head", 1),
        )
        .await
    }

    /// An item with every revision (and each revision's bitstreams): its history.
    pub async fn item_get_history(&self, id: Id) -> Result<Item> {
        self.fetch(Call::read("midas.item.get").param("id", id))
            .await
    }

    /// The metadata of the item's head revision; empty for an item without revisions (which
    /// Midas reports as an error).
    pub async fn item_get_metadata(&self, id: Id) -> Result<Vec<MetadataValue>> {
        match self
            .fetch(Call::read("midas.item.getmetadata").param("id", id))
            .await
        {
            Err(Error::Api {
                code: codes::INVALID_POLICY,
                message,
                ..
            }) if message.contains("at least one revision") => Ok(Vec::new()),
            other => other,
        }
    }

    /// Streams bytes `[offset, size)` of a bitstream whose size the caller knows, straight from
    /// `<base>/download/?bitstream=ID&offset=N` (the API's redirect puts the raw name in the URL,
    /// and Midas ignores `Range`).
    pub async fn download(&self, bitstream_id: Id, offset: u64, size: u64) -> Result<ByteStream> {
        self.download_some(bitstream_id, offset, size, None).await
    }

    /// [`Client::download`] for a reader that wants only the first `wanted` bytes (when given)
    /// and then drops the stream: the connection gets a receive buffer of about that size, so
    /// that the server sends little more than that before it notices. Midas has no way to ask
    /// for less than the rest of the file.
    pub async fn download_some(
        &self,
        bitstream_id: Id,
        offset: u64,
        size: u64,
        wanted: Option<u64>,
    ) -> Result<ByteStream> {
        // The kernel doubles what is asked (half of it for its own bookkeeping).
        let recv_buffer = wanted.map(|w| (w / 2).clamp(4096, 1 << 20) as u32);
        self.download_buffered(bitstream_id, offset, size, recv_buffer)
            .await
    }

    /// The first bytes of a bitstream of `size` bytes, for a read ahead of a program that may
    /// never come: the connection gets the smallest receive buffer the kernel allows, so that
    /// the server sends as little as it can past the few bytes read before the stream is dropped
    /// (a few more round trips on a slow network, in the background).
    pub async fn download_head(&self, bitstream_id: Id, size: u64) -> Result<ByteStream> {
        self.download_buffered(bitstream_id, 0, size, Some(1)).await
    }

    async fn download_buffered(
        &self,
        bitstream_id: Id,
        offset: u64,
        size: u64,
        recv_buffer: Option<u32>,
    ) -> Result<ByteStream> {
        if offset >= size {
            return Ok(ByteStream::empty());
        }
        let token = self.token().await?;
        let result = self
            .open_download(bitstream_id, offset, size, token.as_deref(), recv_buffer)
            .await;
        self.count(|s| &mut s.downloads, &result);
        let (Err(Error::Http { status, .. }), Some(used)) = (&result, &token) else {
            return result;
        };
        if *status == 404 {
            return result;
        }
        // Midas answers an expired authToken with a bare HTTP 500. A JSON call tells whether the
        // token is still good (and logs in again if not); with a new token, try once more.
        debug!("download of bitstream {bitstream_id} got HTTP {status}; checking the token");
        self.user_folders().await?;
        match self.fresh_token() {
            Some(fresh) if fresh != *used => {
                self.open_download(bitstream_id, offset, size, Some(&fresh), recv_buffer)
                    .await
            }
            _ => result,
        }
    }

    pub async fn folder_create(&self, parent: Id, name: &str) -> Result<Folder> {
        self.fetch(
            Call::write("midas.folder.create")
                .param("name", name)
                .param("parentid", parent),
        )
        .await
    }

    /// Renames a folder (`folder.create` with its uuid). Midas does not check for a clash.
    pub async fn folder_rename(&self, folder_uuid: &str, name: &str) -> Result<Folder> {
        self.fetch(
            Call::write("midas.folder.create")
                .param("uuid", folder_uuid)
                .param("name", name),
        )
        .await
    }

    pub async fn folder_move(&self, id: Id, dst: Id) -> Result<Folder> {
        self.fetch(
            Call::write("midas.folder.move")
                .param("id", id)
                .param("dstfolderid", dst),
        )
        .await
    }

    /// Deletes a folder and, recursively, everything in it.
    pub async fn folder_delete(&self, id: Id) -> Result<()> {
        self.send(Call::write("midas.folder.delete").param("id", id))
            .await
    }

    /// Creates an empty item; Midas renames it `name (1)` on a clash (the reply has the name).
    pub async fn item_create(&self, parent: Id, name: &str) -> Result<Item> {
        self.fetch(
            Call::write("midas.item.create")
                .param("name", name)
                .param("parentid", parent),
        )
        .await
    }

    /// Renames an item (`item.create` with its uuid); `rename_bitstream` also renames the head
    /// revision's bitstream when it is the only one (the item must have a revision then).
    pub async fn item_rename(
        &self,
        item_uuid: &str,
        name: &str,
        rename_bitstream: bool,
    ) -> Result<Item> {
        let mut call = Call::write("midas.item.create")
            .param("uuid", item_uuid)
            .param("name", name);
        if rename_bitstream {
            // Midas tests this flag for presence: it must be absent to be off.
            call = call.param("updatebitstream", 1);
        }
        self.fetch(call).await
    }

    /// Moves an item between folders; Midas renames it on a clash (the reply has the name).
    pub async fn item_move(&self, id: Id, src: Id, dst: Id) -> Result<Item> {
        self.fetch(
            Call::write("midas.item.move")
                .param("id", id)
                .param("srcfolderid", src)
                .param("dstfolderid", dst),
        )
        .await
    }

    /// Makes an item readable by anyone (`public`) or not: the anonymous group's READ policy
    /// is added (`item.add.policygroup`) or removed (`item.remove.policygroup`). Other users'
    /// and groups' policies stay. Needs ADMIN on the item.
    pub async fn item_set_public(&self, id: Id, public: bool) -> Result<()> {
        let call = if public {
            Call::write("midas.item.add.policygroup")
                .param("item_id", id)
                .param("group_id", ANONYMOUS_GROUP)
                .param("policy", "Read")
        } else {
            Call::write("midas.item.remove.policygroup")
                .param("item_id", id)
                .param("group_id", ANONYMOUS_GROUP)
        };
        self.send(call).await
    }

    /// Makes a folder alone readable by anyone (`public`) or not: the anonymous group's READ
    /// policy on it is added (`folder.add.policygroup`) or removed (`folder.remove.policygroup`),
    /// without `recursive`, so what is in it keeps its own. Needs ADMIN on the folder.
    pub async fn folder_set_public(&self, id: Id, public: bool) -> Result<Changed> {
        let call = if public {
            Call::write("midas.folder.add.policygroup")
                .param("folder_id", id)
                .param("group_id", ANONYMOUS_GROUP)
                .param("policy", "Read")
        } else {
            Call::write("midas.folder.remove.policygroup")
                .param("folder_id", id)
                .param("group_id", ANONYMOUS_GROUP)
        };
        self.fetch(call).await
    }

    /// Makes a folder public or private and gives everything below it the folder's policies
    /// (`folder.set.privacy.recursive`); the answer counts the objects changed and those the
    /// caller could not change (no ADMIN on them). Needs ADMIN on the folder.
    pub async fn folder_set_privacy_recursive(&self, id: Id, public: bool) -> Result<Changed> {
        self.fetch(
            Call::write("midas.folder.set.privacy.recursive")
                .param("folder_id", id)
                .param("privacy", if public { "Public" } else { "Private" }),
        )
        .await
    }

    /// Deletes an item from every folder it is in.
    pub async fn item_delete(&self, id: Id) -> Result<()> {
        self.send(Call::write("midas.item.delete").param("id", id))
            .await
    }

    /// Sets (or replaces) a text metadata value on the item's head revision.
    pub async fn item_set_metadata(
        &self,
        id: Id,
        element: &str,
        qualifier: &str,
        value: &str,
    ) -> Result<()> {
        self.send(
            Call::write("midas.item.setmetadata")
                .param("itemId", id)
                .param("element", element)
                .param("qualifier", qualifier)
                .param("value", value),
        )
        .await
    }

    pub async fn item_delete_metadata(&self, id: Id, element: &str, qualifier: &str) -> Result<()> {
        self.send(
            Call::write("midas.item.deletemetadata")
                .param("itemid", id)
                .param("element", element)
                .param("qualifier", qualifier),
        )
        .await
    }

    /// Renames a bitstream. Midas does not check for a clash.
    pub async fn bitstream_rename(&self, id: Id, name: &str) -> Result<()> {
        self.send(
            Call::write("midas.bitstream.edit")
                .param("id", id)
                .param("name", name),
        )
        .await
    }

    /// Deletes a bitstream; its revision stays, even when empty.
    pub async fn bitstream_delete(&self, id: Id) -> Result<()> {
        self.send(Call::write("midas.bitstream.delete").param("id", id))
            .await
    }

    /// A token for uploading `filename` into an item, or `None` when Midas deduplicated the file
    /// by `checksum` (it then added the bitstream itself, or did nothing when the head revision
    /// already has that name).
    pub async fn upload_token(
        &self,
        item_id: Id,
        filename: &str,
        checksum: Option<&str>,
    ) -> Result<Option<String>> {
        let mut call = Call::write("midas.upload.generatetoken")
            .param("itemid", item_id)
            .param("filename", filename);
        if let Some(checksum) = checksum {
            call = call.param("checksum", checksum);
        }
        let data = self.call(&call).await?;
        let token = envelope::string_field(call.method, &data, "token")?;
        Ok(Some(token).filter(|token| !token.is_empty()))
    }

    /// Creates an item named `filename` in `folder` and a token to upload into it, in one call
    /// (`generatetoken` with `folderid`). Midas names the new item only inside the token
    /// (`<user>/<item>/<random>`), and renames it on a name clash: the upload's answer has the
    /// final name. No checksum: a deduplicated answer would not say which item was made.
    pub async fn upload_token_new_item(&self, folder: Id, filename: &str) -> Result<(Id, String)> {
        let call = Call::write("midas.upload.generatetoken")
            .param("folderid", folder)
            .param("filename", filename);
        let data = self.call(&call).await?;
        let token = envelope::string_field(call.method, &data, "token")?;
        let item_id = token
            .split('/')
            .nth(1)
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| Error::Decode {
                method: call.method.into(),
                detail: "the upload token does not name the new item".into(),
            })?;
        Ok((item_id, token))
    }

    /// How many bytes of an upload the server already holds (to resume from there).
    pub async fn upload_offset(&self, upload_token: &str) -> Result<u64> {
        let call = Call::read("midas.upload.getoffset")
            .param("uploadtoken", upload_token)
            .without_token();
        let data = self.call(&call).await?;
        let offset = envelope::string_field(call.method, &data, "offset")?;
        if offset.is_empty() {
            // What Midas answers for a token it does not know; `perform` would say -141.
            return Err(Error::Api {
                method: call.method.into(),
                code: codes::INVALID_UPLOAD_TOKEN,
                message: "Invalid upload token (no upload in progress)".into(),
            });
        }
        offset.trim().parse().map_err(|_| Error::Decode {
            method: call.method.into(),
            detail: format!("offset {offset:?} is not a number"),
        })
    }

    /// Sends bytes `[offset, length)` of `file` for an upload of `length` bytes in all, streamed
    /// from disk. Not retried: after a failure, resume with [`Client::upload_offset`].
    #[allow(clippy::too_many_arguments)] // the wire call's own parameters
    pub async fn upload_perform(
        &self,
        upload_token: &str,
        item_id: Id,
        filename: &str,
        file: &Path,
        offset: u64,
        length: u64,
        revision: UploadRevision,
    ) -> Result<Item> {
        let part = UploadPart {
            token: upload_token,
            item_id,
            filename,
            file,
            offset,
            end: length,
        };
        let data = self.send_upload_part(&part, length, revision).await?;
        envelope::decode("midas.upload.perform", data)
    }

    /// Sends bytes `[offset, end)` of `file` as one part of an upload whose total length is not
    /// known yet. The length declared is one byte more than `end`, so Midas keeps what arrived
    /// and answers that the upload is incomplete (−105, "Failed to upload file - <held>/…"):
    /// the answer is that number of bytes held. The last part goes with
    /// [`Client::upload_perform`], from the offset this returned.
    pub async fn upload_perform_part(&self, part: &UploadPart<'_>) -> Result<u64> {
        let end = part.end;
        let method = "midas.upload.perform";
        match self
            .send_upload_part(part, end + 1, UploadRevision::Head)
            .await
        {
            Err(Error::Api {
                code: codes::UPLOAD_FAILED,
                message,
                ..
            }) => held_after_short_upload(&message).ok_or_else(|| Error::Decode {
                method: method.into(),
                detail: format!("no byte count in {message:?}"),
            }),
            Err(err) => Err(err),
            Ok(_) => Err(Error::Decode {
                method: method.into(),
                detail: format!("an upload of {} bytes was complete after {end}", end + 1),
            }),
        }
    }

    /// One `perform` carrying bytes `[offset, end)` of an upload declared `length` bytes long.
    async fn send_upload_part(
        &self,
        part: &UploadPart<'_>,
        length: u64,
        revision: UploadRevision,
    ) -> Result<Value> {
        let method = "midas.upload.perform";
        let body_len = part.end.checked_sub(part.offset).ok_or_else(|| {
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("upload offset {} is past {}", part.offset, part.end),
            ))
        })?;
        let mut call = Call::write(method)
            .param("uploadtoken", part.token)
            .param("filename", part.filename)
            .param("length", length)
            .param("itemid", part.item_id)
            .without_token();
        if revision == UploadRevision::Head {
            call = call.param("revision", "head");
        }
        let url = self.upload_url(&call);
        let shown = redact(url.as_str());
        let started = Instant::now();
        let stall = self.inner.stall_timeout;
        let mut answer_cap = stall * CALL_CAP_FACTOR;
        if part.offset > 0 {
            answer_cap += Duration::from_secs(length / REHASH_BYTES_PER_SEC);
        }
        if body_len >= transfer::PLAIN_UPLOAD_MIN {
            let plain = transfer::PlainUpload {
                url: &url,
                shown: &shown,
                method,
                file: part.file,
                offset: part.offset,
                len: body_len,
                connect_timeout: self.inner.connect_timeout,
                stall,
                answer_cap,
                limit: MAX_ANSWER,
                sent: &self.inner.upload_bytes,
            };
            let data = match transfer::plain_upload(&plain).await {
                Ok(None) => None,
                Ok(Some(reply)) => Some(envelope_of(method, &shown, reply.status, &reply.body)),
                Err(err) => Some(Err(err)),
            };
            if let Some(data) = data {
                self.count(|s| &mut s.upload_parts, &data);
                debug!(
                    "{method} of {body_len} bytes {} in {:?} (sendfile)",
                    outcome(&data),
                    started.elapsed()
                );
                return data;
            }
        }
        let (body, progress) = transfer::file_body(
            part.file,
            part.offset,
            body_len,
            Arc::clone(&self.inner.upload_bytes),
        )
        .await?;
        let request = self
            .inner
            .http
            .put(url)
            .header(CONTENT_LENGTH, body_len)
            .body(body);
        let response = transfer::send_watched(
            method,
            &shown,
            request,
            &progress,
            stall,
            self.inner.connect_timeout,
            answer_cap,
        )
        .await;
        if response.is_err() {
            self.count(|s| &mut s.upload_parts, &response);
        }
        let data = self.answer(method, &shown, response?, MAX_ANSWER).await;
        self.count(|s| &mut s.upload_parts, &data);
        debug!(
            "{method} of {body_len} bytes {} in {:?}",
            outcome(&data),
            started.elapsed()
        );
        data
    }

    // ---- calls ----

    /// Sends a call and decodes its data.
    async fn fetch<T: DeserializeOwned + Send + 'static>(&self, call: Call) -> Result<T> {
        self.call(&call).await
    }

    /// Sends a call whose data does not matter (deletes answer `""`, setters `"1"`).
    async fn send(&self, call: Call) -> Result<()> {
        self.call::<Value>(&call).await.map(drop)
    }

    /// Sends a call with the token and decodes its data as it arrives; when Midas says the
    /// token is invalid, logs in again and sends it once more.
    async fn call<T: DeserializeOwned + Send + 'static>(&self, call: &Call) -> Result<T> {
        let token = if call.with_token {
            self.token().await?
        } else {
            None
        };
        match self.call_with_token(call, token.as_deref()).await {
            Err(err) if err.is_invalid_token() && token.is_some() => {
                debug!("{}: token refused, logging in again", call.method);
                let fresh = self.renew(token.as_deref()).await?;
                self.call_with_token(call, Some(&fresh)).await
            }
            other => other,
        }
    }

    async fn call_with_token<T: DeserializeOwned + Send + 'static>(
        &self,
        call: &Call,
        token: Option<&str>,
    ) -> Result<T> {
        let url = self.api_url(call);
        let shown = redact(url.as_str());
        let body = form_body(&call.params, token.map(|token| ("token", token)));
        let started = Instant::now();
        let result = self
            .with_retries(call.method, call.kind, || async {
                let result = self
                    .post(call.method, &url, &shown, &body, call.limit)
                    .await;
                self.count(|s| &mut s.calls, &result);
                result
            })
            .await;
        debug!(
            "{} {} in {:?}",
            call.method,
            outcome(&result),
            started.elapsed()
        );
        result
    }

    /// Runs `attempt`, again after a transient failure when `kind` allows it, within a total of
    /// [`CALL_CAP_FACTOR`] stall timeouts.
    async fn with_retries<T, F, Fut>(&self, method: &str, kind: Kind, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let cap = self.inner.stall_timeout * CALL_CAP_FACTOR;
        let deadline = Instant::now() + cap;
        let mut pauses = READ_BACKOFF.iter();
        loop {
            let result = tokio::time::timeout_at(deadline, attempt())
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Timeout {
                        method: method.to_owned(),
                        after: cap,
                    })
                });
            let err = match result {
                Err(err) if kind == Kind::Read && err.is_transient() => err,
                other => return other,
            };
            match pauses.next() {
                Some(&pause) if Instant::now() + pause < deadline => {
                    debug!("{method}: {err}; trying again in {pause:?}");
                    tokio::time::sleep(pause).await;
                }
                _ => return Err(err),
            }
        }
    }

    /// One POST of a JSON call, its parameters in `body`, its answer at most `limit` bytes,
    /// decoded while it arrives.
    async fn post<T: DeserializeOwned + Send + 'static>(
        &self,
        method: &str,
        url: &Url,
        shown: &str,
        body: &str,
        limit: usize,
    ) -> Result<T> {
        let request = self
            .inner
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, FORM)
            .body(body.to_owned());
        let response = self.first_byte(method, shown, request).await?;
        let status = response.status();
        if !status.is_success() {
            // The body is not read: Midas's error pages may echo the request's token.
            debug!("{method}: HTTP {status}");
            return Err(Error::Http {
                method: method.to_owned(),
                status: status.as_u16(),
            });
        }
        let stall = self.inner.stall_timeout;
        stream::decode_response(method, shown, response, stall, limit).await
    }

    /// Sends a request and waits for the answer's head, at most a connect plus a stall timeout.
    async fn first_byte(
        &self,
        method: &str,
        shown: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let wait = self.inner.connect_timeout + self.inner.stall_timeout;
        match tokio::time::timeout(wait, request.send()).await {
            Err(_) => Err(Error::Timeout {
                method: method.to_owned(),
                after: wait,
            }),
            Ok(Err(err)) => Err(transfer::transport_error(method, shown, err, wait)),
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// The envelope's data from an answer, or the error it stands for.
    async fn answer(
        &self,
        method: &str,
        shown: &str,
        response: reqwest::Response,
        limit: usize,
    ) -> Result<Value> {
        let status = response.status();
        let stall = self.inner.stall_timeout;
        let body = transfer::read_body(method, shown, response, stall, limit).await?;
        envelope_of(method, shown, status.as_u16(), &body)
    }

    /// The URL of a call: `…/api/json?method=…`, its parameters going in the body.
    fn api_url(&self, call: &Call) -> Url {
        let mut url = self.inner.api_url.clone();
        url.query_pairs_mut().append_pair("method", call.method);
        url
    }

    /// The URL of `upload.perform`, whose body is the file: its parameters, the upload token
    /// among them, can only go in the query.
    fn upload_url(&self, call: &Call) -> Url {
        let mut url = self.api_url(call);
        {
            let mut query = url.query_pairs_mut();
            for (name, value) in &call.params {
                query.append_pair(name, value);
            }
        }
        url
    }

    async fn open_download(
        &self,
        bitstream_id: Id,
        offset: u64,
        size: u64,
        token: Option<&str>,
        recv_buffer: Option<u32>,
    ) -> Result<ByteStream> {
        let mut url = self.inner.download_url.clone();
        url.query_pairs_mut()
            .append_pair("bitstream", &bitstream_id.to_string())
            .append_pair("offset", &offset.to_string());
        // Midas's download controller reads `authToken` from a POST body as well: a token goes
        // there, out of the URL. Anonymous downloads stay plain GETs.
        let form = token.map(|token| form_body(&[], Some(("authToken", token))));
        let shown = redact(url.as_str());
        let started = Instant::now();
        let result = self
            .with_retries(DOWNLOAD, Kind::Read, || async {
                let expected = size - offset;
                let stall = self.inner.stall_timeout;
                let connect = self.inner.connect_timeout;
                match transfer::plain_get(&url, form.as_deref(), connect, stall, recv_buffer)
                    .await?
                {
                    PlainAnswer::Body(body) => {
                        let counter = Arc::clone(&self.inner.download_bytes);
                        return Ok(ByteStream::on_socket(body, expected, stall).counting(counter));
                    }
                    PlainAnswer::Status(status) => {
                        return Err(Error::Http {
                            method: DOWNLOAD.into(),
                            status,
                        })
                    }
                    PlainAnswer::LeaveToClient => {}
                }
                let request = match &form {
                    Some(form) => self
                        .inner
                        .http
                        .post(url.clone())
                        .header(CONTENT_TYPE, FORM)
                        .body(form.clone()),
                    None => self.inner.http.get(url.clone()),
                };
                let response = self.first_byte(DOWNLOAD, &shown, request).await?;
                let status = response.status();
                if !status.is_success() {
                    return Err(Error::Http {
                        method: DOWNLOAD.into(),
                        status: status.as_u16(),
                    });
                }
                let counter = Arc::clone(&self.inner.download_bytes);
                Ok(ByteStream::new(response, expected, stall).counting(counter))
            })
            .await;
        debug!(
            "{DOWNLOAD} of bitstream {bitstream_id} from {offset} {} in {:?}",
            outcome(&result),
            started.elapsed()
        );
        result
    }

    // ---- login ----

    /// The token to send, logging in first when there is none or it is known to have expired.
    async fn token(&self) -> Result<Option<String>> {
        if matches!(self.inner.credentials, Credentials::Anonymous) {
            return Ok(None);
        }
        match self.fresh_token() {
            Some(token) => Ok(Some(token)),
            None => self.renew(None).await.map(Some),
        }
    }

    /// The current token unless it is older than Midas's lifetime. Measured from our login, so
    /// past that age it has certainly expired, and a new login gives a new token (a login
    /// before expiry only returns the same token again).
    fn fresh_token(&self) -> Option<String> {
        lock(&self.inner.session)
            .as_ref()
            .filter(|session| session.obtained.elapsed() < TOKEN_LIFETIME)
            .map(|session| session.token.clone())
    }

    /// Logs in, unless another caller did while this one waited for the lock: then that
    /// caller's token is used, as long as it is not the one the server just refused.
    async fn renew(&self, refused: Option<&str>) -> Result<String> {
        let _login = self.inner.login_lock.lock().await;
        if let Some(token) = self.fresh_token() {
            if Some(token.as_str()) != refused {
                return Ok(token);
            }
        }
        let token = self.login().await?;
        *lock(&self.inner.session) = Some(Session {
            token: token.clone(),
            obtained: Instant::now(),
        });
        Ok(token)
    }

    async fn login(&self) -> Result<String> {
        let (email, api_key) = match &self.inner.credentials {
            Credentials::Anonymous => {
                return Err(Error::Auth("no credentials to log in with".into()))
            }
            Credentials::ApiKey { email, api_key } => (email, api_key.clone()),
            Credentials::Password { email, password } => {
                (email, self.default_api_key(email, password).await?)
            }
        };
        let call = Call::read("midas.login")
            .param("email", email)
            .param("apikey", api_key)
            .param("appname", APP_NAME)
            .without_token();
        let data: Value = self
            .call_with_token(&call, None)
            .await
            .map_err(|err| login_refused(email, err))?;
        let multi_factor = || {
            Error::Auth(format!(
                "Midas asks {email} for a one-time password (multi-factor login), which midasfs does not support"
            ))
        };
        if data.get("mfa_token_id").is_some() {
            return Err(multi_factor());
        }
        let token = envelope::string_field(call.method, &data, "token")?;
        if token.len() < MIN_TOKEN_LEN {
            return Err(multi_factor());
        }
        debug!("logged in to {} as {email}", self.base_url());
        Ok(token)
    }

    /// Exchanges a password for the account's Default API key.
    pub async fn default_api_key(&self, email: &str, password: &str) -> Result<String> {
        let call = Call::read("midas.user.apikey.default")
            .param("email", email)
            .param("password", password)
            .without_token();
        let data = self
            .call_with_token(&call, None)
            .await
            .map_err(|err| match err {
                Error::Api {
                    code: codes::INVALID_PARAMETER,
                    message,
                    ..
                } if message == "Login failed" => {
                    Error::Auth(format!("wrong email or password for {email}"))
                }
                Error::Api {
                    code: codes::INVALID_PARAMETER,
                    message,
                    ..
                } if message.contains("no default API key") => Error::Auth(format!(
                    "{email} has no Default API key: log in with an API key instead"
                )),
                other => other,
            })?;
        envelope::string_field(call.method, &data, "apikey")
    }
}

/// `name=value&…` of `params` and then `extra`, form-encoded.
fn form_body(params: &[(&'static str, String)], extra: Option<(&str, &str)>) -> String {
    let mut pairs = Url::parse("form:").expect("a valid URL");
    {
        let mut query = pairs.query_pairs_mut();
        for (name, value) in params {
            query.append_pair(name, value);
        }
        if let Some((name, value)) = extra {
            query.append_pair(name, value);
        }
    }
    pairs.query().unwrap_or_default().to_owned()
}

/// Which redirects are followed. A logged-in client's requests carry secrets (the token in a
/// body that a 307 or 308 sends again, an upload token in a URL), so it follows a redirect only
/// within the origin it first asked (scheme, host and port), or from http to https on the same
/// host; any other is refused with a log line and the call fails. An anonymous client has
/// nothing to give away and follows any redirect. No request carries a `Referer` (reqwest's
/// would hold the URL redirected from).
fn redirect_policy(logged_in: bool) -> redirect::Policy {
    redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        let Some(first) = attempt.previous().first() else {
            return attempt.follow();
        };
        if !logged_in || same_server(first, attempt.url()) {
            return attempt.follow();
        }
        let refused = format!(
            "refusing the redirect from {} to {}: another origin must not see the login token",
            origin(first),
            origin(attempt.url())
        );
        log::warn!("{refused}");
        attempt.error(refused)
    })
}

/// Whether `to` is `from`'s origin, or the same host reached over https.
fn same_server(from: &Url, to: &Url) -> bool {
    let same_origin = from.origin() == to.origin();
    let upgrade = from.scheme() == "http"
        && to.scheme() == "https"
        && from.host_str() == to.host_str()
        && to.username().is_empty();
    same_origin || upgrade
}

/// `scheme://host:port` of a URL, for log lines.
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// A clear message for the ways Midas refuses `midas.login`.
fn login_refused(email: &str, err: Error) -> Error {
    match err {
        // A known email with a wrong key: code 0 and no message at all.
        Error::Api { code: codes::MODEL_ERROR, .. } => Error::Auth(format!(
            "Midas refused the API key for {email} (a wrong key, or a Default key that changed with the password)"
        )),
        Error::Api { code: codes::INVALID_PARAMETER, message, .. } if message.starts_with("Unable to authenticate") => {
            Error::Auth(format!("Midas has no account with the email {email}"))
        }
        other => other,
    }
}

fn outcome<T>(result: &Result<T>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(err) => format!("failed ({err})"),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Which bytes of which file one `perform` sends: `[offset, end)` of `file`, as `filename` into
/// the item of the upload `token`.
pub struct UploadPart<'a> {
    pub token: &'a str,
    pub item_id: Id,
    pub filename: &'a str,
    pub file: &'a Path,
    pub offset: u64,
    pub end: u64,
}

/// The envelope's data from an answer's status and body, or the error it stands for.
fn envelope_of(method: &str, shown: &str, status: u16, body: &[u8]) -> Result<Value> {
    if !(200..300).contains(&status) {
        // The body is not logged: Midas's error pages may echo the request's token.
        debug!("{method}: HTTP {status} with {} bytes", body.len());
        return Err(Error::Http {
            method: method.to_owned(),
            status,
        });
    }
    envelope::parse(method, shown, body)
}

/// The bytes held, from Midas's "Failed to upload file - <held>/<length> bytes transferred".
fn held_after_short_upload(message: &str) -> Option<u64> {
    let counts = message.rsplit(" - ").next()?;
    let (held, _) = counts.split_once('/')?;
    held.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::held_after_short_upload;

    #[test]
    fn the_held_count_is_read_from_an_incomplete_upload_answer() {
        let message = "Failed to upload file - 33554432/33554433 bytes transferred";
        assert_eq!(held_after_short_upload(message), Some(33_554_432));
        assert_eq!(held_after_short_upload("Upload failed"), None);
    }
}
