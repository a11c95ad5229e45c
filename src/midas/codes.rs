//! Midas's wire error codes by name, so that no code is spelled as a bare number: the codes of
//! `core/constant/api.php` and of the upload component, as the real Midas 3.4 answers them (see
//! `midas-api.md`, "Error codes").

/// "Create … failed", "Upload failed": an internal failure.
pub const INTERNAL_ERROR: i64 = -100;
/// `Invalid token` (unknown or expired), and also an unknown method name (see
/// [`INVALID_TOKEN_MESSAGE`]).
pub const INVALID_TOKEN: i64 = -101;
/// An upload that got fewer bytes than its declared length:
/// `Failed to upload file - <got>/<length> bytes transferred`.
pub const UPLOAD_FAILED: i64 = -105;
/// A random upload token name collided.
pub const UPLOAD_TOKEN_FAILED: i64 = -140;
/// `Invalid upload token <token>`: no upload in progress under that token.
pub const INVALID_UPLOAD_TOKEN: i64 = -141;
/// The upload's temporary file could not be made (`MIDAS_HTTPUPLOAD_TMP_DIR_CREATION_FAILED`).
pub const UPLOAD_TEMP_FAILED: i64 = -144;
/// A missing or bad parameter, a missing parent object, an existing name (`folder.create`).
pub const INVALID_PARAMETER: i64 = -150;
/// Permission denied, and also "does not exist" for most calls that read or change an object.
pub const INVALID_POLICY: i64 = -151;
/// The wrong HTTP verb.
pub const HTTP_ERROR: i64 = -153;
/// Used only by the REST group lookup.
pub const NOT_FOUND: i64 = -154;
/// Errors of Midas's model layer leak through with code 0: a name already used by
/// `folder.move`, an empty name, a wrong API key at login, a missing destination folder.
pub const MODEL_ERROR: i64 = 0;

/// The message of [`INVALID_TOKEN`] that means "log in again" (the same code with another
/// message is an unknown method).
pub const INVALID_TOKEN_MESSAGE: &str = "Invalid token";
