//! The typed client for the Midas Server 3 web API (`/api/json`). Knows nothing of FUSE.
//!
//! - [`client`]: the [`Client`], its login token, retries and one function per Midas call.
//! - [`error`]: what can go wrong, as [`Error`].
//! - [`text`], [`types`]: the objects Midas returns, decoded and repaired.

pub mod client;
mod envelope;
pub mod error;
pub mod redact;
mod stream;
pub mod text;
mod transfer;
pub mod types;

pub use client::{ByteStream, Client, ClientConfig, Credentials, UploadPart, UploadRevision};
pub use error::Error;
pub use redact::redact;

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod mock_tests;
