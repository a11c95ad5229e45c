//! The tests of the real processes in one binary: `midasfs serve` over HTTP, mounts through the
//! kernel, the command line, pydas. One link and one copy of the shared helpers instead of one
//! per file, and the tests of all files run side by side. Each file is a module, so a test's
//! name starts with its file's (`cargo test --release --test integration mount_write::`).
//! `tests/private_files.rs` stays a binary of its own: its tests set the process's umask. The
//! filesystem's tests on the in-memory Midas are `tests/filesystem/`.

#[macro_use]
mod common;

mod client_live;
mod demo;
mod features;
mod listing_scale;
mod mount_access;
mod mount_cache;
mod mount_cli;
mod mount_hostile;
mod mount_items;
mod mount_large;
mod mount_read;
mod mount_write;
mod mount_writeback;
mod server_behaviour;
mod server_captures;
mod server_policies;
mod server_pydas;
mod server_solr;
mod soak_findings;
