//! User methods (reference §3.2).

use rusqlite::Connection;
use serde_json::Value;

use super::objects::{query_list, query_one, user_row, FOLDER_SELECT, USER_SELECT};
use super::{Call, Reply};
use crate::server::store::{policy_sql, Guarded};
use crate::server::wire::{parse_id, ApiError};

/// `midas.user.get`: no authentication; no match is `ok` with `data:""`. Real Midas answers
/// with any user, private ones too; serve shows a private user only to that user and to
/// administrators (as `user.list` shows only public users): to others it does not exist.
pub fn get(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let p = call.params;
    // Midas ignores the token here; an unknown one is as good as none.
    let visible = match call.caller(conn).ok().flatten() {
        Some(caller) if caller.admin => String::new(),
        Some(caller) => format!(" AND (u.privacy = 0 OR u.user_id = {})", caller.user_id),
        None => " AND u.privacy = 0".to_owned(),
    };
    let found = if let Some(id) = p.get("user_id").or_else(|| p.get("id")) {
        query_one(
            conn,
            USER_SELECT,
            &format!("WHERE u.user_id = ?1{visible}"),
            [parse_id(id)],
            user_row,
        )?
    } else if let Some(email) = p.get("email") {
        query_one(
            conn,
            USER_SELECT,
            &format!("WHERE u.email = ?1{visible}"),
            [email.to_lowercase()],
            user_row,
        )?
    } else if let (Some(first), Some(last)) = (p.get("firstname"), p.get("lastname")) {
        query_one(
            conn,
            USER_SELECT,
            &format!(
                "WHERE u.firstname = ?1 AND u.lastname = ?2{visible} ORDER BY u.user_id LIMIT 1"
            ),
            [first, last],
            user_row,
        )?
    } else {
        return Err(ApiError::invalid(
            "Please provide a user email or both first and last name",
        ));
    };
    Ok(found.unwrap_or_else(|| Value::String(String::new())).into())
}

/// `midas.user.list`: public users by last name, at most `limit`.
pub fn list(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let limit = call
        .params
        .require("limit")?
        .trim()
        .parse::<i64>()
        .unwrap_or(0)
        .max(0);
    let users = query_list(
        conn,
        USER_SELECT,
        "WHERE u.privacy = 0 ORDER BY u.lastname, u.user_id LIMIT ?1",
        [limit],
        user_row,
    )?;
    Ok(Value::Array(users).into())
}

/// `midas.user.folders`: the readable children of the caller's root; `[]` when anonymous.
pub fn folders(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let Some(caller) = call.caller(conn)? else {
        return Ok(Value::Array(Vec::new()).into());
    };
    let tail = format!(
        "WHERE f.parent_id = (SELECT folder_id FROM user WHERE user_id = ?1) AND {} ORDER BY f.name, f.folder_id",
        policy_sql(Guarded::Folder, "f.folder_id", Some(caller), crate::server::store::READ)
    );
    let list = query_list(
        conn,
        FOLDER_SELECT,
        &tail,
        [caller.user_id],
        super::objects::folder_row,
    )?;
    Ok(Value::Array(list).into())
}
