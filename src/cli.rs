//! The command line: `midasfs mount` (also as `midasfs URL DIR -o OPTS`, the form `mount -t
//! fuse.midasfs` uses), `login`, `unmount`, `status`, `serve`, `admin`, `demo`, `completions`, `man`.
//!
//! Only argument definitions live here (completions and the man page are generated from them);
//! `main.rs` dispatches to the layers.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  midasfs demo                                        try it: a demo server, mounted
  MIDAS_API_KEY=KEY midasfs mount https://host/midas ~/midas --email me@example.com
  midasfs login https://host/midas --profile lab --email me@example.com
  midasfs mount lab ~/midas                           mount with the profile `lab`
  midasfs https://host/midas ~/midas -o ro,ttl=30     the form mount(8) and fstab use
  midasfs status                                      what is mounted, uploads, errors
  midasfs unmount ~/midas                             (or fusermount3 -u ~/midas)

fstab (with midasfs in /usr/local/bin; see README):
  https://host/midas  /mnt/midas  fuse.midasfs  noauto,_netdev,ro,profile=lab  0 0

Exit status: 0 success; 1 failure (server, network, mount); 2 usage error (unknown option,
bad -o option, bad config file).";

#[derive(Debug, Parser)]
#[command(
    name = "midasfs",
    version,
    about = "Mount a Midas Server 3 as a filesystem",
    long_about = "Mount a Midas Server 3 (Kitware's scientific data server) as a filesystem, \
                  and serve a Midas-compatible server to try it with.\n\n\
                  `midasfs URL MOUNTPOINT [-o OPTS]` is short for `midasfs mount URL MOUNTPOINT \
                  [-o OPTS]`.",
    after_help = "`midasfs URL MOUNTPOINT -o OPTS` is `midasfs mount`. See `midasfs help mount`.",
    after_long_help = EXAMPLES
)]
pub struct Cli {
    #[command(flatten)]
    pub verbosity: Verbosity,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone, Copy, Default)]
pub struct Verbosity {
    /// More log output (-v: debug, -vv: trace; for `demo`, -v shows every request)
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Less log output (-q: warnings and errors only, -qq: errors only)
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub quiet: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount a Midas server (a URL or a profile) at MOUNTPOINT.
    #[command(after_long_help = MOUNT_HELP)]
    Mount(MountArgs),
    /// Log in with email and password and save a profile with its API key (never the password).
    #[command(after_long_help = LOGIN_HELP)]
    Login(LoginArgs),
    /// Unmount a midasfs mount, waiting for its uploads to finish.
    #[command(visible_alias = "umount")]
    Unmount(UnmountArgs),
    /// Show midasfs mounts: server, user, uploads, cache, requests and errors.
    Status(StatusArgs),
    /// Run a Midas-compatible server (Midas Server 3.4.2 wire protocol) on a local store.
    Serve(ServeArgs),
    /// Add users or communities to a `midasfs serve` store (the server may be running).
    Admin(AdminArgs),
    /// Start a server with demo data and mount it: the quickest way to try midasfs.
    Demo(DemoArgs),
    /// Print a shell completion script (e.g. `midasfs completions bash > /etc/bash_completion.d/midasfs`).
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page (roff): `midasfs man | man -l -`, `midasfs man mount | man -l -`.
    Man {
        /// The subcommand whose page to print (midasfs-mount(1) …); none: midasfs(1)
        command: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

const MOUNT_HELP: &str = "\
SOURCE is a URL (the Midas base URL, before /api/json) or the name of a profile in
$XDG_CONFIG_HOME/midasfs/config.toml (see `midasfs login`). Options given here win over the
profile's.

Every option is also an -o option, named like the long option with `_` for `-`:
  -o read_only (or ro), items_as_dirs, leaf_dirs_as_items, root=PATH, ttl=SECS,
     connect_timeout=SECS, timeout=SECS, cache_size=MIB, cache_dir=DIR, cache_size_disk=SIZE,
     no_passthrough, spool_dir=DIR, spool_size=MIB, write_back, write_back_wait=SECS,
     log_file=FILE, email=EMAIL,
     api_key_file=FILE, profile=NAME, allow_other, allow_root, uid=N, gid=N, umask=OOO
  Standard ones: rw (the default; `ro` or a profile's read_only wins), default_permissions (always
  on), noexec/exec; accepted and ignored: dev, nodev, suid, nosuid, _netdev, noauto, auto, user,
  users, nouser, nofail, defaults, sync, async, atime, noatime, relatime, x-*, comment=…
  Any other option is an error.

Credentials: MIDAS_API_KEY in the environment, --api-key-file, --password-stdin, or a profile's
api_key_file; none means an anonymous mount (public data only).

The command returns once the mount is ready (unless --foreground); the daemon then logs to
$XDG_STATE_HOME/midasfs/mount.log. Unmount with `midasfs unmount MOUNTPOINT`, `fusermount3 -u
MOUNTPOINT` or `umount MOUNTPOINT`.

In the mount: `FILE@rN` is revision N of FILE (read-only, never listed; `getfattr -n
user.midas.revisions FILE` lists them), `chmod o+r`/`o-r` makes a file or folder Public/Private
on the server, and `.search/NAME/` (never listed) links to every item called NAME, or, for a NAME
with a `:` such as 'modality:CT', every item whose metadata matches (servers with the solr module).

Examples:
  MIDAS_API_KEY=KEY midasfs mount https://host/midas ~/midas --email me@example.com
  midasfs mount lab ~/midas --read-only
  midasfs https://host/midas /mnt/midas -o ro,allow_other,uid=1000,gid=1000,umask=022
  diff ~/midas/home/Public/data.csv@r2 ~/midas/home/Public/data.csv
  chmod -R o+rX ~/midas/home/Private/results
  ls -l ~/midas/.search/scan.nii/
  midasfs unmount ~/midas";

const LOGIN_HELP: &str = "\
Reads the password from the terminal (or one line of standard input when it is not a terminal),
exchanges it for the account's Default API key, and writes the profile to
$XDG_CONFIG_HOME/midasfs/config.toml and the key to a 0600 file beside it. The password is not
stored.

Example:
  midasfs login https://host/midas --profile lab --email me@example.com
  midasfs mount lab ~/midas";

#[derive(Debug, Args, Clone, Default)]
pub struct MountArgs {
    /// A Midas base URL (e.g. https://host/midas) or the name of a profile
    #[arg(value_name = "URL|PROFILE")]
    pub source: String,
    /// Empty directory to mount on
    pub mountpoint: PathBuf,
    /// Mount options, comma-separated (see below); may be repeated
    #[arg(short = 'o', value_name = "OPTS", action = ArgAction::Append)]
    pub options: Vec<String>,
    /// Take the server and settings from this profile (SOURCE may then be the URL or the name)
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
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
    /// Refuse to execute programs from the mount (-o noexec)
    #[arg(long, hide = true)]
    pub noexec: bool,
    /// Mount a subtree: a path such as /communities/X/Folder, or folder:ID
    #[arg(long, value_name = "PATH")]
    pub root: Option<String>,
    /// Show every item as a directory of its bitstreams, even single-file items
    #[arg(long)]
    pub items_as_dirs: bool,
    /// Make every new directory an item, which holds the files written into it; one that gets a
    /// subdirectory becomes a folder, its files items of their own (as pydas's
    /// leaf_folders_as_items)
    #[arg(long)]
    pub leaf_dirs_as_items: bool,
    /// Seconds that listings and attributes are cached, at least 1 [default: 5]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub ttl: Option<u64>,
    /// Seconds to wait for a TCP connection to the server [default: 10]
    #[arg(long, value_name = "SECS")]
    pub connect_timeout: Option<u64>,
    /// Seconds a request may stall (no bytes received) before it fails [default: 30]
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Size of the in-memory block cache for file content, in MiB [default: 128]
    #[arg(long, value_name = "MIB")]
    pub cache_size: Option<u64>,
    /// Keep the content of files read whole in DIR, keyed by MD5, across mounts and for every
    /// item with the same content (several mounts may share DIR) [default: none]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Largest size of --cache-dir, least recently used files evicted first: MiB, or with a
    /// K/M/G/T suffix [default: 10G]
    #[arg(long, value_name = "SIZE", value_parser = crate::fs::disk_cache::parse_size)]
    pub cache_size_disk: Option<u64>,
    /// Read files in --cache-dir through the mount: the kernel does not read them itself
    /// (FUSE passthrough, as root on Linux 6.9+; each block is then checked against its CRC)
    #[arg(long)]
    pub no_passthrough: bool,
    /// Let other users access the mount (needs user_allow_other in /etc/fuse.conf for non-root)
    #[arg(long)]
    pub allow_other: bool,
    /// Let root access the mount too (needs user_allow_other in /etc/fuse.conf for non-root)
    #[arg(long)]
    pub allow_root: bool,
    /// Owner shown for every file [default: the mounting user]
    #[arg(long, value_name = "UID")]
    pub uid: Option<u32>,
    /// Group shown for every file [default: the mounting user's group]
    #[arg(long, value_name = "GID")]
    pub gid: Option<u32>,
    /// Permission bits to clear from every file and directory, in octal (e.g. 022, 077) [default: 000]
    #[arg(long, value_name = "OCTAL", value_parser = parse_umask)]
    pub umask: Option<u16>,
    /// Directory for write spool files, the recovery directory and the times set through the mount (kept for the next mount) [default: ~/.cache/midasfs/spool]
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Largest total size of files being written, in MiB (ENOSPC beyond) [default: no cap: the spool's disk, less 1 GiB (or 5 % of a small disk) left free]
    #[arg(long, value_name = "MIB")]
    pub spool_size: Option<u64>,
    /// Write-back: `close` returns once the file is safe in the spool (synced, with a journal
    /// record) and uploads run in the background, 16 at once; `fsync` of the file waits for its
    /// upload and returns its error, `sync DIR` waits for all, unmount waits (see
    /// --write-back-wait), and a mount after a crash resumes them. Without it, `close` returns
    /// when the upload is done, with its error
    #[arg(long)]
    pub write_back: bool,
    /// With --write-back: how long unmount waits for pending uploads before it leaves them in the
    /// spool for the next mount, in seconds [default: 600]
    #[arg(long, value_name = "SECS")]
    pub write_back_wait: Option<u64>,
    /// Log file when running in the background [default: $XDG_STATE_HOME/midasfs/mount.log]
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

/// An octal permission mask such as `022` or `0077`.
pub fn parse_umask(text: &str) -> Result<u16, String> {
    u16::from_str_radix(text, 8)
        .ok()
        .filter(|mask| *mask <= 0o777)
        .ok_or_else(|| format!("umask {text:?}: expected octal digits such as 022"))
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Base URL of the Midas installation, e.g. https://host/midas
    pub url: String,
    /// Email of the Midas account
    #[arg(long)]
    pub email: String,
    /// Name of the profile to write (replaced if it exists)
    #[arg(long, default_value = "default", value_name = "NAME")]
    pub profile: String,
}

#[derive(Debug, Args)]
pub struct UnmountArgs {
    /// The mountpoint
    pub mountpoint: PathBuf,
    /// If files are open, detach the mount now; it goes away (and uploads finish) when they close
    #[arg(short = 'z', long)]
    pub lazy: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this mount (default: every midasfs mount of this user)
    pub mountpoint: Option<PathBuf>,
    /// Print the daemon's answer as JSON
    #[arg(long)]
    pub json: bool,
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
    /// File whose first line is the password of the administrator created on first start
    /// (default: a random one, printed)
    #[arg(long, value_name = "FILE", conflicts_with = "admin_password_stdin")]
    pub admin_password_file: Option<PathBuf>,
    /// Read the administrator's password from standard input (first line)
    #[arg(long)]
    pub admin_password_stdin: bool,
    /// Refused: a password in the arguments is visible to every user (ps)
    #[arg(long, hide = true, value_name = "PASSWORD")]
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
    /// Most open client connections; beyond it the longest-idle ones are closed
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_connections: usize,
    /// Close a connection that sends nothing for this long after opening or after a response
    #[arg(long, default_value_t = 15, value_name = "SECS")]
    pub idle_timeout: u64,
    /// Close a connection whose request head is not complete this long after it began waiting
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub header_timeout: u64,
    /// Enable these Midas modules besides `api` (comma-separated; off by default, as in a fresh
    /// Midas 3.4.2): `solr` answers `midas.solr.search.advanced` from the store itself
    #[arg(long, value_enum, value_delimiter = ',', value_name = "MODULE")]
    pub modules: Vec<crate::server::Module>,
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
        /// File whose first line is the user's password
        #[arg(long, value_name = "FILE", conflicts_with = "password_stdin")]
        password_file: Option<PathBuf>,
        /// Read the user's password from standard input (first line)
        #[arg(long)]
        password_stdin: bool,
        /// Refused: a password in the arguments is visible to every user (ps)
        #[arg(long, hide = true, value_name = "PASSWORD")]
        password: Option<String>,
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
    /// Where to mount the demo (created if missing) [default: $XDG_RUNTIME_DIR/midasfs-demo, or a
    /// new directory in /tmp; removed afterwards]
    pub mountpoint: Option<PathBuf>,
    /// Directory of the demo server's store (default: a temporary directory)
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
}
