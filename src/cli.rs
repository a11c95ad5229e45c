//! The command line: `midasfs mount`, `midasfs serve`, `midasfs admin`, `midasfs demo`.
//!
//! Only argument definitions live here; `main.rs` dispatches to the layers.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "midasfs",
    version,
    about = "Mount a Midas Server 3 as a filesystem"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount a Midas server at MOUNTPOINT.
    Mount(MountArgs),
    /// Run a Midas-compatible server (Midas Server 3.4.2 wire protocol) on a local store.
    Serve(ServeArgs),
    /// Add users or communities to a `midasfs serve` store (the server may be running).
    Admin(AdminArgs),
    /// Start a server with demo data and mount it: the quickest way to try midasfs.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// Base URL of the Midas installation, e.g. https://host/midas
    pub url: String,
    /// Empty directory to mount on
    pub mountpoint: PathBuf,
    /// Email of the Midas account (with MIDAS_API_KEY, --api-key-file or --password-stdin)
    #[arg(long)]
    pub email: Option<String>,
    /// Read the API key from this file (first line); MIDAS_API_KEY in the environment also works
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Read the password from standard input and exchange it for the Default API key
    #[arg(long)]
    pub password_stdin: bool,
    /// Stay in the foreground (logs go to stderr); without it, midasfs returns once the mount is ready
    #[arg(short, long)]
    pub foreground: bool,
    /// Refuse every write with EROFS
    #[arg(long)]
    pub read_only: bool,
    /// Mount a subtree: a path such as /communities/X/Folder, or folder:ID
    #[arg(long, value_name = "PATH")]
    pub root: Option<String>,
    /// Show every item as a directory of its bitstreams, even single-file items
    #[arg(long)]
    pub items_as_dirs: bool,
    /// Seconds that listings and attributes are cached (at least 1)
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub ttl: u64,
    /// Seconds to wait for a TCP connection to the server
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub connect_timeout: u64,
    /// Seconds a request may stall (no bytes received) before it fails
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub timeout: u64,
    /// Size of the in-memory block cache for file content, in MiB
    #[arg(long, default_value_t = 128, value_name = "MIB")]
    pub cache_size: u64,
    /// Let other users access the mount (needs user_allow_other in /etc/fuse.conf for non-root)
    #[arg(long)]
    pub allow_other: bool,
    /// Directory for write spool files and the recovery directory
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Largest total size of files being written, in MiB (ENOSPC beyond)
    #[arg(long, default_value_t = 10240, value_name = "MIB")]
    pub spool_size: u64,
    /// Log file when running in the background (default: $XDG_STATE_HOME/midasfs/mount.log)
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory of the store (database and files); created on first start
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Address to listen on; port 0 picks a free port (printed at start)
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Email of the administrator created on first start
    #[arg(long, default_value = "admin@example.com")]
    pub admin_email: String,
    /// Password of the administrator created on first start (default: a random one, printed)
    #[arg(long)]
    pub admin_password: Option<String>,
    /// First name of the administrator created on first start
    #[arg(long, default_value = "Admin")]
    pub admin_firstname: String,
    /// Last name of the administrator created on first start
    #[arg(long, default_value = "User")]
    pub admin_lastname: String,
    /// Lifetime of login tokens in seconds (Midas: 100 minutes); partial uploads left alone
    /// that long are deleted
    #[arg(long, default_value_t = 6000, value_name = "SECS")]
    pub token_ttl: u64,
    /// Delay every answer by this many milliseconds (a WAN-like round trip)
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub latency: u64,
    /// Seed demo data on first start (a community, folders, items, a second user)
    #[arg(long)]
    pub demo: bool,
    /// Title reported by midas.info
    #[arg(long, default_value = "midasfs serve")]
    pub title: String,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Directory of the store, as given to `midasfs serve --data`
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    #[command(subcommand)]
    pub action: AdminAction,
}

#[derive(Debug, Subcommand)]
pub enum AdminAction {
    /// Create a user (with its Private and Public folders); prints its Default API key
    AddUser {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
        #[arg(long)]
        firstname: String,
        #[arg(long)]
        lastname: String,
        /// Make the user a server administrator
        #[arg(long)]
        admin: bool,
    },
    /// Create a community (with its Public and Private folders)
    AddCommunity {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Make the community private (members only)
        #[arg(long)]
        private: bool,
        /// Email of a user to make a member and moderator of the community
        #[arg(long, value_name = "EMAIL")]
        moderator: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to mount the demo (created if missing)
    #[arg(default_value = "midas-demo")]
    pub mountpoint: PathBuf,
    /// Directory of the demo server's store (default: a temporary directory)
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
}
