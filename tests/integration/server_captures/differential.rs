//! The live half of the comparison: one scenario of calls, every method `serve` implements with
//! its error cases, run against a real Midas Server (when `MIDASFS_TEST_MIDAS_URL` names one)
//! and against a fresh `midasfs serve`, and the two sets of answers compared as the replay
//! compares them with the captures (keys and their order, string typing, `stat`/`code`/`message`,
//! HTTP status and the headers that matter; ids mapped one to one, uuids, tokens and dates
//! masked). Each run works in a folder of its own, named by a nonce the two runs share, so a real
//! server that is not clean does not matter: the lists of the whole server (communities) are
//! narrowed to the objects of this run, and the users to one account per email.

use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use serde_json::Value;

use super::{
    compare_location_url, compare_method_list, compare_zip, parameter_kind, Comparison,
    Correspondence, TestServer,
};

/// Where a run sends its calls, and as whom.
struct Side {
    url: String,
    email: String,
    password: String,
    api_key: String,
    http: Client,
}

impl Side {
    fn new(url: &str, email: &str, password: &str, api_key: &str) -> Side {
        Side {
            url: url.trim_end_matches('/').to_owned(),
            email: email.to_owned(),
            password: password.to_owned(),
            api_key: api_key.to_owned(),
            http: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(60))
                .build()
                .expect("an HTTP client"),
        }
    }
}

/// What one call sent and what came back.
struct Exchange {
    label: String,
    api_method: String,
    params: Vec<(String, String)>,
    status: u16,
    content_type: Option<String>,
    location: Option<String>,
    disposition: Option<String>,
    length: Option<String>,
    body: Answer,
}

impl Exchange {
    /// A call with no answer (yet): no status or headers, `why` for its body.
    fn unanswered(
        label: &str,
        api_method: &str,
        params: Vec<(String, String)>,
        why: &str,
    ) -> Exchange {
        Exchange {
            label: label.to_owned(),
            api_method: api_method.to_owned(),
            params,
            status: 0,
            content_type: None,
            location: None,
            disposition: None,
            length: None,
            body: Answer::Unreadable(why.to_owned()),
        }
    }
}

enum Answer {
    Json(Value),
    Bytes(Vec<u8>),
    Unreadable(String),
}

/// One run of the scenario against one server.
struct Session<'a> {
    side: &'a Side,
    nonce: &'a str,
    log: Vec<Exchange>,
}

fn header(response: &reqwest::blocking::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

impl Session<'_> {
    /// POSTs a method with its parameters in the query; returns the answer's `data` (Null when
    /// there is none).
    fn call(&mut self, label: &str, api_method: &str, params: &[(&str, &str)]) -> Value {
        self.send(label, reqwest::Method::POST, api_method, params, None)
    }

    fn call_get(&mut self, label: &str, api_method: &str, params: &[(&str, &str)]) -> Value {
        self.send(label, reqwest::Method::GET, api_method, params, None)
    }

    fn put(&mut self, label: &str, params: &[(&str, &str)], body: &[u8]) -> Value {
        self.send(
            label,
            reqwest::Method::PUT,
            "midas.upload.perform",
            params,
            Some(body.to_vec()),
        )
    }

    fn send(
        &mut self,
        label: &str,
        verb: reqwest::Method,
        api_method: &str,
        params: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Value {
        let mut query = vec![("method", api_method)];
        query.extend_from_slice(params);
        let mut request = self
            .side
            .http
            .request(verb, format!("{}/api/json", self.side.url))
            .query(&query);
        if let Some(body) = body {
            request = request.body(body);
        }
        let exchange = self.exchange(label, api_method, params, request);
        let data = match &exchange.body {
            Answer::Json(answer) => answer.get("data").cloned().unwrap_or(Value::Null),
            _ => Value::Null,
        };
        self.log.push(exchange);
        data
    }

    /// GETs the `Location` of the last answer, a download.
    fn follow(&mut self, label: &str) {
        let Some(location) = self.log.last().and_then(|e| e.location.clone()) else {
            self.log.push(Exchange::unanswered(
                label,
                "download",
                Vec::new(),
                "no redirect to follow",
            ));
            return;
        };
        let url = reqwest::Url::parse(&format!("{}/", self.side.url))
            .and_then(|base| base.join(&location))
            .expect("a download URL");
        let request = self.side.http.get(url);
        let exchange = self.exchange(label, "download", &[], request);
        self.log.push(exchange);
    }

    /// [`Session::follow`] for a download that counts for `item`, then waits (at most 10 s)
    /// until the item's `download` counter shows it. Real Midas counts a download after it has
    /// sent the last byte, by reading the item's row and writing it back one higher: the calls
    /// that follow may come before that, and a second download counted meanwhile is lost (two
    /// writers of `n + 1`). A client that waits sees every count, on both servers.
    fn follow_counted(&mut self, label: &str, token: &str, item: &str) {
        let before = self.download_count(token, item);
        self.follow(label);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.download_count(token, item) <= before && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The item's `download` counter, by a call that is not part of the comparison.
    fn download_count(&self, token: &str, item: &str) -> Option<u64> {
        let params = [("method", "midas.item.get"), ("token", token), ("id", item)];
        let answer = self
            .side
            .http
            .post(format!("{}/api/json", self.side.url))
            .query(&params)
            .send()
            .and_then(|r| r.text())
            .ok()?;
        let answer: Value = serde_json::from_str(&answer).ok()?;
        answer["data"]["download"].as_str()?.parse().ok()
    }

    fn exchange(
        &self,
        label: &str,
        api_method: &str,
        params: &[(&str, &str)],
        request: reqwest::blocking::RequestBuilder,
    ) -> Exchange {
        let params = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut exchange = Exchange::unanswered(label, api_method, params, "");
        let response = match request.send() {
            Ok(response) => response,
            Err(err) => {
                exchange.body = Answer::Unreadable(format!("the request failed: {err}"));
                return exchange;
            }
        };
        exchange.status = response.status().as_u16();
        exchange.content_type = header(&response, CONTENT_TYPE.as_str());
        exchange.location = header(&response, LOCATION.as_str());
        exchange.disposition = header(&response, CONTENT_DISPOSITION.as_str());
        exchange.length = header(&response, CONTENT_LENGTH.as_str());
        // Midas answers JSON as text/html
        let mut response = response;
        let mut bytes = Vec::new();
        // a download from an offset announces the full length and ends early (as Midas does)
        let read = std::io::Read::read_to_end(&mut response, &mut bytes);
        let read = match read {
            Err(_) if api_method == "download" => Ok(bytes),
            other => other.map(|_| bytes),
        };
        exchange.body = match read {
            Ok(bytes) if api_method != "download" && exchange.location.is_none() => {
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(mut answer) => {
                        self.narrow(api_method, &mut answer);
                        Answer::Json(answer)
                    }
                    Err(err) => Answer::Unreadable(format!(
                        "not JSON ({err}): {:.300}",
                        String::from_utf8_lossy(&bytes)
                    )),
                }
            }
            Ok(bytes) => Answer::Bytes(bytes),
            Err(err) => Answer::Unreadable(format!("the body cannot be read: {err}")),
        };
        exchange
    }

    /// The lists of the whole server keep only this run's objects, and one account per email.
    fn narrow(&self, api_method: &str, answer: &mut Value) {
        if api_method == "midas.community.list" {
            if let Some(list) = answer["data"].as_array_mut() {
                list.retain(|c| c["name"].as_str().is_some_and(|n| n.contains(self.nonce)));
            }
        }
        // Midas checks that an email is free and then makes the account, without a lock: users
        // made at once with one email (tests that run in parallel, before `add_user` took a lock)
        // stay on the real server as two accounts. serve holds one per email, as `serve_like`
        // copies them; the copies after the first are an accident of the server's history.
        if api_method == "midas.user.list" {
            if let Some(list) = answer["data"].as_array_mut() {
                let mut seen = std::collections::HashSet::new();
                list.retain(|u| seen.insert(u["email"].as_str().unwrap_or_default().to_owned()));
            }
        }
    }
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// The scenario: every method `serve` implements, with their error cases.
fn scenario(s: &mut Session<'_>) {
    let n = s.nonce.to_owned();
    let side = s.side;
    let (email, password, api_key) = (
        side.email.as_str(),
        side.password.as_str(),
        side.api_key.as_str(),
    );
    const MISSING: &str = "987654321";

    // system
    s.call("version", "midas.version", &[]);
    s.call("info", "midas.info", &[]);
    s.call("modules", "midas.modules.list", &[]);
    s.call("methods", "midas.methods.list", &[]);
    s.call("an unknown method", "midas.no.such.method", &[]);
    s.call("a method without the midas prefix", "version", &[]);

    // authentication
    s.call("login without parameters", "midas.login", &[]);
    s.call(
        "login with a wrong key",
        "midas.login",
        &[
            ("email", email),
            ("apikey", "0123456789abcdef0123456789abcdef"),
            ("appname", "Default"),
        ],
    );
    s.call(
        "login with an unknown email",
        "midas.login",
        &[
            ("email", "nobody@example.com"),
            ("apikey", api_key),
            ("appname", "Default"),
        ],
    );
    s.call(
        "login with an unknown application",
        "midas.login",
        &[("email", email), ("apikey", api_key), ("appname", "Other")],
    );
    let token = text(
        &s.call(
            "login",
            "midas.login",
            &[
                ("email", email),
                ("apikey", api_key),
                ("appname", "Default"),
            ],
        )["token"],
    );
    let token = token.as_str();
    s.call(
        "the default key with a wrong password",
        "midas.user.apikey.default",
        &[("email", email), ("password", "not the password")],
    );
    s.call(
        "the default key of an unknown email",
        "midas.user.apikey.default",
        &[("email", "nobody@example.com"), ("password", password)],
    );
    s.call(
        "the default key",
        "midas.user.apikey.default",
        &[("email", email), ("password", password)],
    );
    s.call_get(
        "the default key by GET",
        "midas.user.apikey.default",
        &[("email", email), ("password", password)],
    );
    s.call(
        "a call with a bad token",
        "midas.user.folders",
        &[("token", "nonsense0123456789")],
    );

    s.call(
        "a folder without an id, with a bad token",
        "midas.folder.get",
        &[("token", "nonsense0123456789")],
    );
    s.call(
        "an item without a name, with a bad token",
        "midas.item.create",
        &[("token", "nonsense0123456789")],
    );

    // users
    let me = s.call("a user by email", "midas.user.get", &[("email", email)]);
    let user_id = text(&me["user_id"]);
    s.call("a user by id", "midas.user.get", &[("user_id", &user_id)]);
    s.call("a user by id as id", "midas.user.get", &[("id", &user_id)]);
    s.call(
        "a user by name",
        "midas.user.get",
        &[
            ("firstname", &text(&me["firstname"])),
            ("lastname", &text(&me["lastname"])),
        ],
    );
    s.call(
        "an unknown user",
        "midas.user.get",
        &[("email", "nobody@example.com")],
    );
    s.call("a user without parameters", "midas.user.get", &[]);
    s.call("the users", "midas.user.list", &[("limit", "50")]);
    s.call("the users without a limit", "midas.user.list", &[]);
    let folders = s.call("my folders", "midas.user.folders", &[("token", token)]);
    s.call("anonymous folders", "midas.user.folders", &[]);
    let private = folders
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["name"] == "Private")
        .map(|f| text(&f["folder_id"]))
        .unwrap_or_default();

    // folders
    let top = text(
        &s.call(
            "my folder",
            "midas.folder.create",
            &[("token", token), ("name", &n), ("parentid", &private)],
        )["folder_id"],
    );
    s.call(
        "a folder of the same name",
        "midas.folder.create",
        &[("token", token), ("name", &n), ("parentid", &private)],
    );
    s.call(
        "a folder of the same name, reused",
        "midas.folder.create",
        &[
            ("token", token),
            ("name", &n),
            ("parentid", &private),
            ("reuseExisting", "true"),
        ],
    );
    s.call(
        "a folder without a name",
        "midas.folder.create",
        &[("token", token), ("parentid", &top)],
    );
    s.call(
        "a folder created anonymously",
        "midas.folder.create",
        &[("name", "x"), ("parentid", &top)],
    );
    s.call(
        "a folder in a missing parent",
        "midas.folder.create",
        &[("token", token), ("name", "x"), ("parentid", MISSING)],
    );
    let sub = text(
        &s.call(
            "a subfolder",
            "midas.folder.create",
            &[
                ("token", token),
                ("name", "sub"),
                ("parentid", &top),
                ("description", "a subfolder"),
            ],
        )["folder_id"],
    );
    let other = text(
        &s.call(
            "another subfolder",
            "midas.folder.create",
            &[("token", token), ("name", "other"), ("parentid", &top)],
        )["folder_id"],
    );
    s.call(
        "a folder",
        "midas.folder.get",
        &[("token", token), ("id", &top)],
    );
    s.call(
        "a missing folder",
        "midas.folder.get",
        &[("token", token), ("id", MISSING)],
    );
    s.call(
        "a private folder, anonymously",
        "midas.folder.get",
        &[("id", &top)],
    );
    s.call(
        "a folder without an id",
        "midas.folder.get",
        &[("token", token)],
    );
    s.call(
        "a folder's children",
        "midas.folder.children",
        &[("token", token), ("id", &top)],
    );
    s.call(
        "a private folder's children, anonymously",
        "midas.folder.children",
        &[("id", &top)],
    );
    s.call(
        "a folder moved",
        "midas.folder.move",
        &[("token", token), ("id", &sub), ("dstfolderid", &other)],
    );
    s.call(
        "a folder moved into a missing one",
        "midas.folder.move",
        &[("token", token), ("id", &sub), ("dstfolderid", MISSING)],
    );
    s.call(
        "a folder moved anonymously",
        "midas.folder.move",
        &[("id", &sub), ("dstfolderid", &top)],
    );
    s.call(
        "a folder's permissions",
        "midas.folder.list.permissions",
        &[("token", token), ("folder_id", &top)],
    );
    s.call(
        "a folder's permissions, anonymously",
        "midas.folder.list.permissions",
        &[("folder_id", &top)],
    );
    s.call(
        "a folder made public",
        "midas.folder.set.privacy.recursive",
        &[
            ("token", token),
            ("folder_id", &other),
            ("privacy", "Public"),
        ],
    );
    s.call(
        "a public folder, anonymously",
        "midas.folder.get",
        &[("id", &other)],
    );
    s.call(
        "a folder made something else",
        "midas.folder.set.privacy.recursive",
        &[("token", token), ("folder_id", &other), ("privacy", "Open")],
    );
    s.call(
        "a folder made private",
        "midas.folder.set.privacy.recursive",
        &[
            ("token", token),
            ("folder_id", &other),
            ("privacy", "Private"),
        ],
    );

    // items
    let a_name = format!("{n}-a.txt");
    let item = text(
        &s.call(
            "an item",
            "midas.item.create",
            &[
                ("token", token),
                ("name", &a_name),
                ("parentid", &top),
                ("description", "the first"),
            ],
        )["item_id"],
    );
    s.call(
        "an item of the same name",
        "midas.item.create",
        &[("token", token), ("name", &a_name), ("parentid", &top)],
    );
    s.call(
        "an item without a name",
        "midas.item.create",
        &[("token", token), ("parentid", &top)],
    );
    s.call(
        "an item created anonymously",
        "midas.item.create",
        &[("name", "x"), ("parentid", &top)],
    );
    s.call(
        "an item in a missing folder",
        "midas.item.create",
        &[("token", token), ("name", "x"), ("parentid", MISSING)],
    );
    s.call(
        "an empty item",
        "midas.item.get",
        &[("token", token), ("id", &item)],
    );
    s.call(
        "a missing item",
        "midas.item.get",
        &[("token", token), ("id", MISSING)],
    );
    s.call(
        "a private item, anonymously",
        "midas.item.get",
        &[("id", &item)],
    );
    s.call(
        "an item exists",
        "midas.item.exists",
        &[("token", token), ("name", &a_name), ("parentid", &top)],
    );
    s.call(
        "an item does not exist",
        "midas.item.exists",
        &[("token", token), ("name", "none"), ("parentid", &top)],
    );

    // uploads
    let hello = b"hello world\n";
    let upload = text(
        &s.call(
            "an upload token",
            "midas.upload.generatetoken",
            &[
                ("token", token),
                ("itemid", &item),
                ("filename", "hello.txt"),
            ],
        )["token"],
    );
    s.call(
        "the offset of a new upload",
        "midas.upload.getoffset",
        &[("uploadtoken", &upload)],
    );
    s.call(
        "the offset of an unknown upload",
        "midas.upload.getoffset",
        &[("uploadtoken", "1/1/nonsense")],
    );
    s.put(
        "an upload",
        &[
            ("uploadtoken", &upload),
            ("filename", "hello.txt"),
            ("length", "12"),
        ],
        hello,
    );
    s.put(
        "an upload with an unknown token",
        &[
            ("uploadtoken", "1/1/nonsense"),
            ("filename", "hello.txt"),
            ("length", "12"),
        ],
        hello,
    );
    s.call(
        "an upload token for known content",
        "midas.upload.generatetoken",
        &[
            ("token", token),
            ("folderid", &top),
            ("filename", &format!("{n}-copy.txt")),
            ("checksum", "6f5902ac237024bdd0c176cb93063dc4"),
        ],
    );
    let parts = text(
        &s.call(
            "an upload token into a new item",
            "midas.upload.generatetoken",
            &[
                ("token", token),
                ("folderid", &top),
                ("filename", &format!("{n}-parts.txt")),
            ],
        )["token"],
    );
    let parts_name = format!("{n}-parts.txt");
    s.put(
        "an upload's first part",
        &[
            ("uploadtoken", &parts),
            ("filename", &parts_name),
            ("length", "12"),
        ],
        b"hello ",
    );
    s.call(
        "the offset of a partial upload",
        "midas.upload.getoffset",
        &[("uploadtoken", &parts)],
    );
    s.put(
        "an upload's second part",
        &[
            ("uploadtoken", &parts),
            ("filename", &parts_name),
            ("length", "12"),
            ("offset", "6"),
        ],
        b"world\n",
    );
    s.call(
        "an upload token without a filename",
        "midas.upload.generatetoken",
        &[("token", token), ("itemid", &item)],
    );
    s.call(
        "an upload token, anonymously",
        "midas.upload.generatetoken",
        &[("itemid", &item), ("filename", "x.txt")],
    );
    s.call(
        "an upload token without a target",
        "midas.upload.generatetoken",
        &[("token", token), ("filename", "x.txt")],
    );

    // bitstreams
    let full = s.call(
        "an item with a file",
        "midas.item.get",
        &[("token", token), ("id", &item)],
    );
    s.call(
        "an item's head revision",
        "midas.item.get",
        &[("token", token), ("id", &item), ("head", "true")],
    );
    let bitstream = full["revisions"]
        .as_array()
        .and_then(|r| r.last())
        .and_then(|r| r["bitstreams"].as_array())
        .and_then(|b| b.first())
        .map(|b| text(&b["bitstream_id"]))
        .unwrap_or_default();
    s.call(
        "a bitstream",
        "midas.bitstream.get",
        &[("token", token), ("id", &bitstream)],
    );
    s.call(
        "a missing bitstream",
        "midas.bitstream.get",
        &[("token", token), ("id", MISSING)],
    );
    s.call(
        "a private bitstream, anonymously",
        "midas.bitstream.get",
        &[("id", &bitstream)],
    );
    s.call(
        "a bitstream renamed",
        "midas.bitstream.edit",
        &[
            ("token", token),
            ("id", &bitstream),
            ("name", "renamed.txt"),
            ("mimetype", "text/x-test"),
        ],
    );
    s.call(
        "a bitstream edited anonymously",
        "midas.bitstream.edit",
        &[("id", &bitstream), ("name", "x.txt")],
    );
    s.call(
        "a bitstream downloaded",
        "midas.bitstream.download",
        &[("token", token), ("id", &bitstream)],
    );
    s.follow_counted("the bitstream's content", token, &item);
    s.call(
        "a bitstream downloaded from an offset",
        "midas.bitstream.download",
        &[("token", token), ("id", &bitstream), ("offset", "6")],
    );
    s.follow_counted("the bitstream's content from the offset", token, &item);
    s.call(
        "a private bitstream downloaded anonymously",
        "midas.bitstream.download",
        &[("id", &bitstream)],
    );
    s.call(
        "a private item downloaded anonymously",
        "midas.item.download",
        &[("id", &item)],
    );
    s.call(
        "a missing bitstream downloaded",
        "midas.bitstream.download",
        &[("token", token), ("id", MISSING)],
    );
    s.call(
        "an item downloaded",
        "midas.item.download",
        &[("token", token), ("id", &item)],
    );
    s.follow_counted("the item's content", token, &item);
    s.call(
        "a folder downloaded",
        "midas.folder.download",
        &[("token", token), ("id", &top)],
    );
    s.follow_counted("the folder's content", token, &item);
    let item_uuid = text(&full["uuid"]);
    let top_uuid = text(
        &s.call(
            "a folder again",
            "midas.folder.get",
            &[("token", token), ("id", &top)],
        )["uuid"],
    );
    s.call(
        "bitstreams counted in a folder",
        "midas.bitstream.count",
        &[("token", token), ("uuid", &top_uuid)],
    );
    s.call(
        "bitstreams counted in an item",
        "midas.bitstream.count",
        &[("token", token), ("uuid", &item_uuid)],
    );
    s.call(
        "bitstreams counted of an unknown uuid",
        "midas.bitstream.count",
        &[
            ("token", token),
            ("uuid", "0123456789abcdef0123456789abcdef"),
        ],
    );

    // metadata
    s.call(
        "metadata set",
        "midas.item.setmetadata",
        &[
            ("token", token),
            ("itemId", &item),
            ("element", "colour"),
            ("value", "blue"),
        ],
    );
    s.call(
        "metadata set with a qualifier",
        "midas.item.setmetadata",
        &[
            ("token", token),
            ("itemId", &item),
            ("element", "size"),
            ("qualifier", "cm"),
            ("value", "12"),
        ],
    );
    s.call(
        "metadata set without itemId",
        "midas.item.setmetadata",
        &[
            ("token", token),
            ("id", &item),
            ("element", "colour"),
            ("value", "red"),
        ],
    );
    s.call(
        "several metadata set",
        "midas.item.setmultiplemetadata",
        &[
            ("token", token),
            ("itemid", &item),
            ("count", "2"),
            ("element_1", "a"),
            ("value_1", "1"),
            ("qualifier_1", ""),
            ("element_2", "b"),
            ("value_2", "2"),
            ("qualifier_2", "q"),
        ],
    );
    s.call(
        "metadata",
        "midas.item.getmetadata",
        &[("token", token), ("id", &item)],
    );
    s.call(
        "metadata deleted",
        "midas.item.deletemetadata",
        &[("token", token), ("itemid", &item), ("element", "colour")],
    );
    s.call(
        "metadata deleted that is not there",
        "midas.item.deletemetadata",
        &[("token", token), ("itemid", &item), ("element", "none")],
    );
    s.call(
        "metadata after a deletion",
        "midas.item.getmetadata",
        &[("token", token), ("id", &item)],
    );

    // search and paths
    s.call(
        "items by name",
        "midas.item.searchbyname",
        &[("token", token), ("name", &a_name)],
    );
    s.call(
        "items by name and folder",
        "midas.item.searchbynameandfolder",
        &[("token", token), ("name", &a_name), ("folderId", &top)],
    );
    s.call(
        "items by name and folder name",
        "midas.item.searchbynameandfoldername",
        &[("token", token), ("name", &a_name), ("folderName", &n)],
    );
    s.call(
        "items by name without a name",
        "midas.item.searchbyname",
        &[("token", token)],
    );
    s.call(
        "a search",
        "midas.resource.search",
        &[("token", token), ("search", &n)],
    );
    s.call(
        "a search, anonymously",
        "midas.resource.search",
        &[("search", &n)],
    );
    s.call(
        "a resource by uuid",
        "midas.resource.get",
        &[("token", token), ("uuid", &item_uuid)],
    );
    s.call(
        "a folder resource by uuid",
        "midas.resource.get",
        &[("token", token), ("uuid", &top_uuid), ("folder", "true")],
    );
    s.call(
        "the path to the root",
        "midas.path.to.root",
        &[("token", token), ("uuid", &item_uuid)],
    );
    s.call(
        "the path from the root",
        "midas.path.from.root",
        &[("token", token), ("uuid", &top_uuid)],
    );

    // item operations
    s.call(
        "an item shared",
        "midas.item.share",
        &[("token", token), ("id", &item), ("dstfolderid", &other)],
    );
    s.call(
        "an item shared anonymously",
        "midas.item.share",
        &[("id", &item), ("dstfolderid", &other)],
    );
    s.call(
        "an item duplicated",
        "midas.item.duplicate",
        &[("token", token), ("id", &item), ("dstfolderid", &sub)],
    );
    s.call(
        "an item moved",
        "midas.item.move",
        &[
            ("token", token),
            ("id", &item),
            ("srcfolderid", &top),
            ("dstfolderid", &sub),
        ],
    );
    s.call(
        "an item moved into a missing folder",
        "midas.item.move",
        &[
            ("token", token),
            ("id", &item),
            ("srcfolderid", &sub),
            ("dstfolderid", MISSING),
        ],
    );
    s.call(
        "a moved item",
        "midas.item.get",
        &[("token", token), ("id", &item)],
    );
    s.call(
        "an item's permissions",
        "midas.item.list.permissions",
        &[("token", token), ("item_id", &item)],
    );
    s.call(
        "an item given to the anonymous group",
        "midas.item.add.policygroup",
        &[
            ("token", token),
            ("item_id", &item),
            ("group_id", "0"),
            ("policy", "0"),
        ],
    );
    s.call(
        "an item's permissions with a group",
        "midas.item.list.permissions",
        &[("token", token), ("item_id", &item)],
    );
    s.call(
        "an item taken from the anonymous group",
        "midas.item.remove.policygroup",
        &[("token", token), ("item_id", &item), ("group_id", "0")],
    );
    // communities
    let community_name = format!("{n} community");
    let community = text(
        &s.call(
            "a community",
            "midas.community.create",
            &[("token", token), ("name", &community_name)],
        )["community_id"],
    );
    s.call(
        "a community of the same name",
        "midas.community.create",
        &[("token", token), ("name", &community_name)],
    );
    s.call(
        "a community created anonymously",
        "midas.community.create",
        &[("name", "x")],
    );
    s.call(
        "a community by id",
        "midas.community.get",
        &[("token", token), ("id", &community)],
    );
    s.call(
        "a community by name",
        "midas.community.get",
        &[("token", token), ("name", &community_name)],
    );
    s.call(
        "a missing community",
        "midas.community.get",
        &[("token", token), ("id", MISSING)],
    );
    s.call(
        "a community's children",
        "midas.community.children",
        &[("token", token), ("id", &community)],
    );
    s.call(
        "the communities",
        "midas.community.list",
        &[("token", token)],
    );
    s.call(
        "a community deleted anonymously",
        "midas.community.delete",
        &[("id", &community)],
    );
    s.call(
        "a community deleted",
        "midas.community.delete",
        &[("token", token), ("id", &community)],
    );
    s.call(
        "a missing community deleted",
        "midas.community.delete",
        &[("token", token), ("id", MISSING)],
    );

    // deletions
    s.call(
        "a bitstream deleted anonymously",
        "midas.bitstream.delete",
        &[("id", &bitstream)],
    );
    s.call(
        "a bitstream deleted",
        "midas.bitstream.delete",
        &[("token", token), ("id", &bitstream)],
    );
    s.call(
        "an item deleted anonymously",
        "midas.item.delete",
        &[("id", &item)],
    );
    s.call(
        "an item deleted",
        "midas.item.delete",
        &[("token", token), ("id", &item)],
    );
    s.call(
        "a missing item deleted",
        "midas.item.delete",
        &[("token", token), ("id", MISSING)],
    );
    s.call(
        "a folder deleted",
        "midas.folder.delete",
        &[("token", token), ("id", &top)],
    );
    s.call(
        "a missing folder deleted",
        "midas.folder.delete",
        &[("token", token), ("id", MISSING)],
    );
}

/// The real server of `MIDASFS_TEST_MIDAS_URL`, with its administrator's credentials.
fn real_side() -> Option<Side> {
    let url = std::env::var("MIDASFS_TEST_MIDAS_URL").ok()?;
    let var = |name: &str| {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("MIDASFS_TEST_MIDAS_URL is set, {name} is not"))
    };
    Some(Side::new(
        &url,
        &var("MIDASFS_TEST_MIDAS_EMAIL"),
        &var("MIDASFS_TEST_MIDAS_PASSWORD"),
        &var("MIDASFS_TEST_MIDAS_API_KEY"),
    ))
}

fn run(side: &Side, nonce: &str) -> Vec<Exchange> {
    let mut session = Session {
        side,
        nonce,
        log: Vec::new(),
    };
    scenario(&mut session);
    session.log
}

/// A `serve` that looks like the real server from outside: the same title, the same users
/// (names and emails, in the same order; the administrator's email is the test servers' own,
/// the real server's in CI).
fn serve_like(real: &Side) -> (TestServer, Side) {
    let call = |method: &str, params: &[(&str, &str)]| -> Value {
        let mut query = vec![("method", method)];
        query.extend_from_slice(params);
        real.http
            .get(format!("{}/api/json", real.url))
            .query(&query)
            .send()
            .and_then(|r| r.text())
            .map_err(|err| err.to_string())
            .and_then(|body| serde_json::from_str::<Value>(&body).map_err(|err| err.to_string()))
            .map(|answer| answer["data"].clone())
            .unwrap_or_else(|err| panic!("{method} on the real server: {err}"))
    };
    let title = text(&call("midas.info", &[])["name"]);
    let admin = call("midas.user.get", &[("email", &real.email)]);
    let server = TestServer::start_with(&[
        "--title",
        &title,
        "--admin-firstname",
        &text(&admin["firstname"]),
        "--admin-lastname",
        &text(&admin["lastname"]),
    ]);
    let mut users: Vec<Value> = call("midas.user.list", &[("limit", "1000")])
        .as_array()
        .cloned()
        .unwrap_or_default();
    users.sort_by_key(|u| text(&u["user_id"]).parse::<i64>().unwrap_or(0));
    // Tests running at once may each have made the same account on the real server (Midas
    // does not lock its email check); serve holds one per email.
    let mut seen = std::collections::HashSet::new();
    users.retain(|u| seen.insert(text(&u["email"])));
    for user in users.iter().filter(|u| text(&u["email"]) != real.email) {
        server.add_user(
            &text(&user["email"]),
            "a-password-of-this-test",
            &text(&user["firstname"]),
            &text(&user["lastname"]),
        );
    }
    let side = Side::new(
        &server.url,
        &server.email,
        &server.password,
        &server.api_key,
    );
    (server, side)
}

#[test]
fn serve_answers_the_scenario_as_the_real_midas_does() {
    let Some(real) = real_side() else {
        println!("skipped: no real Midas server (MIDASFS_TEST_MIDAS_URL is not set)");
        return;
    };
    let nonce = format!(
        "differential-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default()
    );
    let expected = run(&real, &nonce);
    let (_server, serve) = serve_like(&real);
    let actual = run(&serve, &nonce);
    let differences = compare_runs(&real.url, &serve.url, &expected, &actual);
    if !differences.is_empty() {
        // The differences are the last lines of the output, after serve's log, with no
        // backtrace after them: a log that keeps only the head and the tail still shows them.
        eprintln!(
            "{} differences between serve and the real Midas server in {} calls:\n{}",
            differences.len(),
            expected.len(),
            differences.join("\n")
        );
        std::panic::resume_unwind(Box::new("serve differs from the real Midas server"));
    }
    println!(
        "{} calls, the same answers from serve and the real Midas server",
        expected.len()
    );
}

/// Differences that stay, each with its reason (SEMANTICS.md lists them too): the API method
/// (`*` for any), a fragment of the difference's text, why.
const KNOWN: &[(&str, &str, &str)] = &[
    (
        "midas.version",
        "$.data.version: \"3.4.1\" expected, got \"3.4.2\"",
        "the 3.4.2 tag answers 3.4.1 (its database says so); serve names the release",
    ),
    (
        "midas.info",
        "$.data.version: \"3.4.1\" expected, got \"3.4.2\"",
        "the 3.4.2 tag answers 3.4.1 (its database says so); serve names the release",
    ),
    (
        "*",
        "left_index: ",
        "nested-set numbers depend on the server's whole history; clients do not use them",
    ),
    (
        "*",
        "right_index: ",
        "nested-set numbers depend on the server's whole history; clients do not use them",
    ),
];

fn is_known(api_method: &str, difference: &str) -> bool {
    KNOWN.iter().any(|(method, fragment, _)| {
        (*method == "*" || *method == api_method) && difference.contains(fragment)
    })
}

fn compare_runs(
    expected_url: &str,
    server_url: &str,
    expected: &[Exchange],
    actual: &[Exchange],
) -> Vec<String> {
    assert_eq!(
        expected.len(),
        actual.len(),
        "the two runs made different calls"
    );
    let mut seen = Correspondence::default();
    let mut differences = Vec::new();
    for (expected, actual) in expected.iter().zip(actual) {
        assert_eq!(expected.label, actual.label, "the two runs went apart");
        let mut comparison = Comparison {
            api_method: &expected.api_method,
            expected_url,
            server_url,
            seen: &mut seen,
            differences: Vec::new(),
        };
        compare_exchange(&mut comparison, expected, actual);
        let found = comparison.differences.into_iter();
        let unknown = found.filter(|d| !is_known(&expected.api_method, d));
        // the log of a failed run is kept: the credentials sent stay out of it
        let params: Vec<(&str, &str)> = expected
            .params
            .iter()
            .map(|(key, value)| match key.as_str() {
                "password" | "apikey" | "token" | "uploadtoken" => (key.as_str(), "…"),
                _ => (key.as_str(), value.as_str()),
            })
            .collect();
        differences.extend(unknown.map(|d| {
            format!(
                "{} ({} {params:?}): {d}",
                expected.label, expected.api_method
            )
        }));
    }
    differences
}

fn compare_exchange(comparison: &mut Comparison<'_>, expected: &Exchange, actual: &Exchange) {
    for ((key, expected), (_, actual)) in expected.params.iter().zip(&actual.params) {
        if let Some(kind) = parameter_kind(comparison.api_method, key) {
            if expected != actual {
                if let Err(what) = comparison.seen.learn(kind, expected, actual) {
                    comparison.differ(&format!("parameter {key}"), what);
                }
            }
        }
    }
    if expected.status != actual.status {
        comparison.differ(
            "status",
            format!("{} expected, got {}", expected.status, actual.status),
        );
    }
    let same_type = match expected.content_type.as_deref() {
        // binary types are sniffed by libmagic; text, JSON and ZIP must agree
        Some(t) if t.starts_with("application/octet-stream") => actual.content_type.is_some(),
        _ => expected.content_type == actual.content_type,
    };
    if !same_type {
        comparison.differ(
            "Content-Type",
            format!(
                "{:?} expected, got {:?}",
                expected.content_type, actual.content_type
            ),
        );
    }
    if expected.location.is_some() != actual.location.is_some() {
        comparison.differ(
            "Location",
            format!(
                "{:?} expected, got {:?}",
                expected.location, actual.location
            ),
        );
    } else if let (Some(e), Some(a)) = (&expected.location, &actual.location) {
        compare_location(comparison, e, a);
    }
    if expected.api_method == "download" {
        for (name, e, a) in [
            (
                "Content-Disposition",
                &expected.disposition,
                &actual.disposition,
            ),
            ("Content-Length", &expected.length, &actual.length),
        ] {
            if e != a {
                comparison.differ(name, format!("{e:?} expected, got {a:?}"));
            }
        }
    }
    match (&expected.body, &actual.body) {
        (Answer::Json(e), Answer::Json(a)) if comparison.api_method == "midas.methods.list" => {
            compare_method_list(comparison, e, a)
        }
        (Answer::Json(e), Answer::Json(a)) => comparison.same_shape(e, a, "$", ""),
        (Answer::Bytes(e), Answer::Bytes(a)) => {
            if expected.content_type.as_deref() == Some("application/x-zip") {
                compare_zip(comparison, e, a);
            } else if e != a && expected.location.is_none() {
                comparison.differ(
                    "body",
                    format!(
                        "{:?} expected, got {:?}",
                        String::from_utf8_lossy(&e[..e.len().min(300)]),
                        String::from_utf8_lossy(&a[..a.len().min(300)])
                    ),
                );
            }
        }
        (Answer::Unreadable(e), _) => comparison.differ("body", format!("the real one: {e}")),
        (_, Answer::Unreadable(a)) => comparison.differ("body", a.clone()),
        (Answer::Json(e), Answer::Bytes(a)) => comparison.differ(
            "body",
            format!("{e} expected, got {:.300}", String::from_utf8_lossy(a)),
        ),
        (Answer::Bytes(e), Answer::Json(a)) => comparison.differ(
            "body",
            format!("{:.300} expected, got {a}", String::from_utf8_lossy(e)),
        ),
    }
}

/// The same path and query, ids translated.
fn compare_location(comparison: &mut Comparison<'_>, expected: &str, actual: &str) {
    let parse = |base: &str, location: &str| {
        reqwest::Url::parse(&format!("{base}/"))
            .and_then(|b| b.join(location))
            .ok()
    };
    let (Some(e), Some(a)) = (
        parse(comparison.expected_url, expected),
        parse(comparison.server_url, actual),
    ) else {
        return comparison.differ("Location", format!("{expected:?} or {actual:?} is no URL"));
    };
    compare_location_url(comparison, &e, &a);
}
