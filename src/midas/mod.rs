//! The typed client for the Midas Server 3 web API (`/api/json`). Knows nothing of FUSE.
//!
//! - [`client`]: the [`Client`], its login token, retries and one function per Midas call.
//! - [`api`]: the calls the filesystem makes, as the trait [`MidasApi`] the client implements;
//!   [`fake`] implements it in memory for tests, with faults on demand.
//! - [`error`]: what can go wrong, as [`Error`]; [`codes`]: Midas's error codes by name.
//! - [`text`], [`types`]: the objects Midas returns, decoded and repaired.

pub mod api;
pub mod client;
pub mod codes;
mod envelope;
pub mod error;
#[doc(hidden)]
pub mod fake;
pub mod redact;
mod stream;
pub mod text;
mod transfer;
pub mod types;

pub use api::{Api, MidasApi};
pub use client::{ByteStream, Client, ClientConfig, Credentials, UploadPart, UploadRevision};
pub use error::Error;
pub use redact::redact;

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod keepalive_tests;
#[cfg(test)]
mod mock_tests;
