//! Air-gap images: every `*.tar`, `*.tar.gz`/`*.tgz` and `*.tar.zst` (docker-archive or OCI
//! layout) in `<data-dir>/agent/images/` is imported into containerd's `k8s.io` namespace at
//! start, as RKE2 does. The import runs Debian's `ctr` as a child process: containerd's own
//! import needs its content, lease and image services, far more API than the one call is worth
//! (docs/workloads.md).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// Whether `name` is an image archive RKE2 imports.
pub fn is_image_archive(name: &str) -> bool {
    [".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.zstd"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// The archives in `dir`, sorted by name.
pub fn archives(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_image_archive)
        })
        .collect();
    files.sort();
    files
}

/// The decompressor a compressed archive is piped through before `ctr` reads it.
fn decompressor(path: &Path) -> Option<&'static str> {
    let name = path.to_string_lossy();
    if name.ends_with(".gz") || name.ends_with(".tgz") {
        Some("gzip")
    } else if name.ends_with(".zst") || name.ends_with(".zstd") {
        Some("zstd")
    } else {
        None
    }
}

/// Imports one archive; returns ctr's error output on failure.
pub async fn import(path: &Path, socket: &Path) -> Result<(), String> {
    let mut ctr = Command::new("ctr");
    ctr.arg("--address")
        .arg(socket)
        .args(["-n", "k8s.io", "images", "import", "--no-unpack=false"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = match decompressor(path) {
        None => ctr.arg(path).stdin(Stdio::null()).output().await,
        Some(tool) => {
            let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
            let mut dec = Command::new(tool)
                .arg("-dc")
                .stdin(Stdio::from(file))
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("{tool}: {e}"))?;
            let out: Stdio = dec
                .stdout
                .take()
                .ok_or("no decompressor output")?
                .try_into()
                .map_err(|e: std::io::Error| e.to_string())?;
            let r = ctr.arg("-").stdin(out).output().await;
            let _ = dec.wait().await;
            r
        }
    }
    .map_err(|e| format!("ctr: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// Imports every archive in `dir`, logging each result; failures do not stop the node.
pub async fn import_dir(dir: &Path, socket: &Path, cancel: &CancellationToken) {
    for file in archives(dir) {
        if cancel.is_cancelled() {
            return;
        }
        let started = std::time::Instant::now();
        match import(&file, socket).await {
            Ok(()) => tracing::info!(
                component = "runtime",
                "imported images from {} in {:?}",
                file.display(),
                started.elapsed()
            ),
            Err(e) => tracing::error!(
                component = "runtime",
                "importing images from {} failed: {e}",
                file.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_image_archives_are_imported() {
        let d = tempfile::tempdir().unwrap();
        for f in ["a.tar", "b.tar.gz", "c.tar.zst", "d.txt", "e.tar.bak"] {
            std::fs::write(d.path().join(f), b"x").unwrap();
        }
        let names: Vec<String> = archives(d.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.tar", "b.tar.gz", "c.tar.zst"]);
        assert_eq!(decompressor(Path::new("x.tar.gz")), Some("gzip"));
        assert_eq!(decompressor(Path::new("x.tar")), None);
    }
}
