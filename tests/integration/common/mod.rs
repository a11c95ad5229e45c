//! Shared helpers for the integration tests (`use crate::common;` in each test file, and
//! `tests/private_files.rs`, which uses a part of them).

// `midasfs serve` (or the real Midas Server) as the tests see it.
pub mod server;

// The real Midas Server the environment may name, for the tests that run on both servers.
pub mod real;

// A real mount of `midasfs mount` for the mount tests.
#[macro_use]
pub mod mount;

// Generated local trees and `diff -r`.
pub mod tree;

// ZIP central directories, duplicate names included.
pub mod zipfile;

// A hostile or broken server: a proxy in front of `midasfs serve` that misbehaves on request.
pub mod proxy;

// Two users beside the administrator, for the tests of who sees what.
pub mod users;

// Ids, modes, chmod, setfattr and errnos of the files in a mount.
pub mod files;
