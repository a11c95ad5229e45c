//! `midasfs serve`: a Midas-compatible server (the Midas Server 3.4.2 wire protocol) on a local
//! store, and `midasfs admin` to add users and communities to that store.
//!
//! - [`store`]: SQLite schema, policies, object creation; [`wire`]: parameters and envelope.
//! - `api/`: `/api/json` methods by group; [`download`]: the `/download/` controller.
//! - `conn`: connections able to send Midas's short-body downloads; `zipstream`: ZIP output.

mod api;
mod conn;
mod demo;
mod download;
pub mod store;
mod threads;
mod throttle;
pub mod wire;
mod zipstream;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use futures_util::FutureExt;
use rusqlite::OptionalExtension;
use serde_json::json;

use crate::cli::{AdminAction, AdminArgs, ServeArgs};
use crate::midas::codes;
use crate::CliResult;
pub use api::Module;
use api::{resolve, Call, Reply, Resolved};
use store::{create_community, create_user, random_alnum, Store};
use wire::{envelope, html_response, ApiError, Params};

/// Settings fixed at start.
pub struct Config {
    pub token_ttl: u64,
    pub title: String,
    pub latency: Duration,
    /// Modules enabled besides `api` (`--modules`).
    pub modules: Vec<api::Module>,
}

/// Request counters for `/__midasfs/stats`.
#[derive(Default)]
pub struct Stats {
    requests: AtomicU64,
    download_requests: AtomicU64,
    bytes_downloaded: AtomicU64,
    bytes_uploaded: AtomicU64,
    methods: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
    fn count_method(&self, name: &str) {
        *self
            .methods
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_default() += 1;
    }
    pub fn count_download(&self) {
        self.download_requests.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add_downloaded(&self, n: u64) {
        self.bytes_downloaded.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_uploaded(&self, n: u64) {
        self.bytes_uploaded.fetch_add(n, Ordering::Relaxed);
    }
    fn snapshot(&self) -> serde_json::Value {
        let methods = self
            .methods
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        json!({
            "requests": self.requests.load(Ordering::Relaxed),
            "methods": methods,
            "download_requests": self.download_requests.load(Ordering::Relaxed),
            "bytes_downloaded": self.bytes_downloaded.load(Ordering::Relaxed),
            "bytes_uploaded": self.bytes_uploaded.load(Ordering::Relaxed),
        })
    }
}

/// Everything the request handlers share.
pub struct Shared {
    pub store: Store,
    pub config: Config,
    pub stats: Stats,
    /// Upload tokens being written to: `getoffset` and another `perform` wait for them.
    pub upload_writers: api::uploads::UploadWriters,
    /// The MD5 state of uploads sent in parts.
    pub partial_hashes: api::uploads::PartialHashes,
    /// Failed logins, to refuse guessing.
    pub logins: throttle::LoginThrottle,
}

impl Shared {
    /// A server's state over `store`, with nothing in flight yet.
    pub fn new(store: Store, config: Config) -> Shared {
        Shared {
            store,
            config,
            stats: Stats::default(),
            upload_writers: Default::default(),
            partial_hashes: Default::default(),
            logins: Default::default(),
        }
    }

    /// For unit tests: a server's state over `store`, its tokens valid for an hour, with no
    /// title, latency or modules.
    #[cfg(test)]
    pub fn for_tests(store: Store) -> Shared {
        Shared::new(
            store,
            Config {
                token_ttl: 3600,
                title: String::new(),
                latency: Duration::ZERO,
                modules: Vec::new(),
            },
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

fn init_logging() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .try_init();
}

/// The administrator to report at start: created on first start, else the first admin.
struct AdminInfo {
    email: String,
    apikey: String,
    generated_password: Option<String>,
}

fn ensure_admin(
    store: &Store,
    args: &ServeArgs,
    admin_password: Option<String>,
) -> Result<AdminInfo, ServeError> {
    let mut conn = store.lock();
    let existing: Option<(String, String)> = conn
        .query_row(
            "SELECT u.email, a.apikey FROM user u JOIN userapi a ON a.user_id = u.user_id AND a.application_name = 'Default' \
             WHERE u.admin = 1 ORDER BY u.user_id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(store::StoreError::from)?;
    if let Some((email, apikey)) = existing {
        return Ok(AdminInfo {
            email,
            apikey,
            generated_password: None,
        });
    }
    let generated = admin_password.is_none().then(|| random_alnum(16));
    let password = admin_password
        .or_else(|| generated.clone())
        .unwrap_or_default();
    let tx = conn.transaction().map_err(store::StoreError::from)?;
    let user = create_user(
        &tx,
        &args.admin_email,
        &password,
        &args.admin_firstname,
        &args.admin_lastname,
        true,
    )?;
    tx.commit().map_err(store::StoreError::from)?;
    drop(conn);
    if args.demo {
        demo::seed(store, user.user_id)?;
    }
    Ok(AdminInfo {
        email: args.admin_email.trim().to_lowercase(),
        apikey: user.apikey,
        generated_password: generated,
    })
}

pub fn run(args: ServeArgs) -> CliResult {
    init_logging();
    let admin_password = password_from(
        args.admin_password.is_some(),
        "--admin-password",
        args.admin_password_file.as_deref(),
        args.admin_password_stdin,
    )?;
    let store = Store::open(&args.data)?;
    let admin = ensure_admin(&store, &args, admin_password)?;
    let shared = Arc::new(Shared::new(
        store,
        Config {
            token_ttl: args.token_ttl,
            title: args.title.clone(),
            latency: Duration::from_millis(args.latency),
            modules: args.modules.clone(),
        },
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let limits = conn::ConnLimits {
        max_connections: conn::fit_connection_limit(args.max_connections.max(1)),
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        header_timeout: Duration::from_secs(args.header_timeout.max(1)),
    };
    runtime.block_on(serve(shared, args.listen, limits, admin))?;
    Ok(())
}

async fn serve(
    shared: Arc<Shared>,
    listen: std::net::SocketAddr,
    limits: conn::ConnLimits,
    admin: AdminInfo,
) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen,
            source,
        })?;
    let local = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "midasfs serve listening on http://{local}")?;
        writeln!(out, "admin email: {}", admin.email)?;
        writeln!(out, "admin api key: {}", admin.apikey)?;
        if let Some(pw) = &admin.generated_password {
            writeln!(out, "admin password: {pw}")?;
        }
        out.flush()?;
    }
    let app = router(Arc::clone(&shared));
    tokio::spawn(api::uploads::remove_abandoned(Arc::clone(&shared)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        log::info!("stopping");
        let _ = stop_tx.send(true);
    });
    let server = conn::serve_connections(listener, app, limits, stop_rx.clone());
    let mut deadline_rx = stop_rx;
    tokio::select! {
        () = server => {}
        // Long downloads must not keep a stopping server alive forever.
        _ = async move {
            let _ = deadline_rx.wait_for(|stop| *stop).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        } => log::warn!("connections still open after 5 s; closing them"),
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/json", any(api_entry))
        .route("/api/rest", any(api_entry))
        .route("/api/index/json", any(api_entry))
        .route("/download", any(download::handle))
        .route("/download/", any(download::handle))
        .route("/download/{kind}/{id}", any(download::handle_path))
        .route("/download/{kind}/{id}/{*rest}", any(download::handle_path))
        .route("/__midasfs/stats", get(stats))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            around_request,
        ))
        .with_state(shared)
}

async fn not_found() -> Response {
    wire::error_page(StatusCode::NOT_FOUND, "Page not found")
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    let mut response = shared.stats.snapshot().to_string().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Query values never to log.
const SECRET_PARAMS: &[&str] = &["token", "authtoken", "apikey", "password", "uploadtoken"];

fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                format!("{k}=REDACTED")
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Counting, `--latency`, and an access log line without secrets.
async fn around_request(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    shared.stats.count_request();
    let is_stats = request.uri().path() == "/__midasfs/stats";
    if !is_stats && !shared.config.latency.is_zero() {
        tokio::time::sleep(shared.config.latency).await;
    }
    let verb = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(redact_query);
    let response = next.run(request).await;
    if !is_stats {
        let shown: String = query
            .map(|q| format!("?{q}"))
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        log::info!("{verb} {path}{shown} -> {}", response.status().as_u16());
    }
    response
}

/// Parameters from the query string plus an urlencoded or multipart POST body.
async fn read_params(request: Request) -> Result<(Params, Method), Response> {
    let verb = request.method().clone();
    let mut params = Params::from_query(request.uri().query());
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if verb == Method::POST && content_type.starts_with("application/x-www-form-urlencoded") {
        let body = axum::body::to_bytes(request.into_body(), wire::MAX_FORM_BODY)
            .await
            .map_err(|_| envelope(Err(ApiError::invalid("Request body too large"))))?;
        params.merge_body(wire::parse_urlencoded(&body));
    } else if verb == Method::POST && content_type.starts_with("multipart/form-data") {
        let mut multipart = axum::extract::Multipart::from_request(request, &())
            .await
            .map_err(|_| envelope(Err(ApiError::invalid("Malformed multipart body"))))?;
        let mut fields = Vec::new();
        let mut total = 0usize;
        while let Ok(Some(field)) = multipart.next_field().await {
            let Some(name) = field.name().map(str::to_owned) else {
                continue;
            };
            if field.file_name().is_some() {
                continue;
            }
            let Ok(value) = field.text().await else { break };
            total += value.len();
            if total > wire::MAX_FORM_BODY {
                return Err(envelope(Err(ApiError::invalid("Request body too large"))));
            }
            fields.push((name, value));
        }
        params.merge_body(fields);
    }
    Ok((params, verb))
}

async fn api_entry(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<conn::ConnHandle>,
    request: Request,
) -> Response {
    let base_url = format!(
        "http://{}",
        request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost")
    );
    let query_params = Params::from_query(request.uri().query());
    if let Some(name) = query_params.get("method") {
        if let Resolved::UploadPerform = resolve(name, &shared.config.modules) {
            shared.stats.count_method("midas.upload.perform");
            let verb = request.method().clone();
            let body: Body = request.into_body();
            let work = api::uploads::perform(Arc::clone(&shared), query_params, verb, body);
            let result = std::panic::AssertUnwindSafe(work)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(ApiError::internal("Internal server error")));
            // The body may be left unread (an error, or bytes past `length`): then the
            // connection cannot carry another request, so tell the client not to reuse it.
            let mut response = envelope(result);
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
    }
    let (params, verb) = match read_params(request).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let Some(name) = params.get("method").map(str::to_owned) else {
        return html_response(
            StatusCode::OK,
            "Inconsistent request: please set a method parameter".into(),
        );
    };
    let (canonical, handler) = match resolve(&name, &shared.config.modules) {
        Resolved::Method(canonical, handler) => (canonical, handler),
        Resolved::UploadOffset => {
            shared.stats.count_method("midas.upload.getoffset");
            return envelope(api::uploads::get_offset(&shared, &params).await);
        }
        // Named in a form body: the body is already consumed, so nothing can be uploaded.
        Resolved::UploadPerform => {
            return envelope(Err(ApiError::new(
                codes::UPLOAD_FAILED,
                "Failed to upload file - 0/0 bytes transferred",
            )))
        }
        Resolved::Unknown => {
            shared.stats.count_method("unknown");
            return envelope(Err(ApiError::new(
                codes::INVALID_TOKEN,
                format!("Server error. Requested method {name} does not exist."),
            )));
        }
    };
    shared.stats.count_method(&format!("midas.{canonical}"));
    let work_shared = Arc::clone(&shared);
    let client = conn.remote_ip();
    let outcome = tokio::task::spawn_blocking(move || {
        let call = Call {
            params: &params,
            verb: &verb,
            shared: &work_shared,
            base_url: &base_url,
            client,
        };
        handler.run(&call)
    })
    .await;
    match outcome {
        Ok(Ok(Reply::Json(data))) => envelope(Ok(data)),
        Ok(Ok(Reply::Redirect(location))) => redirect(&location),
        Ok(Err(err)) => envelope(Err(err)),
        Err(join_error) => {
            log::error!("method {canonical} panicked: {join_error}");
            envelope(Err(ApiError::internal("Internal server error")))
        }
    }
}

/// 302 with an empty body, `Location` a path as Midas sends it.
fn redirect(location: &str) -> Response {
    let mut response = html_response(StatusCode::FOUND, String::new());
    match HeaderValue::from_str(location) {
        Ok(value) => {
            response.headers_mut().insert(header::LOCATION, value);
            response
        }
        Err(_) => envelope(Err(ApiError::internal("Invalid download location"))),
    }
}

/// A password from `--…-password-file FILE` (its first line) or standard input (first line),
/// never from the arguments: every user of the machine can read those (`ps`, /proc).
fn password_from(
    given_in_arguments: bool,
    option: &str,
    file: Option<&std::path::Path>,
    stdin: bool,
) -> Result<Option<String>, String> {
    if given_in_arguments {
        return Err(format!(
            "{option} is refused: other users of this machine can read the arguments of a              process; use {option}-file FILE or {option}-stdin"
        ));
    }
    let text = match (file, stdin) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {option}-file {}: {e}", path.display()))?,
        (None, true) => {
            // One line: a user typing it need not end the input too.
            let mut text = String::new();
            std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut text)
                .map_err(|e| format!("cannot read {option}-stdin: {e}"))?;
            text
        }
        (None, false) => return Ok(None),
    };
    let password = text.lines().next().unwrap_or("").to_owned();
    if password.is_empty() {
        return Err(format!("{option}: the password is empty"));
    }
    Ok(Some(password))
}

/// `midasfs admin`: change the store directly (SQLite lets this run beside the server).
pub fn admin(args: AdminArgs) -> CliResult {
    init_logging();
    // Read before the store is opened: a refused or unreadable password changes nothing.
    let password = match &args.action {
        AdminAction::AddUser {
            password,
            password_file,
            password_stdin,
            ..
        } => password_from(
            password.is_some(),
            "--password",
            password_file.as_deref(),
            *password_stdin,
        )?
        .ok_or("add-user needs --password-file FILE or --password-stdin")?,
        AdminAction::AddCommunity { .. } => String::new(),
    };
    let store = Store::open(&args.data)?;
    let mut conn = store.lock();
    let tx = conn.transaction()?;
    match args.action {
        AdminAction::AddUser {
            email,
            firstname,
            lastname,
            admin,
            ..
        } => {
            let user = create_user(&tx, &email, &password, &firstname, &lastname, admin)?;
            tx.commit()?;
            println!("user id: {}", user.user_id);
            println!("api key: {}", user.apikey);
        }
        AdminAction::AddCommunity {
            name,
            description,
            private,
            moderator,
        } => {
            let moderator_id: Option<i64> = match &moderator {
                Some(email) => Some(
                    tx.query_row(
                        "SELECT user_id FROM user WHERE email = ?1",
                        [email.to_lowercase()],
                        |r| r.get(0),
                    )
                    .optional()?
                    .ok_or_else(|| ApiError::invalid(format!("no user with email {email}")))?,
                ),
                None => None,
            };
            let community =
                create_community(&tx, &name, &description, private, !private, None, None)?;
            if let Some(user_id) = moderator_id {
                tx.execute(
                    "INSERT OR IGNORE INTO user2group (user_id, group_id) SELECT ?1, moderatorgroup_id FROM community WHERE community_id = ?2 \
                     UNION SELECT ?1, membergroup_id FROM community WHERE community_id = ?2",
                    rusqlite::params![user_id, community.community_id],
                )?;
            }
            tx.commit()?;
            println!("community id: {}", community.community_id);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_from_logged_queries() {
        assert_eq!(
            redact_query("method=midas.login&apikey=abc&email=a%40b&token=T&uploadtoken=1/2/x&authToken=Z"),
            "method=midas.login&apikey=REDACTED&email=a%40b&token=REDACTED&uploadtoken=REDACTED&authToken=REDACTED"
        );
    }
}
