//! The `/api/json` answer envelope, `{"code","data","message","stat"}`, parsed leniently.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::Error;
use super::text::repair;

/// The start of every Midas envelope (keys come in this order).
const ENVELOPE_START: &[u8] = br#"{"code""#;

/// Longest piece of a non-JSON answer quoted in an error.
const QUOTE_LIMIT: usize = 120;

/// The `data` of a successful answer, or the error the answer stands for.
///
/// `url` (already redacted) only goes into [`Error::NotMidas`].
pub fn parse(method: &str, url: &str, body: &[u8]) -> Result<Value, Error> {
    let envelope = json_value(body)
        .or_else(|| {
            let repaired = repair_text(body)?;
            let value = json_value(&repaired)?;
            log::warn!(
                "{method}: the answer holds text that is not Unicode (a lone surrogate or \
                 invalid UTF-8); those characters are shown as U+FFFD"
            );
            Some(value)
        })
        .ok_or_else(|| Error::NotMidas {
            url: url.to_owned(),
            detail: format!("the answer is not JSON: {}", quote(body)),
        })?;
    let Value::Object(mut fields) = envelope else {
        return Err(not_envelope(url));
    };
    match fields.get("stat").and_then(Value::as_str) {
        Some("ok") => Ok(fields.remove("data").unwrap_or(Value::Null)),
        Some("fail") => Err(Error::Api {
            method: method.to_owned(),
            code: fields.get("code").map_or(0, code),
            message: fields
                .get("message")
                .and_then(Value::as_str)
                .map(repair)
                .unwrap_or_default(),
        }),
        _ => Err(not_envelope(url)),
    }
}

/// Decode `data` into `T`, accepting `[]` where PHP meant an empty map.
pub fn decode<T: DeserializeOwned>(method: &str, data: Value) -> Result<T, Error> {
    let data = match data {
        Value::Array(list) if list.is_empty() => {
            match serde_json::from_value(Value::Array(Vec::new())) {
                Ok(value) => return Ok(value),
                Err(_) => Value::Object(serde_json::Map::new()),
            }
        }
        other => other,
    };
    serde_json::from_value(data).map_err(|err| Error::Decode {
        method: method.to_owned(),
        detail: err.to_string(),
    })
}

/// Like [`decode`], but `""`, `null` and `[]` (how Midas says "nothing") give `None`.
pub fn decode_optional<T: DeserializeOwned>(method: &str, data: Value) -> Result<Option<T>, Error> {
    match &data {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::Array(list) if list.is_empty() => Ok(None),
        _ => decode(method, data).map(Some),
    }
}

/// One string field of an object `data`, e.g. `{"token": "…"}`; numbers are accepted too.
pub fn string_field(method: &str, data: &Value, name: &str) -> Result<String, Error> {
    match data.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(Error::Decode {
            method: method.to_owned(),
            detail: format!("no {name:?} in the answer"),
        }),
    }
}

/// The body as JSON. In development mode Midas prints PHP warnings before the envelope: skip them.
fn json_value(body: &[u8]) -> Option<Value> {
    if let Ok(value) = serde_json::from_slice(body) {
        return Some(value);
    }
    let start = body
        .windows(ENVELOPE_START.len())
        .position(|window| window == ENVELOPE_START)?;
    serde_json::Deserializer::from_slice(&body[start..])
        .into_iter::<Value>()
        .next()?
        .ok()
}

/// The body with what JSON cannot decode into text replaced by U+FFFD: invalid UTF-8, and
/// `\uD800`-style escapes of lone surrogates (which PHP's `json_encode` can produce). `None`
/// when there was nothing to replace.
fn repair_text(body: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(body);
    let mut changed = matches!(text, std::borrow::Cow::Owned(_));
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' || i + 1 >= bytes.len() {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        if bytes[i + 1] != b'u' {
            // Any other escape, `\\` included, is kept as it is.
            out.extend_from_slice(&bytes[i..i + 2]);
            i += 2;
            continue;
        }
        let unit = |at: usize| {
            let hex = bytes.get(at + 2..at + 6)?;
            let unit = u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            (bytes[at] == b'\\' && bytes[at + 1] == b'u').then_some(unit)
        };
        match unit(i) {
            Some(0xD800..=0xDBFF)
                if unit(i + 6).is_some_and(|low| (0xDC00..=0xDFFF).contains(&low)) =>
            {
                out.extend_from_slice(&bytes[i..i + 12]);
                i += 12;
            }
            Some(0xD800..=0xDFFF) => {
                out.extend_from_slice(b"\\ufffd");
                changed = true;
                i += 6;
            }
            _ => {
                out.extend_from_slice(&bytes[i..i + 2]);
                i += 2;
            }
        }
    }
    changed.then_some(out)
}

/// The envelope's `code`: a string such as `"-151"`, or a number from a lenient server.
pub(super) fn code(value: &Value) -> i64 {
    match value {
        Value::String(s) => s.trim().parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

pub(super) fn not_envelope(url: &str) -> Error {
    Error::NotMidas {
        url: url.to_owned(),
        detail: "the answer is JSON but not a Midas envelope (no \"stat\")".into(),
    }
}

/// The start of a body, printable and on one line.
pub(super) fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(QUOTE_LIMIT)]);
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.is_empty() {
        "(empty)".into()
    } else if body.len() > QUOTE_LIMIT {
        format!("{:?}…", flat.trim())
    } else {
        format!("{:?}", flat.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::midas::types::{Children, Community, Folder, Item, MetadataValue, User};

    const URL: &str = "http://h/api/json?method=m";

    #[test]
    fn lone_surrogates_and_invalid_utf8_become_replacement_characters() {
        let body = br#"{"code":"0","data":{"items":[{"name":"a\ud800b"},{"name":"\udc00"},{"name":"\\ud800"},{"name":"\ud83d\ude00"},{"name":"x\u00e9"}]},"message":"","stat":"ok"}"#;
        let data = parse("m", URL, body).expect("parsed despite the lone surrogates");
        let names: Vec<&str> = data["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| item["name"].as_str().expect("a name"))
            .collect();
        assert_eq!(names, ["a\u{fffd}b", "\u{fffd}", "\\ud800", "😀", "xé"]);

        let mut invalid = br#"{"code":"0","data":{"name":"ab"},"message":"","stat":"ok"}"#.to_vec();
        invalid.insert(29, 0xff);
        let data = parse("m", URL, &invalid).expect("parsed despite invalid UTF-8");
        assert_eq!(data["name"], "a\u{fffd}b");
    }

    /// The `response.json` of a capture from the real Midas 3.4.2, as the bytes it sent.
    fn capture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/captures/{name}", env!("CARGO_MANIFEST_DIR"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {path}: {err}"));
        let recorded: Value = serde_json::from_str(&text).expect("capture is JSON");
        serde_json::to_vec(&recorded["response"]["json"]).expect("re-encode")
    }

    fn data(name: &str) -> Value {
        parse("m", URL, &capture(name)).expect("a successful answer")
    }

    fn failure(name: &str) -> (i64, String) {
        match parse("m", URL, &capture(name)) {
            Err(Error::Api { code, message, .. }) => (code, message),
            other => panic!("{name}: expected an API error, got {other:?}"),
        }
    }

    #[test]
    fn every_recorded_json_answer_matches_the_summary() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/captures");
        let summary = std::fs::read_to_string(format!("{dir}/SUMMARY.tsv")).expect("SUMMARY.tsv");
        let mut checked = 0;
        for line in summary.lines().skip(1) {
            let columns: Vec<&str> = line.split('\t').collect();
            let (file, stat, code, message) = (columns[0], columns[3], columns[4], columns[5]);
            match (stat, parse("m", URL, &capture(file))) {
                ("ok", Ok(_)) => {}
                (
                    "fail",
                    Err(Error::Api {
                        code: got,
                        message: text,
                        ..
                    }),
                ) => {
                    assert_eq!(got.to_string(), code, "{file}");
                    assert_eq!(text, message, "{file}");
                }
                (stat, _) if stat.starts_with("raw") => continue,
                (_, other) => panic!("{file}: {other:?}"),
            }
            checked += 1;
        }
        assert!(checked > 60, "only {checked} captures checked");
    }

    #[test]
    fn decodes_listings_and_objects() {
        let folders: Vec<Folder> = decode("m", data("15-user.folders.json")).unwrap();
        let names: Vec<&str> = folders.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["Private", "Public"]);
        assert_eq!(folders[0].privacy_status, 2);

        let children: Children = decode("m", data("21-folder.children-userroot.json")).unwrap();
        assert_eq!(children.folders.len(), 2);
        assert!(children.items.is_empty());

        let item: Item = decode("m", data("38-item.get-head.json")).unwrap();
        let head = item.head().expect("a head revision");
        assert_eq!(head.bitstreams[0].sizebytes, 34);
        assert_eq!(
            head.bitstreams[0].checksum,
            "796bbf88af709d31ca8f5a790752b9a5"
        );

        let folder: Folder = decode("m", data("22-folder.get-private.json")).unwrap();
        assert_eq!((folder.folder_id, folder.parent_id), (2, 1));

        let user: Option<User> = decode_optional("m", data("16-user.get-by-email.json")).unwrap();
        assert!(user.expect("a user").admin);

        let users: Vec<User> = decode("m", data("19-user.list.json")).unwrap();
        assert_eq!(users[0].folder_id, 1);

        let metadata: Vec<MetadataValue> = decode("m", data("65-item.getmetadata.json")).unwrap();
        assert_eq!(metadata[0].qualifier, "author");

        let communities: Vec<Community> = decode("m", data("83-community.list.json")).unwrap();
        assert!(communities.is_empty());
    }

    #[test]
    fn small_answers() {
        let token = string_field("m", &data("12-login.json"), "token").unwrap();
        assert_eq!(token.len(), 32);
        let dedup = data("41-upload.generatetoken-checksum-existing.json");
        assert_eq!(string_field("m", &dedup, "token").unwrap(), "");
        let offset = data("35-upload.getoffset-before.json");
        assert_eq!(string_field("m", &offset, "offset").unwrap(), "0");
        assert!(string_field("m", &offset, "token").is_err());
    }

    #[test]
    fn recorded_failures() {
        assert_eq!(
            failure("14-user.folders-badtoken.json"),
            (-101, "Invalid token".into())
        );
        assert_eq!(failure("10-login-badkey.json"), (0, String::new()));
        assert_eq!(failure("08-user.apikey.default-badpassword.json").0, -150);
        let (code, message) = failure("06-unknown-method.json");
        assert_eq!(code, -101);
        assert!(message.contains("does not exist"));
    }

    #[test]
    fn empty_list_where_a_map_is_meant() {
        let children: Children = decode("m", Value::Array(Vec::new())).unwrap();
        assert_eq!(children, Children::default());
        let folders: Vec<Folder> = decode("m", Value::Array(Vec::new())).unwrap();
        assert!(folders.is_empty());
    }

    #[test]
    fn nothing_is_none() {
        for nothing in [r#""""#, "null", "[]"] {
            let value: Value = serde_json::from_str(nothing).unwrap();
            assert_eq!(decode_optional::<User>("m", value).unwrap(), None);
        }
    }

    #[test]
    fn wrong_shapes_are_decode_errors() {
        let err = decode::<Folder>("midas.folder.get", Value::String("x".into())).unwrap_err();
        assert!(matches!(err, Error::Decode { ref method, .. } if method == "midas.folder.get"));
    }

    #[test]
    fn html_and_other_json_are_not_midas() {
        let html =
            b"<html><body><b>Fatal error</b>: Call to a member function on null</body></html>";
        match parse("m", URL, html) {
            Err(Error::NotMidas { url, detail }) => {
                assert_eq!(url, URL);
                assert!(detail.contains("Fatal error"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse("m", URL, br#"{"hello":"world"}"#),
            Err(Error::NotMidas { .. })
        ));
        assert!(matches!(parse("m", URL, b""), Err(Error::NotMidas { .. })));
    }

    #[test]
    fn php_warnings_before_the_envelope_are_skipped() {
        let body = b"<br />\n<b>Warning</b>: filesize(): stat failed<br />\n{\"code\":\"0\",\"data\":{\"offset\":\"\"},\"message\":\"\",\"stat\":\"ok\"}";
        let data = parse("m", URL, body).unwrap();
        assert_eq!(string_field("m", &data, "offset").unwrap(), "");
    }

    #[test]
    fn lenient_codes_and_repaired_messages() {
        let body = br#"{"code":-150,"data":"","message":"caf\u00c3\u00a9","stat":"fail"}"#;
        match parse("m", URL, body) {
            Err(Error::Api { code, message, .. }) => {
                assert_eq!((code, message.as_str()), (-150, "café"))
            }
            other => panic!("{other:?}"),
        }
    }
}
