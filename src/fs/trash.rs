//! No trash in the mount: deleting from a file manager asks to delete permanently.
//!
//! A desktop trash (the freedesktop.org Trash spec, followed by GLib's `g_file_trash`, so by
//! Nautilus, pcmanfm, Thunar and `gio trash`) on any filesystem but the home one lives in
//! `.Trash-$UID/` (or an existing `.Trash/$UID/`) at the top of the mount. Made through the
//! mount, that would be a folder on the server that every web user of the folder sees, holding
//! files that keep their access and count toward the folder, with nothing to empty it. So the
//! mount refuses to create it: the trash fails, and file managers offer to delete permanently.

use super::error::Kind;
use super::{FsError, FsResult};

/// Whether `name`, at the top of the mount, is a trash directory of the Trash spec.
pub fn is_trash_dir(name: &str) -> bool {
    name == ".Trash"
        || name
            .strip_prefix(".Trash-")
            .is_some_and(|uid| !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_digit()))
}

/// Refuses a trash directory at the top of the mount (`parent_is_top`).
pub fn refuse_trash_dir(parent_is_top: bool, name: &str) -> FsResult<()> {
    if parent_is_top && is_trash_dir(name) {
        return Err(FsError::new(
            Kind::NotPermitted,
            format!("{name}: the mount has no trash; delete permanently instead"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_trash_spec_names_are_trash_directories() {
        for name in [".Trash", ".Trash-0", ".Trash-1000"] {
            assert!(is_trash_dir(name), "{name}");
        }
        for name in [".Trash-", ".Trash-x", "Trash", ".trash-0", ".Trash-0a"] {
            assert!(!is_trash_dir(name), "{name}");
        }
    }
}
