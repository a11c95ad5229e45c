//! Profiles: named servers in `$XDG_CONFIG_HOME/midasfs/config.toml`, and `midasfs login`, which
//! writes one with the account's API key in a 0600 key file (the password is never stored).
//!
//! A config file others can write could point a mount at another server, and a key file others
//! can read gives away the account: both are refused, with the `chmod` that fixes them.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::LoginArgs;
use crate::midas::{Client, ClientConfig, Credentials};
use crate::CliResult;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One `[name]` table of config.toml. Every field but `url` is optional; options given on the
/// command line or with `-o` win over these.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Relative paths are relative to the config file's directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items_as_dirs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaf_dirs_as_items: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// As `--cache-size-disk`: MiB, or with a K/M/G/T suffix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_size_disk: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_file: Option<PathBuf>,
}

/// The home directory: `$HOME`, or the password database's entry when `HOME` is unset (as in
/// some service and helper environments).
pub fn home_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(home));
    }
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: getpwuid_r fills the passwd struct we own, with strings in the buffer we own and
    // whose length we pass; `result` is null unless an entry was found.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::getuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || pwd.pw_dir.is_null() {
            return None;
        }
        let dir = std::ffi::CStr::from_ptr(pwd.pw_dir);
        use std::os::unix::ffi::OsStrExt;
        Some(PathBuf::from(std::ffi::OsStr::from_bytes(dir.to_bytes())))
    }
}

/// `$XDG_CONFIG_HOME/midasfs`, or `~/.config/midasfs`.
pub fn config_dir() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| home_dir().map(|h| h.join(".config")))
        .unwrap_or_else(|| PathBuf::from("/etc"))
        .join("midasfs")
}

pub fn config_path() -> PathBuf {
    config_dir().join("config.toml")
}

/// Refuses a file (or directory) that another user could change.
fn check_not_writable_by_others(path: &Path, meta: &std::fs::Metadata) -> Result<(), BoxError> {
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "{} belongs to another user (uid {}); refusing to use it",
            path.display(),
            meta.uid()
        )
        .into());
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} can be changed by other users; refusing to use it (fix: chmod go-w {})",
            path.display(),
            path.display()
        )
        .into());
    }
    Ok(())
}

/// All profiles of the config file; none if it does not exist.
pub fn load(path: &Path) -> Result<BTreeMap<String, Profile>, BoxError> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(err) => return Err(format!("{}: {err}", path.display()).into()),
    };
    check_not_writable_by_others(path, &meta)?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()).into())
}

/// The profile `name` of the config file, with `api_key_file` made absolute.
pub fn profile(name: &str) -> Result<Profile, BoxError> {
    let path = config_path();
    let mut profiles = load(&path)?;
    let mut profile = profiles.remove(name).ok_or_else(|| {
        let known: Vec<&str> = profiles.keys().map(String::as_str).collect();
        format!(
            "no profile {name:?} in {} ({}); `midasfs login URL --profile {name} --email EMAIL` \
             makes one",
            path.display(),
            if known.is_empty() {
                "it has none".to_owned()
            } else {
                format!("it has {}", known.join(", "))
            }
        )
    })?;
    if let Some(file) = &profile.api_key_file {
        let dir = path.parent().unwrap_or(Path::new("."));
        profile.api_key_file = Some(dir.join(file));
    }
    Ok(profile)
}

/// The API key in `path` (its first line), refused if other users can read the file.
pub fn read_key_file(path: &Path) -> Result<String, BoxError> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read the API key file {}: {e}", path.display()))?;
    let meta = file.metadata()?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "the API key file {} can be read by other users; refusing to use it \
             (fix: chmod 600 {})",
            path.display(),
            path.display()
        )
        .into());
    }
    let text = std::io::read_to_string(file)
        .map_err(|e| format!("cannot read the API key file {}: {e}", path.display()))?;
    let key = text.lines().next().unwrap_or("").trim().to_owned();
    if key.is_empty() {
        return Err(format!("the API key file {} is empty", path.display()).into());
    }
    Ok(key)
}

/// `midasfs login URL --email E [--profile NAME]`.
pub fn login(args: LoginArgs) -> CliResult {
    if args.profile.is_empty()
        || !args
            .profile
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "profile name {:?}: use letters, digits, - and _",
            args.profile
        )
        .into());
    }
    let password = read_password(&format!("Password for {} at {}: ", args.email, args.url))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client_for = |credentials| {
        Client::new(ClientConfig {
            base_url: args.url.clone(),
            credentials,
            connect_timeout: std::time::Duration::from_secs(10),
            stall_timeout: std::time::Duration::from_secs(30),
        })
    };
    let anonymous = client_for(Credentials::Anonymous)?;
    runtime.block_on(anonymous.connect())?;
    let api_key = runtime.block_on(anonymous.default_api_key(&args.email, &password))?;
    // The key must work: log in with it, as a mount will.
    let client = client_for(Credentials::ApiKey {
        email: args.email.clone(),
        api_key: api_key.clone(),
    })?;
    runtime.block_on(client.connect())?;

    let dir = config_dir();
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let key_path = dir.join(format!("{}.key", args.profile));
    write_private(&key_path, format!("{api_key}\n").as_bytes())?;
    let profile = Profile {
        url: client.base_url().to_owned(),
        email: Some(args.email.clone()),
        api_key_file: Some(key_path.clone()),
        ..Profile::default()
    };
    let path = config_path();
    save_profile(&path, &args.profile, &profile)?;
    println!(
        "logged in as {}; profile {:?} written to {} (API key in {})",
        args.email,
        args.profile,
        path.display(),
        key_path.display()
    );
    println!("mount it with: midasfs mount {} MOUNTPOINT", args.profile);
    Ok(())
}

/// Adds or replaces `[name]` in the config file. A new profile is appended (the file's comments
/// stay); replacing one rewrites the file.
pub fn save_profile(path: &Path, name: &str, profile: &Profile) -> Result<(), BoxError> {
    let existing = load(path)?;
    let mut section = toml::Table::new();
    section.insert(name.to_owned(), toml::Table::try_from(profile)?.into());
    let text = if existing.contains_key(name) {
        let mut all = toml::Table::new();
        for (other, p) in &existing {
            all.insert(other.clone(), toml::Table::try_from(p)?.into());
        }
        all.insert(name.to_owned(), toml::Table::try_from(profile)?.into());
        toml::to_string(&all)?
    } else {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let separator = if old.is_empty() || old.ends_with("\n\n") {
            ""
        } else if old.ends_with('\n') {
            "\n"
        } else {
            "\n\n"
        };
        format!("{old}{separator}{}", toml::to_string(&section)?)
    };
    let tmp = path.with_extension("toml.tmp");
    write_private(&tmp, text.as_bytes())?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

/// Writes a file only its owner can read (0600), replacing any old one.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BoxError> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// A password from the terminal without echo, or one line of standard input when that is not a
/// terminal.
fn read_password(prompt: &str) -> Result<String, BoxError> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        eprint!("{prompt}");
        std::io::stderr().flush()?;
        let _echo_off = EchoOff::new();
        let mut line = String::new();
        stdin.read_line(&mut line)?;
        eprintln!();
        line
    } else {
        let mut line = String::new();
        stdin.read_line(&mut line)?;
        line
    };
    let password = password.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err("no password given".into());
    }
    Ok(password)
}

/// Turns the terminal's echo off for as long as it lives.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: tcgetattr/tcsetattr on stdin with a termios struct we own.
        unsafe {
            let mut term: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut term) != 0 {
                return EchoOff(None);
            }
            let saved = term;
            term.c_lflag &= !libc::ECHO;
            term.c_lflag |= libc::ECHONL;
            libc::tcsetattr(0, libc::TCSANOW, &term);
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = self.0 {
            // SAFETY: restores the settings read in `new`.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &saved) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_others_can_write_is_refused_and_the_fix_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[lab]\nurl = \"http://x\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod go-w"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load(&path).unwrap()["lab"].url, "http://x");
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab.key");
        std::fs::write(&path, "KEY\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_key_file(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key_file(&path).unwrap(), "KEY");
    }

    #[test]
    fn unknown_profile_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[lab]\nurl = \"http://x\"\nttll = 5\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("ttll"), "{err}");
    }

    #[test]
    fn saving_a_new_profile_keeps_the_others_and_their_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "# my servers\n[lab]\nurl = \"http://lab\"\nttl = 9\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let new = Profile {
            url: "http://home".into(),
            email: Some("me@example.com".into()),
            ..Profile::default()
        };
        save_profile(&path, "home", &new).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# my servers\n"), "{text}");
        let all = load(&path).unwrap();
        assert_eq!(all["lab"].ttl, Some(9));
        assert_eq!(all["home"], new);
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Replacing one rewrites the file with both.
        let newer = Profile {
            url: "http://home2".into(),
            ..Profile::default()
        };
        save_profile(&path, "home", &newer).unwrap();
        let all = load(&path).unwrap();
        assert_eq!(all["home"], newer);
        assert_eq!(all["lab"].ttl, Some(9));
    }
}
