//! Who can see what through a real mount of a real `midasfs serve` (or of the real Midas Server
//! the environment names, see `common::real`, in folders of the test's own): a file or folder moved
//! between Public and Private takes the access of its new folder on the server (checked as an
//! anonymous caller and as a second user over HTTP), and permission bits show that access to
//! the other local users of an `--allow-other` mount.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::mount::{getxattr, Mount, MountOptions};
use common::server::{text, TestServer};
use serde_json::Value;

const OWNER: &str = "alice@example.com";
const OTHER: &str = "bob@example.com";

/// A server with two users; the mount is the first user's.
struct Setup {
    server: TestServer,
    owner_key: String,
    other_token: String,
    /// The test's own folders in the owner's Public and Private folders (paths below the owner's
    /// folder; `Public` and `Private` themselves on serve).
    public: String,
    private: String,
}

impl Setup {
    fn new() -> Setup {
        let server = TestServer::any();
        let owner_key = server.add_user(OWNER, "alice-pass-1", "Alice", "Owner");
        let other_key = server.add_user(OTHER, "bob-pass-1", "Bob", "Other");
        let other_token = server.login(OTHER, &other_key);
        let public = server.fresh(OWNER, &owner_key, "Public");
        let private = server.fresh(OWNER, &owner_key, "Private");
        Setup {
            server,
            owner_key,
            other_token,
            public,
            private,
        }
    }

    fn mount(&self, extra: &[&str]) -> Mount {
        Mount::start(
            &self.server.url,
            MountOptions {
                email: Some(OWNER),
                api_key: Some(&self.owner_key),
                extra,
            },
        )
    }

    /// The id of the owner's folder at `path` (below the owner's folder).
    fn owner_folder(&self, path: &str) -> String {
        let token = self.server.login(OWNER, &self.owner_key);
        self.server.folder_at(&token, OWNER, path)
    }

    /// Whether the caller (`None`: anonymous) can read the object: `<kind>.get` succeeds.
    fn can_get(&self, token: Option<&str>, kind: &str, id: &str) -> bool {
        let mut params = vec![("id", id)];
        if let Some(t) = token {
            params.push(("token", t));
        }
        self.server.call(&format!("midas.{kind}.get"), &params)["stat"] == "ok"
    }

    /// Whether the caller can download the item: the download redirect, followed, gives the bytes.
    fn can_download(&self, token: Option<&str>, item: &str, content: &[u8]) -> bool {
        let mut url = format!("/api/json?method=midas.item.download&id={item}");
        if let Some(t) = token {
            url.push_str(&format!("&token={t}"));
        }
        let answer = self.server.get(&url);
        let Some(location) = answer.headers().get("location") else {
            return false;
        };
        let location = location.to_str().expect("location").to_owned();
        let target = if location.starts_with("http") {
            location
        } else {
            format!("{}{location}", self.server.url)
        };
        let body = self
            .server
            .http()
            .get(target)
            .send()
            .expect("follow the download")
            .bytes()
            .expect("download body");
        body.as_ref() == content
    }

    /// The names `folder.children` shows the caller in a folder.
    fn children(&self, token: Option<&str>, folder: &str) -> Vec<String> {
        let mut params = vec![("id", folder)];
        if let Some(t) = token {
            params.push(("token", t));
        }
        let data = self.server.call_ok("midas.folder.children", &params);
        ["folders", "items"]
            .iter()
            .flat_map(|kind| data[*kind].as_array().cloned().unwrap_or_default())
            .map(|o: Value| text(&o["name"]).to_owned())
            .collect()
    }

    /// The anonymous caller and the second user: who must see exactly what anyone may see.
    fn outsiders(&self) -> [Option<&str>; 2] {
        [None, Some(self.other_token.as_str())]
    }
}

fn id_of(path: &Path) -> String {
    getxattr(path, "user.midas.id").unwrap_or_else(|| panic!("{} has no id", path.display()))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

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
    let setup = Setup::new();
    let mount = setup.mount(&[]);
    let home = mount.path.join("home");
    let content = b"only for alice, once moved\n";
    std::fs::write(home.join(&setup.public).join("a.txt"), content).expect("write a.txt");
    let item = id_of(&home.join(&setup.public).join("a.txt"));
    for who in setup.outsiders() {
        assert!(setup.can_get(who, "item", &item), "public file unreadable");
        assert!(setup.can_download(who, &item, content));
    }

    mv(
        &home.join(&setup.public).join("a.txt"),
        &home.join(&setup.private),
    );
    let private = setup.owner_folder(&setup.private);
    for who in setup.outsiders() {
        assert!(
            !setup.can_get(who, "item", &item),
            "{who:?} still gets the item moved into Private"
        );
        assert!(
            !setup.can_download(who, &item, content),
            "{who:?} downloads it"
        );
        assert!(
            !setup.children(who, &private).contains(&"a.txt".to_owned()),
            "{who:?} sees it listed in Private"
        );
    }
    assert_eq!(mode(&home.join(&setup.private).join("a.txt")), 0o600);

    mv(
        &home.join(&setup.private).join("a.txt"),
        &home.join(&setup.public),
    );
    let public = setup.owner_folder(&setup.public);
    for who in setup.outsiders() {
        assert!(
            setup.can_get(who, "item", &item),
            "{who:?}: not public again"
        );
        assert!(setup.can_download(who, &item, content));
        assert!(setup.children(who, &public).contains(&"a.txt".to_owned()));
    }
    assert_eq!(mode(&home.join(&setup.public).join("a.txt")), 0o644);
    drop(mount);
}

#[test]
fn a_folder_moved_into_private_takes_its_contents_along_and_back() {
    require_fuse!();
    let setup = Setup::new();
    let mount = setup.mount(&[]);
    let home = mount.path.join("home");
    let project = home.join(&setup.public).join("project");
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
        assert!(folders.iter().all(|f| setup.can_get(who, "folder", f)));
        assert!(items.iter().all(|i| setup.can_get(who, "item", i)));
    }

    mv(&project, &home.join(&setup.private));
    let private = setup.owner_folder(&setup.private);
    for who in setup.outsiders() {
        for folder in &folders {
            assert!(
                !setup.can_get(who, "folder", folder),
                "{who:?} still gets folder {folder} moved into Private"
            );
        }
        for item in &items {
            assert!(
                !setup.can_get(who, "item", item),
                "{who:?} still gets item {item} moved into Private"
            );
        }
        assert!(!setup.can_download(who, &items[0], content));
        assert!(!setup
            .children(who, &private)
            .contains(&"project".to_owned()));
    }
    let moved = home.join(&setup.private).join("project");
    assert_eq!(mode(&moved), 0o700);
    assert_eq!(mode(&moved.join("sub")), 0o700);
    assert_eq!(mode(&moved.join("sub/deep.txt")), 0o600);

    mv(&moved, &home.join(&setup.public));
    let public = setup.owner_folder(&setup.public);
    for who in setup.outsiders() {
        assert!(folders.iter().all(|f| setup.can_get(who, "folder", f)));
        assert!(items.iter().all(|i| setup.can_get(who, "item", i)));
        assert!(setup.can_download(who, &items[0], content));
        assert!(setup.children(who, &public).contains(&"project".to_owned()));
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
    let setup = Setup::new();
    let mount = setup.mount(&["--allow-other"]);
    let home = mount.path.join("home");
    std::fs::write(home.join(&setup.public).join("open.txt"), b"for everyone\n").expect("write");
    std::fs::write(
        home.join(&setup.private).join("secret.txt"),
        b"for alice only\n",
    )
    .expect("write");
    std::fs::create_dir(home.join(&setup.private).join("inner")).expect("mkdir");
    std::fs::write(
        home.join(&setup.private).join("inner/deeper.txt"),
        b"hidden\n",
    )
    .expect("write");

    assert_eq!(mode(&home.join(&setup.public)), 0o755);
    assert_eq!(mode(&home.join(&setup.public).join("open.txt")), 0o644);
    assert_eq!(mode(&home.join(&setup.private)), 0o700);
    assert_eq!(mode(&home.join(&setup.private).join("secret.txt")), 0o600);
    assert_eq!(mode(&home.join(&setup.private).join("inner")), 0o700);

    let path = |p: &str| {
        let (top, below) = p.split_once('/').unwrap_or((p, ""));
        let own = if top == "Public" {
            &setup.public
        } else {
            &setup.private
        };
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
