//! The server's hold on its data directory: an exclusive `flock` on `server/rke2-server.lock`
//! for the life of the process, with the holder's pid written inside. Offline maintenance
//! (`rke2 certificate rotate`) takes the same lock, so it refuses while the server runs and a
//! server cannot start in the middle of a rotation (docs/operations.md §4.3). The kernel drops
//! the lock when the process dies, so a crash never leaves a stale lock behind.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// Lock failures.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "an rke2 server{pid} is running on the data directory {data_dir}; stop it first \
         (systemctl stop rke2-server)",
        pid = .pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Held { data_dir: String, pid: Option<u32> },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A held lock; released on drop (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// The lock file of a data directory.
pub fn lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join("server").join("rke2-server.lock")
}

/// Takes the lock of `data_dir` without waiting, writing our pid into it.
pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
    let path = lock_path(data_dir);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        crate::fsutil::ensure_private_dir(dir).map_err(|source| LockError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    // Not truncated on open: the holder's pid must stay readable for the refusal message.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
        if e == rustix::io::Errno::WOULDBLOCK {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(LockError::Held {
                data_dir: data_dir.display().to_string(),
                pid: text.trim().parse().ok(),
            });
        }
        return Err(io(e.into()));
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(DataDirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_drops() {
        let d = tempfile::tempdir().unwrap();
        let held = acquire(d.path()).unwrap();
        let err = acquire(d.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, LockError::Held { pid: Some(p), .. } if p == std::process::id()),
            "{msg}"
        );
        assert!(msg.contains("is running on the data directory"), "{msg}");
        drop(held);
        // Another test thread that forks at the wrong moment shares the lock's open file until
        // its child execs (the descriptor is close-on-exec), so the release may lag a little.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match acquire(d.path()) {
                Ok(_) => break,
                Err(LockError::Held { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("the lock stayed held after its holder dropped it: {e}"),
            }
        }
    }
}
