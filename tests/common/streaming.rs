//! Streaming-session helpers shared by tests/exec.rs and tests/seed_scenario.rs: kubectl with a
//! fresh cache dir as a `Command`, `kubectl exec -it` under script(1) so kubectl sees a
//! terminal, and `kubectl port-forward` carrying one HTTP request (docs/streaming.md).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A kubectl command line with a fresh cache dir (kept alive by the returned guard).
pub fn kubectl_cmd(bin: &Path, k: &Path, args: &[&str]) -> (Command, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("--kubeconfig")
        .arg(k)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(args);
    (cmd, cache)
}

/// Kills the child when dropped (a port-forward runs until stopped).
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops the guarded process and returns all it wrote to stderr.
fn stop_and_read_stderr(guard: &mut ChildGuard) -> String {
    use std::io::Read;
    let _ = guard.0.kill();
    let _ = guard.0.wait();
    let mut err = String::new();
    if let Some(mut e) = guard.0.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    err
}

/// `kubectl port-forward` to the pod's 8080 on a random local port; returns the body of
/// `GET /index.html` through it (busybox httpd in the pod answers), or what went wrong with
/// everything kubectl said.
pub fn port_forward_fetch(bin: &Path, k: &Path, pod: &str) -> Result<String, String> {
    let (mut cmd, _cache) = kubectl_cmd(
        bin,
        k,
        &["port-forward", pod, ":8080", "--address", "127.0.0.1"],
    );
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(child);
    let stdout = guard.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // "Forwarding from 127.0.0.1:NNNNN -> 8080"
    let port = loop {
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => {
                let err = stop_and_read_stderr(&mut guard);
                return Err(format!(
                    "{} port-forward printed no address: {err}",
                    bin.display()
                ));
            }
        };
        if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .arg(format!("http://127.0.0.1:{port}/index.html"))
        .output()
        .unwrap();
    if !out.status.success() {
        // kubectl says on stderr why it dropped the connection.
        let err = stop_and_read_stderr(&mut guard);
        let said: Vec<String> = rx.try_iter().collect();
        return Err(format!(
            "{}: curl through port-forward: {}\nkubectl stdout: {said:?}\nkubectl stderr: {err}",
            bin.display(),
            text(&out.stderr)
        ));
    }
    Ok(text(&out.stdout))
}

/// `kubectl exec -it <pod> -- sh -c 'tty; echo tty-$((6*7)); exit 5'` under script(1), so
/// kubectl sees a terminal on its side too; returns (exit code, terminal output). A session
/// that works exits 5 and prints a `/dev/pts/` name and `tty-42\r\n`.
pub fn exec_tty(bin: &Path, k: &Path, pod: &str) -> (Option<i32>, String) {
    let cache = tempfile::tempdir().unwrap();
    let line = format!(
        "{} --kubeconfig {} --cache-dir {} exec -it {pod} -- sh -c 'tty; echo tty-$((6*7)); exit 5'",
        bin.display(),
        k.display(),
        cache.path().display()
    );
    let out = Command::new("timeout")
        .args(["-k", "5", "120", "script", "-qefc", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.status.code(), text(&out.stdout))
}

/// Asserts that `exec -it` and `port-forward` into `pod` (busybox httpd on 8080 serving
/// `page`) work with kubectl `bin` through `kubeconfig`; `what` names the pair in failures and
/// `logs` adds the nodes' side of the story to them.
pub fn assert_tty_and_port_forward(
    bin: &Path,
    kubeconfig: &Path,
    pod: &str,
    page: &str,
    what: &str,
    logs: &dyn Fn() -> String,
) {
    let (code, out) = exec_tty(bin, kubeconfig, pod);
    assert_eq!(code, Some(5), "{what} -it: {out}\n{}", logs());
    assert!(
        out.contains("/dev/pts/") && out.contains("tty-42\r\n"),
        "{what} -it: {out:?}\n{}",
        logs()
    );
    match port_forward_fetch(bin, kubeconfig, pod) {
        Ok(body) => assert_eq!(body, page, "{what} port-forward"),
        Err(e) => panic!("{what} port-forward: {e}\n{}", logs()),
    }
}
