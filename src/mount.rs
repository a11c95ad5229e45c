//! `midasfs mount` and `midasfs demo`: credentials, daemonizing, signals, and the mount itself.

use crate::cli::{DemoArgs, MountArgs};
use crate::CliResult;

pub fn run(_args: MountArgs) -> CliResult {
    todo!("mount")
}

pub fn demo(_args: DemoArgs) -> CliResult {
    todo!("demo")
}
