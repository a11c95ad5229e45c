//! `midasfs serve`'s permission methods against a real `midasfs serve` over HTTP: the answers
//! and errors real Midas 3.4.2 gives (recorded by hand against a live one, see SEMANTICS.md).

use crate::common;

use common::server::{text, TestServer};

/// Request parameters, and the code and message of the error Midas gives for them.
type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);

fn fail(server: &TestServer, method: &str, params: &[(&str, &str)]) -> (String, String) {
    server.call_fail(method, params)
}

#[test]
fn item_policy_group_methods_answer_and_fail_as_midas_does() {
    let server = TestServer::start();
    let key = server.add_user("jane@example.com", "jane-pw-123", "Jane", "Doe");
    let token = server.login("jane@example.com", &key);
    let public = server.folder_named(Some(&token), "jane@example.com", "Public");
    let item = server.create_item(&token, &public, "x.txt");
    let t = token.as_str();
    let i = item.as_str();

    let perms = server.call_ok(
        "midas.item.list.permissions",
        &[("token", t), ("item_id", i)],
    );
    assert_eq!(perms["privacy"], "Public");
    assert_eq!(perms["group"][0]["group_id"], "0");
    assert_eq!(perms["group"][0]["policy"], "Read");
    assert_eq!(perms["group"][0]["name"], "Anonymous");
    assert_eq!(perms["user"][0]["policy"], "Admin");
    assert_eq!(perms["user"][0]["email"], "jane@example.com");

    let removed = server.call_ok(
        "midas.item.remove.policygroup",
        &[("token", t), ("item_id", i), ("group_id", "0")],
    );
    assert_eq!(removed["success"], "true");
    assert_eq!(
        fail(&server, "midas.item.get", &[("id", i)]).0,
        "-151",
        "anonymous still reads the item"
    );
    let perms = server.call_ok(
        "midas.item.list.permissions",
        &[("token", t), ("item_id", i)],
    );
    assert_eq!(perms["privacy"], "Private");

    let added = server.call_ok(
        "midas.item.add.policygroup",
        &[
            ("token", t),
            ("item_id", i),
            ("group_id", "0"),
            ("policy", "Read"),
        ],
    );
    assert_eq!(added["success"], "true");
    assert_eq!(
        server.call_ok("midas.item.get", &[("id", i)])["privacy_status"],
        "0"
    );

    let cases: &[(&str, Case<'_>)] = &[
        (
            "midas.item.remove.policygroup",
            (
                &[("token", t), ("id", i), ("group_id", "0")],
                "-150",
                "Parameter item_id is not defined",
            ),
        ),
        (
            "midas.item.remove.policygroup",
            (
                &[("token", t), ("item_id", i)],
                "-150",
                "Parameter group_id is not defined",
            ),
        ),
        (
            "midas.item.remove.policygroup",
            (
                &[("item_id", i), ("group_id", "0")],
                "-151",
                "Admin privileges required on the item.",
            ),
        ),
        (
            "midas.item.remove.policygroup",
            (
                &[("token", t), ("item_id", "99999"), ("group_id", "0")],
                "-150",
                "This item doesn't exist.",
            ),
        ),
        (
            "midas.item.remove.policygroup",
            (
                &[("token", t), ("item_id", i), ("group_id", "12345")],
                "-150",
                "This group doesn't exist.",
            ),
        ),
        (
            "midas.item.add.policygroup",
            (
                &[("token", t), ("item_id", i), ("group_id", "0")],
                "-150",
                "Parameter policy is not defined",
            ),
        ),
        (
            "midas.item.add.policygroup",
            (
                &[
                    ("token", t),
                    ("item_id", i),
                    ("group_id", "0"),
                    ("policy", "read"),
                ],
                "-150",
                "policy should be one of [Admin|Write|Read]",
            ),
        ),
        (
            "midas.item.list.permissions",
            (
                &[("item_id", i)],
                "-151",
                "Admin privileges required on the item to list permissions.",
            ),
        ),
        (
            "midas.item.list.permissions",
            (
                &[("token", t), ("item_id", "99999")],
                "-150",
                "This item doesn't exist.",
            ),
        ),
    ];
    for (method, (params, code, message)) in cases {
        let (got_code, got_message) = fail(&server, method, params);
        assert_eq!(
            (got_code.as_str(), got_message.as_str()),
            (*code, *message),
            "{method} {params:?}"
        );
    }
}

#[test]
fn folder_set_privacy_recursive_gives_everything_below_the_folders_policies() {
    let server = TestServer::start();
    let key = server.add_user("jane@example.com", "jane-pw-123", "Jane", "Doe");
    let token = server.login("jane@example.com", &key);
    let public = server.folder_named(Some(&token), "jane@example.com", "Public");
    let t = token.as_str();
    let top = server.create_folder(t, &public, "top");
    let top = text(&top["folder_id"]).to_owned();
    let sub = server.create_folder(t, &top, "sub");
    let sub = text(&sub["folder_id"]).to_owned();
    let item = server.create_item(t, &sub, "deep.txt");

    let counts = server.call_ok(
        "midas.folder.set.privacy.recursive",
        &[("token", t), ("folder_id", &top), ("privacy", "Private")],
    );
    assert_eq!(counts["success"], "3");
    assert_eq!(counts["failure"], "0");
    for (method, id) in [
        ("midas.folder.get", &top),
        ("midas.folder.get", &sub),
        ("midas.item.get", &item),
    ] {
        assert_eq!(
            fail(&server, method, &[("id", id)]).0,
            "-151",
            "{method} {id}"
        );
    }
    let perms = server.call_ok(
        "midas.folder.list.permissions",
        &[("token", t), ("folder_id", &sub)],
    );
    assert_eq!(perms["privacy"], "Private");
    assert_eq!(perms["user"][0]["policy"], "Admin");

    server.call_ok(
        "midas.folder.set.privacy.recursive",
        &[("token", t), ("folder_id", &top), ("privacy", "Public")],
    );
    assert_eq!(
        server.call_ok("midas.item.get", &[("id", &item)])["privacy_status"],
        "0"
    );

    let cases: &[Case<'_>] = &[
        (
            &[("token", t), ("id", &top), ("privacy", "Public")],
            "-150",
            "Parameter folder_id is not defined",
        ),
        (
            &[("token", t), ("folder_id", &top), ("privacy", "public")],
            "-150",
            "privacy should be one of [Public|Private]",
        ),
        (
            &[("folder_id", &top), ("privacy", "Public")],
            "-151",
            "Admin privileges required on the folder to set privacy.",
        ),
        (
            &[("token", t), ("folder_id", "99999"), ("privacy", "Public")],
            "-150",
            "This folder doesn't exist.",
        ),
        (
            &[("token", t), ("folder_id", &top)],
            "-150",
            "Parameter privacy is not defined",
        ),
    ];
    for (params, code, message) in cases {
        let (got_code, got_message) = fail(&server, "midas.folder.set.privacy.recursive", params);
        assert_eq!(
            (got_code.as_str(), got_message.as_str()),
            (*code, *message),
            "{params:?}"
        );
    }
    assert_eq!(
        fail(
            &server,
            "midas.folder.list.permissions",
            &[("folder_id", &top)]
        ),
        (
            "-151".to_owned(),
            "Admin privileges required on the folder to list permissions.".to_owned()
        )
    );
}
