//! Two users beside the administrator, for the tests of who sees what: the owner, whose mounts
//! the tests make, and another user, who must see only what anyone may see.

use super::mount::{Mount, MountOptions};
use super::server::TestServer;

/// The user whose mounts the tests make (Alice Owner, `users/Alice_Owner`).
pub const OWNER: &str = "alice@example.com";
/// A second user (Bob Other, `users/Bob_Other`).
pub const OTHER: &str = "bob@example.com";

/// A server with the users [`OWNER`] and [`OTHER`], each logged in.
pub struct TwoUsers {
    pub server: TestServer,
    pub owner_key: String,
    pub owner_token: String,
    pub other_token: String,
}

impl TwoUsers {
    /// On a fresh `midasfs serve`.
    pub fn start() -> TwoUsers {
        TwoUsers::on(TestServer::start())
    }

    /// On `server` (a real Midas Server makes each user once, see [`TestServer::add_user`]).
    pub fn on(server: TestServer) -> TwoUsers {
        let owner_key = server.add_user(OWNER, "alice-pass-1", "Alice", "Owner");
        let other_key = server.add_user(OTHER, "bob-pass-1", "Bob", "Other");
        let owner_token = server.login(OWNER, &owner_key);
        let other_token = server.login(OTHER, &other_key);
        TwoUsers {
            server,
            owner_key,
            owner_token,
            other_token,
        }
    }

    /// A mount of the whole server as the owner.
    pub fn mount(&self, extra: &[&str]) -> Mount {
        Mount::start(
            &self.server.url,
            MountOptions {
                email: Some(OWNER),
                api_key: Some(&self.owner_key),
                extra,
            },
        )
    }

    /// The test's own folder in the owner's top folder `top` (`Public`, `Private`), as a path
    /// below the owner's folder: `top` itself on `serve` (see [`TestServer::fresh`]).
    pub fn fresh(&self, top: &str) -> String {
        self.server.fresh(OWNER, &self.owner_key, top)
    }

    /// The id of the owner's top folder `name` (`Public`, `Private`).
    pub fn owners(&self, name: &str) -> String {
        self.server
            .folder_named(Some(&self.owner_token), OWNER, name)
    }

    /// The id of the other user's top folder `name`.
    pub fn others(&self, name: &str) -> String {
        self.server
            .folder_named(Some(&self.other_token), OTHER, name)
    }

    /// The id of the owner's folder at `path` below the owner's folder (`Public/project`).
    pub fn owners_at(&self, path: &str) -> String {
        self.server.folder_at(&self.owner_token, OWNER, path)
    }

    /// Whether an anonymous caller may `<kind>.get` the object.
    pub fn anyone_gets(&self, kind: &str, id: &str) -> bool {
        self.server.can_get(None, kind, id)
    }

    /// The names an anonymous caller sees in a folder.
    pub fn anyone_lists(&self, folder: &str) -> Vec<String> {
        self.server.names_listed(None, folder)
    }

    /// The anonymous caller and the other user: who must see exactly what anyone may see.
    pub fn outsiders(&self) -> [Option<&str>; 2] {
        [None, Some(self.other_token.as_str())]
    }
}
