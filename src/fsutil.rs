//! Atomic, permission-correct file writes. Every file the daemon writes goes through here so a
//! crash never leaves a half-written key, token or kubeconfig behind.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode for private keys, tokens, kubeconfigs and password files.
pub const SECRET_FILE_MODE: u32 = 0o600;
/// Mode for certificates and other public material.
pub const PUBLIC_FILE_MODE: u32 = 0o644;
/// Mode for data directories.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing parents with `mode` (existing directories keep their mode).
pub fn ensure_dir(dir: &Path, mode: u32) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new().recursive(true).mode(mode).create(dir)
}

/// Creates `dir` with `mode` and forces that mode even if it already existed.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    ensure_dir(dir, PRIVATE_DIR_MODE)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR_MODE))
}

fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `contents` to `path` atomically: a temp file in the same directory with `mode`,
/// fsync, then rename over the target. The parent directory must exist.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_path_for(path);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode given to open() is filtered by the umask; set it explicitly.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Like [`write_atomic`], creating missing parent directories with [`PRIVATE_DIR_MODE`].
pub fn write_atomic_mkdir(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        ensure_dir(parent, PRIVATE_DIR_MODE)?;
    }
    write_atomic(path, contents, mode)
}

/// Points `link` at `target` (a relative name is fine), replacing whatever `link` was, atomically.
pub fn symlink_atomic(target: &Path, link: &Path) -> io::Result<()> {
    let tmp = temp_path_for(link);
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, link).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Reads a file to a string, `None` when it does not exist.
pub fn read_optional(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// An I/O error together with the path it happened on, for error messages that name the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct PathError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Attaches a path to an I/O result.
pub trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T, PathError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T, PathError> {
        self.map_err(|source| PathError {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        write_atomic(&p, b"one", SECRET_FILE_MODE).unwrap();
        write_atomic(&p, b"two", SECRET_FILE_MODE).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // no temp files left behind
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn symlink_replaces_file() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("token");
        let l = dir.path().join("node-token");
        write_atomic(&t, b"x", SECRET_FILE_MODE).unwrap();
        write_atomic(&l, b"old", SECRET_FILE_MODE).unwrap();
        symlink_atomic(Path::new("token"), &l).unwrap();
        assert_eq!(fs::read_link(&l).unwrap(), Path::new("token"));
        assert_eq!(fs::read_to_string(&l).unwrap(), "x");
    }
}
