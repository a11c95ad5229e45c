//! midasfs: mount a Midas Server 3 as a filesystem, and a Midas-compatible server to mount.
//!
//! Layers, each readable alone:
//! - [`midas`]: the typed HTTP client for the Midas web API. Knows nothing of FUSE.
//! - [`fs`]: the filesystem (inodes, names, caches, readers, writes). Knows nothing of HTTP.
//! - [`fuse`]: the thin `fuser::Filesystem` adapter over [`fs`].
//! - [`server`]: `midasfs serve`, a Midas-compatible server with its own store.
//! - The command line: [`cli`] (arguments), [`options`] and [`config`] (a mount's settings, `-o`,
//!   profiles), [`mount`] (the daemon), [`control`] and [`manage`] (`status`, `unmount`).

pub mod cli;
pub mod config;
pub mod control;
pub mod fs;
pub mod fuse;
pub mod manage;
pub mod midas;
pub mod mount;
pub mod options;
pub mod private;
pub mod server;

/// What a subcommand returns to `main`, which prints the error and exits non-zero.
pub type CliResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
