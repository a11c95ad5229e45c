//! Shared helpers for the integration tests (`mod common;` in each test file).
//!
//! Each test binary uses only some of these helpers, hence the per-module `dead_code` allowances.

#[allow(dead_code)]
pub mod server;

// The real Midas Server the environment may name, for the tests that run on both servers.
#[allow(dead_code)]
pub mod real;

// A real mount of `midasfs mount` for the mount tests.
#[allow(dead_code)]
pub mod mount;

// Generated local trees and `diff -r`.
#[allow(dead_code)]
pub mod tree;

// ZIP central directories, duplicate names included.
#[allow(dead_code)]
pub mod zipfile;

// A hostile or broken server: a proxy in front of `midasfs serve` that misbehaves on request.
#[allow(dead_code)]
pub mod proxy;

// Two users beside the administrator, for the tests of who sees what.
#[allow(dead_code)]
pub mod users;

// Ids, modes, chmod, setfattr and errnos of the files in a mount.
#[allow(dead_code)]
pub mod files;
