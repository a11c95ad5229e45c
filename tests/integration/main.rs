//! Every integration test in one binary: one link and one copy of the shared helpers instead of
//! one per file, and the tests of all files run side by side. Each file is a module, so a test's
//! name starts with its file's (`cargo test --release --test integration mount_write::`).
//! `tests/private_files.rs` stays a binary of its own: its tests set the process's umask.

#[macro_use]
mod common;
mod fs_support;

mod client_live;
mod demo;
mod features;
mod fs_faults;
mod fs_model;
mod fs_ops;
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
