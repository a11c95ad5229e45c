//! System and authentication methods (reference §3.1, §1.6).

use axum::http::Method;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Map, Value};

use super::{method_names, Call, Reply};
use crate::midas::codes;
use crate::server::store::{hash_password, random_alnum, unix_now};
use crate::server::wire::ApiError;

pub const VERSION: &str = "3.4.2";

pub fn version(_call: &Call<'_>, _conn: &mut Connection) -> Result<Reply, ApiError> {
    Ok(json!({ "version": VERSION }).into())
}

pub fn info(call: &Call<'_>, _conn: &mut Connection) -> Result<Reply, ApiError> {
    let mut resources = Map::new();
    for name in [
        "item",
        "itemrevision",
        "group",
        "system",
        "bitstream",
        "community",
        "user",
        "folder",
    ] {
        resources.insert(
            format!("/{name}"),
            Value::String(format!("{}/rest/{name}", call.base_url)),
        );
    }
    Ok(json!({
        "version": VERSION,
        "name": call.shared.config.title,
        "description": "",
        "modules": module_names(call),
        "resources": resources,
    })
    .into())
}

/// The enabled modules: `api`, and those given to `--modules`.
fn module_names(call: &Call<'_>) -> Vec<&'static str> {
    let mut names = vec!["api"];
    names.extend(call.shared.config.modules.iter().map(|m| m.name()));
    names
}

pub fn modules_list(call: &Call<'_>, _conn: &mut Connection) -> Result<Reply, ApiError> {
    Ok(json!({ "modules": module_names(call) }).into())
}

pub fn methods_list(call: &Call<'_>, _conn: &mut Connection) -> Result<Reply, ApiError> {
    let methods: Vec<Value> = method_names(&call.shared.config.modules)
        .map(|name| {
            json!({
                "name": name,
                "help": { "params": [], "example": [], "return": "", "description": "" },
            })
        })
        .collect();
    Ok(json!({ "methods": methods }).into())
}

/// `midas.login`: the same token until it expires; a new one (expired ones purged) after.
pub fn login(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let email = call.params.require("email")?.to_lowercase();
    let apikey = call.params.require("apikey")?;
    let appname = call.params.require("appname")?;
    let throttle = &call.shared.logins;
    throttle.check(&email, call.client)?;
    let user: Option<i64> = conn
        .query_row("SELECT user_id FROM user WHERE email = ?1", [&email], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(user_id) = user else {
        throttle.failed(&email, call.client);
        return Err(ApiError::invalid(
            "Unable to authenticate. Please check credentials.",
        ));
    };
    let key: Option<i64> = conn
        .query_row(
            "SELECT userapi_id FROM userapi WHERE user_id = ?1 AND apikey = ?2 AND application_name = ?3",
            params![user_id, apikey, appname],
            |r| r.get(0),
        )
        .optional()?;
    // A wrong key or application name leaks through as code 0 with an empty message.
    let Some(userapi_id) = key else {
        throttle.failed(&email, call.client);
        return Err(ApiError::new(0, ""));
    };
    throttle.succeeded(&email, call.client);
    let now = unix_now();
    let existing: Option<String> = conn
        .query_row(
            "SELECT token FROM token WHERE userapi_id = ?1 AND expires > ?2 ORDER BY expires DESC LIMIT 1",
            params![userapi_id, now],
            |r| r.get(0),
        )
        .optional()?;
    let token = match existing {
        Some(token) => token,
        None => {
            conn.execute("DELETE FROM token WHERE expires <= ?1", [now])?;
            let token = random_alnum(32);
            let ttl = i64::try_from(call.shared.config.token_ttl).unwrap_or(i64::MAX / 2);
            conn.execute(
                "INSERT INTO token (token, userapi_id, expires) VALUES (?1, ?2, ?3)",
                params![token, userapi_id, now.saturating_add(ttl)],
            )?;
            token
        }
    };
    Ok(json!({ "token": token }).into())
}

/// `midas.user.apikey.default`: POST only; the Default key for a correct email and password.
/// Runs without the database lock: the password hash takes tens of milliseconds, which every
/// other request would otherwise wait for.
pub fn user_apikey_default(call: &Call<'_>) -> Result<Reply, ApiError> {
    if *call.verb != Method::POST {
        return Err(ApiError::new(codes::HTTP_ERROR, "POST method required"));
    }
    let email = call.params.require("email")?.to_lowercase();
    let password = call.params.require("password")?;
    let throttle = &call.shared.logins;
    throttle.check(&email, call.client)?;
    let user: Option<(i64, String, String)> = call
        .shared
        .store
        .lock()
        .query_row(
            "SELECT user_id, salt, password_hash FROM user WHERE email = ?1",
            [&email],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    // An unknown email takes as long as a wrong password: the time tells nothing.
    let (salt, stored) = match &user {
        Some((_, salt, hash)) => (salt.as_str(), Some(hash.as_str())),
        None => ("unknown-user", None),
    };
    let hash = hash_password(salt, password);
    let Some((user_id, _, _)) = user.as_ref().filter(|_| stored == Some(hash.as_str())) else {
        throttle.failed(&email, call.client);
        return Err(ApiError::invalid("Login failed"));
    };
    throttle.succeeded(&email, call.client);
    let user_id = *user_id;
    let conn = call.shared.store.lock();
    let key: Option<String> = conn
        .query_row(
            "SELECT apikey FROM userapi WHERE user_id = ?1 AND application_name = 'Default'",
            [user_id],
            |r| r.get(0),
        )
        .optional()?;
    let apikey = key.ok_or_else(|| ApiError::invalid("User has no default API key"))?;
    Ok(json!({ "apikey": apikey }).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::{create_user, Store};
    use crate::server::wire::Params;
    use crate::server::Shared;
    use std::time::{Duration, Instant};

    #[test]
    fn the_password_is_hashed_without_the_database_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        create_user(&store.lock(), "u@example.com", "pw", "u", "v", false).expect("user");
        let shared = Shared::for_tests(store);
        let params = Params::from_query(Some("email=u%40example.com&password=pw"));
        let stop = std::sync::atomic::AtomicBool::new(false);
        // How long one hash takes here and now.
        let started = Instant::now();
        for _ in 0..5 {
            hash_password("salt", "pw");
        }
        let hash = started.elapsed() / 5;
        let waits = std::thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let call = Call {
                        params: &params,
                        verb: &Method::POST,
                        shared: &shared,
                        base_url: "",
                        client: None,
                    };
                    user_apikey_default(&call).expect("the right password");
                }
            });
            std::thread::sleep(Duration::from_millis(20));
            let mut waits = Vec::new();
            for _ in 0..51 {
                let asked = Instant::now();
                drop(shared.store.lock());
                waits.push(asked.elapsed());
                std::thread::sleep(Duration::from_micros(700));
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            waits
        });
        let mut sorted = waits;
        sorted.sort();
        let median = sorted[sorted.len() / 2];
        // Hashing under the lock, most waits would last part of a hash.
        assert!(
            median * 10 < hash,
            "the database lock waits {median:?} (median) beside logins hashing for {hash:?}"
        );
    }
}
