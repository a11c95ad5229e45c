//! A mount's settings from its three sources: command-line flags and `-o` options (which win),
//! then the profile, then the defaults.
//!
//! `-o` exists because `mount -t fuse.midasfs` and fstab run `midasfs URL DIR -o OPTS`; every
//! flag of `midasfs mount` is also an `-o` option named like the long flag with `_` for `-`.

use std::path::PathBuf;

use crate::cli::{parse_umask, MountArgs};
use crate::config::{self, Profile};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything a mount needs, resolved.
#[derive(Debug, Clone)]
pub struct MountSettings {
    pub url: String,
    pub mountpoint: PathBuf,
    /// The profile the settings came from, if any.
    pub profile: Option<String>,
    pub email: Option<String>,
    pub api_key_file: Option<PathBuf>,
    pub password_stdin: bool,
    pub foreground: bool,
    pub read_only: bool,
    pub root: Option<String>,
    pub items_as_dirs: bool,
    pub leaf_dirs_as_items: bool,
    pub ttl: u64,
    pub connect_timeout: u64,
    pub timeout: u64,
    pub cache_size: u64,
    /// The persistent data cache, and its size in bytes.
    pub cache_dir: Option<PathBuf>,
    pub cache_size_disk: u64,
    /// Read every file through the mount, never letting the kernel read the data cache itself.
    pub no_passthrough: bool,
    pub allow_other: bool,
    pub allow_root: bool,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub umask: u16,
    pub noexec: bool,
    pub spool_dir: Option<PathBuf>,
    /// The cap on what files being written hold, in MiB; none: what the spool's disk allows.
    pub spool_size: Option<u64>,
    /// Uploads after close in the background (`--write-back`), and how long unmount waits.
    pub write_back: bool,
    pub write_back_wait: u64,
    pub log_file: Option<PathBuf>,
}

impl MountSettings {
    /// The settings of a plain mount of `url`, with every default.
    pub fn new(url: String, mountpoint: PathBuf) -> MountSettings {
        MountSettings {
            url,
            mountpoint,
            profile: None,
            email: None,
            api_key_file: None,
            password_stdin: false,
            foreground: false,
            read_only: false,
            root: None,
            items_as_dirs: false,
            leaf_dirs_as_items: false,
            ttl: 5,
            connect_timeout: 10,
            timeout: 30,
            cache_size: 128,
            cache_dir: None,
            cache_size_disk: 10 << 30,
            no_passthrough: false,
            allow_other: false,
            allow_root: false,
            uid: None,
            gid: None,
            umask: 0,
            noexec: false,
            spool_dir: None,
            spool_size: None,
            write_back: false,
            write_back_wait: 600,
            log_file: None,
        }
    }
}

/// An error in what the user typed (or in the config file): exit status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Options mount(8), mount.fuse3 and fstab pass that mean nothing here (or are always so).
const IGNORED: &[&str] = &[
    "rw",
    "default_permissions",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "_netdev",
    "noauto",
    "auto",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "nofail",
    "defaults",
    "sync",
    "async",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "diratime",
    "nodiratime",
    "lazytime",
    "nolazytime",
];

/// Applies `-o` options (each a comma-separated list) onto the flags.
pub fn apply_options(args: &mut MountArgs, lists: &[String]) -> Result<(), UsageError> {
    for option in lists.iter().flat_map(|list| list.split(',')) {
        apply_option(args, option.trim())?;
    }
    Ok(())
}

fn apply_option(args: &mut MountArgs, option: &str) -> Result<(), UsageError> {
    let (key, value) = match option.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (option, None),
    };
    let bad = |why: &str| UsageError(format!("mount option {option:?}: {why}"));
    let text = || {
        value
            .filter(|v| !v.is_empty())
            .ok_or_else(|| bad(&format!("needs a value: -o {key}=…")))
    };
    let number = || {
        text()?
            .parse::<u64>()
            .map_err(|_| bad("expected a whole number"))
    };
    let id = || {
        text()?
            .parse::<u32>()
            .map_err(|_| bad("expected a numeric id"))
    };
    let flag = |field: &mut bool| {
        if value.is_some() {
            return Err(bad("takes no value"));
        }
        *field = true;
        Ok(())
    };
    if key.is_empty() || key.starts_with("x-") || key == "comment" {
        return Ok(());
    }
    if IGNORED.contains(&key) {
        return if value.is_some() {
            Err(bad("takes no value"))
        } else {
            Ok(())
        };
    }
    match key {
        "ro" | "read_only" => flag(&mut args.read_only)?,
        "items_as_dirs" => flag(&mut args.items_as_dirs)?,
        "leaf_dirs_as_items" => flag(&mut args.leaf_dirs_as_items)?,
        "allow_other" => flag(&mut args.allow_other)?,
        "allow_root" => flag(&mut args.allow_root)?,
        "foreground" => flag(&mut args.foreground)?,
        "password_stdin" => flag(&mut args.password_stdin)?,
        "noexec" => flag(&mut args.noexec)?,
        "write_back" => flag(&mut args.write_back)?,
        "no_passthrough" => flag(&mut args.no_passthrough)?,
        "write_back_wait" => args.write_back_wait = Some(number()?),
        "ttl" => {
            let ttl = number()?;
            if ttl == 0 {
                return Err(bad("at least 1 second"));
            }
            args.ttl = Some(ttl);
        }
        "connect_timeout" => args.connect_timeout = Some(number()?),
        "timeout" => args.timeout = Some(number()?),
        "cache_size" => args.cache_size = Some(number()?),
        "spool_size" => args.spool_size = Some(number()?),
        "cache_dir" => args.cache_dir = Some(PathBuf::from(text()?)),
        "cache_size_disk" => {
            let size = crate::fs::disk_cache::parse_size(text()?).map_err(|e| bad(&e))?;
            args.cache_size_disk = Some(size);
        }
        "uid" => args.uid = Some(id()?),
        "gid" => args.gid = Some(id()?),
        "umask" => args.umask = Some(parse_umask(text()?).map_err(|e| bad(&e))?),
        "root" => args.root = Some(text()?.to_owned()),
        "email" => args.email = Some(text()?.to_owned()),
        "profile" => args.profile = Some(text()?.to_owned()),
        "spool_dir" => args.spool_dir = Some(PathBuf::from(text()?)),
        "api_key_file" => args.api_key_file = Some(PathBuf::from(text()?)),
        "log_file" => args.log_file = Some(PathBuf::from(text()?)),
        _ => {
            return Err(UsageError(format!(
                "unknown mount option {key:?} (see `midasfs help mount` for the list)"
            )))
        }
    }
    Ok(())
}

/// Whether SOURCE names a server by URL rather than a profile.
fn is_url(source: &str) -> bool {
    source.contains("://")
}

/// Resolves the flags, `-o` options and profile into settings.
pub fn resolve(mut args: MountArgs) -> Result<MountSettings, BoxError> {
    let lists = std::mem::take(&mut args.options);
    apply_options(&mut args, &lists)?;
    let profile_name = match (&args.profile, is_url(&args.source)) {
        (Some(name), _) => Some(name.clone()),
        (None, false) => Some(args.source.clone()),
        (None, true) => None,
    };
    let profile = match &profile_name {
        Some(name) => {
            let profile = config::profile(name).map_err(|e| {
                if is_url(&args.source) || args.profile.is_some() {
                    UsageError(e.to_string())
                } else {
                    UsageError(format!(
                        "{} is neither a URL (http://… or https://…) nor a profile: {e}",
                        args.source
                    ))
                }
            })?;
            if !is_url(&args.source) && args.source != *name {
                return Err(UsageError(format!(
                    "{} is neither a URL nor the profile {name:?} given with it",
                    args.source
                ))
                .into());
            }
            // Never send a profile's key to a server other than the profile's.
            if is_url(&args.source)
                && args.source.trim_end_matches('/') != profile.url.trim_end_matches('/')
            {
                return Err(UsageError(format!(
                    "profile {name:?} is for {}, not {}",
                    profile.url, args.source
                ))
                .into());
            }
            profile
        }
        None => Profile::default(),
    };
    merge(args, profile_name, profile)
}

fn merge(
    args: MountArgs,
    profile_name: Option<String>,
    p: Profile,
) -> Result<MountSettings, BoxError> {
    let url = if profile_name.is_some() {
        p.url.clone()
    } else {
        args.source.clone()
    };
    let mut s = MountSettings::new(url, args.mountpoint);
    s.profile = profile_name;
    // The profile's key belongs to the profile's email: take both from one place.
    if args.email.is_some() || args.api_key_file.is_some() || args.password_stdin {
        s.email = args.email.or(p.email);
        s.api_key_file = args.api_key_file;
    } else {
        s.email = p.email;
        s.api_key_file = p.api_key_file;
    }
    s.password_stdin = args.password_stdin;
    s.foreground = args.foreground;
    s.read_only = args.read_only || p.read_only.unwrap_or(false);
    s.root = args.root.or(p.root);
    s.items_as_dirs = args.items_as_dirs || p.items_as_dirs.unwrap_or(false);
    s.leaf_dirs_as_items = args.leaf_dirs_as_items || p.leaf_dirs_as_items.unwrap_or(false);
    s.ttl = args.ttl.or(p.ttl).unwrap_or(s.ttl).max(1);
    s.connect_timeout = args
        .connect_timeout
        .or(p.connect_timeout)
        .unwrap_or(s.connect_timeout);
    s.timeout = args.timeout.or(p.timeout).unwrap_or(s.timeout);
    s.cache_size = args.cache_size.or(p.cache_size).unwrap_or(s.cache_size);
    s.cache_dir = args.cache_dir.or(p.cache_dir);
    // A bad size in the config file is an error even when a flag overrides it: it would
    // otherwise surface only on the mount that does not give the flag.
    let profile_disk = match &p.cache_size_disk {
        Some(text) => Some(crate::fs::disk_cache::parse_size(text).map_err(|e| {
            UsageError(format!(
                "cache_size_disk of profile {:?}: {e}",
                s.profile.as_deref().unwrap_or_default()
            ))
        })?),
        None => None,
    };
    s.cache_size_disk = args
        .cache_size_disk
        .or(profile_disk)
        .unwrap_or(s.cache_size_disk);
    s.no_passthrough = args.no_passthrough;
    s.allow_other = args.allow_other;
    s.allow_root = args.allow_root;
    s.uid = args.uid;
    s.gid = args.gid;
    s.umask = args.umask.unwrap_or(0);
    s.noexec = args.noexec;
    s.spool_dir = args.spool_dir.or(p.spool_dir);
    s.spool_size = args.spool_size.or(p.spool_size);
    s.write_back = args.write_back;
    s.write_back_wait = args.write_back_wait.unwrap_or(s.write_back_wait);
    s.log_file = args.log_file.or(p.log_file);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, Command};

    fn args() -> MountArgs {
        MountArgs {
            source: "http://host/midas".into(),
            mountpoint: "/mnt".into(),
            ..MountArgs::default()
        }
    }

    #[test]
    fn every_long_flag_of_mount_is_also_an_o_option() {
        let command = MountArgs::augment_args(Command::new("mount"));
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let key = long.replace('-', "_");
            let takes_value = arg.get_action().takes_values();
            let option = if takes_value {
                let sample = if key == "umask" { "022" } else { "7" };
                format!("{key}={sample}")
            } else {
                key.clone()
            };
            let mut parsed = args();
            apply_options(&mut parsed, std::slice::from_ref(&option))
                .unwrap_or_else(|e| panic!("--{long} has no -o {option}: {e}"));
        }
    }

    #[test]
    fn o_options_set_the_same_fields_as_flags() {
        let mut parsed = args();
        apply_options(
            &mut parsed,
            &[
                "ro,ttl=9,spool_dir=/var/spool/m,uid=1000,gid=100,umask=027".into(),
                "allow_other,profile=lab".into(),
            ],
        )
        .unwrap();
        assert!(parsed.read_only && parsed.allow_other);
        assert_eq!(parsed.ttl, Some(9));
        assert_eq!(parsed.spool_dir, Some(PathBuf::from("/var/spool/m")));
        assert_eq!(
            (parsed.uid, parsed.gid, parsed.umask),
            (Some(1000), Some(100), Some(0o27))
        );
        assert_eq!(parsed.profile.as_deref(), Some("lab"));
    }

    #[test]
    fn mount_noise_is_accepted_and_ignored() {
        let mut parsed = args();
        apply_options(
            &mut parsed,
            &["rw,dev,suid,nodev,nosuid,exec,_netdev,noauto,user,users,nofail,auto,x-systemd.automount,comment=hi,defaults,default_permissions,,noatime".into()],
        )
        .unwrap();
        assert!(!parsed.read_only);
    }

    #[test]
    fn an_unknown_or_malformed_option_is_an_error_naming_it() {
        for (option, expected) in [
            ("colour=red", "unknown mount option \"colour\""),
            ("ttl=0", "at least 1"),
            ("ttl=soon", "whole number"),
            ("ttl", "needs a value"),
            ("ro=1", "takes no value"),
            ("umask=999", "octal"),
        ] {
            let err = apply_options(&mut args(), &[option.into()]).unwrap_err();
            assert!(err.0.contains(expected), "{option}: {err}");
        }
    }

    #[test]
    fn without_spool_size_files_being_written_have_no_cap_but_the_disk() {
        let s = merge(args(), None, Profile::default()).unwrap();
        assert_eq!(
            s.spool_size, None,
            "a 20 GiB cp must not stop at a fixed cap"
        );
        let mut a = args();
        a.spool_size = Some(64);
        assert_eq!(
            merge(a, None, Profile::default()).unwrap().spool_size,
            Some(64)
        );
    }

    #[test]
    fn flags_win_over_the_profile_and_the_profile_over_defaults() {
        let profile = Profile {
            url: "http://lab/midas".into(),
            email: Some("me@lab".into()),
            api_key_file: Some("/k".into()),
            read_only: Some(true),
            ttl: Some(30),
            cache_size: Some(64),
            ..Profile::default()
        };
        let mut a = args();
        a.source = "lab".into();
        a.ttl = Some(2);
        let s = merge(a, Some("lab".into()), profile.clone()).unwrap();
        assert_eq!(s.url, "http://lab/midas");
        assert_eq!((s.ttl, s.cache_size, s.timeout), (2, 64, 30));
        assert!(
            s.read_only,
            "rw (mount's default) must not undo a profile's read_only"
        );
        assert_eq!(s.email.as_deref(), Some("me@lab"));
        assert_eq!(s.api_key_file, Some(PathBuf::from("/k")));
        // Another key on the command line does not pair with the profile's key file.
        let mut a = args();
        a.api_key_file = Some("/other".into());
        let s = merge(a, Some("lab".into()), profile).unwrap();
        assert_eq!(s.api_key_file, Some(PathBuf::from("/other")));
    }

    #[test]
    fn a_bad_disk_cache_size_in_a_profile_is_an_error_naming_it() {
        let profile = |size: &str| Profile {
            url: "http://lab/midas".into(),
            cache_size_disk: Some(size.into()),
            ..Profile::default()
        };
        let s = merge(args(), Some("lab".into()), profile("20G")).unwrap();
        assert_eq!(s.cache_size_disk, 20 << 30);
        for bad in ["lots", "12X", "-5G"] {
            let err = merge(args(), Some("lab".into()), profile(bad))
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("cache_size_disk") && err.contains("\"lab\"") && err.contains(bad),
                "{bad}: {err}"
            );
            // Also when the flag gives the size: the config file still needs fixing.
            let mut flagged = args();
            flagged.cache_size_disk = Some(1 << 30);
            assert!(merge(flagged, Some("lab".into()), profile(bad)).is_err());
        }
    }
}
