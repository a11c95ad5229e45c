//! The server a test talks to: `midasfs serve` as a child process on a fresh temporary store, or,
//! for the tests that run on both ([`TestServer::any`]), the real Midas Server that the environment
//! names (see [`real`]).
//!
//! A spawned server is killed when the [`TestServer`] is dropped, also while a failing test
//! unwinds, so no test leaves a process behind. On a real server a test works in folders of its
//! own ([`TestServer::private`], [`TestServer::fresh`]), deleted when it passes.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

use super::real;
use serde_json::Value;

/// The administrator of every test server (the same as in the real-server captures).
pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "adminpass123";

/// How long a server may take to start and announce its address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` waits after SIGTERM before it kills.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often `restart` tries to bind the old port again (it may linger for a moment).
const RESTART_ATTEMPTS: u32 = 25;

pub struct TestServer {
    /// Base URL, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub url: String,
    pub email: String,
    pub password: String,
    /// The administrator's Default API key.
    pub api_key: String,
    /// The store: `store/` inside a temporary directory that lives as long as the server value
    /// (`_data`), so that a test can check that nothing is written beside it.
    pub data_dir: PathBuf,
    pub port: u16,
    extra_args: Vec<String>,
    /// The open-file limit (soft, hard) the server starts with, when not inherited.
    nofile: Option<(u64, u64)>,
    child: Option<Child>,
    http: reqwest::blocking::Client,
    /// The configured real Midas instead of a child (see [`real`]).
    real: Option<real::Real>,
    /// The administrator's folder name under `users/` (`First_Last`), once asked for.
    home: OnceLock<String>,
    /// The test's own folder in the administrator's Private folder, once made.
    private: OnceLock<String>,
    /// Folders made for this test on a real server (ids), deleted when the test passes.
    made: Mutex<Vec<String>>,
    _data: tempfile::TempDir,
}

/// What the server printed at start.
struct Announcement {
    url: String,
    api_key: String,
}

impl TestServer {
    /// A `midasfs serve` on a fresh store with the administrator [`ADMIN_EMAIL`] /
    /// [`ADMIN_PASSWORD`], whatever the environment names: for the tests of `serve` itself and
    /// for the mount tests that need what only `serve` offers (each says what in one line).
    pub fn start() -> TestServer {
        TestServer::start_with(&[])
    }

    /// The server under test for the tests that run on both servers: the real Midas Server that
    /// `MIDASFS_TEST_MIDAS_URL` names (see [`real`]), or else a fresh `midasfs serve`.
    pub fn any() -> TestServer {
        match real::Real::from_env() {
            Some(real) => TestServer::on_real(real, None),
            None => TestServer::start(),
        }
    }

    /// Like [`TestServer::any`], for a test of token expiry ([`TestServer::expire_tokens`]):
    /// `serve` gives tokens a life of 2 s (`--token-ttl 2`); on a real server the test logs in
    /// with an API key of its own, so that expiring its tokens disturbs no other test.
    pub fn any_expiring() -> TestServer {
        match real::Real::from_env() {
            Some(mut real) => {
                let key = real.own_api_key();
                TestServer::on_real(real, Some(key))
            }
            None => TestServer::start_with(&["--token-ttl", "2"]),
        }
    }

    fn on_real(real: real::Real, api_key: Option<String>) -> TestServer {
        let data = tempfile::tempdir().expect("create a temporary directory");
        TestServer {
            url: real.url.clone(),
            email: real.email.clone(),
            password: real.password.clone(),
            api_key: api_key.unwrap_or_else(|| real.api_key.clone()),
            data_dir: data.path().join("no-store-on-a-real-server"),
            port: port_of(&real.url),
            extra_args: Vec::new(),
            nofile: None,
            child: None,
            http: http_client(),
            real: Some(real),
            home: OnceLock::new(),
            private: OnceLock::new(),
            made: Mutex::new(Vec::new()),
            _data: data,
        }
    }

    /// Whether this is a real Midas Server rather than `midasfs serve`.
    pub fn is_real(&self) -> bool {
        self.real.is_some()
    }

    /// Like [`TestServer::start`] with more `midasfs serve` arguments, e.g. `["--latency", "20"]`.
    pub fn start_with(extra_args: &[&str]) -> TestServer {
        TestServer::start_limited(extra_args, None)
    }

    /// Like [`TestServer::start_with`], the server started with the open-file limit
    /// `nofile` = (soft, hard) instead of the test's own.
    pub fn start_limited(extra_args: &[&str], nofile: Option<(u64, u64)>) -> TestServer {
        let data = tempfile::tempdir().expect("create a temporary store directory");
        let data_dir = data.path().join("store");
        let extra_args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        let (child, announcement) = spawn_server(&data_dir, "127.0.0.1:0", &extra_args, nofile)
            .unwrap_or_else(|err| panic!("midasfs serve did not start: {err}"));
        let port = port_of(&announcement.url);
        TestServer {
            url: announcement.url,
            email: ADMIN_EMAIL.to_owned(),
            password: ADMIN_PASSWORD.to_owned(),
            api_key: announcement.api_key,
            data_dir,
            port,
            extra_args,
            nofile,
            child: Some(child),
            http: http_client(),
            real: None,
            home: OnceLock::new(),
            private: OnceLock::new(),
            made: Mutex::new(Vec::new()),
            _data: data,
        }
    }

    /// The administrator's folder under `users/` in a mount: `Admin_User` on `serve`, `Ad_Min`
    /// on the real server of `../shared/real-midas`.
    pub fn home(&self) -> &str {
        self.home.get_or_init(|| {
            let user = self.call_ok("midas.user.get", &[("email", &self.email)]);
            format!("{}_{}", text(&user["firstname"]), text(&user["lastname"]))
        })
    }

    /// The test's own folder in the administrator's Private folder, as a path below the
    /// administrator's folder: `Private` itself on `serve` (a fresh store), a new folder
    /// `Private/<test>-<pid>-<n>` on a real server. In a mount: `users/<home>/<private>`; for
    /// pydas: `/users/<home>/<private>`.
    pub fn private(&self) -> &str {
        self.private
            .get_or_init(|| self.fresh(&self.email, &self.api_key, "Private"))
    }

    /// [`TestServer::private`] as pydas names it: `/users/<home>/<private>`.
    pub fn private_path(&self) -> String {
        format!("/users/{}/{}", self.home(), self.private())
    }

    /// [`TestServer::private`] in a mount of the whole server at `mountpoint`.
    pub fn private_in(&self, mountpoint: &Path) -> PathBuf {
        mountpoint
            .join("users")
            .join(self.home())
            .join(self.private())
    }

    /// The test's own folder in the top folder `top` (`Private` or `Public`) of a user, as a path
    /// below the user's folder: `top` itself on `serve`, a new folder made for this test in it on
    /// a real server (deleted when the test passes).
    pub fn fresh(&self, email: &str, api_key: &str, top: &str) -> String {
        if self.real.is_none() {
            return top.to_owned();
        }
        let token = self.login(email, api_key);
        let parent = self.folder_named(Some(&token), email, top);
        let name = real::test_folder_name();
        let folder = self.create_folder(&token, &parent, &name);
        self.made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(text(&folder["folder_id"]).to_owned());
        format!("{top}/{name}")
    }

    /// The id of the folder at `path` below a user's folder (e.g. `Private/a/b`), as `token` sees it.
    pub fn folder_at(&self, token: &str, email: &str, path: &str) -> String {
        let mut parts = path.split('/');
        let mut id = self.folder_named(Some(token), email, parts.next().expect("a path"));
        for name in parts {
            let children = self.call_ok("midas.folder.children", &[("id", &id), ("token", token)]);
            id = children["folders"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|f| f["name"] == name)
                .map(|f| text(&f["folder_id"]).to_owned())
                .unwrap_or_else(|| panic!("no folder {name} of {path} in {children}"));
        }
        id
    }

    /// Makes every token of this server's administrator key invalid, as the passing of their
    /// lifetime would: on `serve` (started by [`TestServer::any_expiring`] with `--token-ttl 2`)
    /// by waiting 3 s; on a real server by setting their expiration date in its database.
    pub fn expire_tokens(&self) {
        match &self.real {
            Some(real) => real.expire_tokens(&self.api_key),
            None => {
                assert!(
                    self.extra_args.iter().any(|a| a == "--token-ttl"),
                    "expire_tokens needs a server of TestServer::any_expiring"
                );
                std::thread::sleep(Duration::from_secs(3));
            }
        }
    }

    /// Stops the server the way an operator would (SIGTERM) and waits for it; kills it if it is
    /// still running after 10 s. Returns how it exited (none if it was not running).
    ///
    /// A real server is frozen instead (SIGSTOP on its process group): it still accepts
    /// connections, and answers nothing until [`TestServer::restart`] thaws it.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Some(real) = &mut self.real {
            real.freeze();
            return None;
        }
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break,
            }
        }
        eprintln!("midasfs serve ignored SIGTERM for {STOP_GRACE:?}; killing it");
        let _ = child.kill();
        child.wait().ok()
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        assert!(
            self.real.is_none(),
            "a real Midas Server is not killed by a test (this test needs serve)"
        );
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same store and the same port (stopping it first if it runs).
    /// A real server frozen by [`TestServer::stop`] is thawed instead.
    pub fn restart(&mut self) {
        if let Some(real) = &mut self.real {
            real.thaw();
            return;
        }
        self.stop();
        let listen = format!("127.0.0.1:{}", self.port);
        let mut last_error = String::new();
        for _ in 0..RESTART_ATTEMPTS {
            match spawn_server(&self.data_dir, &listen, &self.extra_args, self.nofile) {
                Ok((child, announcement)) => {
                    self.child = Some(child);
                    self.url = announcement.url;
                    self.api_key = announcement.api_key;
                    return;
                }
                Err(err) => last_error = err,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("midasfs serve did not restart on {listen}: {last_error}");
    }

    /// Creates a user with `midasfs admin add-user`; returns its Default API key. On a real
    /// server the user is made once, as the administrator's "create user" of the web interface
    /// does (later calls find it): a test works in folders of its own there ([`TestServer::fresh`]).
    pub fn add_user(&self, email: &str, password: &str, firstname: &str, lastname: &str) -> String {
        if let Some(real) = &self.real {
            return real.add_user(email, password, firstname, lastname);
        }
        let output = self.admin(
            &[
                "add-user",
                "--email",
                email,
                "--password-stdin",
                "--firstname",
                firstname,
                "--lastname",
                lastname,
            ],
            &format!("{password}\n"),
        );
        output
            .lines()
            .find_map(|line| line.strip_prefix("api key: "))
            .map(|key| key.trim().to_owned())
            .unwrap_or_else(|| panic!("`midasfs admin add-user` printed no api key:\n{output}"))
    }

    /// Creates a community with `midasfs admin add-community` (serve only).
    pub fn add_community(&self, name: &str, private: bool, moderator: Option<&str>) {
        assert!(
            self.real.is_none(),
            "add_community needs serve's admin command"
        );
        let mut args = vec!["add-community", "--name", name];
        if private {
            args.push("--private");
        }
        if let Some(email) = moderator {
            args.extend(["--moderator", email]);
        }
        self.admin(&args, "");
    }

    /// Runs `midasfs admin --data <store> ARGS` with `input` on its standard input, panics
    /// unless it succeeds; returns its stdout.
    fn admin(&self, args: &[&str], input: &str) -> String {
        let mut child = Command::new(env!("CARGO_BIN_EXE_midasfs"))
            .arg("admin")
            .arg("--data")
            .arg(&self.data_dir)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run midasfs admin");
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(input.as_bytes())
            .expect("input to midasfs admin");
        drop(stdin);
        let output = child.wait_with_output().expect("wait for midasfs admin");
        assert!(
            output.status.success(),
            "midasfs admin {args:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Calls an API method the way pydas does (POST, every parameter in the query string, empty
    /// body) and returns the whole envelope `{code, data, message, stat}`.
    pub fn call(&self, method: &str, params: &[(&str, &str)]) -> Value {
        self.send_api(
            method,
            self.api_request(reqwest::Method::POST, method, params),
        )
    }

    /// Like [`TestServer::call`], but with a GET (which some methods refuse).
    pub fn call_by_get(&self, method: &str, params: &[(&str, &str)]) -> Value {
        self.send_api(
            method,
            self.api_request(reqwest::Method::GET, method, params),
        )
    }

    /// `/api/json?method=METHOD&PARAMS` with that HTTP verb.
    fn api_request(
        &self,
        verb: reqwest::Method,
        method: &str,
        params: &[(&str, &str)],
    ) -> reqwest::blocking::RequestBuilder {
        self.http
            .request(verb, format!("{}/api/json", self.url))
            .query(&[("method", method)])
            .query(params)
    }

    fn send_api(&self, method: &str, request: reqwest::blocking::RequestBuilder) -> Value {
        let response = request
            .send()
            .unwrap_or_else(|err| panic!("{method}: request failed: {err}"));
        json_answer(method, response)
    }

    /// Like [`TestServer::call`], but panics unless `stat` is `ok`; returns `data`.
    pub fn call_ok(&self, method: &str, params: &[(&str, &str)]) -> Value {
        let envelope = self.call(method, params);
        assert_eq!(
            envelope["stat"], "ok",
            "{method} {params:?} failed: {envelope}"
        );
        envelope["data"].clone()
    }

    /// Like [`TestServer::call`], but panics unless `stat` is `fail`; returns `code` and `message`.
    pub fn call_fail(&self, method: &str, params: &[(&str, &str)]) -> (String, String) {
        let envelope = self.call(method, params);
        assert_eq!(
            envelope["stat"], "fail",
            "{method} {params:?} should fail: {envelope}"
        );
        (
            envelope["code"].as_str().unwrap_or_default().to_owned(),
            envelope["message"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// A login token of the administrator (`midas.login` with the Default API key).
    pub fn token(&self) -> String {
        self.login(&self.email, &self.api_key)
    }

    /// A login token of any user, from its Default API key.
    pub fn login(&self, email: &str, api_key: &str) -> String {
        let data = self.call_ok(
            "midas.login",
            &[
                ("email", email),
                ("apikey", api_key),
                ("appname", "Default"),
            ],
        );
        text(&data["token"]).to_owned()
    }

    /// The id of the folder `name` directly under a user's root, as `token` (or anonymous) sees it.
    pub fn folder_named(&self, token: Option<&str>, user_email: &str, name: &str) -> String {
        let user = self.call_ok("midas.user.get", &[("email", user_email)]);
        let mut params = vec![("id", text(&user["folder_id"]))];
        if let Some(t) = token {
            params.push(("token", t));
        }
        let children = self.call_ok("midas.folder.children", &params);
        children["folders"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["name"] == name)
            .map(|f| text(&f["folder_id"]).to_owned())
            .unwrap_or_else(|| panic!("no folder {name} in {children}"))
    }

    /// Whether a caller (`None`: anonymous) may read the object: `midas.<kind>.get` succeeds,
    /// `kind` being `folder` or `item`.
    pub fn can_get(&self, token: Option<&str>, kind: &str, id: &str) -> bool {
        let mut params = vec![("id", id)];
        if let Some(t) = token {
            params.push(("token", t));
        }
        self.call(&format!("midas.{kind}.get"), &params)["stat"] == "ok"
    }

    /// Whether a caller (`None`: anonymous) downloads the item: the download's redirect,
    /// followed, gives `content`.
    pub fn can_download(&self, token: Option<&str>, item: &str, content: &[u8]) -> bool {
        let mut url = format!("/api/json?method=midas.item.download&id={item}");
        if let Some(t) = token {
            url.push_str(&format!("&token={t}"));
        }
        let answer = self.get(&url);
        let Some(location) = answer.headers().get("location") else {
            return false;
        };
        let location = location.to_str().expect("location").to_owned();
        let target = if location.starts_with("http") {
            location
        } else {
            format!("{}{location}", self.url)
        };
        let body = self
            .http
            .get(target)
            .send()
            .expect("follow the download")
            .bytes()
            .expect("download body");
        body.as_ref() == content
    }

    /// The names `midas.folder.children` shows a caller (`None`: anonymous) in a folder: its
    /// folders, then its items.
    pub fn names_listed(&self, token: Option<&str>, folder: &str) -> Vec<String> {
        let mut params = vec![("id", folder)];
        if let Some(t) = token {
            params.push(("token", t));
        }
        let data = self.call_ok("midas.folder.children", &params);
        ["folders", "items"]
            .iter()
            .flat_map(|kind| data[*kind].as_array().cloned().unwrap_or_default())
            .map(|o: Value| text(&o["name"]).to_owned())
            .collect()
    }

    /// `midas.folder.create` of `name` in `parent`; returns the folder.
    pub fn create_folder(&self, token: &str, parent: &str, name: &str) -> Value {
        self.call_ok(
            "midas.folder.create",
            &[("token", token), ("name", name), ("parentid", parent)],
        )
    }

    /// `midas.item.create` of `name` in `folder`; returns the item's id.
    pub fn create_item(&self, token: &str, folder: &str, name: &str) -> String {
        let item = self.call_ok(
            "midas.item.create",
            &[("token", token), ("name", name), ("parentid", folder)],
        );
        text(&item["item_id"]).to_owned()
    }

    /// An upload token (`midas.upload.generatetoken`) for `filename` in an item.
    pub fn upload_token(&self, token: &str, item_id: &str, filename: &str) -> String {
        let upload = self.call_ok(
            "midas.upload.generatetoken",
            &[
                ("token", token),
                ("itemid", item_id),
                ("filename", filename),
            ],
        );
        text(&upload["token"]).to_owned()
    }

    /// `midas.upload.perform` the way pydas sends it: PUT, parameters in the query string, the
    /// file as the body. Returns the whole envelope.
    pub fn upload_perform(&self, params: &[(&str, &str)], body: Vec<u8>) -> Value {
        let method = "midas.upload.perform";
        let request = self.api_request(reqwest::Method::PUT, method, params);
        self.send_api(method, request.body(body))
    }

    /// Uploads `content` as `name` into an item (`revision` as `midas.upload.perform` takes it);
    /// panics unless it succeeds, returns `data`.
    pub fn upload_to(
        &self,
        token: &str,
        item_id: &str,
        name: &str,
        content: &[u8],
        revision: Option<&str>,
    ) -> Value {
        let upload_token = self.upload_token(token, item_id, name);
        let length = content.len().to_string();
        let mut params = vec![
            ("uploadtoken", upload_token.as_str()),
            ("filename", name),
            ("length", length.as_str()),
        ];
        if let Some(r) = revision {
            params.push(("revision", r));
        }
        let answer = self.upload_perform(&params, content.to_vec());
        assert_eq!(answer["stat"], "ok", "upload failed: {answer}");
        answer["data"].clone()
    }

    /// Creates an item in `folder` and uploads `content` as `name` into its head revision;
    /// returns the item's id.
    pub fn upload_item(&self, token: &str, folder: &str, name: &str, content: &[u8]) -> String {
        let item_id = self.create_item(token, folder, name);
        self.upload_to(token, &item_id, name, content, Some("head"));
        item_id
    }

    /// The id of the first bitstream of an item's first revision.
    pub fn first_bitstream(&self, token: &str, item_id: &str) -> String {
        let item = self.call_ok("midas.item.get", &[("token", token), ("id", item_id)]);
        text(&item["revisions"][0]["bitstreams"][0]["bitstream_id"]).to_owned()
    }

    /// The file in which the server stores the content of this MD5 (the same layout on both).
    pub fn asset_path(&self, md5: &str) -> PathBuf {
        match &self.real {
            Some(real) => real.asset_path(md5),
            None => self
                .data_dir
                .join("assetstore")
                .join(&md5[0..2])
                .join(&md5[2..4])
                .join(md5),
        }
    }

    /// `GET` of a path on the server (no redirects followed).
    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .unwrap_or_else(|err| panic!("GET {path}: request failed: {err}"))
    }

    /// `host:port`, for raw connections.
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// The request counters of `GET /__midasfs/stats`.
    pub fn stats(&self) -> Value {
        assert!(
            self.real.is_none(),
            "the stats endpoint is serve's: this test needs TestServer::start"
        );
        json_answer("stats", self.get("/__midasfs/stats"))
    }

    /// A blocking HTTP client that does not follow redirects (to look at the 302s themselves).
    pub fn http(&self) -> &reqwest::blocking::Client {
        &self.http
    }

    /// Runs `tests/pydas/<script>` with pydas's Python, the administrator's credentials in the
    /// environment (`MIDAS_URL`, `MIDAS_EMAIL`, `MIDAS_API_KEY`, `MIDAS_PASSWORD`), and the
    /// test's own folder ([`TestServer::private`]) in `MIDAS_FOLDER`.
    pub fn pydas(&self, script: &str, args: &[&str]) -> Output {
        let folder = self.private().to_owned();
        self.pydas_as(
            &self.email,
            &self.api_key,
            &self.password,
            &folder,
            script,
            args,
        )
    }

    /// Like [`TestServer::pydas`], as another user, whose own folder is `folder` (a path below
    /// the user's folder, see [`TestServer::fresh`]).
    pub fn pydas_as(
        &self,
        email: &str,
        api_key: &str,
        password: &str,
        folder: &str,
        script: &str,
        args: &[&str],
    ) -> Output {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/pydas")
            .join(script);
        Command::new(pydas_python())
            .arg(&path)
            .args(args)
            .env("MIDAS_FOLDER", folder)
            .env("MIDAS_URL", &self.url)
            .env("MIDAS_EMAIL", email)
            .env("MIDAS_API_KEY", api_key)
            .env("MIDAS_PASSWORD", password)
            .env("PYTHONIOENCODING", "utf-8")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("run {}: {err}", path.display()))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let Some(real) = &mut self.real else {
            self.kill();
            return;
        };
        real.thaw();
        // What a failing test made is left for a look at it.
        if std::thread::panicking() {
            return;
        }
        let made = std::mem::take(&mut *self.made.lock().unwrap_or_else(|e| e.into_inner()));
        if made.is_empty() {
            return;
        }
        let token = self.login(&self.email, &self.real.as_ref().unwrap().api_key);
        for id in made {
            // Best effort: a big folder may take the real server longer than the client waits.
            let request = self.api_request(
                reqwest::Method::POST,
                "midas.folder.delete",
                &[("token", &token), ("id", &id)],
            );
            if let Err(err) = request.send() {
                eprintln!("the test's folder {id} was not deleted: {err}");
            }
        }
    }
}

/// A fresh `midasfs serve`, an administrator's token and the id of the administrator's Private
/// folder.
pub fn server_with_private() -> (TestServer, String, String) {
    let server = TestServer::start();
    let token = server.token();
    let private = server.folder_named(Some(&token), ADMIN_EMAIL, "Private");
    (server, token, private)
}

/// A string field of an answer (Midas sends every scalar as a string); panics on anything else.
pub fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("a string expected, got {value}"))
}

/// The MD5 checksum in hex, as Midas stores and compares it.
pub fn md5_hex(data: &[u8]) -> String {
    format!("{:x}", Md5::digest(data))
}

/// The JSON of an answer (`what` names it in panics); panics unless it is HTTP 200 (Midas answers
/// API errors with 200 too).
fn json_answer(what: &str, response: reqwest::blocking::Response) -> Value {
    let status = response.status();
    let body = response
        .text()
        .unwrap_or_else(|err| panic!("{what}: reading the answer failed: {err}"));
    assert_eq!(status, 200, "{what}: HTTP {status}: {body:.500}");
    serde_json::from_str(&body)
        .unwrap_or_else(|err| panic!("{what}: HTTP {status}, not JSON ({err}): {body:.500}"))
}

/// The Python interpreter of the virtual environment where pydas is installed:
/// `$MIDASFS_PYDAS_PYTHON`, or `<repo>/.venv-pydas/bin/python`.
pub fn pydas_python() -> PathBuf {
    let python = match std::env::var_os("MIDASFS_PYDAS_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-pydas/bin/python"),
    };
    assert!(
        python.exists(),
        "pydas is not installed: run scripts/setup.sh (looked for {})",
        python.display()
    );
    python
}

fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .expect("build the HTTP client")
}

/// Starts `midasfs serve` and waits for its announcement. On failure the child is reaped and the
/// error says why (e.g. the port was still taken).
fn spawn_server(
    data_dir: &Path,
    listen: &str,
    extra_args: &[String],
    nofile: Option<(u64, u64)>,
) -> Result<(Child, Announcement), String> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_midasfs"));
    if let Some((soft, hard)) = nofile {
        use std::os::unix::process::CommandExt;
        let limit = libc::rlimit {
            rlim_cur: soft as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        };
        // SAFETY: setrlimit is async-signal-safe and `limit` is a valid, copied value.
        unsafe {
            command.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let mut child = command
        .arg("serve")
        .arg("--data")
        .arg(data_dir)
        .args(["--listen", listen])
        .args(["--admin-email", ADMIN_EMAIL, "--admin-password-stdin"])
        .args(extra_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run midasfs serve: {err}"))?;
    // Dropped at once: the server reads the password to the end of its input.
    let mut stdin = child.stdin.take().expect("piped stdin");
    writeln!(stdin, "{ADMIN_PASSWORD}").map_err(|err| format!("password to serve: {err}"))?;
    drop(stdin);
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    forward_stderr(stderr);
    let lines = read_lines(stdout);
    match read_announcement(&lines) {
        Ok(announcement) => Ok((child, announcement)),
        Err(err) => {
            let _ = child.kill();
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            Err(format!("{err} (exit status: {status})"))
        }
    }
}

fn read_announcement(lines: &mpsc::Receiver<String>) -> Result<Announcement, String> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let (mut url, mut api_key) = (None, None);
    while url.is_none() || api_key.is_none() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(remaining).map_err(|err| match err {
            mpsc::RecvTimeoutError::Timeout => {
                format!("no announcement within {STARTUP_TIMEOUT:?}")
            }
            mpsc::RecvTimeoutError::Disconnected => "it exited before announcing itself".to_owned(),
        })?;
        if let Some(rest) = line.strip_prefix("midasfs serve listening on ") {
            url = Some(rest.trim().trim_end_matches('/').to_owned());
        } else if let Some(rest) = line.strip_prefix("admin api key: ") {
            api_key = Some(rest.trim().to_owned());
        }
    }
    Ok(Announcement {
        url: url.unwrap_or_default(),
        api_key: api_key.unwrap_or_default(),
    })
}

/// Reads stdout lines on a thread. It keeps draining after the receiver is gone so that the server
/// never blocks on a full pipe.
fn read_lines(stdout: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = sender.send(line);
        }
    });
    receiver
}

/// Copies the server's log to the test's stderr: the test harness captures it per test and shows
/// it when the test fails.
fn forward_stderr(stderr: impl Read + Send + 'static) {
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("[serve] {line}");
        }
    });
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in the announced URL {url}"))
}
