//! Files and directories only their owner may use: 0700 directories, 0600 files, whatever the
//! umask. The server's store holds every API key and every user's data; the mount's spool,
//! recovery files and log hold what users write and read. A directory that already exists with
//! bits for the group or others is tightened, with a warning.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` (missing parents too, 0700) or makes an existing one 0700.
pub fn dir(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)?;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    set_mode(path, mode, DIR_MODE, || {
        std::fs::set_permissions(path, Permissions::from_mode(DIR_MODE))
    })
}

/// Open options that create a file 0600 (the umask can only take bits away; see [`file`]).
pub fn file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Makes an open file 0600: one just created under an unusual umask, or one that existed.
pub fn file(file: &File, path: &Path) -> io::Result<()> {
    let mode = file.metadata()?.permissions().mode() & 0o7777;
    set_mode(path, mode, FILE_MODE, || {
        file.set_permissions(Permissions::from_mode(FILE_MODE))
    })
}

/// Writes `bytes` to `path` as a file only its owner may use (0600), replacing any content.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut out = file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file(&out, path)?;
    io::Write::write_all(&mut out, bytes)
}

/// Makes an existing file 0600 (nothing when it does not exist).
pub fn existing_file(path: &Path) -> io::Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) => set_mode(path, meta.permissions().mode() & 0o7777, FILE_MODE, || {
            std::fs::set_permissions(path, Permissions::from_mode(FILE_MODE))
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

fn set_mode(
    path: &Path,
    current: u32,
    wanted: u32,
    set: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    if current == wanted {
        return Ok(());
    }
    if current & 0o077 != 0 {
        log::warn!(
            "{} was {current:04o}, readable by other users: making it {wanted:04o}",
            path.display()
        );
    }
    set()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn loose_directories_and_files_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let loose = tmp.path().join("loose");
        std::fs::create_dir(&loose).unwrap();
        std::fs::set_permissions(&loose, Permissions::from_mode(0o755)).unwrap();
        dir(&loose).unwrap();
        assert_eq!(mode(&loose), 0o700);
        let fresh = tmp.path().join("a/b");
        dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        let path = loose.join("f");
        std::fs::write(&path, b"x").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        existing_file(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        existing_file(&loose.join("missing")).unwrap();
    }
}
