//! The Midas wire format: where parameters come from, the JSON envelope and its encoding.

use std::collections::HashMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::midas::codes;
use crate::midas::text::double_encode;

/// Largest urlencoded or multipart body parsed for parameters (uploads stream separately).
pub const MAX_FORM_BODY: usize = 16 * 1024 * 1024;

/// A Midas API error: the `code` and `message` of a `stat:"fail"` envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Midas error {code}: {message}")]
pub struct ApiError {
    pub code: i64,
    pub message: String,
}

impl ApiError {
    pub fn new(code: i64, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }
    /// −150, MIDAS_INVALID_PARAMETER.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(codes::INVALID_PARAMETER, message)
    }
    /// −151, MIDAS_INVALID_POLICY (also "does not exist").
    pub fn policy(message: impl Into<String>) -> ApiError {
        ApiError::new(codes::INVALID_POLICY, message)
    }
    /// −100, MIDAS_INTERNAL_ERROR.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(codes::INTERNAL_ERROR, message)
    }
    pub fn missing(name: &str) -> ApiError {
        ApiError::invalid(format!("Parameter {name} is not defined"))
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(err: rusqlite::Error) -> ApiError {
        log::error!("database error: {err}");
        ApiError::internal("Database error")
    }
}

/// Request parameters: the query string merged with a form body. On a clash the query string
/// wins; a key repeated within one source keeps its last value (PHP's behaviour).
#[derive(Debug, Default, Clone)]
pub struct Params {
    values: HashMap<String, String>,
}

impl Params {
    pub fn from_query(query: Option<&str>) -> Params {
        let mut params = Params::default();
        if let Some(q) = query {
            params.values.extend(parse_urlencoded(q.as_bytes()));
        }
        params
    }

    /// Add body parameters; keys already present from the query string are kept.
    pub fn merge_body(&mut self, body: impl IntoIterator<Item = (String, String)>) {
        let mut from_body: HashMap<String, String> = HashMap::new();
        from_body.extend(body);
        for (k, v) in from_body {
            self.values.entry(k).or_insert(v);
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Presence flags: on whatever the value (`"false"`, `"0"` and `""` count as on).
    pub fn flag(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    pub fn require(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| ApiError::missing(name))
    }

    /// A required id; anything that is not a number can match no row, so it becomes −1.
    pub fn require_id(&self, name: &str) -> Result<i64, ApiError> {
        Ok(parse_id(self.require(name)?))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.values.iter()
    }
}

/// An id as PHP would use it in a query: a number, or something that matches nothing.
pub fn parse_id(s: &str) -> i64 {
    s.trim().parse::<i64>().unwrap_or(-1)
}

/// `application/x-www-form-urlencoded` pairs, `+` as space, invalid UTF-8 replaced.
pub fn parse_urlencoded(input: &[u8]) -> Vec<(String, String)> {
    input
        .split(|b| *b == b'&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut kv = part.splitn(2, |b| *b == b'=');
            let key = decode_component(kv.next().unwrap_or_default());
            let value = decode_component(kv.next().unwrap_or_default());
            (key, value)
        })
        .collect()
}

fn decode_component(raw: &[u8]) -> String {
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&plus_as_space).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Every scalar as Midas sends it: strings double-encoded, numbers as strings,
/// `true` → "1", `false`/`null` → "".
pub fn midas_encode(value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(double_encode(&s)),
        Value::Number(n) => Value::String(n.to_string()),
        Value::Bool(true) => Value::String("1".into()),
        Value::Bool(false) | Value::Null => Value::String(String::new()),
        Value::Array(items) => Value::Array(items.into_iter().map(midas_encode).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, midas_encode(v)))
                .collect::<Map<String, Value>>(),
        ),
    }
}

/// JSON text with PHP's `json_encode(…, JSON_HEX_TAG)` escaping: `/` as `\/`, `<`/`>` as
/// `\u003C`/`\u003E`, every non-ASCII character as `\uXXXX`.
pub fn php_json(value: &Value) -> String {
    let plain = value.to_string();
    let mut out = String::with_capacity(plain.len() + plain.len() / 8);
    for c in plain.chars() {
        match c {
            // Outside strings JSON has none of these, so escaping every occurrence is safe.
            '/' => out.push_str("\\/"),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            c if c.is_ascii() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out
}

/// The envelope `{"code","data","message","stat"}`, HTTP 200, `text/html; charset=UTF-8`.
pub fn envelope(result: Result<Value, ApiError>) -> Response {
    let mut map = Map::new();
    match result {
        Ok(data) => {
            map.insert("code".into(), "0".into());
            map.insert("data".into(), data);
            map.insert("message".into(), "".into());
            map.insert("stat".into(), "ok".into());
        }
        Err(err) => {
            map.insert("code".into(), err.code.to_string().into());
            map.insert("data".into(), "".into());
            map.insert("message".into(), err.message.into());
            map.insert("stat".into(), "fail".into());
        }
    }
    html_response(StatusCode::OK, php_json(&midas_encode(Value::Object(map))))
}

pub fn html_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    response
}

/// The standard HTML error page of the download controller.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let escaped = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    html_response(
        status,
        format!("<html><head><title>Error</title></head><body><h1>An error occurred</h1><p>{escaped}</p></body></html>\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_wins_and_last_repeated_value_is_kept() {
        let mut p = Params::from_query(Some("a=1&b=x+y&a=2&c=%2F%C3%A9"));
        p.merge_body(parse_urlencoded(b"a=body&d=4&d=5"));
        assert_eq!(p.get("a"), Some("2"));
        assert_eq!(p.get("b"), Some("x y"));
        assert_eq!(p.get("c"), Some("/é"));
        assert_eq!(p.get("d"), Some("5"));
        assert!(!p.flag("e"));
    }

    #[test]
    fn envelope_matches_midas_bytes() {
        let v = midas_encode(
            json!({"id": 5, "ok": true, "no": false, "none": null, "name": "café <a/b>"}),
        );
        assert_eq!(
            php_json(&v),
            r#"{"id":"5","ok":"1","no":"","none":"","name":"caf\u00c3\u00a9 \u003Ca\/b\u003E"}"#
        );
        let err = ApiError::policy("nope");
        let response = envelope(Err(err));
        assert_eq!(response.status(), StatusCode::OK);
    }
}
