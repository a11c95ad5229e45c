//! `midasfs serve --modules solr`: the solr module's `midas.solr.search.advanced` over HTTP,
//! as Midas's module answers it (`modules/solr/controllers/components/ApisearchComponent.php`),
//! and a server without the module, as a fresh Midas 3.4.2 is.

use crate::common;

use common::server::{text, TestServer};
use common::users::TwoUsers;
use serde_json::Value;

fn names(found: &Value) -> Vec<String> {
    let mut names: Vec<String> = found
        .as_array()
        .expect("a list of items")
        .iter()
        .map(|item| text(&item["name"]).to_owned())
        .collect();
    names.sort();
    names
}

fn set_metadata(server: &TestServer, token: &str, item: &str, element: &str, value: &str) {
    let (element, qualifier) = element.split_once('.').unwrap_or((element, ""));
    server.call_ok(
        "midas.item.setmetadata",
        &[
            ("token", token),
            ("itemId", item),
            ("element", element),
            ("qualifier", qualifier),
            ("value", value),
        ],
    );
}

#[test]
fn without_modules_serve_lists_only_api_and_has_no_solr_method() {
    let server = TestServer::start();
    assert_eq!(
        server.call_ok("midas.modules.list", &[]),
        serde_json::json!({ "modules": ["api"] })
    );
    assert_eq!(
        server.call_fail("midas.solr.search.advanced", &[("query", "name:x")]),
        (
            "-101".to_owned(),
            "Server error. Requested method midas.solr.search.advanced does not exist.".to_owned()
        )
    );
}

#[test]
fn the_solr_module_finds_the_readable_items_whose_metadata_matches_a_lucene_query() {
    let users = TwoUsers::on(TestServer::start_with(&["--modules", "solr"]));
    let server = &users.server;
    assert_eq!(
        server.call_ok("midas.modules.list", &[]),
        serde_json::json!({ "modules": ["api", "solr"] })
    );
    assert_eq!(server.call_ok("midas.info", &[])["modules"][1], "solr");
    let methods = server.call_ok("midas.methods.list", &[]);
    assert!(methods["methods"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "solr.search.advanced"));

    let (alice, bob) = (users.owner_token.clone(), users.other_token.clone());
    let alice_public = users.owners("Public");
    let bob_private = users.others("Private");
    let head = server.upload_item(&alice, &alice_public, "head.nii", b"head\n");
    let knee = server.upload_item(&alice, &alice_public, "knee.nii", b"knee\n");
    let secret = server.upload_item(&bob, &bob_private, "secret.nii", b"bob\n");
    set_metadata(server, &alice, &head, "modality", "CT");
    set_metadata(server, &alice, &head, "contributor.author", "Jane Doe");
    set_metadata(server, &alice, &head, "slices", "42");
    set_metadata(server, &alice, &knee, "modality", "MR T1");
    set_metadata(server, &bob, &secret, "modality", "CT");

    let search = |token: Option<&str>, query: &str| {
        let mut params = vec![("query", query)];
        if let Some(token) = token {
            params.push(("token", token));
        }
        server.call_ok("midas.solr.search.advanced", &params)
    };
    // Fields as the module indexes them: `text-<element>[.<qualifier>]`, `metadata`, `name`.
    assert_eq!(
        names(&search(Some(&alice), "text-modality:CT")),
        ["head.nii"]
    );
    // Bob reads Alice's public item and his own private one; Alice does not read his.
    assert_eq!(
        names(&search(Some(&bob), "text-modality:CT")),
        ["head.nii", "secret.nii"]
    );
    assert_eq!(
        names(&search(
            Some(&alice),
            "text-contributor.author:\"jane doe\""
        )),
        ["head.nii"]
    );
    assert_eq!(
        names(&search(
            Some(&alice),
            "text-modality:(CT OR t1) AND id:item_*"
        )),
        ["head.nii", "knee.nii"]
    );
    assert_eq!(
        names(&search(Some(&alice), "text-modality:* -text-modality:mr")),
        ["head.nii"]
    );
    assert_eq!(names(&search(Some(&alice), "metadata:jane")), ["head.nii"]);
    // Numbers are in their own field, not in `metadata`.
    assert_eq!(names(&search(Some(&alice), "text-slices:42")), ["head.nii"]);
    assert!(names(&search(Some(&alice), "metadata:42")).is_empty());
    assert_eq!(names(&search(Some(&alice), "name:kne*")), ["knee.nii"]);
    // Anonymous callers find public items only.
    assert_eq!(names(&search(None, "text-modality:CT")), ["head.nii"]);

    // The record of each item, field by field, all strings (`public` "1" or "").
    let found = search(Some(&alice), "text-modality:CT");
    let record = found[0].as_object().unwrap();
    let keys: Vec<&str> = record.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "id",
            "name",
            "description",
            "size",
            "date_created",
            "date_updated",
            "uuid",
            "views",
            "downloads",
            "public",
            "folder_id",
            "revisions",
            "bitstreams"
        ]
    );
    let item = server.call_ok("midas.item.get", &[("token", &alice), ("id", &head)]);
    assert_eq!(record["id"], head.as_str());
    assert_eq!(record["uuid"], item["uuid"]);
    assert_eq!(record["size"], "5");
    assert_eq!(record["public"], "1");
    assert_eq!(record["folder_id"], alice_public.as_str());
    assert_eq!(
        record["revisions"],
        serde_json::json!([item["revisions"][0]["itemrevision_id"]])
    );
    assert_eq!(
        record["bitstreams"],
        serde_json::json!([item["revisions"][0]["bitstreams"][0]["bitstream_id"]])
    );

    // `limit` (default 25) bounds the answer.
    let limited = server.call_ok(
        "midas.solr.search.advanced",
        &[("token", &alice), ("query", "*:*"), ("limit", "1")],
    );
    assert_eq!(limited.as_array().unwrap().len(), 1);

    // What the module cannot parse, and a missing query.
    for bad in ["text-modality:(CT", "name:a~2", "AND x", "name:[a TO b]"] {
        assert_eq!(
            server.call_fail(
                "midas.solr.search.advanced",
                &[("token", &alice), ("query", bad)]
            ),
            ("-1".to_owned(), "Syntax error in query".to_owned()),
            "{bad}"
        );
    }
    assert_eq!(
        server.call_fail("midas.solr.search.advanced", &[("token", &alice)]),
        (
            "-150".to_owned(),
            "Parameter query is not defined".to_owned()
        )
    );
}
