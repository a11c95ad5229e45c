//! `/api/json`: method resolution and the per-group method implementations.
//!
//! Every method is a synchronous function run on a blocking thread, nearly all with the
//! database locked: `user.apikey.default` locks it only around its queries (the password
//! hash is slow), `upload.perform` streams the request body and `upload.getoffset` may wait
//! for it to stop writing (see [`uploads`]).

mod bitstreams;
mod communities;
mod folders;
mod items;
pub mod objects;
mod policies;
mod search;
mod solr;
mod system;
pub mod uploads;
mod users;

use axum::http::Method;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::store::{can, now_date, set_public, unix_now, Caller, Guarded, ADMIN, WRITE};
use super::wire::{ApiError, Params};
use super::Shared;
use crate::midas::codes;
use folders::uuid_kind;

/// What a method answers: a JSON `data` value, or a redirect to the download controller.
pub enum Reply {
    Json(Value),
    Redirect(String),
}

impl From<Value> for Reply {
    fn from(value: Value) -> Reply {
        Reply::Json(value)
    }
}

/// One API call being served.
pub struct Call<'a> {
    pub params: &'a Params,
    pub verb: &'a Method,
    pub shared: &'a Shared,
    /// `http://host` as the client addressed us, for `midas.info`.
    pub base_url: &'a str,
    /// The client's address, for login throttling.
    pub client: Option<std::net::IpAddr>,
}

impl<'a> Call<'a> {
    /// The caller named by `token`: none without the parameter, −101 when it is unknown,
    /// expired or empty.
    pub fn caller(&self, conn: &Connection) -> Result<Option<Caller>, ApiError> {
        match self.params.get("token") {
            None => Ok(None),
            Some(token) => resolve_token(conn, token)?
                .map(Some)
                .ok_or_else(|| ApiError::new(codes::INVALID_TOKEN, "Invalid token")),
        }
    }

    /// The caller, who must be logged in; `anonymous` is the error for an anonymous call.
    pub fn user(&self, conn: &Connection, anonymous: ApiError) -> Result<Caller, ApiError> {
        self.caller(conn)?.ok_or(anonymous)
    }

    /// The `id` and caller of a delete call, read in Midas's order; an anonymous call is −101
    /// "Unable to find user".
    pub fn delete_request(&self, conn: &Connection) -> Result<(i64, Caller), ApiError> {
        let id = self.params.require_id("id")?;
        let caller = self.user(
            conn,
            ApiError::new(codes::INVALID_TOKEN, "Unable to find user"),
        )?;
        Ok((id, caller))
    }

    /// The parameters of a create call; `anonymous` is the error for an anonymous call.
    pub fn create_request(
        &self,
        conn: &Connection,
        anonymous: ApiError,
    ) -> Result<CreateRequest<'a>, ApiError> {
        let p = self.params;
        let name = p.require("name")?;
        let caller = self.user(conn, anonymous)?;
        let public = parse_public(p.get("privacy"))?;
        Ok(CreateRequest {
            name,
            caller,
            public,
            description: p.get("description"),
            uuid: p.get("uuid").filter(|u| !u.is_empty()),
        })
    }
}

/// `privacy=Public|Private` as whether the object is to be public.
pub fn parse_public(value: Option<&str>) -> Result<Option<bool>, ApiError> {
    match value {
        None => Ok(None),
        Some("Public") => Ok(Some(true)),
        Some("Private") => Ok(Some(false)),
        Some(_) => Err(ApiError::invalid(
            "privacy should be one of [Public|Private]",
        )),
    }
}

/// What `folder.create` and `item.create` read first, in Midas's order.
pub struct CreateRequest<'a> {
    pub name: &'a str,
    pub caller: Caller,
    pub public: Option<bool>,
    pub description: Option<&'a str>,
    /// Non-empty when given.
    pub uuid: Option<&'a str>,
}

/// The update half of `folder.create` and `item.create`: a uuid of another kind of object is
/// refused ([`uuid_in_use`]); when the request's uuid names an object of this kind, WRITE on it (and ADMIN to change its privacy, else `privacy_denied`)
/// lets the request rename it and set its description and privacy. The id of the object
/// updated, or none when the create call is to create.
pub fn update_by_uuid(
    tx: &Connection,
    request: &CreateRequest<'_>,
    object: Guarded,
    privacy_denied: &str,
) -> Result<Option<i64>, ApiError> {
    let Some(uuid) = request.uuid else {
        return Ok(None);
    };
    let kind = object.name();
    let id = match uuid_kind(tx, uuid)? {
        Some((found, id)) if found == kind => id,
        Some(_) => return Err(uuid_in_use()),
        None => return Ok(None),
    };
    let caller = Some(request.caller);
    if !can(tx, caller, object, id, WRITE)? {
        return Err(ApiError::policy("Invalid policy"));
    }
    if request.public.is_some() && !can(tx, caller, object, id, ADMIN)? {
        return Err(ApiError::policy(privacy_denied));
    }
    if request.name.is_empty() {
        return Err(ApiError::new(0, "Name cannot be empty."));
    }
    tx.execute(
        &format!(
            "UPDATE {kind} SET name = ?1, description = COALESCE(?2, description), date_update = ?3 WHERE {kind}_id = ?4"
        ),
        params![request.name, request.description, now_date(), id],
    )?;
    if let Some(public) = request.public {
        set_public(tx, object, id, public)?;
    }
    Ok(Some(id))
}

/// A create call's uuid names an object of another kind. Midas 3.4.2 creates a second object
/// with the same uuid, after which lookups by uuid find only one of them; serve refuses.
pub fn uuid_in_use() -> ApiError {
    ApiError::invalid("The uuid is already in use")
}

/// The user behind a login token, if it exists and has not expired.
pub fn resolve_token(conn: &Connection, token: &str) -> Result<Option<Caller>, ApiError> {
    if token.is_empty() || token.len() > 64 {
        return Ok(None);
    }
    let found = conn
        .prepare_cached(
            "SELECT u.user_id, u.admin FROM token t JOIN userapi a ON a.userapi_id = t.userapi_id \
             JOIN user u ON u.user_id = a.user_id WHERE t.token = ?1 AND t.expires > ?2",
        )?
        .query_row(rusqlite::params![token, unix_now()], |r| {
            Ok(Caller {
                user_id: r.get(0)?,
                admin: r.get(1)?,
            })
        })
        .optional()?;
    Ok(found)
}

pub type Handler = fn(&Call<'_>, &mut Connection) -> Result<Reply, ApiError>;
/// A method that locks the database itself, to keep slow work (password hashing) out of
/// the lock every other request waits for.
pub type UnlockedHandler = fn(&Call<'_>) -> Result<Reply, ApiError>;

const UNLOCKED_METHODS: &[(&str, UnlockedHandler)] =
    &[("user.apikey.default", system::user_apikey_default)];

/// How to run a resolved method.
#[derive(Clone, Copy)]
pub enum Run {
    /// With the database locked for the whole call.
    Locked(Handler),
    Unlocked(UnlockedHandler),
}

impl Run {
    pub fn run(self, call: &Call<'_>) -> Result<Reply, ApiError> {
        match self {
            Run::Locked(handler) => handler(call, &mut call.shared.store.lock()),
            Run::Unlocked(handler) => handler(call),
        }
    }
}

/// The methods, by canonical dotted name (what `midas.methods.list` reports).
const METHODS: &[(&str, Handler)] = &[
    ("version", system::version),
    ("info", system::info),
    ("modules.list", system::modules_list),
    ("methods.list", system::methods_list),
    ("login", system::login),
    ("user.get", users::get),
    ("user.list", users::list),
    ("user.folders", users::folders),
    ("community.list", communities::list),
    ("community.get", communities::get),
    ("community.children", communities::children),
    ("community.create", communities::create),
    ("community.delete", communities::delete),
    ("folder.get", folders::get),
    ("folder.children", folders::children),
    ("folder.create", folders::create),
    ("folder.delete", folders::delete),
    ("folder.move", folders::move_folder),
    ("folder.download", folders::download),
    ("folder.list.permissions", policies::folder_list),
    ("folder.add.policygroup", policies::folder_add_group),
    ("folder.remove.policygroup", policies::folder_remove_group),
    (
        "folder.set.privacy.recursive",
        policies::folder_set_privacy_recursive,
    ),
    ("item.get", items::get),
    ("item.create", items::create),
    ("item.delete", items::delete),
    ("item.move", items::move_item),
    ("item.share", items::share),
    ("item.duplicate", items::duplicate),
    ("item.download", items::download),
    ("item.list.permissions", policies::item_list),
    ("item.add.policygroup", policies::item_add_group),
    ("item.remove.policygroup", policies::item_remove_group),
    ("item.exists", items::exists),
    ("item.getmetadata", items::get_metadata),
    ("item.setmetadata", items::set_metadata),
    ("item.setmultiplemetadata", items::set_multiple_metadata),
    ("item.deletemetadata", items::delete_metadata),
    ("item.searchbyname", items::search_by_name),
    ("item.searchbynameandfolder", items::search_by_name),
    ("item.searchbynameandfoldername", items::search_by_name),
    ("bitstream.get", bitstreams::get),
    ("bitstream.download", bitstreams::download),
    ("bitstream.edit", bitstreams::edit),
    ("bitstream.delete", bitstreams::delete),
    ("bitstream.count", bitstreams::count),
    ("upload.generatetoken", uploads::generate_token),
    ("resource.search", search::resource_search),
    ("resource.get", search::resource_get),
    ("path.to.root", search::path_to_root),
    ("path.from.root", search::path_from_root),
];

/// Modules `serve` can enable (`--modules`), as `midas.modules.list` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Module {
    /// Lucene search over items and their metadata (`midas.solr.search.advanced`).
    Solr,
}

impl Module {
    pub fn name(self) -> &'static str {
        match self {
            Module::Solr => solr::MODULE,
        }
    }
}

/// The methods of modules, by module and canonical name (`<module>.<method>`).
const MODULE_METHODS: &[(Module, &str, Handler)] =
    &[(Module::Solr, "solr.search.advanced", solr::search_advanced)];

/// How a requested method name resolves.
pub enum Resolved {
    Method(&'static str, Run),
    UploadPerform,
    UploadOffset,
    Unknown,
}

/// `midas.<anything>`: the prefix is case-sensitive, the rest is compared without dots and
/// case-insensitively (PHP method lookup), so `midas.item.searchByName` works. A name no core
/// method has is a module's when its second piece names an enabled module
/// (`midas.solr.search.advanced`), as Midas asks the module named there.
pub fn resolve(name: &str, modules: &[Module]) -> Resolved {
    let Some(rest) = name.strip_prefix("midas.") else {
        return Resolved::Unknown;
    };
    let wanted: String = rest
        .chars()
        .filter(|c| *c != '.')
        .flat_map(char::to_lowercase)
        .collect();
    match wanted.as_str() {
        "uploadperform" => return Resolved::UploadPerform,
        "uploadgetoffset" => return Resolved::UploadOffset,
        _ => {}
    }
    let matches = |canonical: &&str| canonical.replace('.', "") == wanted;
    if let Some((canonical, handler)) = METHODS.iter().find(|(c, _)| matches(c)) {
        return Resolved::Method(canonical, Run::Locked(*handler));
    }
    if let Some((canonical, handler)) = UNLOCKED_METHODS.iter().find(|(c, _)| matches(c)) {
        return Resolved::Method(canonical, Run::Unlocked(*handler));
    }
    let module = rest.split('.').next().unwrap_or_default().to_lowercase();
    MODULE_METHODS
        .iter()
        .find(|(m, c, _)| modules.contains(m) && m.name() == module && matches(c))
        .map(|(_, canonical, handler)| Resolved::Method(canonical, Run::Locked(*handler)))
        .unwrap_or(Resolved::Unknown)
}

/// Every method name, the two upload methods served apart and those of the enabled modules
/// included.
pub fn method_names(modules: &[Module]) -> impl Iterator<Item = &'static str> + '_ {
    METHODS
        .iter()
        .map(|(name, _)| *name)
        .chain(UNLOCKED_METHODS.iter().map(|(name, _)| *name))
        .chain(["upload.getoffset", "upload.perform"])
        .chain(
            MODULE_METHODS
                .iter()
                .filter(|(m, _, _)| modules.contains(m))
                .map(|(_, name, _)| *name),
        )
}
