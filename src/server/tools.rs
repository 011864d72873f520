//! `<data-dir>/bin`: where RKE2 puts the tools its guides call by full path
//! (`/var/lib/rancher/rke2/bin/kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml get nodes`).
//! rke2-rs ships no kubectl of its own, so it links the one on the daemon's PATH (the NixOS
//! module puts nixpkgs' kubectl there).

use std::path::{Path, PathBuf};

use crate::fsutil;

/// The first executable `name` in the `:`-separated `path`.
pub fn find_on_path(name: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Links `<data_dir>/bin/kubectl` to the kubectl on `path`. A regular file already there (a
/// kubectl the administrator put in place) is left alone. Returns the link's target, `None`
/// when there is nothing to link.
pub fn link_kubectl(data_dir: &Path, path: &str) -> std::io::Result<Option<PathBuf>> {
    let bin = data_dir.join("bin");
    let link = bin.join("kubectl");
    if std::fs::symlink_metadata(&link).is_ok_and(|m| !m.file_type().is_symlink()) {
        return Ok(Some(link));
    }
    // Never link to ourselves: our own bin dir may be on PATH.
    let search: Vec<&str> = path
        .split(':')
        .filter(|d| Path::new(d) != bin.as_path())
        .collect();
    let Some(target) = find_on_path("kubectl", &search.join(":")) else {
        return Ok(None);
    };
    fsutil::ensure_dir(&bin, 0o755)?;
    fsutil::symlink_atomic(&target, &link)?;
    Ok(Some(target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn links_the_kubectl_on_path_and_keeps_a_real_file() {
        let d = tempfile::tempdir().unwrap();
        let tools = d.path().join("tools");
        std::fs::create_dir_all(&tools).unwrap();
        let kubectl = tools.join("kubectl");
        std::fs::write(&kubectl, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = d.path().join("data");
        let path = format!("/nonexistent:{}", tools.display());
        assert_eq!(link_kubectl(&data, &path).unwrap(), Some(kubectl.clone()));
        assert_eq!(
            std::fs::read_link(data.join("bin/kubectl")).unwrap(),
            kubectl
        );
        // Again, with our own bin dir first on PATH: still the real one.
        let path = format!("{}:{}", data.join("bin").display(), tools.display());
        assert_eq!(link_kubectl(&data, &path).unwrap(), Some(kubectl.clone()));
        assert_eq!(link_kubectl(&data, "/nonexistent").unwrap(), None);
    }
}
