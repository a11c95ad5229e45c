//! Who can see what through a real mount of a real `midasfs serve` (or of the real Midas Server
//! the environment names, see `common::real`, in folders of the test's own): a file or folder moved
//! between Public and Private takes the access of its new folder on the server (checked as an
//! anonymous caller and as a second user over HTTP), and permission bits show that access to
//! the other local users of an `--allow-other` mount.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::files::{id_of, mode};
use common::server::TestServer;
use common::users::TwoUsers;

fn mv(from: &Path, to: &Path) {
    let status = Command::new("mv")
        .arg(from)
        .arg(to)
        .status()
        .expect("run mv");
    assert!(status.success(), "mv {} {}", from.display(), to.display());
}

#[test]
fn a_file_moved_into_private_is_private_and_public_again_when_moved_back() {
    require_fuse!();
    let setup = TwoUsers::on(TestServer::any());
    let (public, private) = (setup.fresh("Public"), setup.fresh("Private"));
    let mount = setup.mount(&[]);
    let home = mount.path.join("home");
    let content = b"only for alice, once moved\n";
    std::fs::write(home.join(&public).join("a.txt"), content).expect("write a.txt");
    let item = id_of(&home.join(&public).join("a.txt"));
    for who in setup.outsiders() {
        assert!(
            setup.server.can_get(who, "item", &item),
            "public file unreadable"
        );
        assert!(setup.server.can_download(who, &item, content));
    }

    mv(&home.join(&public).join("a.txt"), &home.join(&private));
    let private_id = setup.owners_at(&private);
    for who in setup.outsiders() {
        assert!(
            !setup.server.can_get(who, "item", &item),
            "{who:?} still gets the item moved into Private"
        );
        assert!(
            !setup.server.can_download(who, &item, content),
            "{who:?} downloads it"
        );
        assert!(
            !setup
                .server
                .names_listed(who, &private_id)
                .contains(&"a.txt".to_owned()),
            "{who:?} sees it listed in Private"
        );
    }
    assert_eq!(mode(&home.join(&private).join("a.txt")), 0o600);

    mv(&home.join(&private).join("a.txt"), &home.join(&public));
    let public_id = setup.owners_at(&public);
    for who in setup.outsiders() {
        assert!(
            setup.server.can_get(who, "item", &item),
            "{who:?}: not public again"
        );
        assert!(setup.server.can_download(who, &item, content));
        assert!(setup
            .server
            .names_listed(who, &public_id)
            .contains(&"a.txt".to_owned()));
    }
    assert_eq!(mode(&home.join(&public).join("a.txt")), 0o644);
    drop(mount);
}

#[test]
fn a_folder_moved_into_private_takes_its_contents_along_and_back() {
    require_fuse!();
    let setup = TwoUsers::on(TestServer::any());
    let (public, private) = (setup.fresh("Public"), setup.fresh("Private"));
    let mount = setup.mount(&[]);
    let home = mount.path.join("home");
    let project = home.join(&public).join("project");
    std::fs::create_dir_all(project.join("sub")).expect("mkdir");
    let content = b"deep inside\n";
    std::fs::write(project.join("sub/deep.txt"), content).expect("write deep.txt");
    std::fs::write(project.join("top.txt"), b"top\n").expect("write top.txt");
    let folders = [id_of(&project), id_of(&project.join("sub"))];
    let items = [
        id_of(&project.join("sub/deep.txt")),
        id_of(&project.join("top.txt")),
    ];
    for who in setup.outsiders() {
        assert!(folders
            .iter()
            .all(|f| setup.server.can_get(who, "folder", f)));
        assert!(items.iter().all(|i| setup.server.can_get(who, "item", i)));
    }

    mv(&project, &home.join(&private));
    let private_id = setup.owners_at(&private);
    for who in setup.outsiders() {
        for folder in &folders {
            assert!(
                !setup.server.can_get(who, "folder", folder),
                "{who:?} still gets folder {folder} moved into Private"
            );
        }
        for item in &items {
            assert!(
                !setup.server.can_get(who, "item", item),
                "{who:?} still gets item {item} moved into Private"
            );
        }
        assert!(!setup.server.can_download(who, &items[0], content));
        assert!(!setup
            .server
            .names_listed(who, &private_id)
            .contains(&"project".to_owned()));
    }
    let moved = home.join(&private).join("project");
    assert_eq!(mode(&moved), 0o700);
    assert_eq!(mode(&moved.join("sub")), 0o700);
    assert_eq!(mode(&moved.join("sub/deep.txt")), 0o600);

    mv(&moved, &home.join(&public));
    let public_id = setup.owners_at(&public);
    for who in setup.outsiders() {
        assert!(folders
            .iter()
            .all(|f| setup.server.can_get(who, "folder", f)));
        assert!(items.iter().all(|i| setup.server.can_get(who, "item", i)));
        assert!(setup.server.can_download(who, &items[0], content));
        assert!(setup
            .server
            .names_listed(who, &public_id)
            .contains(&"project".to_owned()));
    }
    assert_eq!(mode(&project.join("sub/deep.txt")), 0o644);
    drop(mount);
}

/// Runs a shell command as the unprivileged user `nobody`; whether it succeeded.
fn as_nobody(script: &str) -> bool {
    Command::new("su")
        .args(["nobody", "-s", "/bin/sh", "-c", script])
        .status()
        .expect("run su nobody")
        .success()
}

#[test]
fn other_local_users_read_public_files_but_not_private_ones_through_allow_other() {
    require_fuse!();
    if !nix_is_root() {
        eprintln!("SKIPPED: needs root to run a command as another user");
        return;
    }
    let setup = TwoUsers::on(TestServer::any());
    let (public, private) = (setup.fresh("Public"), setup.fresh("Private"));
    let mount = setup.mount(&["--allow-other"]);
    let home = mount.path.join("home");
    std::fs::write(home.join(&public).join("open.txt"), b"for everyone\n").expect("write");
    std::fs::write(home.join(&private).join("secret.txt"), b"for alice only\n").expect("write");
    std::fs::create_dir(home.join(&private).join("inner")).expect("mkdir");
    std::fs::write(home.join(&private).join("inner/deeper.txt"), b"hidden\n").expect("write");

    assert_eq!(mode(&home.join(&public)), 0o755);
    assert_eq!(mode(&home.join(&public).join("open.txt")), 0o644);
    assert_eq!(mode(&home.join(&private)), 0o700);
    assert_eq!(mode(&home.join(&private).join("secret.txt")), 0o600);
    assert_eq!(mode(&home.join(&private).join("inner")), 0o700);

    let path = |p: &str| {
        let (top, below) = p.split_once('/').unwrap_or((p, ""));
        let own = if top == "Public" { &public } else { &private };
        home.join(own).join(below).display().to_string()
    };
    assert!(
        as_nobody(&format!("cat '{}' >/dev/null", path("Public/open.txt"))),
        "nobody cannot read a public file"
    );
    assert!(as_nobody(&format!("ls '{}' >/dev/null", path("Public"))));
    assert!(
        !as_nobody(&format!(
            "cat '{}' >/dev/null 2>&1",
            path("Private/secret.txt")
        )),
        "nobody reads a private file"
    );
    assert!(!as_nobody(&format!(
        "ls '{}' >/dev/null 2>&1",
        path("Private")
    )));
    assert!(!as_nobody(&format!(
        "cat '{}' >/dev/null 2>&1",
        path("Private/inner/deeper.txt")
    )));
    drop(mount);
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
