//! Renewal of this server's leaf certificates while it runs (docs/operations.md §4.3): a
//! periodic check re-runs the start-time check (issued by the current CAs, right names, not
//! within 120 days — or a third of `leaf-cert-validity` — of expiry) and, when it issued new
//! leaves, puts them in use without a restart: the serving certificate of 6443/9345 and the
//! node agent's client certificate through their [`CertSlot`]s, the etcd client credentials for
//! new connections, and the admin kubeconfig. etcd itself reads its certificate files at every
//! handshake, so its serving and peer certificates need nothing more.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::ServerError;
use super::context::{Ctx, ServerContext};
use super::prepare;
use crate::https::CertSlot;
use crate::kubeconfig::Kubeconfig;
use crate::paths::{AgentPaths, ServerPaths};
use crate::pki::CertInfo;

/// The certificates in use by listeners and clients of this process that a renewal swaps.
#[derive(Debug, Clone)]
pub struct LiveCerts {
    /// Served on 6443 and 9345.
    pub serving: Arc<CertSlot>,
    /// Presented by the server's own node agent.
    pub kubelet_client: Arc<CertSlot>,
}

impl LiveCerts {
    /// Loads the current files.
    pub fn load(paths: &ServerPaths, agent_paths: &AgentPaths) -> Result<LiveCerts, ServerError> {
        let (serving, kubelet) = (paths.serving(), agent_paths.client_kubelet());
        Ok(LiveCerts {
            serving: CertSlot::from_pem(
                &prepare::read_pem(&serving.cert)?,
                &prepare::read_pem(&serving.key)?,
            )?,
            kubelet_client: CertSlot::from_pem(
                &prepare::read_pem(&kubelet.cert)?,
                &prepare::read_pem(&kubelet.key)?,
            )?,
        })
    }

    fn reload(&self, ctx: &ServerContext) -> Result<(), ServerError> {
        let (serving, kubelet) = (ctx.paths.serving(), ctx.agent_paths.client_kubelet());
        self.serving.replace_pem(
            &prepare::read_pem(&serving.cert)?,
            &prepare::read_pem(&serving.key)?,
        )?;
        self.kubelet_client.replace_pem(
            &prepare::read_pem(&kubelet.cert)?,
            &prepare::read_pem(&kubelet.key)?,
        )?;
        ctx.etcd_tls.reload(&ctx.paths)?;
        Ok(())
    }
}

/// How often the leaves are checked: a quarter of the renewal window, so a leaf is renewed
/// well before it expires, but at most hourly and at least every second.
pub fn check_interval(validity: Duration) -> Duration {
    (crate::pki::renew_before(validity) / 4)
        .clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Writes the admin kubeconfig (`write-kubeconfig`) with the current admin certificate.
pub fn write_admin_kubeconfig(ctx: &ServerContext) -> Result<(), ServerError> {
    let config = &ctx.config;
    let admin = ctx.paths.client_admin();
    let kubeconfig_host = match config.bind_address {
        Some(ip) if !ip.is_unspecified() => ip,
        _ => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    };
    let server_url = format!(
        "https://{}",
        std::net::SocketAddr::new(kubeconfig_host, config.https_listen_port)
    );
    Kubeconfig {
        server_url: &server_url,
        ca_pem: &String::from_utf8_lossy(&ctx.server_ca_bundle),
        client_cert_pem: &prepare::read_pem(&admin.cert)?,
        client_key_pem: &prepare::read_pem(&admin.key)?,
        name: "default",
        tls_server_name: Some(crate::agent::API_SERVER_NAME),
    }
    .write(&config.write_kubeconfig, config.write_kubeconfig_mode)?;
    Ok(())
}

/// One check: renews what is due and puts the new certificates in use. Blocking (file I/O and
/// key generation): run off the async runtime.
fn renew_once(ctx: &ServerContext, live: &LiveCerts) -> Result<bool, ServerError> {
    // The CA files only change at a start (a rotate-ca is taken up by restarting), so they
    // are the CAs the listeners and etcd trust.
    let cas = prepare::authorities(&ctx.paths, false)?;
    if !prepare::leaf_certificates(&ctx.config, &ctx.node, &ctx.paths, &ctx.agent_paths, &cas)? {
        return Ok(false);
    }
    live.reload(ctx)?;
    write_admin_kubeconfig(ctx)?;
    let serving = ctx.paths.serving();
    let not_after = crate::pki::first_cert_der(prepare::read_pem(&serving.cert)?.as_bytes())
        .and_then(|der| CertInfo::parse(&der))
        .map(|i| i.not_after)
        .unwrap_or_default();
    tracing::info!(
        component = "pki",
        node = %ctx.node.name,
        "renewed leaf certificates while running; serving the new certificate (valid until {})",
        chrono::DateTime::from_timestamp(not_after, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default()
    );
    Ok(true)
}

/// Checks the leaves every [`check_interval`] until `cancel` fires.
pub async fn run(ctx: Ctx, live: LiveCerts, cancel: CancellationToken) {
    let interval = check_interval(ctx.config.leaf_cert_validity);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let (c, l) = (ctx.clone(), live.clone());
        match tokio::task::spawn_blocking(move || renew_once(&c, &l)).await {
            Ok(Ok(_)) => failures = 0,
            Ok(Err(e)) => {
                failures += 1;
                // Once, then now and then: a broken CA file would otherwise flood the log.
                if failures == 1 || failures.is_multiple_of(60) {
                    tracing::warn!(component = "pki", node = %ctx.node.name, "renewing leaf certificates failed: {e}");
                }
            }
            Err(e) => tracing::warn!(component = "pki", "certificate renewal task failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_often_enough_for_the_lifetime() {
        // A year-long leaf: renewal window 120 days, checked hourly.
        assert_eq!(
            check_interval(crate::pki::LEAF_VALIDITY),
            Duration::from_secs(3600)
        );
        // A one-minute leaf: renewed 20 s before expiry, checked every 5 s.
        assert_eq!(
            check_interval(Duration::from_secs(60)),
            Duration::from_secs(5)
        );
    }
}
