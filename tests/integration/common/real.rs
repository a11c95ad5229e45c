//! The real Midas Server that a test run may be pointed at, for the tests that run on both
//! servers ([`super::server::TestServer::any`]).
//!
//! It is named by the environment: `MIDASFS_TEST_MIDAS_URL` and its administrator's
//! `MIDASFS_TEST_MIDAS_EMAIL`, `MIDASFS_TEST_MIDAS_API_KEY` and `MIDASFS_TEST_MIDAS_PASSWORD`;
//! `MIDASFS_TEST_MIDAS_EMAIL2`, `_API_KEY2` and `_PASSWORD2` name a second account, which the
//! tests' "another user" (`jane@example.com`) is on such a server (it has no command to add users
//! with a chosen password, and that one exists already on the server of `start.sh`);
//! `MIDASFS_TEST_MIDAS_DIR` is the directory of an instance started by
//! `../shared/real-midas/start.sh` (its process group and database), which the tests that freeze
//! the server or expire tokens need. `.ci/run` sets them all.
//!
//! The server is shared by the tests of a binary, which run in parallel: each holds a shared lock
//! while it runs, and a test that freezes the server first waits for the lock alone, so that no
//! other test sees the freeze.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// Held shared by every test on the real server, alone by one that freezes it.
static SERVER: RwLock<()> = RwLock::new(());

/// Held while a test looks for a user and makes it when missing: Midas checks that an email is
/// free and then makes the account without a lock, so tests that start at once (mount_access's
/// all add the same two users) would each make their own copy of it.
static ADDING_USERS: Mutex<()> = Mutex::new(());

pub struct Real {
    pub url: String,
    pub email: String,
    pub password: String,
    /// The administrator's Default API key.
    pub api_key: String,
    /// The instance directory of `start.sh`, when given.
    dir: Option<PathBuf>,
    /// API keys added for this test (deleted at the end).
    own_keys: Vec<String>,
    frozen: bool,
    shared: Option<RwLockReadGuard<'static, ()>>,
    alone: Option<RwLockWriteGuard<'static, ()>>,
}

impl Real {
    /// The real server the environment names, if any.
    pub fn from_env() -> Option<Real> {
        let url = std::env::var("MIDASFS_TEST_MIDAS_URL").ok()?;
        if url.is_empty() {
            return None;
        }
        let var = |name: &str| {
            std::env::var(name)
                .unwrap_or_else(|_| panic!("MIDASFS_TEST_MIDAS_URL is set, {name} is not"))
        };
        eprintln!("testing against the real Midas at {url}");
        Some(Real {
            url: url.trim_end_matches('/').to_owned(),
            email: var("MIDASFS_TEST_MIDAS_EMAIL"),
            password: var("MIDASFS_TEST_MIDAS_PASSWORD"),
            api_key: var("MIDASFS_TEST_MIDAS_API_KEY"),
            dir: std::env::var_os("MIDASFS_TEST_MIDAS_DIR")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
            own_keys: Vec::new(),
            frozen: false,
            shared: Some(SERVER.read().unwrap_or_else(|e| e.into_inner())),
            alone: None,
        })
    }

    fn dir(&self, what: &str) -> &Path {
        self.dir.as_deref().unwrap_or_else(|| {
            panic!("{what} on a real Midas needs MIDASFS_TEST_MIDAS_DIR (the start.sh directory)")
        })
    }

    fn database(&self, what: &str) -> rusqlite::Connection {
        let path = self.dir(what).join("db/midas.sqlite");
        let db = rusqlite::Connection::open(&path)
            .unwrap_or_else(|err| panic!("open {}: {err}", path.display()));
        db.busy_timeout(Duration::from_secs(30))
            .expect("busy timeout");
        db
    }

    /// Where the server stores the content of this MD5 (`DIR/src/data/assetstore`, two levels
    /// of the MD5's first characters).
    pub fn asset_path(&self, md5: &str) -> PathBuf {
        self.dir("finding a stored file")
            .join("src/data/assetstore")
            .join(&md5[0..2])
            .join(&md5[2..4])
            .join(md5)
    }

    /// The server's process group, from `DIR/server.pid`.
    fn process_group(&self) -> libc::pid_t {
        let file = self.dir("freezing the server").join("server.pid");
        std::fs::read_to_string(&file)
            .unwrap_or_else(|err| panic!("read {}: {err}", file.display()))
            .trim()
            .parse()
            .unwrap_or_else(|err| panic!("{}: {err}", file.display()))
    }

    /// Freezes the server (SIGSTOP on its process group) once no other test runs on it.
    pub fn freeze(&mut self) {
        if self.frozen {
            return;
        }
        let group = self.process_group();
        if self.alone.is_none() {
            self.shared = None;
            self.alone = Some(SERVER.write().unwrap_or_else(|e| e.into_inner()));
        }
        // SAFETY: kill(2) on the process group of the server the environment names.
        assert_eq!(unsafe { libc::kill(-group, libc::SIGSTOP) }, 0, "SIGSTOP");
        self.frozen = true;
    }

    /// Thaws a frozen server (SIGCONT); nothing otherwise.
    pub fn thaw(&mut self) {
        if self.frozen {
            // SAFETY: as in `freeze`.
            unsafe { libc::kill(-self.process_group(), libc::SIGCONT) };
            self.frozen = false;
        }
    }

    /// A new API key of the administrator (application `Default`), added to the server's
    /// database: its tokens are this test's alone.
    pub fn own_api_key(&mut self) -> String {
        use rand::distr::{Alphanumeric, SampleString};
        let key = Alphanumeric.sample_string(&mut rand::rng(), 32);
        let db = self.database("a key of a test's own");
        db.execute(
            "INSERT INTO userapi (user_id, apikey, application_name, token_expiration_time, \
             creation_date) SELECT user_id, ?1, 'Default', 100, datetime('now') FROM user \
             WHERE email = ?2",
            rusqlite::params![key, self.email],
        )
        .expect("add an API key");
        self.own_keys.push(key.clone());
        key
    }

    /// Makes the tokens of an API key expired, as 100 minutes would.
    pub fn expire_tokens(&self, api_key: &str) {
        let db = self.database("expiring tokens");
        db.execute(
            "UPDATE token SET expiration_date = '2000-01-01 00:00:00' WHERE userapi_id IN \
             (SELECT userapi_id FROM userapi WHERE apikey = ?1)",
            [api_key],
        )
        .expect("expire the tokens");
    }

    /// The user's Default API key; the user is made first (as the administrator's "create user"
    /// of the web interface does) when the password does not log in.
    pub fn add_user(&self, email: &str, password: &str, firstname: &str, lastname: &str) -> String {
        let _alone = ADDING_USERS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = self.default_key(email, password) {
            return key;
        }
        if std::env::var("MIDASFS_TEST_MIDAS_EMAIL2").ok().as_deref() == Some(email) {
            return std::env::var("MIDASFS_TEST_MIDAS_API_KEY2")
                .expect("MIDASFS_TEST_MIDAS_EMAIL2 is set, MIDASFS_TEST_MIDAS_API_KEY2 is not");
        }
        let http = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        let mut cookies = String::new();
        let mut post = |path: &str, form: &[(&str, &str)]| {
            let mut request = http.post(format!("{}{path}", self.url)).form(form);
            if !cookies.is_empty() {
                request = request.header("cookie", cookies.clone());
            }
            let response = request
                .send()
                .unwrap_or_else(|err| panic!("POST {path}: {err}"));
            for value in response.headers().get_all("set-cookie") {
                let pair = value.to_str().unwrap_or_default().split(';').next();
                let Some((name, _)) = pair.and_then(|p| p.split_once('=')) else {
                    continue;
                };
                let mut kept: Vec<&str> = cookies
                    .split("; ")
                    .filter(|c| !c.is_empty() && !c.starts_with(&format!("{name}=")))
                    .collect();
                kept.push(pair.unwrap());
                cookies = kept.join("; ");
            }
            let _ = response.bytes();
        };
        post(
            "/user/login",
            &[("email", &self.email), ("password", &self.password)],
        );
        post(
            "/user/ajaxregister",
            &[
                ("adminCreate", "1"),
                ("email", email),
                ("firstname", firstname),
                ("lastname", lastname),
                ("password1", password),
                ("password2", password),
                ("conditions", "1"),
            ],
        );
        self.default_key(email, password)
            .unwrap_or_else(|| panic!("could not make the user {email} on the real Midas"))
    }

    fn default_key(&self, email: &str, password: &str) -> Option<String> {
        let answer: serde_json::Value = reqwest::blocking::Client::new()
            .post(format!("{}/api/json", self.url))
            .query(&[
                ("method", "midas.user.apikey.default"),
                ("email", email),
                ("password", password),
            ])
            .timeout(Duration::from_secs(60))
            .send()
            .and_then(|r| r.text())
            .ok()
            .and_then(|body| serde_json::from_str(&body).ok())?;
        (answer["stat"] == "ok").then(|| answer["data"]["apikey"].as_str().unwrap().to_owned())
    }
}

impl Drop for Real {
    fn drop(&mut self) {
        self.thaw();
        if self.own_keys.is_empty() {
            return;
        }
        let db = self.database("a key of a test's own");
        for key in &self.own_keys {
            let _ = db.execute(
                "DELETE FROM token WHERE userapi_id IN \
                 (SELECT userapi_id FROM userapi WHERE apikey = ?1)",
                [key],
            );
            let _ = db.execute("DELETE FROM userapi WHERE apikey = ?1", [key]);
        }
    }
}

/// A folder name of the running test's own on a real server: the test's name (the thread's),
/// the process and a counter, so that runs and tests never meet.
pub fn test_folder_name() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("test");
    let test = test.rsplit("::").next().unwrap_or(test);
    let short: String = test.chars().take(60).collect();
    format!(
        "{short}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Leaves the real server's credentials of the test run (`MIDASFS_TEST_MIDAS_*`, and the
/// `MIDAS_REAL_*` of `start.sh`'s env file) out of a child's environment: a mount daemon must not
/// hold an API key there, not even one it was not given.
pub fn scrub(command: &mut std::process::Command) -> &mut std::process::Command {
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if name_text.starts_with("MIDASFS_TEST_MIDAS_") || name_text.starts_with("MIDAS_REAL_") {
            command.env_remove(name);
        }
    }
    command
}
