//! What the mount tests ask of the files in a mount beyond `std::fs`: a file's Midas id, its
//! permission bits, `chmod` and `setfattr` as a user runs them, and the errno of a refusal.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use super::mount::getxattr;

/// The names a directory lists, sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("listing {}: {err}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The Midas id of a file or directory in the mount (`user.midas.id`).
pub fn id_of(path: &Path) -> String {
    getxattr(path, "user.midas.id").unwrap_or_else(|| panic!("{} has no id", path.display()))
}

/// The permission bits of a path (setuid, setgid and sticky included).
pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Runs `chmod ARGS PATH`, as a user would.
pub fn chmod(args: &[&str], path: &Path) -> Output {
    Command::new("chmod")
        .args(args)
        .arg(path)
        .output()
        .expect("run chmod")
}

/// `setxattr(2)` of a text value.
pub fn setfattr(path: &Path, name: &str, value: &str) -> std::io::Result<()> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    let c_name = std::ffi::CString::new(name).expect("name");
    // SAFETY: valid C strings and a buffer of the length given.
    let done = unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The errno of `result`, which must have failed (`what` names it in the panic if it did not).
pub fn errno<T: std::fmt::Debug>(result: std::io::Result<T>, what: &str) -> Option<i32> {
    result
        .map(|ok| panic!("{what} succeeded: {ok:?}"))
        .unwrap_err()
        .raw_os_error()
}
