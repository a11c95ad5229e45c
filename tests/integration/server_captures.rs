//! `midasfs serve` against the answers of a real Midas Server 3.4.2 (`tests/captures`).
//!
//! The captures were made in one session, in file-name order, by a script that created a user's
//! folders, items and uploads and then read them back. Each test here replays that session on a
//! fresh server, up to the end of its area, and compares the answers of its area with the recorded
//! ones: HTTP status, headers, envelope, keys and their order, every scalar a string, and the
//! values themselves. Ids, uuids and tokens differ between servers, so the replay learns which
//! new id stands for which recorded one (a one-to-one correspondence, checked as it goes) and
//! translates the ids it sends; dates are compared by shape only.
//!
//! The same comparison runs live in [`differential`]: one scenario against a real Midas Server
//! (when `MIDASFS_TEST_MIDAS_URL` names one) and against `serve`.

use crate::common;
mod differential;

use std::collections::HashMap;
use std::io::Read;
use std::ops::RangeInclusive;

use reqwest::blocking::Response;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::{Method, Url};
use serde_json::Value;

use common::server::TestServer;
use common::zipfile;

const CAPTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/captures");
/// Where the recorded server listened; its URLs appear in some answers.
const CAPTURED_BASE: &str = "http://127.0.0.1:8080";
/// The title of the recorded installation, reported by `midas.info`.
const CAPTURED_TITLE: &str = "Midas Real Test";

type Area = &'static [RangeInclusive<u32>];

const SYSTEM_AND_AUTHENTICATION: Area = &[1..=14];
const USERS: Area = &[15..=19];
const FOLDERS: Area = &[20..=30];
const ITEMS: Area = &[31..=33, 37..=39, 52..=53];
const UPLOADS: Area = &[34..=36, 40..=51];
const DOWNLOADS: Area = &[54..=63, 82..=82];
const METADATA_AND_SEARCH: Area = &[64..=67, 80..=80];
const PATHS_AND_RESOURCES: Area = &[68..=71, 83..=83];
const MOVE_AND_DELETE: Area = &[72..=79, 81..=81];
const ALL_AREAS: [Area; 9] = [
    SYSTEM_AND_AUTHENTICATION,
    USERS,
    FOLDERS,
    ITEMS,
    UPLOADS,
    DOWNLOADS,
    METADATA_AND_SEARCH,
    PATHS_AND_RESOURCES,
    MOVE_AND_DELETE,
];

#[test]
fn system_and_authentication() {
    check_area(SYSTEM_AND_AUTHENTICATION);
}

#[test]
fn users() {
    check_area(USERS);
}

#[test]
fn folders() {
    check_area(FOLDERS);
}

#[test]
fn items() {
    check_area(ITEMS);
}

#[test]
fn uploads() {
    check_area(UPLOADS);
}

#[test]
fn downloads() {
    check_area(DOWNLOADS);
}

#[test]
fn metadata_and_search() {
    check_area(METADATA_AND_SEARCH);
}

#[test]
fn paths_and_resources() {
    check_area(PATHS_AND_RESOURCES);
}

#[test]
fn move_and_delete() {
    check_area(MOVE_AND_DELETE);
}

/// A capture nobody compares would pass silently: every one must belong to an area.
#[test]
fn every_capture_belongs_to_an_area() {
    let captures = load_captures();
    assert!(
        captures.len() >= 83,
        "only {} captures found",
        captures.len()
    );
    let orphans: Vec<&str> = captures
        .iter()
        .filter(|c| !ALL_AREAS.iter().any(|area| in_area(area, c.number)))
        .map(|c| c.name.as_str())
        .collect();
    assert!(orphans.is_empty(), "captures in no area: {orphans:?}");
}

fn check_area(area: Area) {
    let server = TestServer::start_with(&["--title", CAPTURED_TITLE]);
    let differences = Replay::new(&server).run(area);
    assert!(
        differences.is_empty(),
        "{} differences from the real Midas server:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

fn in_area(area: Area, number: u32) -> bool {
    area.iter().any(|range| range.contains(&number))
}

struct Capture {
    number: u32,
    name: String,
    record: Value,
}

/// The `NN-*.json` captures in the order they were made.
fn load_captures() -> Vec<Capture> {
    let mut names: Vec<String> = std::fs::read_dir(CAPTURES)
        .unwrap_or_else(|err| panic!("cannot read {CAPTURES}: {err}"))
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json") && name.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let number = name
                .split('-')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("capture {name} has no number"));
            let text = std::fs::read_to_string(format!("{CAPTURES}/{name}"))
                .unwrap_or_else(|err| panic!("read {name}: {err}"));
            let record =
                serde_json::from_str(&text).unwrap_or_else(|err| panic!("parse {name}: {err}"));
            Capture {
                number,
                name,
                record,
            }
        })
        .collect()
}

fn capture_body(file: &str) -> Vec<u8> {
    std::fs::read(format!("{CAPTURES}/{file}")).unwrap_or_else(|err| panic!("read {file}: {err}"))
}

/// The files the capture script uploaded (recorded requests do not keep PUT bodies; the same bytes
/// come back in the recorded downloads).
fn uploaded_content(filename: &str) -> Vec<u8> {
    match filename {
        "hello.txt" => capture_body("54-bitstream.download.body"),
        "binary.bin" => capture_body("61-bitstream.download-binary.body"),
        // 7 bytes with MD5 59d0d19fc45ca69230d858f60a5557f8, as in 47-item.get-2-bitstreams
        "second.txt" => b"second\n".to_vec(),
        "empty.txt" => Vec::new(),
        other => panic!("the captures upload {other}, whose content this test does not know"),
    }
}

/// The kinds of server-assigned identifiers, each with its own numbering.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Folder,
    Item,
    Revision,
    Bitstream,
    User,
    Metadata,
    Assetstore,
    Community,
    Group,
    Uuid,
    /// API keys, login tokens and upload tokens.
    Secret,
}

/// Which new identifier stands for which recorded one, in both directions so that two recorded
/// objects can never share one new object (and the reverse).
#[derive(Default)]
struct Correspondence {
    forward: HashMap<(Kind, String), String>,
    backward: HashMap<(Kind, String), String>,
}

impl Correspondence {
    fn learn(&mut self, kind: Kind, recorded: &str, actual: &str) -> Result<(), String> {
        if let Some(known) = self.forward.get(&(kind, recorded.to_owned())) {
            return if known == actual {
                Ok(())
            } else {
                Err(format!(
                    "{kind:?} {recorded} of the capture was {known} before, now {actual}"
                ))
            };
        }
        if let Some(known) = self.backward.get(&(kind, actual.to_owned())) {
            return Err(format!(
                "{kind:?} {actual} stands for {known} of the capture, now also for {recorded}"
            ));
        }
        self.forward
            .insert((kind, recorded.to_owned()), actual.to_owned());
        self.backward
            .insert((kind, actual.to_owned()), recorded.to_owned());
        Ok(())
    }

    /// The new identifier for a recorded one; unknown ones (e.g. a deliberately wrong token or
    /// a nonexistent id) are sent as recorded.
    fn translate(&self, kind: Kind, recorded: &str) -> String {
        self.forward
            .get(&(kind, recorded.to_owned()))
            .cloned()
            .unwrap_or_else(|| recorded.to_owned())
    }
}

/// Which identifier a request parameter carries.
fn parameter_kind(api_method: &str, key: &str) -> Option<Kind> {
    match key {
        "token" | "apikey" | "uploadtoken" | "authToken" => Some(Kind::Secret),
        "parentid" | "dstfolderid" | "srcfolderid" | "folderid" | "folderId" | "folders" => {
            Some(Kind::Folder)
        }
        "itemid" | "itemId" | "items" => Some(Kind::Item),
        "bitstream" => Some(Kind::Bitstream),
        "user_id" => Some(Kind::User),
        "uuid" => Some(Kind::Uuid),
        "id" if api_method.starts_with("midas.folder.") => Some(Kind::Folder),
        "id" if api_method.starts_with("midas.item.") => Some(Kind::Item),
        "id" if api_method.starts_with("midas.bitstream.") => Some(Kind::Bitstream),
        _ => None,
    }
}

/// How a value in an answer is compared, by its key.
#[derive(Debug, PartialEq)]
enum Field {
    Id(Kind),
    Uuid,
    /// Dates and times: the same format, not the same instant.
    Date,
    Secret,
    UploadToken,
    /// Where the recorded server kept the file: an implementation detail.
    StorePath,
    /// Sniffed from the content by libmagic; only text types are expected to agree.
    Mimetype,
    /// A name, which for user root folders contains the user id (`user_1`).
    Name,
    Plain,
}

fn classify(key: &str, api_method: &str) -> Field {
    match key {
        "folder_id" | "parent_id" => Field::Id(Kind::Folder),
        "item_id" => Field::Id(Kind::Item),
        "itemrevision_id" => Field::Id(Kind::Revision),
        "bitstream_id" => Field::Id(Kind::Bitstream),
        "user_id" => Field::Id(Kind::User),
        "metadata_id" => Field::Id(Kind::Metadata),
        "assetstore_id" => Field::Id(Kind::Assetstore),
        "community_id" => Field::Id(Kind::Community),
        "group_id" | "admingroup_id" | "moderatorgroup_id" | "membergroup_id" => {
            Field::Id(Kind::Group)
        }
        "id" if api_method == "midas.bitstream.get" => Field::Id(Kind::Bitstream),
        // the captured resource.get looks up an item (type 1)
        "id" if api_method == "midas.resource.get" => Field::Id(Kind::Item),
        "uuid" => Field::Uuid,
        "date" | "date_update" | "date_creation" | "creation" | "formattedDate" => Field::Date,
        "token" if api_method == "midas.upload.generatetoken" => Field::UploadToken,
        "token" | "apikey" => Field::Secret,
        "path" => Field::StorePath,
        "mimetype" => Field::Mimetype,
        "name" => Field::Name,
        _ => Field::Plain,
    }
}

fn is_id(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) && value != "0"
}

/// Digits replaced by `0`: `2026-11-27 16:37:53` and `2024-01-02 03:04:05` have the same shape.
fn digit_shape(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_ascii_digit() { '0' } else { c })
        .collect()
}

/// Compares recorded answers with actual ones and collects every difference.
struct Comparison<'a> {
    api_method: &'a str,
    /// Where the expected answers came from; its URLs in them stand for `server_url`.
    expected_url: &'a str,
    server_url: &'a str,
    seen: &'a mut Correspondence,
    differences: Vec<String>,
}

impl Comparison<'_> {
    fn differ(&mut self, path: &str, what: String) {
        self.differences.push(format!("{path}: {what}"));
    }

    /// The same JSON shape (keys in the same order, lists as lists, every scalar a string) and
    /// the same values, except for the volatile ones (see [`classify`]).
    fn same_shape(&mut self, expected: &Value, actual: &Value, path: &str, key: &str) {
        match (expected, actual) {
            (Value::Object(expected), Value::Object(actual)) => {
                let expected_keys: Vec<&String> = expected.keys().collect();
                let actual_keys: Vec<&String> = actual.keys().collect();
                if expected_keys != actual_keys {
                    self.differ(path, format!("keys {expected_keys:?}, got {actual_keys:?}"));
                }
                for (key, expected) in expected {
                    if let Some(actual) = actual.get(key) {
                        self.same_shape(expected, actual, &format!("{path}.{key}"), key);
                    }
                }
            }
            (Value::Array(expected), Value::Array(actual)) => {
                if expected.len() != actual.len() {
                    self.differ(
                        path,
                        format!("{} entries, got {}", expected.len(), actual.len()),
                    );
                }
                for (index, (expected, actual)) in expected.iter().zip(actual).enumerate() {
                    self.same_shape(expected, actual, &format!("{path}[{index}]"), key);
                }
            }
            (Value::String(expected), Value::String(actual)) => {
                self.same_string(expected, actual, path, key)
            }
            (expected, actual) => self.differ(path, format!("{expected} expected, got {actual}")),
        }
    }

    fn same_string(&mut self, expected: &str, actual: &str, path: &str, key: &str) {
        let learned = match classify(key, self.api_method) {
            Field::Id(kind) if is_id(expected) => {
                if is_id(actual) {
                    self.seen.learn(kind, expected, actual)
                } else {
                    Err(format!("an id expected, got {actual:?}"))
                }
            }
            Field::Uuid | Field::Secret if !expected.is_empty() => {
                let hex = classify(key, self.api_method) == Field::Uuid;
                let well_formed = actual.len() == expected.len()
                    && actual.chars().all(|c| {
                        if hex {
                            c.is_ascii_hexdigit()
                        } else {
                            c.is_ascii_alphanumeric()
                        }
                    });
                let kind = if hex { Kind::Uuid } else { Kind::Secret };
                if well_formed {
                    self.seen.learn(kind, expected, actual)
                } else {
                    Err(format!("like {expected:?} expected, got {actual:?}"))
                }
            }
            Field::UploadToken if !expected.is_empty() => self.same_upload_token(expected, actual),
            Field::Date => {
                if digit_shape(expected) == digit_shape(actual) {
                    Ok(())
                } else {
                    Err(format!("a date like {expected:?} expected, got {actual:?}"))
                }
            }
            Field::StorePath => Ok(()),
            Field::Mimetype if !expected.starts_with("text/") => Ok(()),
            Field::Name if expected.starts_with("user_") && is_id(&expected[5..]) => {
                let user = self.seen.translate(Kind::User, &expected[5..]);
                Self::equal(&format!("user_{user}"), actual)
            }
            _ => Self::equal(
                &expected.replace(self.expected_url, self.server_url),
                actual,
            ),
        };
        if let Err(what) = learned {
            self.differ(path, what);
        }
    }

    fn equal(expected: &str, actual: &str) -> Result<(), String> {
        if expected == actual {
            Ok(())
        } else {
            Err(format!("{expected:?} expected, got {actual:?}"))
        }
    }

    /// `userId/itemId/<64 characters>`.
    fn same_upload_token(&mut self, expected: &str, actual: &str) -> Result<(), String> {
        let expected_parts: Vec<&str> = expected.split('/').collect();
        let actual_parts: Vec<&str> = actual.split('/').collect();
        let [user, item, secret] = expected_parts[..] else {
            return Err(format!(
                "the captured upload token {expected:?} is not user/item/x"
            ));
        };
        let [actual_user, actual_item, actual_secret] = actual_parts[..] else {
            return Err(format!(
                "an upload token like {expected:?} expected, got {actual:?}"
            ));
        };
        // the item may be new here (generatetoken with a folder creates it)
        let user_ok = self.seen.learn(Kind::User, user, actual_user).is_ok();
        let item_ok = self.seen.learn(Kind::Item, item, actual_item).is_ok();
        let secret_ok = actual_secret.len() == secret.len()
            && actual_secret.chars().all(|c| c.is_ascii_alphanumeric());
        if !(user_ok && item_ok && secret_ok) {
            return Err(format!(
                "an upload token like {expected:?} (this user, this item) expected, got {actual:?}"
            ));
        }
        self.seen.learn(Kind::Secret, expected, actual)
    }
}

/// One replay of the captured session against one server.
struct Replay<'a> {
    server: &'a TestServer,
    seen: Correspondence,
}

impl<'a> Replay<'a> {
    fn new(server: &'a TestServer) -> Replay<'a> {
        Replay {
            server,
            seen: Correspondence::default(),
        }
    }

    /// Replays every capture up to the end of `area`; returns the differences found in `area`'s
    /// captures (the earlier ones only build the state).
    fn run(&mut self, area: Area) -> Vec<String> {
        let last = area.iter().map(|range| *range.end()).max().unwrap_or(0);
        let mut differences = Vec::new();
        let mut compared = 0;
        for capture in load_captures().iter().filter(|c| c.number <= last) {
            let found = self.replay(capture);
            if in_area(area, capture.number) {
                compared += 1;
                differences.extend(found.into_iter().map(|d| format!("{}: {d}", capture.name)));
            }
        }
        assert!(compared > 0, "no capture in the area {area:?}");
        differences
    }

    fn replay(&mut self, capture: &Capture) -> Vec<String> {
        let request = &capture.record["request"];
        let api_method = request["api_method"].as_str().unwrap_or_default();
        let http_method = request["http_method"].as_str().unwrap_or("POST");
        let mut query = vec![("method".to_owned(), api_method.to_owned())];
        let mut headers = Vec::new();
        let mut filename = None;
        let mut length = None;
        for (key, value) in request["params"].as_object().into_iter().flatten() {
            let value = scalar_text(value);
            if let Some(header) = key.strip_prefix("_header_") {
                headers.push((header.to_owned(), value));
                continue;
            }
            match key.as_str() {
                "filename" => filename = Some(value.clone()),
                "length" => length = Some(value.clone()),
                _ => {}
            }
            let value = match parameter_kind(api_method, key) {
                Some(kind) => self.seen.translate(kind, &value),
                None => value,
            };
            query.push((key.clone(), value));
        }
        let Ok(method) = Method::from_bytes(http_method.as_bytes()) else {
            return vec![format!(
                "the capture has an unknown HTTP method {http_method}"
            )];
        };
        let mut builder = self
            .server
            .http()
            .request(method.clone(), format!("{}/api/json", self.server.url))
            .query(&query);
        for (name, value) in &headers {
            builder = builder.header(name, value);
        }
        if method == Method::PUT {
            let content = uploaded_content(filename.as_deref().unwrap_or_default());
            assert_eq!(
                Some(content.len().to_string()),
                length,
                "{}: the upload content does not have the recorded length",
                capture.name
            );
            builder = builder.body(content);
        }
        let response = match builder.send() {
            Ok(response) => response,
            Err(err) => return vec![format!("{http_method} {api_method} failed: {err}")],
        };
        let mut comparison = Comparison {
            api_method,
            expected_url: CAPTURED_BASE,
            server_url: &self.server.url,
            seen: &mut self.seen,
            differences: Vec::new(),
        };
        let expected = &capture.record["response"];
        match capture.record["redirects"].get(0) {
            Some(redirect) => {
                if let Some(download) = follow_redirect(
                    &mut comparison,
                    self.server.http(),
                    redirect,
                    response,
                    &headers,
                ) {
                    compare_download(&mut comparison, expected, download);
                }
            }
            None => compare_api_answer(&mut comparison, expected, response),
        }
        comparison.differences
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn header_text(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

fn compare_status(comparison: &mut Comparison<'_>, expected: &Value, response: &Response) {
    let status = response.status().as_u16();
    if Some(u64::from(status)) != expected["status"].as_u64() {
        comparison.differ(
            "status",
            format!("{} expected, got {status}", expected["status"]),
        );
    }
}

fn compare_api_answer(comparison: &mut Comparison<'_>, expected: &Value, response: Response) {
    compare_status(comparison, expected, &response);
    let content_type = header_text(&response, CONTENT_TYPE.as_str());
    let expected_type = expected["headers"]["Content-Type"].as_str();
    if content_type.as_deref() != expected_type {
        comparison.differ(
            "Content-Type",
            format!("{expected_type:?} expected, got {content_type:?}"),
        );
    }
    let body = match response.text() {
        Ok(body) => body,
        Err(err) => return comparison.differ("body", format!("cannot be read: {err}")),
    };
    match serde_json::from_str::<Value>(&body) {
        Ok(actual) if comparison.api_method == "midas.methods.list" => {
            compare_method_list(comparison, &expected["json"], &actual)
        }
        Ok(actual) => comparison.same_shape(&expected["json"], &actual, "$", ""),
        Err(err) => comparison.differ("body", format!("not JSON ({err}): {body:.300}")),
    }
}

/// The help texts of `midas.methods.list` are documentation, not protocol. What counts: the
/// envelope, entries shaped like Midas's, only real Midas 3.4.2 method names, and among them
/// every method the captured session calls.
fn compare_method_list(comparison: &mut Comparison<'_>, expected: &Value, actual: &Value) {
    let without_methods = |envelope: &Value| {
        let mut envelope = envelope.clone();
        envelope["data"]["methods"] = Value::Array(Vec::new());
        envelope
    };
    comparison.same_shape(
        &without_methods(expected),
        &without_methods(actual),
        "$",
        "",
    );
    let recorded: Vec<&str> = expected["data"]["methods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|method| method["name"].as_str())
        .collect();
    let listed = actual["data"]["methods"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut names = Vec::new();
    for (index, method) in listed.iter().enumerate() {
        let path = format!("$.data.methods[{index}]");
        let keys: Vec<&String> = method
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
            .collect();
        let help_keys: Vec<&String> = method["help"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
            .collect();
        if keys != ["name", "help"] || help_keys != ["params", "example", "return", "description"] {
            comparison.differ(
                &path,
                format!("not shaped like a Midas method entry: {method}"),
            );
        }
        let name = method["name"].as_str().unwrap_or_default();
        if !recorded.contains(&name) {
            comparison.differ(&path, format!("{name:?} is not a Midas 3.4.2 method"));
        }
        names.push(name);
    }
    let called: Vec<String> = load_captures()
        .iter()
        .filter_map(|c| {
            c.record["request"]["api_method"]
                .as_str()?
                .strip_prefix("midas.")
        })
        .filter(|name| recorded.contains(name) && !names.contains(name))
        .map(str::to_owned)
        .collect();
    if !called.is_empty() {
        comparison.differ(
            "$.data.methods",
            format!("these methods are missing: {called:?}"),
        );
    }
}

/// Checks the 302 of a download method and follows it; returns the final answer.
fn follow_redirect(
    comparison: &mut Comparison<'_>,
    http: &reqwest::blocking::Client,
    redirect: &Value,
    response: Response,
    headers: &[(String, String)],
) -> Option<Response> {
    let status = response.status().as_u16();
    if Some(u64::from(status)) != redirect["status"].as_u64() {
        let body = response.text().unwrap_or_default();
        comparison.differ(
            "status",
            format!(
                "a {} redirect expected, got {status}: {body:.300}",
                redirect["status"]
            ),
        );
        return None;
    }
    let expected_location = redirect["location"]
        .as_str()
        .or_else(|| redirect["headers"]["Location"].as_str())
        .unwrap_or_default();
    let Some(location) = header_text(&response, LOCATION.as_str()) else {
        comparison.differ("Location", "missing".to_owned());
        return None;
    };
    if expected_location.starts_with('/') != location.starts_with('/') {
        comparison.differ(
            "Location",
            format!("like {expected_location:?} (relative or not) expected, got {location:?}"),
        );
    }
    let base = Url::parse(comparison.server_url).ok()?;
    let (Ok(expected_url), Ok(actual_url)) = (
        Url::parse(CAPTURED_BASE).and_then(|u| u.join(expected_location)),
        base.join(&location),
    ) else {
        comparison.differ("Location", format!("not a URL: {location:?}"));
        return None;
    };
    compare_location_url(comparison, &expected_url, &actual_url);
    let mut follow = http.get(actual_url);
    for (name, value) in headers {
        follow = follow.header(name, value);
    }
    match follow.send() {
        Ok(download) => Some(download),
        Err(err) => {
            comparison.differ("redirect", format!("following it failed: {err}"));
            None
        }
    }
}

/// The same path and query in a redirect's `Location`, the expected one's ids translated.
fn compare_location_url(comparison: &mut Comparison<'_>, expected: &Url, actual: &Url) {
    let expected_query: Vec<(String, String)> = expected
        .query_pairs()
        .map(|(key, value)| {
            let value = match parameter_kind("", &key) {
                Some(kind) => comparison.seen.translate(kind, &value),
                None => value.into_owned(),
            };
            (key.into_owned(), value)
        })
        .collect();
    let actual_query: Vec<(String, String)> = actual.query_pairs().into_owned().collect();
    if expected.path() != actual.path() || expected_query != actual_query {
        comparison.differ(
            "Location",
            format!(
                "{} {expected_query:?} expected, got {} {actual_query:?}",
                expected.path(),
                actual.path()
            ),
        );
    }
}

/// Reads a body to its end, keeping what arrived before an early end of the connection (the
/// server announces the full length even when it sends from an offset).
fn read_body(mut response: Response) -> (Vec<u8>, Option<String>) {
    let mut body = Vec::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        match response.read(&mut buffer) {
            Ok(0) => return (body, None),
            Ok(n) => body.extend_from_slice(&buffer[..n]),
            Err(err) => return (body, Some(err.to_string())),
        }
    }
}

fn compare_download(comparison: &mut Comparison<'_>, expected: &Value, response: Response) {
    compare_status(comparison, expected, &response);
    let mut is_zip = false;
    for (name, value) in expected["headers"].as_object().into_iter().flatten() {
        let value = value.as_str().unwrap_or_default();
        let actual = header_text(&response, name);
        let matches = match name.to_ascii_lowercase().as_str() {
            "last-modified" => actual
                .as_deref()
                .is_some_and(|a| a.len() == value.len() && a.ends_with(" GMT")),
            "content-type" => {
                is_zip = value == "application/x-zip";
                // binary types are sniffed by libmagic; text and zip must agree
                !(value.starts_with("text/") || is_zip) || actual.as_deref() == Some(value)
            }
            _ => actual.as_deref() == Some(value),
        };
        if !matches {
            comparison.differ(
                &format!("header {name}"),
                format!("{value:?} expected, got {actual:?}"),
            );
        }
    }
    let short = expected.get("short_body").is_some();
    let (body, error) = read_body(response);
    if let (Some(error), false) = (&error, short) {
        comparison.differ(
            "body",
            format!("ended early after {} bytes: {error}", body.len()),
        );
    }
    let expected_body = capture_body(expected["body_file"].as_str().unwrap_or_default());
    if is_zip {
        compare_zip(comparison, &expected_body, &body);
    } else if body != expected_body {
        let first = body
            .iter()
            .zip(&expected_body)
            .position(|(a, b)| a != b)
            .unwrap_or(body.len().min(expected_body.len()));
        comparison.differ(
            "body",
            format!(
                "{} bytes expected, got {} (first difference at byte {first})",
                expected_body.len(),
                body.len()
            ),
        );
    }
}

/// Name, size and CRC-32 of every entry, from the central directory (duplicate names included).
fn zip_summary(bytes: &[u8]) -> Result<Vec<(String, u64, u32)>, String> {
    let entries = zipfile::entries(bytes)?;
    Ok(entries
        .into_iter()
        .map(|entry| (entry.name, entry.size, entry.crc32))
        .collect())
}

/// The same entries (names, sizes, checksums) in the same order, each actual entry stored and
/// matching its checksum. (The recorded archives are deflated; their checksums are enough.)
fn compare_zip(comparison: &mut Comparison<'_>, expected: &[u8], actual: &[u8]) {
    let expected_entries = match zip_summary(expected) {
        Ok(entries) => entries,
        Err(err) => return comparison.differ("zip", format!("the capture is unreadable: {err}")),
    };
    let actual_entries = match zip_summary(actual) {
        Ok(entries) => entries,
        Err(err) => return comparison.differ("zip", format!("not a readable ZIP: {err}")),
    };
    if expected_entries != actual_entries {
        comparison.differ(
            "zip entries",
            format!("{expected_entries:?} expected, got {actual_entries:?}"),
        );
    }
    for entry in zipfile::entries(actual).unwrap_or_default() {
        if let Err(err) = entry.stored_content() {
            comparison.differ("zip content", err);
        }
    }
}

/// The comparison itself must notice what it is meant to notice.
mod comparison {
    use super::*;
    use serde_json::json;

    fn differences(expected: Value, actual: Value) -> Vec<String> {
        let mut seen = Correspondence::default();
        let mut comparison = Comparison {
            api_method: "midas.item.get",
            expected_url: CAPTURED_BASE,
            server_url: "http://127.0.0.1:1",
            seen: &mut seen,
            differences: Vec::new(),
        };
        comparison.same_shape(&expected, &actual, "$", "");
        comparison.differences
    }

    fn item(id: &str, size: Value) -> Value {
        json!({"item_id": id, "name": "a.txt", "sizebytes": size,
               "uuid": "7aedd44d9a73417a9f1c7ff186f976a3", "date_update": "2026-11-27 16:37:53"})
    }

    #[test]
    fn ids_uuids_and_dates_may_differ() {
        let mut actual = item("9", json!("34"));
        actual["uuid"] = json!("00000000000000000000000000000000");
        actual["date_update"] = json!("2024-01-02 03:04:05");
        assert_eq!(
            differences(item("1", json!("34")), actual),
            Vec::<String>::new()
        );
    }

    #[test]
    fn numbers_key_order_and_values_must_not() {
        assert_eq!(
            differences(item("1", json!("34")), item("1", json!(34))).len(),
            1
        );
        assert_eq!(
            differences(item("1", json!("34")), item("1", json!("35"))).len(),
            1
        );
        let reordered = json!({"name": "a.txt", "item_id": "1", "sizebytes": "34",
            "uuid": "7aedd44d9a73417a9f1c7ff186f976a3", "date_update": "2026-11-27 16:37:53"});
        assert_eq!(differences(item("1", json!("34")), reordered).len(), 1);
        assert_eq!(
            differences(json!({"extraFields": []}), json!({"extraFields": {}})).len(),
            1
        );
    }

    #[test]
    fn the_zip_reader_reads_the_recorded_archives() {
        assert_eq!(zipfile::crc32(b"123456789"), 0xCBF4_3926);
        let summary = zip_summary(&capture_body("63-item.download-2-bitstreams.body"));
        let binary = zipfile::crc32(&uploaded_content("binary.bin"));
        let second = zipfile::crc32(&uploaded_content("second.txt"));
        assert_eq!(
            summary,
            Ok(vec![
                ("binary.bin".to_owned(), 10244, binary),
                ("second.txt".to_owned(), 7, second)
            ])
        );
    }

    #[test]
    fn one_recorded_id_stands_for_one_actual_id() {
        let expected = json!([item("1", json!("0")), item("1", json!("0"))]);
        let actual = json!([item("5", json!("0")), item("6", json!("0"))]);
        assert_eq!(differences(expected, actual).len(), 1);
    }
}
