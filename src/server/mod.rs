//! `midasfs serve`: a Midas-compatible server (the Midas Server 3.4.2 wire protocol) on a local store.

use crate::cli::{AdminArgs, ServeArgs};
use crate::CliResult;

pub fn run(_args: ServeArgs) -> CliResult {
    todo!("server")
}

pub fn admin(_args: AdminArgs) -> CliResult {
    todo!("admin")
}
