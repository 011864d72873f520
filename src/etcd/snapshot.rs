//! etcd snapshots with RKE2's names and layout (docs/operations.md §4): files
//! `<name>-<node>-<unix time>` (`.zip` when compressed) in `etcd-snapshot-dir` (default
//! `<data-dir>/server/db/snapshots`), streamed from the local member, written to a hidden
//! temporary file, checked the way `etcdutl snapshot restore` checks them (bolt magic and the
//! SHA-256 trailer etcd appends) and only then renamed into place, so a snapshot cut short
//! never appears in a listing. Also: listing, deletion, retention pruning, the cron scheduler
//! and restoring a snapshot into a new data directory with etcd's own tool.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, broadcast};
use tokio_util::sync::CancellationToken;

use super::EtcdError;
use crate::config::ops::SnapshotConfig;
use crate::fsutil::{self, IoContext, PathError};

/// Prefix of snapshots taken on demand (CLI, D-Bus), as RKE2 names them.
pub const ON_DEMAND_PREFIX: &str = "on-demand";
/// Suffix of compressed snapshots.
pub const ZIP_SUFFIX: &str = ".zip";
/// How long one chunk of the snapshot stream may take before the save is abandoned.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);
/// bolt's meta-page magic number, right after the 16-byte page header.
const BOLT_MAGIC: u32 = 0xED0C_DAED;
/// Length of the SHA-256 trailer etcd appends to a snapshot.
const HASH_LEN: usize = 32;

/// Snapshot failures.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("etcd snapshot \"{name}\" not found in {dir}")]
    NotFound { name: String, dir: String },
    #[error("invalid snapshot name \"{name}\": {reason}")]
    InvalidName { name: String, reason: String },
    #[error("{path} is not an etcd snapshot: {reason}")]
    NotASnapshot { path: String, reason: String },
    #[error("etcd snapshot {0} already exists; try again in a second")]
    Exists(String),
    #[error("saving the etcd snapshot failed: {0}")]
    Stream(#[source] EtcdError),
    #[error("restoring the etcd snapshot with {tool} failed: {output}")]
    Restore { tool: String, output: String },
    #[error("etcd snapshots are not available yet: the server is not ready")]
    NotReady,
    #[error(transparent)]
    Io(#[from] PathError),
}

/// A snapshot in the snapshot directory. Also the D-Bus wire type `(sstx)`: name, node,
/// size in bytes, creation time (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, zbus::Type)]
pub struct SnapshotInfo {
    pub name: String,
    pub node: String,
    pub size: u64,
    pub created: i64,
}

/// The directory snapshots of this server go to.
pub fn snapshot_dir(config: &SnapshotConfig, data_dir: &Path) -> PathBuf {
    config
        .dir
        .clone()
        .unwrap_or_else(|| data_dir.join("server").join("db").join("snapshots"))
}

/// `<prefix>-<node>-<unix>`.
pub fn snapshot_name(prefix: &str, node: &str, unix: i64) -> String {
    format!("{prefix}-{node}-{unix}")
}

/// Refuses names that are not plain file names of the snapshot directory.
pub fn check_name(name: &str) -> Result<(), SnapshotError> {
    let bad = |reason: &str| SnapshotError::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(bad("must not be empty"));
    }
    if name.contains('/') || name.contains('\0') {
        return Err(bad("must be a snapshot name, not a path"));
    }
    if name.starts_with('.') {
        return Err(bad("must not start with '.'"));
    }
    Ok(())
}

/// Splits `<prefix>-<node>-<unix>[.zip]` into (base name, unix time); `None` for other files.
fn parse_file_name(file: &str) -> Option<(&str, i64)> {
    if file.starts_with('.') {
        return None;
    }
    let base = file.strip_suffix(ZIP_SUFFIX).unwrap_or(file);
    let (_, ts) = base.rsplit_once('-')?;
    if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((base, ts.parse().ok()?))
}

/// The node a snapshot name belongs to, given the prefixes snapshots are taken with.
fn node_of(base: &str, prefixes: &[&str]) -> String {
    let Some((rest, _)) = base.rsplit_once('-') else {
        return String::new();
    };
    prefixes
        .iter()
        .find_map(|p| rest.strip_prefix(&format!("{p}-")))
        .unwrap_or_default()
        .to_string()
}

/// Every snapshot in `dir`, newest first. Temporary files of saves in progress are hidden
/// (their names start with '.') and never listed.
pub fn list(dir: &Path, prefixes: &[&str]) -> Result<Vec<SnapshotInfo>, SnapshotError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at(dir).map_err(SnapshotError::from),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.at(dir)?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some((base, created)) = parse_file_name(&file) else {
            continue;
        };
        let meta = entry.metadata().at(&entry.path())?;
        if !meta.is_file() {
            continue;
        }
        out.push(SnapshotInfo {
            node: node_of(base, prefixes),
            name: file.clone(),
            size: meta.len(),
            created,
        });
    }
    out.sort_by(|a, b| b.created.cmp(&a.created).then(b.name.cmp(&a.name)));
    Ok(out)
}

/// Finds a snapshot by its name (with or without `.zip`).
pub fn find(dir: &Path, name: &str) -> Result<PathBuf, SnapshotError> {
    check_name(name)?;
    for candidate in [name.to_string(), format!("{name}{ZIP_SUFFIX}")] {
        let p = dir.join(&candidate);
        if parse_file_name(&candidate).is_some() && p.is_file() {
            return Ok(p);
        }
    }
    Err(SnapshotError::NotFound {
        name: name.to_string(),
        dir: dir.display().to_string(),
    })
}

/// Deletes one snapshot; returns its file name.
pub fn delete(dir: &Path, name: &str) -> Result<String, SnapshotError> {
    let path = find(dir, name)?;
    std::fs::remove_file(&path).at(&path)?;
    Ok(path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default())
}

/// Keeps the newest `retention` snapshots named `<prefix>-<node>-*` (RKE2's rule: per
/// directory and prefix, newest by the time in the name); returns the deleted names.
pub fn prune(
    dir: &Path,
    prefix: &str,
    node: &str,
    retention: u32,
) -> Result<Vec<String>, SnapshotError> {
    let start = format!("{prefix}-{node}-");
    let mut mine: Vec<SnapshotInfo> = list(dir, &[])?
        .into_iter()
        .filter(|s| {
            s.name.strip_prefix(&start).is_some_and(|rest| {
                let ts = rest.strip_suffix(ZIP_SUFFIX).unwrap_or(rest);
                ts.bytes().all(|b| b.is_ascii_digit())
            })
        })
        .collect();
    mine.sort_by_key(|s| std::cmp::Reverse(s.created));
    let mut deleted = Vec::new();
    for s in mine.into_iter().skip(retention as usize) {
        let p = dir.join(&s.name);
        std::fs::remove_file(&p).at(&p)?;
        deleted.push(s.name);
    }
    Ok(deleted)
}

/// Checks that `bytes` is an etcd snapshot: a bolt database (magic in the first meta page)
/// followed by the SHA-256 of the database that etcd appends, as etcd's restore verifies.
pub fn verify_bytes(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 4096 + HASH_LEN {
        return Err(format!(
            "too short ({} bytes) to be an etcd database",
            bytes.len()
        ));
    }
    let magic = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    if magic != BOLT_MAGIC {
        return Err("no bolt database header (wrong magic number)".into());
    }
    if bytes.len() % 512 != HASH_LEN {
        return Err("no SHA-256 trailer (a database copy, not an etcd snapshot?)".into());
    }
    let (db, hash) = bytes.split_at(bytes.len() - HASH_LEN);
    if ring::digest::digest(&ring::digest::SHA256, db).as_ref() != hash {
        return Err("its SHA-256 trailer does not match its content (truncated or corrupt)".into());
    }
    Ok(())
}

/// The raw snapshot bytes of a file, unzipped when it is a zip archive.
fn read_snapshot(path: &Path) -> Result<Vec<u8>, SnapshotError> {
    let not = |reason: String| SnapshotError::NotASnapshot {
        path: path.display().to_string(),
        reason,
    };
    let mut bytes = std::fs::read(path).at(path)?;
    if bytes.starts_with(b"PK\x03\x04") {
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&bytes))
            .map_err(|e| not(format!("unreadable zip archive: {e}")))?;
        if archive.len() != 1 {
            return Err(not(format!(
                "a compressed snapshot holds one file, this archive holds {}",
                archive.len()
            )));
        }
        let mut entry = archive
            .by_index(0)
            .map_err(|e| not(format!("unreadable zip archive: {e}")))?;
        let mut out = Vec::new();
        entry
            .read_to_end(&mut out)
            .map_err(|e| not(format!("unreadable zip archive: {e}")))?;
        drop(entry);
        bytes = out;
    }
    Ok(bytes)
}

/// Checks a snapshot file (plain or zipped); returns its raw bytes.
pub fn verify_file(path: &Path) -> Result<Vec<u8>, SnapshotError> {
    let bytes = read_snapshot(path)?;
    verify_bytes(&bytes).map_err(|reason| SnapshotError::NotASnapshot {
        path: path.display().to_string(),
        reason,
    })?;
    Ok(bytes)
}

/// Opens a new file exclusively with `mode` (a leftover temporary file is replaced).
fn create_private(path: &Path) -> Result<std::fs::File, SnapshotError> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    Ok(std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(fsutil::SECRET_FILE_MODE)
        .open(path)
        .at(path)?)
}

/// Zips `raw` (holding `name`) into `out`.
fn compress(raw: &Path, name: &str, out: &Path) -> Result<(), SnapshotError> {
    let file = create_private(out)?;
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(fsutil::SECRET_FILE_MODE);
    let io = |e: zip::result::ZipError| PathError {
        path: out.to_path_buf(),
        source: std::io::Error::other(e),
    };
    zip.start_file(name, options).map_err(io)?;
    let mut input = std::fs::File::open(raw).at(raw)?;
    std::io::copy(&mut input, &mut zip).at(out)?;
    let mut file = zip.finish().map_err(io)?;
    file.flush().at(out)?;
    file.sync_all().at(out)?;
    Ok(())
}

/// Streams a snapshot of the member behind `client` into `dir` as `name` (plus `.zip` when
/// `compressed`): temporary file, integrity check, optional compression, atomic rename.
pub async fn save(
    client: &etcd_client::Client,
    dir: &Path,
    name: &str,
    node: &str,
    compressed: bool,
) -> Result<SnapshotInfo, SnapshotError> {
    check_name(name)?;
    fsutil::ensure_private_dir(dir).at(dir)?;
    let file_name = if compressed {
        format!("{name}{ZIP_SUFFIX}")
    } else {
        name.to_string()
    };
    let final_path = dir.join(&file_name);
    if final_path.exists() {
        return Err(SnapshotError::Exists(file_name));
    }
    let part = dir.join(format!(".{name}.part"));
    let result = stream_to(client, &part).await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(e);
    }
    let (part2, name2, final2, file2) = (
        part.clone(),
        name.to_string(),
        final_path.clone(),
        file_name.clone(),
    );
    let finished = tokio::task::spawn_blocking(move || -> Result<u64, SnapshotError> {
        let cleanup = |e: SnapshotError| {
            let _ = std::fs::remove_file(&part2);
            e
        };
        verify_file(&part2).map_err(cleanup)?;
        let ready = if compressed {
            let zipped = part2.with_file_name(format!(".{file2}.part"));
            compress(&part2, &name2, &zipped).map_err(|e| {
                let _ = std::fs::remove_file(&zipped);
                cleanup(e)
            })?;
            std::fs::remove_file(&part2).at(&part2)?;
            zipped
        } else {
            part2.clone()
        };
        std::fs::rename(&ready, &final2).at(&final2)?;
        if let Some(parent) = final2.parent()
            && let Ok(d) = std::fs::File::open(parent)
        {
            let _ = d.sync_all();
        }
        Ok(std::fs::metadata(&final2).at(&final2)?.len())
    })
    .await
    .map_err(|e| PathError {
        path: final_path.clone(),
        source: std::io::Error::other(e),
    })??;
    let created = parse_file_name(&file_name).map(|(_, t)| t).unwrap_or(0);
    Ok(SnapshotInfo {
        name: file_name,
        node: node.to_string(),
        size: finished,
        created,
    })
}

async fn stream_to(client: &etcd_client::Client, part: &Path) -> Result<(), SnapshotError> {
    let std_file = {
        let p = part.to_path_buf();
        tokio::task::spawn_blocking(move || create_private(&p))
            .await
            .map_err(|e| PathError {
                path: part.to_path_buf(),
                source: std::io::Error::other(e),
            })??
    };
    let mut file = tokio::fs::File::from_std(std_file);
    let mut maintenance = client.maintenance_client();
    let mut stream = super::with_timeout(maintenance.snapshot())
        .await
        .map_err(SnapshotError::Stream)?;
    loop {
        let msg = tokio::time::timeout(CHUNK_TIMEOUT, stream.message())
            .await
            .map_err(|_| SnapshotError::Stream(EtcdError::Timeout))?
            .map_err(|e| SnapshotError::Stream(e.into()))?;
        let Some(msg) = msg else { break };
        file.write_all(msg.blob()).await.at(part)?;
    }
    file.flush().await.at(part)?;
    file.sync_all().await.at(part)?;
    Ok(())
}

/// etcd's offline tool that restores snapshots: `etcdutl` (etcd 3.5+) or `etcdctl` (3.4),
/// looked up next to the etcd binary, then on `PATH`.
pub fn find_restore_tool(etcd_bin: &Path, path_var: Option<&str>) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = etcd_bin
        .parent()
        .map(Path::to_path_buf)
        .into_iter()
        .collect();
    dirs.extend(
        path_var
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .split(':')
            .filter(|d| !d.is_empty())
            .map(PathBuf::from),
    );
    ["etcdutl", "etcdctl"]
        .iter()
        .find_map(|tool| dirs.iter().map(|d| d.join(tool)).find(|p| p.is_file()))
}

/// Where a single-member cluster restored from a snapshot is created.
#[derive(Debug, Clone)]
pub struct RestoreTarget {
    pub member: String,
    pub peer_url: String,
    /// The new data directory (must not exist).
    pub data_dir: PathBuf,
}

/// Restores the verified snapshot `raw` into `target` with etcd's own tool (it rewrites the
/// membership and builds the WAL; the file is checked again there).
pub async fn restore(
    tool: &Path,
    snapshot_bytes: Vec<u8>,
    scratch: &Path,
    target: &RestoreTarget,
) -> Result<(), SnapshotError> {
    let db = scratch.join("restore.db");
    fsutil::write_atomic(&db, &snapshot_bytes, fsutil::SECRET_FILE_MODE).at(&db)?;
    drop(snapshot_bytes);
    let output = tokio::process::Command::new(tool)
        .arg("snapshot")
        .arg("restore")
        .arg(&db)
        .arg(format!("--name={}", target.member))
        .arg(format!(
            "--initial-cluster={}={}",
            target.member, target.peer_url
        ))
        .arg(format!("--initial-advertise-peer-urls={}", target.peer_url))
        .arg(format!("--data-dir={}", target.data_dir.display()))
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::null())
        .output()
        .await
        .at(tool)?;
    let _ = std::fs::remove_file(&db);
    if !output.status.success() {
        return Err(SnapshotError::Restore {
            tool: tool.display().to_string(),
            output: format!(
                "{} {}",
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .trim()
            .to_string(),
        });
    }
    Ok(())
}

/// Most a scheduled snapshot waits after its cron time (RKE2's jitter), so servers on the same
/// schedule do not all stream from etcd in the same instant.
pub const SCHEDULE_JITTER: std::time::Duration = std::time::Duration::from_secs(5);

/// A random delay below [`SCHEDULE_JITTER`], in whole milliseconds.
pub fn schedule_jitter() -> std::time::Duration {
    let r = u32::from_str_radix(&crate::token::random_hex(4), 16).unwrap_or(0);
    std::time::Duration::from_millis(u64::from(r) % SCHEDULE_JITTER.as_millis() as u64)
}

/// Takes snapshots of this server's member: on demand (D-Bus) and on the cron schedule; one
/// at a time. Every saved snapshot is announced on [`Snapshotter::subscribe`].
pub struct Snapshotter {
    client: etcd_client::Client,
    /// Where the ETCDSnapshotFile records of this node's snapshots are kept.
    records: crate::storage::Storage,
    config: SnapshotConfig,
    dir: PathBuf,
    node: String,
    busy: Mutex<()>,
    saved: broadcast::Sender<SnapshotInfo>,
}

impl std::fmt::Debug for Snapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshotter")
            .field("dir", &self.dir)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Snapshotter {
    pub fn new(
        client: etcd_client::Client,
        config: SnapshotConfig,
        data_dir: &Path,
        node: &str,
    ) -> Arc<Snapshotter> {
        let (saved, _) = broadcast::channel(16);
        Arc::new(Snapshotter {
            records: crate::storage::Storage::new(crate::datastore::Datastore::new(client.clone())),
            client,
            dir: snapshot_dir(&config, data_dir),
            config,
            node: node.to_string(),
            busy: Mutex::new(()),
            saved,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Saved snapshots, as they are saved.
    pub fn subscribe(&self) -> broadcast::Receiver<SnapshotInfo> {
        self.saved.subscribe()
    }

    fn prefixes(&self) -> [&str; 2] {
        [self.config.name.as_str(), ON_DEMAND_PREFIX]
    }

    /// Saves `<prefix>-<node>-<now>`; `prefix` "" = on-demand. Returns the snapshot's path.
    pub async fn save(&self, prefix: &str) -> Result<(SnapshotInfo, PathBuf), SnapshotError> {
        let prefix = if prefix.is_empty() {
            ON_DEMAND_PREFIX
        } else {
            prefix
        };
        crate::config::ops::parse_snapshot_name(prefix).map_err(|reason| {
            SnapshotError::InvalidName {
                name: prefix.to_string(),
                reason,
            }
        })?;
        let _guard = self.busy.lock().await;
        let name = snapshot_name(prefix, &self.node, chrono::Utc::now().timestamp());
        let info = save(
            &self.client,
            &self.dir,
            &name,
            &self.node,
            self.config.compress,
        )
        .await?;
        tracing::info!(
            component = "etcd-snapshot",
            snapshot = %info.name,
            size = info.size,
            "saved etcd snapshot {}",
            self.dir.join(&info.name).display()
        );
        let _ = self.saved.send(info.clone());
        drop(_guard);
        self.sync_records().await;
        let path = self.dir.join(&info.name);
        Ok((info, path))
    }

    /// Brings this node's ETCDSnapshotFile records in line with the directory. A failure is
    /// logged, never fatal: the snapshot files are what a restore uses, and the next sync
    /// catches up.
    pub async fn sync_records(&self) {
        let present: Vec<SnapshotInfo> = match self.list().await {
            // In a directory shared by several servers, only this node's files (and files
            // whose node the name does not tell) are its to record.
            Ok(all) => all
                .into_iter()
                .filter(|s| s.node == self.node || s.node.is_empty())
                .collect(),
            Err(e) => {
                tracing::warn!(
                    component = "etcd-snapshot",
                    "cannot list snapshots to record them: {e}"
                );
                return;
            }
        };
        match super::snapshot_records::sync(&self.records, &self.node, &self.dir, &present).await {
            Ok(out) => {
                for name in out.created {
                    tracing::info!(component = "etcd-snapshot", record = %name, "recorded etcd snapshot file");
                }
                for name in out.deleted {
                    tracing::info!(component = "etcd-snapshot", record = %name, "removed the record of a deleted etcd snapshot file");
                }
            }
            Err(e) => tracing::warn!(
                component = "etcd-snapshot",
                "updating the ETCDSnapshotFile records failed: {e}"
            ),
        }
    }

    pub async fn list(&self) -> Result<Vec<SnapshotInfo>, SnapshotError> {
        let dir = self.dir.clone();
        let prefixes = self.prefixes().map(str::to_string);
        blocking(move || {
            let p: Vec<&str> = prefixes.iter().map(String::as_str).collect();
            list(&dir, &p)
        })
        .await
    }

    pub async fn delete(&self, name: &str) -> Result<String, SnapshotError> {
        let (dir, name) = (self.dir.clone(), name.to_string());
        let _guard = self.busy.lock().await;
        let deleted = blocking(move || delete(&dir, &name)).await?;
        tracing::info!(component = "etcd-snapshot", snapshot = %deleted, "deleted etcd snapshot");
        drop(_guard);
        self.sync_records().await;
        Ok(deleted)
    }

    /// Prunes `prefix` ("" = the scheduled prefix) of this node to `retention` (0 = the
    /// configured retention).
    pub async fn prune(&self, prefix: &str, retention: u32) -> Result<Vec<String>, SnapshotError> {
        let prefix = if prefix.is_empty() {
            self.config.name.clone()
        } else {
            prefix.to_string()
        };
        let retention = if retention == 0 {
            self.config.retention
        } else {
            retention
        };
        let (dir, node) = (self.dir.clone(), self.node.clone());
        let _guard = self.busy.lock().await;
        let deleted = blocking(move || prune(&dir, &prefix, &node, retention)).await?;
        for name in &deleted {
            tracing::info!(component = "etcd-snapshot", snapshot = %name, "pruned etcd snapshot (retention {retention})");
        }
        drop(_guard);
        if !deleted.is_empty() {
            self.sync_records().await;
        }
        Ok(deleted)
    }

    /// Runs the cron schedule until `cancel`: a snapshot at every match, then pruning to the
    /// retention. A learner skips (its data may lag), as RKE2's does.
    pub async fn run_schedule(self: Arc<Self>, cancel: CancellationToken) {
        // Records of snapshots taken before this start (or brought back by a restore).
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = self.sync_records() => {}
        }
        if self.config.disabled {
            tracing::info!(
                component = "etcd-snapshot",
                "scheduled etcd snapshots are disabled"
            );
            return;
        }
        tracing::info!(
            component = "etcd-snapshot",
            "scheduled etcd snapshots \"{}\" to {} (retention {})",
            self.config.schedule.as_str(),
            self.dir.display(),
            self.config.retention
        );
        loop {
            let now = chrono::Local::now();
            let Some(next) = self.config.schedule.next_after(&now) else {
                tracing::warn!(
                    component = "etcd-snapshot",
                    "the snapshot schedule has no next time; stopping it"
                );
                return;
            };
            let wait = (next - now).to_std().unwrap_or_default() + schedule_jitter();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            match super::local_status(&self.client).await {
                Ok(s) if s.is_learner => {
                    tracing::info!(
                        component = "etcd-snapshot",
                        "skipping the scheduled snapshot: this member is a learner"
                    );
                    continue;
                }
                _ => {}
            }
            let prefix = self.config.name.clone();
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.save(&prefix) => r,
            };
            match outcome {
                Ok(_) => {
                    if let Err(e) = self.prune("", 0).await {
                        tracing::warn!(
                            component = "etcd-snapshot",
                            "pruning etcd snapshots failed: {e}"
                        );
                    }
                }
                Err(e) => tracing::error!(
                    component = "etcd-snapshot",
                    "scheduled etcd snapshot failed: {e}"
                ),
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SnapshotError> + Send + 'static,
) -> Result<T, SnapshotError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(SnapshotError::Io(PathError {
            path: PathBuf::new(),
            source: std::io::Error::other(e),
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal byte image with etcd's snapshot shape: bolt magic at offset 16, a length of
    /// n*512, then the SHA-256 trailer.
    fn fake_snapshot() -> Vec<u8> {
        let mut db = vec![0u8; 8192];
        db[16..20].copy_from_slice(&BOLT_MAGIC.to_le_bytes());
        db[100] = 7;
        let hash = ring::digest::digest(&ring::digest::SHA256, &db);
        db.extend_from_slice(hash.as_ref());
        db
    }

    #[test]
    fn jitter_stays_below_five_seconds_and_varies() {
        let samples: Vec<_> = (0..50).map(|_| schedule_jitter()).collect();
        assert!(samples.iter().all(|d| *d < SCHEDULE_JITTER));
        assert!(samples.iter().any(|d| *d != samples[0]), "{samples:?}");
    }

    #[test]
    fn integrity_check_accepts_snapshots_only() {
        let s = fake_snapshot();
        verify_bytes(&s).unwrap();
        let mut corrupt = s.clone();
        corrupt[100] = 8;
        assert!(
            verify_bytes(&corrupt)
                .unwrap_err()
                .contains("does not match")
        );
        let truncated = &s[..s.len() - 100];
        assert!(verify_bytes(truncated).is_err());
        assert!(verify_bytes(b"hello").unwrap_err().contains("too short"));
        let mut no_magic = s.clone();
        no_magic[16] = 0;
        assert!(verify_bytes(&no_magic).unwrap_err().contains("magic"));
    }

    #[test]
    fn names_list_find_delete_prune() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        for (name, body) in [
            ("etcd-snapshot-n-1-100", "a"),
            ("etcd-snapshot-n-1-300", "bb"),
            ("etcd-snapshot-n-1-200.zip", "c"),
            ("on-demand-n-1-250", "d"),
            ("etcd-snapshot-other-150", "e"),
            (".etcd-snapshot-n-1-400.part", "partial"),
            ("notes.txt", "x"),
        ] {
            std::fs::write(dir.join(name), body).unwrap();
        }
        let l = list(dir, &["etcd-snapshot", "on-demand"]).unwrap();
        let names: Vec<&str> = l.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "etcd-snapshot-n-1-300",
                "on-demand-n-1-250",
                "etcd-snapshot-n-1-200.zip",
                "etcd-snapshot-other-150",
                "etcd-snapshot-n-1-100"
            ]
        );
        assert_eq!(l[0].node, "n-1");
        assert_eq!(l[0].size, 2);
        assert_eq!(l[0].created, 300);
        assert_eq!(l[3].node, "other");
        assert!(find(dir, "etcd-snapshot-n-1-200").is_ok());
        assert!(matches!(
            find(dir, "nope-1").unwrap_err(),
            SnapshotError::NotFound { .. }
        ));
        assert!(matches!(
            find(dir, "../etc/passwd").unwrap_err(),
            SnapshotError::InvalidName { .. }
        ));
        assert!(find(dir, ".etcd-snapshot-n-1-400.part").is_err());
        let pruned = prune(dir, "etcd-snapshot", "n-1", 1).unwrap();
        assert_eq!(
            pruned,
            ["etcd-snapshot-n-1-200.zip", "etcd-snapshot-n-1-100"]
        );
        assert!(dir.join("on-demand-n-1-250").exists());
        assert!(dir.join("etcd-snapshot-other-150").exists());
        assert_eq!(
            delete(dir, "on-demand-n-1-250").unwrap(),
            "on-demand-n-1-250"
        );
        assert!(delete(dir, "on-demand-n-1-250").is_err());
    }

    #[test]
    fn compressed_snapshots_verify_and_unzip() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("raw");
        std::fs::write(&raw, fake_snapshot()).unwrap();
        let zipped = d.path().join("s-n-1.zip");
        compress(&raw, "s-n-1", &zipped).unwrap();
        assert_eq!(verify_file(&zipped).unwrap(), fake_snapshot());
        std::fs::write(d.path().join("junk"), b"PK\x03\x04junk").unwrap();
        assert!(matches!(
            verify_file(&d.path().join("junk")).unwrap_err(),
            SnapshotError::NotASnapshot { .. }
        ));
    }
}
