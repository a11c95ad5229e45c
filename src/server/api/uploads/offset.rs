//! `midas.upload.getoffset`: how many bytes of an upload the server holds.

use serde_json::{json, Value};
use tokio::time::Instant;

use super::token::UploadToken;
use super::writers::UPLOAD_STALL;
use crate::server::wire::{ApiError, Params};
use crate::server::Shared;

/// `midas.upload.getoffset`: bytes received so far, `""` for an unknown token. Answered once
/// an earlier `perform` of the token has stopped writing (or after [`UPLOAD_STALL`]), so the
/// offset is where the next bytes will land. Runs without the database lock: a finishing
/// upload needs it to commit.
pub async fn get_offset(shared: &Shared, params: &Params) -> Result<Value, ApiError> {
    let Some(token) = UploadToken::parse(params.require("uploadtoken")?) else {
        return Ok(json!({ "offset": "" }));
    };
    let deadline = Instant::now() + UPLOAD_STALL;
    if !shared.upload_writers.wait_idle(&token, deadline).await {
        log::warn!("getoffset: an upload of this token is still being written; answering anyway");
    }
    let offset = tokio::fs::metadata(token.temp_path(&shared.store))
        .await
        .ok()
        .filter(|m| m.is_file())
        .map(|m| Value::from(m.len()))
        .unwrap_or_else(|| Value::String(String::new()));
    Ok(json!({ "offset": offset }))
}
