//! The `midasfs` binary: turns the mount(8) form `midasfs URL DIR -o OPTS` into `midasfs mount`,
//! sets up logging from -v/-q, runs the subcommand and maps its error to an exit status.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use midasfs::cli::{Cli, Command, Shell, Verbosity};
use midasfs::options::UsageError;

fn main() -> ExitCode {
    let argv = with_mount_subcommand(std::env::args_os().collect());
    let cli = Cli::parse_from(&argv);
    init_logging(cli.verbosity, matches!(cli.command, Command::Demo(_)));
    let result = match cli.command {
        Command::Mount(args) => midasfs::mount::run(args, argv),
        Command::Login(args) => midasfs::config::login(args),
        Command::Unmount(args) => midasfs::manage::unmount(args),
        Command::Status(args) => midasfs::manage::status(args),
        Command::Serve(args) => midasfs::server::run(args),
        Command::Admin(args) => midasfs::server::admin(args),
        Command::Demo(args) => midasfs::mount::demo(args, cli.verbosity),
        Command::Completions { shell } => completions(shell),
        Command::Man { command } => man(command.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("midasfs: {err}");
            if err.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `midasfs URL DIR [-o OPTS]` (what mount.fuse3 runs for `mount -t fuse.midasfs`) and
/// `midasfs PROFILE DIR` are `midasfs mount …`: a first argument that is neither an option nor a
/// subcommand is a mount source.
fn with_mount_subcommand(mut argv: Vec<OsString>) -> Vec<OsString> {
    let is_verbosity = |arg: &str| {
        matches!(arg, "--verbose" | "--quiet")
            || (arg.len() > 1
                && arg.starts_with('-')
                && (arg[1..].chars().all(|c| c == 'v') || arg[1..].chars().all(|c| c == 'q')))
    };
    let Some(at) = argv
        .iter()
        .skip(1)
        .position(|a| !a.to_str().is_some_and(is_verbosity))
        .map(|i| i + 1)
    else {
        return argv;
    };
    let Some(first) = argv[at].to_str() else {
        return argv;
    };
    let command = Cli::command();
    let is_subcommand = first == "help"
        || command
            .get_subcommands()
            .any(|s| s.get_name() == first || s.get_all_aliases().any(|a| a == first));
    if !first.starts_with('-') && !is_subcommand {
        argv.insert(at, "mount".into());
    }
    argv
}

/// Info by default (the mount daemon's and the server's log), warnings only for the demo (its
/// terminal shows a summary); `-v`/`-q` move this up and down, `RUST_LOG` overrides all.
fn init_logging(verbosity: Verbosity, demo: bool) {
    let levels = ["off", "error", "warn", "info", "debug", "trace"];
    let base: i32 = if demo { 2 } else { 3 };
    let level = (base + i32::from(verbosity.verbose) - i32::from(verbosity.quiet))
        .clamp(0, levels.len() as i32 - 1);
    let filter = format!("midasfs={}", levels[level as usize]);
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter))
        .format_timestamp_millis()
        .init();
}

fn completions(shell: Shell) -> midasfs::CliResult {
    let mut command = Cli::command();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut command, "midasfs", &mut std::io::stdout());
    Ok(())
}

fn man(subcommand: Option<&str>) -> midasfs::CliResult {
    let mut command = Cli::command();
    command.build();
    let page = match subcommand {
        None => command,
        Some(name) => {
            let sub = command
                .find_subcommand(name)
                .ok_or_else(|| UsageError(format!("no subcommand {name:?}")))?;
            // A one-shot command: leaking the page name is harmless.
            let page_name: &'static str = format!("midasfs-{name}").leak();
            sub.clone().name(page_name)
        }
    };
    clap_mangen::Man::new(page).render(&mut std::io::stdout())?;
    Ok(())
}
