use std::process::ExitCode;

use clap::Parser;

use midasfs::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("midasfs=info"))
        .format_timestamp_millis()
        .init();
    let result = match cli.command {
        Command::Mount(args) => midasfs::mount::run(args),
        Command::Serve(args) => midasfs::server::run(args),
        Command::Admin(args) => midasfs::server::admin(args),
        Command::Demo(args) => midasfs::mount::demo(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("midasfs: {err}");
            ExitCode::FAILURE
        }
    }
}
